//! Plugins in Python and JavaScript from the binary alone: from an empty directory outside
//! the repository, `plugin new` → `plugin build` → `plugin test --cases` → `plugin check`
//! for a scope policy and an audience rule in each language, then into a running server's
//! plugin directory, on both databases. The scope policy's rule (deletes are refused) takes
//! effect on reload and removing the file restores the default; the audience rule, whose
//! rule is the default's, answers every request while it is installed (its calls counted in
//! `/metrics`), and no longer once removed. Its refusals are in its cases.
//!
//! The build tools (componentize-py on PATH, componentize-js in `HESTIA_JS_TOOLS`, node) are
//! installed by `scripts/plugin-tools.sh`, which `scripts/test` runs and which sets
//! `HESTIA_REQUIRE_PLUGIN_TOOLS=1`: there a missing tool fails this test. A plain `cargo
//! test` without the tools reports the test as NOT RUN on standard error.
//!
//! Every step shares one compiled-code cache (`plugin test --data-dir`, copied into each
//! server's data directory): an interpreter-based component takes tens of seconds to
//! compile, and what the servers load is the same bytes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::plugin_cli::hestia_with;
use crate::support::{Server, TestDb, client_trusting, system_token_of};

/// What is missing to build Python and JavaScript plugins, if anything.
pub(crate) fn missing_tools() -> Option<String> {
    let runs = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut missing = Vec::new();
    if !runs("componentize-py", &["--version"]) {
        missing.push("componentize-py on PATH");
    }
    if !runs("python", &["-m", "pytest", "--version"]) {
        missing.push("pytest for the `python` on PATH");
    }
    if !runs("node", &["--version"]) {
        missing.push("node on PATH");
    }
    let js = std::env::var_os("HESTIA_JS_TOOLS").map(std::path::PathBuf::from);
    if !js.is_some_and(|dir| {
        dir.join("node_modules/@bytecodealliance/componentize-js")
            .is_dir()
    }) {
        missing.push("HESTIA_JS_TOOLS (a folder with @bytecodealliance/componentize-js)");
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// `plugin new` → `build` → `test --cases` → `check` in `work`, the cases run with the
/// compiled-code cache of `data`; returns the project folder.
fn new_built_and_checked(
    work: &Path,
    data: &Path,
    name: &str,
    lang: &str,
    kind: &str,
) -> std::path::PathBuf {
    let step = |dir: &Path, args: &[&str]| {
        let (ok, out, err) = hestia_with(dir, args, &[]);
        assert!(ok, "{lang}: hestia {}: {out}{err}", args.join(" "));
        out
    };
    step(
        work,
        &["plugin", "new", name, "--kind", kind, "--lang", lang],
    );
    let project = work.join(name);
    let built = step(&project, &["plugin", "build"]);
    assert!(built.contains(&format!("{name}.wasm")), "{built}");
    if lang == "js" {
        // Both exports of each world went through host/src/plugins/js_bindings.mjs.
        assert!(
            built.contains("the lifting code of 2 exports rewritten"),
            "{built}"
        );
    }
    let wasm = format!("{name}.wasm");
    let data = data.to_str().unwrap();
    let cases = &[
        "plugin",
        "test",
        &wasm,
        "--cases",
        "cases.json",
        "--data-dir",
        data,
    ];
    let tested = step(&project, cases);
    let count = match kind {
        "audience-rule" => "4 passed, 0 failed",
        _ => "3 passed, 0 failed",
    };
    assert!(tested.contains(count), "{lang} {kind}: {tested}");
    let checked = step(&project, &["plugin", "check", &wasm]);
    assert!(
        checked.contains(&format!("world    {kind}")),
        "{lang}: {checked}"
    );
    // JavaScript projects are written against 0.4.0 (`authorize` borrows the request and
    // the claims), the others against 0.3.0.
    let contract = if lang == "js" { "0.4.0" } else { "0.3.0" };
    assert!(
        checked.contains(&format!("package  hestia:plugin@{contract}"))
            && checked.contains(&format!("hestia:plugin/host@{contract}")),
        "{lang}: {checked}"
    );
    project
}

/// Copies the plugin `name` of `project` into `plugins`, manifest first, the component by
/// an atomic rename.
fn install(project: &Path, plugins: &Path, name: &str) {
    std::fs::copy(
        project.join(format!("{name}.toml")),
        plugins.join(format!("{name}.toml")),
    )
    .unwrap();
    let tmp = plugins.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(project.join(format!("{name}.wasm")), &tmp).unwrap();
    std::fs::rename(&tmp, plugins.join(format!("{name}.wasm"))).unwrap();
}

/// Copies the compiled-code cache `from` (a `plugin-cache` folder) into `to`.
fn copy_cache(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_cache(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The status and body of `DELETE Patient/nobody` until `done` holds for them, for as long
/// as a reload may take on a loaded machine.
async fn delete_until(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = http.delete(url).bearer_auth(token).send().await.unwrap();
        let status = reply.status().as_u16();
        let body = reply.text().await.unwrap();
        if done(status, &body) || Instant::now() > give_up {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the test `name` cannot run for want of the tools: says so on standard error, or
/// fails when `HESTIA_REQUIRE_PLUGIN_TOOLS` is set.
fn not_run(name: &str) -> bool {
    let Some(missing) = missing_tools() else {
        return false;
    };
    let message = format!(
        "NOT RUN: {name}: missing {missing}; scripts/plugin-tools.sh installs the pinned tools"
    );
    assert!(
        std::env::var_os("HESTIA_REQUIRE_PLUGIN_TOOLS").is_none(),
        "{message}"
    );
    // Past the test harness's capture, so that a passing run still shows it.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
    true
}

#[tokio::test]
async fn python_and_javascript_plugins_from_the_binary_alone_take_effect_in_a_running_server() {
    if not_run("python_and_javascript_plugins…") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join(".data");
    let build = |lang: &str, name: &'static str, kind: &str| {
        (
            name,
            new_built_and_checked(work.path(), &data, name, lang, kind),
        )
    };
    let policies = [
        build("python", "py-no-deletes", "scope-policy"),
        build("js", "js-no-deletes", "scope-policy"),
    ];
    let rules = [
        build("python", "py-audience", "audience-rule"),
        build("js", "js-audience", "audience-rule"),
    ];

    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &["--database-url", &db.url]);
        copy_cache(
            &data.join("plugin-cache"),
            &server.data_dir.join("plugin-cache"),
        );
        let http = client_trusting(&server.data_dir.join("tls").join("ca.pem"));
        let token = system_token_of(&server, dir.path(), &db, &http, "system/*.*").await;
        let url = format!("{}/fhir/r4/Patient/nobody", server.url);
        let plugins = server.data_dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let running = Running {
            http: &http,
            url: &url,
            token: &token,
            plugins: &plugins,
            backend: db.backend,
        };
        for (name, project) in &policies {
            running.policy_denies_while_installed(name, project).await;
        }
        for (name, project) in &rules {
            let metrics = format!("{}/metrics", server.url);
            running
                .rule_answers_while_installed(name, project, &metrics)
                .await;
        }
    }
}

/// The Python SDK hands a scope policy every field of the request, the claims, the account and
/// the token request, each as the SDK's own type, and turns each kind of answer back into the
/// contract's: `tests/fixtures/python-every-field` is a policy that answers with what it got,
/// built over a `plugin new` project and run through its cases in a real host.
#[test]
fn the_python_sdk_hands_a_policy_every_field_as_its_own_types() {
    if not_run("the_python_sdk_hands_a_policy…") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let step = |dir: &Path, args: &[&str]| {
        let (ok, out, err) = hestia_with(dir, args, &[]);
        assert!(ok, "hestia {}: {out}{err}", args.join(" "));
        out
    };
    let new = [
        "plugin",
        "new",
        "every",
        "--kind",
        "scope-policy",
        "--lang",
        "python",
    ];
    step(work.path(), &new);
    let project = work.path().join("every");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python-every-field");
    for file in ["app.py", "cases.json"] {
        std::fs::copy(fixture.join(file), project.join(file)).unwrap();
    }
    step(&project, &["plugin", "build"]);
    let data = work.path().join(".data");
    let data = data.to_str().unwrap();
    let cases = [
        "plugin",
        "test",
        "every.wasm",
        "--cases",
        "cases.json",
        "--data-dir",
        data,
    ];
    let tested = step(&project, &cases);
    assert!(tested.contains("6 passed, 0 failed"), "{tested}");
}

/// `plugin build --aot` is for JavaScript projects, and without weval 0.5.0 says how to get
/// it (before looking for componentize-js, so this runs without the tools).
#[test]
fn plugin_build_aot_is_for_javascript_and_names_the_weval_it_needs() {
    let work = tempfile::tempdir().unwrap();
    let new = |name: &str, lang: &str| {
        let args = [
            "plugin",
            "new",
            name,
            "--kind",
            "scope-policy",
            "--lang",
            lang,
        ];
        let (ok, out, err) = hestia_with(work.path(), &args, &[]);
        assert!(ok, "{out}{err}");
        work.path().join(name)
    };
    let python = new("py-policy", "python");
    let (ok, _, err) = hestia_with(&python, &["plugin", "build", "--aot"], &[]);
    assert!(
        !ok && err.contains("--aot is for JavaScript projects"),
        "{err}"
    );
    assert!(!python.join("py-policy.wasm").exists());

    let js = new("js-policy", "js");
    let missing = work.path().join("no-weval");
    let env = [("HESTIA_WEVAL", missing.to_str().unwrap())];
    let (ok, _, err) = hestia_with(&js, &["plugin", "build", "--aot"], &env);
    assert!(!ok, "{err}");
    assert!(
        err.contains("--aot needs weval 0.5.0")
            && err.contains("cargo install weval --version 0.5.0 --locked"),
        "{err}"
    );
    assert!(!js.join("js-policy.wasm").exists());
}

/// The weval that `plugin build --aot` runs (`HESTIA_WEVAL`, else `weval` on PATH), when it
/// is version 0.5.0.
fn weval_present() -> bool {
    let weval = std::env::var_os("HESTIA_WEVAL").unwrap_or_else(|| "weval".into());
    Command::new(weval)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "weval 0.5.0")
}

/// The JavaScript template built ahead of time (`plugin build --aot`) passes its cases.
/// Runs where weval 0.5.0 is (`cargo install weval --version 0.5.0 --locked`); scripts/
/// plugin-tools.sh does not install it, since it compiles for a quarter of an hour.
#[test]
fn a_javascript_template_built_ahead_of_time_passes_its_cases() {
    if not_run("a_javascript_template_built_ahead_of_time…") {
        return;
    }
    if !weval_present() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "NOT RUN: a_javascript_template_built_ahead_of_time…: no weval 0.5.0 \
             (HESTIA_WEVAL or on PATH)"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let step = |dir: &Path, args: &[&str]| {
        let (ok, out, err) = hestia_with(dir, args, &[]);
        assert!(ok, "hestia {}: {out}{err}", args.join(" "));
        out
    };
    let new = [
        "plugin",
        "new",
        "aot",
        "--kind",
        "scope-policy",
        "--lang",
        "js",
    ];
    step(work.path(), &new);
    let project = work.path().join("aot");
    step(&project, &["plugin", "build", "--aot"]);
    // The weval-enabled engine: the plain one does not name weval.
    let wasm = std::fs::read(project.join("aot.wasm")).unwrap();
    assert!(
        wasm.windows(5).any(|w| w == b"weval"),
        "not built ahead of time"
    );
    let data = work.path().join(".data");
    let data = data.to_str().unwrap();
    let cases = [
        "plugin",
        "test",
        "aot.wasm",
        "--cases",
        "cases.json",
        "--data-dir",
        data,
    ];
    let tested = step(&project, &cases);
    assert!(tested.contains("3 passed, 0 failed"), "{tested}");
}

/// A running server's plugin directory, and a client with a token that deletes and reads
/// the resource at `url` (which does not exist).
struct Running<'a> {
    http: &'a reqwest::Client,
    url: &'a str,
    token: &'a str,
    plugins: &'a Path,
    backend: &'a str,
}

impl Running<'_> {
    /// The scope policy `name` (built in `project`) denies deletes once installed, and no
    /// longer once removed.
    async fn policy_denies_while_installed(&self, name: &str, project: &Path) {
        let (http, url, token, b) = (self.http, self.url, self.token, self.backend);
        let (status, body) = delete_until(http, url, token, |_, _| true).await;
        assert_ne!(status, 403, "{name}, before: {body}");

        install(project, self.plugins, name);
        let denial = format!("plugin {name} denied: deletes are disabled on this server");
        let (status, body) =
            delete_until(http, url, token, |s, b| s == 403 && b.contains(&denial)).await;
        assert_eq!(status, 403, "{b} {name}, installed: {body}");
        assert!(body.contains(&denial), "{b} {name}: {body}");

        std::fs::remove_file(self.plugins.join(format!("{name}.wasm"))).unwrap();
        let (status, body) = delete_until(http, url, token, |s, _| s != 403).await;
        assert_ne!(status, 403, "{b} {name}, removed: {body}");
    }

    /// A read, which answers 404.
    async fn read(&self, name: &str) {
        let reply = self
            .http
            .get(self.url)
            .bearer_auth(self.token)
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let body = reply.text().await.unwrap();
        assert_eq!(status, 404, "{} {name}: {body}", self.backend);
    }

    /// The audience rule `name` (built in `project`) answers every request once installed
    /// (counted in `metrics`), and no longer once removed.
    async fn rule_answers_while_installed(&self, name: &str, project: &Path, metrics: &str) {
        let b = self.backend;
        let calls = || accepted_calls(self.http, metrics, name);
        install(project, self.plugins, name);
        let give_up = Instant::now() + Duration::from_secs(30);
        while calls().await == 0 {
            assert!(Instant::now() < give_up, "{b} {name} never answered");
            self.read(name).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = calls().await;
        for _ in 0..3 {
            self.read(name).await;
        }
        assert!(calls().await >= before + 3, "{b} {name}");

        std::fs::remove_file(self.plugins.join(format!("{name}.wasm"))).unwrap();
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let before = calls().await;
            self.read(name).await;
            if calls().await == before {
                break;
            }
            assert!(Instant::now() < give_up, "{b} {name} still answers");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many `accept` calls of the audience rule `name` answered `ok`, from `/metrics`.
async fn accepted_calls(http: &reqwest::Client, metrics: &str, name: &str) -> u64 {
    let text = http
        .get(metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let plugin = format!("plugin=\"{name}\"");
    text.lines()
        .filter(|l| {
            l.starts_with("hestia_plugin_calls_total{")
                && l.contains(&plugin)
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
