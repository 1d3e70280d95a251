//! `[base]/$import` on both databases: an NDJSON body (plain and gzip) loaded with its
//! refused lines reported by line number, the manifest form fetching files from the
//! configured sources only, tokens without write access to every type refused, cancel.

use std::io::Write;

use serde_json::{Value, json};

use crate::bulk::{BASE, config, count, fetch, finished, send, status_path, system_token};
use crate::support::{Reply, TestDb, call, mint, raw_app_on};

/// A `$import` kick-off with the headers it needs and `body` of `content_type`.
async fn import(
    app: &axum::Router,
    token: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: impl Into<axum::body::Body>,
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("accept", "application/fhir+json"),
        ("prefer", "respond-async"),
        ("content-type", content_type),
    ];
    headers.extend_from_slice(extra);
    call(app, "POST", &format!("{BASE}/$import"), &headers, body).await
}

fn lines(resources: &[String]) -> String {
    resources.join("\n") + "\n"
}

/// The diagnostics of the OperationOutcome lines of a manifest's error file.
async fn refusals(app: &axum::Router, manifest: &Value, token: &str) -> Vec<String> {
    let url = manifest["error"][0]["url"].as_str().expect("an error file");
    let auth = format!("Bearer {token}");
    let (code, bytes, _) = fetch(app, url, &[("authorization", &auth)]).await;
    assert_eq!(code, 200);
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| {
            let o: Value = serde_json::from_str(l).unwrap();
            assert_eq!(o["resourceType"], "OperationOutcome");
            o["issue"][0]["diagnostics"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// An application on `db` with bulk data configured, and a token of the client
/// `importer` that may create, update, read and search every type.
async fn importer(
    db: &TestDb,
) -> (
    tempfile::TempDir,
    axum::Router,
    hestia::http::AppState,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let (app, state) = raw_app_on(db, &config(dir.path(), "")).await;
    let token = mint(&state, system_token("system/*.cu system/*.rs", "importer")).await;
    (dir, app, state, token)
}

/// A finished `$import` of an NDJSON `body` (`extra` headers): its status path and its
/// manifest.
async fn imported(
    app: &axum::Router,
    token: &str,
    extra: &[(&str, &str)],
    body: impl Into<axum::body::Body>,
) -> (String, Reply) {
    let kicked = import(app, token, "application/fhir+ndjson", extra, body).await;
    let status = status_path(&kicked);
    let manifest = finished(app, &status, token).await;
    (status, manifest)
}

#[tokio::test]
async fn import_loads_a_body_and_reports_refused_lines_by_number() {
    for db in TestDb::all().await {
        let (_dir, app, _state, token) = importer(&db).await;
        let b = db.backend;
        let body = lines(&[
            json!({"resourceType": "Patient", "id": "h1", "name": [{"family": "Curie"}]})
                .to_string(),
            "{not json".to_owned(),
            json!({"resourceType": "Patient", "id": "h2"}).to_string(),
            json!({"resourceType": "Patient", "id": "h3", "gender": 42}).to_string(),
            String::new(),
            json!({"resourceType": "NoSuchType", "id": "x"}).to_string(),
            json!({"resourceType": "Observation", "id": "ho1", "status": "final",
                   "code": {"text": "x"}, "subject": {"reference": "Patient/h1"}})
            .to_string(),
        ]);
        let (_, manifest) = imported(&app, &token, &[], body).await;
        assert_eq!(manifest.status, 200, "{b}: {:?}", manifest.body);
        let m = &manifest.body;
        assert_eq!(m["requiresAccessToken"], true, "{b}");
        assert!(m["request"].as_str().unwrap().ends_with("/$import"), "{b}");
        assert_eq!(
            m["output"],
            json!([{"type": "Observation", "count": 1}, {"type": "Patient", "count": 2}]),
            "{b}"
        );
        assert_eq!(m["error"][0]["type"], "OperationOutcome", "{b}");
        assert_eq!(m["error"][0]["count"], 3, "{b}");
        assert_eq!(m["outcome"], m["error"], "{b}");
        let refused = refusals(&app, m, &token).await;
        assert_eq!(refused.len(), 3, "{b}: {refused:?}");
        for (line, why) in [(2, "not valid JSON"), (4, "gender"), (6, "NoSuchType")] {
            assert!(
                refused
                    .iter()
                    .any(|r| r.starts_with(&format!("body line {line}:")) && r.contains(why)),
                "{b}: line {line}: {refused:?}"
            );
        }
        for (uri, expected) in [
            (format!("{BASE}/Patient/h1"), 200),
            (format!("{BASE}/Patient/h3"), 404),
            (format!("{BASE}/Observation/ho1"), 200),
        ] {
            let got = send(&app, "GET", &uri, &token, Value::Null).await;
            assert_eq!(got.status, expected, "{b} {uri}");
        }
        let found = send(
            &app,
            "GET",
            &format!("{BASE}/Patient?family=curie"),
            &token,
            Value::Null,
        )
        .await;
        assert_eq!(found.body["entry"][0]["resource"]["id"], "h1", "{b}");
    }
}

/// A gzip body is loaded, and a resource that exists gets a new version.
#[tokio::test]
async fn import_loads_a_gzip_body_over_existing_resources() {
    for db in TestDb::all().await {
        let (_dir, app, _state, token) = importer(&db).await;
        let b = db.backend;
        let first = lines(&[json!({"resourceType": "Patient", "id": "h1"}).to_string()]);
        let (_, manifest) = imported(&app, &token, &[], first).await;
        assert_eq!(manifest.status, 200, "{b}: {:?}", manifest.body);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        writeln!(
            gz,
            "{}",
            json!({"resourceType": "Patient", "id": "h1", "gender": "female"})
        )
        .unwrap();
        let gzip = [("content-encoding", "gzip")];
        let (_, manifest) = imported(&app, &token, &gzip, gz.finish().unwrap()).await;
        assert_eq!(
            manifest.body["output"],
            json!([{"type": "Patient", "count": 1}]),
            "{b}"
        );
        assert_eq!(manifest.body["error"], json!([]), "{b}");
        let read = send(
            &app,
            "GET",
            &format!("{BASE}/Patient/h1"),
            &token,
            Value::Null,
        )
        .await;
        assert_eq!(read.body["meta"]["versionId"], "2", "{b}");
        assert_eq!(read.body["gender"], "female", "{b}");
    }
}

/// The job is the importing client's; its status URL is no one else's.
#[tokio::test]
async fn an_import_job_is_the_importing_clients_own() {
    for db in TestDb::all().await {
        let (_dir, app, state, token) = importer(&db).await;
        let b = db.backend;
        let body = lines(&[json!({"resourceType": "Patient", "id": "h1"}).to_string()]);
        let (status, manifest) = imported(&app, &token, &[], body).await;
        assert_eq!(manifest.status, 200, "{b}: {:?}", manifest.body);
        let other = mint(
            &state,
            system_token("system/*.cu system/*.rs", "someone-else"),
        )
        .await;
        let refused = send(&app, "GET", &status, &other, Value::Null).await;
        assert_eq!(refused.status, 403, "{b}");
    }
}

#[tokio::test]
async fn import_needs_write_access_to_every_type_it_loads() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let (app, state) = raw_app_on(&db, &config(dir.path(), "")).await;
        let b = db.backend;
        let body = lines(&[
            json!({"resourceType": "Patient", "id": "w1"}).to_string(),
            json!({"resourceType": "Observation", "id": "wo1", "status": "final",
                   "code": {"text": "x"}, "subject": {"reference": "Patient/w1"}})
            .to_string(),
        ]);
        for (claims, says) in [
            (system_token("system/*.rs", "reader"), "may create"),
            (
                system_token("system/Patient.cu", "patients-only"),
                "Observation",
            ),
            (system_token("system/*.c", "create-only"), "update"),
            (
                json!({"scope": "patient/*.cu", "patient": "w1", "client_id": "app", "sub": "u"}),
                "only some",
            ),
        ] {
            let token = mint(&state, claims.clone()).await;
            let reply = import(&app, &token, "application/fhir+ndjson", &[], body.clone()).await;
            assert_eq!(reply.status, 403, "{b} {claims}: {:?}", reply.body);
            assert_eq!(reply.body["resourceType"], "OperationOutcome", "{b}");
            assert!(
                reply.diagnostics().contains(says),
                "{b} {claims}: {}",
                reply.diagnostics()
            );
        }
        let token = mint(&state, system_token("system/*.cu", "importer")).await;
        let auth = format!("Bearer {token}");
        let no_prefer = call(
            &app,
            "POST",
            &format!("{BASE}/$import"),
            &[
                ("authorization", &auth),
                ("accept", "application/fhir+json"),
                ("content-type", "application/fhir+ndjson"),
            ],
            body.clone(),
        )
        .await;
        assert_eq!(no_prefer.status, 400, "{b}");
        let csv = import(&app, &token, "text/csv", &[], "a,b\n").await;
        assert_eq!(csv.status, 415, "{b}");
        let empty = import(&app, &token, "application/fhir+ndjson", &[], "{not json\n").await;
        assert_eq!(empty.status, 400, "{b}: {:?}", empty.body);
        // Without sources configured, a manifest of URLs is refused, naming the setting.
        let manifest =
            json!({"input": [{"type": "Patient", "url": "https://files.example/p.ndjson"}]});
        let pull = import(
            &app,
            &token,
            "application/fhir+json",
            &[],
            manifest.to_string(),
        )
        .await;
        assert_eq!(pull.status, 400, "{b}");
        assert!(pull.diagnostics().contains("bulk.import_sources"), "{b}");

        // Nothing was written, no job recorded, no directory left.
        assert_eq!(
            count(state.store(), "SELECT COUNT(*) FROM fhir_resources").await,
            0,
            "{b}"
        );
        assert_eq!(
            count(state.store(), "SELECT COUNT(*) FROM bulk_jobs").await,
            0,
            "{b}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path())
                .map(|d| d.count())
                .unwrap_or(0),
            0,
            "{b}"
        );
    }
}

/// Serves `files` (path, body) over HTTP on a loopback port; answers its base URL.
async fn file_server(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let mut router = axum::Router::new();
    for (path, body) in files {
        router = router.route(path, axum::routing::get(move || async move { body }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

fn manifest_of(inputs: &[(&str, String)]) -> String {
    let mut parameter =
        vec![json!({"name": "inputFormat", "valueCode": "application/fhir+ndjson"})];
    for (t, url) in inputs {
        parameter.push(json!({"name": "input", "part": [
            {"name": "type", "valueCode": t},
            {"name": "url", "valueUri": url},
        ]}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter}).to_string()
}

#[tokio::test]
async fn import_fetches_the_files_of_a_manifest_from_its_sources_only() {
    let patients = lines(&[
        json!({"resourceType": "Patient", "id": "m1"}).to_string(),
        json!({"resourceType": "Observation", "id": "stray", "status": "final", "code": {"text": "x"}})
            .to_string(),
        json!({"resourceType": "Patient", "id": "m2"}).to_string(),
    ]);
    let observations = lines(&[json!({"resourceType": "Observation", "id": "mo1",
        "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/m1"}})
    .to_string()]);
    let server = file_server(vec![
        ("/files/patients.ndjson", patients.into_bytes()),
        ("/files/observations.ndjson", observations.into_bytes()),
        ("/private/secret.ndjson", b"{}\n".to_vec()),
    ])
    .await;
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("import_sources = [\"{server}/files/\"]");
        let (app, state) = raw_app_on(&db, &config(dir.path(), &extra)).await;
        let b = db.backend;
        let token = mint(&state, system_token("system/*.cu system/*.rs", "importer")).await;
        let manifest = manifest_of(&[
            ("Patient", format!("{server}/files/patients.ndjson")),
            ("Observation", format!("{server}/files/observations.ndjson")),
        ]);
        let kicked = import(&app, &token, "application/fhir+json", &[], manifest).await;
        let done = finished(&app, &status_path(&kicked), &token).await;
        assert_eq!(done.status, 200, "{b}: {:?}", done.body);
        assert_eq!(
            done.body["output"],
            json!([{"type": "Observation", "count": 1}, {"type": "Patient", "count": 2}]),
            "{b}"
        );
        let refused = refusals(&app, &done.body, &token).await;
        assert_eq!(refused.len(), 1, "{b}: {refused:?}");
        assert!(
            refused[0].starts_with(&format!("{server}/files/patients.ndjson line 2:"))
                && refused[0].contains("input of Patient"),
            "{b}: {refused:?}"
        );

        // A URL outside the sources is refused at the kick-off.
        let outside = manifest_of(&[("Patient", format!("{server}/private/secret.ndjson"))]);
        let reply = import(&app, &token, "application/fhir+json", &[], outside).await;
        assert_eq!(reply.status, 400, "{b}");
        assert!(
            reply.diagnostics().contains("not under"),
            "{b}: {}",
            reply.diagnostics()
        );
        // A file the source does not have fails the job, naming it.
        let missing = format!("{server}/files/missing.ndjson");
        let reply = import(
            &app,
            &token,
            "application/fhir+json",
            &[],
            manifest_of(&[("Patient", missing.clone())]),
        )
        .await;
        let failed = finished(&app, &status_path(&reply), &token).await;
        assert_eq!(failed.status, 500, "{b}");
        assert!(
            failed.diagnostics().contains(&missing),
            "{b}: {}",
            failed.diagnostics()
        );
    }
}

#[tokio::test]
async fn a_cancelled_import_stops_and_leaves_whole_batches() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let (app, state) = raw_app_on(&db, &config(dir.path(), "")).await;
        let b = db.backend;
        let token = mint(&state, system_token("system/*.cu system/*.rs", "importer")).await;
        let total = 30_000;
        let body: Vec<String> = (0..total)
            .map(|i| {
                json!({"resourceType": "Patient", "id": format!("c{i}"), "gender": "other"})
                    .to_string()
            })
            .collect();
        let status =
            status_path(&import(&app, &token, "application/fhir+ndjson", &[], lines(&body)).await);
        let job = status.rsplit('/').next().unwrap().to_owned();
        // Cancel once the first batch is in, so that the cancel cuts a load under way (a
        // cancel that came first left nothing loaded on a busy machine).
        for _ in 0..1500 {
            if count(state.store(), "SELECT COUNT(*) FROM fhir_resources").await > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let cancelled = send(&app, "DELETE", &status, &token, Value::Null).await;
        assert_eq!(cancelled.status, 202, "{b}");
        assert_eq!(
            send(&app, "GET", &status, &token, Value::Null).await.status,
            404,
            "{b}"
        );
        // The job stops within a heartbeat and a batch: the count settles.
        let mut loaded = -1;
        for _ in 0..60 {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let now = count(state.store(), "SELECT COUNT(*) FROM fhir_resources").await;
            if now == loaded && !dir.path().join(&job).exists() {
                break;
            }
            loaded = now;
        }
        assert!(0 < loaded && loaded < total, "{b}: {loaded} loaded");
        assert_eq!(loaded % 1000, 0, "{b}: whole batches only ({loaded})");
        assert!(
            !dir.path().join(&job).exists(),
            "{b}: the job's files are gone"
        );
    }
}

/// The real binary killed (SIGKILL) while a `$import` runs: the batches written before
/// stay whole (each resource with its history and index rows, a multiple of the batch
/// size), the job's status answers the failure once `bulk.stale_after_secs` has passed,
/// and the same import started again loads the rest.
#[tokio::test]
async fn an_import_interrupted_by_a_restart_is_failed_and_can_be_run_again() {
    use crate::support::{Server, add_backend_client, client_token, client_trusting};
    const SCOPE: &str = "system/*.cu system/*.rs";
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let b = db.backend;
        std::fs::write(
            dir.path().join("hestia.toml"),
            "[bulk]\nstale_after_secs = 1\n",
        )
        .unwrap();
        let args = ["--database-url", db.url.as_str()];
        let client = add_backend_client(dir.path(), &db, SCOPE);
        let total = 30_000;
        let body: Vec<String> = (0..total)
            .map(|i| {
                json!({"resourceType": "Patient", "id": format!("k{i}"),
                       "identifier": [{"system": "urn:test", "value": format!("k{i}")}],
                       "name": [{"family": format!("Family{}", i % 97)}]})
                .to_string()
            })
            .collect();
        let body = lines(&body);

        let mut server = Server::start(dir.path(), &args);
        let http = client_trusting(&server.data_dir.join("tls").join("ca.pem"));
        let token = client_token(&http, &server, &server.url, &client, SCOPE).await;
        let kicked = post_import(&http, &server.url, &token, body.clone()).await;
        wait_for_loaded_batches(&http, &kicked, &token).await;
        server.child.kill().unwrap(); // SIGKILL, while the import runs
        server.child.wait().unwrap();
        let store = hestia::store::Store::open(&db.url).await.unwrap();
        let running = "SELECT COUNT(*) FROM bulk_jobs WHERE state = 'in-progress'";
        assert_eq!(
            count(&store, running).await,
            1,
            "{b}: the import was running"
        );
        let loaded = crate::bulk::check_whole(&store, b).await;
        assert!(0 < loaded && loaded < total, "{b}: {loaded} loaded");
        assert_eq!(loaded % 1000, 0, "{b}: whole batches only ({loaded})");
        store.close().await;

        let server = Server::start(dir.path(), &args);
        let token = client_token(&http, &server, &server.url, &client, SCOPE).await;
        // Past `bulk.stale_after_secs` since the dead worker last reported.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let path = &kicked[kicked.find(BASE).unwrap()..];
        let reply = http
            .get(format!("{}{path}", server.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 500, "{b}");
        let outcome: Value = reply.json().await.unwrap();
        let why = outcome["issue"][0]["diagnostics"].as_str().unwrap_or("");
        assert!(
            why.contains("interrupted") && why.contains("start it again"),
            "{b}: {outcome}"
        );

        let again = post_import(&http, &server.url, &token, body).await;
        let manifest = poll_until_done(&http, &again, &token).await;
        assert_eq!(
            manifest["output"],
            json!([{"type": "Patient", "count": total}]),
            "{b}"
        );
        let store = hestia::store::Store::open(&db.url).await.unwrap();
        assert_eq!(crate::bulk::check_whole(&store, b).await, total, "{b}");
        store.close().await;
    }
}

/// Kicks off `$import` of an NDJSON `body` over HTTP; answers the status URL.
async fn post_import(http: &reqwest::Client, url: &str, token: &str, body: String) -> String {
    let kicked = http
        .post(format!("{url}{BASE}/$import"))
        .bearer_auth(token)
        .header("accept", "application/fhir+json")
        .header("prefer", "respond-async")
        .header("content-type", "application/fhir+ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = kicked.status();
    let location = kicked.headers().get("content-location").cloned();
    assert_eq!(status, 202, "{:?}", kicked.text().await);
    location.unwrap().to_str().unwrap().to_owned()
}

/// Polls a running import's status URL until its `X-Progress` counts loaded resources.
async fn wait_for_loaded_batches(http: &reqwest::Client, status: &str, token: &str) {
    for _ in 0..1000 {
        let reply = http.get(status).bearer_auth(token).send().await.unwrap();
        assert_eq!(
            reply.status(),
            202,
            "the import ended before it could be interrupted"
        );
        let progress = reply.headers()["x-progress"].to_str().unwrap().to_owned();
        let loaded: u64 = progress.split(' ').next().unwrap().parse().unwrap_or(0);
        if loaded > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the import loaded nothing in 20 seconds");
}

/// Polls a status URL over HTTP until the job is done; answers the manifest.
async fn poll_until_done(http: &reqwest::Client, status: &str, token: &str) -> Value {
    for _ in 0..600 {
        let reply = http.get(status).bearer_auth(token).send().await.unwrap();
        if reply.status() != 202 {
            let code = reply.status();
            let body: Value = reply.json().await.unwrap();
            assert_eq!(code, 200, "{body}");
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the import did not finish in 2 minutes");
}
