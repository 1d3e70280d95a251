//! FHIR REST core on both databases: CRUD, versions, conditional headers, history, and
//! the errors that must store nothing.

use serde_json::json;

use crate::support::{Reply, TestDb, app_on, call};

const JSON: (&str, &str) = ("content-type", "application/fhir+json");

fn patient(family: &str) -> String {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Ada"]}], "birthDate": "1970-01-01"}).to_string()
}

/// One Patient's life on each database: create, a stale and a current update, vread,
/// patch, delete, history and a re-create that continues the versions.
/// Long: one resource's life in order; each step checks the versions the steps before made.
#[tokio::test]
async fn crud_versions_and_history_on_both_databases() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;

        let created = call(
            &app,
            "POST",
            "/fhir/r4/Patient",
            &[JSON],
            patient("Lovelace"),
        )
        .await;
        assert_eq!(created.status, 201, "{b}: {:?}", created.body);
        let id = created.body["id"].as_str().unwrap().to_string();
        assert_eq!(created.header("etag"), "W/\"1\"");
        assert_eq!(
            created.header("location"),
            format!("http://localhost:8080/fhir/r4/Patient/{id}/_history/1")
        );
        assert!(!created.header("last-modified").is_empty());
        assert_eq!(created.body["meta"]["versionId"], "1");
        assert_eq!(
            created.header("content-type"),
            "application/fhir+json; charset=utf-8"
        );

        let read = call(&app, "GET", &format!("/fhir/r4/Patient/{id}"), &[], "").await;
        assert_eq!(read.status, 200);
        assert_eq!(
            read.body, created.body,
            "{b}: read gives back what create answered"
        );

        let mut changed = read.body.clone();
        changed["name"][0]["family"] = json!("Byron");
        let stale = call(
            &app,
            "PUT",
            &format!("/fhir/r4/Patient/{id}"),
            &[JSON, ("if-match", "W/\"7\"")],
            changed.to_string(),
        )
        .await;
        assert_eq!(stale.status, 412, "{b}");
        assert!(
            stale.diagnostics().contains("current version is 1"),
            "{}",
            stale.diagnostics()
        );
        let updated = call(
            &app,
            "PUT",
            &format!("/fhir/r4/Patient/{id}"),
            &[JSON, ("if-match", "W/\"1\"")],
            changed.to_string(),
        )
        .await;
        assert_eq!(updated.status, 200, "{b}: {:?}", updated.body);
        assert_eq!(updated.header("etag"), "W/\"2\"");
        assert_eq!(updated.body["name"][0]["family"], "Byron");

        let v1 = call(
            &app,
            "GET",
            &format!("/fhir/r4/Patient/{id}/_history/1"),
            &[],
            "",
        )
        .await;
        assert_eq!(
            v1.body["name"][0]["family"], "Lovelace",
            "{b}: every version is kept"
        );
        let missing = call(
            &app,
            "GET",
            &format!("/fhir/r4/Patient/{id}/_history/9"),
            &[],
            "",
        )
        .await;
        assert_eq!(missing.status, 404);

        let patched = call(
            &app,
            "PATCH",
            &format!("/fhir/r4/Patient/{id}"),
            &[("content-type", "application/json-patch+json")],
            json!([{"op": "replace", "path": "/birthDate", "value": "1815-12-10"}]).to_string(),
        )
        .await;
        assert_eq!(patched.status, 200, "{b}: {:?}", patched.body);
        assert_eq!(patched.body["birthDate"], "1815-12-10");
        assert_eq!(patched.body["meta"]["versionId"], "3");
        let bad_patch = call(
            &app,
            "PATCH",
            &format!("/fhir/r4/Patient/{id}"),
            &[("content-type", "application/json-patch+json")],
            json!([{"op": "replace", "path": "/id", "value": "other"}]).to_string(),
        )
        .await;
        assert_eq!(bad_patch.status, 422, "{b}");

        let deleted = call(&app, "DELETE", &format!("/fhir/r4/Patient/{id}"), &[], "").await;
        assert_eq!(deleted.status, 204, "{b}");
        let gone = call(&app, "GET", &format!("/fhir/r4/Patient/{id}"), &[], "").await;
        assert_eq!(gone.status, 410, "{b}");
        assert_eq!(gone.body["resourceType"], "OperationOutcome");
        let again = call(&app, "DELETE", &format!("/fhir/r4/Patient/{id}"), &[], "").await;
        assert_eq!(again.status, 204, "deleting twice is idempotent");

        let history = call(
            &app,
            "GET",
            &format!("/fhir/r4/Patient/{id}/_history"),
            &[],
            "",
        )
        .await;
        assert_eq!(history.status, 200);
        assert_eq!(history.body["type"], "history");
        assert_eq!(
            history.body["total"], 4,
            "{b}: create, update, patch, delete"
        );
        let methods: Vec<_> = history.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["request"]["method"].clone())
            .collect();
        assert_eq!(
            methods,
            vec![json!("DELETE"), json!("PATCH"), json!("PUT"), json!("POST")]
        );
        assert!(
            history.body["entry"][0].get("resource").is_none(),
            "a deletion has no resource"
        );

        // Re-creating a deleted resource with a client id continues its versions.
        let mut revived = changed.clone();
        revived.as_object_mut().unwrap().remove("meta");
        let recreated = call(
            &app,
            "PUT",
            &format!("/fhir/r4/Patient/{id}"),
            &[JSON],
            revived.to_string(),
        )
        .await;
        assert_eq!(recreated.status, 201, "{b}: {:?}", recreated.body);
        assert_eq!(recreated.header("etag"), "W/\"5\"");
    }
}

#[tokio::test]
async fn create_on_update_and_prefer_headers() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let body = json!({"resourceType": "Observation", "id": "obs-1", "status": "final", "code": {"text": "weight"}}).to_string();
        let minimal = call(
            &app,
            "PUT",
            "/fhir/r4/Observation/obs-1",
            &[JSON, ("prefer", "return=minimal")],
            body.clone(),
        )
        .await;
        assert_eq!(minimal.status, 201, "{}: {:?}", db.backend, minimal.body);
        assert!(minimal.body.is_null(), "return=minimal sends no body");
        assert_eq!(minimal.header("etag"), "W/\"1\"");
        let outcome = call(
            &app,
            "PUT",
            "/fhir/r4/Observation/obs-1",
            &[JSON, ("prefer", "return=OperationOutcome")],
            body,
        )
        .await;
        assert_eq!(outcome.status, 200);
        assert_eq!(outcome.body["resourceType"], "OperationOutcome");
        assert!(
            outcome
                .diagnostics()
                .contains("Observation/obs-1 version 2"),
            "{}",
            outcome.diagnostics()
        );

        let (strict, _) = app_on(&db, "[fhir]\ncreate_on_update = false\n").await;
        let refused = call(
            &strict,
            "PUT",
            "/fhir/r4/Patient/new-one",
            &[JSON],
            json!({"resourceType": "Patient", "id": "new-one"}).to_string(),
        )
        .await;
        assert_eq!(refused.status, 405);
        assert!(
            refused.diagnostics().contains("client-assigned ids"),
            "{}",
            refused.diagnostics()
        );
    }
}

/// Method, URI, headers, body, expected status, text the OperationOutcome must contain.
type BadCase = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    String,
    u16,
    &'static str,
);

/// Bad requests get the status and diagnosis of their fault, and none of them stores
/// anything.
/// Long: one table of 20 bad requests, each with its expected status and diagnosis.
#[tokio::test]
async fn bad_requests_get_the_right_status_and_store_nothing() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "[fhir]\nmax_body_bytes = 2048\n").await;
        let existing = call(
            &app,
            "PUT",
            "/fhir/r4/Patient/p1",
            &[JSON],
            json!({"resourceType": "Patient", "id": "p1"}).to_string(),
        )
        .await;
        assert_eq!(existing.status, 201);
        let big = json!({"resourceType": "Patient", "text": {"status": "generated", "div": "x".repeat(4096)}}).to_string();
        let cases: Vec<BadCase> = vec![
            (
                "POST",
                "/fhir/r4/Patient",
                vec![JSON],
                "{not json".into(),
                400,
                "not valid JSON",
            ),
            (
                "POST",
                "/fhir/r4/Patient",
                vec![JSON],
                "[1,2]".into(),
                400,
                "JSON object",
            ),
            (
                "POST",
                "/fhir/r4/Patient",
                vec![JSON],
                json!({"resourceType": "Observation"}).to_string(),
                400,
                "does not match the URL",
            ),
            (
                "POST",
                "/fhir/r4/Patient",
                vec![JSON],
                json!({"name": []}).to_string(),
                400,
                "no resourceType",
            ),
            (
                "POST",
                "/fhir/r4/Patient",
                vec![JSON],
                json!({"resourceType": "Patient", "meta": 5}).to_string(),
                422,
                "must be a JSON object",
            ),
            (
                "POST",
                "/fhir/r4/Frobnicator",
                vec![JSON],
                json!({"resourceType": "Frobnicator"}).to_string(),
                404,
                "not a FHIR R4 resource type",
            ),
            (
                "PUT",
                "/fhir/r4/Patient/p1",
                vec![JSON],
                json!({"resourceType": "Patient", "id": "p2"}).to_string(),
                400,
                "does not match the URL's id",
            ),
            (
                "PUT",
                "/fhir/r4/Patient/p1",
                vec![JSON],
                json!({"resourceType": "Patient"}).to_string(),
                400,
                "needs the resource's id",
            ),
            (
                "PUT",
                "/fhir/r4/Patient/bad_id!",
                vec![JSON],
                json!({"resourceType": "Patient", "id": "bad_id!"}).to_string(),
                400,
                "not a valid resource id",
            ),
            (
                "PUT",
                "/fhir/r4/Patient/p1",
                vec![JSON, ("if-match", "W/\"3\"")],
                json!({"resourceType": "Patient", "id": "p1"}).to_string(),
                412,
                "current version is 1",
            ),
            (
                "PUT",
                "/fhir/r4/Patient/p1",
                vec![JSON, ("if-match", "soon")],
                json!({"resourceType": "Patient", "id": "p1"}).to_string(),
                400,
                "If-Match",
            ),
            (
                "POST",
                "/fhir/r4/Patient",
                vec![("content-type", "application/fhir+xml")],
                "<Patient/>".into(),
                415,
                "not supported",
            ),
            (
                "POST",
                "/fhir/r4/Patient?_format=xml",
                vec![JSON],
                patient("X"),
                415,
                "XML",
            ),
            (
                "GET",
                "/fhir/r4/Patient/p1",
                vec![("accept", "application/fhir+xml")],
                String::new(),
                406,
                "application/fhir+json only",
            ),
            (
                "POST",
                "/fhir/r4/Patient",
                vec![JSON],
                big,
                413,
                "too large",
            ),
            (
                "POST",
                "/fhir/r4/Patient/p1",
                vec![JSON],
                patient("X"),
                405,
                "does not support that HTTP method",
            ),
            (
                "PATCH",
                "/fhir/r4/Patient/p1",
                vec![("content-type", "application/json-patch+json")],
                "{}".into(),
                400,
                "JSON Patch",
            ),
            (
                "GET",
                "/fhir/r4/Patient/p1/_history?_count=abc",
                vec![],
                String::new(),
                400,
                "_count=abc",
            ),
            (
                "GET",
                "/fhir/r4/_history?_since=yesterday",
                vec![],
                String::new(),
                400,
                "_since=yesterday",
            ),
            (
                "GET",
                "/fhir/r4/Patient/nope/_history",
                vec![],
                String::new(),
                404,
                "not known",
            ),
        ];
        for (method, uri, headers, body, status, needle) in cases {
            let reply = call(&app, method, uri, &headers, body).await;
            assert_eq!(
                reply.status, status,
                "{} {method} {uri}: {:?}",
                db.backend, reply.body
            );
            assert_eq!(
                reply.body["resourceType"], "OperationOutcome",
                "{method} {uri}: {:?}",
                reply.body
            );
            assert!(
                reply.diagnostics().contains(needle),
                "{method} {uri}: {:?} should contain {needle:?}",
                reply.diagnostics()
            );
        }
        let history = call(&app, "GET", "/fhir/r4/_history", &[], "").await;
        assert_eq!(
            history.body["total"], 1,
            "{}: only the first PUT was stored: {:?}",
            db.backend, history.body
        );
        let p1 = call(&app, "GET", "/fhir/r4/Patient/p1", &[], "").await;
        assert_eq!(p1.header("etag"), "W/\"1\"");
    }
}

#[tokio::test]
async fn history_paging_and_since() {
    for db in TestDb::all().await {
        let (app, _) = app_on(
            &db,
            "[fhir]\nbase_path = \"/csp/healthshare/fhirserver/fhir/r4\"\n",
        )
        .await;
        let base = "/csp/healthshare/fhirserver/fhir/r4";
        for i in 0..5 {
            let r = call(
                &app,
                "POST",
                &format!("{base}/Patient"),
                &[JSON],
                patient(&format!("P{i}")),
            )
            .await;
            assert_eq!(r.status, 201, "{}", db.backend);
        }
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
            .to_string();
        assert_eq!(
            call(&app, "POST", &format!("{base}/Observation"), &[JSON], obs)
                .await
                .status,
            201
        );

        let page1 = call(
            &app,
            "GET",
            &format!("{base}/Patient/_history?_count=2"),
            &[],
            "",
        )
        .await;
        assert_eq!(page1.body["total"], 5, "{}", db.backend);
        assert_eq!(page1.body["entry"].as_array().unwrap().len(), 2);
        let next = page1.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .expect("a next link")["url"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            next.starts_with(&format!("http://localhost:8080{base}/Patient/_history?")),
            "{next}"
        );
        let path = next.trim_start_matches("http://localhost:8080");
        let page2 = call(&app, "GET", path, &[], "").await;
        assert_eq!(page2.body["entry"].as_array().unwrap().len(), 2);
        assert_ne!(
            page1.body["entry"][0]["fullUrl"],
            page2.body["entry"][0]["fullUrl"]
        );
        assert!(
            page2.body["link"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["relation"] == "previous")
        );

        let system = call(&app, "GET", &format!("{base}/_history"), &[], "").await;
        assert_eq!(system.body["total"], 6);
        assert_eq!(
            system.body["entry"][0]["resource"]["resourceType"], "Observation",
            "newest first"
        );

        let future = call(
            &app,
            "GET",
            &format!("{base}/_history?_since=2999-01-01"),
            &[],
            "",
        )
        .await;
        assert_eq!(future.body["total"], 0);
        let past = call(&app, "GET", &format!("{base}/_history?_at=2000"), &[], "").await;
        assert_eq!(past.body["total"], 0);
        let all = call(
            &app,
            "GET",
            &format!("{base}/_history?_since=2000-01-01T00:00:00Z"),
            &[],
            "",
        )
        .await;
        assert_eq!(all.body["total"], 6);
    }
}

/// `(id, versionId)` of each entry of a history Bundle.
fn history_versions(body: &serde_json::Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let url = e["fullUrl"].as_str().unwrap_or("");
            let id = url.rsplit('/').next().unwrap_or("").to_owned();
            let version = e["resource"]["meta"]["versionId"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    e["response"]["etag"]
                        .as_str()
                        .map(|t| t.trim_start_matches("W/").trim_matches('"').to_owned())
                })
                .unwrap_or_default();
            (id, version)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn history_pages_are_not_shifted_by_new_versions() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        for n in 0..6 {
            let body = json!({"resourceType": "Patient", "id": "h", "name": [{"family": format!("V{n}")}]});
            let r = call(&app, "PUT", "/fhir/r4/Patient/h", &[JSON], body.to_string()).await;
            assert!(r.status < 300, "{b}");
        }
        let first = call(&app, "GET", "/fhir/r4/Patient/h/_history?_count=2", &[], "").await;
        let mut versions = history_versions(&first.body);
        // Two new versions between pages: newest first, they would shift later pages.
        // (A millisecond later at least: the snapshot is the first page's millisecond.)
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        for n in 6..8 {
            let body = json!({"resourceType": "Patient", "id": "h", "name": [{"family": format!("V{n}")}]});
            call(&app, "PUT", "/fhir/r4/Patient/h", &[JSON], body.to_string()).await;
        }
        let mut page = first.body;
        while let Some(next) = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned())
        {
            let path = next.trim_start_matches("http://localhost:8080");
            page = call(&app, "GET", path, &[], "").await.body;
            assert_eq!(page["total"], 6, "{b}: the snapshot's total");
            versions.extend(history_versions(&page));
            assert!(versions.len() < 20, "{b}: paging does not end");
        }
        let mut numbers: Vec<u32> = versions.iter().map(|(_, v)| v.parse().unwrap()).collect();
        numbers.sort();
        assert_eq!(
            numbers,
            [1, 2, 3, 4, 5, 6],
            "{b}: each version of the snapshot once"
        );
    }
}

#[tokio::test]
async fn history_at_keeps_the_versions_current_within_the_range() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        // `early` is created first and never changed; `late` after everything else.
        let early = call(
            &app,
            "PUT",
            "/fhir/r4/Patient/early",
            &[JSON],
            json!({"resourceType": "Patient", "id": "early"}).to_string(),
        )
        .await;
        assert_eq!(early.status, 201, "{b}");
        let mut stamps = Vec::new();
        for family in ["V1", "V2", "V3"] {
            // Versions a few milliseconds apart, so that each has its own instant.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let body = json!({"resourceType": "Patient", "id": "x", "name": [{"family": family}]});
            let r = call(&app, "PUT", "/fhir/r4/Patient/x", &[JSON], body.to_string()).await;
            assert!(r.status < 300, "{b}: {:?}", r.body);
            stamps.push(r.body["meta"]["lastUpdated"].as_str().unwrap().to_owned());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let late = call(
            &app,
            "PUT",
            "/fhir/r4/Patient/late",
            &[JSON],
            json!({"resourceType": "Patient", "id": "late"}).to_string(),
        )
        .await;
        assert_eq!(late.status, 201, "{b}");

        let at = |path: &str, when: &str| {
            let app = app.clone();
            let url = format!("/fhir/r4/{path}?_at={}", when.replace('+', "%2B"));
            async move {
                let r = call(&app, "GET", &url, &[], "").await;
                assert_eq!(r.status, 200, "{url}: {:?}", r.body);
                r.body
            }
        };
        let pair = |id: &str, v: &str| (id.to_owned(), v.to_owned());
        // The instant of v2: v2 was current then; v1 had been replaced, v3 was not yet.
        let v2 = &stamps[1];
        let instance = at("Patient/x/_history", v2).await;
        assert_eq!(
            history_versions(&instance),
            vec![pair("x", "2")],
            "{b}: {instance}"
        );
        assert_eq!(instance["total"], 1, "{b}");
        let want = vec![pair("early", "1"), pair("x", "2")];
        assert_eq!(
            history_versions(&at("Patient/_history", v2).await),
            want,
            "{b}: type"
        );
        assert_eq!(
            history_versions(&at("_history", v2).await),
            want,
            "{b}: system"
        );
        // Before the first version: nothing of x.
        let before = at("Patient/x/_history", "2000-01-01").await;
        assert_eq!(before["total"], 0, "{b}");
        // A day (or, across midnight, a year) covering all of it: every version.
        let day = if stamps[0][..10] == late.body["meta"]["lastUpdated"].as_str().unwrap()[..10]
            && early.body["meta"]["lastUpdated"].as_str().unwrap()[..10] == stamps[0][..10]
        {
            stamps[0][..10].to_owned()
        } else {
            stamps[0][..4].to_owned()
        };
        let all = at("_history", &day).await;
        assert_eq!(
            history_versions(&all),
            vec![
                pair("early", "1"),
                pair("late", "1"),
                pair("x", "1"),
                pair("x", "2"),
                pair("x", "3")
            ],
            "{b}: {all}"
        );
    }
}

/// The number of versions of `path` (`Type/id`).
async fn version_count(app: &axum::Router, path: &str) -> u64 {
    let r = call(app, "GET", &format!("/fhir/r4/{path}/_history"), &[], "").await;
    assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    r.body["total"].as_u64().unwrap()
}

#[tokio::test]
async fn validators_refuse_invalid_updates_patches_and_transaction_entries() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        let valid = json!({"resourceType": "Patient", "id": "v", "gender": "female"});
        let invalid = json!({"resourceType": "Patient", "id": "v", "gender": 42});
        let put = |body: serde_json::Value| {
            let app = app.clone();
            async move { call(&app, "PUT", "/fhir/r4/Patient/v", &[JSON], body.to_string()).await }
        };
        assert_eq!(put(valid.clone()).await.status, 201, "{b}");
        // What the validator plugin says of the invalid resource.
        let validated = call(
            &app,
            "POST",
            "/fhir/r4/Patient/$validate",
            &[JSON],
            invalid.to_string(),
        )
        .await;
        assert_eq!(validated.status, 200, "{b}: {:?}", validated.body);
        assert!(
            validated.diagnostics().contains("gender"),
            "{b}: {:?}",
            validated.body
        );
        let refusal = |r: &crate::support::Reply, what: &str| {
            assert_eq!(r.status, 422, "{b}: {what}: {:?}", r.body);
            assert_eq!(r.body["resourceType"], "OperationOutcome", "{b}: {what}");
            assert!(
                r.diagnostics().contains(&validated.diagnostics()),
                "{b}: {what}: the plugin's issues: {:?}",
                r.body
            );
        };

        // update (PUT)
        refusal(&put(invalid.clone()).await, "PUT");
        assert_eq!(
            version_count(&app, "Patient/v").await,
            1,
            "{b}: nothing stored"
        );
        // PATCH
        let patch = call(
            &app,
            "PATCH",
            "/fhir/r4/Patient/v",
            &[("content-type", "application/json-patch+json")],
            json!([{"op": "replace", "path": "/gender", "value": 42}]).to_string(),
        )
        .await;
        refusal(&patch, "PATCH");
        assert_eq!(
            version_count(&app, "Patient/v").await,
            1,
            "{b}: nothing stored"
        );
        // A transaction entry: the whole transaction is rolled back.
        let patients = |app: axum::Router| async move {
            call(&app, "GET", "/fhir/r4/Patient?_summary=count", &[], "")
                .await
                .body["total"]
                .as_u64()
                .unwrap()
        };
        let before = patients(app.clone()).await;
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "name": [{"family": "Fine"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "id": "w"},
             "request": {"method": "PUT", "url": "Patient/w"}},
            {"resource": invalid, "request": {"method": "PUT", "url": "Patient/v"}},
        ]});
        let reply = call(&app, "POST", "/fhir/r4", &[JSON], tx.to_string()).await;
        refusal(&reply, "transaction");
        assert_eq!(patients(app.clone()).await, before, "{b}: nothing created");
        assert_eq!(
            version_count(&app, "Patient/v").await,
            1,
            "{b}: nothing stored"
        );
        let w = call(&app, "GET", "/fhir/r4/Patient/w", &[], "").await;
        assert_eq!(w.status, 404, "{b}: rolled back");
        // A transaction PATCH entry too.
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                          "data": base64_json(&json!([{"op": "replace", "path": "/gender", "value": 42}]))},
             "request": {"method": "PATCH", "url": "Patient/v"}},
        ]});
        let reply = call(&app, "POST", "/fhir/r4", &[JSON], tx.to_string()).await;
        refusal(&reply, "transaction PATCH");
        assert_eq!(
            version_count(&app, "Patient/v").await,
            1,
            "{b}: nothing stored"
        );
    }
}

fn base64_json(value: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}

#[tokio::test]
async fn transactions_follow_the_processing_order() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        let x = json!({"resourceType": "Patient", "id": "x"}).to_string();
        assert_eq!(
            call(&app, "PUT", "/fhir/r4/Patient/x", &[JSON], x)
                .await
                .status,
            201
        );
        // GET listed before DELETE: the DELETE runs first, so the read finds it deleted
        // and the transaction fails as a whole.
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "GET", "url": "Patient/x"}},
            {"request": {"method": "DELETE", "url": "Patient/x"}},
        ]});
        let reply = call(&app, "POST", "/fhir/r4", &[JSON], tx.to_string()).await;
        assert!(
            [404, 410].contains(&reply.status),
            "{b}: the GET saw the DELETE: {:?}",
            reply.body
        );
        let still = call(&app, "GET", "/fhir/r4/Patient/x", &[], "").await;
        assert_eq!(still.status, 200, "{b}: rolled back");
        // The same as a batch: each entry on its own, in order; the read sees x.
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient/x"}},
            {"request": {"method": "DELETE", "url": "Patient/x"}},
        ]});
        let reply = call(&app, "POST", "/fhir/r4", &[JSON], batch.to_string()).await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        assert_eq!(
            reply.body["entry"][0]["response"]["status"], "200 OK",
            "{b}"
        );

        // A PUT referring to a POST's urn:uuid listed after it: rewritten to the new id.
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "id": "o", "status": "final",
                          "code": {"text": "x"},
                          "subject": {"reference": "urn:uuid:5e8d6bd6-3f7c-4bbb-9d61-2d3a7ba1c111"}},
             "request": {"method": "PUT", "url": "Observation/o"}},
            {"fullUrl": "urn:uuid:5e8d6bd6-3f7c-4bbb-9d61-2d3a7ba1c111",
             "resource": {"resourceType": "Patient", "name": [{"family": "Later"}]},
             "request": {"method": "POST", "url": "Patient"}},
        ]});
        let reply = call(&app, "POST", "/fhir/r4", &[JSON], tx.to_string()).await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        let location = reply.body["entry"][1]["response"]["location"]
            .as_str()
            .unwrap();
        let new_id = location.split('/').nth_back(2).unwrap();
        let o = call(&app, "GET", "/fhir/r4/Observation/o", &[], "").await;
        assert_eq!(
            o.body["subject"]["reference"],
            format!("Patient/{new_id}"),
            "{b}: {:?}",
            o.body
        );
    }
}

#[tokio::test]
async fn transactions_rewrite_urn_uuids_in_nested_references_uris_and_narrative() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        let urn = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6c8";
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {
                "resourceType": "Provenance",
                "text": {"status": "generated",
                         "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">About <a href=\"{urn}\">the patient</a></div>")},
                "target": [{"reference": urn}],
                "recorded": "2024-01-01T00:00:00Z",
                "policy": [urn, "http://example.org/policy"],
                "agent": [{"who": {"display": "x"},
                           "extension": [
                               {"url": "http://example.org/ext/subject", "valueReference": {"reference": urn}},
                               {"url": "http://example.org/ext/source", "valueUri": urn}]}],
                "contained": [{"resourceType": "Basic", "id": "c", "code": {"text": "c"},
                               "subject": {"reference": urn}}],
                "entity": [{"role": "source", "what": {"reference": "#c"}}],
                "signature": [{"type": [{"code": "1.2.840.10065.1.12.1.1", "system": "urn:iso-astm:E1762-95:2013"}],
                               "when": "2024-01-01T00:00:00Z", "who": {"identifier": {"system": "urn:ietf:rfc:3986", "value": urn}}}]},
             "request": {"method": "POST", "url": "Provenance"}},
            {"fullUrl": urn,
             "resource": {"resourceType": "Patient", "name": [{"family": "Target"}]},
             "request": {"method": "POST", "url": "Patient"}},
        ]});
        let reply = call(&app, "POST", "/fhir/r4", &[JSON], tx.to_string()).await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        let location = reply.body["entry"][1]["response"]["location"]
            .as_str()
            .unwrap();
        let patient = format!("Patient/{}", location.split('/').nth_back(2).unwrap());
        let provenance = reply.body["entry"][0]["response"]["location"]
            .as_str()
            .unwrap();
        let path = provenance.split("/_history").next().unwrap();
        let p = call(&app, "GET", &format!("/fhir/r4/{path}"), &[], "")
            .await
            .body;
        assert_eq!(p["target"][0]["reference"], patient.as_str(), "{b}");
        assert_eq!(
            p["policy"],
            json!([patient, "http://example.org/policy"]),
            "{b}: uri elements"
        );
        let ext = &p["agent"][0]["extension"];
        assert_eq!(
            ext[0]["valueReference"]["reference"],
            patient.as_str(),
            "{b}: in an extension"
        );
        assert_eq!(ext[1]["valueUri"], patient.as_str(), "{b}: a valueUri");
        assert_eq!(
            p["contained"][0]["subject"]["reference"],
            patient.as_str(),
            "{b}: contained"
        );
        assert_eq!(
            p["entity"][0]["what"]["reference"], "#c",
            "{b}: local references stay"
        );
        let div = p["text"]["div"].as_str().unwrap();
        assert!(
            div.contains(&format!("href=\"{patient}\"")) && !div.contains(urn),
            "{b}: {div}"
        );
        // An identifier's value is a name, not a reference to the entry: kept.
        assert_eq!(p["signature"][0]["who"]["identifier"]["value"], urn, "{b}");
    }
}

/// The body of a GET as text, for what the JSON value hides (indentation).
async fn raw_text(app: &axum::Router, uri: &str) -> (u16, String) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .uri(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// A read answers the stored JSON as it is: compact, the bytes serde_json writes for it
/// (pretty with `_pretty=true`); a stored text that is not JSON, changed by hand in the
/// database after the resource was read and kept, answers 500 with an OperationOutcome
/// that points to the server log (which has the cause).
#[tokio::test]
async fn reads_answer_the_stored_json_and_a_corrupt_one_is_a_500() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        let created = call(&app, "POST", "/fhir/r4/Patient", &[JSON], patient("Kept")).await;
        let id = created.body["id"].as_str().unwrap().to_string();
        let uri = format!("/fhir/r4/Patient/{id}");

        let (status, text) = raw_text(&app, &uri).await;
        assert_eq!(status, 200, "{b}: {text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, created.body, "{b}");
        assert_eq!(
            text,
            serde_json::to_string(&parsed).unwrap(),
            "{b}: compact"
        );
        let (_, pretty) = raw_text(&app, &format!("{uri}?_pretty=true")).await;
        assert!(pretty.contains("\n  \"id\""), "{b}: {pretty}");

        let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
        sqlx::query(
            "UPDATE fhir_resources SET content = 'not json' \
             WHERE resource_type = 'Patient' AND id = $1",
        )
        .bind(&id)
        .execute(&raw)
        .await
        .unwrap();
        raw.close().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let broken = call(&app, "GET", &uri, &[], "").await;
        assert_eq!(broken.status, 500, "{b}: {:?}", broken.body);
        assert_eq!(broken.body["resourceType"], "OperationOutcome", "{b}");
        assert!(
            broken.diagnostics().contains("x-request-id"),
            "{b}: {}",
            broken.diagnostics()
        );
    }
}

#[tokio::test]
async fn formats_json_only_as_the_capability_statement_says() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        let meta = call(&app, "GET", "/fhir/r4/metadata", &[], "").await;
        assert_eq!(meta.status, 200, "{b}");
        assert_eq!(
            meta.body["format"],
            json!(["application/fhir+json", "json"]),
            "{b}: JSON forms only"
        );
        let doc = meta.body["rest"][0]["documentation"].as_str().unwrap();
        assert!(
            doc.contains("XML and _format=xml are answered with 415")
                && doc.contains("application/fhir+xml) with 406"),
            "{b}: {doc}"
        );
        // What it says holds.
        let xml = call(
            &app,
            "POST",
            "/fhir/r4/Patient",
            &[("content-type", "application/fhir+xml")],
            "<Patient xmlns=\"http://hl7.org/fhir\"/>",
        )
        .await;
        assert_eq!(xml.status, 415, "{b}");
        let format_xml = call(&app, "GET", "/fhir/r4/metadata?_format=xml", &[], "").await;
        assert_eq!(format_xml.status, 415, "{b}");
        let accept_xml = call(
            &app,
            "GET",
            "/fhir/r4/metadata",
            &[("accept", "application/fhir+xml")],
            "",
        )
        .await;
        assert_eq!(accept_xml.status, 406, "{b}");
        for r in [&xml, &format_xml, &accept_xml] {
            assert_eq!(r.body["resourceType"], "OperationOutcome", "{b}");
        }

        let put = json!({"resourceType": "Patient", "id": "f", "gender": "other"}).to_string();
        assert_eq!(
            call(&app, "PUT", "/fhir/r4/Patient/f", &[JSON], put)
                .await
                .status,
            201
        );
        let (status, compact) = raw_text(&app, "/fhir/r4/Patient/f?_format=json").await;
        assert_eq!(status, 200, "{b}: _format=json");
        assert!(
            !compact.contains('\n'),
            "{b}: compact by default: {compact}"
        );
        let (status, pretty) = raw_text(&app, "/fhir/r4/Patient/f?_format=json&_pretty=true").await;
        assert_eq!(status, 200, "{b}");
        assert!(
            pretty.contains("\n  \"resourceType\": \"Patient\""),
            "{b}: indented: {pretty}"
        );
        let a: serde_json::Value = serde_json::from_str(&compact).unwrap();
        let c: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(a, c, "{b}: the same resource");
        let (status, _) =
            raw_text(&app, "/fhir/r4/Patient/f?_format=application/fhir%2Bjson").await;
        assert_eq!(status, 200, "{b}");
    }
}

/// Creates a Patient of each id with a PUT.
async fn put_patients(app: &axum::Router, ids: &[&str]) {
    for id in ids {
        let body = json!({"resourceType": "Patient", "id": id}).to_string();
        let path = format!("/fhir/r4/Patient/{id}");
        let pre = call(app, "PUT", &path, &[JSON], body).await;
        assert_eq!(pre.status, 201, "{id}: {:?}", pre.body);
    }
}

/// A transaction Bundle of `entries`, posted to the base.
async fn transaction(app: &axum::Router, entries: serde_json::Value) -> Reply {
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    call(app, "POST", "/fhir/r4", &[JSON], tx.to_string()).await
}

#[tokio::test]
async fn transactions_rewrite_urn_uuids_and_answer_each_entry_in_order() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        put_patients(&app, &["old", "keep"]).await;
        let reply = transaction(
            &app,
            json!([
                {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
                 "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
                              "subject": {"reference": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059"}},
                 "request": {"method": "POST", "url": "Observation"}},
                {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
                 "resource": {"resourceType": "Patient", "name": [{"family": "Chalmers"}]},
                 "request": {"method": "POST", "url": "Patient"}},
                {"request": {"method": "GET", "url": "Patient/keep"}},
                {"request": {"method": "DELETE", "url": "Patient/old"}},
            ]),
        )
        .await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        assert_eq!(reply.body["type"], "transaction-response");
        let entries = reply.body["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 4, "one response per entry, in request order");
        assert_eq!(entries[0]["response"]["status"], "201 Created");
        assert_eq!(entries[1]["response"]["status"], "201 Created");
        assert_eq!(
            entries[2]["response"]["status"], "200 OK",
            "{b}: {:?}",
            entries[2]
        );
        assert_eq!(entries[2]["resource"]["id"], "keep");
        assert_eq!(entries[3]["response"]["status"], "204 No Content");
        assert_eq!(
            call(&app, "GET", "/fhir/r4/Patient/old", &[], "")
                .await
                .status,
            410
        );
        let patient_location = entries[1]["response"]["location"].as_str().unwrap();
        let patient_ref = patient_location.split("/_history").next().unwrap();
        let obs_location = entries[0]["response"]["location"].as_str().unwrap();
        let obs_path = obs_location.split("/_history").next().unwrap();
        let obs = call(&app, "GET", &format!("/fhir/r4/{obs_path}"), &[], "").await;
        assert_eq!(
            obs.body["subject"]["reference"], patient_ref,
            "{b}: the urn:uuid became the new id"
        );
    }
}

/// Every entry must succeed: a read of a deleted resource fails the whole transaction,
/// which names the entry.
#[tokio::test]
async fn a_transaction_reading_a_deleted_resource_fails() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        put_patients(&app, &["old"]).await;
        let deleted = call(&app, "DELETE", "/fhir/r4/Patient/old", &[], "").await;
        assert_eq!(deleted.status, 204, "{b}: {:?}", deleted.body);
        let reply = transaction(
            &app,
            json!([
                {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
                {"request": {"method": "GET", "url": "Patient/old"}},
            ]),
        )
        .await;
        assert_eq!(reply.status, 410, "{b}: {:?}", reply.body);
        assert!(
            reply
                .diagnostics()
                .contains("transaction entry 1 (GET Patient/old)"),
            "{}",
            reply.diagnostics()
        );
    }
}

/// A transaction of creates and updates (written together, on SQLite by the inline
/// writer) answers each entry as its own request would, and each update's index rows
/// replace the version before's: a search finds the new name, not the old one.
#[tokio::test]
async fn a_transaction_of_updates_replaces_each_resources_index_rows() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        put_patients(&app, &["a", "b"]).await;
        let named = |id: &str, family: &str| json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]});
        let reply = transaction(
            &app,
            json!([
                {"resource": named("a", "Alpha"), "request": {"method": "PUT", "url": "Patient/a"}},
                {"resource": named("b", "Beta"), "request": {"method": "PUT", "url": "Patient/b", "ifMatch": "W/\"1\""}},
                {"resource": {"resourceType": "Patient", "name": [{"family": "Gamma"}]}, "request": {"method": "POST", "url": "Patient"}},
                {"resource": named("c", "Delta"), "request": {"method": "PUT", "url": "Patient/c"}},
            ]),
        )
        .await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        let statuses: Vec<&str> = reply.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["response"]["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses,
            ["200 OK", "200 OK", "201 Created", "201 Created"],
            "{b}"
        );
        assert_eq!(
            reply.body["entry"][0]["resource"]["meta"]["versionId"], "2",
            "{b}"
        );
        let reply = transaction(
            &app,
            json!([{"resource": named("a", "Omega"), "request": {"method": "PUT", "url": "Patient/a"}}]),
        )
        .await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        assert_eq!(version_count(&app, "Patient/a").await, 3, "{b}");
        let found = |family: &str| {
            let search = format!("Patient?family={family}");
            let app = app.clone();
            async move { crate::search::search_ids(&app, &search).await }
        };
        assert_eq!(found("Omega").await, ["a"], "{b}");
        assert!(
            found("Alpha").await.is_empty(),
            "{b}: the old name's rows are gone"
        );
        assert_eq!(found("Beta").await, ["b"], "{b}");
        assert_eq!(found("Gamma").await.len(), 1, "{b}");
        assert_eq!(found("Delta").await, ["c"], "{b}");
    }
}

/// A transaction whose second entry fails stores nothing of the first.
#[tokio::test]
async fn a_failed_transaction_stores_nothing() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        put_patients(&app, &["keep"]).await;
        let before = call(&app, "GET", "/fhir/r4/_history", &[], "").await.body["total"].clone();
        let reply = transaction(
            &app,
            json!([
                {"resource": {"resourceType": "Patient", "name": [{"family": "Kept?"}]}, "request": {"method": "POST", "url": "Patient"}},
                {"resource": {"resourceType": "Patient", "id": "x1"}, "request": {"method": "PUT", "url": "Patient/x1", "ifMatch": "W/\"4\""}},
            ]),
        )
        .await;
        assert_eq!(reply.status, 412, "{b}: {:?}", reply.body);
        assert!(
            reply
                .diagnostics()
                .contains("transaction entry 1 (PUT Patient/x1)"),
            "{}",
            reply.diagnostics()
        );
        let after = call(&app, "GET", "/fhir/r4/_history", &[], "").await.body["total"].clone();
        assert_eq!(before, after, "{b}: a failed transaction stores nothing");
    }
}

#[tokio::test]
async fn batches_report_each_entry() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let batch = json!({
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"resource": {"resourceType": "Patient", "name": [{"family": "A"}]}, "request": {"method": "POST", "url": "Patient"}},
                {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
                {"resource": {"resourceType": "Patient", "id": "b2"}, "request": {"method": "PUT", "url": "Patient/b2"}},
                {"request": {"method": "PATCH", "url": "Patient/b2"},
                 "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                              "data": "W3sib3AiOiJhZGQiLCJwYXRoIjoiL2FjdGl2ZSIsInZhbHVlIjp0cnVlfV0="}},
            ]
        });
        let reply = call(&app, "POST", "/fhir/r4", &[JSON], batch.to_string()).await;
        assert_eq!(reply.status, 200, "{}: {:?}", db.backend, reply.body);
        assert_eq!(reply.body["type"], "batch-response");
        let statuses: Vec<_> = reply.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["response"]["status"].clone())
            .collect();
        assert_eq!(
            statuses,
            vec![
                json!("201 Created"),
                json!("404 Not Found"),
                json!("201 Created"),
                json!("200 OK")
            ]
        );
        assert_eq!(
            reply.body["entry"][1]["response"]["outcome"]["resourceType"],
            "OperationOutcome"
        );
        let b2 = call(&app, "GET", "/fhir/r4/Patient/b2", &[], "").await;
        assert_eq!(
            b2.body["active"], true,
            "the JSON Patch in a Binary was applied"
        );

        for (bundle, needle) in [
            (
                json!({"resourceType": "Bundle", "type": "collection"}),
                "batch or transaction",
            ),
            (
                json!({"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {}}]}),
                "no request",
            ),
            (
                json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "POST", "url": "Patient"}}]}),
                "needs a resource",
            ),
            (
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "TRACE", "url": "Patient"}}]}),
                "TRACE",
            ),
            (
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Observation"}}]}),
                "not a Patient",
            ),
        ] {
            let reply = call(&app, "POST", "/fhir/r4", &[JSON], bundle.to_string()).await;
            assert_eq!(reply.status, 400, "{bundle}: {:?}", reply.body);
            assert!(
                reply.diagnostics().contains(needle),
                "{} should contain {needle}",
                reply.diagnostics()
            );
        }
    }
}
