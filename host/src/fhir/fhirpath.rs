//! The subset of FHIRPath that the R4 search parameter expressions use, evaluated over
//! resources as `serde_json::Value`.
//!
//! Supported: paths (with FHIR choice types: `Observation.value` finds `valueQuantity`),
//! type names as the first step (`Patient.name`, `Resource.id`), `|` unions, indexers
//! (`entry[0]`), `as`/`is` operators and the functions `where(...)`, `exists()`,
//! `resolve()` (only as `resolve() is Type`, answered from the reference itself),
//! `as(T)`, `ofType(T)`, `is(T)`, `not()`, `first()`, `empty()`; `=`, `!=`, `and`, `or`;
//! string, boolean and number literals; `$this` and `%resource`. Anything else is a
//! parse error, which the definitions record as "not indexable".

use serde_json::Value;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `$this`, or the implicit input of a path's first step.
    This,
    /// `%resource`: the resource being evaluated.
    Resource,
    Literal(Literal),
    /// `focus.name`; a first step is `Member(This, name)`.
    Member(Box<Expr>, String),
    Index(Box<Expr>, usize),
    Call(Box<Expr>, Function),
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
    Union(Box<Expr>, Box<Expr>),
    Equals(Box<Expr>, Box<Expr>, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Bool(bool),
    Number(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Function {
    Where(Box<Expr>),
    Exists,
    Resolve,
    OfType(String),
    Is(String),
    Not,
    First,
    Empty,
}

/// One item of an evaluation result.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    /// A node of the resource, with its FHIR type when known (from a choice-type
    /// suffix such as `valueQuantity`, or a `resourceType`).
    Node {
        value: &'a Value,
        type_name: Option<&'a str>,
    },
    Bool(bool),
    /// The outcome of `resolve()`: the referenced resource type, when the reference
    /// names it.
    Resolved(Option<String>),
}

impl<'a> Item<'a> {
    fn node(value: &'a Value) -> Item<'a> {
        Item::Node {
            value,
            type_name: value.get("resourceType").and_then(Value::as_str),
        }
    }
}

/// Tokens of the longest expression parsed. The R4 search definitions use well under a
/// hundred; the bound keeps the tree (which parsing, evaluation and `Drop` walk
/// recursively) shallow enough for any thread's stack whatever the text.
const MAX_TOKENS: usize = 512;

/// Parses an expression of the supported subset.
pub fn parse(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    if tokens.len() > MAX_TOKENS {
        return Err(format!(
            "the expression has {} tokens; at most {MAX_TOKENS} are parsed",
            tokens.len()
        ));
    }
    let mut parser = Parser { tokens, pos: 0 };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some(t) => Err(format!("unexpected {t:?}")),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Var(String),
    Sym(char),
    NotEquals,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic()
            || c == '_'
            || ((c == '$' || c == '%') && i + 1 < chars.len())
        {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(if c == '$' || c == '%' {
                Token::Var(word)
            } else {
                Token::Ident(word)
            });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(Token::Num(
                word.parse().map_err(|_| format!("bad number {word}"))?,
            ));
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string".into()),
                    Some('\'') => break,
                    Some('\\') => {
                        s.push(*chars.get(i + 1).ok_or("unterminated string")?);
                        i += 2;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            i += 1;
            tokens.push(Token::Str(s));
        } else if c == '!' && chars.get(i + 1) == Some(&'=') {
            tokens.push(Token::NotEquals);
            i += 2;
        } else if "().|=[]".contains(c) {
            tokens.push(Token::Sym(c));
            i += 1;
        } else {
            return Err(format!("operator or character '{c}' is not supported"));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat_sym(&mut self, c: char) -> bool {
        if self.peek() == Some(&Token::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, c: char) -> Result<(), String> {
        if self.eat_sym(c) {
            Ok(())
        } else {
            Err(format!("expected '{c}'"))
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn type_name(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(name)) => {
                // `FHIR.Quantity` and `System.String` qualify a type name.
                if (name == "FHIR" || name == "System") && self.eat_sym('.') {
                    return self.type_name();
                }
                Ok(name)
            }
            other => Err(format!("expected a type name, found {other:?}")),
        }
    }

    // Precedence, loosest first: or, and, equality, union, is/as, path.
    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.equality()?;
        while self.eat_word("and") {
            left = Expr::And(Box::new(left), Box::new(self.equality()?));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, String> {
        let mut left = self.union()?;
        loop {
            if self.eat_sym('=') {
                left = Expr::Equals(Box::new(left), Box::new(self.union()?), true);
            } else if self.peek() == Some(&Token::NotEquals) {
                self.pos += 1;
                left = Expr::Equals(Box::new(left), Box::new(self.union()?), false);
            } else {
                return Ok(left);
            }
        }
    }

    fn union(&mut self) -> Result<Expr, String> {
        let mut left = self.type_op()?;
        while self.eat_sym('|') {
            left = Expr::Union(Box::new(left), Box::new(self.type_op()?));
        }
        Ok(left)
    }

    fn type_op(&mut self) -> Result<Expr, String> {
        let mut left = self.path()?;
        loop {
            if self.eat_word("is") {
                left = Expr::Is(Box::new(left), self.type_name()?);
            } else if self.eat_word("as") {
                left = Expr::As(Box::new(left), self.type_name()?);
            } else {
                return Ok(left);
            }
        }
    }

    fn path(&mut self) -> Result<Expr, String> {
        let mut expr = self.term()?;
        loop {
            if self.eat_sym('.') {
                expr = self.step(expr)?;
            } else if self.eat_sym('[') {
                let index = match self.next() {
                    Some(Token::Num(n)) if n >= 0.0 && n.fract() == 0.0 => n as usize,
                    other => return Err(format!("expected an index, found {other:?}")),
                };
                self.expect_sym(']')?;
                expr = Expr::Index(Box::new(expr), index);
            } else {
                return Ok(expr);
            }
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        match self.peek().cloned() {
            Some(Token::Sym('(')) => {
                self.pos += 1;
                let inner = self.or()?;
                self.expect_sym(')')?;
                Ok(inner)
            }
            Some(Token::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Literal(Literal::String(s)))
            }
            Some(Token::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Literal(Literal::Number(n)))
            }
            Some(Token::Var(v)) => {
                self.pos += 1;
                match v.as_str() {
                    "$this" => Ok(Expr::This),
                    "%resource" | "%rootResource" => Ok(Expr::Resource),
                    _ => Err(format!("variable {v} is not supported")),
                }
            }
            Some(Token::Ident(w)) if w == "true" || w == "false" => {
                self.pos += 1;
                Ok(Expr::Literal(Literal::Bool(w == "true")))
            }
            Some(Token::Ident(_)) => self.step(Expr::This),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// A member name or a function call applied to `focus`.
    fn step(&mut self, focus: Expr) -> Result<Expr, String> {
        let name = match self.next() {
            Some(Token::Ident(name)) => name,
            other => return Err(format!("expected a name, found {other:?}")),
        };
        if !self.eat_sym('(') {
            return Ok(Expr::Member(Box::new(focus), name));
        }
        let focus = Box::new(focus);
        let call = |f| Ok(Expr::Call(focus.clone(), f));
        let result = match name.as_str() {
            "where" => {
                let criteria = self.or()?;
                call(Function::Where(Box::new(criteria)))
            }
            "exists" => call(Function::Exists),
            "resolve" => call(Function::Resolve),
            "not" => call(Function::Not),
            "first" => call(Function::First),
            "empty" => call(Function::Empty),
            "ofType" => call(Function::OfType(self.type_name()?)),
            "is" => call(Function::Is(self.type_name()?)),
            "as" => Ok(Expr::As(focus.clone(), self.type_name()?)),
            other => Err(format!("function {other}() is not supported")),
        };
        self.expect_sym(')')?;
        result
    }
}

/// Evaluates `expr` against `resource`.
pub fn evaluate<'a>(expr: &'a Expr, resource: &'a Value) -> Vec<Item<'a>> {
    eval(expr, &[Item::node(resource)], resource)
}

/// Evaluates `expr` with `input` as its focus (for composite components, which are
/// relative to an element), `resource` answering `%resource`.
pub fn evaluate_on<'a>(expr: &'a Expr, input: &[Item<'a>], resource: &'a Value) -> Vec<Item<'a>> {
    eval(expr, input, resource)
}

fn eval<'a>(expr: &'a Expr, input: &[Item<'a>], resource: &'a Value) -> Vec<Item<'a>> {
    match expr {
        Expr::This => input.to_vec(),
        Expr::Resource => vec![Item::node(resource)],
        Expr::Literal(Literal::Bool(b)) => vec![Item::Bool(*b)],
        // String and number literals only occur as comparison operands; see `literal_eq`.
        Expr::Literal(_) => Vec::new(),
        Expr::Member(focus, name) => {
            let focus = eval(focus, input, resource);
            let mut out = Vec::new();
            for item in &focus {
                member(item, name, &mut out);
            }
            out
        }
        Expr::Index(focus, index) => eval(focus, input, resource)
            .into_iter()
            .nth(*index)
            .into_iter()
            .collect(),
        Expr::Union(a, b) => {
            let mut out = eval(a, input, resource);
            for item in eval(b, input, resource) {
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            out
        }
        Expr::Is(focus, type_name) => {
            let focus = eval(focus, input, resource);
            match focus.as_slice() {
                [item] => vec![Item::Bool(is_type(item, type_name))],
                _ => Vec::new(),
            }
        }
        Expr::As(focus, type_name) => eval(focus, input, resource)
            .into_iter()
            .filter(|item| as_type(item, type_name))
            .collect(),
        Expr::Equals(a, b, equal) => eval_equals((a, b), *equal, input, resource),
        Expr::And(a, b) => {
            let (l, r) = (
                truth(&eval(a, input, resource)),
                truth(&eval(b, input, resource)),
            );
            match (l, r) {
                (Some(false), _) | (_, Some(false)) => vec![Item::Bool(false)],
                (Some(true), Some(true)) => vec![Item::Bool(true)],
                _ => Vec::new(),
            }
        }
        Expr::Or(a, b) => {
            let (l, r) = (
                truth(&eval(a, input, resource)),
                truth(&eval(b, input, resource)),
            );
            match (l, r) {
                (Some(true), _) | (_, Some(true)) => vec![Item::Bool(true)],
                (Some(false), Some(false)) => vec![Item::Bool(false)],
                _ => Vec::new(),
            }
        }
        Expr::Call(focus, function) => call(function, eval(focus, input, resource), resource),
    }
}

/// `a = b` (`equal`) or `a != b`: empty when either side is empty; a literal side
/// compares with the one item of the other (see `literal_eq`).
fn eval_equals<'a>(
    (a, b): (&'a Expr, &'a Expr),
    equal: bool,
    input: &[Item<'a>],
    resource: &'a Value,
) -> Vec<Item<'a>> {
    let result = match (a, b) {
        (other, Expr::Literal(lit)) | (Expr::Literal(lit), other) => {
            let items = eval(other, input, resource);
            match items.as_slice() {
                [item] => Some(literal_eq(item, lit)),
                _ => None,
            }
        }
        _ => {
            let (left, right) = (eval(a, input, resource), eval(b, input, resource));
            match (left.as_slice(), right.as_slice()) {
                ([], _) | (_, []) => None,
                (l, r) => Some(l == r),
            }
        }
    };
    result
        .map(|r| vec![Item::Bool(r == equal)])
        .unwrap_or_default()
}

/// A function called on `focus`.
fn call<'a>(function: &'a Function, focus: Vec<Item<'a>>, resource: &'a Value) -> Vec<Item<'a>> {
    match function {
        Function::Where(criteria) => focus
            .into_iter()
            .filter(|item| {
                truth(&eval(criteria, std::slice::from_ref(item), resource)) == Some(true)
            })
            .collect(),
        Function::Exists => vec![Item::Bool(!focus.is_empty())],
        Function::Empty => vec![Item::Bool(focus.is_empty())],
        Function::Not => match truth(&focus) {
            Some(b) => vec![Item::Bool(!b)],
            None => Vec::new(),
        },
        Function::First => focus.into_iter().take(1).collect(),
        Function::Resolve => focus.iter().filter_map(resolve).collect(),
        Function::OfType(t) => focus.into_iter().filter(|item| as_type(item, t)).collect(),
        Function::Is(t) => match focus.as_slice() {
            [item] => vec![Item::Bool(is_type(item, t))],
            _ => Vec::new(),
        },
    }
}

/// The singleton-boolean reading of a collection (FHIRPath "singleton evaluation"):
/// empty is unknown, a single boolean is itself, any other single item is true.
fn truth(items: &[Item<'_>]) -> Option<bool> {
    match items {
        [] => None,
        [Item::Bool(b)] => Some(*b),
        [
            Item::Node {
                value: Value::Bool(b),
                ..
            },
        ] => Some(*b),
        [_] => Some(true),
        _ => None,
    }
}

fn literal_eq(item: &Item<'_>, literal: &Literal) -> bool {
    match (item, literal) {
        (Item::Bool(b), Literal::Bool(l)) => b == l,
        (
            Item::Node {
                value: Value::Bool(b),
                ..
            },
            Literal::Bool(l),
        ) => b == l,
        (
            Item::Node {
                value: Value::String(s),
                ..
            },
            Literal::String(l),
        ) => s == l,
        (
            Item::Node {
                value: Value::Number(n),
                ..
            },
            Literal::Number(l),
        ) => n.as_f64() == Some(*l),
        _ => false,
    }
}

/// Navigates to the child `name` of `item`, flattening arrays. A name that starts with
/// an upper-case letter is a type filter (`Patient` in `Patient.name`); a name that is
/// missing may be a choice element (`value` finds `valueQuantity`, typed `Quantity`).
fn member<'a>(item: &Item<'a>, name: &str, out: &mut Vec<Item<'a>>) {
    let Item::Node { value, type_name } = item else {
        return;
    };
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        if type_name.is_some_and(|t| is_subtype(t, name)) {
            out.push(item.clone());
        }
        return;
    }
    let Some(object) = value.as_object() else {
        return;
    };
    let mut push = |child: &'a Value, type_name: Option<&'a str>| match child {
        Value::Array(items) => {
            for v in items {
                out.push(child_item(v, type_name));
            }
        }
        v => out.push(child_item(v, type_name)),
    };
    if let Some(child) = object.get(name) {
        push(child, None);
        return;
    }
    for (key, child) in object {
        if let Some(suffix) = key.strip_prefix(name)
            && suffix.starts_with(|c: char| c.is_ascii_uppercase())
            && super::types::is_data_type_name(suffix)
        {
            push(child, Some(suffix));
        }
    }
}

fn child_item<'a>(value: &'a Value, type_name: Option<&'a str>) -> Item<'a> {
    match type_name {
        Some(t) => Item::Node {
            value,
            type_name: Some(t),
        },
        None => Item::node(value),
    }
}

/// `resolve()` without a server: the referenced type, read from the reference string
/// (`Patient/1`, `http://x/fhir/Patient/1`, `Patient/1/_history/2`) or `Reference.type`.
fn resolve<'a>(item: &Item<'a>) -> Option<Item<'a>> {
    let Item::Node { value, .. } = item else {
        return None;
    };
    if value.get("resourceType").is_some() {
        return Some(Item::Resolved(
            value["resourceType"].as_str().map(str::to_owned),
        ));
    }
    let object = value.as_object()?;
    let from_reference = object
        .get("reference")
        .and_then(Value::as_str)
        .and_then(|r| {
            crate::fhir::search::value::ReferenceValue::parse_literal(r)
                .ok()?
                .target_type
        })
        .map(|t| t.as_str().to_owned());
    let from_type = object
        .get("type")
        .and_then(Value::as_str)
        .map(|t| t.rsplit('/').next().unwrap_or(t).to_owned());
    Some(Item::Resolved(from_reference.or(from_type)))
}

fn is_type(item: &Item<'_>, wanted: &str) -> bool {
    match item {
        Item::Node {
            type_name: Some(t), ..
        } => is_subtype(t, wanted),
        Item::Node {
            value: Value::Bool(_),
            type_name: None,
        }
        | Item::Bool(_) => wanted.eq_ignore_ascii_case("boolean"),
        Item::Node { .. } => false,
        Item::Resolved(t) => t.as_deref() == Some(wanted),
    }
}

/// `as T`: keeps items of type `T`. An item whose type is unknown (a plain element
/// that is not a choice) is kept: the R4 expressions only cast choice elements, and
/// keeping is safer for search than silently dropping values.
fn as_type(item: &Item<'_>, wanted: &str) -> bool {
    match item {
        Item::Node {
            type_name: Some(_), ..
        }
        | Item::Resolved(_) => is_type(item, wanted),
        Item::Node {
            type_name: None, ..
        }
        | Item::Bool(_) => true,
    }
}

/// Whether a value of type `actual` is a `wanted` (case-insensitive on the first
/// letter, because choice suffixes capitalize primitive names: `valueDateTime`).
fn is_subtype(actual: &str, wanted: &str) -> bool {
    let same = |a: &str, b: &str| {
        let mut a_chars = a.chars();
        let mut b_chars = b.chars();
        match (a_chars.next(), b_chars.next()) {
            (Some(x), Some(y)) => {
                x.eq_ignore_ascii_case(&y) && a_chars.as_str() == b_chars.as_str()
            }
            _ => a == b,
        }
    };
    if same(actual, wanted) {
        return true;
    }
    let parents: &[&str] = match actual {
        "Age" | "Count" | "Distance" | "Duration" | "MoneyQuantity" | "SimpleQuantity" => {
            &["Quantity"]
        }
        "Code" | "code" | "Id" | "id" | "Markdown" | "markdown" => &["string"],
        "Url" | "url" | "Canonical" | "canonical" | "Oid" | "oid" | "Uuid" | "uuid" => &["uri"],
        "PositiveInt" | "positiveInt" | "UnsignedInt" | "unsignedInt" => &["integer"],
        _ => &[],
    };
    parents.iter().any(|p| same(p, wanted))
        || (wanted == "Resource" && super::types::ResourceType::parse(actual).is_some())
        || (wanted == "DomainResource"
            && super::types::ResourceType::parse(actual).is_some_and(|t| t.is_domain_resource()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_expressions_are_refused_before_they_are_parsed() {
        let path = format!("Patient{}", ".name".repeat(5_000));
        let err = parse(&path).unwrap_err();
        assert!(err.contains("at most 512 are parsed"), "{err}");
        assert!(parse(&format!("Patient{}", ".name".repeat(100))).is_ok());
    }

    fn values(expr: &str, resource: &Value) -> Vec<Value> {
        let parsed = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        evaluate(&parsed, resource)
            .into_iter()
            .map(|item| match item {
                Item::Node { value, .. } => value.clone(),
                Item::Bool(b) => Value::Bool(b),
                Item::Resolved(t) => json!({ "resolved": t }),
            })
            .collect()
    }

    /// Asserts what `expr` evaluates to on `resource`, as JSON values.
    fn check(expr: &str, resource: &Value, expected: Value) {
        assert_eq!(Value::Array(values(expr, resource)), expected, "{expr}");
    }

    #[test]
    fn evaluates_the_r4_subset_on_a_patient() {
        let patient = json!({
            "resourceType": "Patient", "id": "p1",
            "name": [{"family": "Chalmers", "given": ["Peter", "James"]}, {"family": "Windsor"}],
            "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "a@b"}],
            "deceasedDateTime": "2015-02-14T13:42:00+10:00",
            "generalPractitioner": [{"reference": "Practitioner/1"}, {"reference": "Organization/2"}],
            "link": [{"other": {"reference": "http://x/fhir/Patient/9"}}]
        });
        check(
            "Patient.name.family",
            &patient,
            json!(["Chalmers", "Windsor"]),
        );
        check(
            "Patient.name.given | Patient.name.family",
            &patient,
            json!(["Peter", "James", "Chalmers", "Windsor"]),
        );
        check("Resource.id", &patient, json!(["p1"]));
        check("DomainResource.id", &patient, json!(["p1"]));
        check("Observation.id", &patient, json!([]));
        check("name.family", &patient, json!(["Chalmers", "Windsor"]));
        check(
            "Patient.telecom.where(system='email').value",
            &patient,
            json!(["a@b"]),
        );
        check(
            "Patient.telecom.where(system!='email').value",
            &patient,
            json!(["555"]),
        );
        check(
            "Patient.deceased",
            &patient,
            json!(["2015-02-14T13:42:00+10:00"]),
        );
        check(
            "(Patient.deceased as dateTime)",
            &patient,
            json!(["2015-02-14T13:42:00+10:00"]),
        );
        check("Patient.deceased.as(boolean)", &patient, json!([]));
        check("Patient.deceased is DateTime", &patient, json!([true]));
        check(
            "Patient.deceased.exists() and Patient.deceased != false",
            &patient,
            json!([true]),
        );
        check("Patient.multipleBirth.exists()", &patient, json!([false]));
        check(
            "Patient.generalPractitioner.where(resolve() is Organization)",
            &patient,
            json!([{"reference": "Organization/2"}]),
        );
        check(
            "Patient.link.other.where(resolve() is Patient)",
            &patient,
            json!([{"reference": "http://x/fhir/Patient/9"}]),
        );
        check("Patient.name[1].family", &patient, json!(["Windsor"]));
        check(
            "Patient.name.first().given",
            &patient,
            json!(["Peter", "James"]),
        );
        check("%resource.id", &patient, json!(["p1"]));
    }

    #[test]
    fn evaluates_the_r4_subset_on_an_observation_and_a_bundle() {
        let observation = json!({
            "resourceType": "Observation",
            "valueQuantity": {"value": 7, "unit": "kg"},
            "component": [{"valueAge": {"value": 3}}, {"valueString": "x"}]
        });
        check(
            "(Observation.value as Quantity).unit",
            &observation,
            json!(["kg"]),
        );
        check(
            "Observation.component.value.ofType(Quantity).value",
            &observation,
            json!([3]),
        );
        check(
            "Observation.component.value.as(String)",
            &observation,
            json!(["x"]),
        );
        check(
            "Observation.value as CodeableConcept",
            &observation,
            json!([]),
        );
        check("Observation | Observation.component", &observation, {
            let mut all = vec![observation.clone()];
            all.extend(observation["component"].as_array().unwrap().iter().cloned());
            Value::Array(all)
        });

        let bundle = json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Composition", "id": "c"}}]});
        check("Bundle.entry[0].resource.id", &bundle, json!(["c"]));
        check(
            "Bundle.entry[0].resource is Composition",
            &bundle,
            json!([true]),
        );
    }

    #[test]
    fn rejects_what_it_does_not_support() {
        for expr in [
            "Patient.extension('http://x').value",
            "Patient.name.select(family)",
            "Patient.birthDate + 1 year",
            "Patient.name.where(",
            "Patient.name 'x'",
            "%context.id",
            "Patient.name.count() > 1",
        ] {
            assert!(parse(expr).is_err(), "{expr} should be rejected");
        }
    }
}
