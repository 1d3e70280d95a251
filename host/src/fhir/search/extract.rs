//! Index extraction: a resource in, the index rows of every search parameter of its
//! type out. The store writes these rows in the same transaction as the resource.
//!
//! Rows are typed by the index table they go to. `param` is the parameter's code
//! (`name`, `_lastUpdated`); the resource's type and id are the caller's. Elements
//! are read by shape, so one rule covers each FHIR type a parameter may select:
//!
//! - string: a string, or the text parts of `HumanName` and `Address`
//!   (`text`, `family`, `given`, `prefix`, `suffix`, `line`, `city`, `district`,
//!   `state`, `postalCode`, `country`), each row with the part it came from;
//! - token: `code`/`string`/`uri` (code only), `boolean` (`true`/`false`), `Coding`,
//!   `CodeableConcept` (one row per coding, and a text-only row for its `text`),
//!   `Identifier` and `ContactPoint` (system and value);
//! - reference: `Reference.reference` (relative, absolute, versioned; contained
//!   `#id` references are skipped), a canonical or uri string (url only), or an
//!   inline resource (`Bundle.entry[0].resource`); `Reference.identifier` also
//!   writes a *token* row under the reference's code, which is what `:identifier`
//!   searches;
//! - date: `date`, `dateTime`, `instant` (their implicit range), `Period` (an open
//!   end is [`DATE_MIN`]/[`DATE_MAX`]), `Timing` (from its first to its last event);
//! - number: a number, or both ends of a `Range`;
//! - quantity: `Quantity` and its profiles (`Age`, `Duration`, ...), `Money`
//!   (system `urn:iso:std:iso:4217`), both ends of a `Range`;
//! - uri: a string.

use serde_json::Value;
use thiserror::Error;

use super::value::{DATE_MAX, DATE_MIN, ReferenceValue, normalize_string, parse_date};
use crate::fhir::definitions::{ResourceType, STRING_PARTS, SearchParamDef, SearchParamType};
use crate::fhir::fhirpath::{self, Item};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StringIndex {
    pub param: &'static str,
    /// Lowercase, without diacritics: what default and `:contains` searches compare.
    pub normalized: String,
    /// As written: what `:exact` compares.
    pub exact: String,
    /// The part of a `HumanName` or `Address` the value is (`family`, `city`, ...): what
    /// the parameters of one part search (see `SearchParamDef::rows_subset`).
    pub part: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenIndex {
    pub param: &'static str,
    pub system: Option<String>,
    pub code: Option<String>,
    /// Normalized display or text, for `:text`.
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferenceIndex {
    pub param: &'static str,
    pub target_type: Option<ResourceType>,
    pub target_id: Option<String>,
    pub version: Option<String>,
    /// The reference as written, when absolute (`http://...`, `urn:uuid:...`) or
    /// canonical.
    pub url: Option<String>,
}

/// An inclusive range of milliseconds since the Unix epoch; see [`super::value`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DateIndex {
    pub param: &'static str,
    pub low: i64,
    pub high: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NumberIndex {
    pub param: &'static str,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuantityIndex {
    pub param: &'static str,
    pub value: f64,
    pub system: Option<String>,
    pub code: Option<String>,
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UriIndex {
    pub param: &'static str,
    pub value: String,
}

/// All index rows of one resource, without duplicates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndexRows {
    pub strings: Vec<StringIndex>,
    pub tokens: Vec<TokenIndex>,
    pub references: Vec<ReferenceIndex>,
    pub dates: Vec<DateIndex>,
    pub numbers: Vec<NumberIndex>,
    pub quantities: Vec<QuantityIndex>,
    pub uris: Vec<UriIndex>,
    /// The component rows of composite parameters, one entry per element the
    /// composite's expression selects, so that a search ties its components to one
    /// element (`component-code-value-quantity=8480-6$gt100` needs the systolic
    /// component itself above 100, not any component).
    pub composites: Vec<CompositeElement>,
}

/// The rows of one element of a composite parameter: `rows` hold the components' rows
/// under the components' codes. The store writes them under
/// [`composite_row_param`]`(param, component, element)`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositeElement {
    /// The composite parameter's code.
    pub param: &'static str,
    /// The element's place among those the composite's expression selects.
    pub element: usize,
    pub rows: IndexRows,
}

/// The `param` of a stored composite component row: `composite$component$element`.
/// Searches match the components of one element by this text's common prefix and end.
pub fn composite_row_param(composite: &str, component: &str, element: usize) -> String {
    format!("{}{element}", composite_row_prefix(composite, component))
}

/// `composite$component$`: what [`composite_row_param`] puts before the element number.
pub fn composite_row_prefix(composite: &str, component: &str) -> String {
    format!("{composite}${component}$")
}

impl IndexRows {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.strings.len()
            + self.tokens.len()
            + self.references.len()
            + self.dates.len()
            + self.numbers.len()
            + self.quantities.len()
            + self.uris.len()
            + self.composites.iter().map(|c| c.rows.len()).sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExtractError {
    #[error("a resource must be a JSON object")]
    NotAnObject,
    #[error("the resource has no resourceType")]
    MissingResourceType,
    #[error("'{0}' is not an R4 resource type")]
    UnknownResourceType(String),
}

/// The index rows of every indexed search parameter of the resource's type.
pub fn extract(resource: &Value) -> Result<IndexRows, ExtractError> {
    let object = resource.as_object().ok_or(ExtractError::NotAnObject)?;
    let name = object
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or(ExtractError::MissingResourceType)?;
    let resource_type = ResourceType::parse(name)
        .ok_or_else(|| ExtractError::UnknownResourceType(name.to_owned()))?;
    let mut rows = IndexRows::default();
    for param in resource_type.search_params() {
        if param.kind == SearchParamType::Composite {
            composite_rows(param, resource, &mut rows);
        } else {
            extract_param(param, resource, &mut rows);
        }
    }
    Ok(rows)
}

/// Adds the per-element component rows of a composite parameter whose components can
/// be searched (see [`SearchParamDef::searchable`]).
fn composite_rows(param: &'static SearchParamDef, resource: &Value, rows: &mut IndexRows) {
    if param.searchable().is_err() {
        return;
    }
    let Ok(expr) = param.compiled() else {
        return;
    };
    for (element, item) in fhirpath::evaluate(expr, resource).into_iter().enumerate() {
        if !matches!(item, Item::Node { .. }) {
            continue;
        }
        let mut own = IndexRows::default();
        for component in &param.components {
            let Ok(component_expr) = component.compiled() else {
                continue;
            };
            let code = component.code.as_str();
            for found in
                fhirpath::evaluate_on(component_expr, std::slice::from_ref(&item), resource)
            {
                match found {
                    Item::Node { value, type_name } => {
                        node_rows(component.kind, code, value, type_name, &mut own)
                    }
                    Item::Bool(b) if component.kind == SearchParamType::Token => push(
                        &mut own.tokens,
                        TokenIndex {
                            param: code,
                            system: None,
                            code: Some(b.to_string()),
                            text: None,
                        },
                    ),
                    Item::Bool(_) | Item::Resolved(_) => {}
                }
            }
        }
        if !own.is_empty() {
            rows.composites.push(CompositeElement {
                param: param.code.as_str(),
                element,
                rows: own,
            });
        }
    }
}

/// Adds the rows of one parameter to `rows`. Parameters that are not indexed (see
/// [`SearchParamDef::indexing`]) or write no rows of their own
/// ([`SearchParamDef::writes_rows`]) add nothing.
pub fn extract_param(param: &'static SearchParamDef, resource: &Value, rows: &mut IndexRows) {
    if !param.writes_rows() || param.indexing().is_err() {
        return;
    }
    let Ok(expr) = param.compiled() else {
        return;
    };
    let code = param.code.as_str();
    for item in fhirpath::evaluate(expr, resource) {
        match item {
            Item::Node { value, type_name } => node_rows(param.kind, code, value, type_name, rows),
            Item::Bool(b) if param.kind == SearchParamType::Token => {
                push(
                    &mut rows.tokens,
                    TokenIndex {
                        param: code,
                        system: None,
                        code: Some(b.to_string()),
                        text: None,
                    },
                );
            }
            Item::Bool(_) | Item::Resolved(_) => {}
        }
    }
}

fn push<T: PartialEq>(rows: &mut Vec<T>, row: T) {
    if !rows.contains(&row) {
        rows.push(row);
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn node_rows(
    kind: SearchParamType,
    param: &'static str,
    value: &Value,
    type_name: Option<&str>,
    rows: &mut IndexRows,
) {
    match kind {
        SearchParamType::String => string_rows(param, value, rows),
        SearchParamType::Token => token_rows(param, value, rows),
        SearchParamType::Reference => reference_rows(param, value, rows),
        SearchParamType::Date => date_rows(param, value, type_name, rows),
        SearchParamType::Number => number_rows(param, value, rows),
        SearchParamType::Quantity => quantity_rows(param, value, rows),
        SearchParamType::Uri => {
            if let Some(s) = value.as_str() {
                push(
                    &mut rows.uris,
                    UriIndex {
                        param,
                        value: s.to_owned(),
                    },
                );
            }
        }
        SearchParamType::Composite | SearchParamType::Special => {}
    }
}

fn string_rows(param: &'static str, value: &Value, rows: &mut IndexRows) {
    let mut push_string = |s: &str, part: Option<&'static str>| {
        push(
            &mut rows.strings,
            StringIndex {
                param,
                normalized: normalize_string(s),
                exact: s.to_owned(),
                part,
            },
        )
    };
    match value {
        Value::String(s) => push_string(s, None),
        Value::Object(object) => {
            for &key in STRING_PARTS {
                match object.get(key) {
                    Some(Value::String(s)) => push_string(s, Some(key)),
                    Some(Value::Array(parts)) => {
                        for s in parts.iter().filter_map(Value::as_str) {
                            push_string(s, Some(key));
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn token_rows(param: &'static str, value: &Value, rows: &mut IndexRows) {
    let token = |system: Option<String>, code: Option<String>, text: Option<String>| TokenIndex {
        param,
        system,
        code,
        text: text.map(|t| normalize_string(&t)),
    };
    match value {
        Value::String(s) => push(&mut rows.tokens, token(None, Some(s.clone()), None)),
        Value::Bool(b) => push(&mut rows.tokens, token(None, Some(b.to_string()), None)),
        Value::Number(n) => push(&mut rows.tokens, token(None, Some(n.to_string()), None)),
        Value::Object(object)
            if object.contains_key("coding") || object.keys().all(|k| k == "text" || k == "id") =>
        {
            // CodeableConcept.
            for coding in object
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                token_rows(param, coding, rows);
            }
            if let Some(t) = text(value, "text") {
                push(&mut rows.tokens, token(None, None, Some(t)));
            }
        }
        Value::Object(object) if object.get("value").is_some_and(Value::is_string) => {
            // Identifier or ContactPoint.
            let label = value.get("type").and_then(|t| text(t, "text"));
            push(
                &mut rows.tokens,
                token(text(value, "system"), text(value, "value"), label),
            );
        }
        Value::Object(object) if object.contains_key("code") || object.contains_key("system") => {
            // Coding.
            push(
                &mut rows.tokens,
                token(
                    text(value, "system"),
                    text(value, "code"),
                    text(value, "display"),
                ),
            );
        }
        _ => {}
    }
}

fn reference_rows(param: &'static str, value: &Value, rows: &mut IndexRows) {
    let row = |r: ReferenceValue| ReferenceIndex {
        param,
        target_type: r.target_type,
        target_id: r.id,
        version: r.version,
        url: r.url,
    };
    match value {
        Value::String(s) => {
            // A canonical or uri: the url, and the type/id when it ends in Type/id.
            let reference = ReferenceValue::parse_literal(s)
                .ok()
                .filter(|r| r.url.is_some())
                .unwrap_or_else(|| ReferenceValue {
                    url: Some(s.clone()),
                    ..ReferenceValue::default()
                });
            push(&mut rows.references, row(reference));
        }
        Value::Object(object) => {
            if let Some(t) = object.get("resourceType").and_then(Value::as_str) {
                let reference = ReferenceValue {
                    target_type: ResourceType::parse(t),
                    id: text(value, "id"),
                    ..ReferenceValue::default()
                };
                if reference.id.is_some() {
                    push(&mut rows.references, row(reference));
                }
                return;
            }
            if let Some(literal) = object.get("reference").and_then(Value::as_str)
                && !literal.starts_with('#')
                && let Ok(reference) = ReferenceValue::parse_literal(literal)
            {
                // A relative reference with an id only is not a valid Reference.reference.
                if reference.target_type.is_some() || reference.url.is_some() {
                    push(&mut rows.references, row(reference));
                }
            }
            if let Some(identifier) = object.get("identifier") {
                token_rows(param, identifier, rows);
            }
        }
        _ => {}
    }
}

fn date_rows(param: &'static str, value: &Value, type_name: Option<&str>, rows: &mut IndexRows) {
    let range = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|s| parse_date(s).ok());
    let (low, high) = match value {
        Value::String(s) => match parse_date(s) {
            Ok(r) => (r.low, r.high),
            Err(_) => return,
        },
        Value::Object(object) if object.contains_key("start") || object.contains_key("end") => {
            let (start, end) = (range(object.get("start")), range(object.get("end")));
            if start.is_none() && end.is_none() {
                return;
            }
            (
                start.map_or(DATE_MIN, |r| r.low),
                end.map_or(DATE_MAX, |r| r.high),
            )
        }
        Value::Object(object) if type_name == Some("Timing") || object.contains_key("event") => {
            let events: Vec<_> = object
                .get("event")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| range(Some(e)))
                .collect();
            match (
                events.iter().map(|r| r.low).min(),
                events.iter().map(|r| r.high).max(),
            ) {
                (Some(low), Some(high)) => (low, high),
                _ => return,
            }
        }
        _ => return,
    };
    push(&mut rows.dates, DateIndex { param, low, high });
}

fn number_rows(param: &'static str, value: &Value, rows: &mut IndexRows) {
    match value {
        Value::Number(n) => {
            if let Some(v) = n.as_f64() {
                push(&mut rows.numbers, NumberIndex { param, value: v });
            }
        }
        Value::Object(object) => {
            // A Range (RiskAssessment.prediction.probability) or a Quantity.
            for end in ["low", "high"] {
                if let Some(v) = object
                    .get(end)
                    .and_then(|q| q.get("value"))
                    .and_then(Value::as_f64)
                {
                    push(&mut rows.numbers, NumberIndex { param, value: v });
                }
            }
            if let Some(v) = object.get("value").and_then(Value::as_f64) {
                push(&mut rows.numbers, NumberIndex { param, value: v });
            }
        }
        _ => {}
    }
}

fn quantity_rows(param: &'static str, value: &Value, rows: &mut IndexRows) {
    let Value::Object(object) = value else {
        return;
    };
    if object.contains_key("low") || object.contains_key("high") {
        for end in ["low", "high"] {
            if let Some(q) = object.get(end) {
                quantity_rows(param, q, rows);
            }
        }
        return;
    }
    let Some(v) = object.get("value").and_then(Value::as_f64) else {
        return;
    };
    let row = if let Some(currency) = text(value, "currency") {
        QuantityIndex {
            param,
            value: v,
            system: Some("urn:iso:std:iso:4217".into()),
            code: Some(currency.clone()),
            unit: Some(currency),
        }
    } else {
        QuantityIndex {
            param,
            value: v,
            system: text(value, "system"),
            code: text(value, "code"),
            unit: text(value, "unit"),
        }
    };
    push(&mut rows.quantities, row);
}

#[cfg(test)]
mod tests;
