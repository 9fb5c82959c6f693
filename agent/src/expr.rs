//! The plan's small expression language, for the conditions of `if` and
//! `while` blocks and the values of `set`: variables (`${name}`), string and
//! integer literals, `== != < <= > >=`, `=~` and `!~` (regex), `exists(name)`,
//! `and or not`, `+ - * / %` on integers, parentheses, `true`, `false` and
//! `status` (the last response's status, 0 before any or after a failure
//! without one). No general scripting.
//!
//! Types are checked when the plan is read: a condition must be true or
//! false, a string literal cannot be ordered or added, `and` takes
//! conditions, not values. Variables hold text; where a number is expected
//! (ordering, arithmetic, or `==` against a number) their text is read as
//! an integer, and a variable that holds no integer makes the comparison
//! false and the arithmetic fail (see [`Expr::value`]). Evaluation borrows
//! the user's variables and allocates nothing.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::template::VarTable;

/// An error in an expression: at byte `at` of its text, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub at: usize,
    pub message: String,
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at byte {}: {}", self.at, self.message)
    }
}

/// What an expression yields, as far as the plan can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Bool,
    Num,
    Str,
    /// A variable: text, read as a number where one is expected.
    Var,
}

impl Type {
    fn word(self) -> &'static str {
        match self {
            Type::Bool => "a condition",
            Type::Num => "a number",
            Type::Str => "a string",
            Type::Var => "a variable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone)]
enum Node {
    Bool(bool),
    Num(i64),
    Str(String),
    Var(usize),
    Status,
    Exists(usize),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    Matches(Box<Node>, regex::Regex, bool),
    Arith(Arith, Box<Node>, Box<Node>),
    Neg(Box<Node>),
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Expr {
    node: Node,
    ty: Type,
    source: String,
}

/// A value while evaluating: borrowed text, a number or a truth.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Bool(bool),
    Num(i64),
    Str(Cow<'a, str>),
}

impl Expr {
    /// Compiles `text`; every `${name}` gets a slot in `vars`.
    pub fn parse(text: &str, vars: &mut VarTable) -> Result<Expr, ExprError> {
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            vars,
            end: text.len(),
            depth: 0,
        };
        let (node, ty) = p.or()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(ExprError {
                at: t.at,
                message: format!(
                    "expected an operator (`and`, `or`, `==`, ...) or the end, found {}",
                    t.tok.describe()
                ),
            });
        }
        Ok(Expr {
            node,
            ty,
            source: text.to_string(),
        })
    }

    /// Compiles a condition: an expression that is true or false.
    pub fn condition(text: &str, vars: &mut VarTable) -> Result<Expr, ExprError> {
        let e = Expr::parse(text, vars)?;
        if e.ty != Type::Bool {
            return Err(ExprError {
                at: 0,
                message: format!(
                    "expected a condition (a comparison, `exists(name)`, `true`...), found {}; compare it, e.g. `{} == \"yes\"`",
                    e.ty.word(),
                    text.trim()
                ),
            });
        }
        Ok(e)
    }

    pub fn ty(&self) -> Type {
        self.ty
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the condition holds for these variables and last status; an
    /// operand that is not the number it must be makes it false.
    pub fn holds(&self, vars: &[String], status: u16) -> bool {
        matches!(eval(&self.node, vars, status), Some(Val::Bool(true)))
    }

    /// Writes the expression's value into `out` (cleared first, its
    /// capacity reused); false when it has none (arithmetic on a variable
    /// that holds no integer, division by zero, overflow), leaving `out`
    /// empty.
    pub fn value(&self, vars: &[String], status: u16, out: &mut String) -> bool {
        let v = eval(&self.node, vars, status);
        out.clear();
        match v {
            Some(Val::Bool(b)) => out.push_str(if b { "true" } else { "false" }),
            Some(Val::Num(n)) => {
                let _ = write!(out, "{n}");
            }
            Some(Val::Str(s)) => out.push_str(&s),
            None => return false,
        }
        true
    }
}

fn num_of(v: &Val<'_>) -> Option<i64> {
    match v {
        Val::Num(n) => Some(*n),
        Val::Str(s) => s.trim().parse().ok(),
        Val::Bool(_) => None,
    }
}

fn eval<'a>(n: &'a Node, vars: &'a [String], status: u16) -> Option<Val<'a>> {
    Some(match n {
        Node::Bool(b) => Val::Bool(*b),
        Node::Num(v) => Val::Num(*v),
        Node::Str(s) => Val::Str(Cow::Borrowed(s)),
        Node::Var(slot) => Val::Str(Cow::Borrowed(vars.get(*slot)?.as_str())),
        Node::Status => Val::Num(i64::from(status)),
        Node::Exists(slot) => Val::Bool(vars.get(*slot).is_some_and(|v| !v.is_empty())),
        Node::Not(a) => Val::Bool(!truth(a, vars, status)),
        Node::And(a, b) => Val::Bool(truth(a, vars, status) && truth(b, vars, status)),
        Node::Or(a, b) => Val::Bool(truth(a, vars, status) || truth(b, vars, status)),
        Node::Cmp(op, a, b) => {
            let (x, y) = (eval(a, vars, status)?, eval(b, vars, status)?);
            let ord = match (&x, &y) {
                (Val::Str(s), Val::Str(t)) if matches!(op, Cmp::Eq | Cmp::Ne) => s.cmp(t),
                (Val::Bool(s), Val::Bool(t)) => s.cmp(t),
                _ => num_of(&x)?.cmp(&num_of(&y)?),
            };
            Val::Bool(match op {
                Cmp::Eq => ord.is_eq(),
                Cmp::Ne => ord.is_ne(),
                Cmp::Lt => ord.is_lt(),
                Cmp::Le => ord.is_le(),
                Cmp::Gt => ord.is_gt(),
                Cmp::Ge => ord.is_ge(),
            })
        }
        Node::Matches(a, re, want) => {
            let hit = match eval(a, vars, status)? {
                Val::Str(s) => re.is_match(&s),
                Val::Num(v) => {
                    let mut buf = [0u8; 24];
                    re.is_match(num_text(v, &mut buf))
                }
                Val::Bool(_) => return None,
            };
            Val::Bool(hit == *want)
        }
        Node::Arith(op, a, b) => {
            let x = num_of(&eval(a, vars, status)?)?;
            let y = num_of(&eval(b, vars, status)?)?;
            Val::Num(match op {
                Arith::Add => x.checked_add(y)?,
                Arith::Sub => x.checked_sub(y)?,
                Arith::Mul => x.checked_mul(y)?,
                Arith::Div => x.checked_div(y)?,
                Arith::Rem => x.checked_rem(y)?,
            })
        }
        Node::Neg(a) => Val::Num(num_of(&eval(a, vars, status)?)?.checked_neg()?),
    })
}

fn truth(n: &Node, vars: &[String], status: u16) -> bool {
    matches!(eval(n, vars, status), Some(Val::Bool(true)))
}

/// `v` in decimal, in `buf`.
fn num_text(v: i64, buf: &mut [u8; 24]) -> &str {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{v}"));
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

// === lexing ===

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Var(String),
    Ident(String),
    Num(i64),
    Str(String),
    Op(&'static str),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Var(n) => format!("`${{{n}}}`"),
            Tok::Ident(n) => format!("`{n}`"),
            Tok::Num(n) => format!("the number {n}"),
            Tok::Str(s) => format!("the string \"{s}\""),
            Tok::Op(o) => format!("`{o}`"),
        }
    }
}

struct Token {
    tok: Tok,
    at: usize,
}

const OPS: [&str; 17] = [
    "==", "!=", "<=", ">=", "=~", "!~", "<", ">", "(", ")", "+", "-", "*", "/", "%", ",", "!",
];

fn lex(text: &str) -> Result<Vec<Token>, ExprError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let at = i;
        if text[i..].starts_with("${") {
            let end = text[i..].find('}').ok_or(ExprError {
                at,
                message: "`${` is never closed by `}`".into(),
            })?;
            let name = text[i + 2..i + end].trim();
            if name.is_empty() {
                return Err(ExprError {
                    at,
                    message: "expected a variable name inside `${}`".into(),
                });
            }
            out.push(Token {
                tok: Tok::Var(name.to_string()),
                at,
            });
            i += end + 1;
        } else if c.is_ascii_digit() {
            let end = text[i..]
                .find(|ch: char| !ch.is_ascii_digit())
                .map_or(b.len(), |e| i + e);
            let n = text[i..end].parse::<i64>().map_err(|_| ExprError {
                at,
                message: format!(
                    "the number {} is too large; expected an integer below 2^63",
                    &text[i..end]
                ),
            })?;
            out.push(Token {
                tok: Tok::Num(n),
                at,
            });
            i = end;
        } else if c == b'"' || c == b'\'' {
            let mut s = String::new();
            let mut j = i + 1;
            let mut closed = false;
            while j < b.len() {
                let ch = text[j..].chars().next().unwrap_or('\0');
                if ch as u32 == u32::from(c) {
                    closed = true;
                    j += 1;
                    break;
                }
                if ch == '\\' && j + 1 < b.len() {
                    let next = text[j + 1..].chars().next().unwrap_or('\0');
                    s.push(next);
                    j += 1 + next.len_utf8();
                    continue;
                }
                s.push(ch);
                j += ch.len_utf8();
            }
            if !closed {
                return Err(ExprError {
                    at,
                    message: format!("the string is never closed by `{}`", c as char),
                });
            }
            out.push(Token {
                tok: Tok::Str(s),
                at,
            });
            i = j;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = text[i..]
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.'))
                .map_or(b.len(), |e| i + e);
            out.push(Token {
                tok: Tok::Ident(text[i..end].to_string()),
                at,
            });
            i = end;
        } else if let Some(op) = OPS.iter().find(|op| text[i..].starts_with(**op)) {
            let op = match *op {
                "!" => "not",
                o => o,
            };
            out.push(Token {
                tok: Tok::Op(op),
                at,
            });
            i += if op == "not" { 1 } else { op.len() };
        } else if text[i..].starts_with("&&") || text[i..].starts_with("||") {
            out.push(Token {
                tok: Tok::Op(if c == b'&' { "and" } else { "or" }),
                at,
            });
            i += 2;
        } else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(ExprError {
                at,
                message: format!(
                    "unexpected `{ch}`; expected a variable `${{name}}`, a number, a \"string\", an operator or a parenthesis"
                ),
            });
        }
    }
    Ok(out)
}

// === parsing ===

struct Parser<'v> {
    tokens: Vec<Token>,
    pos: usize,
    vars: &'v mut VarTable,
    end: usize,
    /// Parentheses and prefix operators open so far.
    depth: usize,
}

/// The deepest nesting of parentheses and prefix operators an expression
/// may have (the parser recurses once per level).
const MAX_NESTING: usize = 64;

type Parsed = Result<(Node, Type), ExprError>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.at)
    }

    fn is_word(&self, w: &str) -> bool {
        match self.peek() {
            Some(Tok::Ident(i)) => i == w,
            Some(Tok::Op(o)) => *o == w,
            _ => false,
        }
    }

    fn need_bool(&self, ty: Type, at: usize, op: &str) -> Result<(), ExprError> {
        if ty == Type::Bool {
            return Ok(());
        }
        Err(ExprError {
            at,
            message: format!(
                "`{op}` takes conditions, found {}; compare it first (`== \"yes\"`, `> 0`)",
                ty.word()
            ),
        })
    }

    fn or(&mut self) -> Parsed {
        let at = self.at();
        let (mut left, lt) = self.and()?;
        let mut ty = lt;
        while self.is_word("or") {
            self.need_bool(ty, at, "or")?;
            self.pos += 1;
            let rat = self.at();
            let (right, rt) = self.and()?;
            self.need_bool(rt, rat, "or")?;
            left = Node::Or(Box::new(left), Box::new(right));
            ty = Type::Bool;
        }
        Ok((left, ty))
    }

    fn and(&mut self) -> Parsed {
        let at = self.at();
        let (mut left, lt) = self.not()?;
        let mut ty = lt;
        while self.is_word("and") {
            self.need_bool(ty, at, "and")?;
            self.pos += 1;
            let rat = self.at();
            let (right, rt) = self.not()?;
            self.need_bool(rt, rat, "and")?;
            left = Node::And(Box::new(left), Box::new(right));
            ty = Type::Bool;
        }
        Ok((left, ty))
    }

    /// One level deeper, refused past [`MAX_NESTING`].
    fn deeper(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ExprError {
                at: self.at(),
                message: format!("nested more than {MAX_NESTING} levels deep"),
            });
        }
        Ok(())
    }

    fn not(&mut self) -> Parsed {
        if self.is_word("not") {
            self.pos += 1;
            self.deeper()?;
            let at = self.at();
            let (n, t) = self.not()?;
            self.depth -= 1;
            self.need_bool(t, at, "not")?;
            return Ok((Node::Not(Box::new(n)), Type::Bool));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Parsed {
        let at = self.at();
        let (left, lt) = self.sum()?;
        let op = match self.peek() {
            Some(Tok::Op(o)) if ["==", "!=", "<", "<=", ">", ">=", "=~", "!~"].contains(o) => *o,
            _ => return Ok((left, lt)),
        };
        let op_at = self.at();
        self.pos += 1;
        if op == "=~" || op == "!~" {
            if lt == Type::Bool {
                return Err(ExprError {
                    at,
                    message: format!("`{op}` matches text, found a condition on its left"),
                });
            }
            let pat_at = self.at();
            let pattern = match self.peek() {
                Some(Tok::Str(s)) => s.clone(),
                other => {
                    return Err(ExprError {
                        at: pat_at,
                        message: format!(
                            "`{op}` expected a \"regex\" string on its right, found {}",
                            other.map_or("the end".into(), Tok::describe)
                        ),
                    });
                }
            };
            self.pos += 1;
            let re = regex::Regex::new(&pattern).map_err(|e| ExprError {
                at: pat_at,
                message: format!("invalid regex: {}", one_line(&e.to_string())),
            })?;
            return Ok((Node::Matches(Box::new(left), re, op == "=~"), Type::Bool));
        }
        let rat = self.at();
        let (right, rt) = self.sum()?;
        let cmp = match op {
            "==" => Cmp::Eq,
            "!=" => Cmp::Ne,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            ">" => Cmp::Gt,
            _ => Cmp::Ge,
        };
        let ordered = !matches!(cmp, Cmp::Eq | Cmp::Ne);
        for (t, where_at) in [(lt, at), (rt, rat)] {
            if ordered && (t == Type::Str || t == Type::Bool) {
                return Err(ExprError {
                    at: where_at,
                    message: format!("`{op}` orders numbers, found {}", t.word()),
                });
            }
        }
        let clash = match (lt, rt) {
            (Type::Var, _) | (_, Type::Var) => false,
            (a, b) => a != b,
        } || (lt == Type::Bool) != (rt == Type::Bool);
        if clash {
            return Err(ExprError {
                at: op_at,
                message: format!(
                    "`{op}` compares {} with {}; expected two of a kind",
                    lt.word(),
                    rt.word()
                ),
            });
        }
        Ok((Node::Cmp(cmp, Box::new(left), Box::new(right)), Type::Bool))
    }

    fn sum(&mut self) -> Parsed {
        let at = self.at();
        let (mut left, mut ty) = self.product()?;
        while let Some(Tok::Op(o @ ("+" | "-"))) = self.peek() {
            let op = if *o == "+" { Arith::Add } else { Arith::Sub };
            let sym = *o;
            self.pos += 1;
            let rat = self.at();
            let (right, rt) = self.product()?;
            arith_type(ty, at, sym)?;
            arith_type(rt, rat, sym)?;
            left = Node::Arith(op, Box::new(left), Box::new(right));
            ty = Type::Num;
        }
        Ok((left, ty))
    }

    fn product(&mut self) -> Parsed {
        let at = self.at();
        let (mut left, mut ty) = self.unary()?;
        while let Some(Tok::Op(o @ ("*" | "/" | "%"))) = self.peek() {
            let sym = *o;
            let op = match sym {
                "*" => Arith::Mul,
                "/" => Arith::Div,
                _ => Arith::Rem,
            };
            self.pos += 1;
            let rat = self.at();
            let (right, rt) = self.unary()?;
            arith_type(ty, at, sym)?;
            arith_type(rt, rat, sym)?;
            left = Node::Arith(op, Box::new(left), Box::new(right));
            ty = Type::Num;
        }
        Ok((left, ty))
    }

    fn unary(&mut self) -> Parsed {
        if let Some(Tok::Op("-")) = self.peek() {
            self.pos += 1;
            self.deeper()?;
            let at = self.at();
            let (n, t) = self.unary()?;
            self.depth -= 1;
            arith_type(t, at, "-")?;
            return Ok((Node::Neg(Box::new(n)), Type::Num));
        }
        self.atom()
    }

    fn atom(&mut self) -> Parsed {
        let at = self.at();
        let Some(tok) = self.peek().cloned() else {
            return Err(ExprError {
                at,
                message:
                    "expected a value (`${name}`, a number, a \"string\", `status`), found the end"
                        .into(),
            });
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok((Node::Num(n), Type::Num)),
            Tok::Str(s) => Ok((Node::Str(s), Type::Str)),
            Tok::Var(name) => Ok((Node::Var(self.vars.slot(&name)), Type::Var)),
            Tok::Op("(") => {
                self.deeper()?;
                let inner = self.or()?;
                self.depth -= 1;
                match self.peek() {
                    Some(Tok::Op(")")) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    other => Err(ExprError {
                        at: self.at(),
                        message: format!(
                            "expected `)` to close the `(` at byte {at}, found {}",
                            other.map_or("the end".into(), Tok::describe)
                        ),
                    }),
                }
            }
            Tok::Ident(w) => match w.as_str() {
                "true" => Ok((Node::Bool(true), Type::Bool)),
                "false" => Ok((Node::Bool(false), Type::Bool)),
                "status" => Ok((Node::Status, Type::Num)),
                "exists" => {
                    let open = self.at();
                    if self.peek() != Some(&Tok::Op("(")) {
                        return Err(ExprError {
                            at: open,
                            message: "expected `(` after `exists`".into(),
                        });
                    }
                    self.pos += 1;
                    let name_at = self.at();
                    let name = match self.peek().cloned() {
                        Some(Tok::Ident(n)) | Some(Tok::Var(n)) => n,
                        other => {
                            return Err(ExprError {
                                at: name_at,
                                message: format!(
                                    "`exists` expected a variable's name, found {}",
                                    other.map_or("the end".into(), |t| t.describe())
                                ),
                            });
                        }
                    };
                    self.pos += 1;
                    if self.peek() != Some(&Tok::Op(")")) {
                        return Err(ExprError {
                            at: self.at(),
                            message: "expected `)` after the name in `exists(...)`".into(),
                        });
                    }
                    self.pos += 1;
                    Ok((Node::Exists(self.vars.slot(&name)), Type::Bool))
                }
                other => Err(ExprError {
                    at,
                    message: format!(
                        "unknown word `{other}`; variables are written `${{{other}}}`, and the words are `and`, `or`, `not`, `exists`, `status`, `true`, `false`"
                    ),
                }),
            },
            Tok::Op(o) => Err(ExprError {
                at,
                message: format!(
                    "expected a value (`${{name}}`, a number, a \"string\", `status`), found `{o}`"
                ),
            }),
        }
    }
}

fn arith_type(t: Type, at: usize, op: &str) -> Result<(), ExprError> {
    match t {
        Type::Num | Type::Var => Ok(()),
        other => Err(ExprError {
            at,
            message: format!("`{op}` works on integers, found {}", other.word()),
        }),
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The variables an expression's text names (`${name}` and `exists(name)`),
/// with their byte offsets, without compiling it.
pub fn expr_vars(text: &str) -> Result<Vec<(usize, String)>, ExprError> {
    let tokens = lex(text)?;
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match &t.tok {
            Tok::Var(n) => out.push((t.at, n.clone())),
            Tok::Ident(n)
                if i >= 2
                    && tokens[i - 1].tok == Tok::Op("(")
                    && tokens[i - 2].tok == Tok::Ident("exists".into()) =>
            {
                out.push((t.at, n.clone()))
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, vals: &[(&str, &str)], status: u16) -> Result<bool, ExprError> {
        let mut vars = VarTable::default();
        let e = Expr::condition(text, &mut vars)?;
        let mut values = vec![String::new(); vars.len()];
        for (k, v) in vals {
            if let Some(s) = vars.get(k) {
                values[s] = v.to_string();
            }
        }
        Ok(e.holds(&values, status))
    }

    #[test]
    fn conditions_evaluate() {
        assert!(run("${n} < 3", &[("n", "2")], 0).unwrap());
        assert!(!run("${n} < 3", &[("n", "3")], 0).unwrap());
        assert!(
            run(
                "${a} == \"x\" and not (${b} == 'y')",
                &[("a", "x"), ("b", "z")],
                0
            )
            .unwrap()
        );
        assert!(run("status == 200 or status == 302", &[], 302).unwrap());
        assert!(
            run(
                "exists(token) && ${token} =~ \"^[a-f0-9]+$\"",
                &[("token", "beef")],
                0
            )
            .unwrap()
        );
        assert!(!run("exists(token)", &[("token", "")], 0).unwrap());
        assert!(run("${s} !~ \"err\"", &[("s", "fine")], 0).unwrap());
        assert!(run("(${page} + 1) * 2 % 5 == 1", &[("page", "2")], 0).unwrap());
        assert!(run("${n} == 10", &[("n", " 10 ")], 0).unwrap());
        // Text that is no number makes an ordering false, never an error.
        assert!(!run("${n} < 3", &[("n", "abc")], 0).unwrap());
        assert!(!run("${n} >= 3", &[("n", "abc")], 0).unwrap());
        assert!(run("-${n} == -4", &[("n", "4")], 0).unwrap());
    }

    #[test]
    fn values_are_written_without_allocating_anew() {
        let mut vars = VarTable::default();
        let e = Expr::parse("${page} + 1", &mut vars).unwrap();
        let mut values = vec!["41".to_string()];
        let mut out = String::with_capacity(8);
        assert!(e.value(&values, 0, &mut out));
        assert_eq!(out, "42");
        values[0] = "x".into();
        assert!(!e.value(&values, 0, &mut out));
        assert_eq!(out, "");
        let div = Expr::parse("10 / 0", &mut vars).unwrap();
        assert!(!div.value(&values, 0, &mut out));
        let s = Expr::parse("\"done\"", &mut vars).unwrap();
        assert!(s.value(&values, 0, &mut out));
        assert_eq!(out, "done");
    }

    #[test]
    fn type_errors_and_syntax_errors_say_where_and_what() {
        let err = |t: &str| run(t, &[], 0).unwrap_err();
        let e = err("\"abc\" < 3");
        assert_eq!(e.at, 0);
        assert!(e.message.contains("orders numbers, found a string"), "{e}");
        let e = err("${a} and ${b} == 1");
        assert!(
            e.message
                .contains("`and` takes conditions, found a variable"),
            "{e}"
        );
        let e = err("${a} == 1 and");
        assert_eq!(e.at, 13);
        assert!(e.message.contains("found the end"), "{e}");
        let e = err("${a} =~ \"(\"");
        assert_eq!(e.at, 8);
        assert!(e.message.starts_with("invalid regex"), "{e}");
        let e = err("1 == \"1\"");
        assert!(e.message.contains("compares a number with a string"), "{e}");
        let e = err("${a} + 1");
        assert!(e.message.starts_with("expected a condition"), "{e}");
        let e = err("page < 2");
        assert!(e.message.contains("written `${page}`"), "{e}");
        let e = err("(${a} == 1");
        assert!(e.message.contains("expected `)`"), "{e}");
        let e = err("${a} == 1 ${b}");
        assert_eq!(e.at, 10);
        let deep = format!("{}1 == 1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(err(&deep).message.contains("nested more than 64"));
        let nots = format!("{}true", "not ".repeat(100_000));
        assert!(err(&nots).message.contains("nested more than 64"));
        let e = err("\"x\" + 1 == 2");
        assert!(
            e.message.contains("works on integers, found a string"),
            "{e}"
        );
        assert_eq!(
            expr_vars("exists(a) and ${b} == 1").unwrap(),
            [(7, "a".to_string()), (14, "b".to_string())]
        );
    }
}
