//! SMART App Launch scopes, v1 (`patient/*.read`, `user/Observation.write`, `system/*.*`)
//! and v2 (`patient/Observation.rs`, `user/*.cruds`, `patient/Observation.rs?category=laboratory`),
//! plus the non-resource scopes `openid`, `profile`, `fhirUser`, `launch`,
//! `launch/patient` (any `launch/<context>`), `offline_access` and `online_access`.
//!
//! ```
//! use hestia_sdk::smart::{Context, Permission, Scope};
//!
//! let scope: Scope = "patient/Observation.rs?category=laboratory".parse().unwrap();
//! let resource = scope.as_resource().unwrap();
//! assert_eq!(resource.context(), Context::Patient);
//! assert!(scope.permits("Observation", Permission::Search));
//! assert!(!scope.permits("Observation", Permission::Update));
//! assert_eq!(resource.query(), [("category".to_string(), "laboratory".to_string())]);
//!
//! // v1 `read` is v2 `rs`, `write` is `cud`, `*` is `cruds`.
//! let v1: Scope = "patient/*.read".parse().unwrap();
//! assert!(v1.covers(&"patient/Observation.rs".parse().unwrap()));
//! ```

use std::fmt;
use std::str::FromStr;

use crate::{Grant, TokenRequest};

/// Whose data a resource scope reaches: the launch patient's, the user's, or anything
/// (backend services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Context {
    Patient,
    User,
    System,
}

impl Context {
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One SMART v2 permission letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Permission {
    /// In the order SMART v2 requires them in a scope: `c`, `r`, `u`, `d`, `s`.
    pub const ALL: [Permission; 5] = [
        Permission::Create,
        Permission::Read,
        Permission::Update,
        Permission::Delete,
        Permission::Search,
    ];

    pub fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }

    /// The word for messages: "no granted scope permits search of Observation".
    pub fn verb(self) -> &'static str {
        match self {
            Permission::Create => "create",
            Permission::Read => "read",
            Permission::Update => "update",
            Permission::Delete => "delete",
            Permission::Search => "search",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of permissions, written like SMART v2 (`cruds`, `rs`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);
    pub const ALL: Permissions = Permissions(0b1_1111);
    /// SMART v1 `read`: read and search.
    pub const V1_READ: Permissions = Permissions(0b1_0010);
    /// SMART v1 `write`: create, update and delete.
    pub const V1_WRITE: Permissions = Permissions(0b0_1101);

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    #[must_use]
    pub fn with(self, permission: Permission) -> Permissions {
        Permissions(self.0 | permission.bit())
    }

    /// The permissions in both.
    #[must_use]
    pub fn intersection(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    /// Every permission of `other` is also in `self`.
    pub fn covers(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().fold(Permissions::NONE, Permissions::with)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.iter().try_for_each(|p| write!(f, "{}", p.letter()))
    }
}

/// Which SMART version's syntax a resource scope was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syntax {
    /// `.read`, `.write`, `.*`
    V1,
    /// `.cruds` letters, optionally with `?query`
    V2,
}

/// A resource scope without its context: `Type.permissions[?query]`, such as
/// `Observation.rs?category=laboratory`, `*.cruds` or `Patient.read`. It is what an
/// account's access policy grants ([`crate::UserGrant::scope`]); a [`ResourceScope`] is one
/// under a context.
///
/// ```
/// use hestia_sdk::smart::{Permission, ResourceAccess};
///
/// let grant: ResourceAccess = "Patient.rs?organization=Organization/a".parse().unwrap();
/// assert!(grant.permits("Patient", Permission::Search));
/// let asked: ResourceAccess = "*.read".parse().unwrap();
/// let both = grant.intersect(&asked).unwrap();
/// assert_eq!(both.to_string(), "Patient.rs?organization=Organization/a");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceAccess {
    /// `None` for `*`.
    resource_type: Option<String>,
    permissions: Permissions,
    syntax: Syntax,
    query: Vec<(String, String)>,
}

impl ResourceAccess {
    /// The resource type, or `None` for the wildcard `*`.
    pub fn resource_type(&self) -> Option<&str> {
        self.resource_type.as_deref()
    }

    pub fn is_wildcard(&self) -> bool {
        self.resource_type.is_none()
    }

    pub fn permissions(&self) -> Permissions {
        self.permissions
    }

    pub fn syntax(&self) -> Syntax {
        self.syntax
    }

    /// SMART v2 query parameters (`?category=laboratory`), percent-decoded, in order.
    /// A scope with a query only reaches the resources that match it.
    pub fn query(&self) -> &[(String, String)] {
        &self.query
    }

    /// Whether this names `resource_type` (or `*`) with `permission`. The query is not
    /// looked at here: a caller that allows through a scope with a query must restrict the
    /// request to it.
    pub fn permits(&self, resource_type: &str, permission: Permission) -> bool {
        self.reaches(resource_type) && self.permissions.contains(permission)
    }

    /// Whether this names `resource_type`, directly or by `*`.
    pub fn reaches(&self, resource_type: &str) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
    }

    /// Whether everything `other` allows is allowed by `self`: the same type or `*`, at
    /// least the same permissions, and no query condition that `other` does not also have.
    pub fn covers(&self, other: &ResourceAccess) -> bool {
        let same_type = match (&self.resource_type, &other.resource_type) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        };
        same_type
            && self.permissions.covers(other.permissions)
            && self.query.iter().all(|pair| other.query.contains(pair))
    }

    /// What both allow, or `None` when that is nothing: the type when one is `*` or both
    /// name it (so `*` and `Patient` give `Patient`), the permissions both have (v1
    /// `read`, `write`, `*` as their v2 letters), and the query conditions of both, ANDed
    /// (a parameter in both with different values is kept twice: a resource must match
    /// both). It is written in `self`'s syntax where v1 can say it (`read`, `write`, `*`,
    /// no query), else in v2.
    pub fn intersect(&self, other: &ResourceAccess) -> Option<ResourceAccess> {
        let resource_type = match (&self.resource_type, &other.resource_type) {
            (None, t) | (t, None) => t.clone(),
            (Some(a), Some(b)) if a == b => Some(a.clone()),
            _ => return None,
        };
        let permissions = self.permissions.intersection(other.permissions);
        if permissions.is_empty() {
            return None;
        }
        let mut query = self.query.clone();
        for pair in &other.query {
            if !query.contains(pair) {
                query.push(pair.clone());
            }
        }
        let v1 = [
            Permissions::ALL,
            Permissions::V1_READ,
            Permissions::V1_WRITE,
        ];
        let syntax = if self.syntax == Syntax::V1 && query.is_empty() && v1.contains(&permissions) {
            Syntax::V1
        } else {
            Syntax::V2
        };
        Some(ResourceAccess {
            resource_type,
            permissions,
            syntax,
            query,
        })
    }
}

impl fmt::Display for ResourceAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.resource_type.as_deref().unwrap_or("*"))?;
        match self.syntax {
            Syntax::V1 if self.permissions == Permissions::ALL => f.write_str("*")?,
            Syntax::V1 if self.permissions == Permissions::V1_READ => f.write_str("read")?,
            Syntax::V1 if self.permissions == Permissions::V1_WRITE => f.write_str("write")?,
            _ => write!(f, "{}", self.permissions)?,
        }
        for (i, (name, value)) in self.query.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{}={}", encode(name), encode(value))?;
        }
        Ok(())
    }
}

impl FromStr for ResourceAccess {
    type Err = ScopeError;

    /// `Type.permissions[?query]`, the part of a resource scope after `context/`.
    fn from_str(s: &str) -> Result<ResourceAccess, ScopeError> {
        let (main, query) = match s.split_once('?') {
            Some((main, query)) => (main, Some(query)),
            None => (s, None),
        };
        let Some((resource_type, permissions)) = main.split_once('.') else {
            return Err(ScopeError::MissingPermissions);
        };
        let resource_type = match resource_type {
            "*" => None,
            t if is_resource_type_name(t) => Some(t.to_string()),
            t => return Err(ScopeError::BadResourceType(t.to_string())),
        };
        let (permissions, syntax) = parse_permissions(permissions)?;
        let query = match query {
            None => Vec::new(),
            Some(_) if syntax == Syntax::V1 => return Err(ScopeError::QueryNeedsV2),
            Some(q) => parse_query(q).ok_or_else(|| ScopeError::BadQuery(q.to_string()))?,
        };
        Ok(ResourceAccess {
            resource_type,
            permissions,
            syntax,
            query,
        })
    }
}

/// A scope of the form `context/Type.permissions[?query]`: a [`ResourceAccess`] in a
/// context.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    context: Context,
    access: ResourceAccess,
}

impl ResourceScope {
    pub fn new(context: Context, access: ResourceAccess) -> ResourceScope {
        ResourceScope { context, access }
    }

    pub fn context(&self) -> Context {
        self.context
    }

    /// The scope without its context: type, permissions and query.
    pub fn access(&self) -> &ResourceAccess {
        &self.access
    }

    /// The resource type, or `None` for the wildcard `*`.
    pub fn resource_type(&self) -> Option<&str> {
        self.access.resource_type()
    }

    pub fn is_wildcard(&self) -> bool {
        self.access.is_wildcard()
    }

    pub fn permissions(&self) -> Permissions {
        self.access.permissions
    }

    pub fn syntax(&self) -> Syntax {
        self.access.syntax
    }

    /// SMART v2 query parameters (`?category=laboratory`), percent-decoded, in order.
    /// A scope with a query only reaches the resources that match it.
    pub fn query(&self) -> &[(String, String)] {
        &self.access.query
    }

    /// Whether this scope names `resource_type` (or `*`) with `permission`. The query is
    /// not looked at here: a caller that allows through a scope with a query must restrict
    /// the request to it.
    pub fn permits(&self, resource_type: &str, permission: Permission) -> bool {
        self.access.permits(resource_type, permission)
    }

    /// Whether this scope names `resource_type`, directly or by `*`.
    pub fn reaches(&self, resource_type: &str) -> bool {
        self.access.reaches(resource_type)
    }

    /// Whether everything `other` allows is allowed by `self`: the same context, the same
    /// type or `*`, at least the same permissions, and no query condition that `other`
    /// does not also have.
    pub fn covers(&self, other: &ResourceScope) -> bool {
        self.context == other.context && self.access.covers(&other.access)
    }
}

impl FromStr for ResourceScope {
    type Err = ScopeError;

    /// `context/Type.permissions[?query]`; any other scope is [`ScopeError::NotResource`].
    fn from_str(s: &str) -> Result<ResourceScope, ScopeError> {
        match s.parse()? {
            Scope::Resource(r) => Ok(r),
            _ => Err(ScopeError::NotResource(s.to_string())),
        }
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.context, self.access)
    }
}

/// Any scope a SMART server understands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Resource(ResourceScope),
    OpenId,
    Profile,
    FhirUser,
    /// `launch`: an EHR launch (with a `launch` parameter).
    Launch,
    /// `launch/patient`, `launch/encounter`, …: ask for that launch context in a standalone
    /// launch. The string is the context's name.
    LaunchContext(String),
    OfflineAccess,
    OnlineAccess,
}

impl Scope {
    /// Parses one scope. Equivalent to `s.parse()`.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        s.parse()
    }

    /// Parses a space-separated list (as in a token's `scope` claim), keeping the ones that
    /// parse and returning the others with their errors.
    pub fn parse_list(s: &str) -> (Vec<Scope>, Vec<(String, ScopeError)>) {
        let mut scopes = Vec::new();
        let mut errors = Vec::new();
        for word in s.split_ascii_whitespace() {
            match word.parse() {
                Ok(scope) => scopes.push(scope),
                Err(e) => errors.push((word.to_string(), e)),
            }
        }
        (scopes, errors)
    }

    pub fn as_resource(&self) -> Option<&ResourceScope> {
        match self {
            Scope::Resource(r) => Some(r),
            _ => None,
        }
    }

    /// A resource scope that names `resource_type` (or `*`) with `permission`.
    pub fn permits(&self, resource_type: &str, permission: Permission) -> bool {
        self.as_resource()
            .is_some_and(|r| r.permits(resource_type, permission))
    }

    /// Like [`Scope::permits`], but only for a scope of the given context
    /// (`patient/`, `user/`, `system/`).
    pub fn permits_in(
        &self,
        context: Context,
        resource_type: &str,
        permission: Permission,
    ) -> bool {
        self.as_resource()
            .is_some_and(|r| r.context == context && r.permits(resource_type, permission))
    }

    /// Whether granting `self` already grants everything `other` asks for: for resource
    /// scopes see [`ResourceScope::covers`]; any other scope only covers itself.
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Resource(mine), Scope::Resource(theirs)) => mine.covers(theirs),
            _ => self == other,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Resource(r) => r.fmt(f),
            Scope::OpenId => f.write_str("openid"),
            Scope::Profile => f.write_str("profile"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::Launch => f.write_str("launch"),
            Scope::LaunchContext(name) => write!(f, "launch/{name}"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::OnlineAccess => f.write_str("online_access"),
        }
    }
}

/// Why a string is not a scope this module understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeError {
    Empty,
    /// Not a resource scope nor one of the known names.
    Unknown,
    /// The part before `/` is not `patient`, `user` or `system`.
    BadContext(String),
    /// Neither `*` nor a FHIR resource type name.
    BadResourceType(String),
    /// No `.permissions` after the resource type.
    MissingPermissions,
    /// Not `read`, `write`, `*`, nor SMART v2 letters from `cruds` in that order.
    BadPermissions(String),
    /// A `?query` on a v1 scope; queries are SMART v2 only.
    QueryNeedsV2,
    BadQuery(String),
    BadLaunchContext(String),
    /// A valid scope, but not a resource scope where one is needed.
    NotResource(String),
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Empty => f.write_str("empty scope"),
            ScopeError::Unknown => f.write_str(
                "not a SMART scope (context/Type.permissions) nor one of openid, profile, \
                 fhirUser, launch, launch/<context>, offline_access, online_access",
            ),
            ScopeError::BadContext(c) => {
                write!(
                    f,
                    "unknown context `{c}` (expected patient, user or system)"
                )
            }
            ScopeError::BadResourceType(t) => {
                write!(f, "`{t}` is neither `*` nor a FHIR resource type name")
            }
            ScopeError::MissingPermissions => {
                f.write_str("missing `.permissions` after the resource type")
            }
            ScopeError::BadPermissions(p) => write!(
                f,
                "bad permissions `{p}` (expected read, write, *, or letters of cruds in that order)"
            ),
            ScopeError::QueryNeedsV2 => {
                f.write_str("query parameters need SMART v2 permissions (such as .rs)")
            }
            ScopeError::BadQuery(q) => write!(f, "bad query `{q}` (expected name=value&…)"),
            ScopeError::BadLaunchContext(c) => write!(f, "bad launch context `{c}`"),
            ScopeError::NotResource(s) => {
                write!(
                    f,
                    "`{s}` is not a resource scope (context/Type.permissions)"
                )
            }
        }
    }
}

impl std::error::Error for ScopeError {}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Scope, ScopeError> {
        match s {
            "" => return Err(ScopeError::Empty),
            "openid" => return Ok(Scope::OpenId),
            "profile" => return Ok(Scope::Profile),
            "fhirUser" => return Ok(Scope::FhirUser),
            "launch" => return Ok(Scope::Launch),
            "offline_access" => return Ok(Scope::OfflineAccess),
            "online_access" => return Ok(Scope::OnlineAccess),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("launch/") {
            return if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase()) {
                Ok(Scope::LaunchContext(name.to_string()))
            } else {
                Err(ScopeError::BadLaunchContext(name.to_string()))
            };
        }
        let Some((context, rest)) = s.split_once('/') else {
            return Err(ScopeError::Unknown);
        };
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            other => return Err(ScopeError::BadContext(other.to_string())),
        };
        Ok(Scope::Resource(ResourceScope {
            context,
            access: rest.parse()?,
        }))
    }
}

/// `Patient`, `MedicationRequest`: an upper-case ASCII letter, then ASCII letters.
fn is_resource_type_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && bytes.all(|b| b.is_ascii_alphabetic())
        && s.len() <= 64
}

fn parse_permissions(s: &str) -> Result<(Permissions, Syntax), ScopeError> {
    match s {
        "read" => return Ok((Permissions::V1_READ, Syntax::V1)),
        "write" => return Ok((Permissions::V1_WRITE, Syntax::V1)),
        "*" => return Ok((Permissions::ALL, Syntax::V1)),
        _ => {}
    }
    let bad = || ScopeError::BadPermissions(s.to_string());
    let mut permissions = Permissions::NONE;
    let mut last: Option<Permission> = None;
    for c in s.chars() {
        let p = Permission::ALL
            .into_iter()
            .find(|p| p.letter() == c)
            .ok_or_else(bad)?;
        if last.is_some_and(|last| last >= p) {
            return Err(bad());
        }
        last = Some(p);
        permissions = permissions.with(p);
    }
    if permissions.is_empty() {
        return Err(bad());
    }
    Ok((permissions, Syntax::V2))
}

fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    q.split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let (name, value) = (decode(name)?, decode(value)?);
            (!name.is_empty() && !value.is_empty()).then_some((name, value))
        })
        .collect()
}

/// Percent-decoding; `None` for a malformed escape or bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '&' | '=' | '?' | ' ' | '#' => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// For a token of an account: a registered `user/` scope also covers the same access as
/// a `patient/` scope, which reaches only the part of it in one patient's compartment.
/// (What a user's rights narrow `user/` scopes into, coming back at a refresh.)
fn user_covers_patient(registered: &Scope, requested: &Scope) -> bool {
    match (registered, requested) {
        (Scope::Resource(r), Scope::Resource(s)) => {
            r.context() == Context::User
                && s.context() == Context::Patient
                && r.access().covers(s.access())
        }
        _ => false,
    }
}

/// The usual grant: each requested scope that parses (see [`Scope`]) and that some
/// registered scope of the client [covers](Scope::covers) is granted as written; every
/// other one is refused with the reason. A registered `patient/*.read` covers a requested
/// `patient/Observation.rs` (v1 `read` is v2 `rs`), but never a scope of another context
/// (`user/`, `system/`; for a token of an account, a registered `user/` scope
/// covers the same `patient/` one), nor more permissions than registered: a requested scope is
/// granted whole or refused, never narrowed. Duplicates are granted once.
pub fn grant_registered(request: &TokenRequest) -> Grant {
    let registered = request.registered_scopes();
    let for_user = request.user().is_some();
    let mut grant = Grant::new();
    let mut seen = std::collections::HashSet::new();
    for requested in request.requested() {
        if !seen.insert(requested.as_str()) {
            continue;
        }
        grant = match requested.parse::<Scope>() {
            Err(e) => grant.refuse(requested, format!("not a SMART scope: {e}")),
            Ok(scope)
                if registered
                    .iter()
                    .any(|r| r.covers(&scope) || (for_user && user_covers_patient(r, &scope))) =>
            {
                grant.grant(requested)
            }
            Ok(_) => grant.refuse(
                requested,
                format!(
                    "client {} is not registered for it (registered: {})",
                    request.client_id(),
                    if request.registered().is_empty() {
                        "none".to_string()
                    } else {
                        request.registered().join(" ")
                    }
                ),
            ),
        };
    }
    grant
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
