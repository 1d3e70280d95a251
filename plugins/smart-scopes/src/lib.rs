//! The default scope policy: SMART App Launch 2 scopes, v1 and v2, bounded by the rights of
//! the account behind the token.
//!
//! **Grant** ([`smart::grant_registered`]): a requested scope is granted when it parses
//! (a resource scope, or `openid`, `profile`, `fhirUser`, `launch`, `launch/<context>`,
//! `offline_access`, `online_access`) and some scope the client is registered for covers
//! it: same context, the same type or `*`, at least the same permissions (v1 `read` = v2
//! `rs`, `write` = `cud`, `*` = `cruds`), and no query condition the requested one lacks.
//! A registered `patient/*.read` therefore covers `patient/Observation.rs`. Each refusal
//! says why.
//!
//! **User rights.** When an account is behind the token ([`TokenRequest::user`],
//! [`Claims::user`]: none for client_credentials), `user/` and `patient/` scopes are
//! bounded by what the account may access, as SMART App Launch requires. Each such scope
//! is intersected with each grant of the account's access policies
//! ([`UserRights::narrow`](hestia_sdk::UserRights::narrow)): the grant must cover the type
//! (the same type, or `*` on either side, which gives the grant's type), the permissions
//! are those of both (v1 normalised), and the query conditions of both apply together. A
//! grant confined to a patient compartment gives a `patient/` scope for that patient (for
//! a `user/` request too), and nothing when another patient was launched. So:
//! - at **grant** time, the granted scopes are the narrowed ones, one per overlapping
//!   grant (those another one covers left out); a requested scope that yields none is
//!   refused, naming the account's roles ("the account's access (roles: patient) does not
//!   include Observation.c"). A `patient/` scope narrowed by a confined grant holds for
//!   the account's own patient: the host gives the token that `patient` when it has none.
//!   `system/` scopes are refused for a token with an account behind it: system access is
//!   for backend services (client_credentials), and user rights never reach it. Identity
//!   scopes (`openid`, `fhirUser`, `launch/*`, `offline_access`, …) are not bounded.
//! - at **authorize** time, the token's scopes are intersected again with the account's
//!   rights as they are now (the host reads them for each request), so a role or policy
//!   removed after the token was issued takes effect on the next request; `system/` scopes
//!   in such a token count for nothing. With no overlap the request is denied naming the
//!   account's access ("the account's current access (roles: none) does not permit search
//!   of Patient").
//!
//! **Authorize** maps the interaction to a SMART v2 permission: `read`, `vread`,
//! `history-instance` and type/instance operations need `r`; `search-type` and
//! `history-type` need `s`; `create` `c`; `update` and `patch` `u`; `delete` `d`.
//! `search-system` and `history-system` need `s` on `*`, a system-level operation `r`
//! on `*` (scopes with a query do not count there). `capabilities` is always allowed, and
//! so are `batch` and `transaction` at the bundle level: the host authorizes each entry
//! on its own.
//!
//! Each scope (after narrowing) that permits the request yields its restrictions:
//! - `patient/`: the patient's compartment (the confining grant's patient, else the
//!   launch patient); without one the scope is unusable (denied: "patient/ scope without
//!   a patient context");
//! - `user/`: none beyond the account's rights, which narrowing has already applied;
//! - `system/`: none;
//! - a v2 query (`?category=laboratory`): a search constraint on the requested type.
//!
//! The least restrictive scope wins: any unrestricted match allows the request outright
//! (a `system/*.rs` beats a `patient/*.rs`). Otherwise, when the matches differ only by one
//! query parameter of the same name (`?category=laboratory` and `?category=vital-signs`),
//! they merge into one search constraint with the values OR-ed (`category=laboratory,vital-signs`);
//! else the match with the fewest restrictions (compartments plus search parameters) applies. A decision never allows more than
//! one of the matching scopes does on its own, or their union.

use hestia_sdk::smart::{self, Context, Permission, ResourceScope, Scope};
use hestia_sdk::{
    Claims, Constraint, Decision, FhirRequest, Grant, Interaction, Narrowed, ScopePolicy,
    TokenRequest, UserRights,
};

pub struct SmartScopes;

impl ScopePolicy for SmartScopes {
    fn grant(request: &TokenRequest) -> Grant {
        let registered = smart::grant_registered(request);
        match request.user() {
            Some(user) => bound_by_user(registered, user, request.patient()),
            None => registered,
        }
    }

    fn authorize(request: &FhirRequest, claims: &Claims) -> Decision {
        match needed(request) {
            Need::Nothing => Decision::allow(),
            Need::NoResourceType => Decision::deny(format!(
                "a {} request must name a resource type",
                request.interaction()
            )),
            Need::Type(resource_type, permission) => {
                let fits = |s: &ResourceScope| s.permits(resource_type, permission);
                decide(claims, fits, Some(resource_type), permission)
            }
            Need::AnyType(permission) => {
                let fits = |s: &ResourceScope| {
                    s.is_wildcard() && s.query().is_empty() && s.permissions().contains(permission)
                };
                decide(claims, fits, None, permission)
            }
        }
    }
}

hestia_sdk::export_scope_policy!(SmartScopes);

/// The account's roles for messages: `patient, auditor`, or `none`.
fn roles(user: &UserRights) -> String {
    if user.roles().is_empty() {
        "none".to_string()
    } else {
        user.roles().join(", ")
    }
}

/// The registered grant with each `user/` and `patient/` scope replaced by its narrowing to
/// the account's rights, and `system/` scopes refused.
fn bound_by_user(registered: Grant, user: &UserRights, patient: Option<&str>) -> Grant {
    let mut grant = Grant {
        granted: Vec::new(),
        refused: registered.refused,
    };
    for scope in registered.granted {
        let resource = match scope.parse::<Scope>() {
            Ok(Scope::Resource(r)) => r,
            _ => {
                grant = grant.grant(scope);
                continue;
            }
        };
        if resource.context() == Context::System {
            grant = grant.refuse(
                scope,
                "system/ scopes are for backend services (client_credentials), not for a \
                 token of an account",
            );
            continue;
        }
        let narrowed = user.narrow(&resource, patient);
        if narrowed.is_empty() {
            grant = grant.refuse(scope, refusal(user, &resource, patient));
            continue;
        }
        for n in narrowed {
            let text = n.scope.to_string();
            if !grant.is_granted(&text) {
                grant = grant.grant(text);
            }
        }
    }
    grant
}

/// Why the account gets nothing of `requested`: another patient was launched than the one
/// its overlapping grants are confined to, or no grant overlaps.
fn refusal(user: &UserRights, requested: &ResourceScope, patient: Option<&str>) -> String {
    let own = user.grants().iter().find_map(|g| {
        let overlaps = g.scope().ok()?.intersect(requested.access()).is_some();
        g.patient_compartment().filter(|_| overlaps)
    });
    match (own, patient) {
        (Some(own), Some(launched)) => format!(
            "the account's access (roles: {}) is limited to the records of patient {own}, \
             not those of the launch patient {launched}",
            roles(user)
        ),
        _ => format!(
            "the account's access (roles: {}) does not include {}",
            roles(user),
            requested.access()
        ),
    }
}

/// The token's resource scopes as they count now: without an account, as granted (a
/// `patient/` scope for the launch patient); with one, narrowed to its current rights.
fn effective(claims: &Claims) -> Vec<Narrowed> {
    let scopes = claims.scopes().iter().filter_map(Scope::as_resource);
    match claims.user() {
        None => scopes
            .map(|s| Narrowed {
                scope: s.clone(),
                patient: claims
                    .patient()
                    .filter(|_| s.context() == Context::Patient)
                    .map(String::from),
            })
            .collect(),
        Some(user) => scopes
            .flat_map(|s| user.narrow(s, claims.patient()))
            .collect(),
    }
}

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

fn decide(
    claims: &Claims,
    fits: impl Fn(&ResourceScope) -> bool,
    resource_type: Option<&str>,
    permission: Permission,
) -> Decision {
    let what = resource_type.unwrap_or("all resource types");
    let mut candidates: Vec<Vec<Constraint>> = Vec::new();
    let mut without_patient: Option<ResourceScope> = None;
    for Narrowed { scope, patient } in effective(claims).into_iter().filter(|n| fits(&n.scope)) {
        let mut constraints = Vec::new();
        if scope.context() == Context::Patient {
            match patient {
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
    if !candidates.is_empty() {
        return Decision::allow_within(least_restrictive(candidates));
    }
    if let Some(scope) = without_patient {
        return Decision::deny(format!(
            "patient/ scope without a patient context: {scope} would permit {} of {what}, \
             but the token has no patient",
            permission.verb()
        ));
    }
    let granted = claims
        .scopes()
        .iter()
        .filter_map(Scope::as_resource)
        .any(|s| s.context() != Context::System && fits(s));
    match (claims.user(), granted) {
        (Some(user), true) => Decision::deny(format!(
            "the account's current access (roles: {}) does not permit {} of {what}",
            roles(user),
            permission.verb()
        )),
        _ => Decision::deny(not_granted(resource_type, permission)),
    }
}

fn not_granted(resource_type: Option<&str>, permission: Permission) -> String {
    match resource_type {
        Some(t) => {
            let l = permission.letter();
            format!(
                "no granted scope permits {} of {t} (such as patient/{t}.{l}, user/{t}.{l} or \
                 system/{t}.{l})",
                permission.verb()
            )
        }
        None => format!(
            "no granted scope permits {} of all resource types (needs a scope on *, such as \
             user/*.{})",
            permission.verb(),
            permission.letter()
        ),
    }
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
