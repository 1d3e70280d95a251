//! `hestia plugin check | new | test` run as the real binary, and `GET /admin/plugins`.
//!
//! `new_plugin_of_each_kind_builds_checks_and_passes_its_cases` follows the steps of
//! `docs/plugins.md`: new → cargo test → cargo build → check → test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::plugins::guests;
use crate::support::{TestDb, call, hestia, mint, raw_app_on};

/// The repository's `sdk/` folder.
fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .join("sdk")
}

#[test]
fn check_names_the_world_or_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = hestia(dir.path(), &["plugin", "check", guests::ALLOW_ALL], "");
    assert!(ok, "{err}");
    assert!(out.contains("world    scope-policy"), "{out}");
    assert!(out.contains("package  hestia:plugin@0.1.0"), "{out}");
    assert!(out.contains("hestia:plugin/host@0.1.0"), "{out}");

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not WebAssembly").unwrap();
    // The smallest core module: magic and version, no sections.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let missing = dir.path().join("missing.wasm");
    for (file, why) in [
        (&garbage, "not a valid webassembly component"),
        (&core, "core webassembly module, not a component"),
        (&missing, "cannot read"),
    ] {
        let (ok, out, err) = hestia(dir.path(), &["plugin", "check", file.to_str().unwrap()], "");
        assert!(!ok, "{} passed: {out}", file.display());
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.to_lowercase().contains(why), "{err}");
    }
}

/// `cargo build --release --target wasm32-wasip2` of a generated crate, into a target
/// directory shared by the tests (so the SDK and its dependencies compile once).
/// `hestia ARGS` in `dir` with extra environment variables; (success, stdout, stderr).
pub(crate) fn hestia_with(
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (bool, String, String) {
    let out = Command::new(crate::support::hestia_bin())
        .current_dir(dir)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hestia");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cargo build --release --target wasm32-wasip2 ARGS` in `dir`, into the test target
/// directory `target_name`; returns the folder of the built components.
fn cargo_build_in(dir: &Path, target_name: &str, args: &[&str]) -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(target_name);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .args(args);
    without_host_build_vars(&mut cmd);
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("wasm32-wasip2").join("release")
}

#[test]
fn new_plugin_of_each_kind_builds_checks_and_passes_its_cases() {
    let dir = tempfile::tempdir().unwrap();
    // One target directory for the three projects (and every run): they share every dependency.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-new");
    for kind in ["scope-policy", "audience-rule", "resource-validator"] {
        let name = format!("my-{kind}");
        let (ok, out, err) = hestia(dir.path(), &["plugin", "new", &name, "--kind", kind], "");
        assert!(ok, "{err}");
        assert!(out.contains("hestia plugin build"), "{out}");
        let crate_dir = dir.path().join(&name);
        for file in [
            "Cargo.toml",
            "src/lib.rs",
            "cases.json",
            &format!("{name}.toml"),
            "hestia/sdk/src/lib.rs",
            "hestia/wit/v0.3.0/plugin.wit",
        ] {
            assert!(crate_dir.join(file).is_file(), "{name}: no {file}");
        }
        // A second `new` of the same name does not overwrite it.
        let (ok, _, err) = hestia(dir.path(), &["plugin", "new", &name, "--kind", kind], "");
        assert!(!ok && err.contains("already exists"), "{err}");

        // Built from the SDK and contract the binary wrote into the project.
        let (ok, out, err) = hestia_with(
            &crate_dir,
            &["plugin", "build"],
            &[("CARGO_TARGET_DIR", target.to_str().unwrap())],
        );
        assert!(ok, "{name}: {out}{err}");
        let wasm = format!("{name}.wasm");
        let wasm = wasm.as_str();
        let (ok, out, err) = hestia(&crate_dir, &["plugin", "check", wasm], "");
        assert!(ok, "{name}: {err}");
        assert!(out.contains(&format!("world    {kind}")), "{out}");

        let manifest = format!("{name}.toml");
        let test = |cases: &str| {
            hestia(
                &crate_dir,
                &[
                    "plugin",
                    "test",
                    wasm,
                    "--manifest",
                    &manifest,
                    "--cases",
                    cases,
                ],
                "",
            )
        };
        let (ok, out, err) = test("cases.json");
        assert!(ok, "{name}: {out}{err}");
        assert!(out.contains(", 0 failed"), "{out}");
        assert!(!out.contains("FAIL"), "{out}");

        // Each generated case, with the opposite decision expected, fails.
        assert_flipped_cases_fail(&crate_dir, "cases.json", &test);

        // A case of another world is a failure, not a silent allow.
        let other = if kind == "scope-policy" {
            json!([{"name": "x", "accept": {"audiences": []}, "expect": {"decision": "allow"}}])
        } else {
            json!([{"name": "x", "authorize": {"request": {"interaction": "read"}}, "expect": {"decision": "allow"}}])
        };
        std::fs::write(crate_dir.join("other.json"), other.to_string()).unwrap();
        let (ok, out, _) = test("other.json");
        assert!(!ok && out.contains("but this plugin is a"), "{out}");
    }
}

/// Rewrites every case of `cases` that expects a decision to expect the opposite one, and
/// checks that `hestia plugin test` fails each of them: the cases can fail.
fn assert_flipped_cases_fail(
    dir: &Path,
    cases: &str,
    test: &dyn Fn(&str) -> (bool, String, String),
) {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join(cases)).unwrap()).unwrap();
    let flipped: Vec<serde_json::Value> = cases
        .iter()
        .filter(|c| c["expect"]["decision"].is_string())
        .map(|c| {
            let mut c = c.clone();
            let opposite = if c["expect"]["decision"] == "deny" {
                "allow"
            } else {
                "deny"
            };
            c["expect"] = json!({"decision": opposite});
            c
        })
        .collect();
    assert!(
        !flipped.is_empty(),
        "{}: no case expects a decision",
        dir.display()
    );
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), serde_json::to_string(&flipped).unwrap()).unwrap();
    let (ok, out, err) = test(wrong.path().to_str().unwrap());
    assert!(!ok, "{}: wrong cases passed: {out}", dir.display());
    assert_eq!(out.matches("FAIL").count(), flipped.len(), "{out}");
    assert!(
        err.contains(&format!("{0} of {0} cases failed", flipped.len())),
        "{err}"
    );
}

/// The built-in `smart-scopes` passes `plugins/smart-scopes/cases.json`, whose cases give
/// the account behind the token (`user`: roles, fhirUser, grants) as a policy author
/// does to test user narrowing offline; every case that expects a decision can fail, and
/// a misspelt `user` field is refused naming it.
#[test]
fn smart_scopes_passes_its_cases_with_users() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .join("plugins/smart-scopes");
    let work = tempfile::tempdir().unwrap();
    let builtin = hestia::plugins::default_builtins()
        .into_iter()
        .find(|b| b.name == "smart-scopes")
        .expect("smart-scopes is built in");
    let wasm = work.path().join("smart-scopes.wasm");
    std::fs::write(&wasm, &builtin.wasm).unwrap();
    let data = work.path().join("data");
    let test = |cases: &str| {
        hestia(
            &dir,
            &[
                "plugin",
                "test",
                wasm.to_str().unwrap(),
                "--cases",
                cases,
                "--data-dir",
                data.to_str().unwrap(),
            ],
            "",
        )
    };
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let with_user = |call: &str| cases.iter().any(|c| c[call]["user"].is_object());
    assert!(with_user("authorize") && with_user("grant"));
    let (ok, out, err) = test("cases.json");
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "smart-scopes (scope-policy): {} passed, 0 failed",
            cases.len()
        )),
        "{out}"
    );
    assert_flipped_cases_fail(&dir, "cases.json", &test);

    let misspelt = work.path().join("misspelt.json");
    let case = json!([{
        "name": "misspelt",
        "grant": {"requested": "user/*.rs", "user": {"role": ["patient"]}},
        "expect": {"decision": "deny"},
    }]);
    std::fs::write(&misspelt, case.to_string()).unwrap();
    let (ok, _, err) = test(misspelt.to_str().unwrap());
    assert!(!ok);
    assert!(err.contains("unknown field `role`"), "{err}");
}

/// The example plugins of `plugins/examples/`, built as the components they ship as, pass
/// their `cases.json` through `hestia plugin test` with their manifests (the same check
/// an author runs in CI); every case that expects a decision can fail.
#[test]
fn example_plugins_pass_their_cases_as_built_components() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .join("plugins");
    let examples = [
        ("tenant-isolation", "scope-policy"),
        ("trusted-audiences", "audience-rule"),
        ("us-core-validator", "resource-validator"),
        ("consent-labels", "scope-policy"),
    ];
    let mut args = vec!["--manifest-path", "Cargo.toml"];
    for (name, _) in examples {
        args.extend(["-p", name]);
    }
    let built = cargo_build_in(&plugins, "plugin-examples", &args);
    for (name, kind) in examples {
        let dir = plugins.join("examples").join(name);
        let wasm = built.join(format!("{}.wasm", name.replace('-', "_")));
        let wasm = wasm.to_str().unwrap();
        let manifest = format!("{name}.toml");
        // `plugin test` caches compiled code in the configuration's data directory: not in
        // the source tree.
        let data = tempfile::tempdir().unwrap();
        let data = data.path().to_str().unwrap().to_string();
        let test = |cases: &str| {
            hestia(
                &dir,
                &[
                    "plugin",
                    "test",
                    wasm,
                    "--manifest",
                    &manifest,
                    "--cases",
                    cases,
                    "--data-dir",
                    &data,
                ],
                "",
            )
        };
        let (ok, out, err) = test("cases.json");
        let cases: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap())
                .unwrap();
        assert!(ok, "{name}: {out}{err}");
        assert!(
            out.contains(&format!(
                "{name} ({kind}): {} passed, 0 failed",
                cases.len()
            )),
            "{out}"
        );
        // Allow, deny with its reason, and constraints (for scope policies) are all covered.
        let expects =
            |f: &dyn Fn(&serde_json::Value) -> bool| cases.iter().any(|c| f(&c["expect"]));
        assert!(
            expects(&|e| e["decision"] == "allow"),
            "{name}: no allow case"
        );
        assert!(
            expects(&|e| e["decision"] == "deny" && e["reason_contains"].is_string()),
            "{name}: no deny case with its reason"
        );
        if kind == "scope-policy" {
            assert!(
                expects(&|e| e["constraints"].is_array()),
                "{name}: no case with constraints"
            );
        }
        assert_flipped_cases_fail(&dir, "cases.json", &test);
    }
}

#[tokio::test]
async fn admin_plugins_needs_the_admin_scope() {
    let db = TestDb::sqlite();
    let (app, state) = raw_app_on(&db, "").await;
    let get = |token: Option<String>| {
        let app = app.clone();
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            call(&app, "GET", "/admin/plugins", &headers, "").await
        }
    };

    let none = get(None).await;
    assert_eq!(none.status, 401);
    assert!(
        none.header("www-authenticate")
            .starts_with("Bearer realm=\"hestia-admin\"")
    );

    let bad = get(Some("not-a-token".into())).await;
    assert_eq!(bad.status, 401);
    assert!(
        bad.header("www-authenticate")
            .contains("error=\"invalid_token\""),
        "{}",
        bad.header("www-authenticate")
    );

    let fhir_only = mint(&state, json!({"scope": "system/*.*"})).await;
    let denied = get(Some(fhir_only)).await;
    assert_eq!(denied.status, 403);
    let challenge = denied.header("www-authenticate");
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"hestia:admin\""), "{challenge}");

    let admin = mint(&state, json!({"scope": "hestia:admin"})).await;
    let listed = get(Some(admin)).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let names: Vec<&str> = listed.body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in ["smart-scopes", "audience", "structural-validator"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let first = &listed.body["plugins"][0];
    for field in ["kind", "version", "source", "state"] {
        assert!(first[field].is_string(), "{first}");
    }
    assert_eq!(first["source"], "builtin");
    assert_eq!(first["state"], "active");
}

/// The ```` ```sh ```` blocks of `markdown`, in order.
pub(crate) fn sh_blocks(markdown: &str) -> Vec<String> {
    fenced_blocks(markdown, &["```sh"])
}

/// The blocks of `markdown` whose opening fence is one of `fences`, in order.
fn fenced_blocks(markdown: &str, fences: &[&str]) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, fence) if fences.contains(&fence) => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Whether the Python and JavaScript blocks of the tutorial run: when their tools are
/// there, and always under `HESTIA_REQUIRE_PLUGIN_TOOLS` (where a missing tool fails).
fn lang_tools_present() -> bool {
    match crate::plugin_langs::missing_tools() {
        None => true,
        Some(missing) => {
            let message = format!(
                "NOT RUN: the Python and JavaScript blocks of docs/plugins.md: missing {missing}; \
                 scripts/plugin-tools.sh installs the pinned tools"
            );
            assert!(
                std::env::var_os("HESTIA_REQUIRE_PLUGIN_TOOLS").is_none(),
                "{message}"
            );
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{message}");
            false
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `docs/plugins.md` runs as written: every `sh` block, in order, in one empty directory
/// (one bash per block; the working directory and the variables a block sets carry over
/// to the next), with `hestia` on the PATH. Replaced: `path/to/hestia/sdk` by the
/// checkout's `sdk/`, port 8080 by a free one, and `npm install` left out when
/// `HESTIA_JS_TOOLS` names where it ran. The block starting with `# In another terminal`
/// runs in the background until the end. The `sh lang-tools` blocks run when the Python
/// and JavaScript tools are there ([`lang_tools_present`]). One arrangement that is not in
/// the page: the generated crate's `target/` links to a directory kept between test runs,
/// so that the SDK compiles once.
/// Long: runs the blocks of one document in the order the page gives them.
#[test]
fn tutorial_runs_as_written() {
    use std::os::unix::process::CommandExt;
    let doc = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .join("docs/plugins.md");
    let port = free_port().to_string();
    let lang_tools = lang_tools_present();
    let js_tools = std::env::var_os("HESTIA_JS_TOOLS").is_some();
    // The Python and JavaScript blocks, `sh lang-tools`, need their build tools.
    let fences: &[&str] = match lang_tools {
        true => &["```sh", "```sh lang-tools"],
        false => &["```sh"],
    };
    let blocks: Vec<String> = fenced_blocks(&std::fs::read_to_string(&doc).unwrap(), fences)
        .into_iter()
        .map(|b| {
            let b = b
                .replace("path/to/hestia/sdk", sdk_dir().to_str().unwrap())
                .replace("localhost:8080", &format!("localhost:{port}"))
                .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
            match js_tools {
                true => b.replace("\nnpm install ", "\n: npm install "),
                false => b,
            }
        })
        .collect();
    assert!(blocks.len() >= 8, "{} sh blocks", blocks.len());

    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join(".bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(crate::support::hestia_bin(), bin.join("hestia")).unwrap();
    let state = work.path().join(".state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("cwd"), work.path().to_str().unwrap()).unwrap();
    std::fs::write(state.join("env"), "").unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bash = |script: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .env("PATH", &path)
            .env("RUST_LOG", "warn")
            .current_dir(work.path());
        without_host_build_vars(&mut cmd);
        cmd
    };

    struct Background(std::process::Child);
    impl Drop for Background {
        fn drop(&mut self) {
            // The whole process group: bash and the hestia it started.
            // `kill -TERM -PGID` is not a group kill for procps' kill; `-s TERM -- -PGID` is.
            let _ = Command::new("kill")
                .args(["-s", "TERM", "--"])
                .arg(format!("-{}", self.0.id()))
                .status();
            let _ = self.0.wait();
        }
    }
    let mut server: Option<Background> = None;
    let mut transcript = String::new();
    for (n, block) in blocks.iter().enumerate() {
        if block.starts_with("# In another terminal") {
            let mut child = bash(block)
                .stdout(std::process::Stdio::piped())
                .process_group(0)
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            server = Some(Background(child));
            use std::io::BufRead;
            let listening = std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.starts_with("hestia: listening on"));
            assert!(listening, "block {n} did not start a server:\n{block}");
            continue;
        }
        // `set -a` exports every variable the block sets, so that the next block sees it.
        let script = format!(
            "set -euo pipefail\ncd \"$(cat {state}/cwd)\"\nsource {state}/env\nset -a\n{block}\n\
             pwd > {state}/cwd\nexport -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_)=' > {state}/env\n",
            state = state.display()
        );
        let out = bash(&script).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "block {n} failed:\n{block}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        transcript.push_str(&stdout);
        // After `hestia plugin new`, keep the crate's builds between test runs.
        let crate_dir = work.path().join("no-deletes");
        if crate_dir.is_dir() && !crate_dir.join("target").exists() {
            let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tutorial-target");
            std::fs::create_dir_all(&cache).unwrap();
            std::os::unix::fs::symlink(&cache, crate_dir.join("target")).unwrap();
        }
    }
    assert!(server.is_some(), "the tutorial starts no server");
    // What the page says comes back, in this order.
    let mut expected = vec![
        "204",
        "world    scope-policy",
        ", 0 failed",
        "plugin no-deletes denied: deletes are disabled on this server",
        "403",
        "no-deletes            scope-policy        10",
        "active  ../hestia-data/plugins/no-deletes.wasm",
        "plugin no-deletes denied: deletes are switched off here",
        "403",
    ];
    if lang_tools {
        expected.extend([
            "2 passed", // pytest
            "3 passed, 0 failed",
            "world    scope-policy",
            "pass 2", // node --test
            "3 passed, 0 failed",
            "world    scope-policy",
        ]);
    }
    let mut rest = transcript.as_str();
    for expected in expected {
        let at = rest
            .find(expected)
            .unwrap_or_else(|| panic!("{expected:?} missing (in order) from:\n{transcript}"));
        rest = &rest[at + expected.len()..];
    }
}

include!("../../../tools/guest_cargo.rs");

/// A reader that goes away (`hestia plugin new … | head -1`) ends a command quietly: the
/// work is done, the status is success, and nothing panics on the closed pipe.
#[test]
fn a_closed_standard_output_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(crate::support::hestia_bin())
        .current_dir(dir.path())
        .args(["plugin", "new", "piped", "--kind", "scope-policy"])
        .args(["--lang", "js"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hestia");
    // The reader goes before the command writes its first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(dir.path().join("piped/component.js").is_file());
}
