//! Bulk Data export (`$export`, its status URL and files) on both databases: each
//! kick-off kind, `_type`, `_since`, `_typeFilter`, `includeAssociatedData`, Group
//! membership, access narrowed by scopes, files refused to other clients, cancel and 429; and `hestia fhir import`:
//! refused lines, `kill -9`, beside a writing server.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{Reply, TestDb, call, mint, raw_app_on};

pub(crate) const BASE: &str = "/fhir/r4";

pub(crate) fn config(dir: &std::path::Path, extra: &str) -> String {
    format!("[bulk]\ndir = {:?}\n{extra}", dir.display().to_string())
}

pub(crate) async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Value,
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    let text = if body.is_null() {
        String::new()
    } else {
        headers.push(("content-type", "application/fhir+json"));
        body.to_string()
    };
    call(app, method, uri, &headers, text).await
}

/// A kick-off with the headers the IG requires.
pub(crate) async fn kick_off(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Value,
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("accept", "application/fhir+json"),
        ("prefer", "respond-async"),
    ];
    let text = if body.is_null() {
        String::new()
    } else {
        headers.push(("content-type", "application/fhir+json"));
        body.to_string()
    };
    call(app, method, uri, &headers, text).await
}

/// The status path of a 202 kick-off.
pub(crate) fn status_path(reply: &Reply) -> String {
    assert_eq!(reply.status, 202, "kick-off: {:?}", reply.body);
    let location = reply.header("content-location");
    let at = location.find(BASE).expect("status URL under the base");
    location[at..].to_owned()
}

/// Polls the status URL until the job is no longer in progress.
pub(crate) async fn finished(app: &axum::Router, status: &str, token: &str) -> Reply {
    for _ in 0..1000 {
        let reply = send(app, "GET", status, token, Value::Null).await;
        if reply.status != 202 {
            return reply;
        }
        assert!(!reply.header("x-progress").is_empty());
        assert_eq!(reply.header("retry-after"), "2");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the export job did not finish");
}

/// The raw body of a file of the manifest.
pub(crate) async fn fetch(
    app: &axum::Router,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>, String) {
    use tower::ServiceExt;
    let at = url.find(BASE).expect("file URL under the base");
    let mut req = axum::http::Request::builder().uri(&url[at..]);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = app
        .clone()
        .oneshot(req.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let encoding = response
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec(), encoding)
}

/// Runs an export to its end: the resources of each output type, as `Type/id`.
async fn export(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Value,
) -> BTreeMap<String, Vec<String>> {
    let status = status_path(&kick_off(app, method, uri, token, body).await);
    let manifest = finished(app, &status, token).await;
    assert_eq!(manifest.status, 200, "{uri}: {:?}", manifest.body);
    assert_eq!(manifest.body["requiresAccessToken"], true);
    assert!(manifest.body["transactionTime"].is_string());
    assert!(
        manifest.body["request"]
            .as_str()
            .unwrap()
            .contains("$export")
    );
    let auth = format!("Bearer {token}");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in manifest.body["output"].as_array().unwrap() {
        let (code, bytes, _) = fetch(
            app,
            file["url"].as_str().unwrap(),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(code, 200);
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(file["count"], lines.len());
        let ty = file["type"].as_str().unwrap().to_owned();
        for r in lines {
            assert_eq!(r["resourceType"], ty.as_str());
            out.entry(ty.clone())
                .or_default()
                .push(format!("{ty}/{}", r["id"].as_str().unwrap()));
        }
    }
    for ids in out.values_mut() {
        ids.sort();
    }
    out
}

fn ids(map: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    map.values().flatten().cloned().collect()
}

/// Two patients, each with an Observation, a practitioner, and a Group of the first.
async fn seed(app: &axum::Router, admin: &str) {
    let resources = [
        json!({"resourceType": "Practitioner", "id": "pr1"}),
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Curie"}], "gender": "female"}),
        json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Bohr"}], "gender": "male"}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
               "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
               "code": {"text": "lab"}, "subject": {"reference": "Patient/p1"}}),
        json!({"resourceType": "Observation", "id": "o2", "status": "final",
               "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
               "code": {"text": "vital"}, "subject": {"reference": "Patient/p2"}}),
        json!({"resourceType": "Group", "id": "g1", "type": "person", "actual": true,
               "member": [{"entity": {"reference": "Patient/p1"}}]}),
    ];
    for r in resources {
        let uri = format!(
            "{BASE}/{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        let reply = send(app, "PUT", &uri, admin, r).await;
        assert_eq!(reply.status, 201, "{uri}: {:?}", reply.body);
    }
}

pub(crate) fn system_token(scope: &str, client: &str) -> Value {
    json!({"scope": scope, "client_id": client, "sub": client})
}

/// A server on `db` whose exports go to a temporary directory (kept while it is held),
/// seeded by `admin`, a `system/*.*` token: the directory, the app, its state and `admin`.
async fn seeded_exporter(
    db: &TestDb,
) -> (
    tempfile::TempDir,
    axum::Router,
    hestia::http::AppState,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let (app, state) = raw_app_on(db, &config(dir.path(), "")).await;
    let admin = mint(&state, system_token("system/*.*", "bulk-admin")).await;
    seed(&app, &admin).await;
    (dir, app, state, admin)
}

/// System, Patient and Group kick-offs, by GET and by POST with Parameters, export what
/// they name.
#[tokio::test]
async fn kick_offs_export_what_they_name() {
    for db in TestDb::all().await {
        let (_dir, app, _state, admin) = seeded_exporter(&db).await;
        let b = db.backend;
        let all = export(&app, "GET", &format!("{BASE}/$export"), &admin, Value::Null).await;
        assert_eq!(
            ids(&all),
            [
                "Group/g1",
                "Observation/o1",
                "Observation/o2",
                "Patient/p1",
                "Patient/p2",
                "Practitioner/pr1"
            ],
            "{b}"
        );

        // Patient-level: the types of the Patient compartment only (a Group is one, by
        // its members; a Practitioner is not).
        let patients = export(
            &app,
            "GET",
            &format!("{BASE}/Patient/$export"),
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(
            ids(&patients),
            [
                "Group/g1",
                "Observation/o1",
                "Observation/o2",
                "Patient/p1",
                "Patient/p2"
            ],
            "{b}"
        );

        // Group: its members' compartments.
        let group = export(
            &app,
            "GET",
            &format!("{BASE}/Group/g1/$export"),
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(
            ids(&group),
            ["Group/g1", "Observation/o1", "Patient/p1"],
            "{b}"
        );

        // POST with Parameters: the patient parameter.
        let params = json!({"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": "Patient,Observation"},
            {"name": "patient", "valueReference": {"reference": "Patient/p2"}}]});
        let posted = export(
            &app,
            "POST",
            &format!("{BASE}/Patient/$export"),
            &admin,
            params,
        )
        .await;
        assert_eq!(ids(&posted), ["Observation/o2", "Patient/p2"], "{b}");
    }
}

/// `_type`, `_typeFilter`, `_since` and `_elements` narrow what an export holds.
#[tokio::test]
async fn export_parameters_narrow_what_is_exported() {
    for db in TestDb::all().await {
        let (_dir, app, _state, admin) = seeded_exporter(&db).await;
        let b = db.backend;
        // _type, and _typeFilter run by the search engine.
        let typed = export(
            &app,
            "GET",
            &format!("{BASE}/$export?_type=Patient"),
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(ids(&typed), ["Patient/p1", "Patient/p2"], "{b}");
        let filtered = export(
            &app,
            "GET",
            &format!("{BASE}/$export?_type=Observation,Patient&_typeFilter=Observation%3Fcategory%3Dlaboratory"),
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(
            ids(&filtered),
            ["Observation/o1", "Patient/p1", "Patient/p2"],
            "{b}"
        );

        // _since: only what changed since then.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let updated = send(
            &app,
            "PUT",
            &format!("{BASE}/Patient/p2"),
            &admin,
            json!({"resourceType": "Patient", "id": "p2", "gender": "male", "birthDate": "1885-10-07"}),
        )
        .await;
        assert_eq!(updated.status, 200);
        let since = updated.body["meta"]["lastUpdated"]
            .as_str()
            .unwrap()
            .to_owned();
        let changed = export(
            &app,
            "GET",
            &format!("{BASE}/$export?_since={}", since.replace('+', "%2B")),
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(ids(&changed), ["Patient/p2"], "{b}");

        // _elements keeps the named elements (and marks the resource SUBSETTED).
        let status = status_path(
            &kick_off(
                &app,
                "GET",
                &format!("{BASE}/$export?_type=Patient&_elements=gender"),
                &admin,
                Value::Null,
            )
            .await,
        );
        let manifest = finished(&app, &status, &admin).await;
        let auth = format!("Bearer {admin}");
        let (_, bytes, _) = fetch(
            &app,
            manifest.body["output"][0]["url"].as_str().unwrap(),
            &[("authorization", &auth)],
        )
        .await;
        for line in String::from_utf8(bytes).unwrap().lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            assert!(
                r.get("gender").is_some() && r.get("name").is_none(),
                "{b}: {r}"
            );
        }
    }
}

#[tokio::test]
async fn kick_off_needs_its_headers_and_valid_parameters() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let (app, state) = raw_app_on(&db, &config(dir.path(), "")).await;
        let admin = mint(&state, system_token("system/*.*", "bulk-admin")).await;
        let b = db.backend;
        let auth = format!("Bearer {admin}");
        let uri = format!("{BASE}/$export");
        let no_prefer = call(
            &app,
            "GET",
            &uri,
            &[
                ("authorization", &auth),
                ("accept", "application/fhir+json"),
            ],
            "",
        )
        .await;
        assert_eq!(no_prefer.status, 400, "{b}");
        assert!(no_prefer.diagnostics().contains("respond-async"), "{b}");
        let no_accept = call(
            &app,
            "GET",
            &uri,
            &[("authorization", &auth), ("prefer", "respond-async")],
            "",
        )
        .await;
        assert_eq!(no_accept.status, 400, "{b}");
        assert!(
            no_accept.diagnostics().contains("application/fhir+json"),
            "{b}"
        );
        for bad in [
            "_outputFormat=text/csv",
            "_type=NotAType",
            "_since=yesterday",
            "_typeFilter=Observation%3Fno-such-param%3Dx",
            "_typeFilter=Observation%3F_sort%3Ddate",
            "includeAssociatedData=LatestProvenanceResources,_custom",
        ] {
            let reply = kick_off(&app, "GET", &format!("{uri}?{bad}"), &admin, Value::Null).await;
            assert_eq!(reply.status, 400, "{b} {bad}: {:?}", reply.body);
            assert_eq!(reply.body["resourceType"], "OperationOutcome");
        }
        // Advertised: the CapabilityStatement and the SMART configuration.
        let meta = call(&app, "GET", &format!("{BASE}/metadata"), &[], "").await;
        assert_eq!(
            meta.body["rest"][0]["operation"][0]["name"], "export",
            "{b}"
        );
        let group = meta.body["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Group")
            .unwrap()
            .clone();
        assert!(
            group["operation"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["name"] == "export"),
            "{b}"
        );
        let smart = call(
            &app,
            "GET",
            &format!("{BASE}/.well-known/smart-configuration"),
            &[],
            "",
        )
        .await;
        assert!(
            smart.body["bulk_data_export"][0]
                .as_str()
                .unwrap()
                .ends_with("/$export"),
            "{b}"
        );
        let none = call(
            &app,
            "GET",
            &uri,
            &[
                ("accept", "application/fhir+json"),
                ("prefer", "respond-async"),
            ],
            "",
        )
        .await;
        assert_eq!(none.status, 401, "{b}");
    }
}

#[tokio::test]
async fn exports_keep_within_the_tokens_access() {
    for db in TestDb::all().await {
        let (_dir, app, state, _admin) = seeded_exporter(&db).await;
        let b = db.backend;

        // system/Patient.rs exports Patients only; asking for Observations is refused.
        let patients_only = mint(&state, system_token("system/Patient.rs", "bulk-p")).await;
        let got = export(
            &app,
            "GET",
            &format!("{BASE}/$export"),
            &patients_only,
            Value::Null,
        )
        .await;
        assert_eq!(ids(&got), ["Patient/p1", "Patient/p2"], "{b}");
        let refused = kick_off(
            &app,
            "GET",
            &format!("{BASE}/$export?_type=Observation"),
            &patients_only,
            Value::Null,
        )
        .await;
        assert_eq!(refused.status, 403, "{b}: {:?}", refused.body);
        assert!(refused.diagnostics().contains("Observation"), "{b}");

        // A scope query narrows the type as a search would.
        let labs = mint(
            &state,
            system_token("system/Observation.rs?category=laboratory", "bulk-lab"),
        )
        .await;
        let got = export(&app, "GET", &format!("{BASE}/$export"), &labs, Value::Null).await;
        assert_eq!(ids(&got), ["Observation/o1"], "{b}");

        // A patient/ token: that patient's compartment, whatever the kick-off asks.
        let patient = mint(&state, json!({"scope": "patient/*.rs", "patient": "p1", "client_id": "app-p", "sub": "user-p"})).await;
        let got = export(
            &app,
            "GET",
            &format!("{BASE}/Patient/$export"),
            &patient,
            Value::Null,
        )
        .await;
        assert_eq!(
            ids(&got),
            ["Group/g1", "Observation/o1", "Patient/p1"],
            "{b}"
        );
        let got = export(
            &app,
            "GET",
            &format!("{BASE}/$export"),
            &patient,
            Value::Null,
        )
        .await;
        assert_eq!(
            ids(&got),
            ["Group/g1", "Observation/o1", "Patient/p1"],
            "{b}"
        );
        let refused = kick_off(
            &app,
            "GET",
            &format!("{BASE}/$export?_type=Practitioner"),
            &patient,
            Value::Null,
        )
        .await;
        assert_eq!(refused.status, 403, "{b}: {:?}", refused.body);
    }
}

#[tokio::test]
async fn files_and_status_belong_to_the_client_that_started_the_job() {
    for db in TestDb::all().await {
        let (_dir, app, state, admin) = seeded_exporter(&db).await;
        let b = db.backend;
        let status = status_path(
            &kick_off(
                &app,
                "GET",
                &format!("{BASE}/$export?_type=Patient"),
                &admin,
                Value::Null,
            )
            .await,
        );
        let manifest = finished(&app, &status, &admin).await;
        let url = manifest.body["output"][0]["url"]
            .as_str()
            .unwrap()
            .to_owned();

        let (code, _, _) = fetch(&app, &url, &[]).await;
        assert_eq!(code, 401, "{b}: a file without a token");
        let other = mint(&state, system_token("system/*.*", "bulk-other")).await;
        let other_auth = format!("Bearer {other}");
        let (code, body, _) = fetch(&app, &url, &[("authorization", &other_auth)]).await;
        assert_eq!(code, 403, "{b}: another client's token");
        assert!(
            String::from_utf8_lossy(&body).contains("another client"),
            "{b}"
        );
        let peek = send(&app, "GET", &status, &other, Value::Null).await;
        assert_eq!(peek.status, 403, "{b}");
        let cancel = send(&app, "DELETE", &status, &other, Value::Null).await;
        assert_eq!(cancel.status, 403, "{b}");

        // The owner gets the file, gzipped when asked.
        let auth = format!("Bearer {admin}");
        let (code, plain, _) = fetch(&app, &url, &[("authorization", &auth)]).await;
        assert_eq!(code, 200);
        let (code, zipped, encoding) = fetch(
            &app,
            &url,
            &[("authorization", &auth), ("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!((code, encoding.as_str()), (200, "gzip"), "{b}");
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(zipped.as_slice()),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, plain, "{b}");
        let (code, _, _) = fetch(
            &app,
            &url.replace("Patient-1.ndjson", "..%2Fhestia.db"),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(code, 404, "{b}");
    }
}

#[tokio::test]
async fn cancel_removes_the_job_and_its_files() {
    for db in TestDb::all().await {
        let (dir, app, _state, admin) = seeded_exporter(&db).await;
        let b = db.backend;
        let status = status_path(
            &kick_off(&app, "GET", &format!("{BASE}/$export"), &admin, Value::Null).await,
        );
        let job = status.rsplit('/').next().unwrap().to_owned();
        finished(&app, &status, &admin).await;
        assert!(dir.path().join(&job).exists(), "{b}");
        let cancel = send(&app, "DELETE", &status, &admin, Value::Null).await;
        assert_eq!(cancel.status, 202, "{b}");
        let gone = send(&app, "GET", &status, &admin, Value::Null).await;
        assert_eq!(gone.status, 404, "{b}");
        assert!(!dir.path().join(&job).exists(), "{b}");
        let again = send(&app, "DELETE", &status, &admin, Value::Null).await;
        assert_eq!(again.status, 404, "{b}");
    }
}

#[tokio::test]
async fn kick_offs_beyond_the_job_limit_get_429() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let (app, state) = raw_app_on(&db, &config(dir.path(), "max_jobs = 1")).await;
        let admin = mint(&state, system_token("system/*.*", "bulk-admin")).await;
        let b = db.backend;
        // A job in progress of another server sharing the database.
        let busy = hestia::store::bulk::NewBulkJob {
            id: "elsewhere",
            kind: hestia::store::bulk::JobKind::Export,
            client_id: "bulk-admin",
            subject: "bulk-admin",
            request: "https://elsewhere/$export",
            transaction_time: 0,
        };
        assert!(state.store().create_bulk_job(&busy, 1).await.unwrap());
        let reply = kick_off(&app, "GET", &format!("{BASE}/$export"), &admin, Value::Null).await;
        assert_eq!(reply.status, 429, "{b}: {:?}", reply.body);
        assert_eq!(reply.header("retry-after"), "2", "{b}");
        assert!(reply.diagnostics().contains("bulk.max_jobs"), "{b}");
        // Once it is gone, a kick-off starts.
        state.store().delete_bulk_job("elsewhere").await.unwrap();
        let reply = kick_off(&app, "GET", &format!("{BASE}/$export"), &admin, Value::Null).await;
        assert_eq!(reply.status, 202, "{b}: {:?}", reply.body);
    }
}

#[tokio::test]
async fn import_loads_valid_lines_and_reports_the_others() {
    for db in TestDb::all().await {
        let work = tempfile::tempdir().unwrap();
        let b = db.backend;
        let (patients, dir) = import_fixture(work.path());
        let errors = work.path().join("errors.ndjson");
        let data = work.path().join("data");
        let args = [
            "fhir",
            "import",
            "--database-url",
            &db.url,
            "--data-dir",
            data.to_str().unwrap(),
            "--errors",
            errors.to_str().unwrap(),
            "--batch",
            "2",
            patients.to_str().unwrap(),
            dir.to_str().unwrap(),
        ];
        let (ok, out, err) = crate::support::hestia(work.path(), &args, "");
        assert!(!ok, "{b}: refused lines make the import fail: {out} {err}");
        assert!(err.contains("3 line(s) were refused"), "{b}: {err}");
        let report: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(
            report,
            json!({"files": 2, "loaded": 6, "invalid": 3}),
            "{b}"
        );
        let reported = refused_diagnostics(&errors);
        assert_eq!(reported.len(), 3, "{b}: {reported:?}");
        for (line, why) in [(2, "not valid JSON"), (4, "gender"), (6, "NoSuchType")] {
            assert!(
                reported.iter().any(
                    |r| r.contains(&format!("patients.ndjson line {line}:")) && r.contains(why)
                ),
                "{b}: line {line}: {reported:?}"
            );
        }
        assert_imported_is_searchable(&db).await;
    }
}

/// The files of [`import_loads_valid_lines_and_reports_the_others`] in `work`: a
/// `patients.ndjson` of four Patients and three bad lines (2, 4 and 6) around a blank one,
/// and a directory `more` with three Observations of Patient i1 gzipped and a file that
/// is no NDJSON. Answers the file and the directory.
fn import_fixture(work: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::io::Write;
    let patients = work.join("patients.ndjson");
    std::fs::write(
        &patients,
        [
            json!({"resourceType": "Patient", "id": "i1", "name": [{"family": "Curie"}]})
                .to_string(),
            "{not json".to_owned(),
            json!({"resourceType": "Patient", "id": "i2"}).to_string(),
            json!({"resourceType": "Patient", "id": "i3", "gender": 42}).to_string(),
            String::new(),
            json!({"resourceType": "NoSuchType", "id": "x"}).to_string(),
            json!({"resourceType": "Patient", "id": "i4"}).to_string(),
        ]
        .join("\n"),
    )
    .unwrap();
    let dir = work.join("more");
    std::fs::create_dir(&dir).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.join("obs.ndjson.gz")).unwrap(),
        flate2::Compression::default(),
    );
    for i in 0..3 {
        let o = json!({"resourceType": "Observation", "id": format!("io{i}"), "status": "final",
                       "code": {"text": "x"}, "subject": {"reference": "Patient/i1"}});
        writeln!(gz, "{o}").unwrap();
    }
    gz.finish().unwrap();
    std::fs::write(dir.join("ignored.txt"), "not NDJSON").unwrap();
    (patients, dir)
}

/// The diagnostics of the OperationOutcomes in an import's errors file, one per line.
fn refused_diagnostics(errors: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(errors)
        .unwrap()
        .lines()
        .map(|l| {
            let o: Value = serde_json::from_str(l).unwrap();
            assert_eq!(o["resourceType"], "OperationOutcome");
            o["issue"][0]["diagnostics"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// What [`import_fixture`] loaded is stored and searchable, index rows and all.
async fn assert_imported_is_searchable(db: &TestDb) {
    let b = db.backend;
    let (app, state) = raw_app_on(db, "").await;
    let admin = mint(&state, system_token("system/*.*", "bulk-admin")).await;
    for (uri, expected) in [
        (format!("{BASE}/Patient/i4"), 200),
        (format!("{BASE}/Patient/i3"), 404),
        (format!("{BASE}/Observation/io2"), 200),
    ] {
        assert_eq!(
            send(&app, "GET", &uri, &admin, Value::Null).await.status,
            expected,
            "{b} {uri}"
        );
    }
    let found = send(
        &app,
        "GET",
        &format!("{BASE}/Observation?subject=Patient/i1&_total=accurate"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(found.body["total"], 3, "{b}");
    let found = send(
        &app,
        "GET",
        &format!("{BASE}/Patient?family=curie"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(found.body["entry"][0]["resource"]["id"], "i1", "{b}");
}

/// A count from the database.
pub(crate) async fn count(store: &hestia::store::Store, sql: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

/// Checks that every resource stored has its history and index rows, and that no index
/// row or version is left without its resource; answers how many resources there are.
pub(crate) async fn check_whole(store: &hestia::store::Store, b: &str) -> i64 {
    let stored = count(store, "SELECT COUNT(*) FROM fhir_resources").await;
    let without_version = count(
        store,
        "SELECT COUNT(*) FROM fhir_resources r WHERE NOT EXISTS (SELECT 1 FROM fhir_history h \
         WHERE h.resource_type = r.resource_type AND h.id = r.id AND h.version_id = r.version_id)",
    )
    .await;
    assert_eq!(
        without_version, 0,
        "{b}: current rows without their version"
    );
    let gaps = count(
        store,
        "SELECT COUNT(*) FROM fhir_resources r WHERE (SELECT COUNT(*) FROM fhir_history h \
         WHERE h.resource_type = r.resource_type AND h.id = r.id) <> r.version_id",
    )
    .await;
    assert_eq!(gaps, 0, "{b}: histories with missing versions");
    for (table, rows) in [
        ("fhir_idx_string", "param = 'name' AND part = 'family'"),
        ("fhir_idx_token", "param = 'identifier'"),
    ] {
        let indexed = count(
            store,
            &format!("SELECT COUNT(*) FROM {table} WHERE resource_type = 'Patient' AND {rows}"),
        )
        .await;
        assert_eq!(indexed, stored, "{b}: one row per resource where {rows}");
        let orphans = count(
            store,
            &format!(
                "SELECT COUNT(*) FROM {table} i WHERE NOT EXISTS (SELECT 1 FROM fhir_resources r \
                 WHERE r.rk = i.rk AND r.resource_type = i.resource_type)"
            ),
        )
        .await;
        assert_eq!(orphans, 0, "{b}: {table} rows without their resource");
    }
    let orphans = count(
        store,
        "SELECT COUNT(*) FROM fhir_history h WHERE NOT EXISTS (SELECT 1 FROM fhir_resources r \
         WHERE r.resource_type = h.resource_type AND r.id = h.id)",
    )
    .await;
    assert_eq!(orphans, 0, "{b}: versions without their resource");
    stored
}

#[tokio::test]
async fn import_killed_mid_way_leaves_whole_batches() {
    const TOTAL: i64 = 5000;
    const BATCH: i64 = 50;
    for db in TestDb::all().await {
        let work = tempfile::tempdir().unwrap();
        let b = db.backend;
        let file = work.path().join("patients.ndjson");
        let lines: Vec<String> = (0..TOTAL)
            .map(|n| {
                json!({"resourceType": "Patient", "id": format!("k{n}"),
                       "identifier": [{"system": "urn:test", "value": format!("{n}")}],
                       "name": [{"family": format!("Family{}", n % 97), "given": ["Kim"]}],
                       "birthDate": "1970-01-01"})
                .to_string()
            })
            .collect();
        std::fs::write(&file, lines.join("\n")).unwrap();
        // Migrated before the import starts, so that this test can count while it runs.
        let store = hestia::store::Store::open(&db.url).await.unwrap();
        let data = work.path().join("data");
        let import = || {
            let mut command = std::process::Command::new(crate::support::hestia_bin());
            command
                .current_dir(work.path())
                .args(["fhir", "import", "--database-url", &db.url, "--data-dir"])
                .arg(&data)
                .args(["--batch", &BATCH.to_string()])
                .arg(&file)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            command
        };
        let mut child = import().spawn().unwrap();
        while count(&store, "SELECT COUNT(*) FROM fhir_resources").await == 0 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{b}: the import ended early"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let stored = check_whole(&store, b).await;
        assert!(stored < TOTAL, "{b}: killed mid-way, yet {stored} stored");
        assert_eq!(stored % BATCH, 0, "{b}: {stored} is not whole batches");

        // Run again, the import completes: the resources stored before get a second
        // version, with their index rows replaced rather than doubled.
        let done = import().output().unwrap();
        assert!(done.status.success(), "{b}: {done:?}");
        assert_eq!(check_whole(&store, b).await, TOTAL, "{b}");
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM fhir_history").await,
            TOTAL + stored,
            "{b}"
        );
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM fhir_resources WHERE version_id = 2"
            )
            .await,
            stored,
            "{b}"
        );
        store.close().await;
    }
}

/// Text with the characters that PostgreSQL's `COPY` format escapes (tab, newline,
/// carriage return, backslash) and others comes back from an import as written, in the
/// resource and in its index rows.
#[tokio::test]
async fn import_keeps_text_as_written() {
    let family = "Tab\there \\ back\\slash\nnew\rline \"quoted\" é \\N".to_owned();
    for db in TestDb::all().await {
        let work = tempfile::tempdir().unwrap();
        let b = db.backend;
        let patient = json!({"resourceType": "Patient", "id": "text",
                             "name": [{"family": family, "given": ["\\"]}]});
        let file = work.path().join("patients.ndjson");
        std::fs::write(&file, format!("{patient}\n")).unwrap();
        let done = crate::support::hestia(
            work.path(),
            &[
                "fhir",
                "import",
                "--database-url",
                &db.url,
                file.to_str().unwrap(),
            ],
            "",
        );
        assert!(done.0, "{b}: {done:?}");
        let store = hestia::store::Store::open(&db.url).await.unwrap();
        let stored = store
            .fhir_current("Patient", "text")
            .await
            .unwrap()
            .unwrap();
        let content: Value = serde_json::from_str(&stored.content).unwrap();
        assert_eq!(content["name"], patient["name"], "{b}");
        let exact: Vec<String> = sqlx::query_scalar(
            "SELECT exact FROM fhir_idx_string WHERE rk = (SELECT rk FROM fhir_resources \
             WHERE id = 'text') AND param = 'name' AND part IN ('family', 'given') ORDER BY part",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(exact, [family.clone(), "\\".to_owned()], "{b}");
        store.close().await;
    }
}

/// `hestia fhir import` beside a server writing to the same database (the in-process app
/// of this test, another process than the import, as `serve` would be): the server's
/// creates get their turn between the import's batches and none fails, and the import
/// loads every line. With batches of 250 named, and with the default size: on SQLite
/// batches of 5,000 while the import finds no other writer, then of 1,000 once it does
/// (seen here as a count of imported resources that is not a multiple of 5,000).
#[tokio::test]
async fn import_beside_a_writing_server() {
    for db in TestDb::all().await {
        for (batch, total, prefix) in [(Some("250"), 10_000, "r"), (None, 30_000, "x")] {
            let steps = import_beside_creates(&db, batch, total, prefix).await;
            if batch.is_none() && db.backend == "sqlite" {
                assert!(
                    steps.iter().any(|n| n % 5000 != 0),
                    "the default batches did not shrink beside a writer: {steps:?}"
                );
            }
        }
    }
}

/// Imports `total` Patients with ids `{prefix}0`, `{prefix}1`, ... (`--batch batch`)
/// while the test's app creates Patients in the same database; answers the counts of
/// imported Patients seen between the creates.
async fn import_beside_creates(
    db: &TestDb,
    batch: Option<&str>,
    total: i64,
    prefix: &str,
) -> Vec<i64> {
    let work = tempfile::tempdir().unwrap();
    let b = db.backend;
    let file = work.path().join("patients.ndjson");
    prefixed_patients_file(&file, total as usize, prefix);
    let (app, state) = raw_app_on(db, "").await;
    let stored = count(state.store(), "SELECT COUNT(*) FROM fhir_resources").await;
    let admin = mint(&state, system_token("system/*.*", "bulk-admin")).await;
    let mut command = std::process::Command::new(crate::support::hestia_bin());
    command
        .current_dir(work.path())
        .args(["fhir", "import", "--database-url", &db.url, "--data-dir"])
        .arg(work.path().join("data"));
    if let Some(n) = batch {
        command.args(["--batch", n]);
    }
    let mut child = command
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The created Patients have UUIDs (hexadecimal: no letter beyond f).
    let imported = format!("SELECT COUNT(*) FROM fhir_resources WHERE id LIKE '{prefix}%'");
    let imported = imported.as_str();
    let (mut created, mut amid, mut seen) = (0, 0, Vec::new());
    while child.try_wait().unwrap().is_none() {
        let before = count(state.store(), imported).await;
        let reply = send(
            &app,
            "POST",
            &format!("{BASE}/Patient"),
            &admin,
            json!({"resourceType": "Patient", "active": true}),
        )
        .await;
        assert_eq!(reply.status, 201, "{b}: {:?}", reply.body);
        created += 1;
        let after = count(state.store(), imported).await;
        if before > 0 && after < total {
            amid += 1;
        }
        seen.extend([before, after]);
    }
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success(), "{b}: {done:?}");
    assert!(
        amid >= 3,
        "{b} {batch:?}: only {amid} of {created} creates amid the import"
    );
    assert_eq!(count(state.store(), imported).await, total, "{b}");
    assert_eq!(
        count(state.store(), "SELECT COUNT(*) FROM fhir_resources").await,
        stored + total + created,
        "{b}"
    );
    seen.dedup();
    seen
}

/// A Patients NDJSON file of `n` lines for `hestia fhir import`.
fn patients_file(path: &std::path::Path, n: usize) {
    prefixed_patients_file(path, n, "r")
}

/// `n` Patients with ids `{prefix}0`, `{prefix}1`, ... as NDJSON.
fn prefixed_patients_file(path: &std::path::Path, n: usize, prefix: &str) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            json!({"resourceType": "Patient", "id": format!("{prefix}{i}"),
                   "name": [{"family": format!("Family{}", i % 97)}]})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// The real binary killed (SIGKILL) while an export runs: after a restart, the job's
/// status answers the failure OperationOutcome once `bulk.stale_after_secs` has passed,
/// never a manifest of the files written so far.
#[tokio::test]
async fn an_export_interrupted_by_a_restart_is_failed() {
    use crate::support::{Server, client_trusting};
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let b = db.backend;
        std::fs::write(
            dir.path().join("hestia.toml"),
            "[bulk]\nstale_after_secs = 1\n",
        )
        .unwrap();
        let file = dir.path().join("seed.ndjson");
        patients_file(&file, 10_000);
        let seeded = crate::support::hestia(
            dir.path(),
            &[
                "fhir",
                "import",
                "--database-url",
                &db.url,
                file.to_str().unwrap(),
            ],
            "",
        );
        assert!(seeded.0, "{b}: {seeded:?}");

        let args = ["--database-url", db.url.as_str()];
        let mut server = Server::start(dir.path(), &args);
        let http = client_trusting(&server.data_dir.join("tls").join("ca.pem"));
        let client = crate::support::add_backend_client(dir.path(), &db, "system/*.read");
        let token =
            crate::support::client_token(&http, &server, &server.url, &client, "system/*.read")
                .await;
        let kicked = http
            .get(format!("{}/fhir/r4/Patient/$export", server.url))
            .bearer_auth(&token)
            .header("accept", "application/fhir+json")
            .header("prefer", "respond-async")
            .send()
            .await
            .unwrap();
        assert_eq!(kicked.status(), 202, "{b}");
        server.child.kill().unwrap(); // SIGKILL, in the middle of the export
        server.child.wait().unwrap();
        let status = kicked.headers()["content-location"]
            .to_str()
            .unwrap()
            .to_owned();
        let store = hestia::store::Store::open(&db.url).await.unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM bulk_jobs WHERE state = 'in-progress'"
            )
            .await,
            1,
            "{b}: the export was still running when the server died"
        );
        store.close().await;

        let server = Server::start(dir.path(), &args);
        // The same client, for the server's new address (its audience).
        let token =
            crate::support::client_token(&http, &server, &server.url, &client, "system/*.read")
                .await;
        // Past `bulk.stale_after_secs` since the dead worker last reported.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let status = status.replacen(status.split("/fhir/r4").next().unwrap(), &server.url, 1);
        let reply = http.get(&status).bearer_auth(&token).send().await.unwrap();
        assert_eq!(reply.status(), 500, "{b}");
        let outcome: Value = reply.json().await.unwrap();
        assert_eq!(
            outcome["resourceType"], "OperationOutcome",
            "{b}: {outcome}"
        );
        let why = outcome["issue"][0]["diagnostics"].as_str().unwrap_or("");
        assert!(why.contains("interrupted"), "{b}: {outcome}");
    }
}

/// A Group of more patients than one query holds: a resource in the compartments of two
/// members of different queries is exported once.
#[tokio::test]
async fn group_export_writes_each_resource_once() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let b = db.backend;
        let members = hestia::fhir::bulk::PATIENTS_PER_QUERY + 100;
        let file = dir.path().join("seed.ndjson");
        patients_file(&file, members);
        let shared = json!({"resourceType": "Observation", "id": "shared", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/r0"},
            "performer": [{"reference": format!("Patient/r{}", members - 1)}]});
        let group = json!({"resourceType": "Group", "id": "big", "type": "person", "actual": true,
            "member": (0..members)
                .map(|i| json!({"entity": {"reference": format!("Patient/r{i}")}}))
                .collect::<Vec<_>>()});
        let more = dir.path().join("more.ndjson");
        std::fs::write(&more, format!("{shared}\n{group}\n")).unwrap();
        let seeded = crate::support::hestia(
            dir.path(),
            &[
                "fhir",
                "import",
                "--database-url",
                &db.url,
                file.to_str().unwrap(),
                more.to_str().unwrap(),
            ],
            "",
        );
        assert!(seeded.0, "{b}: {seeded:?}");
        let (app, state) = raw_app_on(&db, &config(dir.path(), "")).await;
        let admin = mint(&state, system_token("system/*.*", "bulk-admin")).await;
        let out = export(
            &app,
            "GET",
            &format!("{BASE}/Group/big/$export"),
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(out["Observation"], ["Observation/shared"], "{b}");
        assert_eq!(out["Group"], ["Group/big"], "{b}");
        let patients = &out["Patient"];
        assert_eq!(patients.len(), members, "{b}");
        let mut unique = patients.clone();
        unique.dedup();
        assert_eq!(unique.len(), members, "{b}: {patients:?}");
    }
}

/// Provenance of the seed: two of Patient/p1 (one also of Observation/o2), one of
/// Patient/p2, one of the practitioner only.
async fn seed_provenance(app: &axum::Router, admin: &str) {
    let provenance = |id: &str, recorded: &str, targets: &[&str]| {
        json!({"resourceType": "Provenance", "id": id, "recorded": recorded,
               "target": targets.iter().map(|t| json!({"reference": t})).collect::<Vec<_>>(),
               "agent": [{"who": {"reference": "Practitioner/pr1"}}]})
    };
    let resources = [
        provenance("pv1", "2020-01-01T00:00:00Z", &["Patient/p1"]),
        provenance(
            "pv2",
            "2022-01-01T00:00:00+01:00",
            &["Patient/p1", "Observation/o2"],
        ),
        provenance("pv3", "2021-01-01T00:00:00Z", &["Patient/p2"]),
        provenance("pv4", "2023-01-01T00:00:00Z", &["Practitioner/pr1"]),
    ];
    for r in resources {
        let uri = format!("{BASE}/Provenance/{}", r["id"].as_str().unwrap());
        let reply = send(app, "PUT", &uri, admin, r).await;
        assert_eq!(reply.status, 201, "{uri}: {:?}", reply.body);
    }
}

/// `includeAssociatedData`: the Provenance of what is exported, all of it or the latest
/// per resource, each once, under the token's access to Provenance.
#[tokio::test]
async fn associated_provenance_follows_what_is_exported() {
    for db in TestDb::all().await {
        let (_dir, app, state, admin) = seeded_exporter(&db).await;
        seed_provenance(&app, &admin).await;
        let b = db.backend;
        let get = |query: &str| format!("{BASE}/$export?{query}");

        let relevant = export(
            &app,
            "GET",
            &get("_type=Patient&includeAssociatedData=RelevantProvenanceResources"),
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(relevant["Patient"], ["Patient/p1", "Patient/p2"], "{b}");
        assert_eq!(
            relevant["Provenance"],
            ["Provenance/pv1", "Provenance/pv2", "Provenance/pv3"],
            "{b}"
        );

        // The latest recorded per exported resource: pv2 for p1 and o2, pv3 for p2.
        let latest = export(
            &app,
            "GET",
            &get("_type=Patient,Observation&includeAssociatedData=LatestProvenanceResources"),
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(
            latest["Provenance"],
            ["Provenance/pv2", "Provenance/pv3"],
            "{b}"
        );

        // Provenance exported as a type too: each one once.
        let both = export(
            &app,
            "POST",
            &format!("{BASE}/$export"),
            &admin,
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "_type", "valueString": "Patient,Provenance"},
                {"name": "includeAssociatedData", "valueCode": "RelevantProvenanceResources"}]}),
        )
        .await;
        assert_eq!(
            both["Provenance"],
            [
                "Provenance/pv1",
                "Provenance/pv2",
                "Provenance/pv3",
                "Provenance/pv4"
            ],
            "{b}"
        );

        // A patient/ token: the Provenance of its compartment only.
        let patient = mint(&state, json!({"scope": "patient/*.rs", "patient": "p1", "client_id": "app-p", "sub": "user-p"})).await;
        let mine = export(
            &app,
            "GET",
            &format!(
                "{BASE}/Patient/$export?_type=Patient,Observation&includeAssociatedData=LatestProvenanceResources"
            ),
            &patient,
            Value::Null,
        )
        .await;
        assert_eq!(mine["Patient"], ["Patient/p1"], "{b}");
        assert_eq!(mine["Provenance"], ["Provenance/pv2"], "{b}");
    }
}

/// An `includeAssociatedData` value the server has not, or a token that may not search
/// Provenance, is refused with the reason; nothing starts.
#[tokio::test]
async fn associated_data_it_cannot_give_is_refused() {
    for db in TestDb::all().await {
        let (_dir, app, state, admin) = seeded_exporter(&db).await;
        let b = db.backend;
        let custom = kick_off(
            &app,
            "GET",
            &format!("{BASE}/$export?includeAssociatedData=_myData"),
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(custom.status, 400, "{b}: {:?}", custom.body);
        assert!(custom.diagnostics().contains("_myData"), "{b}");
        let patients_only = mint(&state, system_token("system/Patient.rs", "bulk-p")).await;
        let refused = kick_off(
            &app,
            "GET",
            &format!("{BASE}/$export?includeAssociatedData=LatestProvenanceResources"),
            &patients_only,
            Value::Null,
        )
        .await;
        assert_eq!(refused.status, 403, "{b}: {:?}", refused.body);
        assert!(
            refused.diagnostics().contains("includeAssociatedData")
                && refused.diagnostics().contains("Provenance"),
            "{b}: {:?}",
            refused.body
        );
    }
}
