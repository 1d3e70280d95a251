//! The reference journey of the design, with the real binary over TLS: discovery, a
//! client made with the CLI against the running server, a token naming the FHIR base as
//! its audience, FHIR reads with the token as Bearer and as a query parameter, and a
//! refusal that says why.

use serde_json::{Value, json};

use crate::support::{Server, TestDb, client_trusting, demo_value, hestia};

/// A token from the real binary over TLS, then FHIR calls with it and the diagnosis of it.
/// Long: one end-to-end journey against one server, each step using the token or resources of the steps before it.
#[tokio::test]
async fn token_then_fhir_over_tls_with_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let http = client_trusting(&server.data_dir.join("tls").join("ca.pem"));
    let base = format!("{}/fhir/r4", server.url);

    let discovery: Value = http
        .get(format!("{}/.well-known/openid-configuration", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], server.url.as_str());
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap().to_string();
    let smart: Value = http
        .get(format!("{base}/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(smart["token_endpoint"], token_endpoint.as_str());

    let (ok, out, err) = hestia(
        dir.path(),
        &[
            "client",
            "add",
            "--name",
            "journey",
            "--grant-type",
            "client_credentials",
            "--scope",
            "system/*.read system/*.write",
        ],
        "",
    );
    assert!(ok, "{err}");
    let client: Value = serde_json::from_str(&out).unwrap();
    let (id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );

    let token: Value = http
        .post(&token_endpoint)
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read system/*.write"),
            ("aud", base.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{token}"))
        .to_string();

    let created = http
        .post(format!("{base}/Patient"))
        .bearer_auth(&access)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "name": [{"family": "Journey"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let bundle: Value = http
        .get(format!("{base}/Patient"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(
        bundle["entry"][0]["resource"]["name"][0]["family"],
        "Journey"
    );
    let by_query = http
        .get(format!("{base}/Patient?access_token={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_query.status(),
        200,
        "the access_token query parameter, as Postman users send it"
    );

    // The same diagnosis offline.
    let (ok, out, err) = hestia(
        dir.path(),
        &[
            "token",
            "explain",
            &access,
            "--public-url",
            &server.url,
            "--request",
            "GET Patient?name=x",
        ],
        "",
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("audience: accepted for") && out.contains("GET Patient?name=x: allowed"),
        "{out}"
    );
    let (ok, out, _) = hestia(
        dir.path(),
        &[
            "token",
            "explain",
            &access,
            "--public-url",
            &server.url,
            "--resource",
            "https://elsewhere.example/fhir",
        ],
        "",
    );
    assert!(!ok);
    assert!(
        out.contains("refused: 401 invalid_token: plugin audience denied")
            && out.contains("does not include https://elsewhere.example/fhir"),
        "{out}"
    );
    let (ok, out, _) = hestia(dir.path(), &["token", "explain", "not-a-token"], "");
    assert!(
        !ok && out.contains("refused: 401 invalid_token: the token is not a JWT"),
        "{out}"
    );

    let refused = http.get(format!("{base}/Patient")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("no access token"), "{challenge}");
    let outcome: Value = refused.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");

    // A token for another audience is refused, naming both.
    let (ok, out, _) = hestia(
        dir.path(),
        &[
            "client",
            "add",
            "--name",
            "other",
            "--grant-type",
            "client_credentials",
            "--scope",
            "system/*.read",
            "--audience",
            "https://elsewhere.example/fhir",
        ],
        "",
    );
    assert!(ok);
    let other: Value = serde_json::from_str(&out).unwrap();
    let denied: Value = http
        .post(&token_endpoint)
        .basic_auth(
            other["client_id"].as_str().unwrap(),
            other["client_secret"].as_str(),
        )
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(denied["error"], "invalid_target", "{denied}");
    assert!(
        denied["error_description"]
            .as_str()
            .unwrap()
            .contains("https://elsewhere.example/fhir"),
        "{denied}"
    );
    assert!(server.terminate().success());
}

/// `serve --demo`: the demo user, the Postman client and the sample patients are created on
/// the first start and kept on the next; every start prints working credentials.
/// Long: two starts of one server in order; the second checks what the first created and printed.
#[tokio::test]
async fn demo_is_created_once_and_its_credentials_work() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let args = ["--demo", "--database-url", db.url.as_str()];
        let mut first = Server::start(dir.path(), &args);
        let lines = first.stdout_lines.clone();
        let password = demo_value(&lines, "user:          demo / ");
        let client_id = demo_value(&lines, "client_id ");
        let secret = demo_value(&lines, "client_secret ");
        assert!(password.len() >= 20, "a random password: {password}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("redirect URI https://oauth.pstmn.io/v1/callback")),
            "{lines:#?}"
        );
        let environment = first
            .data_dir
            .join("postman")
            .join("Hestia.postman_environment.json");
        let env: Value =
            serde_json::from_str(&std::fs::read_to_string(&environment).unwrap()).unwrap();
        let value = |key: &str| {
            env["values"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["key"] == key)
                .unwrap_or_else(|| panic!("no {key} in {env}"))["value"]
                .clone()
        };
        // Started on port 0: the environment names the port the server really listens on.
        assert_eq!(value("baseUrl"), first.url.as_str());
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("{}/fhir/r4", first.url))),
            "the printed FHIR base names the bound port: {lines:#?}"
        );
        assert_eq!(value("client_secret"), secret.as_str());
        assert_eq!(value("password"), password.as_str());
        assert!(
            first
                .data_dir
                .join("postman")
                .join("Hestia.postman_collection.json")
                .is_file()
        );

        let http = client_trusting(&first.data_dir.join("tls").join("ca.pem"));
        let count_patients = |url: String| {
            let http = http.clone();
            let (id, secret) = (client_id.clone(), secret.clone());
            async move {
                let base = format!("{url}/fhir/r4");
                let token: Value = http
                    .post(format!("{url}/oauth2/token"))
                    .basic_auth(&id, Some(&secret))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("scope", "system/*.read"),
                        ("aud", base.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let access = token["access_token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{token}"))
                    .to_string();
                let bundle: Value = http
                    .get(format!("{base}/Patient?_total=accurate"))
                    .bearer_auth(&access)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let amy = http
                    .get(format!("{base}/Observation?subject=Patient/demo-amy"))
                    .bearer_auth(&access)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(amy.status(), 200);
                let amy: Value = amy.json().await.unwrap();
                (
                    bundle["total"].as_i64().unwrap(),
                    amy["entry"].as_array().map_or(0, Vec::len),
                )
            }
        };
        assert_eq!(
            count_patients(first.url.clone()).await,
            (3, 2),
            "{}",
            db.backend
        );
        assert!(first.terminate().success());

        // The second start finds everything and prints the same credentials.
        let mut second = Server::start(dir.path(), &args);
        let again = second.stdout_lines.clone();
        assert_eq!(demo_value(&again, "user:          demo / "), password);
        assert_eq!(demo_value(&again, "client_id "), client_id);
        assert_eq!(demo_value(&again, "client_secret "), secret);
        assert_eq!(
            count_patients(second.url.clone()).await,
            (3, 2),
            "{}",
            db.backend
        );
        assert!(second.terminate().success());
    }
}
