//! FHIR operations (`$validate`, `Patient/[id]/$everything`), Bundle entries that search or
//! are conditional, and history under patient-restricted tokens, on both databases.

use serde_json::{Value, json};

use crate::support::{Reply, TestDb, call, mint, raw_app_on};

/// Sends a request with `token` (and a FHIR JSON body when `body` is not empty).
async fn send(app: &axum::Router, method: &str, uri: &str, token: &str, body: Value) -> Reply {
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

/// `(resourceType/id, search mode)` of a searchset's entries, sorted.
fn entries(bundle: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = bundle["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e["search"]["mode"] != "outcome")
        .map(|e| {
            (
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                ),
                e["search"]["mode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    out.sort();
    out
}

/// Two patients with records, a practitioner and an organization.
async fn seed(app: &axum::Router, admin: &str) {
    let resources = [
        json!({"resourceType": "Organization", "id": "org1", "name": "Clinic"}),
        json!({"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "House"}]}),
        json!({"resourceType": "Patient", "id": "p1", "managingOrganization": {"reference": "Organization/org1"}}),
        json!({"resourceType": "Patient", "id": "p2"}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/pr1"}]}),
        json!({"resourceType": "Observation", "id": "o2", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "subject": {"reference": "Patient/p2"}}),
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}),
    ];
    for r in resources {
        let uri = format!(
            "/fhir/r4/{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        let reply = send(app, "PUT", &uri, admin, r).await;
        assert_eq!(reply.status, 201, "{uri}: {:?}", reply.body);
    }
}

/// The severities of the issues of an OperationOutcome.
fn severities(r: &Reply) -> Vec<String> {
    r.body["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["severity"].as_str().unwrap().to_owned())
        .collect()
}

/// No Patient was stored.
async fn assert_nothing_stored(app: &axum::Router, admin: &str, b: &str) {
    let all = send(app, "GET", "/fhir/r4/Patient", admin, Value::Null).await;
    assert_eq!(all.body["total"], 0, "{b}");
}

/// `$validate` reports the issues a create would give, as a 200, and stores nothing.
#[tokio::test]
async fn validate_checks_without_storing() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let admin = mint(&state, json!({"scope": "system/*.*"})).await;
        let b = db.backend;
        let clean = json!({"resourceType": "Patient", "name": [{"family": "Curie"}]});
        let r = send(
            &app,
            "POST",
            "/fhir/r4/Patient/$validate",
            &admin,
            clean.clone(),
        )
        .await;
        assert_eq!(r.status, 200, "{b}: {:?}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome");
        assert_eq!(severities(&r), ["information"], "{b}");
        assert!(r.diagnostics().contains("no issues"));

        // The same inside Parameters, with a profile this server does not check.
        let params = json!({"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": clean},
            {"name": "profile", "valueUri": "http://example.org/StructureDefinition/x"}]});
        let r = send(&app, "POST", "/fhir/r4/Patient/$validate", &admin, params).await;
        assert_eq!(r.status, 200, "{b}: {:?}", r.body);
        assert_eq!(severities(&r), ["warning"], "{b}");

        // An invalid resource: 200 (the validation ran) with the errors a create would give.
        let invalid = json!({"resourceType": "Patient", "gender": 42});
        let r = send(
            &app,
            "POST",
            "/fhir/r4/Patient/$validate",
            &admin,
            invalid.clone(),
        )
        .await;
        assert_eq!(r.status, 200, "{b}: {:?}", r.body);
        assert!(
            severities(&r).contains(&"error".to_owned()),
            "{b}: {:?}",
            r.body
        );
        let create = send(&app, "POST", "/fhir/r4/Patient", &admin, invalid).await;
        assert_eq!(create.status, 422, "{b}");
        assert_eq!(
            create.diagnostics(),
            r.diagnostics(),
            "{b}: $validate reports what the create refuses"
        );

        let wrong_type = json!({"resourceType": "Observation", "status": "final"});
        let r = send(
            &app,
            "POST",
            "/fhir/r4/Patient/$validate",
            &admin,
            wrong_type,
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            r.diagnostics()
                .contains("does not match the URL's resource type"),
            "{}",
            r.diagnostics()
        );

        let other_id = json!({"resourceType": "Patient", "id": "b"});
        let r = send(
            &app,
            "POST",
            "/fhir/r4/Patient/a/$validate",
            &admin,
            other_id,
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            r.diagnostics().contains("does not match the URL's id"),
            "{}",
            r.diagnostics()
        );
        let same_id = json!({"resourceType": "Patient", "id": "a"});
        let r = send(
            &app,
            "POST",
            "/fhir/r4/Patient/a/$validate",
            &admin,
            same_id,
        )
        .await;
        assert_eq!(severities(&r), ["information"], "{b}: {:?}", r.body);
        assert_nothing_stored(&app, &admin, b).await;
    }
}

/// A `$validate` that cannot run (a body that is no JSON, Parameters without a resource) is
/// a 400; an unknown operation is a 404. Nothing is stored.
#[tokio::test]
async fn validate_that_cannot_run_is_a_400() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let admin = mint(&state, json!({"scope": "system/*.*"})).await;
        let b = db.backend;
        let r = call(
            &app,
            "POST",
            "/fhir/r4/Patient/$validate",
            &[
                ("authorization", &format!("Bearer {admin}")),
                ("content-type", "application/fhir+json"),
            ],
            "{not json",
        )
        .await;
        assert_eq!(r.status, 400, "{b}");
        let r = send(
            &app,
            "POST",
            "/fhir/r4/Patient/$validate",
            &admin,
            json!({"resourceType": "Parameters"}),
        )
        .await;
        assert_eq!(r.status, 400, "{b}");
        assert!(r.diagnostics().contains("resource"));
        let r = send(
            &app,
            "POST",
            "/fhir/r4/Patient/$frobnicate",
            &admin,
            json!({}),
        )
        .await;
        assert_eq!(r.status, 404, "{b}");
        assert_nothing_stored(&app, &admin, b).await;
    }
}

/// The CapabilityStatement names the operations by their definitions.
#[tokio::test]
async fn the_capability_statement_names_the_operations() {
    for db in TestDb::all().await {
        let (app, _state) = raw_app_on(&db, "").await;
        let meta = call(&app, "GET", "/fhir/r4/metadata", &[], "").await;
        let resources = meta.body["rest"][0]["resource"].as_array().unwrap();
        let operations = |ty: &str| -> Vec<String> {
            let r = resources.iter().find(|r| r["type"] == ty).unwrap();
            r["operation"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["definition"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            operations("Patient"),
            [
                "http://hl7.org/fhir/OperationDefinition/Resource-validate",
                "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
            ]
        );
        assert_eq!(
            operations("Observation"),
            ["http://hl7.org/fhir/OperationDefinition/Resource-validate"]
        );
    }
}

/// The smart-scopes plugin wants read on the type for an operation.
#[tokio::test]
async fn validate_needs_read_on_the_type() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let admin = mint(&state, json!({"scope": "system/*.*"})).await;
        let b = db.backend;
        let reader = mint(
            &state,
            json!({"scope": "patient/Patient.r", "patient": "p1"}),
        )
        .await;
        let r = send(
            &app,
            "POST",
            "/fhir/r4/Patient/$validate",
            &reader,
            json!({"resourceType": "Patient"}),
        )
        .await;
        assert_eq!(r.status, 200, "{b}: {:?}", r.body);
        let other = mint(
            &state,
            json!({"scope": "patient/Observation.rs", "patient": "p1"}),
        )
        .await;
        let r = send(
            &app,
            "POST",
            "/fhir/r4/Patient/$validate",
            &other,
            json!({"resourceType": "Patient"}),
        )
        .await;
        assert_eq!(r.status, 403, "{b}");
        assert!(r.diagnostics().contains("Patient"), "{}", r.diagnostics());
        assert_nothing_stored(&app, &admin, b).await;
    }
}

/// `$everything` is the Patient's compartment and what it refers to, for a token that sees
/// all.
#[tokio::test]
async fn everything_is_the_compartment_and_what_it_refers_to() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let admin = mint(&state, json!({"scope": "system/*.*"})).await;
        let b = db.backend;
        seed(&app, &admin).await;
        let all = send(
            &app,
            "GET",
            "/fhir/r4/Patient/p1/$everything",
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(all.status, 200, "{b}: {:?}", all.body);
        assert_eq!(all.body["type"], "searchset");
        assert_eq!(all.body["total"], 3, "{b}");
        assert_eq!(
            entries(&all.body),
            pairs(&[
                ("Condition/c1", "match"),
                ("Observation/o1", "match"),
                ("Organization/org1", "include"),
                ("Patient/p1", "match"),
                ("Practitioner/pr1", "include"),
            ]),
            "{b}"
        );
    }
}

/// `$everything` pages: the links carry the cursor; two pages hold the three matches.
#[tokio::test]
async fn everything_pages_carry_the_cursor() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let admin = mint(&state, json!({"scope": "system/*.*"})).await;
        let b = db.backend;
        seed(&app, &admin).await;
        let first = send(
            &app,
            "GET",
            "/fhir/r4/Patient/p1/$everything?_count=2",
            &admin,
            Value::Null,
        )
        .await;
        let links = first.body["link"].as_array().unwrap();
        let next = links
            .iter()
            .find(|l| l["relation"] == "next")
            .expect("a next link")["url"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://localhost:8080")
            .to_owned();
        assert!(
            next.starts_with("/fhir/r4/Patient/p1/$everything?"),
            "{next}"
        );
        let second = send(&app, "GET", &next, &admin, Value::Null).await;
        assert_eq!(second.status, 200, "{b}: {:?}", second.body);
        let mut matched: Vec<_> = entries(&first.body)
            .into_iter()
            .chain(entries(&second.body))
            .filter(|(_, mode)| mode == "match")
            .map(|(key, _)| key)
            .collect();
        matched.sort();
        assert_eq!(
            matched,
            ["Condition/c1", "Observation/o1", "Patient/p1"],
            "{b}"
        );
        assert!(
            !second.body["link"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["relation"] == "next")
        );

        let typed = send(
            &app,
            "GET",
            "/fhir/r4/Patient/p1/$everything?_type=Observation",
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(
            entries(&typed.body),
            pairs(&[
                ("Observation/o1", "match"),
                ("Patient/p1", "include"),
                ("Practitioner/pr1", "include")
            ]),
            "{b}"
        );
        let later = send(
            &app,
            "GET",
            "/fhir/r4/Patient/p1/$everything?_since=2999-01-01",
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(later.body["total"], 0, "{b}");
        let bad = send(
            &app,
            "GET",
            "/fhir/r4/Patient/p1/$everything?start=2020",
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(bad.status, 400, "{b}");
        let missing = send(
            &app,
            "GET",
            "/fhir/r4/Patient/nobody/$everything",
            &admin,
            Value::Null,
        )
        .await;
        assert_eq!(missing.status, 404, "{b}");
    }
}

/// `$everything` under a patient token: its own record only, nothing outside the compartment.
#[tokio::test]
async fn everything_under_a_patient_token_is_its_own_compartment() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let admin = mint(&state, json!({"scope": "system/*.*"})).await;
        let b = db.backend;
        seed(&app, &admin).await;
        let own = mint(&state, json!({"scope": "patient/*.rs", "patient": "p1"})).await;
        let mine = send(
            &app,
            "GET",
            "/fhir/r4/Patient/p1/$everything",
            &own,
            Value::Null,
        )
        .await;
        assert_eq!(mine.status, 200, "{b}: {:?}", mine.body);
        assert_eq!(
            entries(&mine.body),
            pairs(&[
                ("Condition/c1", "match"),
                ("Observation/o1", "match"),
                ("Patient/p1", "match")
            ]),
            "{b}: no Practitioner or Organization under a patient scope"
        );
        let theirs = send(
            &app,
            "GET",
            "/fhir/r4/Patient/p2/$everything",
            &own,
            Value::Null,
        )
        .await;
        assert_eq!(theirs.status, 403, "{b}: {:?}", theirs.body);
    }
}

/// `$everything` leaves out the types the token may not search, with a warning naming them.
#[tokio::test]
async fn everything_leaves_out_the_types_the_token_may_not_search() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let admin = mint(&state, json!({"scope": "system/*.*"})).await;
        let b = db.backend;
        seed(&app, &admin).await;
        let narrow = mint(
            &state,
            json!({"scope": "patient/Patient.r patient/Observation.rs", "patient": "p1"}),
        )
        .await;
        let some = send(
            &app,
            "GET",
            "/fhir/r4/Patient/p1/$everything",
            &narrow,
            Value::Null,
        )
        .await;
        assert_eq!(some.status, 200, "{b}: {:?}", some.body);
        assert_eq!(
            entries(&some.body),
            pairs(&[("Observation/o1", "match"), ("Patient/p1", "match")]),
            "{b}"
        );
        let warning = some.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["search"]["mode"] == "outcome")
            .expect("a warning entry");
        assert!(
            warning["resource"]["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("Condition")
        );
        let none = mint(
            &state,
            json!({"scope": "patient/Observation.rs", "patient": "p1"}),
        )
        .await;
        let refused = send(
            &app,
            "GET",
            "/fhir/r4/Patient/p1/$everything",
            &none,
            Value::Null,
        )
        .await;
        assert_eq!(refused.status, 403, "{b}");
    }
}

/// An application with [`seed`]'s records, an unrestricted token and a token of patient
/// p1 (`patient/*.rs`).
async fn seeded_with_p1(db: &TestDb) -> (axum::Router, hestia::http::AppState, String, String) {
    let (app, state) = raw_app_on(db, "").await;
    let admin = mint(&state, json!({"scope": "system/*.*"})).await;
    seed(&app, &admin).await;
    let own = mint(&state, json!({"scope": "patient/*.rs", "patient": "p1"})).await;
    (app, state, admin, own)
}

/// o1 moved out of p1's compartment (to p2) and c1 deleted.
async fn move_o1_and_delete_c1(app: &axum::Router, admin: &str) {
    let moved = json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"text": "x"}, "subject": {"reference": "Patient/p2"}});
    let put = send(app, "PUT", "/fhir/r4/Observation/o1", admin, moved).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let deleted = send(app, "DELETE", "/fhir/r4/Condition/c1", admin, Value::Null).await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
}

/// The `Type/id` of each entry of a history Bundle.
fn history_keys(r: &Reply) -> Vec<String> {
    r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let url = e["fullUrl"].as_str().unwrap();
            let mut parts = url.rsplit('/');
            let id = parts.next().unwrap();
            format!("{}/{id}", parts.next().unwrap())
        })
        .collect()
}

/// The `Type/id`, version and `lastUpdated` of each entry of a history Bundle of versions
/// (no deletions). Versions written in the same millisecond share a `lastUpdated`, and
/// their order in the Bundle is not defined.
fn history_versions(r: &Reply) -> Vec<(String, String, String)> {
    let keys = history_keys(r);
    let entries = r.body["entry"].as_array().unwrap();
    keys.into_iter()
        .zip(entries)
        .map(|(key, e)| {
            let meta = &e["resource"]["meta"];
            let text = |v: &Value| v.as_str().unwrap().to_string();
            (key, text(&meta["versionId"]), text(&meta["lastUpdated"]))
        })
        .collect()
}

#[tokio::test]
async fn instance_history_under_a_patient_token_is_its_compartments() {
    for db in TestDb::all().await {
        let (app, _state, _admin, own) = seeded_with_p1(&db).await;
        let b = db.backend;
        for (uri, status) in [
            ("/fhir/r4/Observation/o1/_history/1", 200),
            ("/fhir/r4/Observation/o1/_history", 200),
            ("/fhir/r4/Observation/o2/_history", 403),
            ("/fhir/r4/Practitioner/pr1/_history/1", 403),
        ] {
            let got = send(&app, "GET", uri, &own, Value::Null).await;
            assert_eq!(got.status, status, "{b}: {uri}: {:?}", got.body);
        }
        let vread = send(
            &app,
            "GET",
            "/fhir/r4/Observation/o2/_history/1",
            &own,
            Value::Null,
        )
        .await;
        assert_eq!(vread.status, 403, "{b}: {:?}", vread.body);
        assert!(
            vread.diagnostics().contains("Patient/p1"),
            "{}",
            vread.diagnostics()
        );
        assert!(
            vread.body.to_string().find("8867-4").is_none(),
            "nothing of o2 leaks"
        );
    }
}

/// Moved out of the compartment, a resource's earlier versions are no longer the token's;
/// a deleted one leaves nothing to judge it by, and is refused.
#[tokio::test]
async fn history_of_what_left_the_compartment_is_refused() {
    for db in TestDb::all().await {
        let (app, _state, admin, own) = seeded_with_p1(&db).await;
        let b = db.backend;
        move_o1_and_delete_c1(&app, &admin).await;
        for uri in [
            "/fhir/r4/Observation/o1/_history/1",
            "/fhir/r4/Condition/c1/_history",
        ] {
            let got = send(&app, "GET", uri, &own, Value::Null).await;
            assert_eq!(got.status, 403, "{b}: {uri}: {:?}", got.body);
        }
    }
}

/// Type and system history: only versions of what the token sees now. Once o1 moved to
/// p2 and c1 is deleted, nothing of p1's compartment but the Patient is left.
#[tokio::test]
async fn type_and_system_history_show_what_the_token_sees_now() {
    for db in TestDb::all().await {
        let (app, state, admin, own) = seeded_with_p1(&db).await;
        let b = db.backend;
        move_o1_and_delete_c1(&app, &admin).await;
        let typed = send(
            &app,
            "GET",
            "/fhir/r4/Observation/_history",
            &own,
            Value::Null,
        )
        .await;
        assert_eq!(typed.status, 200, "{b}: {:?}", typed.body);
        assert_eq!(typed.body["total"], 0, "{b}: {:?}", typed.body);
        let system = send(&app, "GET", "/fhir/r4/_history", &own, Value::Null).await;
        assert_eq!(system.status, 200, "{b}: {:?}", system.body);
        assert_eq!(history_keys(&system), ["Patient/p1"], "{b}");
        assert_eq!(system.body["total"], 1, "{b}");
        assert!(
            !system.body.to_string().contains("8867-4"),
            "{b}: nothing of o1 or o2 leaks"
        );
        let other = mint(&state, json!({"scope": "patient/*.rs", "patient": "p2"})).await;
        let theirs = send(
            &app,
            "GET",
            "/fhir/r4/Observation/_history",
            &other,
            Value::Null,
        )
        .await;
        assert_eq!(theirs.status, 200, "{b}: {:?}", theirs.body);
        let mut versions = history_versions(&theirs);
        assert!(
            versions.windows(2).all(|w| w[0].2 >= w[1].2),
            "{b}: newest first: {versions:?}"
        );
        versions.sort();
        assert_eq!(
            versions
                .iter()
                .map(|(k, v, _)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            [
                ("Observation/o1", "1"),
                ("Observation/o1", "2"),
                ("Observation/o2", "1")
            ],
            "{b}: p2's Observations, o1's earlier version included (judged by its current one)"
        );
        // Unrestricted tokens keep type and system history.
        for uri in ["/fhir/r4/Observation/_history", "/fhir/r4/_history"] {
            let got = send(&app, "GET", uri, &admin, Value::Null).await;
            assert_eq!(got.status, 200, "{b}: {uri}");
        }
    }
}

/// An application with [`seed`]'s records and Patient p3 of identifier `urn:mrn|42`, and
/// an unrestricted token.
async fn seeded_with_p3(db: &TestDb) -> (axum::Router, String) {
    let (app, state) = raw_app_on(db, "").await;
    let admin = mint(&state, json!({"scope": "system/*.*"})).await;
    seed(&app, &admin).await;
    let identified = json!({"resourceType": "Patient", "id": "p3",
        "identifier": [{"system": "urn:mrn", "value": "42"}]});
    let put = send(&app, "PUT", "/fhir/r4/Patient/p3", &admin, identified).await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    (app, admin)
}

#[tokio::test]
async fn a_transaction_runs_conditional_entries_and_a_search() {
    for db in TestDb::all().await {
        let (app, admin) = seeded_with_p3(&db).await;
        let b = db.backend;
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|42"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "new"},
                          "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Observation", "status": "amended",
                          "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                          "subject": {"reference": "Patient/p1"}},
             "request": {"method": "PUT", "url": "Observation?subject=Patient/p1&code=http://loinc.org|8867-4"}},
            {"request": {"method": "DELETE", "url": "Condition?subject=Patient/p1"}},
            {"request": {"method": "GET", "url": "Observation?subject=Patient/p2"}},
        ]});
        let r = send(&app, "POST", "/fhir/r4", &admin, transaction).await;
        assert_eq!(r.status, 200, "{b}: {:?}", r.body);
        let e = r.body["entry"].as_array().unwrap();
        let statuses: Vec<&str> = e
            .iter()
            .map(|e| e["response"]["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses,
            [
                "200 OK",
                "201 Created",
                "200 OK",
                "204 No Content",
                "200 OK"
            ],
            "{b}"
        );
        assert_eq!(e[0]["resource"]["id"], "p3", "{b}: the existing patient");
        assert_eq!(
            e[1]["resource"]["subject"]["reference"], "Patient/p3",
            "{b}"
        );
        assert_eq!(
            e[2]["resource"]["id"], "o1",
            "{b}: the matching Observation was updated"
        );
        assert_eq!(e[2]["resource"]["status"], "amended");
        assert_eq!(e[4]["resource"]["type"], "searchset");
        assert_eq!(
            entries(&e[4]["resource"]),
            pairs(&[("Observation/o2", "match")]),
            "{b}"
        );
        assert_eq!(
            send(&app, "GET", "/fhir/r4/Condition/c1", &admin, Value::Null)
                .await
                .status,
            410,
            "{b}"
        );
    }
}

/// Several matches of a conditional entry: 412, and the transaction leaves nothing behind.
#[tokio::test]
async fn an_ambiguous_conditional_entry_fails_the_transaction() {
    for db in TestDb::all().await {
        let (app, admin) = seeded_with_p3(&db).await;
        let b = db.backend;
        let ambiguous = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "p9"}, "request": {"method": "PUT", "url": "Patient/p9"}},
            {"request": {"method": "DELETE", "url": "Observation?code=http://loinc.org|8867-4"}},
        ]});
        let r = send(&app, "POST", "/fhir/r4", &admin, ambiguous).await;
        assert_eq!(r.status, 412, "{b}: {:?}", r.body);
        assert!(
            r.diagnostics().contains("more than one"),
            "{}",
            r.diagnostics()
        );
        assert_eq!(
            send(&app, "GET", "/fhir/r4/Patient/p9", &admin, Value::Null)
                .await
                .status,
            404,
            "{b}"
        );
    }
}

/// A batch reports each entry: a conditional create that matches, a search, a bad search.
#[tokio::test]
async fn a_batch_reports_conditional_creates_and_searches_entry_by_entry() {
    for db in TestDb::all().await {
        let (app, admin) = seeded_with_p3(&db).await;
        let b = db.backend;
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|42"}},
            {"request": {"method": "GET", "url": "Observation?code=http://loinc.org|8867-4"}},
            {"request": {"method": "GET", "url": "Observation?nonsense=1"}},
        ]});
        let r = send(&app, "POST", "/fhir/r4", &admin, batch).await;
        assert_eq!(r.status, 200, "{b}: {:?}", r.body);
        let e = r.body["entry"].as_array().unwrap();
        assert_eq!(e[0]["response"]["status"], "200 OK", "{b}");
        assert_eq!(e[1]["resource"]["total"], 2, "{b}");
        assert_eq!(e[2]["response"]["status"], "400 Bad Request", "{b}");
    }
}
