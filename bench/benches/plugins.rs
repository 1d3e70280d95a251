//! Time per plugin decision through `PluginHost`, warm (an instance from the pool) and fresh
//! (`isolation = true`: a new pooled instance per call), for a test guest of each kind and
//! for every default plugin built into the binary.
//!
//! Run: `cargo bench -p hestia-bench --bench plugins`.
//!
//! `HESTIA_BENCH_PLUGINS=DIR`: a `NAME.wasm` in DIR replaces the plugin of that name, as a
//! file in a plugin directory overrides a built-in. That measures a change to a default
//! plugin (`cargo build --release --target wasm32-wasip2` in `plugins/`) without rebuilding
//! the host, and with the guest's symbols kept (`CARGO_PROFILE_RELEASE_STRIP=false`)
//! `perf` can name its functions (`HESTIA_PLUGIN_PROFILER=perfmap`).
//!
//! `HESTIA_BENCH_LANGS=DIR`: every `NAME.wasm` in DIR is a scope policy measured the same
//! way (`lang NAME authorize`), with its manifest `NAME.toml` if there is one (the limits an
//! interpreter-based plugin asks for). The same policy built in each language (the
//! scope-policy template of `hestia plugin new --lang L`) gives the per-language figures;
//! for each one the bench also prints the linear memory of a warm instance after its calls
//! (what its `memory_mib` cap is checked against).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hestia::plugins::{
    BuiltinPlugin, Claims, Decision, FhirRequest, Interaction, PluginHost, PluginKind,
    PluginSettings, default_builtins,
};

/// Every test guest's path; the benchmarks use a few of them.
#[allow(dead_code)]
mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

const BASE: &str = "https://ehr.example/fhir/r4";

fn request() -> FhirRequest {
    FhirRequest {
        interaction: Interaction::SearchType,
        resource_type: Some("Observation".into()),
        id: None,
        operation: None,
        parameters: vec![("category".into(), "laboratory".into())],
        body_json: None,
        base_url: BASE.into(),
    }
}

fn claims() -> Claims {
    Claims {
        issuer: "https://ehr.example".into(),
        subject: "alice".into(),
        client_id: "postman".into(),
        audiences: vec![BASE.into()],
        scopes: vec!["patient/Observation.rs".into(), "launch/patient".into()],
        fhir_user: Some("Patient/p1".into()),
        patient: Some("p1".into()),
        expires_at: 4_000_000_000,
        raw_json: "{}".into(),
        user: None,
    }
}

const PATIENT: &str = r#"{"resourceType":"Patient","id":"p1","active":true,"birthDate":"1970-01-01","name":[{"family":"Doe","given":["Jane"]}]}"#;

/// A host whose only plugin is `plugin`, served as a built-in; `fresh` adds a manifest that
/// asks for isolation.
fn host(plugin: BuiltinPlugin, fresh: bool, dir: &Path) -> Arc<PluginHost> {
    host_with(plugin, fresh, dir, "")
}

/// The same with `manifest` (TOML) as the plugin's manifest.
fn host_with(plugin: BuiltinPlugin, fresh: bool, dir: &Path, manifest: &str) -> Arc<PluginHost> {
    if let Some(overrides) = std::env::var_os("HESTIA_BENCH_PLUGINS") {
        let file = format!("{}.wasm", plugin.name);
        let source = Path::new(&overrides).join(&file);
        if source.is_file() {
            std::fs::copy(&source, dir.join(&file)).unwrap();
        }
    }
    // Top-level keys first: the manifest may end in a table.
    let isolation = if fresh { "isolation = true\n" } else { "" };
    if fresh || !manifest.is_empty() {
        std::fs::write(
            dir.join(format!("{}.toml", plugin.name)),
            format!("{isolation}{manifest}"),
        )
        .unwrap();
    }
    PluginHost::start(PluginSettings {
        builtins: vec![plugin],
        dir: Some(dir.to_path_buf()),
        ..PluginSettings::default()
    })
    .unwrap()
}

fn decide(c: &mut Criterion, label: &str, plugin: BuiltinPlugin) {
    for (mode, fresh) in [("warm", false), ("fresh", true)] {
        let dir = tempfile::tempdir().unwrap();
        let host = host(plugin.clone(), fresh, dir.path());
        let (req, claims, audiences) = (request(), claims(), vec![BASE.to_string()]);
        let name = format!("{label}/{mode}");
        match plugin.kind {
            PluginKind::ScopePolicy => {
                c.bench_function(&name, |b| b.iter(|| host.authorize(&req, &claims)));
            }
            PluginKind::AudienceRule => {
                c.bench_function(&name, |b| b.iter(|| host.accept_audience(&audiences, BASE)));
            }
            PluginKind::ResourceValidator => {
                c.bench_function(&name, |b| b.iter(|| host.validate("Patient", PATIENT)));
            }
        }
    }
}

/// The scope policies of `HESTIA_BENCH_LANGS`, warm and fresh, with their memory.
fn languages(c: &mut Criterion) {
    let Some(dir) = std::env::var_os("HESTIA_BENCH_LANGS") else {
        return;
    };
    let mut wasm: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    wasm.sort();
    for path in wasm {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(path.with_extension("toml"))
            // The bench names the kind and the order itself.
            .map(|m| {
                m.lines()
                    .filter(|l| !l.starts_with("kind") && !l.starts_with("order"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        let plugin = guest(&name, PluginKind::ScopePolicy, path.to_str().unwrap());
        let (req, claims) = (request(), claims());
        for (mode, fresh) in [("warm", false), ("fresh", true)] {
            let dir = tempfile::tempdir().unwrap();
            let host = host_with(plugin.clone(), fresh, dir.path(), &manifest);
            assert_eq!(host.authorize(&req, &claims), Decision::Allow, "{name}");
            c.bench_function(&format!("lang {name} authorize/{mode}"), |b| {
                b.iter(|| host.authorize(&req, &claims))
            });
            if !fresh {
                let memory = host.instance_memory(&name).unwrap_or(0);
                println!(
                    "lang {name}: component {} bytes, linear memory of a warm instance {:.1} MiB",
                    plugin.wasm.len(),
                    memory as f64 / f64::from(1 << 20),
                );
            }
        }
    }
}

fn guest(name: &str, kind: PluginKind, path: &str) -> BuiltinPlugin {
    BuiltinPlugin {
        name: name.into(),
        kind,
        order: 0,
        wasm: Cow::Owned(std::fs::read(path).unwrap()),
    }
}

fn plugins(c: &mut Criterion) {
    decide(
        c,
        "guest allow-all authorize",
        guest("allow-all", PluginKind::ScopePolicy, guests::ALLOW_ALL),
    );
    decide(
        c,
        "guest audience-rule accept",
        guest(
            "audience-rule",
            PluginKind::AudienceRule,
            guests::AUDIENCE_RULE,
        ),
    );
    decide(
        c,
        "guest validator validate",
        guest(
            "validator",
            PluginKind::ResourceValidator,
            guests::VALIDATOR,
        ),
    );
    for builtin in default_builtins() {
        let label = format!("default {} {}", builtin.name, builtin.kind);
        decide(c, &label, builtin);
    }
}

criterion_group!(benches, plugins, languages);
criterion_main!(benches);
