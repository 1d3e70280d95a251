//! The FHIR R4 definitions Hestia needs at run time: resource types, the search
//! parameters of each type, and the Patient compartment.
//!
//! The data is `host/fhir-defs/r4-search.json`, generated from the HL7 package by
//! `tools/fhir-defs/generate.py` (see `host/fhir-defs/README.md`), compiled in with
//! `include_str!` and indexed once, on first use. Nothing here touches the network.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use serde::Deserialize;

use super::fhirpath::{self, Expr};
pub use super::types::ResourceType;
use super::types::TABLE;

/// The canonical URL prefix of the R4 SearchParameter resources.
pub const SEARCH_PARAMETER_URL: &str = "http://hl7.org/fhir/SearchParameter/";

impl ResourceType {
    /// The search parameters of this type, including the ones every resource has
    /// (`_id`, `_lastUpdated`, ...), sorted by code.
    pub fn search_params(self) -> impl Iterator<Item = &'static SearchParamDef> {
        DEFS.types[self.index()]
            .params
            .iter()
            .map(|&i| &DEFS.params[i])
    }

    pub fn search_param(self, code: &str) -> Option<&'static SearchParamDef> {
        let entry = &DEFS.types[self.index()];
        entry
            .params
            .binary_search_by(|&i| DEFS.params[i].code.as_str().cmp(code))
            .ok()
            .map(|pos| &DEFS.params[entry.params[pos]])
    }

    /// The parameters that put a resource of this type in a patient's compartment
    /// (CompartmentDefinition-patient). Empty: the type is not in that compartment.
    /// For `Patient` itself this is `link`; the patient is also in its own
    /// compartment by `_id`.
    pub fn patient_compartment_params(self) -> impl Iterator<Item = &'static SearchParamDef> {
        DEFS.types[self.index()]
            .compartment
            .iter()
            .map(|&i| &DEFS.params[i])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl SearchParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchParamType::Number => "number",
            SearchParamType::Date => "date",
            SearchParamType::String => "string",
            SearchParamType::Token => "token",
            SearchParamType::Reference => "reference",
            SearchParamType::Composite => "composite",
            SearchParamType::Quantity => "quantity",
            SearchParamType::Uri => "uri",
            SearchParamType::Special => "special",
        }
    }
}

impl fmt::Display for SearchParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One R4 search parameter as it applies to one resource type (or to every type, for
/// the `Resource`/`DomainResource` ones).
#[derive(Debug)]
pub struct SearchParamDef {
    /// The SearchParameter's id; its canonical URL is [`SearchParamDef::url`].
    pub id: String,
    /// The name used in a query (`name`, `_id`, `code-value-quantity`).
    pub code: String,
    pub kind: SearchParamType,
    /// `Patient`, or `Resource`/`DomainResource` for the common parameters.
    pub base: String,
    /// The FHIRPath expression, restricted to the branches that apply to `base`.
    pub expression: String,
    pub description: String,
    /// For references: the types it may point to.
    pub targets: Vec<ResourceType>,
    /// For composites: the component parameters, in order.
    pub components: Vec<ComponentDef>,
    /// The expression selects at most one element of a resource: a plain path of
    /// elements of cardinality 0..1 in the type's StructureDefinition
    /// (`Observation.effective`, `Patient.birthDate`). A date parameter then has at most
    /// one index row per resource.
    pub single: bool,
    compiled: Result<Expr, String>,
    rows: Rows,
    /// What [`SearchParamDef::searchable`] answers, worked out on its first call (each
    /// write's index extraction asks it of every composite of the type).
    searchable: std::sync::OnceLock<Result<(), String>>,
}

/// Where a search on a parameter finds the values it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rows {
    /// Index rows under its own code.
    Own,
    /// The index rows of another parameter of the same type with the same type,
    /// expression and targets (`Patient.phonetic` is `Patient.name`): the values are
    /// the same, so they are written once, under that parameter's code. With a
    /// [`Subset`], only those of its rows.
    Of { code: String, only: Option<Subset> },
    /// The resource's own columns (`_id`, `_lastUpdated`): no index rows at all.
    Columns,
}

#[derive(Debug)]
pub struct ComponentDef {
    pub code: String,
    pub kind: SearchParamType,
    /// Relative to the element the composite's expression selects.
    pub expression: String,
    compiled: Result<Expr, String>,
}

impl ComponentDef {
    pub fn compiled(&self) -> Result<&Expr, &str> {
        self.compiled.as_ref().map_err(String::as_str)
    }
}

/// The parts of a `HumanName` and an `Address` whose values a string parameter on such an
/// element matches, each recorded on its index row.
pub const STRING_PARTS: &[&str] = &[
    "text",
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
];

/// Which of another parameter's rows are a parameter's (see [`Rows::Of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subset {
    /// Token rows with this system: `Patient.phone` is
    /// `Patient.telecom.where(system='phone')`, and a `ContactPoint`'s system is its token
    /// row's system.
    System(String),
    /// String rows of this part of a `HumanName` or `Address`: `Patient.family` is
    /// `Patient.name.family`, and each of `name`'s rows records the part it came from.
    Part(String),
}

/// Definitions are singletons in a static table: identity is equality.
impl PartialEq for SearchParamDef {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for SearchParamDef {}

impl SearchParamDef {
    pub fn url(&self) -> String {
        format!("{SEARCH_PARAMETER_URL}{}", self.id)
    }

    /// The code under which this parameter's index rows are stored: its own, or that
    /// of the parameter of its type whose values are the same (see [`Rows::Of`]).
    pub fn rows_code(&self) -> &str {
        match &self.rows {
            Rows::Of { code, .. } => code,
            Rows::Own | Rows::Columns => &self.code,
        }
    }

    /// When this parameter shares only some of the rows of
    /// [`SearchParamDef::rows_code`]: the index table's column that tells them apart and
    /// its value (`("system", "phone")` for `Patient.phone`, `("part", "family")` for
    /// `Patient.family`; see [`Rows::Of`]).
    pub fn rows_subset(&self) -> Option<(&'static str, &str)> {
        match &self.rows {
            Rows::Of {
                only: Some(Subset::System(system)),
                ..
            } => Some(("system", system)),
            Rows::Of {
                only: Some(Subset::Part(part)),
                ..
            } => Some(("part", part)),
            Rows::Of { only: None, .. } | Rows::Own | Rows::Columns => None,
        }
    }

    /// Whether writes extract index rows for this parameter: not for `_id` and
    /// `_lastUpdated` (searched on the resource's columns) nor for a parameter that
    /// shares another's rows.
    pub fn writes_rows(&self) -> bool {
        self.rows == Rows::Own
    }

    /// The parsed expression, or why it cannot be evaluated.
    pub fn compiled(&self) -> Result<&Expr, &str> {
        self.compiled.as_ref().map_err(String::as_str)
    }

    /// `Ok` when writes fill index rows for this parameter, otherwise the reason it
    /// is not indexed (for the CapabilityStatement and for error messages).
    pub fn indexing(&self) -> Result<(), String> {
        match self.kind {
            SearchParamType::Special => return Err("special parameters are not implemented".into()),
            SearchParamType::Composite => {
                return Err(
                    "composite parameters are not indexed yet (their components are)".into(),
                );
            }
            _ => {}
        }
        if self.expression.is_empty() {
            return Err("the definition has no FHIRPath expression".into());
        }
        self.compiled()
            .map(|_| ())
            .map_err(|e| format!("expression not supported: {e}"))
    }

    /// `Ok` when a search on this parameter can be answered from index rows: it is
    /// indexed itself, or it is a composite whose components are indexed parameters
    /// of the same type (writes then add the components' rows per element the
    /// composite selects, and a search matches all components within one element).
    pub fn searchable(&'static self) -> Result<(), &'static str> {
        self.searchable
            .get_or_init(|| self.find_searchable())
            .as_ref()
            .map_err(String::as_str)
            .copied()
    }

    fn find_searchable(&'static self) -> Result<(), String> {
        if self.kind != SearchParamType::Composite {
            return self.indexing();
        }
        if let Err(e) = self.compiled() {
            return Err(format!("expression not supported: {e}"));
        }
        if let Some(c) = self.components.iter().find(|c| c.compiled().is_err()) {
            return Err(format!(
                "the expression of the component '{}' is not supported",
                c.code
            ));
        }
        match self.component_params() {
            Some(params) if params.iter().all(|p| p.indexing().is_ok()) => Ok(()),
            _ => Err("a component of this composite parameter is not indexed".into()),
        }
    }

    /// For a composite: the parameters of the same resource type that its components
    /// name, in order. `None` if one does not exist.
    pub fn component_params(&'static self) -> Option<Vec<&'static SearchParamDef>> {
        let resource_type = ResourceType::parse(&self.base)?;
        self.components
            .iter()
            .map(|c| resource_type.search_param(&c.code))
            .collect()
    }
}

/// How many of the R4 search parameters are indexed, and why the others are not.
#[derive(Debug)]
pub struct Coverage {
    /// Distinct SearchParameter resources (1,375 in R4).
    pub total: usize,
    /// Those indexed for every resource type they apply to.
    pub indexed: usize,
    /// Per distinct SearchParameter id that is not indexed: the reason.
    pub not_indexed: Vec<(&'static str, String)>,
}

/// Which of the R4 search parameters writes index, and why the rest do not.
pub fn coverage() -> Coverage {
    let mut reasons: HashMap<&'static str, Option<String>> = HashMap::new();
    for def in &DEFS.params {
        let entry = reasons.entry(def.id.as_str()).or_insert(None);
        if let Err(reason) = def.indexing() {
            entry.get_or_insert(reason);
        }
    }
    let mut not_indexed: Vec<(&'static str, String)> = reasons
        .iter()
        .filter_map(|(id, reason)| reason.clone().map(|r| (*id, r)))
        .collect();
    not_indexed.sort();
    Coverage {
        total: reasons.len(),
        indexed: reasons.len() - not_indexed.len(),
        not_indexed,
    }
}

struct TypeEntry {
    /// Indexes into `Definitions::params`, sorted by code.
    params: Vec<usize>,
    /// Indexes into `Definitions::params`, in CompartmentDefinition order.
    compartment: Vec<usize>,
}

struct Definitions {
    /// By [`ResourceType::index`].
    types: Vec<TypeEntry>,
    params: Vec<SearchParamDef>,
}

static DEFS: LazyLock<Definitions> = LazyLock::new(load);

/// The parts of the table that define parameters (the type names are read by
/// [`super::types`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTable {
    params: HashMap<String, Vec<RawParam>>,
    patient_compartment: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct RawParam {
    id: String,
    code: String,
    #[serde(rename = "type")]
    kind: SearchParamType,
    expr: String,
    desc: String,
    #[serde(default)]
    target: Vec<String>,
    #[serde(default)]
    comp: Vec<RawComponent>,
    #[serde(default)]
    one: bool,
}

#[derive(Deserialize)]
struct RawComponent {
    code: String,
    #[serde(rename = "type")]
    kind: SearchParamType,
    expr: String,
}

fn load() -> Definitions {
    let raw: RawTable = serde_json::from_str(TABLE).expect("embedded table parses");
    let mut params = Vec::new();
    let mut by_base: HashMap<&str, Vec<usize>> = HashMap::new();
    for (base, list) in &raw.params {
        let first = params.len();
        for p in list {
            by_base.entry(base.as_str()).or_default().push(params.len());
            params.push(param_def(base, p));
        }
        share_rows(&mut params[first..]);
    }
    let types = ResourceType::all()
        .map(|t| {
            let mut list: Vec<usize> = by_base.get(t.as_str()).cloned().unwrap_or_default();
            list.extend(by_base.get("Resource").cloned().unwrap_or_default());
            if t.is_domain_resource() {
                list.extend(by_base.get("DomainResource").cloned().unwrap_or_default());
            }
            list.sort_by(|&a, &b| params[a].code.cmp(&params[b].code));
            let compartment = raw
                .patient_compartment
                .get(t.as_str())
                .into_iter()
                .flatten()
                .map(|code| {
                    *list
                        .iter()
                        .find(|&&i| params[i].code == *code)
                        .expect("compartment parameters are defined")
                })
                .collect();
            TypeEntry {
                params: list,
                compartment,
            }
        })
        .collect();
    Definitions { types, params }
}

/// Marks which parameters of one base are searched on the resource's columns and which
/// share the index rows of another: of the parameters with the same type, expression and
/// targets, the first by code keeps the rows; a token parameter `E.where(system='S')`
/// takes the rows with system S of the token parameter `E`, and a string parameter
/// `E.family` (`E.city`, ...) the rows of part `family` of the string parameter `E`.
/// Composites keep their own (their rows are per element of their components).
fn share_rows(params: &mut [SearchParamDef]) {
    let mut order: Vec<usize> = (0..params.len()).collect();
    order.sort_by(|&a, &b| params[a].code.cmp(&params[b].code));
    for (n, &i) in order.iter().enumerate() {
        let p = &params[i];
        let rows = if matches!(p.code.as_str(), "_id" | "_lastUpdated") {
            Rows::Columns
        } else if matches!(
            p.kind,
            SearchParamType::Composite | SearchParamType::Special
        ) {
            Rows::Own
        } else {
            order[..n]
                .iter()
                .map(|&j| &params[j])
                .find(|q| {
                    q.rows == Rows::Own
                        && q.kind == p.kind
                        && q.expression == p.expression
                        && q.targets == p.targets
                })
                .map_or(Rows::Own, |q| Rows::Of {
                    code: q.code.clone(),
                    only: None,
                })
        };
        params[i].rows = rows;
    }
    for i in 0..params.len() {
        let p = &params[i];
        if p.rows != Rows::Own {
            continue;
        }
        let (whole, only) = match p.kind {
            SearchParamType::Token => match system_filter(&p.expression) {
                Some((whole, system)) => (whole, Subset::System(system.to_owned())),
                None => continue,
            },
            SearchParamType::String => match name_or_address_part(&p.expression) {
                Some((whole, part)) => (whole, Subset::Part(part.to_owned())),
                None => continue,
            },
            _ => continue,
        };
        let shared = params
            .iter()
            .find(|q| q.rows == Rows::Own && q.kind == p.kind && q.expression == whole);
        if let Some(q) = shared {
            params[i].rows = Rows::Of {
                code: q.code.clone(),
                only: Some(only),
            };
        }
    }
}

/// `E.k` as `(E, k)` when `k` is a part of a `HumanName` or an `Address` that the
/// string rows of such an element record (`Patient.name.family`, `Patient.address.city`).
fn name_or_address_part(expression: &str) -> Option<(&str, &str)> {
    let (whole, part) = expression.rsplit_once('.')?;
    STRING_PARTS.contains(&part).then_some((whole, part))
}

/// `E.where(system='S')` as `(E, S)`.
fn system_filter(expression: &str) -> Option<(&str, &str)> {
    let (whole, rest) = expression.split_once(".where(system='")?;
    let system = rest.strip_suffix("')")?;
    system
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
        .then_some((whole, system))
}

/// One parameter of the table, its expressions compiled.
fn param_def(base: &str, p: &RawParam) -> SearchParamDef {
    SearchParamDef {
        id: p.id.clone(),
        code: p.code.clone(),
        kind: p.kind,
        base: base.to_owned(),
        expression: p.expr.clone(),
        description: p.desc.clone(),
        targets: resolve_targets(&p.target),
        single: p.one,
        components: p
            .comp
            .iter()
            .map(|c| ComponentDef {
                code: c.code.clone(),
                kind: c.kind,
                expression: c.expr.clone(),
                compiled: fhirpath::parse(&c.expr),
            })
            .collect(),
        compiled: if p.expr.is_empty() {
            Err("no expression".into())
        } else {
            fhirpath::parse(&p.expr)
        },
        rows: Rows::Own,
        searchable: std::sync::OnceLock::new(),
    }
}

/// The target types a reference parameter names; `*` is every type but Parameters.
fn resolve_targets(targets: &[String]) -> Vec<ResourceType> {
    if targets.iter().any(|t| t == "*") {
        ResourceType::all()
            .filter(|t| t.as_str() != "Parameters")
            .collect()
    } else {
        targets
            .iter()
            .filter_map(|t| ResourceType::parse(t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_the_r4_shape() {
        assert_eq!(ResourceType::all().count(), 146);
        let patient = ResourceType::parse("Patient").unwrap();
        assert_eq!(patient.as_str(), "Patient");
        assert!(ResourceType::parse("patient").is_none());
        assert!(ResourceType::parse("DomainResource").is_none());
        assert!(!ResourceType::parse("Bundle").unwrap().is_domain_resource());

        let name = patient.search_param("name").unwrap();
        assert_eq!(
            (name.kind, name.id.as_str()),
            (SearchParamType::String, "Patient-name")
        );
        assert_eq!(name.expression, "Patient.name");
        assert_eq!(
            name.url(),
            "http://hl7.org/fhir/SearchParameter/Patient-name"
        );
        for common in [
            "_id",
            "_lastUpdated",
            "_profile",
            "_tag",
            "_security",
            "_source",
            "_text",
        ] {
            assert!(patient.search_param(common).is_some(), "{common}");
        }
        assert!(
            ResourceType::parse("Bundle")
                .unwrap()
                .search_param("_text")
                .is_none()
        );

        // A parameter shared by many types keeps only its own branch.
        let observation = ResourceType::parse("Observation").unwrap();
        let code = observation.search_param("code").unwrap();
        assert_eq!(
            (code.id.as_str(), code.expression.as_str()),
            ("clinical-code", "Observation.code")
        );
        let subject = observation.search_param("subject").unwrap();
        let targets: Vec<&str> = subject.targets.iter().map(|t| t.as_str()).collect();
        assert_eq!(targets, ["Device", "Group", "Location", "Patient"]);
        let cvq = observation.search_param("code-value-quantity").unwrap();
        let components: Vec<(&str, SearchParamType)> = cvq
            .components
            .iter()
            .map(|c| (c.code.as_str(), c.kind))
            .collect();
        assert_eq!(
            components,
            [
                ("code", SearchParamType::Token),
                ("value-quantity", SearchParamType::Quantity)
            ]
        );
        // "Any" reference targets expand to every type but Parameters.
        let focus = ResourceType::parse("Provenance")
            .unwrap()
            .search_param("entity")
            .unwrap();
        assert_eq!(focus.targets.len(), 145);

        let total: usize = ResourceType::all().map(|t| t.search_params().count()).sum();
        assert!(total > 1375 + 145 * 5, "{total}");
    }

    #[test]
    fn patient_compartment() {
        let codes = |t: &str| -> Vec<&str> {
            ResourceType::parse(t)
                .unwrap()
                .patient_compartment_params()
                .map(|p| p.code.as_str())
                .collect()
        };
        assert_eq!(codes("Observation"), ["subject", "performer"]);
        assert_eq!(codes("Patient"), ["link"]);
        assert_eq!(
            codes("AllergyIntolerance"),
            ["patient", "recorder", "asserter"]
        );
        assert!(codes("Organization").is_empty());
        let in_compartment = ResourceType::all()
            .filter(|t| t.patient_compartment_params().next().is_some())
            .count();
        assert_eq!(in_compartment, 66);
        for t in ResourceType::all() {
            for p in t.patient_compartment_params() {
                assert_eq!(p.kind, SearchParamType::Reference, "{t}.{}", p.code);
            }
        }
    }

    #[test]
    fn coverage_of_the_r4_parameters() {
        let coverage = coverage();
        assert_eq!(coverage.total, 1375);
        let reasons: Vec<&str> = coverage.not_indexed.iter().map(|(id, _)| *id).collect();
        // Composite (46), special (Location-near) and the three without an expression.
        assert_eq!(coverage.not_indexed.len(), 46 + 1 + 3, "{reasons:?}");
        assert_eq!(coverage.indexed, 1325);
        assert!(reasons.contains(&"Location-near"));
        assert!(reasons.contains(&"Resource-content"));
        // Every composite can still be searched through its components' rows.
        let searchable_composites = ResourceType::all()
            .flat_map(|t| t.search_params())
            .filter(|p| p.kind == SearchParamType::Composite && p.searchable().is_ok())
            .map(|p| p.id.as_str())
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(searchable_composites.len(), 46);
    }

    #[test]
    fn parameters_with_the_same_values_share_their_rows() {
        let rows_of = |t: &str, code: &str| {
            let p = ResourceType::parse(t).unwrap().search_param(code).unwrap();
            (p.rows_code().to_owned(), p.writes_rows())
        };
        assert_eq!(rows_of("Patient", "name"), ("name".into(), true));
        assert_eq!(rows_of("Patient", "phonetic"), ("name".into(), false));
        assert_eq!(rows_of("Practitioner", "phonetic"), ("name".into(), false));
        assert_eq!(
            rows_of("ResearchSubject", "patient"),
            ("individual".into(), false)
        );
        assert_eq!(rows_of("CodeSystem", "url"), ("system".into(), false));
        // Other expressions: rows of their own.
        assert_eq!(rows_of("Observation", "patient"), ("patient".into(), true));
        assert_eq!(rows_of("Observation", "subject"), ("subject".into(), true));
        // The resource's columns.
        assert_eq!(rows_of("Patient", "_id"), ("_id".into(), false));
        let single = |t: &str, code: &str| {
            ResourceType::parse(t)
                .unwrap()
                .search_param(code)
                .unwrap()
                .single
        };
        assert!(single("Patient", "birthdate") && single("Observation", "date"));
        // Many elements (name), a union of paths, a function.
        assert!(!single("Patient", "name") && !single("Patient", "address-city"));
        assert!(!single("Condition", "onset-date") && !single("Patient", "death-date"));
        assert_eq!(
            rows_of("Observation", "_lastUpdated"),
            ("_lastUpdated".into(), false)
        );
        // Composites keep their own, even with the expression of another.
        assert_eq!(
            rows_of("Observation", "code-value-string"),
            ("code-value-string".into(), true)
        );
        let shared: usize = ResourceType::all()
            .flat_map(|t| t.search_params())
            .filter(|p| p.rows_code() != p.code)
            .count();
        assert_eq!(
            shared,
            11 + 12 + 32,
            "phonetic ×4, seven others, phone and email ×6, address parts ×28, name parts ×4"
        );
        let phone = ResourceType::parse("Patient")
            .unwrap()
            .search_param("phone")
            .unwrap();
        assert_eq!(
            (phone.rows_code(), phone.rows_subset(), phone.writes_rows()),
            ("telecom", Some(("system", "phone")), false)
        );
        let part = |t: &str, code: &str| {
            let p = ResourceType::parse(t).unwrap().search_param(code).unwrap();
            (p.rows_code(), p.rows_subset(), p.writes_rows())
        };
        assert_eq!(
            part("Patient", "family"),
            ("name", Some(("part", "family")), false)
        );
        assert_eq!(
            part("Practitioner", "given"),
            ("name", Some(("part", "given")), false)
        );
        assert_eq!(
            part("InsurancePlan", "address-postalcode"),
            ("address", Some(("part", "postalCode")), false)
        );
        // `Patient.name` is not a part of anything, and `Patient.phonetic` shares all of it.
        assert_eq!(part("Patient", "name"), ("name", None, true));
        assert_eq!(part("Patient", "phonetic"), ("name", None, false));
    }
}
