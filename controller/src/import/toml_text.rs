//! TOML values for imported plans written line by line (so they keep their
//! comments): the `toml` crate quotes and escapes; this adds the one rule
//! of loadfleet's own, that recorded text never turns into a variable.

/// Recorded text may hold `${`, which a plan reads as a variable: written
/// `$${`, it stays literal.
fn literal(v: toml::Value) -> String {
    v.to_string().replace("${", "$${")
}

/// A TOML string.
pub fn string(s: &str) -> String {
    literal(toml::Value::String(s.to_string()))
}

/// `{ k = "v", … }`.
pub fn inline_table(pairs: &[(String, String)]) -> String {
    let table: toml::Table = pairs
        .iter()
        .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
        .collect();
    literal(toml::Value::Table(table))
}

/// A JSON value as an inline TOML value; `None` when it holds a `null`
/// (which TOML cannot say).
pub fn json_value(v: &serde_json::Value) -> Option<String> {
    toml::Value::try_from(v).ok().map(literal)
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
