//! Search parameter parsing: query-string pairs in, a typed [`SearchQuery`] out.
//!
//! A `SearchQuery` is a conjunction of [`Criterion`]s (one per query parameter: AND
//! between repeated parameters) each holding an OR list of [`SearchValue`]s (the
//! comma-separated values), plus the result parameters ([`ResultParams`]). Values are
//! already normalized and typed, so the storage layer turns each criterion into one
//! `EXISTS (...)` over the index table of the parameter's type without re-parsing:
//!
//! | value                  | index table | match                                         |
//! |------------------------|-------------|-----------------------------------------------|
//! | `String`               | string      | `normalized LIKE v%` / `exact = v` / `LIKE %v%` |
//! | `Token`, `TokenText`   | token       | system/code equality, `text LIKE v%`          |
//! | `Reference`            | reference   | type/id (and url for absolute references)     |
//! | `ReferenceIdentifier`  | token       | rows the reference's `identifier` wrote       |
//! | `Date`                 | date        | [`DateValue::predicate`] over `low`/`high`    |
//! | `Number`               | number      | [`NumberValue::predicate`] over `value`       |
//! | `Quantity`             | quantity    | predicate over `value`, plus system/code      |
//! | `Uri`                  | uri         | equality or prefix (`:above`/`:below`)         |

use std::fmt;

use thiserror::Error;

use super::value::{
    DateRange, Decimal, Prefix, RangePredicate, ReferenceValue, format_instant, is_valid_id,
    normalize_string, parse_date, parse_decimal, split_escaped, unescape,
};
use crate::fhir::definitions::{ResourceType, SearchParamDef, SearchParamType};

/// A parsed search on one resource type.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub resource_type: ResourceType,
    /// A resource matches when it matches every criterion.
    pub criteria: Vec<Criterion>,
    pub result: ResultParams,
}

/// One condition on a resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// The parameter has a value matching at least one of `values`. With `negated`
    /// (`:not`), the resource has no value matching any of them (a resource without
    /// the element matches).
    Match {
        param: &'static SearchParamDef,
        values: Vec<SearchValue>,
        negated: bool,
    },
    /// `:missing=true` (no index row for the parameter) or `:missing=false`.
    Missing {
        param: &'static SearchParamDef,
        missing: bool,
    },
    /// `param.chained=...`: the reference `param` points at a resource of one of the
    /// targets' types that matches that target's criterion.
    Chain {
        param: &'static SearchParamDef,
        targets: Vec<ChainTarget>,
    },
    /// `_has:Type:reference:...`: some resource of `source_type` refers to this one
    /// through its parameter `reference` and matches `criterion`.
    Has {
        source_type: ResourceType,
        reference: &'static SearchParamDef,
        criterion: Box<Criterion>,
    },
    /// At least one of the criteria holds (built by
    /// [`SearchQuery::restrict_to_patient_compartment`]).
    AnyOf(Vec<Criterion>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChainTarget {
    pub resource_type: ResourceType,
    pub criterion: Criterion,
}

/// One value of a criterion, typed by the parameter's type and modifier.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchValue {
    /// `value` is unescaped as typed; `normalized` is what `StartsWith`/`Contains`
    /// compare with the index's normalized column, `Exact` compares `value`.
    String {
        value: String,
        normalized: String,
        mode: StringMatch,
    },
    Token(TokenValue),
    /// `:text` on a token: prefix match on the normalized text of the coding.
    TokenText(String),
    Reference(ReferenceValue),
    /// `:identifier` on a reference: matches `Reference.identifier`.
    ReferenceIdentifier(TokenValue),
    Date(DateValue),
    Number(NumberValue),
    Quantity(QuantityValue),
    Uri {
        value: String,
        mode: UriMatch,
    },
    /// One value per component, in the definition's order.
    Composite(Vec<SearchValue>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StringMatch {
    /// The default: the normalized value starts with the normalized parameter.
    StartsWith,
    /// `:exact`: the whole value, case and accents included.
    Exact,
    /// `:contains`: the normalized value contains the normalized parameter.
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UriMatch {
    Exact,
    /// `:above`: the stored uri is a prefix of the parameter.
    Above,
    /// `:below`: the parameter is a prefix of the stored uri.
    Below,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenValue {
    pub system: TokenSystem,
    /// `None`: any code in the system (`system|`).
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenSystem {
    /// `code`: any system, or none.
    Any,
    /// `|code`: no system.
    None,
    /// `system|code` or `system|`.
    Is(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DateValue {
    pub prefix: Prefix,
    pub range: DateRange,
}

impl DateValue {
    /// The condition on a date index row's `low`/`high`. `ap` widens the range by a
    /// tenth of its width on each side, and by at least a day.
    pub fn predicate(&self) -> RangePredicate<i64> {
        let DateRange { low, high } = self.range;
        let range = if self.prefix == Prefix::Ap {
            let widen = ((high - low) / 10).max(86_400_000);
            (low.saturating_sub(widen), high.saturating_add(widen))
        } else {
            (low, high)
        };
        self.prefix.range_predicate(range)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberValue {
    pub prefix: Prefix,
    pub number: Decimal,
}

impl NumberValue {
    /// The condition on a number index row (`low` and `high` both read its `value`).
    /// `eq`/`ne` use the implicit precision range (`100` matches 99.5 to 100.5), `ap`
    /// a tenth of the value either side, the ordering prefixes the value itself.
    pub fn predicate(&self) -> RangePredicate<f64> {
        decimal_predicate(self.prefix, self.number)
    }
}

fn decimal_predicate(prefix: Prefix, number: Decimal) -> RangePredicate<f64> {
    let range = match prefix {
        Prefix::Eq | Prefix::Ne => (number.low, number.high),
        Prefix::Ap => {
            let tenth = (number.value.abs() / 10.0).max(number.high - number.value);
            (number.value - tenth, number.value + tenth)
        }
        _ => (number.value, number.value),
    };
    prefix.range_predicate(range)
}

/// `[prefix]number|system|code`. With no system, `code` matches the index's code or
/// unit; with neither, any quantity with a matching value.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityValue {
    pub prefix: Prefix,
    pub number: Decimal,
    pub system: Option<String>,
    pub code: Option<String>,
}

impl QuantityValue {
    pub fn predicate(&self) -> RangePredicate<f64> {
        decimal_predicate(self.prefix, self.number)
    }
}

/// What to do with the results: includes, sorting, paging size and shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultParams {
    pub include: Vec<Include>,
    pub revinclude: Vec<Include>,
    pub sort: Vec<SortKey>,
    pub count: Option<u32>,
    pub summary: Option<Summary>,
    /// `_elements`: the element names to keep (plus the mandatory ones).
    pub elements: Vec<String>,
    pub total: Option<Total>,
    /// `_format` as given; the HTTP layer decides what it accepts.
    pub format: Option<String>,
    pub pretty: Option<bool>,
}

impl ResultParams {
    fn is_empty(&self) -> bool {
        *self == ResultParams::default()
    }
}

/// `_include=Source:param[:Target]` or `_revinclude=...`; `param` is `None` for `*`.
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    pub source_type: ResourceType,
    pub param: Option<&'static SearchParamDef>,
    pub target_type: Option<ResourceType>,
    pub iterate: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub param: &'static SearchParamDef,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Summary {
    True,
    Count,
    Data,
    Text,
    False,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

/// Bounds on what one search may ask, checked while its parameters are parsed, before
/// anything is expanded or recursed into. A search beyond one is refused whole (also
/// under `Prefer: handling=lenient`), naming the bound and its `hestia.toml` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchLimits {
    /// References one parameter follows: each `.` of a chain and each `_has:`
    /// (`fhir.max_chain_depth`).
    pub max_chain_depth: usize,
    /// (type, parameter) paths the chains and `_has` of one search expand into: a chain
    /// without a type modifier follows every target type that has the next parameter
    /// (`fhir.max_chain_paths`).
    pub max_chain_paths: usize,
    /// Parameters of one search (`fhir.max_search_params`).
    pub max_params: usize,
    /// Comma-separated values of one parameter (`fhir.max_search_values`).
    pub max_values: usize,
    /// Resources `_include` and `_revinclude` add to one page (`fhir.max_included`).
    pub max_included: usize,
}

impl SearchLimits {
    /// The largest `max_chain_depth` a configuration may set: the SQL of a chain nests
    /// one subquery per link.
    pub const CHAIN_DEPTH_CEILING: usize = 16;
}

impl Default for SearchLimits {
    fn default() -> Self {
        SearchLimits {
            max_chain_depth: 4,
            max_chain_paths: 64,
            max_params: 50,
            max_values: 200,
            max_included: 1000,
        }
    }
}

/// The (type, parameter) paths a search's chains and `_has` may still expand into.
struct PathBudget {
    left: usize,
    max: usize,
}

impl PathBudget {
    fn new(limits: &SearchLimits) -> Self {
        PathBudget {
            left: limits.max_chain_paths,
            max: limits.max_chain_paths,
        }
    }

    /// Takes one path, before it is parsed: expansion stops at the first one too many.
    fn take(&mut self) -> Result<(), Problem> {
        self.left = self.left.checked_sub(1).ok_or_else(|| {
            Problem::TooCostly(format!(
                "the chains and _has of this search expand into more than {} (type, parameter) paths (fhir.max_chain_paths)",
                self.max
            ))
        })?;
        Ok(())
    }
}

/// The references a parameter name follows: each `.` of a chain and each `_has:`
/// (parameter codes and modifiers have neither). Counted on the text, so that no name
/// is recursed into deeper than the limit.
fn chain_links(name: &str) -> usize {
    name.matches('.').count() + name.matches("_has:").count()
}

/// A parameter that cannot be used, with the reason. The HTTP layer turns it into a
/// 400 `OperationOutcome` (or, with `Prefer: handling=lenient`, a warning).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("search parameter '{param}': {problem}")]
pub struct SearchError {
    /// The parameter name as it was given, modifiers and chain included.
    pub param: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("{0} has no such search parameter")]
    Unknown(ResourceType),
    #[error("unknown modifier ':{0}'")]
    UnknownModifier(String),
    #[error("modifier ':{modifier}' cannot be used on a {kind} parameter")]
    ModifierNotAllowed {
        modifier: String,
        kind: SearchParamType,
    },
    #[error("invalid value '{value}': {reason}")]
    InvalidValue { value: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A [`SearchLimits`] bound: the message names it and its key.
    #[error("{0}")]
    TooCostly(String),
}

/// Why a query cannot be combined with an authorization constraint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConstraintError {
    #[error("{0} resources are not in the Patient compartment")]
    NotInPatientCompartment(ResourceType),
    #[error("'{0}' is not a valid patient id")]
    InvalidPatientId(String),
    #[error("a {other} query cannot constrain a {this} query")]
    TypeMismatch {
        this: ResourceType,
        other: ResourceType,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Modifier {
    Exact,
    Contains,
    Missing,
    Not,
    Text,
    Identifier,
    Above,
    Below,
    Type(ResourceType),
    /// Modifiers of R4 that Hestia does not implement (`in`, `not-in`, `of-type`).
    Unimplemented(&'static str),
}

impl Modifier {
    fn parse(text: &str) -> Option<Modifier> {
        Some(match text {
            "exact" => Modifier::Exact,
            "contains" => Modifier::Contains,
            "missing" => Modifier::Missing,
            "not" => Modifier::Not,
            "text" => Modifier::Text,
            "identifier" => Modifier::Identifier,
            "above" => Modifier::Above,
            "below" => Modifier::Below,
            "in" => Modifier::Unimplemented("in"),
            "not-in" => Modifier::Unimplemented("not-in"),
            "of-type" => Modifier::Unimplemented("of-type"),
            other => Modifier::Type(ResourceType::parse(other)?),
        })
    }

    fn allowed_on(&self, kind: SearchParamType) -> bool {
        use SearchParamType as K;
        match self {
            Modifier::Missing => true,
            Modifier::Exact | Modifier::Contains => kind == K::String,
            Modifier::Not | Modifier::Text | Modifier::Unimplemented(_) => kind == K::Token,
            Modifier::Identifier | Modifier::Type(_) => kind == K::Reference,
            Modifier::Above | Modifier::Below => kind == K::Uri,
        }
    }
}

impl SearchQuery {
    /// A query with no criteria: every resource of the type.
    pub fn all(resource_type: ResourceType) -> SearchQuery {
        SearchQuery {
            resource_type,
            criteria: Vec::new(),
            result: ResultParams::default(),
        }
    }

    /// Parses query-string pairs (already percent-decoded, in order) strictly: the
    /// first unknown or malformed parameter is the error.
    pub fn parse<I, K, V>(resource_type: ResourceType, pairs: I) -> Result<SearchQuery, SearchError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (query, mut errors) =
            Self::parse_lenient_within(resource_type, pairs, &SearchLimits::default());
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// Parses leniently (`Prefer: handling=lenient`): bad parameters are left out and
    /// returned, in order, for the warnings of the result Bundle.
    pub fn parse_lenient<I, K, V>(
        resource_type: ResourceType,
        pairs: I,
    ) -> (SearchQuery, Vec<SearchError>)
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self::parse_lenient_within(resource_type, pairs, &SearchLimits::default())
    }

    /// [`Self::parse_lenient`] within `limits`. A parameter beyond a limit is an error
    /// whose problem is [`Problem::TooCostly`]; after too many parameters the rest are
    /// not read.
    pub fn parse_lenient_within<I, K, V>(
        resource_type: ResourceType,
        pairs: I,
        limits: &SearchLimits,
    ) -> (SearchQuery, Vec<SearchError>)
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut query = SearchQuery::all(resource_type);
        let mut errors = Vec::new();
        let mut budget = PathBudget::new(limits);
        for (n, (name, value)) in pairs.into_iter().enumerate() {
            let (name, value) = (name.as_ref(), value.as_ref());
            if let Err(problem) = within_limits(limits, n, name, value) {
                let stop = n >= limits.max_params;
                errors.push(SearchError {
                    param: shortened(name),
                    problem,
                });
                if stop {
                    break;
                }
                continue;
            }
            let outcome = if name.starts_with('_')
                && RESULT_PARAMS
                    .iter()
                    .any(|r| name.split(':').next() == Some(r))
            {
                parse_result_param(resource_type, &mut query.result, name, value)
            } else {
                parse_criterion(resource_type, name, value, &mut budget)
                    .map(|c| query.criteria.extend(c))
            };
            if let Err(problem) = outcome {
                errors.push(SearchError {
                    param: name.to_owned(),
                    problem,
                });
            }
        }
        (query, errors)
    }

    /// Adds the conditions of `other` (for example a scope's `?category=laboratory`)
    /// to this query. `other`'s result parameters are not used: they cannot narrow
    /// what is returned.
    pub fn and(mut self, other: SearchQuery) -> Result<SearchQuery, ConstraintError> {
        if other.resource_type != self.resource_type {
            return Err(ConstraintError::TypeMismatch {
                this: self.resource_type,
                other: other.resource_type,
            });
        }
        self.criteria.extend(other.criteria);
        Ok(self)
    }

    /// Keeps only resources in the compartment of `Patient/patient_id`: one of the
    /// type's compartment parameters refers to that patient (for `Patient`: the
    /// patient itself or one that links to it).
    ///
    /// Included resources (`_include`, `_revinclude`) and chained or `_has` targets
    /// are not restricted by this; the store applies the decision to them too.
    pub fn restrict_to_patient_compartment(
        &mut self,
        patient_id: &str,
    ) -> Result<(), ConstraintError> {
        if !is_valid_id(patient_id) {
            return Err(ConstraintError::InvalidPatientId(patient_id.to_owned()));
        }
        let patient = ResourceType::parse("Patient").expect("Patient exists");
        let reference = SearchValue::Reference(ReferenceValue {
            target_type: Some(patient),
            id: Some(patient_id.to_owned()),
            ..ReferenceValue::default()
        });
        let mut alternatives: Vec<Criterion> = self
            .resource_type
            .patient_compartment_params()
            .map(|param| Criterion::Match {
                param,
                values: vec![reference.clone()],
                negated: false,
            })
            .collect();
        if self.resource_type == patient {
            let id = patient.search_param("_id").expect("_id exists");
            let value = SearchValue::Token(TokenValue {
                system: TokenSystem::Any,
                code: Some(patient_id.to_owned()),
            });
            alternatives.insert(
                0,
                Criterion::Match {
                    param: id,
                    values: vec![value],
                    negated: false,
                },
            );
        }
        match alternatives.len() {
            0 => Err(ConstraintError::NotInPatientCompartment(self.resource_type)),
            1 => {
                self.criteria.extend(alternatives);
                Ok(())
            }
            _ => {
                self.criteria.push(Criterion::AnyOf(alternatives));
                Ok(())
            }
        }
    }
}

const RESULT_PARAMS: &[&str] = &[
    "_include",
    "_revinclude",
    "_sort",
    "_count",
    "_summary",
    "_elements",
    "_total",
    "_format",
    "_pretty",
];

/// Search-control parameters of R4 that Hestia does not implement; named so that the
/// error says "not supported" rather than "unknown".
const UNSUPPORTED_PARAMS: &[&str] = &[
    "_contained",
    "_containedType",
    "_filter",
    "_list",
    "_query",
    "_type",
    "_score",
];

/// The limits one parameter (the `n`th, from 0) can be checked against on its text
/// alone: the number of parameters, of its values, and of its chain's links.
fn within_limits(limits: &SearchLimits, n: usize, name: &str, value: &str) -> Result<(), Problem> {
    if n >= limits.max_params {
        return Err(Problem::TooCostly(format!(
            "the search has more than {} parameters (fhir.max_search_params)",
            limits.max_params
        )));
    }
    let values = split_escaped(value, ',').len();
    if values > limits.max_values {
        return Err(Problem::TooCostly(format!(
            "the parameter has {values} values; at most {} are allowed (fhir.max_search_values)",
            limits.max_values
        )));
    }
    let links = chain_links(name);
    if links > limits.max_chain_depth {
        return Err(Problem::TooCostly(format!(
            "the chain has {links} links; at most {} are allowed (fhir.max_chain_depth)",
            limits.max_chain_depth
        )));
    }
    Ok(())
}

/// A parameter name as an error repeats it: a name thousands of links long is cut.
fn shortened(name: &str) -> String {
    const KEEP: usize = 100;
    if name.len() <= KEEP {
        return name.to_owned();
    }
    let mut end = KEEP;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &name[..end])
}

fn invalid(value: &str, reason: impl Into<String>) -> Problem {
    Problem::InvalidValue {
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), Problem> {
    if slot.is_some() {
        return Err(Problem::Invalid("may be given only once".into()));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_result_param(
    resource_type: ResourceType,
    result: &mut ResultParams,
    name: &str,
    value: &str,
) -> Result<(), Problem> {
    let (base, modifier) = match name.split_once(':') {
        Some((b, m)) => (b, Some(m)),
        None => (name, None),
    };
    let iterate = match (base, modifier) {
        ("_include" | "_revinclude", Some("iterate" | "recurse")) => true,
        (_, Some(m)) => return Err(Problem::UnknownModifier(m.to_owned())),
        (_, None) => false,
    };
    match base {
        "_include" | "_revinclude" => {
            let include = parse_include(value, iterate)?;
            if base == "_include" {
                result.include.push(include)
            } else {
                result.revinclude.push(include)
            }
            Ok(())
        }
        "_sort" => {
            if !result.sort.is_empty() {
                return Err(Problem::Invalid("may be given only once".into()));
            }
            sort_keys(resource_type, value, &mut result.sort)
        }
        "_count" => {
            let count = value
                .parse::<u32>()
                .map_err(|_| invalid(value, "must be a non-negative integer"))?;
            once(&mut result.count, count)
        }
        "_summary" => {
            let summary = match value {
                "true" => Summary::True,
                "count" => Summary::Count,
                "data" => Summary::Data,
                "text" => Summary::Text,
                "false" => Summary::False,
                _ => return Err(invalid(value, "must be true, count, data, text or false")),
            };
            once(&mut result.summary, summary)
        }
        "_elements" => element_names(value, &mut result.elements),
        "_total" => {
            let total = match value {
                "none" => Total::None,
                "estimate" => Total::Estimate,
                "accurate" => Total::Accurate,
                _ => return Err(invalid(value, "must be none, estimate or accurate")),
            };
            once(&mut result.total, total)
        }
        "_format" => once(&mut result.format, value.to_owned()),
        "_pretty" => {
            let pretty = match value {
                "true" => true,
                "false" => false,
                _ => return Err(invalid(value, "must be true or false")),
            };
            once(&mut result.pretty, pretty)
        }
        _ => unreachable!("only called for the names in RESULT_PARAMS"),
    }
}

/// `_sort`: comma-separated codes, `-` before one for descending order, added to `keys`
/// up to the first bad one.
fn sort_keys(
    resource_type: ResourceType,
    value: &str,
    keys: &mut Vec<SortKey>,
) -> Result<(), Problem> {
    for key in value.split(',') {
        let (code, descending) = match key.strip_prefix('-') {
            Some(code) => (code, true),
            None => (key, false),
        };
        let param = resource_type
            .search_param(code)
            .ok_or_else(|| invalid(key, "not a search parameter"))?;
        if matches!(
            param.kind,
            SearchParamType::Composite | SearchParamType::Special
        ) {
            return Err(invalid(
                key,
                format!("cannot sort by a {} parameter", param.kind),
            ));
        }
        keys.push(SortKey { param, descending });
    }
    Ok(())
}

/// `_elements`: comma-separated element names, added to `names` up to the first bad one.
fn element_names(value: &str, names: &mut Vec<String>) -> Result<(), Problem> {
    for element in value.split(',') {
        let element = element.trim();
        let valid = !element.is_empty()
            && element.starts_with(|c: char| c.is_ascii_alphabetic())
            && element
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        if !valid {
            return Err(invalid(element, "not an element name"));
        }
        names.push(element.to_owned());
    }
    Ok(())
}

fn parse_include(value: &str, iterate: bool) -> Result<Include, Problem> {
    let parts: Vec<&str> = value.split(':').collect();
    let source = |t: &str| {
        ResourceType::parse(t)
            .ok_or_else(|| invalid(value, format!("'{t}' is not a resource type")))
    };
    let (source_type, param, target) = match parts.as_slice() {
        ["*"] => {
            return Err(Problem::Unsupported(
                "_include=* without a source type".into(),
            ));
        }
        [t, "*"] => (source(t)?, None, None),
        [t, p] => (source(t)?, Some(*p), None),
        [t, p, target] => (source(t)?, Some(*p), Some(*target)),
        _ => return Err(invalid(value, "must be Type:parameter[:TargetType]")),
    };
    let param = match param {
        None => None,
        Some(code) => {
            let def = source_type.search_param(code).ok_or_else(|| {
                invalid(
                    value,
                    format!("{source_type} has no search parameter '{code}'"),
                )
            })?;
            if def.kind != SearchParamType::Reference {
                return Err(invalid(
                    value,
                    format!("'{code}' is not a reference parameter"),
                ));
            }
            Some(def)
        }
    };
    let target_type = match target {
        None => None,
        Some(t) => {
            let t = ResourceType::parse(t)
                .ok_or_else(|| invalid(value, format!("'{t}' is not a resource type")))?;
            if let Some(def) = param
                && !def.targets.contains(&t)
            {
                return Err(invalid(
                    value,
                    format!("'{}' cannot refer to {t}", def.code),
                ));
            }
            Some(t)
        }
    };
    Ok(Include {
        source_type,
        param,
        target_type,
        iterate,
    })
}

/// One query parameter; `None` when every value is empty (empty parameters are
/// ignored, as R4 asks).
///
/// Recurses once per chain link and `_has:` of `name`, which the caller has bounded
/// ([`within_limits`]); each (type, parameter) path it expands into takes from `budget`.
fn parse_criterion(
    resource_type: ResourceType,
    name: &str,
    value: &str,
    budget: &mut PathBudget,
) -> Result<Option<Criterion>, Problem> {
    if let Some(rest) = name.strip_prefix("_has:") {
        return parse_has(resource_type, rest, value, budget);
    }
    if name == "_has" {
        return Err(Problem::Invalid(
            "must be _has:Type:reference:parameter".into(),
        ));
    }
    let (head, chain) = match name.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (name, None),
    };
    let (code, modifier) = match head.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (head, None),
    };
    if UNSUPPORTED_PARAMS.contains(&code) {
        return Err(Problem::Unsupported(format!("{code} is not implemented")));
    }
    let param = resource_type
        .search_param(code)
        .ok_or(Problem::Unknown(resource_type))?;
    let modifier = match modifier {
        None => None,
        Some(m) => {
            let parsed =
                Modifier::parse(m).ok_or_else(|| Problem::UnknownModifier(m.to_owned()))?;
            if !parsed.allowed_on(param.kind) {
                return Err(Problem::ModifierNotAllowed {
                    modifier: m.to_owned(),
                    kind: param.kind,
                });
            }
            Some(parsed)
        }
    };
    if let Some(chained) = chain {
        return parse_chain(param, modifier, chained, value, budget);
    }
    if let Err(reason) = param.searchable() {
        return Err(Problem::Unsupported(reason.to_owned()));
    }
    match modifier {
        Some(Modifier::Missing) => {
            let missing = match value {
                "true" => true,
                "false" => false,
                _ => return Err(invalid(value, ":missing takes true or false")),
            };
            return Ok(Some(Criterion::Missing { param, missing }));
        }
        Some(Modifier::Unimplemented(m)) => {
            return Err(Problem::Unsupported(format!("modifier :{m}")));
        }
        _ => {}
    }
    let mut values = Vec::new();
    for piece in split_escaped(value, ',') {
        if piece.is_empty() {
            continue;
        }
        values.push(parse_value(param, modifier.as_ref(), piece)?);
    }
    if values.is_empty() {
        return Ok(None);
    }
    Ok(Some(Criterion::Match {
        param,
        values,
        negated: modifier == Some(Modifier::Not),
    }))
}

fn parse_chain(
    param: &'static SearchParamDef,
    modifier: Option<Modifier>,
    chained: &str,
    value: &str,
    budget: &mut PathBudget,
) -> Result<Option<Criterion>, Problem> {
    if param.kind != SearchParamType::Reference {
        return Err(Problem::Invalid(format!(
            "'{}' is a {} parameter and cannot be chained",
            param.code, param.kind
        )));
    }
    let candidates: Vec<ResourceType> = match modifier {
        None => param.targets.clone(),
        Some(Modifier::Type(t)) if param.targets.contains(&t) => vec![t],
        Some(Modifier::Type(t)) => {
            return Err(Problem::Invalid(format!(
                "'{}' cannot refer to {t}",
                param.code
            )));
        }
        Some(_) => {
            return Err(Problem::Invalid(
                "only a type modifier can precede a chain".into(),
            ));
        }
    };
    let chained_code = chained.split(['.', ':']).next().unwrap_or(chained);
    let mut targets = Vec::new();
    let mut first_error = None;
    for resource_type in candidates {
        if resource_type.search_param(chained_code).is_none() {
            continue;
        }
        budget.take()?;
        match parse_criterion(resource_type, chained, value, budget) {
            Ok(Some(criterion)) => targets.push(ChainTarget {
                resource_type,
                criterion,
            }),
            Ok(None) => return Ok(None),
            Err(e @ Problem::TooCostly(_)) => return Err(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (targets.is_empty(), first_error) {
        (_, Some(e)) => Err(e),
        (true, None) => Err(Problem::Invalid(format!(
            "no type that '{}' refers to has a search parameter '{chained_code}'",
            param.code
        ))),
        (false, None) => Ok(Some(Criterion::Chain { param, targets })),
    }
}

fn parse_has(
    resource_type: ResourceType,
    rest: &str,
    value: &str,
    budget: &mut PathBudget,
) -> Result<Option<Criterion>, Problem> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(reference), Some(inner)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Problem::Invalid(
            "must be _has:Type:reference:parameter".into(),
        ));
    };
    let source_type = ResourceType::parse(source)
        .ok_or_else(|| Problem::Invalid(format!("'{source}' is not a resource type")))?;
    let reference_param = source_type.search_param(reference).ok_or_else(|| {
        Problem::Invalid(format!(
            "{source_type} has no search parameter '{reference}'"
        ))
    })?;
    if reference_param.kind != SearchParamType::Reference
        || !reference_param.targets.contains(&resource_type)
    {
        return Err(Problem::Invalid(format!(
            "{source_type}.{reference} does not refer to {resource_type}"
        )));
    }
    budget.take()?;
    Ok(
        parse_criterion(source_type, inner, value, budget)?.map(|criterion| Criterion::Has {
            source_type,
            reference: reference_param,
            criterion: Box::new(criterion),
        }),
    )
}

fn parse_value(
    param: &'static SearchParamDef,
    modifier: Option<&Modifier>,
    raw: &str,
) -> Result<SearchValue, Problem> {
    if param.kind == SearchParamType::Composite {
        let pieces = split_escaped(raw, '$');
        if pieces.len() != param.components.len() {
            return Err(invalid(
                raw,
                format!("needs {} values separated by '$'", param.components.len()),
            ));
        }
        let values = pieces
            .iter()
            .zip(&param.components)
            .map(|(piece, component)| scalar_value(component.kind, None, &[], piece))
            .collect::<Result<_, _>>()?;
        return Ok(SearchValue::Composite(values));
    }
    scalar_value(param.kind, modifier, &param.targets, raw)
}

fn scalar_value(
    kind: SearchParamType,
    modifier: Option<&Modifier>,
    targets: &[ResourceType],
    raw: &str,
) -> Result<SearchValue, Problem> {
    use SearchParamType as K;
    match kind {
        K::String => {
            let value = unescape(raw);
            let mode = match modifier {
                Some(Modifier::Exact) => StringMatch::Exact,
                Some(Modifier::Contains) => StringMatch::Contains,
                _ => StringMatch::StartsWith,
            };
            Ok(SearchValue::String {
                normalized: normalize_string(&value),
                value,
                mode,
            })
        }
        K::Token if modifier == Some(&Modifier::Text) => {
            Ok(SearchValue::TokenText(normalize_string(&unescape(raw))))
        }
        K::Token => Ok(SearchValue::Token(token_value(raw)?)),
        K::Reference if modifier == Some(&Modifier::Identifier) => {
            Ok(SearchValue::ReferenceIdentifier(token_value(raw)?))
        }
        K::Reference => reference_value(modifier, targets, raw).map(SearchValue::Reference),
        K::Date => {
            let (prefix, rest) = Prefix::split(raw);
            let range = parse_date(rest).map_err(|reason| invalid(raw, reason))?;
            Ok(SearchValue::Date(DateValue { prefix, range }))
        }
        K::Number => {
            let (prefix, rest) = Prefix::split(raw);
            let number = parse_decimal(rest).map_err(|reason| invalid(raw, reason))?;
            Ok(SearchValue::Number(NumberValue { prefix, number }))
        }
        K::Quantity => quantity_value(raw).map(SearchValue::Quantity),
        K::Uri => {
            let mode = match modifier {
                Some(Modifier::Above) => UriMatch::Above,
                Some(Modifier::Below) => UriMatch::Below,
                _ => UriMatch::Exact,
            };
            Ok(SearchValue::Uri {
                value: unescape(raw),
                mode,
            })
        }
        K::Composite | K::Special => Err(Problem::Unsupported(format!("{kind} values here"))),
    }
}

/// A reference value: its type from a `:Type` modifier or the parameter's only target,
/// and a type the parameter cannot refer to refused.
fn reference_value(
    modifier: Option<&Modifier>,
    targets: &[ResourceType],
    raw: &str,
) -> Result<ReferenceValue, Problem> {
    let text = unescape(raw);
    let mut reference =
        ReferenceValue::parse_literal(&text).map_err(|reason| invalid(raw, reason))?;
    if let Some(Modifier::Type(t)) = modifier {
        match reference.target_type {
            Some(given) if given != *t => {
                return Err(invalid(
                    raw,
                    format!("names {given}, but the modifier says {t}"),
                ));
            }
            _ => reference.target_type = Some(*t),
        }
    }
    if reference.url.is_none() {
        if let [only] = targets {
            reference.target_type.get_or_insert(*only);
        }
        if let Some(t) = reference.target_type
            && !targets.is_empty()
            && !targets.contains(&t)
        {
            return Err(invalid(raw, format!("this parameter cannot refer to {t}")));
        }
    }
    Ok(reference)
}

/// `[prefix]number` or `[prefix]number|system|code`.
fn quantity_value(raw: &str) -> Result<QuantityValue, Problem> {
    let pieces = split_escaped(raw, '|');
    let (number, system, code) = match pieces.as_slice() {
        [n] => (*n, None, None),
        [n, s, c] => (*n, Some(*s), Some(*c)),
        _ => {
            return Err(invalid(
                raw,
                "must be [prefix]number or [prefix]number|system|code",
            ));
        }
    };
    let (prefix, number) = Prefix::split(number);
    let number = parse_decimal(number).map_err(|reason| invalid(raw, reason))?;
    let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(unescape);
    Ok(QuantityValue {
        prefix,
        number,
        system: non_empty(system),
        code: non_empty(code),
    })
}

fn token_value(raw: &str) -> Result<TokenValue, Problem> {
    let pieces = split_escaped(raw, '|');
    match pieces.as_slice() {
        [code] => Ok(TokenValue {
            system: TokenSystem::Any,
            code: Some(unescape(code)),
        }),
        ["", ""] => Err(invalid(raw, "neither a system nor a code")),
        [system, code] => Ok(TokenValue {
            system: if system.is_empty() {
                TokenSystem::None
            } else {
                TokenSystem::Is(unescape(system))
            },
            code: if code.is_empty() {
                None
            } else {
                Some(unescape(code))
            },
        }),
        _ => Err(invalid(
            raw,
            "a token is [system|]code; escape a literal '|' as '\\|'",
        )),
    }
}

// A compact, stable rendering of a query, for logs and for the tests below.

impl fmt::Display for SearchQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}?", self.resource_type)?;
        for (i, c) in self.criteria.iter().enumerate() {
            if i > 0 {
                write!(f, " AND ")?;
            }
            write!(f, "{c}")?;
        }
        if !self.result.is_empty() {
            write!(f, " {{{}}}", self.result)?;
        }
        Ok(())
    }
}

impl fmt::Display for ResultParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let include = |i: &Include| {
            format!(
                "{}:{}{}{}",
                i.source_type,
                i.param.map_or("*", |p| p.code.as_str()),
                i.target_type.map(|t| format!(":{t}")).unwrap_or_default(),
                if i.iterate { " iterate" } else { "" }
            )
        };
        for i in &self.include {
            parts.push(format!("include {}", include(i)));
        }
        for i in &self.revinclude {
            parts.push(format!("revinclude {}", include(i)));
        }
        if !self.sort.is_empty() {
            let keys: Vec<String> = self
                .sort
                .iter()
                .map(|k| format!("{}{}", if k.descending { "-" } else { "" }, k.param.code))
                .collect();
            parts.push(format!("sort {}", keys.join(",")));
        }
        if let Some(c) = self.count {
            parts.push(format!("count {c}"));
        }
        if let Some(s) = self.summary {
            parts.push(format!("summary {s:?}"));
        }
        if !self.elements.is_empty() {
            parts.push(format!("elements {}", self.elements.join(",")));
        }
        if let Some(t) = self.total {
            parts.push(format!("total {t:?}"));
        }
        if let Some(x) = &self.format {
            parts.push(format!("format {x}"));
        }
        if let Some(p) = self.pretty {
            parts.push(format!("pretty {p}"));
        }
        write!(f, "{}", parts.join("; "))
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Criterion::Match {
                param,
                values,
                negated,
            } => {
                write!(f, "{}{}(", if *negated { "NOT " } else { "" }, param.code)?;
                for (i, v) in values.iter().enumerate() {
                    write!(f, "{}{v}", if i > 0 { " OR " } else { "" })?;
                }
                write!(f, ")")
            }
            Criterion::Missing { param, missing } => {
                write!(
                    f,
                    "{}({})",
                    param.code,
                    if *missing { "missing" } else { "present" }
                )
            }
            Criterion::Chain { param, targets } => {
                write!(f, "{}->[", param.code)?;
                for (i, t) in targets.iter().enumerate() {
                    write!(
                        f,
                        "{}{}.{}",
                        if i > 0 { " | " } else { "" },
                        t.resource_type,
                        t.criterion
                    )?;
                }
                write!(f, "]")
            }
            Criterion::Has {
                source_type,
                reference,
                criterion,
            } => {
                write!(f, "has[{source_type}.{} {criterion}]", reference.code)
            }
            Criterion::AnyOf(criteria) => {
                write!(f, "any[")?;
                for (i, c) in criteria.iter().enumerate() {
                    write!(f, "{}{c}", if i > 0 { "; " } else { "" })?;
                }
                write!(f, "]")
            }
        }
    }
}

impl fmt::Display for TokenValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.system {
            TokenSystem::Any => write!(f, "*|")?,
            TokenSystem::None => write!(f, "|")?,
            TokenSystem::Is(s) => write!(f, "{s}|")?,
        }
        write!(f, "{}", self.code.as_deref().unwrap_or("*"))
    }
}

fn write_decimal(f: &mut fmt::Formatter<'_>, prefix: Prefix, d: &Decimal) -> fmt::Result {
    write!(f, "{prefix} {} [{}, {}]", d.value, d.low, d.high)
}

impl fmt::Display for SearchValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchValue::String {
                value,
                normalized,
                mode,
            } => match mode {
                StringMatch::StartsWith => write!(f, "starts {normalized:?}"),
                StringMatch::Exact => write!(f, "exact {value:?}"),
                StringMatch::Contains => write!(f, "contains {normalized:?}"),
            },
            SearchValue::Token(t) => write!(f, "token {t}"),
            SearchValue::TokenText(t) => write!(f, "text {t:?}"),
            SearchValue::Reference(r) => write!(f, "ref {r}"),
            SearchValue::ReferenceIdentifier(t) => write!(f, "identifier {t}"),
            SearchValue::Date(d) => write!(
                f,
                "{} {}..{}",
                d.prefix,
                format_instant(d.range.low),
                format_instant(d.range.high)
            ),
            SearchValue::Number(n) => write_decimal(f, n.prefix, &n.number),
            SearchValue::Quantity(q) => {
                write_decimal(f, q.prefix, &q.number)?;
                if q.system.is_some() || q.code.is_some() {
                    write!(
                        f,
                        " {}|{}",
                        q.system.as_deref().unwrap_or(""),
                        q.code.as_deref().unwrap_or("")
                    )?;
                }
                Ok(())
            }
            SearchValue::Uri { value, mode } => write!(f, "uri {mode:?} {value:?}"),
            SearchValue::Composite(values) => {
                write!(f, "(")?;
                for (i, v) in values.iter().enumerate() {
                    write!(f, "{}{v}", if i > 0 { " $ " } else { "" })?;
                }
                write!(f, ")")
            }
        }
    }
}

#[cfg(test)]
mod tests;
