//! Accounts bounded by their rights on every FHIR request: accounts (a patient, a
//! practitioner, a practitioner restricted to one organization, an auditor, an account with
//! no role) × scopes × interactions, each cell asserting exactly what is visible; and a
//! right removed while a token is out takes effect on the next request.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Reply, TestDb, call, hestia, mint, raw_app_on};

const PASSWORD: &str = "a-long-password";

const CLINIC_A: &str = r#"
name = "clinic-a"
grants = [
  "Patient.rs?organization=Organization/clinic-a",
  "Observation.rs?subject:Patient.organization=Organization/clinic-a",
]
"#;

const AUDITOR: &str = "name = \"auditor\"\ngrants = [\"*.rs\"]\n";

fn run(dir: &Path, db: &TestDb, args: &[&str], stdin: &str) -> String {
    let mut all = args.to_vec();
    all.extend(["--database-url", db.url.as_str()]);
    let (ok, out, err) = hestia(dir, &all, stdin);
    assert!(ok, "{}: hestia {args:?}: {out}{err}", db.backend);
    out
}

/// Creates the account and answers its id.
fn account(dir: &Path, db: &TestDb, name: &str, args: &[&str]) -> String {
    let mut all = vec!["user", "add", name, "--password-stdin"];
    all.extend_from_slice(args);
    let out: Value = serde_json::from_str(&run(dir, db, &all, &format!("{PASSWORD}\n"))).unwrap();
    out["id"].as_str().unwrap().to_string()
}

async fn put(app: &axum::Router, token: &str, resource: Value) {
    let url = format!(
        "/fhir/r4/{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    let auth = format!("Bearer {token}");
    let reply = call(
        app,
        "PUT",
        &url,
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/fhir+json"),
        ],
        resource.to_string(),
    )
    .await;
    assert!(matches!(reply.status, 200 | 201), "{url}: {}", reply.body);
}

/// `Type/id` of the entries of a searchset (matches and includes), sorted; or the status.
/// A batch-response lists what each entry saw the same way, a refused entry as its status.
fn seen(reply: &Reply) -> Seen {
    if reply.status != 200 {
        return Err(reply.status);
    }
    let mut ids = seen_in(&reply.body);
    ids.sort();
    Ok(ids)
}

fn seen_in(resource: &Value) -> Vec<String> {
    if resource["resourceType"] != "Bundle" {
        return vec![format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        )];
    }
    let entries = resource["entry"].as_array().cloned().unwrap_or_default();
    if resource["type"] == "batch-response" {
        return entries
            .iter()
            .flat_map(|e| match e.get("resource") {
                Some(r)
                    if e["response"]["status"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("200") =>
                {
                    seen_in(r)
                }
                _ => vec![e["response"]["status"].as_str().unwrap_or_default()[..3].to_string()],
            })
            .collect();
    }
    entries
        .iter()
        .filter(|e| e["search"]["mode"] != "outcome")
        .flat_map(|e| seen_in(&e["resource"]))
        .collect()
}

/// What one request sees: the entries, or the status of a refusal.
type Seen = Result<Vec<String>, u16>;

/// (account, scope, launch patient, method, path, what it sees)
type Cell<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, &'a str, Seen);

fn ok(ids: &[&str]) -> Seen {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    Ok(v)
}

/// A batch of three entries: a patient's own Patient, another's, a search of Observation.
fn batch() -> Value {
    json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/amy"}},
        {"request": {"method": "GET", "url": "Patient/bob"}},
        {"request": {"method": "GET", "url": "Observation"}},
    ]})
}

const ALL_PATIENTS: &[&str] = &["Patient/amy", "Patient/bob"];
const ALL_OBS: &[&str] = &["Observation/obs-amy", "Observation/obs-bob"];

/// accounts (a patient, a practitioner, a practitioner of clinic A, an auditor, no role) ×
/// scopes (`user/*.rs`, `user/Patient.r`, `patient/*.rs` with and without a launch
/// patient, v1 `user/*.read`, `user/*.cruds`) × interactions (read, search, chained search,
/// `_include`, `_revinclude`, `_has`, history, `$everything`, batch entries, create).
/// `BATCH` posts [`batch`]; its entries are listed each as it saw (a refusal as its status).
#[rustfmt::skip]
fn matrix() -> Vec<Cell<'static>> {
    vec![
        ("amy", "user/*.rs", None, "GET", "/Patient", ok(&["Patient/amy"])),
        ("amy", "user/*.rs", None, "GET", "/Observation", ok(&["Observation/obs-amy"])),
        ("amy", "user/*.read", None, "GET", "/Observation", ok(&["Observation/obs-amy"])),
        ("amy", "user/Patient.r", None, "GET", "/Patient/bob", Err(403)),
        ("amy", "user/Patient.r", None, "GET", "/Patient/amy", ok(&["Patient/amy"])),
        ("amy", "user/Patient.r", None, "GET", "/Observation", Err(403)),
        ("amy", "patient/*.rs", Some("amy"), "GET", "/Observation", ok(&["Observation/obs-amy"])),
        ("amy", "patient/*.rs", Some("bob"), "GET", "/Observation", Err(403)),
        ("amy", "patient/*.rs", None, "GET", "/Observation", ok(&["Observation/obs-amy"])),
        ("amy", "user/*.rs", None, "GET", "/Observation?subject:Patient.organization=Organization/clinic-b", ok(&[])),
        ("amy", "user/*.rs", None, "GET", "/Patient?_revinclude=Observation:subject", ok(&["Observation/obs-amy", "Patient/amy"])),
        ("amy", "user/*.rs", None, "GET", "/Observation?_include=Observation:subject", ok(&["Observation/obs-amy", "Patient/amy"])),
        ("amy", "user/*.rs", None, "GET", "/Patient?_has:Observation:subject:code=29463-7", ok(&["Patient/amy"])),
        ("amy", "user/*.rs", None, "GET", "/Patient/bob/_history", Err(403)),
        ("amy", "user/*.rs", None, "GET", "/Patient/amy/_history", ok(&["Patient/amy"])),
        ("amy", "user/*.rs", None, "GET", "/Observation/_history", ok(&["Observation/obs-amy"])),
        ("amy", "user/*.rs", None, "GET", "/Patient/bob/$everything", Err(403)),
        ("amy", "user/*.rs", None, "GET", "/Patient/amy/$everything", ok(&["Observation/obs-amy", "Patient/amy"])),
        ("amy", "user/*.rs", None, "BATCH", "", ok(&["Patient/amy", "403", "Observation/obs-amy"])),
        ("amy", "user/*.cruds", None, "POST", "/Patient", Err(403)),
        ("doc", "user/*.rs", None, "GET", "/Patient", ok(ALL_PATIENTS)),
        ("doc", "user/*.rs", None, "GET", "/Observation", ok(ALL_OBS)),
        ("doc", "user/*.read", None, "GET", "/Observation", ok(ALL_OBS)),
        ("doc", "user/Patient.r", None, "GET", "/Patient/bob", ok(&["Patient/bob"])),
        ("doc", "patient/*.rs", Some("bob"), "GET", "/Observation", ok(&["Observation/obs-bob"])),
        ("doc", "patient/*.rs", None, "GET", "/Observation", Err(403)),
        ("doc", "user/*.rs", None, "GET", "/Observation?subject:Patient.organization=Organization/clinic-b", ok(&["Observation/obs-bob"])),
        ("doc", "user/*.rs", None, "GET", "/Patient?_has:Observation:subject:code=29463-7", ok(ALL_PATIENTS)),
        ("doc", "user/*.rs", None, "GET", "/Patient/bob/$everything", ok(&["Observation/obs-bob", "Patient/bob"])),
        ("doc", "user/*.rs", None, "BATCH", "", ok(&["Patient/amy", "Patient/bob", "Observation/obs-amy", "Observation/obs-bob"])),
        ("clin", "user/*.rs", None, "GET", "/Patient", ok(&["Patient/amy"])),
        ("clin", "user/*.rs", None, "GET", "/Observation", ok(&["Observation/obs-amy"])),
        ("clin", "user/*.read", None, "GET", "/Patient", ok(&["Patient/amy"])),
        ("clin", "user/Patient.rs", None, "GET", "/Patient/bob", Err(403)),
        ("clin", "user/Patient.r", None, "GET", "/Patient/amy", ok(&["Patient/amy"])),
        ("clin", "patient/*.rs", Some("amy"), "GET", "/Observation", ok(&["Observation/obs-amy"])),
        ("clin", "patient/*.rs", Some("bob"), "GET", "/Observation", ok(&[])),
        ("clin", "patient/*.rs", None, "GET", "/Observation", Err(403)),
        ("clin", "user/*.rs", None, "GET", "/Observation?subject:Patient.organization=Organization/clinic-b", ok(&[])),
        ("clin", "user/*.rs", None, "GET", "/Patient?_revinclude=Observation:subject", ok(&["Observation/obs-amy", "Patient/amy"])),
        ("clin", "user/*.rs", None, "GET", "/Observation?_include=Observation:subject", ok(&["Observation/obs-amy", "Patient/amy"])),
        ("clin", "user/*.rs", None, "GET", "/Patient?_has:Observation:subject:code=29463-7", ok(&["Patient/amy"])),
        ("clin", "user/*.rs", None, "GET", "/Patient/bob/_history", Err(403)),
        ("clin", "user/*.rs", None, "GET", "/Patient/amy/$everything", ok(&["Observation/obs-amy", "Patient/amy"])),
        ("clin", "user/*.rs", None, "GET", "/Patient/bob/$everything", Err(403)),
        ("clin", "user/*.rs", None, "BATCH", "", ok(&["Patient/amy", "403", "Observation/obs-amy"])),
        ("clin", "user/*.cruds", None, "POST", "/Patient", Err(403)),
        ("audit", "user/*.rs", None, "GET", "/Patient", ok(ALL_PATIENTS)),
        ("audit", "user/*.cruds", None, "POST", "/Patient", Err(403)),
        ("nobody", "user/*.rs", None, "GET", "/Patient", Err(403)),
        ("nobody", "user/*.read", None, "GET", "/Observation", Err(403)),
        ("nobody", "user/Patient.r", None, "GET", "/Patient/amy", Err(403)),
        ("nobody", "patient/*.rs", Some("amy"), "GET", "/Observation", Err(403)),
        ("nobody", "user/*.rs", None, "BATCH", "", ok(&["403", "403", "403"])),
        ("nobody", "user/*.cruds", None, "POST", "/Patient", Err(403)),
        // Last: the one write that succeeds adds a Patient the rows above do not expect.
        ("doc", "user/*.cruds", None, "POST", "/Patient", Err(201)),
    ]
}

/// The data (amy of clinic A, bob of clinic B, an Observation each, written by a backend
/// service) and the accounts of the matrix, on `db`.
struct World {
    app: axum::Router,
    state: hestia::http::AppState,
    dir: tempfile::TempDir,
    ids: Vec<(&'static str, String)>,
}

impl World {
    async fn new(db: &TestDb) -> World {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (app, state) = raw_app_on(db, "").await;
        let system = mint(&state, json!({"scope": "system/*.*"})).await;
        for (patient, clinic) in [("amy", "clinic-a"), ("bob", "clinic-b")] {
            let resource = json!({"resourceType": "Patient", "id": patient,
                "managingOrganization": {"reference": format!("Organization/{clinic}")}});
            put(&app, &system, resource).await;
            let obs = json!({"resourceType": "Observation", "id": format!("obs-{patient}"), "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, "subject": {"reference": format!("Patient/{patient}")}});
            put(&app, &system, obs).await;
        }
        let ids = vec![
            (
                "amy",
                account(
                    d,
                    db,
                    "amy",
                    &["--fhir-user", "Patient/amy", "--role", "patient"],
                ),
            ),
            ("doc", account(d, db, "doc", &["--role", "practitioner"])),
            (
                "clin",
                account(d, db, "clin", &["--role", "clinic-a-staff"]),
            ),
            ("audit", account(d, db, "audit", &[])),
            ("nobody", account(d, db, "nobody", &[])),
        ];
        for (name, text, bind) in [
            ("clinic-a.toml", CLINIC_A, ["--role", "clinic-a-staff"]),
            ("auditor.toml", AUDITOR, ["--user", "audit"]),
        ] {
            let file = d.join(name);
            std::fs::write(&file, text).unwrap();
            run(
                d,
                db,
                &["policy", "add", file.to_str().unwrap(), bind[0], bind[1]],
                "",
            );
        }
        World {
            app,
            state,
            dir,
            ids,
        }
    }

    async fn token(&self, who: &str, scope: &str, launch: Option<&str>) -> String {
        let id = &self.ids.iter().find(|(n, _)| *n == who).unwrap().1;
        let mut claims = json!({"sub": id, "client_id": "app-1", "scope": scope});
        if let Some(p) = launch {
            claims["patient"] = json!(p);
        }
        mint(&self.state, claims).await
    }

    /// `method path` with `token`; `POST` creates a Patient, `BATCH` posts [`batch`].
    async fn request(&self, token: &str, method: &str, path: &str) -> Reply {
        let auth = format!("Bearer {token}");
        let (method, body) = match method {
            "POST" => ("POST", json!({"resourceType": "Patient"}).to_string()),
            "BATCH" => ("POST", batch().to_string()),
            other => (other, String::new()),
        };
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/fhir+json"),
        ];
        call(
            &self.app,
            method,
            &format!("/fhir/r4{path}"),
            &headers,
            body,
        )
        .await
    }
}

#[tokio::test]
async fn accounts_see_exactly_what_their_rights_allow() {
    for db in TestDb::all().await {
        let world = World::new(&db).await;
        // Every cell is tried; the failure lists each that saw something else.
        let mut wrong = Vec::new();
        for (who, scope, launch, method, path, expected) in matrix() {
            let token = world.token(who, scope, launch).await;
            let reply = world.request(&token, method, path).await;
            let got = seen(&reply);
            if got != expected {
                wrong.push(format!(
                    "{who} with {scope} (launch {launch:?}): {method} {path}: expected {expected:?}, got {got:?}: {}",
                    reply.body
                ));
            }
        }
        assert!(wrong.is_empty(), "{}:\n{}", db.backend, wrong.join("\n"));
    }
}

/// A role or policy removed while a token is out: the token's next request is refused.
#[tokio::test]
async fn a_right_removed_refuses_the_next_request() {
    for db in TestDb::all().await {
        let world = World::new(&db).await;
        let d = world.dir.path();
        let doc = world.token("doc", "user/*.rs", None).await;
        let before = world.request(&doc, "GET", "/Patient").await;
        assert_eq!(seen(&before), ok(ALL_PATIENTS), "{}", db.backend);
        run(d, &db, &["user", "set", "doc", "--no-roles"], "");
        let after = world.request(&doc, "GET", "/Patient").await;
        assert_eq!(after.status, 403, "{}: {}", db.backend, after.body);
        assert!(
            after.diagnostics().contains("smart-scopes"),
            "{}",
            after.body
        );

        let clin = world.token("clin", "user/*.rs", None).await;
        let before = world.request(&clin, "GET", "/Patient").await;
        assert_eq!(seen(&before), ok(&["Patient/amy"]), "{}", db.backend);
        run(d, &db, &["policy", "remove", "clinic-a"], "");
        let gone = world.request(&clin, "GET", "/Patient").await;
        assert_eq!(gone.status, 403, "{}: {}", db.backend, gone.body);
    }
}

/// README "Users, roles and access" runs as written: the worked example's `sh` blocks in
/// order, in one bash in an empty directory, with `hestia` on the PATH and the server of
/// its first block (`# In another terminal`) started by the test on a free port; what its
/// comments say comes back, in order.
#[test]
fn readme_worked_example_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("### Worked example: a patient")
        .expect("the worked example");
    let section = &readme[start..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let blocks = crate::plugin_cli::sh_blocks(section);
    assert!(
        blocks[0].starts_with("# In another terminal") && blocks.len() == 5,
        "{blocks:?}"
    );

    let work = tempfile::tempdir().unwrap();
    let server = crate::support::Server::start(work.path(), &["--insecure-http"]);
    let bin = work.path().join(".bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(crate::support::hestia_bin(), bin.join("hestia")).unwrap();
    let script = format!("set -euo pipefail\n{}", blocks[1..].concat())
        .replace("http://localhost:8080", &server.url);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("RUST_LOG", "warn")
        .current_dir(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest = stdout.as_ref();
    for expected in [
        "added policy clinic-a; attached to role clinic-a-staff",
        "grants:     Patient.cruds?organization=Organization/clinic-a",
        "\nPatient/amy\n403\nPatient/amy\nObservation/obs-amy\nObservation/obs-amy Observation/obs-bob\n403\n",
        "roles -\n403\n",
        "revoked\n401\n",
    ] {
        let at = rest
            .find(expected)
            .unwrap_or_else(|| panic!("{expected:?} missing (in order) from:\n{stdout}"));
        rest = &rest[at + expected.len()..];
    }
}
