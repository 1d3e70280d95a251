//! Plugins in Python and JavaScript from the binary alone: from an empty directory outside
//! the repository, `plugin new` → `plugin build` → `plugin test --cases` → `plugin check`,
//! then into a running server's plugin directory, where the template's rule (deletes are
//! refused) takes effect on reload and removing the file restores the default, on both
//! databases.
//!
//! The build tools (componentize-py on PATH, componentize-js in `HESTIA_JS_TOOLS`, node) are
//! installed by `scripts/plugin-tools.sh`, which `scripts/test` runs and which sets
//! `HESTIA_REQUIRE_PLUGIN_TOOLS=1`: there a missing tool fails this test. A plain `cargo
//! test` without the tools reports the test as NOT RUN on standard error.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::plugin_cli::hestia_with;
use crate::support::{Server, TestDb, client_trusting, system_token_of};

/// What is missing to build Python and JavaScript plugins, if anything.
fn missing_tools() -> Option<String> {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut missing = Vec::new();
    if !runs("componentize-py", "--version") {
        missing.push("componentize-py on PATH");
    }
    if !runs("node", "--version") {
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

/// `plugin new` → `build` → `test --cases` → `check` in `work`; returns the project folder.
fn new_built_and_checked(work: &Path, name: &str, lang: &str) -> std::path::PathBuf {
    let step = |dir: &Path, args: &[&str]| {
        let (ok, out, err) = hestia_with(dir, args, &[]);
        assert!(ok, "{lang}: hestia {}: {out}{err}", args.join(" "));
        out
    };
    step(
        work,
        &[
            "plugin",
            "new",
            name,
            "--kind",
            "scope-policy",
            "--lang",
            lang,
        ],
    );
    let project = work.join(name);
    let built = step(&project, &["plugin", "build"]);
    assert!(built.contains(&format!("{name}.wasm")), "{built}");
    let wasm = format!("{name}.wasm");
    let tested = step(
        &project,
        &["plugin", "test", &wasm, "--cases", "cases.json"],
    );
    assert!(tested.contains("3 passed, 0 failed"), "{lang}: {tested}");
    let checked = step(&project, &["plugin", "check", &wasm]);
    assert!(
        checked.contains("world    scope-policy"),
        "{lang}: {checked}"
    );
    assert!(
        checked.contains("hestia:plugin/host@0.3.0"),
        "{lang}: {checked}"
    );
    project
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

#[tokio::test]
async fn python_and_javascript_plugins_from_the_binary_alone_take_effect_in_a_running_server() {
    if let Some(missing) = missing_tools() {
        let message = format!(
            "NOT RUN: python_and_javascript_plugins…: missing {missing}; \
             scripts/plugin-tools.sh installs the pinned tools"
        );
        assert!(
            std::env::var_os("HESTIA_REQUIRE_PLUGIN_TOOLS").is_none(),
            "{message}"
        );
        // Past the test harness's capture, so that a passing run still shows it.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{message}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let projects: Vec<(&str, std::path::PathBuf)> =
        [("python", "py-no-deletes"), ("js", "js-no-deletes")]
            .into_iter()
            .map(|(lang, name)| (name, new_built_and_checked(work.path(), name, lang)))
            .collect();

    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &["--database-url", &db.url]);
        let http = client_trusting(&server.data_dir.join("tls").join("ca.pem"));
        let token = system_token_of(&server, dir.path(), &db, &http, "system/*.*").await;
        let url = format!("{}/fhir/r4/Patient/nobody", server.url);
        let plugins = server.data_dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for (name, project) in &projects {
            let (status, body) = delete_until(&http, &url, &token, |_, _| true).await;
            assert_ne!(status, 403, "{name}, before: {body}");

            std::fs::copy(
                project.join(format!("{name}.toml")),
                plugins.join(format!("{name}.toml")),
            )
            .unwrap();
            let tmp = plugins.join(format!(".{name}.wasm.tmp"));
            std::fs::copy(project.join(format!("{name}.wasm")), &tmp).unwrap();
            std::fs::rename(&tmp, plugins.join(format!("{name}.wasm"))).unwrap();
            let denial = format!("plugin {name} denied: deletes are disabled on this server");
            let (status, body) =
                delete_until(&http, &url, &token, |s, b| s == 403 && b.contains(&denial)).await;
            assert_eq!(status, 403, "{} {name}, installed: {body}", db.backend);
            assert!(body.contains(&denial), "{} {name}: {body}", db.backend);

            std::fs::remove_file(plugins.join(format!("{name}.wasm"))).unwrap();
            let (status, body) = delete_until(&http, &url, &token, |s, _| s != 403).await;
            assert_ne!(status, 403, "{} {name}, removed: {body}", db.backend);
        }
    }
}
