//! Running a search and answering it as a `searchset` Bundle: parameters parsed (strict,
//! or lenient with warnings), the [`Access`] compiled into the store query, the page,
//! the total, `_include`/`_revinclude` (with `:iterate`), `_summary` and `_elements`,
//! and `self`/`next`/`previous` links that reproduce the query.
//!
//! The paging cursor is `_snapshot` (the time, in ms, of the first page) plus `_after`
//! or `_before` (the [`Position`] of the row a page continues from): see `store::search`
//! for why that is stable. They are Hestia's own parameters; links carry them, clients
//! need not know them.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access::{Access, AccessConstraint, Visible};
use super::clock::{now_ms, snapshot_now};
use super::error::FhirError;
use super::outcome::{Issue, operation_outcome};
use super::search::value::format_instant;
use super::search::{
    Criterion, Include, Problem, ResultParams, SearchError, SearchLimits, SearchQuery, Summary,
    Total,
};
use super::types::{ResourceType, is_data_type_name};
use crate::store::search::{
    Branch, Follow, Found, Page, PageFrom, Position, Reach, SearchSpec, SearchStoreError,
};
use crate::store::{Conn, Store};

/// The page size when `_count` is not given, and the largest one served.
pub const DEFAULT_COUNT: u32 = 20;
pub const MAX_COUNT: u32 = 1000;
/// `:iterate` follows at most this many rounds (what the rounds add is bounded by
/// `SearchLimits::max_included`).
const MAX_ITERATE_ROUNDS: usize = 4;

/// What to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchScope {
    /// `GET [base]/[type]`.
    Type(ResourceType),
    /// `GET [base]?_type=...`; without `_type`, every type (common parameters only).
    System,
}

/// How to treat unknown or malformed parameters (`Prefer: handling=strict|lenient`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handling {
    #[default]
    Strict,
    Lenient,
}

impl From<SearchStoreError> for FhirError {
    fn from(e: SearchStoreError) -> Self {
        match e {
            SearchStoreError::Store(e) => FhirError::from(e),
            SearchStoreError::Access(e) => FhirError::Forbidden(e.to_string()),
            SearchStoreError::Unsupported(what) => FhirError::BadRequest(vec![Issue::error(
                "not-supported",
                format!("not supported: {what}"),
            )]),
        }
    }
}

/// A parameter error as an issue naming the parameter. A limit is always an error.
pub fn search_issue(e: &SearchError, severity_warning: bool) -> Issue {
    let issue = if matches!(e.problem, Problem::TooCostly(_)) {
        Issue::error("too-costly", e.to_string())
    } else if severity_warning {
        Issue::warning(
            "not-supported",
            format!("{e}; the parameter was ignored (Prefer: handling=lenient)"),
        )
    } else {
        Issue::error("invalid", e.to_string())
    };
    issue.at(e.param.clone())
}

/// A parsed search request, ready to run.
struct Plan {
    branches: Vec<Branch>,
    /// The query of the first branch: its result parameters apply to all.
    query: SearchQuery,
    warnings: Vec<SearchError>,
    /// The parameters as given, minus the cursor and minus rejected ones: what links repeat.
    link_params: Vec<(String, String)>,
    cursor: Cursor,
}

/// Where a page of a search or `$everything` continues: `_snapshot` with `_after` or
/// `_before` (none of them on a first page).
#[derive(Debug, Clone, Default)]
struct Cursor {
    snapshot: Option<i64>,
    from: Option<PageFrom>,
}

impl Cursor {
    /// Takes `k=v` when it is a cursor parameter (`true`), or leaves it (`false`).
    fn take(&mut self, k: &str, v: &str) -> Result<bool, FhirError> {
        let not_ours =
            || FhirError::invalid(format!("{k}={v} is not a paging cursor of this server"));
        match k {
            "_snapshot" => self.snapshot = Some(v.parse::<i64>().map_err(|_| not_ours())?),
            "_after" | "_before" => {
                let position = Position::decode(v).ok_or_else(not_ours)?;
                if self.from.is_some() {
                    return Err(FhirError::invalid(
                        "a paging cursor takes one of _after and _before",
                    ));
                }
                self.from = Some(if k == "_after" {
                    PageFrom::After(position)
                } else {
                    PageFrom::Before(position)
                });
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn from(&self) -> PageFrom {
        self.from.clone().unwrap_or(PageFrom::First)
    }

    /// Checks that a position has one key per sort key of the query it is used with.
    fn check(&self, sort_keys: usize) -> Result<(), FhirError> {
        match &self.from {
            Some(PageFrom::After(p) | PageFrom::Before(p)) if p.keys.len() != sort_keys => Err(
                FhirError::invalid("the paging cursor belongs to a search with another _sort"),
            ),
            _ => Ok(()),
        }
    }
}

/// The `self`, `next` and `previous` links of a page read from `from`; `url(None)` is a
/// first page (of the snapshot), `url(Some((name, position)))` continues from a position.
fn page_links(
    url: impl Fn(Option<(&str, &Position)>) -> String,
    from: &PageFrom,
    page: &Page,
    count: i64,
) -> Vec<Value> {
    let own = match from {
        PageFrom::First => url(None),
        PageFrom::After(p) => url(Some(("_after", p))),
        PageFrom::Before(p) => url(Some(("_before", p))),
    };
    let mut links = vec![json!({"relation": "self", "url": own})];
    let next = match from {
        PageFrom::First | PageFrom::After(_) if page.more && count > 0 => {
            page.last.as_ref().map(|p| url(Some(("_after", p))))
        }
        PageFrom::Before(_) => Some(match &page.last {
            Some(p) => url(Some(("_after", p))),
            None => url(None),
        }),
        _ => None,
    };
    let previous = match from {
        PageFrom::First => None,
        PageFrom::After(at) => Some(url(Some(("_before", page.first.as_ref().unwrap_or(at))))),
        PageFrom::Before(_) if page.more => page.first.as_ref().map(|p| url(Some(("_before", p)))),
        PageFrom::Before(_) => None,
    };
    if let Some(next) = next {
        links.push(json!({"relation": "next", "url": next}));
    }
    if let Some(previous) = previous {
        links.push(json!({"relation": "previous", "url": previous}));
    }
    links
}

fn parse_plan(
    scope: SearchScope,
    params: &[(String, String)],
    handling: Handling,
    access: &Access,
    limits: &SearchLimits,
) -> Result<Plan, FhirError> {
    let PlanParams {
        cursor,
        types,
        criteria_params,
        mut errors,
        mut link_params,
    } = PlanParams::split(scope, params)?;
    let branch_types: Vec<Option<ResourceType>> = match (scope, &types) {
        (SearchScope::Type(t), _) => vec![Some(t)],
        (SearchScope::System, Some(list)) => list.iter().copied().map(Some).collect(),
        (SearchScope::System, None) => vec![None],
    };
    let mut branches = Vec::new();
    let mut first_query = None;
    for rt in branch_types {
        let (query, errs) = parse_branch(rt, &criteria_params, limits);
        for e in errs {
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
        branches.push(Branch {
            resource_type: rt,
            criteria: query.criteria.clone(),
        });
        first_query.get_or_insert(query);
    }
    let query = first_query
        .unwrap_or_else(|| SearchQuery::all(ResourceType::parse("Patient").expect("Patient")));
    refuse_or_drop_errors(handling, &errors, &mut link_params, &mut branches)?;
    let branches = branches_under(access, scope, branches)?;
    Ok(Plan {
        branches,
        query,
        warnings: errors,
        link_params,
        cursor,
    })
}

/// A search's parameters sorted out: the cursor, `_type` of a system search, and the
/// rest, which are criteria and result parameters.
struct PlanParams {
    cursor: Cursor,
    types: Option<Vec<ResourceType>>,
    criteria_params: Vec<(String, String)>,
    /// `_type` names that are not resource types.
    errors: Vec<SearchError>,
    /// The parameters as given, minus the cursor.
    link_params: Vec<(String, String)>,
}

impl PlanParams {
    fn split(scope: SearchScope, params: &[(String, String)]) -> Result<Self, FhirError> {
        let mut split = Self {
            cursor: Cursor::default(),
            types: None,
            criteria_params: Vec::new(),
            errors: Vec::new(),
            link_params: Vec::new(),
        };
        for (k, v) in params {
            if split.cursor.take(k, v)? {
                continue;
            }
            if k == "_type" && scope == SearchScope::System {
                let mut list = split.types.take().unwrap_or_default();
                for name in v.split(',').filter(|n| !n.is_empty()) {
                    match ResourceType::parse(name) {
                        Some(t) if !list.contains(&t) => list.push(t),
                        Some(_) => {}
                        None => split.errors.push(SearchError {
                            param: "_type".into(),
                            problem: Problem::InvalidValue {
                                value: name.to_owned(),
                                reason: "not a resource type".into(),
                            },
                        }),
                    }
                }
                split.types = Some(list);
            } else {
                split.criteria_params.push((k.clone(), v.clone()));
            }
            split.link_params.push((k.clone(), v.clone()));
        }
        Ok(split)
    }
}

/// The query of one branch (`None`: every type), leniently, with its errors.
fn parse_branch(
    rt: Option<ResourceType>,
    criteria_params: &[(String, String)],
    limits: &SearchLimits,
) -> (SearchQuery, Vec<SearchError>) {
    // Common parameters (`_id`, `_lastUpdated`, `_tag`, ...) are the same for every
    // type; Patient stands in when no type is named, and anything type-specific is
    // refused below.
    let parse_type = rt.unwrap_or_else(|| ResourceType::parse("Patient").expect("Patient"));
    let (query, mut errs) =
        SearchQuery::parse_lenient_within(parse_type, criteria_params.iter().cloned(), limits);
    if rt.is_none() {
        for c in &query.criteria {
            if let Some(code) = type_specific(c) {
                errs.push(SearchError {
                    param: code.to_owned(),
                    problem: Problem::Invalid(
                        "a search across all types takes only the parameters every resource has; name the types with _type".into(),
                    ),
                });
            }
        }
    }
    (query, errs)
}

/// Parameter errors: a limit is always refused, anything else under strict handling;
/// under lenient handling the parameter is left out of the links and of every branch.
fn refuse_or_drop_errors(
    handling: Handling,
    errors: &[SearchError],
    link_params: &mut Vec<(String, String)>,
    branches: &mut [Branch],
) -> Result<(), FhirError> {
    let too_costly: Vec<Issue> = errors
        .iter()
        .filter(|e| matches!(e.problem, Problem::TooCostly(_)))
        .map(|e| search_issue(e, false))
        .collect();
    if !too_costly.is_empty() {
        return Err(FhirError::BadRequest(too_costly));
    }
    if !errors.is_empty() && handling == Handling::Strict {
        return Err(FhirError::BadRequest(
            errors.iter().map(|e| search_issue(e, false)).collect(),
        ));
    }
    if !errors.is_empty() {
        link_params.retain(|(k, _)| !errors.iter().any(|e| &e.param == k));
        // A criterion that failed in one branch but parsed in another would widen the
        // other branches' results if kept there; leave it out everywhere.
        for branch in branches {
            branch.criteria.retain(|c| {
                !errors.iter().any(|e| {
                    criterion_code(c)
                        .is_some_and(|code| e.param.split([':', '.']).next() == Some(code))
                })
            });
        }
    }
    Ok(())
}

/// The branches as `access` runs them: under constraints, a system search without
/// `_type` runs over every type the access lets through, each with its own constraint;
/// a type search for a type the access excludes altogether is refused outright.
fn branches_under(
    access: &Access,
    scope: SearchScope,
    mut branches: Vec<Branch>,
) -> Result<Vec<Branch>, FhirError> {
    if !access.is_unrestricted()
        && let [
            Branch {
                resource_type: None,
                criteria,
            },
        ] = branches.as_slice()
    {
        let criteria = criteria.clone();
        branches = ResourceType::all()
            .filter(|t| !matches!(access.visible(*t), Ok(Visible::Nothing(_))))
            .map(|t| Branch {
                resource_type: Some(t),
                criteria: criteria.clone(),
            })
            .collect();
    }
    if let SearchScope::Type(t) = scope {
        match access.visible(t) {
            Ok(Visible::Nothing(why)) => return Err(FhirError::Forbidden(why)),
            Err(e) => return Err(FhirError::Forbidden(e.to_string())),
            Ok(_) => {}
        }
    }
    Ok(branches)
}

fn criterion_code(c: &Criterion) -> Option<&str> {
    match c {
        Criterion::Match { param, .. }
        | Criterion::Missing { param, .. }
        | Criterion::Chain { param, .. } => Some(param.code.as_str()),
        Criterion::Has { .. } => Some("_has"),
        Criterion::AnyOf(_) => None,
    }
}

/// The code of a criterion whose parameter belongs to one type only.
fn type_specific(c: &Criterion) -> Option<&str> {
    match c {
        Criterion::Match { param, .. } | Criterion::Missing { param, .. } => {
            (!matches!(param.base.as_str(), "Resource" | "DomainResource"))
                .then_some(param.code.as_str())
        }
        Criterion::Chain { param, .. } => Some(param.code.as_str()),
        Criterion::Has { .. } => Some("_has"),
        Criterion::AnyOf(cs) => cs.iter().find_map(type_specific),
    }
}

/// The resources (at most `limit`) of `rt` that match `params`, under `allowed` (the
/// access, and for chains and `_has` each other type's): what the conditional
/// interactions decide on, read on `conn` (inside the interaction's
/// transaction). Parameters are parsed strictly.
pub async fn matching(
    conn: &mut Conn,
    base_url: &str,
    rt: ResourceType,
    params: &[(String, String)],
    allowed: Allowed<'_>,
    limits: &SearchLimits,
    limit: i64,
) -> Result<Vec<Found>, FhirError> {
    let Allowed {
        access,
        type_access,
    } = allowed;
    let plan = parse_plan(
        SearchScope::Type(rt),
        params,
        Handling::Strict,
        access,
        limits,
    )?;
    if plan.branches.iter().all(|b| b.criteria.is_empty()) {
        return Err(FhirError::invalid(
            "a conditional interaction needs search criteria that select the resource",
        ));
    }
    let reach = reach(&plan.branches, access, type_access)?;
    let spec = SearchSpec {
        branches: &plan.branches,
        sort: &[],
        snapshot: i64::MAX,
        as_of_snapshot: false,
        access,
        reach: &reach,
        base_url,
    };
    Ok(
        crate::store::search::search_page_in(conn, &spec, &PageFrom::First, limit)
            .await?
            .rows,
    )
}

/// Runs a search and answers the `searchset` Bundle. Matches are restricted by `access`
/// (the decision on the search); a chain target or `_has` source of type T also by
/// `type_access(T, Via::Search)` (what a search of T would be allowed; a chain or `_has`
/// into a type the caller may not search is refused, naming the reason); a resource
/// `_include`d of type T by `type_access(T, Via::Reference)`, one `_revinclude`d by
/// `type_access(T, Via::Search)`, and is left out when that is refused: an include never
/// shows a type the caller's scopes do not cover. Parameters beyond `limits` are a 400
/// naming the limit; includes beyond `limits.max_included` are left out, with an
/// `outcome` entry that says so.
#[allow(clippy::too_many_arguments)]
pub async fn search(
    store: &Store,
    base_url: &str,
    scope: SearchScope,
    params: &[(String, String)],
    handling: Handling,
    access: &Access,
    type_access: TypeAccess<'_>,
    limits: &SearchLimits,
) -> Result<Value, FhirError> {
    let plan = parse_plan(scope, params, handling, access, limits)?;
    let result = &plan.query.result;
    let count = i64::from(result.count.unwrap_or(DEFAULT_COUNT).min(MAX_COUNT));
    plan.cursor.check(result.sort.len())?;
    let snapshot = plan.cursor.snapshot.unwrap_or_else(snapshot_now);
    let from = plan.cursor.from();
    let reach = reach(&plan.branches, access, type_access)?;
    let spec = SearchSpec {
        branches: &plan.branches,
        sort: &result.sort,
        snapshot,
        as_of_snapshot: plan.cursor.snapshot.is_some(),
        access,
        reach: &reach,
        base_url,
    };
    let summary_count = result.summary == Some(Summary::Count);
    // The count and the page read the same snapshot, each on a connection of its own: run
    // together, a search takes the longer of the two, not their sum.
    let total = async {
        if result.total == Some(Total::None) && !summary_count {
            Ok(None)
        } else {
            store.search_count(&spec).await.map(Some)
        }
    };
    let page = async {
        if summary_count {
            Ok(Page::default())
        } else {
            store.search_page(&spec, &from, count).await
        }
    };
    let (total, page) = tokio::try_join!(total, page)?;
    let included = if page.rows.is_empty() {
        Capped::default()
    } else {
        includes(
            store,
            base_url,
            &page.rows,
            (&result.include, &result.revinclude),
            access,
            type_access,
            limits.max_included,
        )
        .await?
    };

    let self_path = match scope {
        SearchScope::Type(t) => format!("{base_url}/{t}"),
        SearchScope::System => base_url.to_owned(),
    };
    let link =
        |at: Option<(&str, &Position)>| page_url(&self_path, &plan.link_params, snapshot, at);
    let links = if summary_count {
        vec![json!({"relation": "self", "url": link(None)})]
    } else {
        page_links(link, &from, &page, count)
    };
    let entries = shaped_entries(base_url, &page.rows, &included.found, result)?;
    let mut issues: Vec<Issue> = plan
        .warnings
        .iter()
        .map(|e| search_issue(e, true))
        .collect();
    issues.extend(included.cut_issue("_include/_revinclude", limits.max_included));
    Ok(searchset_bundle(total, links, entries, &issues))
}

/// The entries of a page: its matches under `_summary` and `_elements`, then what they
/// include under `_summary`.
fn shaped_entries(
    base_url: &str,
    matches: &[Found],
    included: &[Found],
    result: &ResultParams,
) -> Result<Vec<Value>, FhirError> {
    let mut entries = Vec::with_capacity(matches.len() + included.len() + 1);
    for found in matches {
        let mut resource = parse_found(found)?;
        shape(&mut resource, found, result.summary, &result.elements);
        entries.push(entry(base_url, found, resource, "match"));
    }
    for found in included {
        let mut resource = parse_found(found)?;
        shape(&mut resource, found, result.summary, &[]);
        entries.push(entry(base_url, found, resource, "include"));
    }
    Ok(entries)
}

/// The url of a page: `self_path` with the parameters links repeat, the snapshot, and the
/// position the page continues from (`None`: the first page of the snapshot).
fn page_url(
    self_path: &str,
    link_params: &[(String, String)],
    snapshot: i64,
    at: Option<(&str, &Position)>,
) -> String {
    let mut pairs = link_params.to_vec();
    pairs.push(("_snapshot".into(), snapshot.to_string()));
    if let Some((name, position)) = at {
        pairs.push((name.into(), position.encode()));
    }
    format!("{self_path}?{}", encode_query(&pairs))
}

/// A `searchset` Bundle of `entries`, followed by an `outcome` entry when there are `issues`.
fn searchset_bundle(
    total: Option<i64>,
    links: Vec<Value>,
    mut entries: Vec<Value>,
    issues: &[Issue],
) -> Value {
    if !issues.is_empty() {
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": operation_outcome(issues),
            "search": {"mode": "outcome"},
        }));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": format_instant(now_ms())},
        "type": "searchset",
    });
    if let Some(total) = total {
        bundle["total"] = json!(total);
    }
    bundle["link"] = Value::Array(links);
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}

/// How a request reaches resources of a type other than (or besides) the one it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A search of the type: chain targets, `_has` sources, `_revinclude`d resources,
    /// the compartment types of `$everything` (SMART `s`).
    Search,
    /// Following a reference to it from a resource the caller sees: `_include` and the
    /// referenced resources of `$everything`. Reading the referenced resource (SMART `r`)
    /// or searching its type for it (`s`, `Type?_id=`) would show it as well, so either
    /// suffices.
    Reference,
}

/// The access a caller has to one resource type, reached `via` a search or a reference:
/// an `Err(Forbidden)` leaves the type out (the authorization layer asks the
/// scope-policy plugins, type by type).
pub type TypeAccess<'a> =
    &'a (dyn Fn(ResourceType, Via) -> Result<Access, FhirError> + Send + Sync);

/// What a caller may see: the decision on its request and, per other type, what reaching
/// into that type would be allowed (criteria of conditional interactions use both).
#[derive(Clone, Copy)]
pub struct Allowed<'a> {
    pub access: &'a Access,
    pub type_access: TypeAccess<'a>,
}

/// What the caller may see of each type the criteria of `branches` reach into (chain
/// targets, `_has` sources, at any depth): the search's `access` and a search of that
/// type's own access, both. A chain or `_has` whose every type is out of reach is
/// refused, naming the parameter, the type and why; a chain without a type modifier
/// keeps to the target types in reach and matches nothing through the others.
pub(crate) fn reach(
    branches: &[Branch],
    access: &Access,
    type_access: TypeAccess<'_>,
) -> Result<Reach, FhirError> {
    let mut reach = Reach::new();
    let mut why_not: HashMap<ResourceType, String> = HashMap::new();
    for branch in branches {
        reach_criteria(
            &branch.criteria,
            access,
            type_access,
            &mut reach,
            &mut why_not,
        )?;
    }
    Ok(reach)
}

/// Decides what the caller may see of type `t` once: its access, or why there is none
/// (kept for the refusal). Whether it may see any of it.
fn decide_reach(
    t: ResourceType,
    access: &Access,
    type_access: TypeAccess<'_>,
    reach: &mut Reach,
    why_not: &mut HashMap<ResourceType, String>,
) -> Result<bool, FhirError> {
    if let Some(decided) = reach.get(&t) {
        return Ok(decided.is_some());
    }
    let seen = match type_access(t, Via::Search) {
        Ok(own) => {
            let combined = access.clone().and(own);
            match combined.visible(t) {
                Ok(Visible::Nothing(why)) => Err(why),
                Ok(_) => Ok(combined),
                Err(e) => return Err(FhirError::Forbidden(e.to_string())),
            }
        }
        Err(FhirError::Forbidden(why)) => Err(why),
        Err(other) => return Err(other),
    };
    Ok(match seen {
        Ok(combined) => {
            reach.insert(t, Some(combined));
            true
        }
        Err(why) => {
            reach.insert(t, None);
            why_not.insert(t, why);
            false
        }
    })
}

/// The refusal of a criterion (`label`) that reaches only into `t`, which is out of reach.
fn refuse_reach(
    label: String,
    t: ResourceType,
    why_not: &HashMap<ResourceType, String>,
) -> FhirError {
    FhirError::Forbidden(format!(
        "{label} reaches into {t}, which this token may not search: {}",
        why_not.get(&t).map_or("no access", String::as_str)
    ))
}

fn reach_criteria(
    criteria: &[Criterion],
    access: &Access,
    type_access: TypeAccess<'_>,
    reach: &mut Reach,
    why_not: &mut HashMap<ResourceType, String>,
) -> Result<(), FhirError> {
    for c in criteria {
        match c {
            Criterion::Chain { param, targets } => {
                let mut any = false;
                for target in targets {
                    any |= decide_reach(target.resource_type, access, type_access, reach, why_not)?;
                }
                if !any && let Some(first) = targets.first() {
                    let label = format!(
                        "{}:{}.{}",
                        param.code,
                        first.resource_type,
                        criterion_label(&first.criterion)
                    );
                    return Err(refuse_reach(label, first.resource_type, why_not));
                }
                for target in targets {
                    if reach
                        .get(&target.resource_type)
                        .is_some_and(Option::is_some)
                    {
                        reach_criteria(
                            std::slice::from_ref(&target.criterion),
                            access,
                            type_access,
                            reach,
                            why_not,
                        )?;
                    }
                }
            }
            Criterion::Has {
                source_type,
                reference,
                criterion,
            } => {
                if !decide_reach(*source_type, access, type_access, reach, why_not)? {
                    let label = format!(
                        "_has:{source_type}:{}:{}",
                        reference.code,
                        criterion_label(criterion)
                    );
                    return Err(refuse_reach(label, *source_type, why_not));
                }
                reach_criteria(
                    std::slice::from_ref(criterion.as_ref()),
                    access,
                    type_access,
                    reach,
                    why_not,
                )?;
            }
            Criterion::AnyOf(inner) => {
                reach_criteria(inner, access, type_access, reach, why_not)?;
            }
            Criterion::Match { .. } | Criterion::Missing { .. } => {}
        }
    }
    Ok(())
}

/// The parameter a criterion is about, for messages.
fn criterion_label(c: &Criterion) -> &str {
    match c {
        Criterion::AnyOf(inner) => inner.first().map_or("?", criterion_label),
        other => criterion_code(other).unwrap_or("?"),
    }
}

/// `Patient/[id]/$everything`: a page of the resources in the Patient compartment of
/// `patient` (the Patient itself and every resource whose compartment parameters refer
/// to it; `_type` narrows the types, `_since` keeps those updated since then), and, as
/// `include` entries, the resources those refer to directly (one level: Practitioner,
/// Organization, Medication, Location, ...).
///
/// What is returned never leaves `access` (the decision on the operation) nor, per type,
/// `type_access(type)` (what a search of that type would be allowed): a type the caller
/// may not search is left out, with a warning naming it. Every constraint is applied
/// inside the store query, so counts and pages see only what is returned. The cursor
/// (`_snapshot`, `_after`, `_before`) is the one of search.
pub async fn everything(
    store: &Store,
    base_url: &str,
    patient: &str,
    params: &[(String, String)],
    access: &Access,
    type_access: TypeAccess<'_>,
    max_included: usize,
) -> Result<Value, FhirError> {
    let request = EverythingParams::parse(params)?;
    let selection = CompartmentSelection::decide(patient, &request, access, type_access)?;
    let cursor = &request.cursor;
    cursor.check(0)?;
    let snapshot = cursor.snapshot.unwrap_or_else(snapshot_now);
    let from = cursor.from();
    let (total, page) = if selection.branches.is_empty() {
        (0, Page::default())
    } else {
        let spec = SearchSpec {
            branches: &selection.branches,
            sort: &[],
            snapshot,
            as_of_snapshot: cursor.snapshot.is_some(),
            access: &selection.access,
            // Only `_lastUpdated` criteria: nothing reaches into another type.
            reach: &Reach::new(),
            base_url,
        };
        tokio::try_join!(
            store.search_count(&spec),
            store.search_page(&spec, &from, request.count),
        )?
    };
    let matches = &page.rows;
    let included = referenced(store, base_url, matches, access, type_access, max_included).await?;

    let self_path = format!("{base_url}/Patient/{patient}/$everything");
    let link =
        |at: Option<(&str, &Position)>| page_url(&self_path, &request.link_params, snapshot, at);
    let links = page_links(link, &from, &page, request.count);
    let mut entries = Vec::with_capacity(matches.len() + included.found.len() + 1);
    for found in matches {
        entries.push(entry(base_url, found, parse_found(found)?, "match"));
    }
    for found in &included.found {
        entries.push(entry(base_url, found, parse_found(found)?, "include"));
    }
    let mut issues = Vec::new();
    if !selection.left_out.is_empty() {
        issues.push(Issue::warning(
            "suppressed",
            format!("left out of $everything: {}", selection.left_out.join("; ")),
        ));
    }
    issues.extend(included.cut_issue("$everything", max_included));
    Ok(searchset_bundle(Some(total), links, entries, &issues))
}

/// The parameters of `$everything`: `_count`, `_since`, `_type` and the cursor.
struct EverythingParams {
    count: i64,
    cursor: Cursor,
    since: Option<String>,
    types: Option<Vec<ResourceType>>,
    /// The parameters as given, minus the cursor: what links repeat.
    link_params: Vec<(String, String)>,
}

impl EverythingParams {
    fn parse(params: &[(String, String)]) -> Result<Self, FhirError> {
        let mut request = Self {
            count: i64::from(DEFAULT_COUNT),
            cursor: Cursor::default(),
            since: None,
            types: None,
            link_params: Vec::new(),
        };
        for (k, v) in params {
            if request.cursor.take(k, v)? {
                continue;
            }
            match k.as_str() {
                "_count" => {
                    request.count = v
                        .parse::<u32>()
                        .map(|n| i64::from(n.min(MAX_COUNT)))
                        .map_err(|_| FhirError::invalid(format!("_count={v} is not a number")))?;
                }
                "_since" => {
                    super::search::value::parse_date(v)
                        .map_err(|e| FhirError::invalid(format!("_since={v}: {e}")))?;
                    request.since = Some(v.clone());
                }
                "_type" => {
                    let list = request.types.get_or_insert_with(Vec::new);
                    for name in v.split(',').filter(|n| !n.is_empty()) {
                        let t = ResourceType::parse(name).ok_or_else(|| {
                            FhirError::invalid(format!("_type: {name:?} is not a resource type"))
                        })?;
                        if !list.contains(&t) {
                            list.push(t);
                        }
                    }
                }
                "_format" | "_pretty" => continue,
                other => {
                    return Err(FhirError::BadRequest(vec![
                        Issue::error(
                            "not-supported",
                            format!(
                                "Patient/$everything takes _count, _since and _type here, not {other:?}"
                            ),
                        )
                        .at(other.to_owned()),
                    ]));
                }
            }
            request.link_params.push((k.clone(), v.clone()));
        }
        Ok(request)
    }
}

/// What `$everything` searches: one branch per compartment type the caller may search,
/// under the access of the operation, the compartment and every such type's own access;
/// and the types left out, each with why.
struct CompartmentSelection {
    access: Access,
    branches: Vec<Branch>,
    left_out: Vec<String>,
}

impl CompartmentSelection {
    fn decide(
        patient: &str,
        request: &EverythingParams,
        access: &Access,
        type_access: TypeAccess<'_>,
    ) -> Result<Self, FhirError> {
        let in_compartment = |t: &ResourceType| {
            t.as_str() == "Patient" || t.patient_compartment_params().next().is_some()
        };
        let candidates: Vec<ResourceType> = match &request.types {
            Some(list) => list.clone(),
            None => ResourceType::all().filter(in_compartment).collect(),
        };
        let mut combined =
            access
                .clone()
                .and(Access::Within(vec![AccessConstraint::PatientCompartment(
                    patient.to_owned(),
                )]));
        let mut allowed = Vec::new();
        let mut left_out = Vec::new();
        for t in candidates {
            if !in_compartment(&t) {
                left_out.push(format!("{t} (not in the Patient compartment)"));
                continue;
            }
            match type_access(t, Via::Search) {
                Ok(a) => {
                    combined = combined.and(a);
                    allowed.push(t);
                }
                Err(FhirError::Forbidden(why)) => left_out.push(format!("{t} ({why})")),
                Err(other) => return Err(other),
            }
        }
        // Constraints accumulate across types; a type they exclude altogether is dropped.
        let mut branches = Vec::new();
        for t in allowed {
            match combined.visible(t) {
                Ok(Visible::Nothing(why)) => left_out.push(format!("{t} ({why})")),
                Err(e) => return Err(FhirError::Forbidden(e.to_string())),
                Ok(_) => branches.push(Branch {
                    resource_type: Some(t),
                    criteria: since_criteria(t, request.since.as_deref())?,
                }),
            }
        }
        Ok(Self {
            access: combined,
            branches,
            left_out,
        })
    }
}

/// `_since` as a `_lastUpdated=ge` criterion on `t`.
fn since_criteria(t: ResourceType, since: Option<&str>) -> Result<Vec<Criterion>, FhirError> {
    Ok(match since {
        Some(s) => {
            SearchQuery::parse(t, [("_lastUpdated", format!("ge{s}"))])
                .map_err(|e| FhirError::invalid(format!("_since: {e}")))?
                .criteria
        }
        None => Vec::new(),
    })
}

/// Resources added to a page, at most a limit of them, and whether the limit left some out.
#[derive(Debug, Default)]
struct Capped {
    found: Vec<Found>,
    cut: bool,
}

impl Capped {
    /// How many more may be added.
    fn left(&self, max: usize) -> usize {
        max.saturating_sub(self.found.len())
    }

    /// Adds the resources of `rt` among `ids` visible under `access`, by id, as many as
    /// are left: the database returns at most one more than that, which tells whether
    /// the limit cut them.
    async fn fetch(
        &mut self,
        store: &Store,
        (rt, ids): (ResourceType, &[String]),
        access: &Access,
        base_url: &str,
        max: usize,
    ) -> Result<(), FhirError> {
        let left = self.left(max);
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut fetched = store
            .fetch_visible(rt, &ids, access, base_url, left + 1)
            .await?;
        if fetched.len() > left {
            fetched.truncate(left);
            self.cut = true;
        }
        self.found.extend(fetched);
        Ok(())
    }

    /// The `outcome` issue saying that `what` added no more than `max` resources.
    fn cut_issue(&self, what: &str, max: usize) -> Option<Issue> {
        self.cut.then(|| {
            Issue::warning(
                "too-costly",
                format!(
                    "{what}: at most {max} included resources are returned per page (fhir.max_included), and more match"
                ),
            )
        })
    }
}

/// The most keys one follow of references asks for: what may still be added plus those
/// already on the page (which are skipped), and one more to tell whether there are more.
fn key_limit(left: usize, seen: usize) -> usize {
    left + seen + 1
}

/// The resources that `matches` refer to (any reference parameter), not already among
/// them, each visible under `access` and its type's `type_access`; at most `max`.
async fn referenced(
    store: &Store,
    base_url: &str,
    matches: &[Found],
    access: &Access,
    type_access: TypeAccess<'_>,
    max: usize,
) -> Result<Capped, FhirError> {
    let mut seen: HashSet<(String, String)> = matches
        .iter()
        .map(|f| (f.resource_type.clone(), f.id.clone()))
        .collect();
    let mut sources: HashMap<&str, Vec<&str>> = HashMap::new();
    for f in matches {
        sources.entry(&f.resource_type).or_default().push(&f.id);
    }
    let mut sources: Vec<_> = sources.into_iter().collect();
    sources.sort();
    let mut included = Capped::default();
    let mut by_type: HashMap<String, Vec<String>> = HashMap::new();
    for (t, ids) in sources {
        let Some(source_type) = ResourceType::parse(t) else {
            continue;
        };
        let follow = Follow {
            source_type,
            param: None,
            target_type: None,
        };
        let limit = key_limit(max, seen.len());
        let keys = store.referenced_keys(&ids, follow, limit).await?;
        included.cut |= keys.len() >= limit;
        for key in keys {
            if seen.insert(key.clone()) {
                by_type.entry(key.0).or_default().push(key.1);
            }
        }
    }
    let mut types: Vec<_> = by_type.into_iter().collect();
    types.sort();
    for (t, ids) in types {
        let Some(rt) = ResourceType::parse(&t) else {
            continue;
        };
        let type_access = match type_access(rt, Via::Reference) {
            Ok(a) => a,
            Err(FhirError::Forbidden(_)) => continue,
            Err(other) => return Err(other),
        };
        let visible_under = access.clone().and(type_access);
        included
            .fetch(store, (rt, &ids), &visible_under, base_url, max)
            .await?;
        if included.left(max) == 0 {
            break;
        }
    }
    Ok(included)
}

fn entry(base_url: &str, found: &Found, resource: Value, mode: &str) -> Value {
    json!({
        "fullUrl": format!("{base_url}/{}/{}", found.resource_type, found.id),
        "resource": resource,
        "search": {"mode": mode},
    })
}

fn parse_found(found: &Found) -> Result<Value, FhirError> {
    serde_json::from_str(&found.content)
        .map_err(|e| FhirError::Internal(format!("stored resource is not JSON: {e}")))
}

/// Follows `_include` and `_revinclude` from the page's matches; `:iterate` directives
/// also from what they included, round after round. Every included resource passes
/// `access` and its own type's `type_access`: reached by reference for `_include`
/// ([`Via::Reference`]), by a search of its type for `_revinclude` ([`Via::Search`]).
/// At most `max` are added; every query asks the database for no more than that (and
/// one to tell whether there are more).
async fn includes(
    store: &Store,
    base_url: &str,
    matches: &[Found],
    (include, revinclude): (&[Include], &[Include]),
    access: &Access,
    type_access: TypeAccess<'_>,
    max: usize,
) -> Result<Capped, FhirError> {
    let mut included = Capped::default();
    if include.is_empty() && revinclude.is_empty() {
        return Ok(included);
    }
    let mut seen: HashSet<(String, String)> = matches
        .iter()
        .map(|f| (f.resource_type.clone(), f.id.clone()))
        .collect();
    let mut sources: Vec<(String, String)> = seen.iter().cloned().collect();
    sources.sort();
    for round in 0..=MAX_ITERATE_ROUNDS {
        let limit = key_limit(included.left(max), seen.len());
        let candidates = included
            .round_keys(store, &sources, (include, revinclude), round, limit)
            .await?;
        // Included and reverse-included in one round: the include (listed first) decides.
        let mut by_type: HashMap<(String, bool), Vec<String>> = HashMap::new();
        for (via, key) in candidates {
            if !seen.contains(&key) {
                seen.insert(key.clone());
                by_type
                    .entry((key.0, via == Via::Reference))
                    .or_default()
                    .push(key.1);
            }
        }
        let mut types: Vec<_> = by_type.into_iter().collect();
        types.sort();
        let before = included.found.len();
        for ((t, by_reference), ids) in types {
            let Some(rt) = ResourceType::parse(&t) else {
                continue;
            };
            let via = if by_reference {
                Via::Reference
            } else {
                Via::Search
            };
            let visible_under = match type_access(rt, via) {
                Ok(own) => access.clone().and(own),
                Err(FhirError::Forbidden(_)) => continue,
                Err(other) => return Err(other),
            };
            included
                .fetch(store, (rt, &ids), &visible_under, base_url, max)
                .await?;
            if included.left(max) == 0 {
                break;
            }
        }
        if included.found.len() == before || included.left(max) == 0 {
            break;
        }
        sources = included.found[before..]
            .iter()
            .map(|f| (f.resource_type.clone(), f.id.clone()))
            .collect();
    }
    Ok(included)
}

impl Capped {
    /// The keys one round of includes reaches from `sources`, each with how it was
    /// reached: `_include` (by reference) first, then `_revinclude` (by a search); after
    /// the first round only `:iterate` directives. At most `limit` per directive; reaching
    /// the limit marks the result cut.
    async fn round_keys(
        &mut self,
        store: &Store,
        sources: &[(String, String)],
        (include, revinclude): (&[Include], &[Include]),
        round: usize,
        limit: usize,
    ) -> Result<Vec<(Via, (String, String))>, FhirError> {
        let mut candidates = Vec::new();
        for inc in include.iter().filter(|i| round == 0 || i.iterate) {
            let ids: Vec<&str> = sources
                .iter()
                .filter(|(t, _)| t == inc.source_type.as_str())
                .map(|(_, id)| id.as_str())
                .collect();
            let keys = store.referenced_keys(&ids, follow(inc), limit).await?;
            self.cut |= keys.len() >= limit;
            candidates.extend(keys.into_iter().map(|key| (Via::Reference, key)));
        }
        for inc in revinclude.iter().filter(|i| round == 0 || i.iterate) {
            let keys = store.referring_keys(sources, follow(inc), limit).await?;
            self.cut |= keys.len() >= limit;
            candidates.extend(keys.into_iter().map(|key| (Via::Search, key)));
        }
        Ok(candidates)
    }
}

fn follow(inc: &Include) -> Follow<'_> {
    Follow {
        source_type: inc.source_type,
        param: inc.param.map(|p| p.rows_code()),
        target_type: inc.target_type,
    }
}

#[derive(Deserialize)]
struct SummaryEntry {
    summary: Vec<String>,
    mandatory: Vec<String>,
}

/// Per type: the top-level elements `_summary=true` keeps, and the mandatory ones.
/// Generated from the R4 StructureDefinitions by `tools/fhir-defs/summary.py`.
static SUMMARY: LazyLock<HashMap<String, SummaryEntry>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../fhir-defs/r4-summary.json"))
        .expect("r4-summary.json is valid")
});

/// Whether the JSON key `key` is the element `element` (choice elements: `value` is
/// `valueQuantity`, `valueString`, ...; primitive extensions: `_birthDate`).
fn is_element(key: &str, element: &str) -> bool {
    let key = key.strip_prefix('_').unwrap_or(key);
    key == element
        || key.strip_prefix(element).is_some_and(|rest| {
            rest.starts_with(|c: char| c.is_ascii_uppercase()) && is_data_type_name(rest)
        })
}

/// Applies `_summary` and `_elements` to a resource, marking it `SUBSETTED`.
pub(crate) fn shape(
    resource: &mut Value,
    found: &Found,
    summary: Option<Summary>,
    elements: &[String],
) {
    let Value::Object(object) = resource else {
        return;
    };
    let entry = SUMMARY.get(&found.resource_type);
    let mandatory: &[String] = entry.map_or(&[], |e| &e.mandatory);
    let keep = |object: &mut Map<String, Value>, allowed: &dyn Fn(&str) -> bool| {
        object.retain(|k, _| matches!(k.as_str(), "resourceType" | "id" | "meta") || allowed(k));
        subsetted(object);
    };
    match summary {
        Some(Summary::True) => {
            let list: &[String] = entry.map_or(&[], |e| &e.summary);
            keep(object, &|k| list.iter().any(|e| is_element(k, e)));
        }
        Some(Summary::Text) => {
            keep(object, &|k| {
                k == "text" || mandatory.iter().any(|e| is_element(k, e))
            });
        }
        Some(Summary::Data) => {
            object.remove("text");
            subsetted(object);
        }
        _ if !elements.is_empty() => {
            let names: Vec<&str> = elements
                .iter()
                .map(|e| e.split('.').next().unwrap_or(e))
                .collect();
            keep(object, &|k| {
                names.iter().any(|e| is_element(k, e)) || mandatory.iter().any(|e| is_element(k, e))
            });
        }
        _ => {}
    }
}

fn subsetted(object: &mut Map<String, Value>) {
    let meta = object.entry("meta").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Value::Array(tags) = tags {
            tags.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "subsetted"
            }));
        }
    }
}

/// `a=1&b=x%7Cy`: percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads `application/x-www-form-urlencoded` text (a query string, a `_search` body, an
/// `If-None-Exist` header) into pairs, in order.
pub fn decode_query(text: &str) -> Vec<(String, String)> {
    text.trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_round_trip() {
        let pairs = vec![
            ("subject".to_owned(), "Patient/1".to_owned()),
            ("code".to_owned(), "http://loinc.org|1234-5".to_owned()),
            ("name".to_owned(), "O'Brien & Söhne".to_owned()),
        ];
        assert_eq!(decode_query(&encode_query(&pairs)), pairs);
        assert_eq!(
            decode_query("a=1+2&b=%7C&c=%zz&d"),
            vec![
                ("a".into(), "1 2".into()),
                ("b".into(), "|".into()),
                ("c".into(), "%zz".into()),
                ("d".into(), "".into())
            ]
        );
        assert_eq!(decode_query("x=%4"), vec![("x".into(), "%4".into())]);
    }

    #[test]
    fn choice_elements_are_recognised() {
        assert!(is_element("valueQuantity", "value"));
        assert!(is_element("_birthDate", "birthDate"));
        assert!(!is_element("valueSet", "value"));
        assert!(!is_element("status", "value"));
    }
}
