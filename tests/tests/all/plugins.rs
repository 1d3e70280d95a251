//! The plugin host against real guest components (built from `tests/guests/` by
//! `tests/build.rs`): chaining, faults, limits, configuration, pins, WASI, hot reload.

use std::borrow::Cow;
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hestia::fhir::outcome::{Issue, Severity};
use hestia::plugins::cli::{self, PluginTable};
use hestia::plugins::{
    AudienceRequest, BuiltinPlugin, Claims, Constraint, Decision, Denial, FhirRequest, Grant,
    Interaction, PluginHost, PluginInfo, PluginKind, PluginSettings, PluginSource, PluginStatus,
    Provision, SearchConstraint, TokenRequest, UserGrant, UserRights, WasiAllowances, content_hash,
};

pub(crate) mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// Settings for a host that loads only `dir`: no built-ins, no watcher. The deadline is
/// generous: it is wall-clock time, and a loaded test machine must never time out a call
/// that is not meant to; the tests of the deadline set their own.
fn settings(dir: &Path) -> PluginSettings {
    PluginSettings {
        builtins: Vec::new(),
        dir: Some(dir.to_path_buf()),
        deadline: Duration::from_secs(2),
        ..PluginSettings::default()
    }
}

fn start(dir: &Path) -> Arc<PluginHost> {
    PluginHost::start(settings(dir)).expect("plugin host starts")
}

/// Puts `bytes` at `dir/file` atomically, as an operator's deployment should.
fn put(dir: &Path, file: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn install(dir: &Path, name: &str, guest: &str) {
    put(dir, &format!("{name}.wasm"), &std::fs::read(guest).unwrap());
}

fn manifest(dir: &Path, name: &str, text: &str) {
    put(dir, &format!("{name}.toml"), text.as_bytes());
}

fn read(resource_type: &str) -> FhirRequest {
    FhirRequest {
        interaction: Interaction::SearchType,
        resource_type: Some(resource_type.to_string()),
        id: None,
        operation: None,
        parameters: vec![("category".to_string(), "laboratory".to_string())],
        body_json: None,
        base_url: "https://ehr.example/fhir/r4".to_string(),
    }
}

fn claims() -> Claims {
    Claims {
        issuer: "https://ehr.example".to_string(),
        subject: "alice".to_string(),
        client_id: "postman".to_string(),
        audiences: vec!["https://ehr.example/fhir/r4".to_string()],
        scopes: vec!["patient/Observation.rs".to_string()],
        fhir_user: Some("Patient/p1".to_string()),
        patient: Some("p1".to_string()),
        expires_at: 4_000_000_000,
        raw_json: "{}".to_string(),
        user: None,
    }
}

fn token_request(requested: &[&str], registered: &[&str]) -> TokenRequest {
    TokenRequest {
        client_id: "postman".to_string(),
        grant_type: "authorization_code".to_string(),
        requested: requested.iter().map(|s| s.to_string()).collect(),
        registered: registered.iter().map(|s| s.to_string()).collect(),
        subject: Some("alice".to_string()),
        ..TokenRequest::default()
    }
}

fn authorize(host: &PluginHost) -> Decision {
    host.authorize(&read("Observation"), &claims())
}

fn denial(host: &PluginHost) -> Denial {
    match authorize(host) {
        Decision::Deny(denial) => denial,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn info(host: &PluginHost, name: &str) -> PluginInfo {
    host.list()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

/// Polls `done` until it holds; panics after `limit`.
fn within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn allow_all_allows_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "allow-all", guests::ALLOW_ALL);
    let host = start(dir.path());
    assert_eq!(authorize(&host), Decision::Allow);
    let grant = host.grant(&token_request(&["patient/*.read", "openid"], &[]));
    assert_eq!(grant.granted, vec!["patient/*.read", "openid"]);
    assert!(grant.refused.is_empty());
    let p = info(&host, "allow-all");
    assert_eq!(p.kind, Some(PluginKind::ScopePolicy));
    assert_eq!(p.state, PluginStatus::Active);
    assert_eq!(
        p.source,
        PluginSource::File(dir.path().join("allow-all.wasm"))
    );
    let bytes = std::fs::read(guests::ALLOW_ALL).unwrap();
    assert_eq!(p.version, content_hash(&bytes)[..12]);
}

#[test]
fn deny_all_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "deny-all", guests::DENY_ALL);
    let host = start(dir.path());
    let d = denial(&host);
    assert_eq!(
        d,
        Denial {
            plugin: "deny-all".into(),
            reason: "deny-all denies everything".into()
        }
    );
    assert_eq!(
        d.to_string(),
        "plugin deny-all denied: deny-all denies everything"
    );
    let grant = host.grant(&token_request(&["openid"], &[]));
    assert_eq!(grant.granted, Vec::<String>::new());
    assert_eq!(
        grant.refused,
        vec![(
            "openid".into(),
            "plugin deny-all: deny-all refuses everything".into()
        )]
    );
}

#[test]
fn deny_wins_and_constraints_accumulate_in_order() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "a-constrain", guests::CONSTRAIN);
    install(dir.path(), "b-constrain", guests::CONSTRAIN);
    install(dir.path(), "c-allow", guests::ALLOW_ALL);
    let host = start(dir.path());
    let search = Constraint::Search(SearchConstraint {
        resource_type: "Observation".into(),
        parameters: vec![("category".into(), "laboratory".into())],
    });
    let compartment = Constraint::PatientCompartment("p1".into());
    assert_eq!(
        authorize(&host),
        Decision::AllowWithin(vec![
            compartment.clone(),
            search.clone(),
            compartment,
            search
        ])
    );

    // A denying plugin ordered first stops the chain and is the one named.
    install(dir.path(), "z-deny", guests::DENY_ALL);
    manifest(dir.path(), "z-deny", "order = -1");
    host.reload();
    let names: Vec<String> = host.list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["z-deny", "a-constrain", "b-constrain", "c-allow"]);
    assert_eq!(denial(&host).plugin, "z-deny");

    // The constraint plugin denies on its own terms too: no patient context.
    std::fs::remove_file(dir.path().join("z-deny.wasm")).unwrap();
    std::fs::remove_file(dir.path().join("z-deny.toml")).unwrap();
    host.reload();
    let no_patient = Claims {
        patient: None,
        ..claims()
    };
    assert_eq!(
        host.authorize(&read("Observation"), &no_patient),
        Decision::Deny(Denial {
            plugin: "a-constrain".into(),
            reason: "no patient context for alice".into()
        })
    );
}

#[test]
fn a_scope_is_granted_only_if_every_policy_grants_it() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "allow-all", guests::ALLOW_ALL);
    install(dir.path(), "registered-only", guests::CONSTRAIN);
    let host = start(dir.path());
    let grant = host.grant(&token_request(
        &["openid", "patient/*.read", "system/*.*"],
        &["openid", "patient/*.read"],
    ));
    assert_eq!(
        grant,
        Grant {
            granted: vec!["openid".into(), "patient/*.read".into()],
            refused: vec![(
                "system/*.*".into(),
                "plugin registered-only: not registered".into()
            )],
        }
    );
}

#[test]
fn config_is_passed_as_json() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "echo", guests::CONFIG_ECHO);
    let host = start(dir.path());
    assert_eq!(denial(&host).reason, "{}");

    manifest(
        dir.path(),
        "echo",
        "[config]\nrealm = \"lab\"\nlimit = 3\n[config.nested]\nok = true\n",
    );
    host.reload();
    let config: serde_json::Value = serde_json::from_str(&denial(&host).reason).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"realm": "lab", "limit": 3, "nested": {"ok": true}})
    );
}

/// One plugin per fault, beside a validator: each call fails closed naming the plugin and
/// the cause, again and again, while the rest of the host keeps answering.
#[test]
fn faults_fail_closed_with_a_named_cause() {
    let cases = [
        ("loop", guests::INFINITE_LOOP, "timed out after 20 ms"),
        ("bomb", guests::MEMORY_BOMB, "exceeded memory limit 16 MiB"),
        (
            "panic",
            guests::PANIC,
            "trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
    ];
    for (name, guest, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), name, guest);
        install(dir.path(), "validator", guests::VALIDATOR);
        // The default deadline (20 ms) for the plugin meant to run into it.
        if name == "loop" {
            manifest(dir.path(), name, "[limits]\ndeadline_ms = 20");
        }
        let host = start(dir.path());
        for _ in 0..3 {
            assert_eq!(
                denial(&host),
                Denial {
                    plugin: name.into(),
                    reason: reason.into()
                },
                "{name}"
            );
            let grant = host.grant(&token_request(&["openid"], &[]));
            assert_eq!(
                grant.refused,
                vec![("openid".into(), format!("plugin {name}: {reason}"))]
            );
            assert_eq!(
                host.validate("Patient", r#"{"resourceType":"Patient"}"#),
                Vec::<Issue>::new()
            );
        }
        assert_eq!(info(&host, name).state, PluginStatus::Active);
    }
}

#[test]
fn limits_come_from_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "loop", guests::INFINITE_LOOP);
    manifest(dir.path(), "loop", "[limits]\ndeadline_ms = 5");
    install(dir.path(), "bomb", guests::MEMORY_BOMB);
    manifest(dir.path(), "bomb", "order = -1\n[limits]\nmemory_mib = 4");
    let host = start(dir.path());
    assert_eq!(denial(&host).reason, "exceeded memory limit 4 MiB");
    std::fs::remove_file(dir.path().join("bomb.wasm")).unwrap();
    host.reload();
    assert_eq!(denial(&host).reason, "timed out after 5 ms");
    assert_eq!(info(&host, "loop").deadline, Duration::from_millis(5));
}

#[test]
fn on_error_allow_skips_the_failing_plugin() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "panic", guests::PANIC);
    manifest(dir.path(), "panic", "on_error = \"allow\"");
    install(dir.path(), "constrain", guests::CONSTRAIN);
    let host = start(dir.path());
    assert!(matches!(authorize(&host), Decision::AllowWithin(c) if c.len() == 2));
    let grant = host.grant(&token_request(&["openid"], &["openid"]));
    assert_eq!(grant.granted, vec!["openid"]);
}

#[test]
fn garbage_bytes_and_core_modules_fail_closed() {
    let cases: [(&str, &[u8], &str); 2] = [
        (
            "garbage",
            b"this is not wasm at all",
            "not loaded: not a valid WebAssembly component",
        ),
        (
            "core",
            b"\0asm\x01\0\0\0",
            "not loaded: this is a core WebAssembly module, not a component",
        ),
    ];
    for (name, bytes, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), &format!("{name}.wasm"), bytes);
        manifest(dir.path(), name, "kind = \"scope-policy\"");
        install(dir.path(), "validator", guests::VALIDATOR);
        let host = start(dir.path());
        let d = denial(&host);
        assert_eq!(d.plugin, name);
        assert!(d.reason.starts_with(reason), "{}", d.reason);
        let p = info(&host, name);
        assert_eq!(p.state, PluginStatus::Failed);
        assert_eq!(p.kind, Some(PluginKind::ScopePolicy));
        assert!(
            p.last_error
                .unwrap()
                .starts_with(&reason["not loaded: ".len()..])
        );
        // Only the scope-policy chain is affected.
        assert_eq!(
            host.validate("Patient", r#"{"resourceType":"Patient"}"#),
            Vec::<Issue>::new()
        );
    }
}

#[test]
fn a_broken_file_of_unknown_kind_fails_closed_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "junk.wasm", b"junk");
    let host = start(dir.path());
    assert_eq!(denial(&host).plugin, "junk");
    let denied = host.accept_audience(
        &["https://ehr.example/fhir/r4".into()],
        "https://ehr.example/fhir/r4",
    );
    assert_eq!(denied.unwrap_err().plugin, "junk");
    let issues = host.validate("Patient", "{}");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].severity, Severity::Error);
    assert!(
        issues[0]
            .diagnostics
            .starts_with("plugin junk denied: not loaded: "),
        "{}",
        issues[0].diagnostics
    );
    assert_eq!(info(&host, "junk").kind, None);
}

#[test]
fn wrong_world_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "policy", guests::VALIDATOR);
    manifest(dir.path(), "policy", "kind = \"scope-policy\"");
    let host = start(dir.path());
    let expected = "the manifest says kind = \"scope-policy\", but the component exports the resource-validator world";
    assert_eq!(
        denial(&host),
        Denial {
            plugin: "policy".into(),
            reason: format!("not loaded: {expected}")
        }
    );
    let p = info(&host, "policy");
    assert_eq!(
        (p.state, p.last_error.as_deref()),
        (PluginStatus::Failed, Some(expected))
    );
}

#[test]
fn sha256_pin_refuses_a_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let allow = std::fs::read(guests::ALLOW_ALL).unwrap();
    install(dir.path(), "pinned", guests::ALLOW_ALL);
    manifest(
        dir.path(),
        "pinned",
        &format!("sha256 = \"{}\"", content_hash(&allow)),
    );
    let host = start(dir.path());
    assert_eq!(authorize(&host), Decision::Allow);

    install(dir.path(), "pinned", guests::DENY_ALL);
    host.reload();
    assert_eq!(
        authorize(&host),
        Decision::Allow,
        "the pinned version keeps serving"
    );
    let p = info(&host, "pinned");
    assert_eq!(p.state, PluginStatus::Stale);
    assert_eq!(p.version, content_hash(&allow)[..12]);
    let deny = std::fs::read(guests::DENY_ALL).unwrap();
    assert_eq!(
        p.last_error.unwrap(),
        format!(
            "sha256 of pinned.wasm is {}, but the manifest pins {}",
            content_hash(&deny),
            content_hash(&allow)
        )
    );

    // A fresh host refuses it from the start.
    let fresh = start(dir.path());
    assert_eq!(denial(&fresh).plugin, "pinned");
    assert_eq!(info(&fresh, "pinned").state, PluginStatus::Failed);
}

#[test]
fn no_wasi_unless_the_manifest_asks_and_the_settings_allow() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "clock", guests::WASI_CLOCK);
    let host = start(dir.path());
    let d = denial(&host);
    assert!(
        d.reason.starts_with("trapped: `wasi:clocks/wall-clock@"),
        "{}",
        d.reason
    );
    assert!(
        d.reason.ends_with("#now` is not available to plugins"),
        "{}",
        d.reason
    );

    // Asking is not enough: the host's settings must allow it. Until then the version
    // without the manifest keeps serving, and a fresh host refuses the plugin.
    manifest(dir.path(), "clock", "[wasi]\nclock = true");
    host.reload();
    let refusal = "the manifest asks for WASI clock, which the host's settings do not allow";
    let p = info(&host, "clock");
    assert_eq!(
        (p.state, p.last_error.as_deref()),
        (PluginStatus::Stale, Some(refusal))
    );
    assert_eq!(
        denial(&start(dir.path())).reason,
        format!("not loaded: {refusal}")
    );

    let allowed = PluginSettings {
        allow_wasi: WasiAllowances {
            clock: true,
            random: false,
        },
        ..settings(dir.path())
    };
    let host = PluginHost::start(allowed).unwrap();
    assert_eq!(authorize(&host), Decision::Allow);
    let expired = Claims {
        expires_at: 1,
        ..claims()
    };
    assert_eq!(
        host.authorize(&read("Patient"), &expired),
        Decision::Deny(Denial {
            plugin: "clock".into(),
            reason: "token expired".into()
        })
    );
}

/// A directory with `plugins/clock.wasm` (a guest reading the clock, its manifest asking
/// for it), `cases.json` (a live token allowed, an expired one denied) and `hestia.toml`
/// with `[plugins.wasi] clock = allowed`; and the host `serve` would start from it
/// (in-process, through `PluginSettings::configured`, as the commands do).
fn clock_work(allowed: bool) -> (tempfile::TempDir, Arc<PluginHost>) {
    let work = tempfile::tempdir().unwrap();
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    install(&plugins, "clock", guests::WASI_CLOCK);
    manifest(&plugins, "clock", "[wasi]\nclock = true");
    std::fs::write(
        work.path().join("cases.json"),
        r#"[
          {"name": "a live token", "authorize": {"request": {"interaction": "read", "resource_type": "Patient", "id": "p1"}, "claims": {"exp": 4000000000}}, "expect": {"decision": "allow"}},
          {"name": "an expired token", "authorize": {"request": {"interaction": "read", "resource_type": "Patient", "id": "p1"}, "claims": {"exp": 1}}, "expect": {"decision": "deny", "reason_contains": "token expired"}}
        ]"#,
    )
    .unwrap();
    let toml = format!(
        "plugins_dir = \"plugins\"\n[plugins]\nwatch = false\n[plugins.wasi]\nclock = {allowed}\n"
    );
    std::fs::write(work.path().join("hestia.toml"), &toml).unwrap();
    let flags = hestia::config::ServeFlags {
        plugins_dir: Some(plugins),
        store: hestia::config::StoreFlags {
            data_dir: Some(work.path().join("hestia-data")),
            ..Default::default()
        },
        ..Default::default()
    };
    let settings = crate::support::resolve(flags, crate::support::hestia_toml(&toml));
    assert_eq!(settings.plugins.allow_wasi.clock, allowed);
    let host = PluginHost::start(PluginSettings {
        builtins: Vec::new(),
        deadline: Duration::from_secs(2),
        ..PluginSettings::configured(&settings).unwrap()
    })
    .unwrap();
    (work, host)
}

const CLOCK_REFUSED: &str =
    "the manifest asks for WASI clock, which the host's settings do not allow";

/// `hestia plugin list` and `plugin test` in `work` (of [`clock_work`]) read the same
/// `./hestia.toml`: the clock plugin active and its cases passing where it `allowed` the
/// clock, failed and refused, saying why, where it did not; and they share the server's
/// compiled-code cache.
fn assert_commands_follow_hestia_toml(work: &Path, allowed: bool) {
    let (ok, out, err) = crate::support::hestia(work, &["plugin", "list"], "");
    assert!(ok, "{out}{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("clock "))
        .unwrap_or_else(|| panic!("{out}"));
    let state = if allowed { "active" } else { "failed" };
    assert!(row.contains(state), "{out}");
    assert_eq!(
        out.contains(&format!("clock: {CLOCK_REFUSED}")),
        !allowed,
        "{out}"
    );
    let wasm = work.join("plugins").join("clock.wasm");
    let cases = work.join("cases.json");
    let (ok, out, err) = crate::support::hestia(
        work,
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--cases",
            cases.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(ok, allowed, "{out}{err}");
    if !allowed {
        assert!(err.contains(CLOCK_REFUSED), "{err}");
    }
    let cache = work.join("hestia-data").join("plugin-cache");
    within(Duration::from_secs(10), "compiled code is cached", || {
        cache.is_dir() && !walk(&cache).is_empty()
    });
}

/// `[plugins.wasi]` in `hestia.toml` is the host's half of the permission, in the settings
/// that `serve`, `plugin list`, `plugin test` and `token explain` all start their hosts with
/// (`PluginSettings::configured`): a manifest asking for the clock loads and reads it where
/// the file allows it.
#[test]
fn hestia_toml_allowing_the_clock_gives_it_to_a_manifest_asking_for_it() {
    let (work, host) = clock_work(true);
    let p = info(&host, "clock");
    assert_eq!((p.state, p.last_error), (PluginStatus::Active, None));
    assert_eq!(authorize(&host), Decision::Allow);
    let expired = Claims {
        expires_at: 1,
        ..claims()
    };
    assert_eq!(
        denial_of(host.authorize(&read("Patient"), &expired)).reason,
        "token expired"
    );
    assert_commands_follow_hestia_toml(work.path(), true);
}

/// Where `hestia.toml` does not allow the clock, a manifest asking for it is refused,
/// saying why, by the server's host and the commands alike.
#[test]
fn hestia_toml_without_the_clock_refuses_a_manifest_asking_for_it() {
    let (work, host) = clock_work(false);
    let p = info(&host, "clock");
    assert_eq!(
        (p.state, p.last_error.as_deref()),
        (PluginStatus::Failed, Some(CLOCK_REFUSED))
    );
    assert_eq!(
        denial(&host),
        Denial {
            plugin: "clock".into(),
            reason: format!("not loaded: {CLOCK_REFUSED}")
        }
    );
    assert_commands_follow_hestia_toml(work.path(), false);
}

fn denial_of(decision: Decision) -> Denial {
    match decision {
        Decision::Deny(denial) => denial,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn validators_report_issues() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "validator", guests::VALIDATOR);
    let host = start(dir.path());
    assert_eq!(
        host.validate("Patient", r#"{"resourceType":"Patient"}"#),
        Vec::<Issue>::new()
    );
    assert_eq!(
        host.validate("Patient", r#"{"resourceType":"Observation","note":"bad"}"#),
        vec![
            Issue {
                severity: Severity::Error,
                code: "required".into(),
                expression: vec!["Patient.resourceType".into()],
                diagnostics: "resourceType must be Patient".into(),
            },
            Issue {
                severity: Severity::Warning,
                code: "value".into(),
                expression: vec![],
                diagnostics: "contains \"bad\"".into(),
            },
        ]
    );
}

#[test]
fn audience_rules_resolve_and_accept() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "audience", guests::AUDIENCE_RULE);
    let host = start(dir.path());
    let base = "https://ehr.example/fhir/r4".to_string();
    let request = |requested: &[&str]| AudienceRequest {
        client_id: "postman".into(),
        requested: requested.iter().map(|s| s.to_string()).collect(),
        known: vec![base.clone(), "https://other.example/fhir".into()],
    };
    assert_eq!(host.resolve_audience(&request(&[])), Ok(vec![base.clone()]));
    assert_eq!(
        host.resolve_audience(&request(&[base.as_str()])),
        Ok(vec![base.clone()])
    );
    assert_eq!(
        host.resolve_audience(&request(&["https://evil.example"])),
        Err(Denial {
            plugin: "audience".into(),
            reason: "unknown audience https://evil.example for postman".into()
        })
    );
    assert_eq!(
        host.accept_audience(std::slice::from_ref(&base), &base),
        Ok(())
    );
    let wrong = host
        .accept_audience(&["https://other.example/fhir".into()], &base)
        .unwrap_err();
    assert_eq!(
        wrong.to_string(),
        format!(
            "plugin audience denied: audiences [\"https://other.example/fhir\"] do not include {base}"
        )
    );
}

/// The broken audience rule of `tests/clients/run --broken` mints tokens that this server
/// then refuses: the negative run of the client tests fails for that reason, not another.
#[test]
fn the_wrong_audience_guest_mints_audiences_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "audience", guests::WRONG_AUDIENCE);
    let host = start(dir.path());
    let base = "https://ehr.example/fhir/r4".to_string();
    let minted = host
        .resolve_audience(&AudienceRequest {
            client_id: "postman".into(),
            requested: vec![base.clone()],
            known: vec![base.clone()],
        })
        .unwrap();
    assert_eq!(minted, vec![format!("{base}/elsewhere")]);
    let refused = host.accept_audience(&minted, &base).unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!("plugin audience denied: audience [{base}/elsewhere] does not include {base}")
    );
    assert_eq!(
        host.accept_audience(std::slice::from_ref(&base), &base),
        Ok(())
    );
}

#[test]
fn isolation_gives_a_fresh_instance_per_call() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "constrain", guests::CONSTRAIN);
    manifest(dir.path(), "constrain", "isolation = true");
    install(dir.path(), "panic", guests::PANIC);
    manifest(dir.path(), "panic", "isolation = true\norder = 200");
    let host = start(dir.path());
    assert!(info(&host, "constrain").isolation);
    for _ in 0..3 {
        assert_eq!(denial(&host).plugin, "panic");
    }
}

/// Built-ins come first; a file of the same name overrides one, a manifest alone configures
/// it, and deleting the file brings it back.
#[test]
fn a_file_overrides_a_builtin_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = BuiltinPlugin {
        name: "policy".into(),
        kind: PluginKind::ScopePolicy,
        order: 0,
        wasm: Cow::Owned(std::fs::read(guests::CONFIG_ECHO).unwrap()),
    };
    let host = PluginHost::start(PluginSettings {
        builtins: vec![builtin],
        ..settings(dir.path())
    })
    .unwrap();
    assert_eq!(denial(&host).reason, "{}");
    assert_eq!(info(&host, "policy").source, PluginSource::Builtin);

    manifest(dir.path(), "policy", "[config]\nx = 1");
    host.reload();
    assert_eq!(denial(&host).reason, r#"{"x":1}"#);
    assert_eq!(info(&host, "policy").source, PluginSource::Builtin);

    install(dir.path(), "policy", guests::ALLOW_ALL);
    host.reload();
    assert_eq!(authorize(&host), Decision::Allow);
    assert_eq!(
        info(&host, "policy").source,
        PluginSource::File(dir.path().join("policy.wasm"))
    );

    std::fs::remove_file(dir.path().join("policy.wasm")).unwrap();
    host.reload();
    assert_eq!(denial(&host).reason, r#"{"x":1}"#);
    std::fs::remove_file(dir.path().join("policy.toml")).unwrap();
    host.reload();
    assert_eq!(denial(&host).reason, "{}");
    assert_eq!(info(&host, "policy").state, PluginStatus::Active);
}

/// Through the watcher: replace → new behaviour within 1 s; broken → the old version keeps
/// serving with the error recorded; delete → gone.
#[test]
fn hot_reload() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    install(dir.path(), "p", guests::ALLOW_ALL);
    let host = PluginHost::start(PluginSettings {
        watch: true,
        cache_dir: Some(cache.path().to_path_buf()),
        ..settings(dir.path())
    })
    .unwrap();
    assert_eq!(authorize(&host), Decision::Allow);

    install(dir.path(), "p", guests::DENY_ALL);
    within(
        Duration::from_secs(1),
        "deny-all replaces allow-all",
        || matches!(authorize(&host), Decision::Deny(_)),
    );
    assert_eq!(denial(&host).plugin, "p");

    put(dir.path(), "p.wasm", b"\0asm broken");
    within(
        Duration::from_secs(1),
        "the broken file is reported",
        || info(&host, "p").state == PluginStatus::Stale,
    );
    assert!(
        info(&host, "p")
            .last_error
            .unwrap()
            .starts_with("not a valid WebAssembly component")
    );
    assert_eq!(
        denial(&host).reason,
        "deny-all denies everything",
        "the old version serves"
    );

    std::fs::remove_file(dir.path().join("p.wasm")).unwrap();
    within(Duration::from_secs(1), "p is unloaded", || {
        host.list().is_empty()
    });
    assert_eq!(authorize(&host), Decision::Allow);
}

/// Swaps while several threads call: every call answers from a whole version, none fails.
#[test]
fn swap_under_concurrent_calls_fails_no_call() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "p", guests::ALLOW_ALL);
    let host = start(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (host, stop, calls) = (host.clone(), stop.clone(), calls.clone());
            thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match authorize(&host) {
                        Decision::Allow | Decision::AllowWithin(_) => {}
                        Decision::Deny(d) => failures.push(d),
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    for round in 0..10 {
        let guest = if round % 2 == 0 {
            guests::CONSTRAIN
        } else {
            guests::ALLOW_ALL
        };
        install(dir.path(), "p", guest);
        host.reload();
        assert_eq!(info(&host, "p").state, PluginStatus::Active);
    }
    let before = calls.load(Ordering::Relaxed);
    within(
        Duration::from_secs(10),
        "callers make progress after the swaps",
        || calls.load(Ordering::Relaxed) > before + 100,
    );
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        assert_eq!(caller.join().unwrap(), Vec::<Denial>::new());
    }
}

#[test]
fn compiled_code_is_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    install(dir.path(), "p", guests::ALLOW_ALL);
    let with_cache = || PluginSettings {
        cache_dir: Some(cache.path().to_path_buf()),
        ..settings(dir.path())
    };
    let host = PluginHost::start(with_cache()).unwrap();
    assert_eq!(authorize(&host), Decision::Allow);
    // The cache file may land a moment after compilation (written off the calling thread).
    within(Duration::from_secs(10), "compiled code is cached", || {
        !walk(cache.path()).is_empty()
    });
    let entries = cached(cache.path());
    drop(host);
    // A restart reads the entries and compiles nothing: no entry is added or rewritten
    // (same contents, same modification times).
    let host = PluginHost::start(with_cache()).unwrap();
    assert_eq!(authorize(&host), Decision::Allow);
    assert_eq!(cached(cache.path()), entries);

    // A changed component is compiled once more, into an entry of its own.
    install(dir.path(), "p", guests::DENY_ALL);
    host.reload();
    assert_eq!(denial(&host).plugin, "p");
    within(
        Duration::from_secs(10),
        "the new component is cached",
        || walk(cache.path()).len() > entries.len(),
    );
    let after = cached(cache.path());
    for entry in &entries {
        assert!(after.contains(entry), "{entry:?} changed");
    }
}

/// Each compiled artifact of the cache: path, modification time and contents' hash.
fn cached(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime, String)> {
    walk(dir)
        .into_iter()
        .map(|path| {
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            let hash = content_hash(&std::fs::read(&path).unwrap());
            (path, modified, hash)
        })
        .collect()
}

/// The compiled artifacts in a cache directory; wasmtime's cache worker also writes usage
/// statistics (`*.stats`) and cleanup markers (`.cleanup*`) in the background, which are
/// not compiled code, and each entry is first written to `*.wip-atomic-write-*` and then
/// renamed (a listing may see that file just before it disappears).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if !name.ends_with(".stats")
            && !name.starts_with(".cleanup")
            && !name.contains(".wip-atomic-write")
        {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn check_names_world_version_and_imports() {
    let report = cli::check(Path::new(guests::ALLOW_ALL)).unwrap();
    assert_eq!(report.kind, PluginKind::ScopePolicy);
    assert_eq!(report.package, "hestia:plugin@0.1.0");
    assert!(
        report
            .imports
            .iter()
            .any(|(name, p)| name == "hestia:plugin/host@0.1.0" && *p == Provision::Host)
    );
    let text = report.to_string();
    assert!(text.contains("world    scope-policy"), "{text}");
    assert!(text.contains("package  hestia:plugin@0.1.0"), "{text}");

    let clock = cli::check(Path::new(guests::WASI_CLOCK)).unwrap();
    assert!(
        clock
            .imports
            .iter()
            .any(|(name, p)| name.starts_with("wasi:clocks/wall-clock@") && *p == Provision::Clock)
    );

    for (guest, kind) in [
        (guests::VALIDATOR, PluginKind::ResourceValidator),
        (guests::AUDIENCE_RULE, PluginKind::AudienceRule),
    ] {
        assert_eq!(cli::check(Path::new(guest)).unwrap().kind, kind);
    }
}

/// The host binds every supported contract version: a plugin built against 0.1.0 and one
/// built against 0.2.0 (which adds `host.now()`) load into one host, chain, and answer; each
/// is run by the bindings of the version its imports name, as `plugin check` reports.
#[test]
fn plugins_of_each_contract_version_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "old", guests::ALLOW_ALL);
    install(dir.path(), "new", guests::HOST_CLOCK);
    let host = start(dir.path());
    for name in ["old", "new"] {
        let p = info(&host, name);
        assert_eq!(
            (p.state, p.last_error),
            (PluginStatus::Active, None),
            "{name}"
        );
    }
    assert_eq!(authorize(&host), Decision::Allow);
    let d = denial_of(host.authorize(
        &read("Patient"),
        &Claims {
            expires_at: 1,
            ..claims()
        },
    ));
    assert_eq!(d.plugin, "new");
    assert!(
        d.reason.starts_with("token expired at 1 (host clock "),
        "{}",
        d.reason
    );
    let granted = host.grant(&token_request(&["patient/*.rs", "openid"], &[]));
    assert_eq!(granted.granted, ["patient/*.rs", "openid"]);

    for (guest, package) in [
        (guests::ALLOW_ALL, "hestia:plugin@0.1.0"),
        (guests::HOST_CLOCK, "hestia:plugin@0.2.0"),
    ] {
        let report = cli::check(Path::new(guest)).unwrap();
        assert_eq!(report.package, package);
        assert!(report.to_string().contains(&format!("package  {package}")));
    }
    let report = cli::check(Path::new(guests::HOST_CLOCK)).unwrap();
    assert!(
        report
            .imports
            .iter()
            .any(|(name, p)| name == "hestia:plugin/host@0.2.0" && *p == Provision::Host),
        "{report}"
    );
}

/// A patient's rights: the patient role, reading and searching within its own compartment.
fn patient_rights() -> UserRights {
    UserRights {
        roles: vec!["patient".into()],
        grants: vec![
            UserGrant {
                scope: "*.rs".into(),
                patient_compartment: Some("p1".into()),
            },
            UserGrant {
                scope: "Patient.rs?organization=Organization/a".into(),
                patient_compartment: None,
            },
        ],
    }
}

/// A 0.3.0 plugin sees the account's rights the host passes (`user`, new in 0.3.0) in
/// `claims` and in `token-request`, and none when there is no account; a 0.1.0 plugin
/// beside it answers as before, without them. The 0.3.0 plugin narrows at grant time (it
/// grants a scope that was not requested in place of the requested ones).
#[test]
fn a_0_3_0_plugin_sees_the_user_beside_a_0_1_0_plugin() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "a-old", guests::ALLOW_ALL);
    install(dir.path(), "b-new", guests::USER_ECHO);
    let host = start(dir.path());
    for name in ["a-old", "b-new"] {
        let p = info(&host, name);
        assert_eq!(
            (p.state, p.last_error),
            (PluginStatus::Active, None),
            "{name}"
        );
    }
    let rendered = "roles=[patient] grants=[*.rs@p1,Patient.rs?organization=Organization/a@-]";
    let with_user = Claims {
        user: Some(patient_rights()),
        ..claims()
    };
    assert_eq!(
        host.authorize(&read("Observation"), &with_user),
        Decision::Deny(Denial {
            plugin: "b-new".into(),
            reason: format!("user: {rendered}"),
        })
    );
    assert_eq!(
        denial(&host),
        Denial {
            plugin: "b-new".into(),
            reason: "user: none".into(),
        }
    );
    let no_roles = Claims {
        user: Some(UserRights::default()),
        ..claims()
    };
    assert_eq!(
        denial_of(host.authorize(&read("Observation"), &no_roles)).reason,
        "user: roles=[] grants=[]"
    );

    let request = |user: Option<UserRights>| TokenRequest {
        user,
        ..token_request(&["patient/*.rs", "openid"], &[])
    };
    assert_eq!(
        host.grant(&request(Some(patient_rights()))),
        Grant {
            granted: vec!["user/*.rs".into()],
            refused: Vec::new(),
        }
    );
    for (user, rendered) in [
        (None, "none"),
        (Some(UserRights::default()), "roles=[] grants=[]"),
    ] {
        let reason = format!("plugin b-new: {rendered}");
        assert_eq!(
            host.grant(&request(user)),
            Grant {
                granted: Vec::new(),
                refused: vec![
                    ("patient/*.rs".into(), reason.clone()),
                    ("openid".into(), reason)
                ],
            }
        );
    }
    assert_eq!(
        cli::check(Path::new(guests::USER_ECHO)).unwrap().package,
        "hestia:plugin@0.3.0"
    );
}

/// A 0.4.0 plugin (plain `wit-bindgen`) borrows the request and the claims as resources and
/// reads each field through a method: the host answers every method with the field of this
/// call, one call after another on the same warm instance, beside a 0.1.0 plugin; its grant
/// is that of 0.3.0's records; `plugin check` names the version and its `types` import.
#[test]
fn a_0_4_0_plugin_reads_the_borrowed_request_and_claims() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "a-records", guests::ALLOW_ALL);
    install(dir.path(), "b-borrowed", guests::BORROWED_REQUEST);
    let host = start(dir.path());
    let p = info(&host, "b-borrowed");
    assert_eq!((p.state, p.last_error), (PluginStatus::Active, None));

    let get = FhirRequest {
        interaction: Interaction::Read,
        id: Some("p1".into()),
        ..read("Patient")
    };
    assert_eq!(host.authorize(&get, &claims()), Decision::Allow);
    let delete = FhirRequest {
        interaction: Interaction::Delete,
        ..get.clone()
    };
    let by_bob = Claims {
        client_id: "bob".into(),
        ..claims()
    };
    assert_eq!(
        denial_of(host.authorize(&delete, &by_bob)).reason,
        "no deletes by bob"
    );
    let search = FhirRequest {
        operation: Some("everything".into()),
        parameters: vec![("code".into(), "x".into()), ("_count".into(), "5".into())],
        body_json: Some("{\"a\":1}".into()),
        ..read("Observation")
    };
    let every_field = Claims {
        audiences: vec!["a1".into(), "a2".into()],
        scopes: vec!["patient/*.rs".into(), "openid".into()],
        raw_json: "{\"jti\":\"j\"}".into(),
        user: Some(patient_rights()),
        ..claims()
    };
    let d = denial_of(host.authorize(&search, &every_field));
    assert_eq!(d.plugin, "b-borrowed");
    assert_eq!(
        d.reason,
        [
            "interaction=Interaction::SearchType",
            "type=Observation",
            "id=-",
            "operation=everything",
            "parameters=code:x,_count:5",
            "body={\"a\":1}",
            "base=https://ehr.example/fhir/r4",
            "issuer=https://ehr.example",
            "subject=alice",
            "client=postman",
            "audiences=a1,a2",
            "scopes=patient/*.rs,openid",
            "fhir-user=Patient/p1",
            "patient=p1",
            "expires=4000000000",
            "raw={\"jti\":\"j\"}",
            "user=patient|*.rs,Patient.rs?organization=Organization/a",
        ]
        .join(";")
    );
    let none = Claims {
        fhir_user: None,
        patient: None,
        ..claims()
    };
    let reason = denial_of(host.authorize(&read("Observation"), &none)).reason;
    assert!(
        reason.contains(";fhir-user=-;patient=-;") && reason.ends_with(";user=-"),
        "{reason}"
    );
    assert_eq!(
        host.grant(&token_request(&["patient/*.rs", "openid"], &[]))
            .granted,
        ["patient/*.rs", "openid"]
    );

    let report = cli::check(Path::new(guests::BORROWED_REQUEST)).unwrap();
    assert_eq!(report.package, "hestia:plugin@0.4.0");
    assert!(
        report
            .imports
            .iter()
            .any(|(name, p)| name == "hestia:plugin/types@0.4.0" && *p == Provision::Host),
        "{report}"
    );
}

/// A component built against a contract version the host does not bind is refused, naming
/// its version and the supported ones; it is not run through another version's bindings.
#[test]
fn an_unknown_contract_version_is_refused_by_name() {
    let reason = "built against hestia:plugin@0.9.0, which this host does not support \
                  (supported: 0.1.0, 0.2.0, 0.3.0, 0.4.0)";
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "future", guests::FUTURE_CONTRACT);
    let host = start(dir.path());
    let p = info(&host, "future");
    assert_eq!(
        (p.state, p.last_error.as_deref()),
        (PluginStatus::Failed, Some(reason))
    );
    assert_eq!(
        denial(&host),
        Denial {
            plugin: "future".into(),
            reason: format!("not loaded: {reason}")
        }
    );
    let err = cli::check(Path::new(guests::FUTURE_CONTRACT))
        .unwrap_err()
        .to_string();
    assert!(err.ends_with(reason), "{err}");
}

#[test]
fn check_refuses_what_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "garbage.wasm",
            b"garbage",
            "not a valid WebAssembly component",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "this is a core WebAssembly module, not a component",
        ),
        // An empty component: valid, but it exports no world of the contract.
        (
            "empty.wasm",
            b"\0asm\x0d\0\x01\0",
            "exports [] match no world of hestia:plugin (0.1.0, 0.2.0, 0.3.0, 0.4.0)",
        ),
    ];
    for (file, bytes, reason) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let err = cli::check(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: {reason}", path.display())),
            "{err}"
        );
    }
    let missing = cli::check(&dir.path().join("missing.wasm"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("cannot read"), "{missing}");
}

#[test]
fn list_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "allow-all", guests::ALLOW_ALL);
    put(dir.path(), "junk.wasm", b"junk");
    let PluginTable(rows) = cli::list(settings(dir.path())).unwrap();
    assert_eq!(rows.len(), 2);
    let text = PluginTable(rows).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{text}");
    assert!(
        lines[1].starts_with("allow-all  scope-policy  100"),
        "{text}"
    );
    assert!(lines[2].starts_with("junk       unknown"), "{text}");
    assert!(lines[2].contains("failed"), "{text}");
    assert!(
        lines[3].starts_with("junk: not a valid WebAssembly component"),
        "{text}"
    );
}

/// The defaults embedded in the binary start, each in its own chain, listed as built-ins,
/// and answer a first call of their kind.
#[test]
fn the_default_builtins_load() {
    let defaults = hestia::plugins::default_builtins();
    let host = PluginHost::start(PluginSettings::default()).unwrap();
    let listed: Vec<(String, Option<PluginKind>, PluginSource, PluginStatus)> = host
        .list()
        .into_iter()
        .map(|p| (p.name, p.kind, p.source, p.state))
        .collect();
    let mut expected: Vec<_> = defaults
        .iter()
        .map(|b| {
            (
                b.name.clone(),
                Some(b.kind),
                PluginSource::Builtin,
                PluginStatus::Active,
            )
        })
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let mut listed = listed;
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, expected);
    // Whatever they decide, they decide it without failing: no denial names a fault.
    let reasons = [
        match authorize(&host) {
            Decision::Deny(d) => d.reason,
            _ => String::new(),
        },
        host.accept_audience(
            &["https://ehr.example/fhir/r4".into()],
            "https://ehr.example/fhir/r4",
        )
        .err()
        .map(|d| d.reason)
        .unwrap_or_default(),
    ];
    for reason in reasons {
        for fault in ["trapped", "timed out", "exceeded memory", "not loaded"] {
            assert!(!reason.starts_with(fault), "{reason}");
        }
    }
    for issue in host.validate("Patient", r#"{"resourceType":"Patient","id":"p1"}"#) {
        assert!(!issue.diagnostics.contains("denied: trapped"), "{issue:?}");
    }
}

/// The built-in structural validator checks nested elements (backbone elements and
/// datatypes) from the R4 definitions, each issue at its FHIRPath-like location.
#[test]
fn the_builtin_validator_checks_nested_elements() {
    let host = PluginHost::start(PluginSettings::default()).unwrap();
    let patient = r#"{"resourceType":"Patient","identifier":[{"system":"not a uri"}],
        "contact":[{"period":{"start":"yesterday"}}]}"#;
    let found: Vec<(Severity, String, Vec<String>)> = host
        .validate("Patient", patient)
        .into_iter()
        .map(|i| (i.severity, i.code, i.expression))
        .collect();
    // In document order.
    assert_eq!(
        found,
        [
            (
                Severity::Error,
                "value".to_string(),
                vec!["Patient.identifier[0].system".to_string()]
            ),
            (
                Severity::Error,
                "value".to_string(),
                vec!["Patient.contact[0].period.start".to_string()]
            ),
        ]
    );
    let observation = r#"{"resourceType":"Observation","status":"final","code":{"text":"bp"},
        "component":[{"code":{"text":"systolic"},"valueQuantity":{"value":"120"}}]}"#;
    let issues = host.validate("Observation", observation);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(
        issues[0].expression.first().map(String::as_str),
        Some("Observation.component[0].valueQuantity.value")
    );
    assert!(
        issues[0]
            .diagnostics
            .ends_with("\"120\" is not a JSON number"),
        "{issues:?}"
    );
}

/// The value of the Prometheus sample `name{labels…}` in `text`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{')?;
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (metric == name && all)
            .then(|| value.parse().ok())
            .flatten()
    })
}

#[test]
fn calls_are_counted_per_plugin_and_outcome() {
    let metrics = hestia::telemetry::metrics_handle();
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "metered-allow", guests::ALLOW_ALL);
    let host = start(dir.path());
    for _ in 0..3 {
        assert_eq!(authorize(&host), Decision::Allow);
    }
    install(dir.path(), "metered-loop", guests::INFINITE_LOOP);
    manifest(dir.path(), "metered-loop", "[limits]\ndeadline_ms = 5");
    put(dir.path(), "metered-junk.wasm", b"junk");
    manifest(dir.path(), "metered-junk", "kind = \"resource-validator\"");
    host.reload();
    assert_eq!(denial(&host).plugin, "metered-loop");

    let text = metrics.render();
    let allow = [("plugin", "metered-allow"), ("kind", "scope-policy")];
    let looping = [("plugin", "metered-loop"), ("kind", "scope-policy")];
    let calls = "hestia_plugin_calls_total";
    assert_eq!(
        sample(&text, calls, &[allow[0], allow[1], ("outcome", "ok")]),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, calls, &[looping[0], ("outcome", "timeout")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "hestia_plugin_timeouts_total", &looping),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "hestia_plugin_denials_total", &looping),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "hestia_plugin_call_duration_seconds_count",
            &allow[..1]
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            "hestia_plugin_load_failures_total",
            &[("plugin", "metered-junk"), ("kind", "resource-validator")]
        ),
        Some(1.0)
    );

    // A trap is counted as one.
    let other = tempfile::tempdir().unwrap();
    install(other.path(), "metered-panic", guests::PANIC);
    let host = start(other.path());
    assert!(denial(&host).reason.starts_with("trapped: "));
    let text = metrics.render();
    let panicking = [("plugin", "metered-panic"), ("kind", "scope-policy")];
    assert_eq!(
        sample(&text, "hestia_plugin_traps_total", &panicking),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, calls, &[panicking[0], ("outcome", "trap")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "hestia_plugin_traps_total", &allow).unwrap_or(0.0),
        0.0
    );
}

/// The application in-process, as `support::raw_app_on` builds it, but with `plugins` as its
/// plugin host.
async fn app_with(
    db: &crate::support::TestDb,
    plugins: Arc<PluginHost>,
) -> (axum::Router, hestia::http::AppState) {
    let (app, state) = crate::support::starting_app_with(db, "", plugins).await;
    state.set_ready();
    (app, state)
}

/// The default plugins plus the plugin directory `dir`, watched, with a generous deadline.
fn host_with_builtins(dir: &Path, watch: bool) -> Arc<PluginHost> {
    PluginHost::start(PluginSettings {
        dir: Some(dir.to_path_buf()),
        watch,
        deadline: Duration::from_secs(2),
        ..PluginSettings::default()
    })
    .unwrap()
}

fn narrow_manifest(answer: &str, spins: u64) -> String {
    format!("[config]\nanswer = \"{answer}\"\nspins = {spins}\n[limits]\ndeadline_ms = 10000\n")
}

/// The families of the Patients a search at `url` with `bearer` found, or why it failed.
async fn families_found(
    client: &reqwest::Client,
    url: &str,
    bearer: &str,
) -> Result<Vec<String>, String> {
    let response = client
        .get(url)
        .header("authorization", bearer)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok(body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["resource"]["name"][0]["family"].as_str())
        .map(String::from)
        .collect())
}

/// Waits (up to 10 s) until a search at `url` finds `family` alone; `what` names the wait.
async fn until_found(client: &reqwest::Client, url: &str, bearer: &str, family: &str, what: &str) {
    let start = Instant::now();
    while families_found(client, url, bearer).await != Ok(vec![family.to_string()]) {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates a Patient of each family.
async fn post_families(app: &axum::Router, bearer: &str, families: &[&str]) {
    for family in families {
        let body = serde_json::json!({"resourceType": "Patient", "name": [{"family": family}]});
        let headers = [
            ("authorization", bearer),
            ("content-type", "application/fhir+json"),
        ];
        let created =
            crate::support::call(app, "POST", "/fhir/r4/Patient", &headers, body.to_string()).await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
}

/// Plugin files replaced through the watcher many times while HTTP clients keep searching
/// a real server (the application on a TCP socket): no request fails, and the responses
/// switch to each new version's behaviour (`narrow` lets a search see only the family its
/// manifest names).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swaps_under_http_load_fail_no_request() {
    use crate::support::{TestDb, mint};
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let plugins = host_with_builtins(dir.path(), true);
        let (app, state) = app_with(&db, plugins).await;
        let token = mint(&state, serde_json::json!({"scope": "system/*.*"})).await;
        let bearer = format!("Bearer {token}");
        post_families(&app, &bearer, &["Alpha", "Beta"]).await;
        // The plugin comes after the data (its constraint makes writes read-only).
        manifest(dir.path(), "narrow", &narrow_manifest("Alpha", 0));
        install(dir.path(), "narrow", guests::NARROW);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/fhir/r4/Patient?_count=10",
            listener.local_addr().unwrap()
        );
        let server = tokio::spawn(axum::serve(listener, app).into_future());
        let client = reqwest::Client::new();
        until_found(&client, &url, &bearer, "Alpha", "narrow never loaded").await;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (client, url, bearer) = (client.clone(), url.clone(), bearer.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        answers.push(families_found(&client, &url, &bearer).await);
                    }
                    answers
                })
            })
            .collect();

        for round in 1..=12 {
            let family = if round % 2 == 0 { "Alpha" } else { "Beta" };
            manifest(dir.path(), "narrow", &narrow_manifest(family, round));
            let what = format!("{}: swap {round} to {family} not served", db.backend);
            until_found(&client, &url, &bearer, family, &what).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for client in clients {
            for answer in client.await.unwrap() {
                total += 1;
                let families =
                    answer.unwrap_or_else(|e| panic!("{}: a request failed: {e}", db.backend));
                assert!(
                    families == ["Alpha"] || families == ["Beta"],
                    "{}: {families:?} is neither version's answer",
                    db.backend
                );
            }
        }
        assert!(total > 0, "the clients made no request");
        server.abort();
    }
}

/// A call in flight when its plugin is swapped finishes on the version it started with;
/// the next call gets the new one. The slow version logs (with its name, in the host log)
/// before it spins, which is how the test knows the call is in flight.
#[test]
fn a_call_in_flight_finishes_on_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "narrow", guests::NARROW);
    manifest(dir.path(), "narrow", &narrow_manifest("Old", 300_000_000));
    let host = start(dir.path());
    let (logs, lines) = LogLines::new();
    let caller = {
        let host = host.clone();
        thread::spawn(move || {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(logs)
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || authorize(&host))
        })
    };
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the slow version logs before it spins");
    assert!(line.contains("narrowing to Old"), "{line}");
    assert!(
        line.contains("plugin=\"narrow\"") || line.contains("plugin=narrow"),
        "{line}"
    );
    manifest(dir.path(), "narrow", &narrow_manifest("New", 0));
    host.reload();
    let family = |decision: Decision| match decision {
        Decision::AllowWithin(c) => match &c[..] {
            [Constraint::Search(s)] => s.parameters[0].1.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(family(authorize(&host)), "New");
    assert_eq!(family(caller.join().unwrap()), "Old");
}

/// An application on `db` whose plugin is the third-party guest `faults` with the
/// manifest `manifest_text`, and the `Authorization` value of an unrestricted token.
async fn faults_app(
    db: &crate::support::TestDb,
    manifest_text: &str,
) -> (tempfile::TempDir, axum::Router, String) {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "faults", guests::FAULTS);
    manifest(dir.path(), "faults", manifest_text);
    let plugins = host_with_builtins(dir.path(), false);
    let (app, state) = app_with(db, plugins).await;
    let token = crate::support::mint(&state, serde_json::json!({"scope": "system/*.*"})).await;
    (dir, app, format!("Bearer {token}"))
}

/// Third-party guests (plain wit-bindgen and std, no SDK) that panic, abort, overflow
/// their stack, fail an allocation or exit, deciding FHIR requests over HTTP on a tokio
/// runtime: each fault is a 403 naming the plugin and its cause, every time, and the server
/// stays ready.
#[tokio::test]
async fn third_party_faults_over_http_are_named_denials() {
    use crate::support::{TestDb, call};
    let db = TestDb::sqlite();
    let faults = [
        (
            "panic",
            "trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        (
            "abort",
            "trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        ("stack", "trapped: wasm trap: call stack exhausted"),
        ("alloc", "exceeded memory limit 16 MiB"),
        ("exit", "trapped:"),
    ];
    for (fault, cause) in faults {
        let config = format!("[config]\nfault = \"{fault}\"\n[limits]\nmemory_mib = 16");
        let (_dir, app, auth) = faults_app(&db, &config).await;
        for _ in 0..3 {
            let h = [("authorization", auth.as_str())];
            let refused = call(&app, "GET", "/fhir/r4/Patient", &h, "").await;
            assert_eq!(refused.status, 403, "{fault}: {}", refused.body);
            let said = refused.diagnostics();
            assert!(
                said.contains(&format!("plugin faults denied: {cause}")),
                "{fault}: {said}"
            );
        }
        assert_eq!(
            call(&app, "GET", "/health/ready", &[], "").await.status,
            200
        );
    }
}

/// A third-party guest's output over HTTP reaches the log as the plugin's lines, bounded
/// (the rest counted in a metric), and the request it came with is served.
#[tokio::test]
async fn third_party_output_over_http_is_logged_as_the_plugins_bounded() {
    use crate::support::{TestDb, call};
    let db = TestDb::sqlite();
    // Before the first plugin call, so that no log call site is cached as unwatched.
    let (logs, lines) = LogLines::new();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs)
        .with_ansi(false)
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    for (fault, served) in [("print", 1), ("chatty", 3)] {
        let (_dir, app, auth) = faults_app(&db, &format!("[config]\nfault = \"{fault}\"")).await;
        for _ in 0..served {
            let h = [("authorization", auth.as_str())];
            let reply = call(&app, "GET", "/fhir/r4/Patient", &h, "").await;
            assert_eq!(reply.status, 200, "{fault}: {}", reply.body);
        }
        if fault == "chatty" {
            let metrics = call(&app, "GET", "/metrics", &[], "").await;
            let text = metrics.body.as_str().unwrap_or_default().to_string();
            let dropped = sample(
                &text,
                "hestia_plugin_output_lines_dropped_total",
                &[("plugin", "faults")],
            );
            assert!(dropped.is_some_and(|n| n >= 14_000.0), "{dropped:?}");
        }
    }
    let logged: Vec<String> = lines.try_iter().collect();
    let of_plugin = |text: &str| {
        logged
            .iter()
            .filter(|l| {
                l.contains(text) && (l.contains("plugin=\"faults\"") || l.contains("plugin=faults"))
            })
            .count()
    };
    assert_eq!(of_plugin("checking a request"), 1, "{logged:#?}");
    assert_eq!(of_plugin("a warning from the plugin"), 1, "{logged:#?}");
    assert_eq!(of_plugin("a line without its end"), 1, "{logged:#?}");
    // 15,000 lines written by the chatty plugin: about one burst reaches the log (more only
    // on a machine slow enough for the budget to refill), and the rest is counted.
    let chatty = of_plugin("of a plugin that talks too much");
    assert!((100..=200).contains(&chatty), "{chatty} lines logged");
}

/// A `tracing` writer that sends each line written to a channel.
#[derive(Clone)]
struct LogLines(std::sync::mpsc::Sender<String>);

impl LogLines {
    fn new() -> (LogLines, std::sync::mpsc::Receiver<String>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (LogLines(tx), rx)
    }
}

impl std::io::Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogLines {
    type Writer = LogLines;

    fn make_writer(&'a self) -> LogLines {
        self.clone()
    }
}

/// A plugin that never returns, in the plugin directory of a real application: the FHIR
/// request it decides is refused (403) naming the plugin and the cause, the server stays
/// ready, and once the file is gone the next request is served.
#[tokio::test]
async fn a_faulting_plugin_over_http_is_a_named_denial() {
    use crate::support::{TestDb, call, mint};
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "spin", guests::INFINITE_LOOP);
        manifest(dir.path(), "spin", "[limits]\ndeadline_ms = 20");
        let plugins = host_with_builtins(dir.path(), false);
        let (app, state) = app_with(&db, plugins.clone()).await;
        let token = mint(&state, serde_json::json!({"scope": "system/*.*"})).await;
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str())];
        let refused = call(&app, "GET", "/fhir/r4/Patient", &headers, "").await;
        assert_eq!(refused.status, 403, "{}: {}", db.backend, refused.body);
        assert!(
            refused
                .diagnostics()
                .contains("plugin spin denied: timed out after 20 ms"),
            "{}: {}",
            db.backend,
            refused.body
        );
        let ready = call(&app, "GET", "/health/ready", &[], "").await;
        assert_eq!(ready.status, 200);
        // The metrics page counts the timeout.
        let metrics = call(&app, "GET", "/metrics", &[], "").await;
        let text = metrics.body.as_str().unwrap_or_default().to_string();
        assert!(
            sample(&text, "hestia_plugin_timeouts_total", &[("plugin", "spin")])
                .is_some_and(|n| n >= 1.0),
            "{text}"
        );

        std::fs::remove_file(dir.path().join("spin.wasm")).unwrap();
        plugins.reload();
        let served = call(&app, "GET", "/fhir/r4/Patient", &headers, "").await;
        assert_eq!(served.status, 200, "{}: {}", db.backend, served.body);
    }
}

/// What interpreter toolchains build imports WASI 0.2.x at another patch version than the
/// host's, including `wasi:filesystem/types`, which names `wasi:io/streams`' resources: it
/// links, reading the filesystem traps (no preopens, nothing granted), and randomness
/// without the manifest's `[wasi] random` is a fixed sequence, the same in every instance.
#[test]
fn components_importing_newer_wasi_patch_versions_link_with_nothing_granted() {
    let report = cli::check(Path::new(guests::NEWER_WASI)).unwrap();
    let provision = |interface: &str| {
        report
            .imports
            .iter()
            .find(|(name, _)| name == &format!("{interface}@0.2.13"))
            .map(|(_, p)| *p)
    };
    assert_eq!(provision("wasi:io/streams"), Some(Provision::Inert));
    assert_eq!(provision("wasi:filesystem/types"), Some(Provision::Trap));
    assert_eq!(provision("wasi:filesystem/preopens"), Some(Provision::Trap));
    assert_eq!(provision("wasi:random/random"), Some(Provision::Random));

    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "newer", guests::NEWER_WASI);
    let isolated = PluginSettings {
        builtins: Vec::new(),
        dir: Some(dir.path().to_path_buf()),
        deadline: Duration::from_secs(2),
        ..PluginSettings::default()
    };
    manifest(dir.path(), "newer", "isolation = true");
    let host = PluginHost::start(isolated).unwrap();
    let first = denial(&host).reason;
    assert!(first.starts_with("random="), "{first}");
    assert_eq!(
        denial(&host).reason,
        first,
        "a fresh instance, the same sequence"
    );

    let touch = FhirRequest {
        operation: Some("touch-files".to_string()),
        ..read("Patient")
    };
    let d = denial_of(host.authorize(&touch, &claims()));
    assert_eq!(
        d.reason,
        "trapped: `wasi:filesystem/preopens@0.2.13#get-directories` is not available to plugins"
    );
}
