//! Writing TOML by hand, for imported plans that keep their comments:
//! strings, inline tables of strings, and JSON values as inline TOML.

use std::fmt::Write;

/// A TOML basic string, escaped.
pub fn string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    // A literal `${` in recorded text must not become a variable.
    o.replace("${", "$${")
}

/// `{ "k" = "v", … }` with quoted keys.
pub fn inline_table(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {}", string(k), string(v)))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

/// A JSON value as an inline TOML value; `None` when it holds a `null`
/// (which TOML cannot say).
pub fn json_value(v: &serde_json::Value) -> Option<String> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => string(s),
        serde_json::Value::Array(a) => {
            let items: Option<Vec<String>> = a.iter().map(json_value).collect();
            format!("[{}]", items?.join(", "))
        }
        serde_json::Value::Object(m) => {
            let items: Option<Vec<String>> = m
                .iter()
                .map(|(k, v)| json_value(v).map(|v| format!("{} = {v}", string(k))))
                .collect();
            format!("{{ {} }}", items?.join(", "))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_toml_parser() {
        let json: serde_json::Value =
            serde_json::from_str(r#"{"a": [1, 2.5, "x\"y"], "b": {"c": true}, "${d}": "$${e}"}"#)
                .unwrap();
        let text = format!(
            "s = {}\nt = {}\nj = {}\n",
            string("line\n\"quoted\" \\ ${var}"),
            inline_table(&[("Content-Type".into(), "text/plain".into())]),
            json_value(&json).unwrap()
        );
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["s"].as_str(), Some("line\n\"quoted\" \\ $${var}"));
        assert_eq!(v["t"]["Content-Type"].as_str(), Some("text/plain"));
        assert_eq!(v["j"]["a"][1].as_float(), Some(2.5));
        assert_eq!(v["j"]["b"]["c"].as_bool(), Some(true));
        assert!(json_value(&serde_json::json!({"x": null})).is_none());
    }
}
