//! Templates: text with `${name}` variables, compiled once against the
//! assignment's variable table, so rendering per request is a walk over
//! literal and slot parts.

use std::collections::HashMap;

/// Names of every variable of an assignment, each with one slot index, so a
/// user's values are a plain `Vec<String>` indexed by slot.
#[derive(Debug, Default, Clone)]
pub struct VarTable {
    index: HashMap<String, usize>,
    names: Vec<String>,
    /// Slots asked for since [`VarTable::watch`] (what one step reads).
    watched: Option<Vec<usize>>,
}

impl VarTable {
    /// The slot of `name`, added when new.
    pub fn slot(&mut self, name: &str) -> usize {
        let i = self.slot_of(name);
        if let Some(w) = &mut self.watched
            && !w.contains(&i)
        {
            w.push(i);
        }
        i
    }

    /// Starts noting every slot asked for, until [`VarTable::watched`].
    pub fn watch(&mut self) {
        self.watched = Some(Vec::new());
    }

    /// The slots asked for since [`VarTable::watch`], in order of first use.
    pub fn watched(&mut self) -> Vec<usize> {
        self.watched.take().unwrap_or_default()
    }

    fn slot_of(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }

    pub fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, slot: usize) -> &str {
        &self.names[slot]
    }
}

/// A text with `${name}` holes; `$${` is a literal `${`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(usize),
}

/// The variable names a template refers to, in order (for validation).
pub fn template_vars(text: &str) -> Result<Vec<(usize, String)>, String> {
    let mut out = Vec::new();
    scan(text, |piece| {
        if let Piece::Var(at, name) = piece {
            out.push((at, name.to_string()));
        }
    })?;
    Ok(out)
}

/// Rewrites a template: `each(byte offset, name)` returns `Some(value)` to
/// put `value` in place of `${name}` (as literal text), `None` to keep the
/// variable. The first error stops it.
pub fn substitute(
    text: &str,
    mut each: impl FnMut(usize, &str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut failed = None;
    scan(text, |piece| {
        if failed.is_some() {
            return;
        }
        match piece {
            Piece::Text(t) => out.push_str(&t.replace("${", "$${")),
            Piece::Var(at, name) => match each(at, name) {
                Ok(Some(v)) => out.push_str(&v.replace("${", "$${")),
                Ok(None) => {
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                }
                Err(e) => failed = Some(e),
            },
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

enum Piece<'a> {
    Text(&'a str),
    Var(usize, &'a str),
}

fn scan<'a>(text: &'a str, mut each: impl FnMut(Piece<'a>)) -> Result<(), String> {
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            // `$${`: a literal `${`.
            each(Piece::Text(&rest[..i - 1]));
            each(Piece::Text("${"));
            rest = &rest[i + 2..];
            offset += i + 2;
            continue;
        }
        each(Piece::Text(&rest[..i]));
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` at byte {} is never closed by `}}`", offset + i))?;
        let name = after[..end].trim();
        if name.is_empty() {
            return Err(format!("empty variable name at byte {}", offset + i));
        }
        each(Piece::Var(offset + i, name));
        rest = &after[end + 1..];
        offset += i + 2 + end + 1;
    }
    each(Piece::Text(rest));
    Ok(())
}

impl Template {
    /// Compiles `text`, giving each variable a slot in `vars`.
    pub fn compile(text: &str, vars: &mut VarTable) -> Result<Template, String> {
        let mut parts: Vec<Part> = Vec::new();
        scan(text, |piece| match piece {
            Piece::Text("") => {}
            Piece::Text(t) => match parts.last_mut() {
                Some(Part::Text(prev)) => prev.push_str(t),
                _ => parts.push(Part::Text(t.to_string())),
            },
            Piece::Var(_, name) => parts.push(Part::Var(vars.slot(name))),
        })?;
        Ok(Template {
            parts,
            source: text.to_string(),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text when the template has no variables.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Appends the rendered text to `out`.
    pub fn render_into(&self, vars: &[String], out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(i) => out.push_str(vars.get(*i).map_or("", String::as_str)),
            }
        }
    }

    pub fn render(&self, vars: &[String]) -> String {
        let mut s = String::new();
        self.render_into(vars, &mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_escape() {
        let mut vars = VarTable::default();
        let t = Template::compile("/a/${x}?k=${ y }&z=$${lit}", &mut vars).unwrap();
        assert_eq!(vars.len(), 2);
        let values = vec!["1".to_string(), "two".to_string()];
        assert_eq!(t.render(&values), "/a/1?k=two&z=${lit}");
        assert_eq!(
            Template::compile("/plain", &mut vars).unwrap().as_static(),
            Some("/plain")
        );
        assert!(Template::compile("/x/${open", &mut vars).is_err());
        assert!(Template::compile("/x/${}", &mut vars).is_err());
        let names: Vec<String> = template_vars("${a}-$${b}-${c.d}")
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(names, ["a", "c.d"]);
    }
}
