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
        BodySpec::Multipart(m) => (multipart_body(m, vars), Some(m.content_type.clone())),
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

/// A multipart/form-data body (RFC 7578): each part opened by the
/// boundary, named in its Content-Disposition (a quote or a line break in
/// a rendered name is percent-encoded, as browsers do), a file's with its
/// file name and media type, and the closing boundary.
fn multipart_body(m: &crate::assignment::Multipart, vars: &[String]) -> Bytes {
    use crate::assignment::Part;
    let files: usize = m
        .parts
        .iter()
        .map(|p| match p {
            Part::File { content, .. } => content.len(),
            Part::Field { .. } => 0,
        })
        .sum();
    let mut out = Vec::with_capacity(files + 128 * (m.parts.len() + 1));
    let quoted = |out: &mut Vec<u8>, s: &str| {
        for b in s.bytes() {
            match b {
                b'"' => out.extend_from_slice(b"%22"),
                b'\r' => out.extend_from_slice(b"%0D"),
                b'\n' => out.extend_from_slice(b"%0A"),
                _ => out.push(b),
            }
        }
    };
    for p in &m.parts {
        out.extend_from_slice(b"--");
        out.extend_from_slice(m.boundary.as_bytes());
        out.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        match p {
            Part::Field { name, value } => {
                quoted(&mut out, &name.render(vars));
                out.extend_from_slice(b"\"\r\n\r\n");
                out.extend_from_slice(value.render(vars).as_bytes());
            }
            Part::File {
                name,
                filename,
                content_type,
                content,
            } => {
                quoted(&mut out, &name.render(vars));
                out.extend_from_slice(b"\"; filename=\"");
                out.extend_from_slice(filename.as_bytes());
                out.extend_from_slice(b"\"\r\nContent-Type: ");
                out.extend_from_slice(content_type.as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
                out.extend_from_slice(content);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(m.boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    Bytes::from(out)
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
