//! The subset of CEL that access-log filters (`filter.expression`) may
//! use, parsed into the [`Expr`] tree agents evaluate: comparisons of an
//! attribute or header with a literal, `!`, `&&`, `||`, parentheses,
//! boolean attributes and `startsWith`/`endsWith`/`contains` on strings.
//! Anything else is refused with the position where it went wrong, so an
//! expression a proxy could not evaluate never leaves weft-control.
//! [`parse_value`] reads the smaller form a metric's `tagOverrides` value
//! may take: one attribute, header or literal.

use weft_proto::telemetry::{Comparison, Expr, Exprs, Op, Value, expr, value};

/// The attributes weft's agent knows, with their CEL types.
const ATTRIBUTES: &[(&str, Type)] = &[
    ("response.code", Type::Int),
    ("response.grpc_status", Type::Int),
    ("response.size", Type::Int),
    ("response.flags", Type::String),
    ("response.code_details", Type::String),
    ("request.method", Type::String),
    ("request.path", Type::String),
    ("request.url_path", Type::String),
    ("request.host", Type::String),
    ("request.scheme", Type::String),
    ("request.protocol", Type::String),
    ("request.id", Type::String),
    ("request.useragent", Type::String),
    ("request.size", Type::Int),
    ("connection.mtls", Type::Bool),
    ("connection.requested_server_name", Type::String),
    ("source.address", Type::String),
    ("source.port", Type::Int),
    ("destination.address", Type::String),
    ("destination.port", Type::Int),
    ("upstream.address", Type::String),
    ("xds.cluster_name", Type::String),
    ("xds.route_name", Type::String),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Type {
    Int,
    String,
    Bool,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Int => "int",
            Type::String => "string",
            Type::Bool => "bool",
        }
    }
}

/// Parses `text`; the error names the position (0-based, in characters)
/// and what was wrong there.
pub fn parse(text: &str) -> Result<Expr, String> {
    let mut p = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    let expr = p.or()?;
    p.skip_space();
    if p.at < p.chars.len() {
        return Err(p.error("unexpected text after the expression"));
    }
    Ok(expr)
}

/// Parses a metric tag's value (`tagOverrides.NAME.value`): one
/// attribute, `request.headers['name']`, `response.headers['name']` or a
/// literal, optionally inside CEL's `string( ... )` (which changes nothing
/// here: the agent renders every value as text). No comparison or other
/// operator; the error names the position (0-based, in characters) and
/// what was wrong there.
pub fn parse_value(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    p.skip_space();
    let start = p.at;
    let converted = p.eat("string") && p.eat("(");
    if !converted {
        p.at = start;
    }
    let (value, _) = p.operand()?;
    if converted && !p.eat(")") {
        return Err(p.error("expected `)`"));
    }
    p.skip_space();
    if p.at < p.chars.len() {
        return Err(p.error(
            "unexpected text after the value (a tag's value is one attribute, header or literal, optionally in `string(...)`)",
        ));
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn error(&self, what: &str) -> String {
        let rest: String = self.chars[self.at.min(self.chars.len())..]
            .iter()
            .take(20)
            .collect();
        if rest.is_empty() {
            format!("position {}: {what} (at the end)", self.at)
        } else {
            format!("position {}: {what} (at `{rest}`)", self.at)
        }
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        let n = token.chars().count();
        if self.chars.len() >= self.at + n
            && self.chars[self.at..self.at + n]
                .iter()
                .copied()
                .eq(token.chars())
        {
            self.at += n;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and()?];
        while self.eat("||") {
            items.push(self.and()?);
        }
        Ok(join(items, expr::Kind::Or))
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.unary()?];
        while self.eat("&&") {
            items.push(self.unary()?);
        }
        Ok(join(items, expr::Kind::And))
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.skip_space();
        if self.chars.get(self.at) == Some(&'!') && self.chars.get(self.at + 1) != Some(&'=') {
            self.at += 1;
            let inner = self.unary()?;
            return Ok(Expr {
                kind: Some(expr::Kind::Not(Box::new(inner))),
            });
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        self.skip_space();
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(inner);
        }
        let left_at = self.at;
        let (left, left_type) = self.operand()?;
        // A method call on a string: `x.startsWith('y')`.
        for (method, op) in [
            (".startsWith(", Op::StartsWith),
            (".endsWith(", Op::EndsWith),
            (".contains(", Op::Contains),
        ] {
            if self.eat(method) {
                if left_type != Type::String {
                    self.at = left_at;
                    return Err(self.error(&format!(
                        "`{}` is for strings; this is {}",
                        &method[1..method.len() - 1],
                        left_type.name()
                    )));
                }
                let (right, right_type) = self.operand()?;
                if right_type != Type::String || !is_literal(&right) {
                    return Err(self.error("expected a string literal argument"));
                }
                if !self.eat(")") {
                    return Err(self.error("expected `)`"));
                }
                return Ok(compare(op, left, right));
            }
        }
        self.skip_space();
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let Some((symbol, op)) = ops.into_iter().find(|(s, _)| self.eat(s)) else {
            if left_type == Type::Bool {
                return Ok(Expr {
                    kind: Some(expr::Kind::Value(left)),
                });
            }
            return Err(self.error(&format!(
                "expected a comparison (==, !=, <, <=, >, >=): a {} is not a condition",
                left_type.name()
            )));
        };
        self.skip_space();
        let right_at = self.at;
        let (right, right_type) = self.operand()?;
        if right_type != left_type {
            self.at = right_at;
            return Err(self.error(&format!(
                "cannot compare {} with {} using `{symbol}`",
                left_type.name(),
                right_type.name()
            )));
        }
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && left_type != Type::Int {
            self.at = right_at;
            return Err(self.error(&format!("`{symbol}` compares numbers only")));
        }
        Ok(compare(op, left, right))
    }

    /// An attribute, a header lookup or a literal.
    fn operand(&mut self) -> Result<(Value, Type), String> {
        self.skip_space();
        let start = self.at;
        match self.chars.get(self.at) {
            Some('\'') | Some('"') => {
                let s = self.string()?;
                return Ok((literal(value::Kind::String(s)), Type::String));
            }
            Some(c) if c.is_ascii_digit() || *c == '-' => {
                self.at += 1;
                while self.chars.get(self.at).is_some_and(|c| c.is_ascii_digit()) {
                    self.at += 1;
                }
                // CEL's unsigned literals: `200u`.
                let text: String = self.chars[start..self.at].iter().collect();
                if self.chars.get(self.at) == Some(&'u') {
                    self.at += 1;
                }
                let n: i64 = text.parse().map_err(|_| {
                    self.at = start;
                    self.error("not a number")
                })?;
                return Ok((literal(value::Kind::Int(n)), Type::Int));
            }
            _ => {}
        }
        let mut path = String::new();
        while let Some(c) = self.chars.get(self.at) {
            if c.is_ascii_alphanumeric() || *c == '_' {
                path.push(*c);
                self.at += 1;
            } else if *c == '.'
                && self
                    .chars
                    .get(self.at + 1)
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && !self.method_follows()
            {
                path.push('.');
                self.at += 1;
            } else {
                break;
            }
        }
        match path.as_str() {
            "" => return Err(self.error("expected an attribute, a string or a number")),
            "true" => return Ok((literal(value::Kind::Bool(true)), Type::Bool)),
            "false" => return Ok((literal(value::Kind::Bool(false)), Type::Bool)),
            "request.headers" | "response.headers" => {
                if !self.eat("[") {
                    return Err(self.error(&format!("expected `[` after `{path}`")));
                }
                self.skip_space();
                let name = self.string()?.to_ascii_lowercase();
                if !self.eat("]") {
                    return Err(self.error("expected `]`"));
                }
                let kind = if path == "request.headers" {
                    value::Kind::RequestHeader(name)
                } else {
                    value::Kind::ResponseHeader(name)
                };
                return Ok((literal(kind), Type::String));
            }
            _ => {}
        }
        match ATTRIBUTES.iter().find(|(name, _)| *name == path) {
            Some((_, t)) => Ok((literal(value::Kind::Attribute(path)), *t)),
            None => {
                self.at = start;
                Err(self.error(&format!(
                    "unknown attribute `{path}` (weft knows {}, request.headers['name'], response.headers['name'])",
                    ATTRIBUTES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    }

    /// Whether `.startsWith(` and friends come next.
    fn method_follows(&self) -> bool {
        let rest: String = self.chars[self.at..].iter().take(12).collect();
        [".startsWith(", ".endsWith(", ".contains("]
            .iter()
            .any(|m| rest.starts_with(m))
    }

    fn string(&mut self) -> Result<String, String> {
        let Some(quote) = self
            .chars
            .get(self.at)
            .copied()
            .filter(|c| *c == '\'' || *c == '"')
        else {
            return Err(self.error("expected a quoted string"));
        };
        let start = self.at;
        self.at += 1;
        let mut s = String::new();
        loop {
            match self.chars.get(self.at) {
                None => {
                    self.at = start;
                    return Err(self.error("unterminated string"));
                }
                Some('\\') => {
                    if let Some(c) = self.chars.get(self.at + 1) {
                        s.push(*c);
                    }
                    self.at += 2;
                }
                Some(c) if *c == quote => {
                    self.at += 1;
                    return Ok(s);
                }
                Some(c) => {
                    s.push(*c);
                    self.at += 1;
                }
            }
        }
    }
}

fn literal(kind: value::Kind) -> Value {
    Value { kind: Some(kind) }
}

fn is_literal(v: &Value) -> bool {
    matches!(
        v.kind,
        Some(value::Kind::String(_) | value::Kind::Int(_) | value::Kind::Bool(_))
    )
}

fn compare(op: Op, left: Value, right: Value) -> Expr {
    Expr {
        kind: Some(expr::Kind::Compare(Comparison {
            op: op as i32,
            left: Some(left),
            right: Some(right),
        })),
    }
}

fn join(mut items: Vec<Expr>, kind: fn(Exprs) -> expr::Kind) -> Expr {
    if items.len() == 1 {
        return items.pop().expect("one item");
    }
    Expr {
        kind: Some(kind(Exprs { items })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(e: &Expr) -> Op {
        match &e.kind {
            Some(expr::Kind::Compare(c)) => c.op(),
            other => panic!("not a comparison: {other:?}"),
        }
    }

    #[test]
    fn the_common_forms_parse() {
        assert_eq!(op(&parse("response.code >= 400").unwrap()), Op::Ge);
        assert_eq!(op(&parse("response.code == 503").unwrap()), Op::Eq);
        assert!(matches!(
            parse("connection.mtls").unwrap().kind,
            Some(expr::Kind::Value(_))
        ));
        let e = parse("request.headers['x-debug'] == \"on\"").unwrap();
        let Some(expr::Kind::Compare(c)) = e.kind else {
            panic!()
        };
        assert_eq!(
            c.left.unwrap().kind,
            Some(value::Kind::RequestHeader("x-debug".into()))
        );
        let e = parse("!(response.code >= 200 && response.code < 300) || connection.mtls").unwrap();
        let Some(expr::Kind::Or(or)) = e.kind else {
            panic!()
        };
        assert!(matches!(or.items[0].kind, Some(expr::Kind::Not(_))));
        assert_eq!(
            op(&parse("request.url_path.startsWith('/api')").unwrap()),
            Op::StartsWith
        );
        assert_eq!(op(&parse("response.code != 200u").unwrap()), Op::Ne);
    }

    #[test]
    fn unknown_forms_are_refused_with_a_position() {
        for (text, position, wanted) in [
            ("response.cod >= 400", 0, "unknown attribute `response.cod`"),
            ("response.code >= '4'", 17, "cannot compare int with string"),
            ("response.code", 13, "not a condition"),
            ("response.code >= 400 &&", 23, "expected an attribute"),
            ("(response.code >= 400", 21, "expected `)`"),
            ("request.method < 'GET'", 17, "compares numbers only"),
            ("response.code >= 400 garbage", 21, "unexpected text"),
            ("size(request.path) > 3", 0, "unknown attribute `size`"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(&format!("position {position}:")) && err.contains(wanted),
                "{text}: {err}"
            );
        }
    }

    fn kind(text: &str) -> value::Kind {
        parse_value(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .kind
            .expect("a value")
    }

    #[test]
    fn tag_values_are_one_operand() {
        assert_eq!(
            kind("request.host"),
            value::Kind::Attribute("request.host".into())
        );
        assert_eq!(
            kind("string(destination.port)"),
            value::Kind::Attribute("destination.port".into())
        );
        assert_eq!(
            kind(" string ( response.code ) "),
            value::Kind::Attribute("response.code".into())
        );
        assert_eq!(
            kind("request.headers['X-User']"),
            value::Kind::RequestHeader("x-user".into())
        );
        assert_eq!(
            kind("response.headers['X-Cache']"),
            value::Kind::ResponseHeader("x-cache".into())
        );
        assert_eq!(kind("'literal'"), value::Kind::String("literal".into()));
        assert_eq!(kind("42"), value::Kind::Int(42));
    }

    #[test]
    fn tag_values_refuse_anything_more_with_a_position() {
        for (text, position, wanted) in [
            ("request.host == 'a'", 13, "unexpected text after the value"),
            (
                "upstream_peer.labels['app'].value",
                0,
                "unknown attribute `upstream_peer.labels` (weft knows response.code",
            ),
            ("", 0, "expected an attribute, a string or a number"),
            ("   ", 3, "expected an attribute, a string or a number"),
            ("string(request.host", 19, "expected `)`"),
            ("string()", 7, "expected an attribute"),
            ("request.host + 'x'", 13, "unexpected text"),
            ("size(request.path)", 0, "unknown attribute `size`"),
        ] {
            let err = parse_value(text).unwrap_err();
            assert!(
                err.contains(&format!("position {position}:")) && err.contains(wanted),
                "{text}: {err}"
            );
        }
    }
}
