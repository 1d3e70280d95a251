//! `hestia plugin test FILE.wasm --cases FILE.json`: runs a built component through the
//! real [`PluginHost`], as the only plugin of the host (no built-ins), against cases of
//! requests and expected decisions. The format is documented in `docs/plugins.md`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    AudienceRequest, Claims, Constraint, Decision, FhirRequest, Interaction, PluginError,
    PluginHost, PluginKind, PluginSettings, PluginStatus, SearchConstraint, TokenRequest,
    UserGrant, UserRights,
};

/// The base URL requests, claims and audience cases get unless a case says otherwise (the
/// same as the SDK's native test harness).
pub const BASE_URL: &str = "https://hestia.test/fhir/r4";

/// One case: a name, exactly one call, and what to expect of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub authorize: Option<AuthorizeCall>,
    pub grant: Option<GrantCall>,
    pub resolve: Option<ResolveCall>,
    pub accept: Option<AcceptCall>,
    pub validate: Option<ValidateCall>,
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeCall {
    pub request: RequestIn,
    /// The token's claims as in the JWT (`scope`, `client_id`, `patient`, `fhirUser`, any
    /// other); missing standard claims get the SDK harness's defaults.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// The account behind the token (none: a token without an account).
    pub user: Option<UserIn>,
}

/// The account behind a token or token request, and its rights as the host hands them to
/// plugins (`hestia:plugin@0.3.0` `user-rights`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    #[serde(default)]
    pub roles: Vec<String>,
    /// The account's fhirUser: the token's `fhirUser` claim, or the token request's
    /// `fhir_user`, unless those are given themselves. A `Patient/X` confines the grants
    /// written as text to X's compartment, as the host does for such an account.
    pub fhir_user: Option<String>,
    #[serde(default)]
    pub grants: Vec<GrantIn>,
}

/// One grant: its text (`Patient.rs?organization=Organization/a`), or the record with its
/// compartment given (`{"scope": "*.rs", "patient_compartment": "amy"}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum GrantIn {
    Text(String),
    Record {
        scope: String,
        patient_compartment: Option<String>,
    },
}

impl UserIn {
    fn rights(&self) -> UserRights {
        let own = self
            .fhir_user
            .as_deref()
            .and_then(|f| f.strip_prefix("Patient/"))
            .filter(|id| !id.is_empty());
        UserRights {
            roles: self.roles.clone(),
            grants: self
                .grants
                .iter()
                .map(|g| match g {
                    GrantIn::Text(scope) => UserGrant {
                        scope: scope.clone(),
                        patient_compartment: own.map(String::from),
                    },
                    GrantIn::Record {
                        scope,
                        patient_compartment,
                    } => UserGrant {
                        scope: scope.clone(),
                        patient_compartment: patient_compartment.clone(),
                    },
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestIn {
    /// `read`, `vread`, `update`, `patch`, `delete`, `create`, `history-instance`,
    /// `history-type`, `history-system`, `search-type`, `search-system`, `capabilities`,
    /// `batch`, `transaction`, `operation`.
    pub interaction: String,
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub operation: Option<String>,
    #[serde(default)]
    pub parameters: Vec<(String, String)>,
    pub body: Option<Value>,
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantCall {
    #[serde(default = "test_client")]
    pub client_id: String,
    #[serde(default = "authorization_code")]
    pub grant_type: String,
    /// Space-separated.
    #[serde(default)]
    pub requested: String,
    /// Space-separated.
    #[serde(default)]
    pub registered: String,
    pub subject: Option<String>,
    pub fhir_user: Option<String>,
    pub patient: Option<String>,
    pub audiences: Option<Vec<String>>,
    /// The account that asks (none: a request without an account, as client_credentials).
    pub user: Option<UserIn>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveCall {
    #[serde(default = "test_client")]
    pub client_id: String,
    #[serde(default)]
    pub requested: Vec<String>,
    #[serde(default)]
    pub known: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptCall {
    pub audiences: Vec<String>,
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateCall {
    /// Default: the resource's `resourceType`.
    pub resource_type: Option<String>,
    pub resource: Value,
}

fn test_client() -> String {
    "test-client".into()
}

fn authorization_code() -> String {
    "authorization_code".into()
}

/// What a case expects; every field given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub decision: Option<Expected>,
    /// A substring of a reason: the denial, a refused scope's reason, the audience error,
    /// or an issue's diagnostics.
    pub reason_contains: Option<String>,
    /// `authorize`: exactly these constraints, in order.
    pub constraints: Option<Vec<ConstraintIn>>,
    /// `grant`: exactly these scopes, in order.
    pub granted: Option<Vec<String>>,
    /// `resolve`: exactly these audiences, in order.
    pub audiences: Option<Vec<String>>,
    /// `validate`: each string is found in some issue's expression, code or diagnostics.
    pub issues: Option<Vec<String>>,
}

/// `allow`: allowed without constraints, everything granted, resolved, accepted, or no
/// error issue. `deny`: the opposite. `allow-within`: allowed with constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expected {
    Allow,
    AllowWithin,
    Deny,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::Allow => "allow",
            Expected::AllowWithin => "allow-within",
            Expected::Deny => "deny",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ConstraintIn {
    PatientCompartment(String),
    Search {
        resource_type: String,
        #[serde(default)]
        parameters: Vec<(String, String)>,
    },
}

impl From<ConstraintIn> for Constraint {
    fn from(c: ConstraintIn) -> Constraint {
        match c {
            ConstraintIn::PatientCompartment(id) => Constraint::PatientCompartment(id),
            ConstraintIn::Search {
                resource_type,
                parameters,
            } => Constraint::Search(SearchConstraint {
                resource_type,
                parameters,
            }),
        }
    }
}

/// What one call came to, in the terms of [`Expect`].
#[derive(Debug, Default)]
struct Observed {
    decision: Option<Expected>,
    reasons: Vec<String>,
    constraints: Vec<Constraint>,
    granted: Vec<String>,
    audiences: Vec<String>,
    issues: Vec<String>,
}

/// The result of one case: `None` when it passed, else what did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub name: String,
    pub failure: Option<String>,
}

/// The results of a cases file against one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestReport {
    pub plugin: String,
    pub kind: PluginKind,
    pub results: Vec<CaseResult>,
}

impl TestReport {
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_some()).count()
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            match &r.failure {
                None => writeln!(f, "ok    {}", r.name)?,
                Some(why) => writeln!(f, "FAIL  {}: {why}", r.name)?,
            }
        }
        let failed = self.failures();
        writeln!(
            f,
            "{} ({}): {} passed, {failed} failed",
            self.plugin,
            self.kind,
            self.results.len() - failed
        )
    }
}

/// Loads `wasm` (with `manifest`, or `NAME.toml` beside it when there is one) into a host of
/// its own, with the limits, WASI permissions and cache of `settings` (no built-ins, no
/// other plugin, no watcher), and runs every case of `cases`.
pub fn run(
    wasm: &Path,
    cases: &Path,
    manifest: Option<&Path>,
    settings: PluginSettings,
) -> Result<TestReport, PluginError> {
    let fail = |path: &Path, reason: String| PluginError::Check {
        path: path.to_path_buf(),
        reason,
    };
    let text =
        std::fs::read_to_string(cases).map_err(|e| fail(cases, format!("cannot read: {e}")))?;
    let cases: Vec<Case> =
        serde_json::from_str(&text).map_err(|e| fail(cases, format!("not a cases file: {e}")))?;
    let name = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| fail(wasm, "has no file name".into()))?
        .replace('_', "-");
    let manifest = match manifest {
        Some(m) => Some(m.to_path_buf()),
        None => Some(wasm.with_extension("toml")).filter(|m| m.is_file()),
    };
    let dir = TempDir::new().map_err(|e| fail(wasm, format!("temporary directory: {e}")))?;
    std::fs::copy(wasm, dir.0.join(format!("{name}.wasm")))
        .map_err(|e| fail(wasm, format!("cannot read: {e}")))?;
    if let Some(m) = &manifest {
        std::fs::copy(m, dir.0.join(format!("{name}.toml")))
            .map_err(|e| fail(m, format!("cannot read: {e}")))?;
    }
    let host = PluginHost::start(PluginSettings {
        builtins: Vec::new(),
        dir: Some(dir.0.clone()),
        watch: false,
        ..settings
    })?;
    let info = host
        .list()
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| fail(wasm, "was not loaded".into()))?;
    let kind = match (info.state, info.kind) {
        (PluginStatus::Active, Some(kind)) => kind,
        _ => {
            return Err(fail(
                wasm,
                format!(
                    "does not load: {}",
                    info.last_error.as_deref().unwrap_or("unknown error")
                ),
            ));
        }
    };
    let results = cases
        .into_iter()
        .map(|case| CaseResult {
            failure: run_case(&host, kind, &case).err(),
            name: case.name,
        })
        .collect();
    Ok(TestReport {
        plugin: name,
        kind,
        results,
    })
}

fn run_case(host: &PluginHost, kind: PluginKind, case: &Case) -> Result<(), String> {
    let calls = [
        (
            "authorize",
            PluginKind::ScopePolicy,
            case.authorize.is_some(),
        ),
        ("grant", PluginKind::ScopePolicy, case.grant.is_some()),
        ("resolve", PluginKind::AudienceRule, case.resolve.is_some()),
        ("accept", PluginKind::AudienceRule, case.accept.is_some()),
        (
            "validate",
            PluginKind::ResourceValidator,
            case.validate.is_some(),
        ),
    ];
    let mut given = calls.iter().filter(|(_, _, given)| *given);
    let (Some((call, world, _)), None) = (given.next(), given.next()) else {
        return Err("a case has exactly one of authorize, grant, resolve, accept, validate".into());
    };
    if kind != *world {
        return Err(format!(
            "{call} is a {world} call, but this plugin is a {kind}"
        ));
    }
    let observed = if let Some(call) = &case.authorize {
        observe_authorize(host, call)?
    } else if let Some(call) = &case.grant {
        observe_grant(host, call)
    } else if let Some(call) = &case.resolve {
        observe_resolve(host, call)
    } else if let Some(call) = &case.accept {
        observe_accept(host, call)
    } else if let Some(call) = &case.validate {
        observe_validate(host, call)?
    } else {
        unreachable!("exactly one call was checked above")
    };
    compare(&case.expect, &observed)
}

/// A scope-policy `authorize` call: the decision and its constraints or reason.
fn observe_authorize(host: &PluginHost, call: &AuthorizeCall) -> Result<Observed, String> {
    let request = fhir_request(&call.request)?;
    let mut given = call.claims.clone();
    if let Some(fhir_user) = call.user.as_ref().and_then(|u| u.fhir_user.clone()) {
        given.entry("fhirUser").or_insert(fhir_user.into());
    }
    let mut claims = claims(&given, &request.base_url);
    claims.user = call.user.as_ref().map(UserIn::rights);
    Ok(match host.authorize(&request, &claims) {
        Decision::Allow => Observed {
            decision: Some(Expected::Allow),
            ..Observed::default()
        },
        Decision::AllowWithin(constraints) => Observed {
            decision: Some(Expected::AllowWithin),
            constraints,
            ..Observed::default()
        },
        Decision::Deny(denial) => Observed {
            decision: Some(Expected::Deny),
            reasons: vec![denial.reason],
            ..Observed::default()
        },
    })
}

/// A scope-policy `grant` call: the granted scopes, and the refused ones with why.
fn observe_grant(host: &PluginHost, call: &GrantCall) -> Observed {
    let split = |s: &str| s.split_ascii_whitespace().map(String::from).collect();
    let grant = host.grant(&TokenRequest {
        client_id: call.client_id.clone(),
        grant_type: call.grant_type.clone(),
        requested: split(&call.requested),
        registered: split(&call.registered),
        subject: call.subject.clone(),
        fhir_user: call
            .fhir_user
            .clone()
            .or_else(|| call.user.as_ref().and_then(|u| u.fhir_user.clone())),
        patient: call.patient.clone(),
        audiences: call
            .audiences
            .clone()
            .unwrap_or_else(|| vec![BASE_URL.to_string()]),
        user: call.user.as_ref().map(UserIn::rights),
    });
    Observed {
        decision: Some(if grant.refused.is_empty() {
            Expected::Allow
        } else {
            Expected::Deny
        }),
        reasons: grant
            .refused
            .into_iter()
            .map(|(scope, why)| format!("{scope}: {why}"))
            .collect(),
        granted: grant.granted,
        ..Observed::default()
    }
}

/// An audience-rule `resolve` call: the audiences, or the reason of a denial.
fn observe_resolve(host: &PluginHost, call: &ResolveCall) -> Observed {
    match host.resolve_audience(&AudienceRequest {
        client_id: call.client_id.clone(),
        requested: call.requested.clone(),
        known: call.known.clone(),
    }) {
        Ok(audiences) => Observed {
            decision: Some(Expected::Allow),
            audiences,
            ..Observed::default()
        },
        Err(denial) => Observed {
            decision: Some(Expected::Deny),
            reasons: vec![denial.reason],
            ..Observed::default()
        },
    }
}

/// An audience-rule `accept` call.
fn observe_accept(host: &PluginHost, call: &AcceptCall) -> Observed {
    let base_url = call.base_url.as_deref().unwrap_or(BASE_URL);
    match host.accept_audience(&call.audiences, base_url) {
        Ok(()) => Observed {
            decision: Some(Expected::Allow),
            ..Observed::default()
        },
        Err(denial) => Observed {
            decision: Some(Expected::Deny),
            reasons: vec![denial.reason],
            ..Observed::default()
        },
    }
}

/// A resource-validator `validate` call: invalid when an issue is an error or fatal.
fn observe_validate(host: &PluginHost, call: &ValidateCall) -> Result<Observed, String> {
    let resource_type = call
        .resource_type
        .clone()
        .or_else(|| call.resource["resourceType"].as_str().map(String::from))
        .ok_or("validate needs a resource_type or a resource with a resourceType")?;
    let issues = host.validate(&resource_type, &call.resource.to_string());
    let invalid = issues.iter().any(|i| i.severity.is_failure());
    Ok(Observed {
        decision: Some(if invalid {
            Expected::Deny
        } else {
            Expected::Allow
        }),
        reasons: issues.iter().map(|i| i.diagnostics.clone()).collect(),
        issues: issues
            .iter()
            .map(|i| {
                format!(
                    "{} {} {}: {}",
                    i.severity.as_str(),
                    i.code,
                    i.expression.first().map_or("-", String::as_str),
                    i.diagnostics
                )
            })
            .collect(),
        ..Observed::default()
    })
}

fn compare(expect: &Expect, seen: &Observed) -> Result<(), String> {
    let mut wrong = Vec::new();
    if let (Some(want), Some(got)) = (expect.decision, seen.decision)
        && want != got
    {
        let why = if seen.reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.reasons.join("; "))
        };
        wrong.push(format!("expected {want}, got {got}{why}"));
    }
    if let Some(part) = &expect.reason_contains
        && !seen.reasons.iter().any(|r| r.contains(part.as_str()))
    {
        wrong.push(format!(
            "no reason contains {part:?} (reasons: {:?})",
            seen.reasons
        ));
    }
    if let Some(want) = &expect.constraints {
        let want: Vec<Constraint> = want.iter().cloned().map(Constraint::from).collect();
        if want != seen.constraints {
            wrong.push(format!(
                "expected constraints {want:?}, got {:?}",
                seen.constraints
            ));
        }
    }
    if let Some(want) = &expect.granted
        && *want != seen.granted
    {
        wrong.push(format!("expected granted {want:?}, got {:?}", seen.granted));
    }
    if let Some(want) = &expect.audiences
        && *want != seen.audiences
    {
        wrong.push(format!(
            "expected audiences {want:?}, got {:?}",
            seen.audiences
        ));
    }
    for part in expect.issues.iter().flatten() {
        if !seen.issues.iter().any(|i| i.contains(part.as_str())) {
            wrong.push(format!(
                "no issue mentions {part:?} (issues: {:?})",
                seen.issues
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

fn interaction(name: &str) -> Result<Interaction, String> {
    Ok(match name {
        "read" => Interaction::Read,
        "vread" => Interaction::Vread,
        "update" => Interaction::Update,
        "patch" => Interaction::Patch,
        "delete" => Interaction::Delete,
        "create" => Interaction::Create,
        "history-instance" => Interaction::HistoryInstance,
        "history-type" => Interaction::HistoryType,
        "history-system" => Interaction::HistorySystem,
        "search-type" => Interaction::SearchType,
        "search-system" => Interaction::SearchSystem,
        "capabilities" => Interaction::Capabilities,
        "batch" => Interaction::Batch,
        "transaction" => Interaction::Transaction,
        "operation" => Interaction::Operation,
        other => return Err(format!("unknown interaction {other:?}")),
    })
}

fn fhir_request(r: &RequestIn) -> Result<FhirRequest, String> {
    Ok(FhirRequest {
        interaction: interaction(&r.interaction)?,
        resource_type: r.resource_type.clone(),
        id: r.id.clone(),
        operation: r.operation.clone(),
        parameters: r.parameters.clone(),
        body_json: r.body.as_ref().map(Value::to_string),
        base_url: r.base_url.clone().unwrap_or_else(|| BASE_URL.to_string()),
    })
}

/// Claims from a token's JSON, with the SDK harness's defaults for missing standard ones.
fn claims(given: &Map<String, Value>, base_url: &str) -> Claims {
    let mut raw = Map::new();
    raw.insert("iss".into(), "https://hestia.test".into());
    raw.insert("sub".into(), "test-user".into());
    raw.insert("client_id".into(), "test-client".into());
    raw.insert("aud".into(), vec![base_url.to_string()].into());
    raw.insert("scope".into(), "".into());
    raw.insert("exp".into(), 4_102_444_800u64.into());
    raw.extend(given.clone());
    let text = |k: &str| raw.get(k).and_then(Value::as_str).map(String::from);
    let audiences = match raw.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    Claims {
        issuer: text("iss").unwrap_or_default(),
        subject: text("sub").unwrap_or_default(),
        client_id: text("client_id").unwrap_or_default(),
        audiences,
        scopes: text("scope")
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(String::from)
            .collect(),
        fhir_user: text("fhirUser"),
        patient: text("patient"),
        expires_at: raw.get("exp").and_then(Value::as_u64).unwrap_or(0),
        raw_json: Value::Object(raw.clone()).to_string(),
        user: None,
    }
}

/// A private temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hestia-plugin-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
