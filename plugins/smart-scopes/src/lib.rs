//! The default scope policy: SMART App Launch 2 scopes, v1 and v2.
//!
//! **Grant** ([`smart::grant_registered`]): a requested scope is granted when it parses
//! (a resource scope, or `openid`, `profile`, `fhirUser`, `launch`, `launch/<context>`,
//! `offline_access`, `online_access`) and some scope the client is registered for covers
//! it: same context, the same type or `*`, at least the same permissions (v1 `read` = v2
//! `rs`, `write` = `cud`, `*` = `cruds`), and no query condition the requested one lacks.
//! A registered `patient/*.read` therefore covers `patient/Observation.rs`. Scopes are
//! granted whole or refused, never narrowed; each refusal says why.
//!
//! **Authorize** maps the interaction to a SMART v2 permission: `read`, `vread`,
//! `history-instance` and type/instance operations need `r`; `search-type` and
//! `history-type` need `s`; `create` `c`; `update` and `patch` `u`; `delete` `d`.
//! `search-system` and `history-system` need `s` on `*`, a system-level operation `r`
//! on `*` (scopes with a query do not count there). `capabilities` is always allowed, and
//! so are `batch` and `transaction` at the bundle level: the host authorizes each entry
//! on its own.
//!
//! Each granted scope that permits the request yields its restrictions:
//! - `patient/`: the launch patient's compartment; without a `patient` claim the scope is
//!   unusable (denied: "patient/ scope without a patient context");
//! - `user/`: none (restricting a user to the data their `fhirUser` may see is left to a
//!   deployment's own policy);
//! - `system/`: none;
//! - a v2 query (`?category=laboratory`): a search constraint on the requested type.
//!
//! The least restrictive scope wins: any unrestricted match allows the request outright
//! (a `system/*.rs` beats a `patient/*.rs`). Otherwise, when the matches differ only by one
//! query parameter of the same name (`?category=laboratory` and `?category=vital-signs`),
//! they merge into one search constraint with the values OR-ed (`category=laboratory,vital-signs`);
//! else the match with the fewest restrictions (compartments plus search parameters) applies. A decision never allows more than
//! one of the matching scopes does on its own, or their union.

use hestia_sdk::smart::{self, Context, Permission, ResourceScope};
use hestia_sdk::{
    Claims, Constraint, Decision, FhirRequest, Grant, Interaction, ScopePolicy, TokenRequest,
};

pub struct SmartScopes;

impl ScopePolicy for SmartScopes {
    fn grant(request: &TokenRequest) -> Grant {
        smart::grant_registered(request)
    }

    fn authorize(request: &FhirRequest, claims: &Claims) -> Decision {
        match needed(request) {
            Need::Nothing => Decision::allow(),
            Need::NoResourceType => Decision::deny(format!(
                "a {} request must name a resource type",
                request.interaction()
            )),
            Need::Type(resource_type, permission) => {
                let matching = claims
                    .scopes()
                    .iter()
                    .filter_map(|s| s.as_resource())
                    .filter(|s| s.permits(resource_type, permission));
                decide(matching, claims, Some(resource_type), permission)
            }
            Need::AnyType(permission) => {
                let matching = claims
                    .scopes()
                    .iter()
                    .filter_map(|s| s.as_resource())
                    .filter(|s| {
                        s.is_wildcard()
                            && s.query().is_empty()
                            && s.permissions().contains(permission)
                    });
                decide(matching, claims, None, permission)
            }
        }
    }
}

hestia_sdk::export_scope_policy!(SmartScopes);

/// What a request needs from the token's scopes.
enum Need<'a> {
    Nothing,
    /// An interaction that needs a type, without one.
    NoResourceType,
    Type(&'a str, Permission),
    /// A system-wide interaction: the permission on `*`.
    AnyType(Permission),
}

fn needed(request: &FhirRequest) -> Need<'_> {
    let on_type = |permission| match request.resource_type() {
        Some(t) => Need::Type(t, permission),
        None => Need::NoResourceType,
    };
    match request.interaction() {
        Interaction::Capabilities | Interaction::Batch | Interaction::Transaction => Need::Nothing,
        Interaction::Read | Interaction::Vread | Interaction::HistoryInstance => {
            on_type(Permission::Read)
        }
        Interaction::SearchType | Interaction::HistoryType => on_type(Permission::Search),
        Interaction::Create => on_type(Permission::Create),
        Interaction::Update | Interaction::Patch => on_type(Permission::Update),
        Interaction::Delete => on_type(Permission::Delete),
        Interaction::SearchSystem | Interaction::HistorySystem => Need::AnyType(Permission::Search),
        Interaction::Operation => match request.resource_type() {
            Some(t) => Need::Type(t, Permission::Read),
            None => Need::AnyType(Permission::Read),
        },
    }
}

fn decide<'a>(
    matching: impl Iterator<Item = &'a ResourceScope>,
    claims: &Claims,
    resource_type: Option<&str>,
    permission: Permission,
) -> Decision {
    let what = resource_type.unwrap_or("all resource types");
    let mut candidates: Vec<Vec<Constraint>> = Vec::new();
    let mut without_patient: Option<&ResourceScope> = None;
    for scope in matching {
        let mut constraints = Vec::new();
        if scope.context() == Context::Patient {
            match claims.patient() {
                Some(patient) => constraints.push(Constraint::patient_compartment(patient)),
                None => {
                    without_patient.get_or_insert(scope);
                    continue;
                }
            }
        }
        if let (Some(t), false) = (resource_type, scope.query().is_empty()) {
            constraints.push(Constraint::search(t, scope.query().iter().cloned()));
        }
        if constraints.is_empty() {
            return Decision::allow();
        }
        candidates.push(constraints);
    }
    if candidates.is_empty() {
        return match without_patient {
            Some(scope) => Decision::deny(format!(
                "patient/ scope without a patient context: {scope} would permit {} of {what}, \
                 but the token has no patient",
                permission.verb()
            )),
            None => Decision::deny(match resource_type {
                Some(t) => {
                    let l = permission.letter();
                    format!(
                        "no granted scope permits {} of {t} (such as patient/{t}.{l}, \
                         user/{t}.{l} or system/{t}.{l})",
                        permission.verb()
                    )
                }
                None => format!(
                    "no granted scope permits {} of all resource types (needs a scope on *, \
                     such as user/*.{})",
                    permission.verb(),
                    permission.letter()
                ),
            }),
        };
    }
    Decision::allow_within(least_restrictive(candidates))
}

/// Among restrictions that each allow the request, the least restrictive one, or the
/// OR-merge of queries that differ in one parameter's value.
fn least_restrictive(candidates: Vec<Vec<Constraint>>) -> Vec<Constraint> {
    if let Some(merged) = merge_single_parameter_queries(&candidates) {
        return merged;
    }
    candidates
        .into_iter()
        .min_by_key(|constraints| restriction(constraints))
        .unwrap_or_default()
}

/// How much a set of constraints narrows: one per compartment, one per search parameter.
fn restriction(constraints: &[Constraint]) -> usize {
    constraints
        .iter()
        .map(|c| match c {
            Constraint::PatientCompartment(_) => 1,
            Constraint::Search { parameters, .. } => parameters.len(),
        })
        .sum()
}

fn merge_single_parameter_queries(candidates: &[Vec<Constraint>]) -> Option<Vec<Constraint>> {
    let split = |c: &Vec<Constraint>| -> Option<(Vec<Constraint>, String, String, String)> {
        let mut base = Vec::new();
        let mut search = None;
        for constraint in c {
            match constraint {
                Constraint::Search {
                    resource_type,
                    parameters,
                } if search.is_none() && parameters.len() == 1 => {
                    let (name, value) = &parameters[0];
                    search = Some((resource_type.clone(), name.clone(), value.clone()));
                }
                Constraint::Search { .. } => return None,
                other => base.push(other.clone()),
            }
        }
        let (t, n, v) = search?;
        Some((base, t, n, v))
    };
    if candidates.len() < 2 {
        return None;
    }
    let parts: Vec<_> = candidates.iter().map(split).collect::<Option<_>>()?;
    let (base, resource_type, name, _) = &parts[0];
    if !parts
        .iter()
        .all(|(b, t, n, _)| b == base && t == resource_type && n == name)
    {
        return None;
    }
    let mut values: Vec<&str> = Vec::new();
    for (_, _, _, v) in &parts {
        if !values.contains(&v.as_str()) {
            values.push(v);
        }
    }
    let mut merged = base.clone();
    merged.push(Constraint::search(
        resource_type,
        [(name.clone(), values.join(","))],
    ));
    Some(merged)
}

#[cfg(test)]
mod tests;
