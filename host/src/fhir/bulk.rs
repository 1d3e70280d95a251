//! Bulk Data export (FHIR Bulk Data Access IG 2.0.0, "Flat FHIR"), without HTTP: the
//! kick-off's parameters ([`ExportRequest`]), and what the export of each type is
//! ([`TypePlan`]): a search of that type under the caller's access to it, run page by
//! page at the export's snapshot by [`worker`](super::bulk_worker).
//!
//! A kick-off is authorized as a search of every type it exports: the scope policy
//! decides each type on its own ([`Caller::search_access`]). A type the caller may not
//! search is left out of an export that names no `_type`, and refused (403, naming it)
//! when `_type` or `_typeFilter` names it; `includeAssociatedData` needs a caller that may
//! search Provenance ([`AssociatedPlan`]). `_typeFilter` queries are parsed and run by the
//! search engine, their chains and `_has` reaching only into types the caller may search.

use serde_json::Value;

use super::access::{Access, Visible};
use super::definitions::ResourceType;
use super::error::FhirError;
use super::outcome::Issue;
use super::repository::Repository;
use super::search::value::parse_date;
use super::search::{
    Criterion, ReferenceValue, SearchLimits, SearchQuery, SearchValue, TokenSystem, TokenValue,
};
use super::searchset::{Via, decode_query, reach};
use crate::gate::Caller;
use crate::store::search::{Branch, Reach};

/// The output formats accepted in `_outputFormat`: all mean NDJSON.
const OUTPUT_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Patients per query of a Patient or Group export: their compartments are one criterion
/// with this many references at most.
pub const PATIENTS_PER_QUERY: usize = 500;

/// `includeAssociatedData`: the Provenance resources an export adds to what its types
/// hold (Bulk Data 2.0.0's two predefined values; custom `_` values are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Associated {
    /// `LatestProvenanceResources`: for each exported resource, the Provenance that
    /// targets it with the latest `recorded`.
    Latest,
    /// `RelevantProvenanceResources`: every Provenance that targets an exported resource
    /// (which includes the latest ones).
    Relevant,
}

impl Associated {
    fn parse(value: &str) -> Result<Associated, FhirError> {
        match value {
            "LatestProvenanceResources" => Ok(Associated::Latest),
            "RelevantProvenanceResources" => Ok(Associated::Relevant),
            other => Err(FhirError::BadRequest(vec![
                Issue::error(
                    "not-supported",
                    format!(
                        "includeAssociatedData {other:?} is not supported; use LatestProvenanceResources or RelevantProvenanceResources"
                    ),
                )
                .at("includeAssociatedData".to_owned()),
            ])),
        }
    }
}

/// Which kick-off: `[base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportKind {
    System,
    Patient,
    Group(String),
}

/// A kick-off's parameters, checked.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    /// `_type`, in the order given; `None`: every type the kind exports.
    pub types: Option<Vec<ResourceType>>,
    /// `_since`, as given (an instant).
    pub since: Option<String>,
    /// `_typeFilter`: per type, the queries whose results are ORed.
    pub type_filters: Vec<(ResourceType, Vec<(String, String)>)>,
    /// `_elements`: plain element names, or `Type.element` for one type.
    pub elements: Vec<String>,
    /// `patient` (POST only): the patients whose compartments a Patient or Group export
    /// keeps to.
    pub patients: Option<Vec<String>>,
    /// `includeAssociatedData`; `None`: no associated resources.
    pub associated: Option<Associated>,
}

fn invalid_param(param: &str, why: impl Into<String>) -> FhirError {
    FhirError::BadRequest(vec![
        Issue::error("invalid", why.into()).at(param.to_owned()),
    ])
}

impl ExportRequest {
    /// Checks the parameters of a kick-off (the query of a GET, or what
    /// [`parameters_body`] read from a POST). Unknown parameters are refused.
    pub fn parse(
        params: &[(String, String)],
        patients: Option<Vec<String>>,
    ) -> Result<ExportRequest, FhirError> {
        let mut request = ExportRequest {
            patients,
            ..ExportRequest::default()
        };
        for (k, v) in params {
            match k.as_str() {
                "_outputFormat" if OUTPUT_FORMATS.contains(&v.as_str()) => {}
                "_outputFormat" => {
                    return Err(invalid_param(
                        k,
                        format!(
                            "_outputFormat {v:?} is not supported; use one of {}",
                            OUTPUT_FORMATS.join(", ")
                        ),
                    ));
                }
                "_since" => {
                    parse_date(v).map_err(|e| invalid_param(k, format!("_since={v}: {e}")))?;
                    request.since = Some(v.clone());
                }
                "_type" => {
                    let list = request.types.get_or_insert_with(Vec::new);
                    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        let t = ResourceType::parse(name).ok_or_else(|| {
                            invalid_param(k, format!("_type: {name:?} is not a resource type"))
                        })?;
                        if !list.contains(&t) {
                            list.push(t);
                        }
                    }
                }
                "_typeFilter" => {
                    for query in v.split(',').filter(|q| !q.is_empty()) {
                        request.type_filters.push(type_filter(query)?);
                    }
                }
                "_elements" => request.elements.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(str::to_owned),
                ),
                "includeAssociatedData" => {
                    for value in v.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                        let which = Associated::parse(value)?;
                        if request.associated != Some(Associated::Relevant) {
                            request.associated = Some(which);
                        }
                    }
                }
                other => {
                    return Err(FhirError::BadRequest(vec![
                        Issue::error(
                            "not-supported",
                            format!(
                                "$export takes _outputFormat, _since, _type, _typeFilter, _elements, includeAssociatedData and (POST) patient here, not {other:?}"
                            ),
                        )
                        .at(other.to_owned()),
                    ]));
                }
            }
        }
        Ok(request)
    }

    /// The elements kept of a resource of `t` (`_elements`): plain names, and those
    /// prefixed with `t.`.
    fn elements_of(&self, t: ResourceType) -> Vec<String> {
        self.elements
            .iter()
            .filter_map(|e| match e.split_once('.') {
                Some((ty, name)) if ty == t.as_str() => Some(name.to_owned()),
                Some(_) => None,
                None => Some(e.clone()),
            })
            .collect()
    }
}

/// One `_typeFilter` query, `Type?param=value&...`.
fn type_filter(query: &str) -> Result<(ResourceType, Vec<(String, String)>), FhirError> {
    let (ty, rest) = query.split_once('?').ok_or_else(|| {
        invalid_param(
            "_typeFilter",
            format!("_typeFilter {query:?} is not of the form Type?param=value"),
        )
    })?;
    let t = ResourceType::parse(ty).ok_or_else(|| {
        invalid_param(
            "_typeFilter",
            format!("_typeFilter: {ty:?} is not a resource type"),
        )
    })?;
    Ok((t, decode_query(rest)))
}

/// A kick-off's parameters as query pairs, and the patients it names.
pub type KickoffParameters = (Vec<(String, String)>, Option<Vec<String>>);

/// The parameters of a POSTed `Parameters` resource as query pairs, and the `patient`
/// references (`Patient/[id]`) it names, if any.
pub fn parameters_body(body: &Value) -> Result<KickoffParameters, FhirError> {
    if body["resourceType"] != "Parameters" {
        return Err(FhirError::invalid(
            "a POSTed $export takes a Parameters resource as its body",
        ));
    }
    let mut pairs = Vec::new();
    let mut patients: Option<Vec<String>> = None;
    for p in body["parameter"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = p["name"].as_str().unwrap_or_default();
        if name == "patient" {
            let reference = p["valueReference"]["reference"]
                .as_str()
                .unwrap_or_default();
            let id = reference
                .strip_prefix("Patient/")
                .filter(|id| crate::fhir::search::value::is_valid_id(id))
                .ok_or_else(|| {
                    invalid_param(
                        "patient",
                        format!(
                            "patient must be a valueReference to Patient/[id], not {reference:?}"
                        ),
                    )
                })?;
            patients.get_or_insert_with(Vec::new).push(id.to_owned());
            continue;
        }
        let value = [
            "valueString",
            "valueInstant",
            "valueCode",
            "valueDateTime",
            "valueUri",
        ]
        .iter()
        .find_map(|field| p[*field].as_str())
        .ok_or_else(|| {
            invalid_param(name, format!("the parameter {name:?} has no string value"))
        })?;
        pairs.push((name.to_owned(), value.to_owned()));
    }
    Ok((pairs, patients))
}

/// The export of one type: the branches to run (ORed, one per `_typeFilter` query, each
/// with `_since` and the patients' compartments), under the caller's access to the type.
#[derive(Debug, Clone)]
pub struct TypePlan {
    pub resource_type: ResourceType,
    pub access: Access,
    pub reach: Reach,
    /// One query per group of at most [`PATIENTS_PER_QUERY`] patients (one without).
    pub queries: Vec<Vec<Branch>>,
    pub elements: Vec<String>,
}

/// Whether resources of `t` belong in a patient's compartment.
fn in_compartment(t: ResourceType) -> bool {
    t.as_str() == "Patient" || t.patient_compartment_params().next().is_some()
}

/// What an export is: its types, and the Provenance it adds (`includeAssociatedData`).
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub types: Vec<TypePlan>,
    pub associated: Option<AssociatedPlan>,
}

/// The associated Provenance of an export: searched page by page as the Provenance whose
/// `target` is one of the page's resources, at the export's snapshot, under what the
/// caller may search of Provenance.
#[derive(Debug, Clone)]
pub struct AssociatedPlan {
    pub which: Associated,
    pub access: Access,
    pub reach: Reach,
    pub elements: Vec<String>,
}

/// What an export is under what `caller` may search: see the module documentation.
/// `patients` are the compartments a Patient or Group export keeps to (`None`: every
/// patient's).
pub fn plan(
    caller: &Caller,
    kind: &ExportKind,
    request: &ExportRequest,
    patients: Option<&[String]>,
    limits: &SearchLimits,
) -> Result<ExportPlan, FhirError> {
    let types = type_plans(caller, kind, request, patients, limits)?;
    let associated = match request.associated {
        Some(which) => Some(associated_plan(caller, request, which)?),
        None => None,
    };
    Ok(ExportPlan { types, associated })
}

/// The associated Provenance: asked for by name, so a caller that may not search
/// Provenance is refused (403), not given an export without it.
fn associated_plan(
    caller: &Caller,
    request: &ExportRequest,
    which: Associated,
) -> Result<AssociatedPlan, FhirError> {
    let provenance = ResourceType::parse("Provenance").expect("Provenance exists");
    let refused = |why: String| {
        FhirError::Forbidden(format!("includeAssociatedData needs Provenance: {why}"))
    };
    let access = match caller.search_access(provenance) {
        Ok(access) => access,
        Err(FhirError::Forbidden(why)) => return Err(refused(why)),
        Err(other) => return Err(other),
    };
    match access.visible(provenance) {
        Ok(Visible::Nothing(why)) => return Err(refused(why.to_string())),
        Err(e) => return Err(refused(e.to_string())),
        Ok(_) => {}
    }
    Ok(AssociatedPlan {
        which,
        access,
        reach: Reach::new(),
        elements: request.elements_of(provenance),
    })
}

/// Each exported type's plan, under what `caller` may search.
fn type_plans(
    caller: &Caller,
    kind: &ExportKind,
    request: &ExportRequest,
    patients: Option<&[String]>,
    limits: &SearchLimits,
) -> Result<Vec<TypePlan>, FhirError> {
    let per_patient = *kind != ExportKind::System;
    let named = request.types.is_some();
    let candidates: Vec<ResourceType> = match &request.types {
        Some(list) => list.clone(),
        None => ResourceType::all()
            .filter(|t| !per_patient || in_compartment(*t))
            .collect(),
    };
    for (t, _) in &request.type_filters {
        if !candidates.contains(t) {
            return Err(invalid_param(
                "_typeFilter",
                format!("_typeFilter names {t}, which this export does not include"),
            ));
        }
    }
    let type_access = |t: ResourceType, via: Via| caller.type_access(t, via);
    let mut plans = Vec::new();
    for t in candidates {
        if per_patient && !in_compartment(t) {
            return Err(invalid_param(
                "_type",
                format!(
                    "{t} is not in the Patient compartment: a Patient or Group export does not include it"
                ),
            ));
        }
        let filtered = request.type_filters.iter().any(|(ft, _)| *ft == t);
        let access = match caller.search_access(t) {
            Ok(access) => access,
            Err(FhirError::Forbidden(why)) if !named && !filtered => {
                tracing::debug!(%t, %why, "left out of the export");
                continue;
            }
            Err(FhirError::Forbidden(why)) => {
                return Err(FhirError::Forbidden(format!("export of {t}: {why}")));
            }
            Err(other) => return Err(other),
        };
        match access.visible(t) {
            Ok(Visible::Nothing(_)) if !named && !filtered => continue,
            Ok(Visible::Nothing(why)) => {
                return Err(FhirError::Forbidden(format!("export of {t}: {why}")));
            }
            Err(e) => return Err(FhirError::Forbidden(e.to_string())),
            Ok(_) => {}
        }
        let filters = filter_criteria(t, request, limits)?;
        let queries = type_queries(t, &filters, patients);
        let all: Vec<Branch> = queries.iter().flatten().cloned().collect();
        let reach = reach(&all, &access, &type_access)?;
        plans.push(TypePlan {
            resource_type: t,
            access,
            reach,
            queries,
            elements: request.elements_of(t),
        });
    }
    Ok(plans)
}

/// The queries of `t`: per group of at most `PATIENTS_PER_QUERY` patients (one group
/// without `patients`), a branch per filter, confined to the group's compartments.
fn type_queries(
    t: ResourceType,
    filters: &[Vec<Criterion>],
    patients: Option<&[String]>,
) -> Vec<Vec<Branch>> {
    let groups: Vec<Option<&[String]>> = match patients {
        Some(list) => list.chunks(PATIENTS_PER_QUERY).map(Some).collect(),
        None => vec![None],
    };
    let mut queries = Vec::new();
    for group in groups {
        let compartment = group.and_then(|ids| compartment_criterion(t, ids));
        let branches: Vec<Branch> = filters
            .iter()
            .map(|criteria| Branch {
                resource_type: Some(t),
                criteria: criteria
                    .iter()
                    .cloned()
                    .chain(compartment.clone())
                    .collect(),
            })
            .collect();
        queries.push(branches);
    }
    queries
}

/// The criteria of each `_typeFilter` query of `t` (one empty list without any), each
/// with `_since`. Parsed strictly, under the search limits; result parameters refused.
fn filter_criteria(
    t: ResourceType,
    request: &ExportRequest,
    limits: &SearchLimits,
) -> Result<Vec<Vec<Criterion>>, FhirError> {
    let since: Vec<Criterion> = match &request.since {
        Some(s) => {
            SearchQuery::parse(t, [("_lastUpdated", format!("ge{s}"))])
                .map_err(|e| invalid_param("_since", format!("_since: {e}")))?
                .criteria
        }
        None => Vec::new(),
    };
    let queries: Vec<&Vec<(String, String)>> = request
        .type_filters
        .iter()
        .filter(|(ft, _)| *ft == t)
        .map(|(_, q)| q)
        .collect();
    if queries.is_empty() {
        return Ok(vec![since]);
    }
    let mut out = Vec::new();
    for query in queries {
        let (parsed, errors) = SearchQuery::parse_lenient_within(t, query.iter().cloned(), limits);
        if let Some(e) = errors.first() {
            return Err(invalid_param(
                "_typeFilter",
                format!("_typeFilter {t}: {e}"),
            ));
        }
        let result = parsed.result.to_string();
        if !result.is_empty() {
            return Err(invalid_param(
                "_typeFilter",
                format!("_typeFilter {t}: only search criteria may filter an export, not {result}"),
            ));
        }
        out.push(
            parsed
                .criteria
                .into_iter()
                .chain(since.iter().cloned())
                .collect(),
        );
    }
    Ok(out)
}

/// Resources of `t` in the compartment of any of `patients` (for Patient: those
/// patients); `None` when `t` has no place in the compartment.
fn compartment_criterion(t: ResourceType, patients: &[String]) -> Option<Criterion> {
    let patient = ResourceType::parse("Patient").expect("Patient exists");
    let references: Vec<SearchValue> = patients
        .iter()
        .map(|id| {
            SearchValue::Reference(ReferenceValue {
                target_type: Some(patient),
                id: Some(id.clone()),
                ..ReferenceValue::default()
            })
        })
        .collect();
    let mut alternatives: Vec<Criterion> = t
        .patient_compartment_params()
        .map(|param| Criterion::Match {
            param,
            values: references.clone(),
            negated: false,
        })
        .collect();
    if t == patient {
        let ids = patients
            .iter()
            .map(|id| {
                SearchValue::Token(TokenValue {
                    system: TokenSystem::Any,
                    code: Some(id.clone()),
                })
            })
            .collect();
        alternatives.insert(
            0,
            Criterion::Match {
                param: patient.search_param("_id").expect("_id exists"),
                values: ids,
                negated: false,
            },
        );
    }
    match alternatives.len() {
        0 => None,
        1 => alternatives.pop(),
        _ => Some(Criterion::AnyOf(alternatives)),
    }
}

/// The patients of `Group/[id]` (`Group.member.entity` references to Patient), read
/// under what the caller may read of Groups.
pub async fn group_members(
    fhir: &Repository,
    caller: &Caller,
    id: &str,
) -> Result<Vec<String>, FhirError> {
    let group = ResourceType::parse("Group").expect("Group exists");
    let access = caller.read_access(group)?;
    let version = match fhir.read_visible(None, group, id, &access).await? {
        Ok(version) => version,
        Err(hidden) => return Err(FhirError::Forbidden(hidden.0)),
    };
    let resource: Value = serde_json::from_str(&version.content)
        .map_err(|e| FhirError::Internal(format!("stored Group is not JSON: {e}")))?;
    let mut members = Vec::new();
    for member in resource["member"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if member["inactive"] == true {
            continue;
        }
        let reference = member["entity"]["reference"].as_str().unwrap_or_default();
        let local = reference
            .rsplit_once("Patient/")
            .map(|(_, id)| id)
            .filter(|id| crate::fhir::search::value::is_valid_id(id));
        if let Some(id) = local
            && !members.iter().any(|m: &String| m == id)
        {
            members.push(id.to_owned());
        }
    }
    Ok(members)
}

/// The patients a Patient or Group export keeps to: the Group's members, narrowed to
/// the `patient` parameter when both are given; the `patient` parameter alone; or none
/// (every patient).
pub fn patients_of(
    members: Option<Vec<String>>,
    requested: Option<&[String]>,
) -> Option<Vec<String>> {
    match (members, requested) {
        (Some(members), Some(requested)) => Some(
            members
                .into_iter()
                .filter(|m| requested.contains(m))
                .collect(),
        ),
        (Some(members), None) => Some(members),
        (None, Some(requested)) => Some(requested.to_vec()),
        (None, None) => None,
    }
}
