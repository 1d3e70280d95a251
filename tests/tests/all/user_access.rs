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
fn seen(reply: &Reply) -> Seen {
    if reply.status != 200 {
        return Err(reply.status);
    }
    if reply.body["resourceType"] != "Bundle" {
        let r = &reply.body;
        return Ok(vec![format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        )]);
    }
    let mut ids: Vec<String> = reply.body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] != "outcome")
                .map(|e| {
                    let r = &e["resource"];
                    format!(
                        "{}/{}",
                        r["resourceType"].as_str().unwrap(),
                        r["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    Ok(ids)
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

#[tokio::test]
async fn accounts_see_exactly_what_their_rights_allow() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (app, state) = raw_app_on(&db, "").await;
        // The data, written by a backend service (no account behind its token).
        let system = mint(&state, json!({"scope": "system/*.*"})).await;
        for (patient, clinic) in [("amy", "clinic-a"), ("bob", "clinic-b")] {
            let resource = json!({"resourceType": "Patient", "id": patient,
                "managingOrganization": {"reference": format!("Organization/{clinic}")}});
            put(&app, &system, resource).await;
            let obs = json!({"resourceType": "Observation", "id": format!("obs-{patient}"), "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, "subject": {"reference": format!("Patient/{patient}")}});
            put(&app, &system, obs).await;
        }
        let clinic = d.join("clinic-a.toml");
        std::fs::write(&clinic, CLINIC_A).unwrap();
        let auditor = d.join("auditor.toml");
        std::fs::write(&auditor, AUDITOR).unwrap();
        let ids = [
            (
                "amy",
                account(
                    d,
                    &db,
                    "amy",
                    &["--fhir-user", "Patient/amy", "--role", "patient"],
                ),
            ),
            ("doc", account(d, &db, "doc", &["--role", "practitioner"])),
            (
                "clin",
                account(d, &db, "clin", &["--role", "clinic-a-staff"]),
            ),
            ("audit", account(d, &db, "audit", &[])),
            ("nobody", account(d, &db, "nobody", &[])),
        ];
        run(
            d,
            &db,
            &[
                "policy",
                "add",
                clinic.to_str().unwrap(),
                "--role",
                "clinic-a-staff",
            ],
            "",
        );
        run(
            d,
            &db,
            &[
                "policy",
                "add",
                auditor.to_str().unwrap(),
                "--user",
                "audit",
            ],
            "",
        );
        let id = |name: &str| ids.iter().find(|(n, _)| *n == name).unwrap().1.clone();

        let all_patients = ok(&["Patient/amy", "Patient/bob"]);
        let all_obs = ok(&["Observation/obs-amy", "Observation/obs-bob"]);
        // (account, scope, launch patient, method, path, expected)
        let cells: Vec<Cell> = vec![
            (
                "amy",
                "user/*.rs",
                None,
                "GET",
                "/Patient",
                ok(&["Patient/amy"]),
            ),
            (
                "amy",
                "user/*.rs",
                None,
                "GET",
                "/Observation",
                ok(&["Observation/obs-amy"]),
            ),
            (
                "amy",
                "user/*.read",
                None,
                "GET",
                "/Observation",
                ok(&["Observation/obs-amy"]),
            ),
            (
                "amy",
                "user/Patient.r",
                None,
                "GET",
                "/Patient/bob",
                Err(403),
            ),
            (
                "amy",
                "user/Patient.r",
                None,
                "GET",
                "/Patient/amy",
                ok(&["Patient/amy"]),
            ),
            (
                "amy",
                "patient/*.rs",
                Some("amy"),
                "GET",
                "/Observation",
                ok(&["Observation/obs-amy"]),
            ),
            (
                "amy",
                "patient/*.rs",
                Some("bob"),
                "GET",
                "/Observation",
                Err(403),
            ),
            (
                "amy",
                "user/*.rs",
                None,
                "GET",
                "/Observation?subject:Patient.organization=Organization/clinic-b",
                ok(&[]),
            ),
            (
                "amy",
                "user/*.rs",
                None,
                "GET",
                "/Patient?_revinclude=Observation:subject",
                ok(&["Observation/obs-amy", "Patient/amy"]),
            ),
            (
                "amy",
                "user/*.rs",
                None,
                "GET",
                "/Patient?_has:Observation:subject:code=29463-7",
                ok(&["Patient/amy"]),
            ),
            (
                "amy",
                "user/*.rs",
                None,
                "GET",
                "/Patient/bob/_history",
                Err(403),
            ),
            (
                "amy",
                "user/*.rs",
                None,
                "GET",
                "/Patient/bob/$everything",
                Err(403),
            ),
            ("amy", "user/*.cruds", None, "POST", "/Patient", Err(403)),
            (
                "doc",
                "user/*.rs",
                None,
                "GET",
                "/Patient",
                all_patients.clone(),
            ),
            (
                "doc",
                "user/*.rs",
                None,
                "GET",
                "/Observation",
                all_obs.clone(),
            ),
            (
                "doc",
                "patient/*.rs",
                Some("bob"),
                "GET",
                "/Observation",
                ok(&["Observation/obs-bob"]),
            ),
            (
                "clin",
                "user/*.rs",
                None,
                "GET",
                "/Patient",
                ok(&["Patient/amy"]),
            ),
            (
                "clin",
                "user/*.rs",
                None,
                "GET",
                "/Observation",
                ok(&["Observation/obs-amy"]),
            ),
            (
                "clin",
                "user/Patient.rs",
                None,
                "GET",
                "/Patient/bob",
                Err(403),
            ),
            (
                "audit",
                "user/*.rs",
                None,
                "GET",
                "/Patient",
                all_patients.clone(),
            ),
            ("audit", "user/*.cruds", None, "POST", "/Patient", Err(403)),
            ("nobody", "user/*.rs", None, "GET", "/Patient", Err(403)),
            (
                "nobody",
                "user/*.read",
                None,
                "GET",
                "/Observation",
                Err(403),
            ),
        ];
        for (who, scope, launch, method, path, expected) in cells {
            let mut claims = json!({"sub": id(who), "client_id": "app-1", "scope": scope});
            if let Some(p) = launch {
                claims["patient"] = json!(p);
            }
            let token = mint(&state, claims).await;
            let auth = format!("Bearer {token}");
            let body = if method == "POST" {
                json!({"resourceType": "Patient", "id": "new"}).to_string()
            } else {
                String::new()
            };
            let reply = call(
                &app,
                method,
                &format!("/fhir/r4{path}"),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/fhir+json"),
                ],
                body,
            )
            .await;
            assert_eq!(
                seen(&reply),
                expected,
                "{}: {who} with {scope} (launch {launch:?}): {method} {path}: {}",
                db.backend,
                reply.body
            );
        }

        // Batch entries run under their own entry's access, as on their own.
        let token = mint(
            &state,
            json!({"sub": id("amy"), "client_id": "app-1", "scope": "user/*.rs"}),
        )
        .await;
        let auth = format!("Bearer {token}");
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient/amy"}},
            {"request": {"method": "GET", "url": "Patient/bob"}},
            {"request": {"method": "GET", "url": "Observation"}},
        ]});
        let reply = call(
            &app,
            "POST",
            "/fhir/r4",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/fhir+json"),
            ],
            batch.to_string(),
        )
        .await;
        assert_eq!(reply.status, 200, "{}: {}", db.backend, reply.body);
        let statuses: Vec<&str> = reply.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["response"]["status"].as_str().unwrap_or_default())
            .collect();
        assert!(statuses[0].starts_with("200"), "{statuses:?}");
        assert!(statuses[1].starts_with("403"), "{statuses:?}");
        let observations = &reply.body["entry"][2]["resource"]["entry"];
        assert_eq!(
            observations.as_array().map(Vec::len),
            Some(1),
            "{}",
            reply.body
        );
        assert_eq!(observations[0]["resource"]["id"], "obs-amy");

        // A right removed while a token is out: the next request is refused.
        let token = mint(
            &state,
            json!({"sub": id("doc"), "client_id": "app-1", "scope": "user/*.rs"}),
        )
        .await;
        let auth = format!("Bearer {token}");
        let before = call(
            &app,
            "GET",
            "/fhir/r4/Patient",
            &[("authorization", auth.as_str())],
            "",
        )
        .await;
        assert_eq!(seen(&before), all_patients, "{}", db.backend);
        run(d, &db, &["user", "set", "doc", "--no-roles"], "");
        let after = call(
            &app,
            "GET",
            "/fhir/r4/Patient",
            &[("authorization", auth.as_str())],
            "",
        )
        .await;
        assert_eq!(after.status, 403, "{}: {}", db.backend, after.body);
        assert!(
            after.diagnostics().contains("smart-scopes"),
            "{}",
            after.body
        );
        // And a policy detached from a role narrows its holders at once.
        let token = mint(
            &state,
            json!({"sub": id("clin"), "client_id": "app-1", "scope": "user/*.rs"}),
        )
        .await;
        let auth = format!("Bearer {token}");
        run(d, &db, &["policy", "remove", "clinic-a"], "");
        let gone = call(
            &app,
            "GET",
            "/fhir/r4/Patient",
            &[("authorization", auth.as_str())],
            "",
        )
        .await;
        assert_eq!(gone.status, 403, "{}: {}", db.backend, gone.body);
    }
}
