//! Searches built to crash or stall the server: chains thousands of links long, chains
//! that fan out over many target types, too many parameters or values, and includes with
//! more matches than the page may carry. Each gets a prompt answer naming the limit and
//! its `hestia.toml` key, on both databases, and the server keeps answering.

use serde_json::{Value, json};

use crate::support::{Reply, Server, TestDb, app_on, call, client_trusting, system_token_of};

const BASE: &str = "/fhir/r4";
const JSON: (&str, &str) = ("content-type", "application/fhir+json");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// The real binary, since its worker threads have the stack a request gets in
/// production: a form body of 5,000 chained links is a 400 naming the limit, and the
/// process is still there to answer.
#[tokio::test]
async fn a_chain_of_thousands_of_links_is_refused_and_the_server_stays_up() {
    for db in TestDb::all().await {
        let b = db.backend;
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(dir.path(), &["--database-url", db.url.as_str()]);
        let http = client_trusting(&server.data_dir.join("tls").join("ca.pem"));
        let token = system_token_of(&server, dir.path(), &db, &http, "system/*.read").await;

        let body = format!("{}_id=x", "part-of.".repeat(5000));
        let reply = http
            .post(format!("{}{BASE}/Encounter/_search", server.url))
            .bearer_auth(&token)
            .header(FORM.0, FORM.1)
            .body(body)
            .send()
            .await;
        let reply = reply.unwrap_or_else(|e| {
            panic!(
                "{b}: no answer ({e}); the server exited: {:?}",
                server.child.try_wait()
            )
        });
        assert_eq!(reply.status(), 400, "{b}");
        let outcome: Value = reply.json().await.unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{b}");
        let text = outcome["issue"][0]["diagnostics"].as_str().unwrap_or("");
        assert!(
            text.contains("5000 links") && text.contains("fhir.max_chain_depth"),
            "{b}: {text}"
        );
        assert_eq!(outcome["issue"][0]["code"], "too-costly", "{b}");

        let ready = http
            .get(format!("{}/health/ready", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{b}");
        assert!(server.child.try_wait().unwrap().is_none(), "{b}");
        assert!(server.terminate().success(), "{b}");
    }
}

async fn get(app: &axum::Router, query: &str) -> Reply {
    call(app, "GET", &format!("{BASE}/{query}"), &[], "").await
}

fn assert_refused(reply: &Reply, key: &str, what: &str) {
    assert_eq!(reply.status, 400, "{what}: {:?}", reply.body);
    assert_eq!(reply.body["resourceType"], "OperationOutcome", "{what}");
    assert!(
        reply.diagnostics().contains(key),
        "{what}: {}",
        reply.diagnostics()
    );
}

/// `Observation.part-of` refers to six types, most of which have `part-of` again: 25
/// links would expand into more paths than there is time. The depth refuses it from
/// the text; with the depth raised to its ceiling, the fan-out stops the expansion.
#[tokio::test]
async fn chains_that_fan_out_are_refused_while_parsing() {
    for db in TestDb::all().await {
        let b = db.backend;
        let query = format!("Observation?{}_id=x", "part-of.".repeat(25));
        let (app, _) = app_on(&db, "").await;
        let reply = get(&app, &query).await;
        assert_refused(&reply, "fhir.max_chain_depth", b);
        assert!(reply.diagnostics().contains("25 links"), "{b}");
        // A lenient search is refused as well: a limit is not a parameter to ignore.
        let lenient = call(
            &app,
            "GET",
            &format!("{BASE}/{query}"),
            &[("prefer", "handling=lenient")],
            "",
        )
        .await;
        assert_refused(&lenient, "fhir.max_chain_depth", b);
        let has = get(
            &app,
            &format!("Patient?{}code=1", "_has:Observation:patient:".repeat(5)),
        )
        .await;
        assert_refused(&has, "fhir.max_chain_depth", b);

        let (deep, _) = app_on(&db, "[fhir]\nmax_chain_depth = 16\n").await;
        let query = format!("Observation?{}_id=x", "part-of.".repeat(16));
        assert_refused(&get(&deep, &query).await, "fhir.max_chain_paths", b);
        // Within the limits, a chain still searches.
        let fine = get(&deep, "Observation?part-of.part-of._id=x").await;
        assert_eq!(fine.status, 200, "{b}: {:?}", fine.body);
    }
}

#[tokio::test]
async fn too_many_parameters_or_values_are_refused_naming_their_keys() {
    for db in TestDb::all().await {
        let b = db.backend;
        let (app, _) = app_on(&db, "").await;
        // The documented defaults: 50 parameters, 200 values.
        let many = vec!["gender=male"; 51].join("&");
        assert_refused(
            &get(&app, &format!("Patient?{many}")).await,
            "fhir.max_search_params",
            b,
        );
        let ids: Vec<String> = (0..201).map(|i| format!("id{i}")).collect();
        let reply = get(&app, &format!("Patient?_id={}", ids.join(","))).await;
        assert_refused(&reply, "fhir.max_search_values", b);
        assert!(reply.diagnostics().contains("_id"), "{b}");
        let at_limit = get(&app, &format!("Patient?_id={}", ids[..200].join(","))).await;
        assert_eq!(at_limit.status, 200, "{b}: {:?}", at_limit.body);

        let (narrow, _) = app_on(
            &db,
            "[fhir]\nmax_search_params = 2\nmax_search_values = 3\n",
        )
        .await;
        assert_refused(
            &get(&narrow, "Patient?gender=male&name=a&family=b").await,
            "fhir.max_search_params",
            b,
        );
        let form = call(
            &narrow,
            "POST",
            &format!("{BASE}/Patient/_search"),
            &[FORM],
            "_id=a,b,c,d",
        )
        .await;
        assert_refused(&form, "fhir.max_search_values", b);
        assert_eq!(
            get(&narrow, "Patient?_id=a,b,c&gender=male").await.status,
            200,
            "{b}"
        );
    }
}

/// The cap on included resources is applied by the database; a page it cuts says so in
/// an `outcome` entry, as HAPI users see warnings in a searchset.
#[tokio::test]
async fn includes_beyond_the_cap_are_cut_and_the_bundle_says_so() {
    for db in TestDb::all().await {
        let b = db.backend;
        let (app, _) = app_on(&db, "[fhir]\nmax_included = 3\n").await;
        let patient = json!({"resourceType": "Patient", "id": "p1"});
        let put = call(
            &app,
            "PUT",
            &format!("{BASE}/Patient/p1"),
            &[JSON],
            patient.to_string(),
        )
        .await;
        assert_eq!(put.status, 201, "{b}");
        for i in 0..5 {
            let obs = json!({
                "resourceType": "Observation", "id": format!("o{i}"), "status": "final",
                "code": {"text": "x"}, "subject": {"reference": "Patient/p1"},
            });
            let put = call(
                &app,
                "PUT",
                &format!("{BASE}/Observation/o{i}"),
                &[JSON],
                obs.to_string(),
            )
            .await;
            assert_eq!(put.status, 201, "{b}: {:?}", put.body);
        }
        let modes = |body: &Value, mode: &str| -> Vec<Value> {
            body["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"] == mode)
                .cloned()
                .collect()
        };

        let reply = get(&app, "Patient?_id=p1&_revinclude=Observation:subject").await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        assert_eq!(modes(&reply.body, "match").len(), 1, "{b}");
        assert_eq!(modes(&reply.body, "include").len(), 3, "{b}: the cap");
        let outcome = modes(&reply.body, "outcome");
        assert_eq!(outcome.len(), 1, "{b}: {:?}", reply.body);
        let text = outcome[0]["resource"].to_string();
        assert!(
            text.contains("fhir.max_included") && text.contains("warning"),
            "{b}: {text}"
        );

        // _include too: five Observations refer to one Patient, within the cap, and no
        // outcome entry.
        let reply = get(
            &app,
            "Observation?subject=Patient/p1&_include=Observation:subject",
        )
        .await;
        assert_eq!(modes(&reply.body, "include").len(), 1, "{b}");
        assert!(modes(&reply.body, "outcome").is_empty(), "{b}");
        // Exactly as many as the cap: nothing is cut, nothing said.
        for id in ["o3", "o4"] {
            let delete = call(&app, "DELETE", &format!("{BASE}/Observation/{id}"), &[], "").await;
            assert!(delete.status < 300, "{b}: {:?}", delete.body);
        }
        let reply = get(&app, "Patient?_id=p1&_revinclude=Observation:subject").await;
        assert_eq!(modes(&reply.body, "include").len(), 3, "{b}");
        assert!(
            modes(&reply.body, "outcome").is_empty(),
            "{b}: {:?}",
            reply.body
        );
    }
}
