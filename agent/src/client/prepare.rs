//! A step's request rendered for one user: its origin and URI, headers
//! from templates, and its body, built once per request and borrowed by
//! every attempt and redirect hop that sends it.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};

use crate::assignment::{Address, BodySpec, Origin, Step, Target};
use crate::template::Template;

/// One request, rendered from its step for one user.
pub struct Prepared<'a> {
    pub method: Method,
    /// `None`: the target's origin.
    pub origin: Option<Origin>,
    /// Origin-form request target.
    pub uri: Uri,
    /// The step's fixed headers.
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// Headers rendered from templates.
    pub rendered: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub content_type: Option<HeaderValue>,
}

/// Renders a step's request from a user's variables. A step without
/// variables or query parameters builds nothing: its URI is shared.
pub fn prepare<'a>(
    step: &'a Step,
    vars: &[String],
    target: &Target,
) -> Result<Prepared<'a>, String> {
    let (origin, uri) = match &step.address {
        Address::Static(uri) => (None, uri.clone()),
        Address::Path(t) => {
            let mut path = t.render(vars);
            append_query(&mut path, &step.query, vars);
            // Never quote the rendered text: it may hold a password.
            let uri = target.request_uri(&path).map_err(|_| {
                "the rendered path is not a valid request target (values with spaces or \
                 symbols belong in `query`, which encodes them)"
                    .to_string()
            })?;
            (None, uri)
        }
        Address::Url(t) => {
            let mut url = t.render(vars);
            append_query(&mut url, &step.query, vars);
            let (origin, uri) = url
                .parse::<Uri>()
                .map_err(|e| e.to_string())
                .and_then(|u| Origin::split(&u))
                .map_err(|_| {
                    "the rendered url is not an absolute http:// or https:// URL".to_string()
                })?;
            (Some(origin), uri)
        }
    };
    let mut rendered = Vec::with_capacity(step.header_templates.len());
    for (name, t) in &step.header_templates {
        let value = HeaderValue::try_from(t.render(vars))
            .map_err(|_| format!("header `{name}`: the value is not a valid header value"))?;
        rendered.push((name.clone(), value));
    }
    let (body, content_type) = match &step.body {
        BodySpec::None => (Bytes::new(), None),
        BodySpec::Form(fields) => {
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                form.append_pair(&k.render(vars), &v.render(vars));
            }
            (
                Bytes::from(form.finish()),
                Some(HeaderValue::from_static(
                    "application/x-www-form-urlencoded",
                )),
            )
        }
        BodySpec::Json(t) => (
            Bytes::from(t.render(vars)),
            Some(HeaderValue::from_static("application/json")),
        ),
        BodySpec::Raw(t) => (Bytes::from(t.render(vars)), None),
    };
    Ok(Prepared {
        method: step.method.clone(),
        origin: origin.filter(|o| *o != target.origin()),
        uri,
        headers: &step.headers,
        rendered,
        body,
        content_type,
    })
}

fn append_query(out: &mut String, query: &[(Template, Template)], vars: &[String]) {
    if query.is_empty() {
        return;
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        q.append_pair(&k.render(vars), &v.render(vars));
    }
    out.push(if out.contains('?') { '&' } else { '?' });
    out.push_str(&q.finish());
}
