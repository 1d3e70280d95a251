//! Requests built to hurt the server: each gets a prompt answer that names the limit it
//! reached, and the server stays up and ready.

use axum::body::{Body, Bytes};
use serde_json::{Value, json};

use crate::support::{Server, TestDb, app_on, call, client_trusting, raw_app_on, system_token_of};

const JSON: (&str, &str) = ("content-type", "application/fhir+json");

/// A body whose first (and only) chunk arrives when `release` fires or is dropped: a
/// request that stays in flight for as long as the test wants.
fn stalled_body(release: tokio::sync::oneshot::Receiver<()>) -> Body {
    let chunk = async move {
        let _ = release.await;
        Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))
    };
    Body::from_stream(futures_util::stream::once(chunk))
}

/// The reply of a request that the server must end by itself; a watchdog far past any
/// configured timeout turns a request left waiting forever into a failure, not a hang.
async fn answered(
    reply: impl std::future::Future<Output = crate::support::Reply>,
) -> crate::support::Reply {
    tokio::time::timeout(std::time::Duration::from_secs(120), reply)
        .await
        .expect("the server never answered a request whose body does not arrive")
}

/// JSON Patch operations that put a value nested 100 objects deep into the resource and
/// then copy it into its own innermost object eight times, doubling its depth each time
/// (100 -> 25,600): about 52 KB of patch.
fn doubling_patch() -> Value {
    let mut deep = json!({});
    for _ in 1..100 {
        deep = json!({ "x": deep });
    }
    let mut ops = vec![
        json!({"op": "add", "path": "/extension", "value": [{"url": "urn:deep", "valueString": "x", "x": deep}]}),
    ];
    let mut depth = 100;
    for _ in 0..8 {
        ops.push(json!({
            "op": "copy",
            "from": "/extension/0/x",
            "path": format!("/extension/0/x{}", "/x".repeat(depth - 1) + "/x"),
        }));
        depth *= 2;
    }
    Value::Array(ops)
}

/// The real binary (the stack of its request threads, not a test thread's): a patch
/// whose copies would nest the resource 25,600 deep is refused with 422 naming
/// `fhir.max_json_depth`, nothing is written, and the server stays ready.
#[tokio::test]
async fn a_doubling_patch_is_refused_naming_the_depth_limit_and_the_server_stays_up() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &["--database-url", &db.url]);
        let http = client_trusting(&server.data_dir.join("tls").join("ca.pem"));
        let access = system_token_of(
            &server,
            dir.path(),
            &db,
            &http,
            "system/*.read system/*.write",
        )
        .await;
        let base = format!("{}/fhir/r4", server.url);
        let created: Value = http
            .post(format!("{base}/Patient"))
            .bearer_auth(&access)
            .header(JSON.0, JSON.1)
            .body(json!({"resourceType": "Patient", "name": [{"family": "Deep"}]}).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().unwrap();

        let patch = doubling_patch().to_string();
        assert!(patch.len() > 50_000, "{}", patch.len());
        let r = http
            .patch(format!("{base}/Patient/{id}"))
            .bearer_auth(&access)
            .header("content-type", "application/json-patch+json")
            .body(patch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{}", db.backend);
        let outcome: Value = r.json().await.unwrap();
        let why = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            why.contains("at most 127 are allowed (fhir.max_json_depth)"),
            "{why}"
        );

        let ready = http
            .get(format!("{}/health/ready", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{}", db.backend);
        let read: Value = http
            .get(format!("{base}/Patient/{id}"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(read["meta"]["versionId"], "1", "{read}");
        assert!(read.get("extension").is_none());
    }
}

fn bundle_of(kind: &str, entries: usize) -> String {
    let entry: Vec<Value> = (0..entries)
        .map(|i| {
            json!({
                "resource": {"resourceType": "Patient", "name": [{"family": format!("Entry{i}")}]},
                "request": {"method": "POST", "url": "Patient"}
            })
        })
        .collect();
    json!({"resourceType": "Bundle", "type": kind, "entry": entry}).to_string()
}

/// A batch or transaction of more entries than `fhir.max_bundle_entries` is refused
/// whole, before any entry runs; one at the limit runs.
#[tokio::test]
async fn a_bundle_over_the_entry_limit_is_refused_before_any_entry_runs() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "[fhir]\nmax_bundle_entries = 3\n").await;
        for kind in ["batch", "transaction"] {
            let r = call(&app, "POST", "/fhir/r4", &[JSON], bundle_of(kind, 4)).await;
            assert_eq!(r.status, 413, "{}: {}", db.backend, r.body);
            assert_eq!(r.body["resourceType"], "OperationOutcome");
            assert!(
                r.diagnostics().contains(
                    "the Bundle has 4 entries; at most 3 are allowed (fhir.max_bundle_entries)"
                ),
                "{}",
                r.diagnostics()
            );
        }
        let none = call(&app, "GET", "/fhir/r4/Patient?_summary=count", &[], "").await;
        assert_eq!(none.body["total"], 0, "{}: nothing was written", db.backend);
        let r = call(&app, "POST", "/fhir/r4", &[JSON], bundle_of("batch", 3)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let three = call(&app, "GET", "/fhir/r4/Patient?_summary=count", &[], "").await;
        assert_eq!(three.body["total"], 3);
    }
}

/// A request still running at `server.request_timeout_secs` is stopped and answered 503
/// in its protocol's shape: an OperationOutcome for FHIR, RFC 6749 JSON for OAuth.
#[tokio::test]
async fn a_request_past_the_timeout_gets_503_in_its_protocol() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "[server]\nrequest_timeout_secs = 1\n").await;
        let (_keep, release) = tokio::sync::oneshot::channel::<()>();
        let r = answered(call(
            &app,
            "POST",
            "/fhir/r4/Patient",
            &[JSON],
            stalled_body(release),
        ))
        .await;
        assert_eq!(r.status, 503, "{}: {}", db.backend, r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome");
        assert_eq!(r.body["issue"][0]["code"], "transient");
        assert!(
            r.diagnostics()
                .contains("did not finish within 1 s (server.request_timeout_secs)"),
            "{}",
            r.diagnostics()
        );
        assert_eq!(r.header("retry-after"), "1");

        let (_keep, release) = tokio::sync::oneshot::channel::<()>();
        let r = answered(call(
            &app,
            "POST",
            "/oauth2/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            stalled_body(release),
        ))
        .await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.body["error"], "temporarily_unavailable");
        assert!(
            r.body["error_description"]
                .as_str()
                .unwrap()
                .contains("server.request_timeout_secs")
        );
    }
}

/// With `server.max_concurrent_requests = 1` and one request in flight, another is shed at
/// once (503 + `Retry-After`, counted in a metric) while health and metrics still answer;
/// once the first finishes, requests are served again.
#[tokio::test]
async fn requests_over_the_concurrency_limit_are_shed_while_health_answers() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "[server]\nmax_concurrent_requests = 1\n").await;
        let (release, stalled) = tokio::sync::oneshot::channel::<()>();
        let in_flight = {
            let app = app.clone();
            tokio::spawn(async move {
                call(
                    &app,
                    "POST",
                    "/fhir/r4/Patient",
                    &[JSON],
                    stalled_body(stalled),
                )
                .await
            })
        };
        // The stalled request takes the only slot in its first poll, which this lets run
        // (the test's runtime has one thread).
        tokio::task::yield_now().await;
        let mut shed = None;
        for _ in 0..500 {
            let r = call(&app, "GET", "/fhir/r4/Patient", &[], "").await;
            if r.status == 503 {
                shed = Some(r);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let shed = shed.expect("no request was shed while one was in flight");
        assert_eq!(shed.header("retry-after"), "1");
        assert_eq!(shed.body["resourceType"], "OperationOutcome");
        assert!(
            shed.diagnostics()
                .contains("limit of 1 requests in flight (server.max_concurrent_requests)"),
            "{}",
            shed.diagnostics()
        );
        let token = call(&app, "POST", "/oauth2/token", &[], "").await;
        assert_eq!(token.status, 503);
        assert_eq!(token.body["error"], "temporarily_unavailable");
        assert_eq!(
            call(&app, "GET", "/health/ready", &[], "").await.status,
            200
        );
        let metrics = call(&app, "GET", "/metrics", &[], "").await;
        assert!(
            metrics
                .body
                .as_str()
                .unwrap()
                .contains("hestia_http_requests_shed_total"),
            "{}",
            metrics.body
        );

        release.send(()).unwrap();
        let first = in_flight.await.unwrap();
        assert_ne!(first.status, 503, "{}", first.body);
        let after = call(&app, "GET", "/fhir/r4/Patient", &[], "").await;
        assert_eq!(after.status, 200, "{}", after.body);
    }
}

/// `serve` opens its store with PostgreSQL's `statement_timeout` set on every connection
/// of the pool: a statement past it is cancelled by the database. SQLite has no such
/// setting and opens the same way.
#[tokio::test]
async fn the_store_sets_a_statement_timeout_on_postgres() {
    use sqlx::Row;
    for db in TestDb::all().await {
        let store = hestia::store::Store::connect_with(
            &db.url,
            Some(std::time::Duration::from_millis(700)),
        )
        .await
        .unwrap();
        if db.backend == "sqlite" {
            store.ping().await.unwrap();
            continue;
        }
        // Every connection of the pool, not only the first.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.pool().acquire().await.unwrap();
            let row = sqlx::query("SHOW statement_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(row.get::<String, _>(0), "700ms");
            held.push(conn);
        }
        drop(held);
        let err = sqlx::query("SELECT pg_sleep(30)")
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("statement timeout"), "{err}");
    }
}

/// When the database fails, the client gets a generic answer that points at the log
/// with the request id; the database's own error text never reaches it (FHIR, OAuth).
#[tokio::test]
async fn database_errors_never_reach_the_client() {
    for db in TestDb::all().await {
        let (app, state) = app_on(&db, "").await;
        state.store().close().await;
        let fhir = call(
            &app,
            "GET",
            "/fhir/r4/Patient",
            &[("x-request-id", "req-db-down")],
            "",
        )
        .await;
        assert_eq!(fhir.status, 503, "{}: {}", db.backend, fhir.body);
        assert_eq!(fhir.header("x-request-id"), "req-db-down");
        let text = fhir.body.to_string();
        assert!(
            !text.contains("pool") && !text.contains("sqlx") && !text.contains("database error"),
            "{text}"
        );
        assert!(text.contains("x-request-id"), "{text}");

        let oauth = call(
            &app,
            "POST",
            "/oauth2/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            "grant_type=client_credentials&client_id=a&client_secret=b",
        )
        .await;
        assert!(oauth.status >= 500, "{}", oauth.body);
        let text = oauth.body.to_string();
        assert!(!text.contains("pool") && !text.contains("sqlx"), "{text}");
    }
}

/// FHIR routes mounted without the authorization layer serve nothing: with no `Access`
/// in the request, a handler refuses (500 naming the missing decision) and writes nothing.
#[tokio::test]
async fn fhir_routes_without_the_authorization_layer_refuse() {
    for db in TestDb::all().await {
        let (_, state) = raw_app_on(&db, "").await;
        let bare = axum::Router::new()
            .nest("/fhir/r4", hestia::http::fhir::routes(1 << 20))
            .with_state(state.clone());
        let read = call(&bare, "GET", "/fhir/r4/Patient", &[], "").await;
        assert_eq!(read.status, 500, "{}: {}", db.backend, read.body);
        assert!(
            read.diagnostics().contains("no authorization decision"),
            "{}",
            read.diagnostics()
        );
        let body = json!({"resourceType": "Patient"}).to_string();
        let write = call(&bare, "POST", "/fhir/r4/Patient", &[JSON], body).await;
        assert_eq!(write.status, 500, "{}", write.body);
        let batch = call(&bare, "POST", "/fhir/r4", &[JSON], bundle_of("batch", 1)).await;
        assert!(batch.status >= 400, "{}", batch.body);

        let (app, _) = app_on(&db, "").await;
        let count = call(&app, "GET", "/fhir/r4/Patient?_summary=count", &[], "").await;
        assert_eq!(count.body["total"], 0, "nothing was written");
    }
}
