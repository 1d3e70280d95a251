//! The resource server: token sources, verification diagnostics, audiences, the
//! compatibility mode, and SMART scopes enforced through the default plugins.

use serde_json::json;

use crate::support::{Reply, TestDb, call, mint, raw_app_on};

const JSON: (&str, &str) = ("content-type", "application/fhir+json");

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

async fn get(app: &axum::Router, uri: &str, token: Option<&str>) -> Reply {
    match token {
        Some(t) => {
            let (k, v) = bearer(t);
            call(app, "GET", uri, &[(k, v.as_str())], "").await
        }
        None => call(app, "GET", uri, &[], "").await,
    }
}

/// Asserts a 401/403 that names its cause in both WWW-Authenticate and the OperationOutcome.
fn assert_refused(reply: &Reply, status: u16, error: Option<&str>, needle: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    let challenge = reply.header("www-authenticate");
    assert!(
        challenge.starts_with("Bearer realm=\"hestia\""),
        "{challenge}"
    );
    if let Some(error) = error {
        assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{challenge}"
        );
    }
    assert!(
        challenge.contains(needle),
        "{challenge:?} should contain {needle:?}"
    );
    assert_eq!(reply.body["resourceType"], "OperationOutcome");
    assert!(
        reply.diagnostics().contains(needle),
        "{} should contain {needle:?}",
        reply.diagnostics()
    );
}

/// Discovery (the CapabilityStatement and the SMART configuration) needs no token.
#[tokio::test]
async fn discovery_needs_no_token() {
    for db in TestDb::all().await {
        let (app, _state) = raw_app_on(&db, "").await;
        let b = db.backend;
        let meta = get(&app, "/fhir/r4/metadata", None).await;
        assert_eq!(meta.status, 200, "{b}");
        assert_eq!(meta.body["resourceType"], "CapabilityStatement");
        let oauth_uris = &meta.body["rest"][0]["security"]["extension"][0];
        assert_eq!(
            oauth_uris["url"],
            "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
        );
        assert_eq!(
            oauth_uris["extension"][1]["valueUri"],
            "http://localhost:8080/oauth2/token"
        );
        let smart = get(&app, "/fhir/r4/.well-known/smart-configuration", None).await;
        assert_eq!(smart.status, 200);
        assert_eq!(
            smart.body["token_endpoint"],
            "http://localhost:8080/oauth2/token"
        );
        assert!(
            smart.body["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!("permission-v2"))
        );
    }
}

/// A token comes in the Authorization header or the `access_token` query, not both; none
/// at all is a 401.
#[tokio::test]
async fn a_token_comes_from_the_header_or_the_query_not_both() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let good = mint(&state, json!({})).await;
        let b = db.backend;
        assert_refused(
            &get(&app, "/fhir/r4/Patient/p1", None).await,
            401,
            None,
            "no access token",
        );
        assert_eq!(
            get(&app, "/fhir/r4/Patient/p1", Some(&good)).await.status,
            404,
            "{b}: authorized, and not there"
        );
        let by_query = get(
            &app,
            &format!("/fhir/r4/Patient/p1?access_token={good}"),
            None,
        )
        .await;
        assert_eq!(
            by_query.status, 404,
            "{b}: the access_token query parameter works: {:?}",
            by_query.body
        );
        let (k, v) = bearer(&good);
        let both = call(
            &app,
            "GET",
            &format!("/fhir/r4/Patient/p1?access_token={good}"),
            &[(k, v.as_str())],
            "",
        )
        .await;
        assert_eq!(both.status, 400, "{b}: two sources");
    }
}

/// Expired, foreign-audience, foreign-issuer, tampered and unknown-key tokens are refused
/// with a diagnosis naming the cause.
#[tokio::test]
async fn bad_tokens_are_refused_naming_their_cause() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let good = mint(&state, json!({})).await;
        let now = state.oauth().now();
        let expired = mint(
            &state,
            json!({"exp": now - 120, "iat": now - 600, "nbf": now - 600}),
        )
        .await;
        assert_refused(
            &get(&app, "/fhir/r4/Patient/p1", Some(&expired)).await,
            401,
            Some("invalid_token"),
            "expired at",
        );
        let other_aud = mint(&state, json!({"aud": "https://elsewhere.example/fhir"})).await;
        assert_refused(
            &get(&app, "/fhir/r4/Patient/p1", Some(&other_aud)).await,
            401,
            Some("invalid_token"),
            "audience [https://elsewhere.example/fhir] does not include http://localhost:8080/fhir/r4",
        );
        let wrong_iss = mint(&state, json!({"iss": "https://evil.example"})).await;
        assert_refused(
            &get(&app, "/fhir/r4/Patient/p1", Some(&wrong_iss)).await,
            401,
            Some("invalid_token"),
            "wrong issuer",
        );
        // Change one character in the middle of the signature (every bit there is significant,
        // so the base64 stays well-formed and only the signature check can fail).
        let sig_start = good.rfind('.').unwrap() + 1;
        let middle = sig_start + (good.len() - sig_start) / 2;
        let flipped = if &good[middle..=middle] == "A" {
            "B"
        } else {
            "A"
        };
        let tampered = format!("{}{flipped}{}", &good[..middle], &good[middle + 1..]);
        assert_refused(
            &get(&app, "/fhir/r4/Patient/p1", Some(&tampered)).await,
            401,
            Some("invalid_token"),
            "signature invalid",
        );
        let parts: Vec<&str> = good.split('.').collect();
        let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": "no-such-key"});
        use base64::Engine;
        let forged = format!(
            "{}.{}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string()),
            parts[1],
            parts[2]
        );
        assert_refused(
            &get(&app, "/fhir/r4/Patient/p1", Some(&forged)).await,
            401,
            Some("invalid_token"),
            "unknown kid no-such-key",
        );
    }
}

/// A valid token is held to its scopes: a write outside them is a 403 naming the plugin.
#[tokio::test]
async fn a_valid_token_is_held_to_its_scopes() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let read_only = mint(&state, json!({"scope": "system/Observation.rs"})).await;
        let (k, v) = bearer(&read_only);
        let create = call(
            &app,
            "POST",
            "/fhir/r4/Patient",
            &[JSON, (k, v.as_str())],
            json!({"resourceType": "Patient"}).to_string(),
        )
        .await;
        assert_refused(
            &create,
            403,
            Some("insufficient_scope"),
            "plugin smart-scopes denied",
        );
        assert!(
            create.diagnostics().contains("Patient"),
            "{}",
            create.diagnostics()
        );
        assert_eq!(
            get(&app, "/fhir/r4/Observation/o1", Some(&read_only))
                .await
                .status,
            404
        );
    }
}

/// `Authorization: Basic` of `user:password`.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The compatibility-mode app with accounts alice (the token's user) and bob; a token
/// of alice's and the URI it is sent on.
async fn basic_app(db: &TestDb) -> (axum::Router, hestia::http::AppState, String) {
    let (app, state) = raw_app_on(db, "[fhir]\nrequire_basic_auth = true\n").await;
    let mut alice = None;
    for name in ["alice", "bob"] {
        let user = state
            .store()
            .create_user(hestia::store::NewUser {
                username: name.into(),
                password: format!("{name}-password"),
                fhir_user: None,
            })
            .await
            .unwrap();
        let practitioner = hestia::store::UserUpdate {
            roles: Some(vec!["practitioner".into()]),
            fhir_user: None,
        };
        state.store().update_user(name, practitioner).await.unwrap();
        alice.get_or_insert(user);
    }
    // A user's token carries user scopes (an account never gets system/ ones).
    let token = mint(
        &state,
        json!({"sub": alice.unwrap().id, "scope": "user/*.read user/*.write"}),
    )
    .await;
    (
        app,
        state,
        format!("/fhir/r4/Patient/p1?access_token={token}"),
    )
}

async fn with_basic(app: &axum::Router, uri: &str, user: &str, password: &str) -> Reply {
    call(
        app,
        "GET",
        uri,
        &[("authorization", basic(user, password).as_str())],
        "",
    )
    .await
}

/// A refusal's status, challenge and OperationOutcome with the count of attempts left
/// taken out (it differs from one attempt to the next).
fn answer_of(reply: &Reply) -> (u16, String, String) {
    let without_count = |text: &str| {
        text.chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect::<String>()
    };
    (
        reply.status,
        without_count(reply.header("www-authenticate")),
        without_count(&reply.body.to_string()),
    )
}

#[tokio::test]
async fn basic_compatibility_mode() {
    for db in TestDb::all().await {
        let (app, _state, uri) = basic_app(&db).await;
        let ok = with_basic(&app, &uri, "alice", "alice-password").await;
        assert_eq!(
            ok.status, 404,
            "{}: Basic matches sub: {:?}",
            db.backend, ok.body
        );
        let missing = call(&app, "GET", &uri, &[], "").await;
        assert_refused(
            &missing,
            401,
            Some("invalid_request"),
            "also requires HTTP Basic credentials",
        );
        let wrong_pw = with_basic(&app, &uri, "alice", "nope").await;
        assert_refused(
            &wrong_pw,
            401,
            Some("invalid_token"),
            "the Basic credentials are not the username and password of the token's user (4 of 5 attempts left",
        );
    }
}

/// With a token of alice's, Basic credentials of another account (right password or
/// wrong), of no account, and alice's with a wrong password get one answer: no oracle of
/// passwords or usernames.
#[tokio::test]
async fn basic_answers_tell_neither_passwords_nor_users_apart() {
    for db in TestDb::all().await {
        let (app, _state, uri) = basic_app(&db).await;
        let mut answers = Vec::new();
        for (user, password) in [
            ("bob", "bob-password"),
            ("bob", "a guess"),
            ("nobody", "a guess"),
            ("alice", "a guess"),
        ] {
            let reply = with_basic(&app, &uri, user, password).await;
            assert_refused(
                &reply,
                401,
                Some("invalid_token"),
                "not the username and password of the token's user",
            );
            answers.push(answer_of(&reply));
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{}: {answers:#?}",
            db.backend
        );
    }
}

/// Basic failures count as sign-in attempts of the token's user: after the limit even
/// the right password is refused, with a 429 that names the limit, until the window ends.
#[tokio::test]
async fn basic_failures_are_limited_like_sign_ins() {
    let limit = hestia::oauth::signin::MAX_FAILURES_PER_USER;
    for db in TestDb::all().await {
        let (app, state, uri) = basic_app(&db).await;
        for i in 0..limit {
            // Wrong users and wrong passwords count alike.
            let (user, password) = if i % 2 == 0 {
                ("bob", "bob-password")
            } else {
                ("alice", "a guess")
            };
            let reply = with_basic(&app, &uri, user, password).await;
            assert_eq!(reply.status, 401, "{}: attempt {i}", db.backend);
        }
        let paused = with_basic(&app, &uri, "alice", "alice-password").await;
        assert_eq!(paused.status, 429, "{}: {:?}", db.backend, paused.body);
        assert!(
            paused.diagnostics().contains(&format!(
                "Too many failed sign-ins for the token's user: {limit} in the last 15 minutes"
            )) && paused.diagnostics().contains("Try again in"),
            "{}",
            paused.diagnostics()
        );
        assert_eq!(paused.body["issue"][0]["code"], "throttled");
        // The attempts are the sign-in page's, in the database.
        let failures: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM oauth_login_attempts WHERE username = 'alice' AND success = 0",
        )
        .fetch_one(state.store().pool())
        .await
        .unwrap();
        assert_eq!(failures, limit, "{}", db.backend);
    }
}

/// Patient/p1 and Patient/p2, each with one Observation (`obs-p1`, `obs-p2`), stored with
/// the token `admin`.
async fn two_patients_with_an_observation_each(app: &axum::Router, admin: &str) {
    let (k, v) = bearer(admin);
    let auth = [JSON, (k, v.as_str())];
    for p in ["p1", "p2"] {
        let r = call(
            app,
            "PUT",
            &format!("/fhir/r4/Patient/{p}"),
            &auth,
            json!({"resourceType": "Patient", "id": p}).to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let obs = json!({"resourceType": "Observation", "id": format!("obs-{p}"), "status": "final",
                         "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{p}")}});
        let r = call(
            app,
            "PUT",
            &format!("/fhir/r4/Observation/obs-{p}"),
            &auth,
            obs.to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
}

/// A patient-scoped token reads only its patient's compartment and writes nothing with a
/// read scope; without a patient context it reads nothing.
#[tokio::test]
async fn patient_scopes_read_only_the_patients_compartment() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let admin = mint(&state, json!({})).await;
        two_patients_with_an_observation_each(&app, &admin).await;
        let patient = mint(
            &state,
            json!({"scope": "patient/*.read", "patient": "p1", "fhirUser": "Patient/p1"}),
        )
        .await;
        assert_eq!(
            get(&app, "/fhir/r4/Patient/p1", Some(&patient))
                .await
                .status,
            200,
            "{}",
            db.backend
        );
        assert_eq!(
            get(&app, "/fhir/r4/Observation/obs-p1", Some(&patient))
                .await
                .status,
            200
        );
        let other = get(&app, "/fhir/r4/Observation/obs-p2", Some(&patient)).await;
        assert_eq!(other.status, 403, "{}: {:?}", db.backend, other.body);
        let search = get(&app, "/fhir/r4/Observation?_total=accurate", Some(&patient)).await;
        assert_eq!(search.status, 200, "{:?}", search.body);
        assert_eq!(
            search.body["total"], 1,
            "{}: only p1's Observation is visible or counted",
            db.backend
        );
        assert_eq!(search.body["entry"][0]["resource"]["id"], "obs-p1");
        let write = call(
            &app,
            "POST",
            "/fhir/r4/Observation",
            &[
                JSON,
                ("authorization", format!("Bearer {patient}").as_str()),
            ],
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
                .to_string(),
        )
        .await;
        assert_refused(
            &write,
            403,
            Some("insufficient_scope"),
            "plugin smart-scopes denied",
        );

        let no_context = mint(&state, json!({"scope": "patient/*.read"})).await;
        assert_refused(
            &get(&app, "/fhir/r4/Patient/p1", Some(&no_context)).await,
            403,
            Some("insufficient_scope"),
            "patient context",
        );
    }
}

/// Writes stay inside the compartment too: the new content and the current version; a
/// transaction with one entry outside it is refused whole.
#[tokio::test]
async fn patient_scopes_write_only_inside_the_patients_compartment() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let admin = mint(&state, json!({})).await;
        two_patients_with_an_observation_each(&app, &admin).await;
        let writer = mint(&state, json!({"scope": "patient/*.*", "patient": "p1"})).await;
        let wauth = format!("Bearer {writer}");
        let h = [JSON, ("authorization", wauth.as_str())];
        let obs = |p: &str| {
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": format!("Patient/{p}")}}).to_string()
        };
        let moved = |id: &str| {
            json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}).to_string()
        };
        let patient_p2 = json!({"resourceType": "Patient", "id": "p2"}).to_string();
        // Each write in order: method, URL, headers, body, and the refusal it gets (none: 201).
        let writes = [
            ("POST", "/fhir/r4/Observation", &h[..], obs("p1"), None),
            (
                "POST",
                "/fhir/r4/Observation",
                &h[..],
                obs("p2"),
                Some("does not refer to Patient/p1"),
            ),
            (
                "PUT",
                "/fhir/r4/Observation/obs-p2",
                &h[..],
                moved("obs-p2"),
                Some("outside the patient compartment"),
            ),
            (
                "PUT",
                "/fhir/r4/Observation/new-obs",
                &h[..],
                moved("new-obs"),
                None,
            ),
            (
                "DELETE",
                "/fhir/r4/Observation/obs-p2",
                &h[1..],
                String::new(),
                Some("outside the patient compartment"),
            ),
            (
                "PUT",
                "/fhir/r4/Patient/p2",
                &h[..],
                patient_p2,
                Some("cannot write other Patient resources"),
            ),
        ];
        for (method, uri, headers, body, refusal) in writes {
            let reply = call(&app, method, uri, headers, body).await;
            match refusal {
                None => assert_eq!(
                    reply.status, 201,
                    "{} {method} {uri}: {:?}",
                    db.backend, reply.body
                ),
                Some(needle) => assert_refused(&reply, 403, Some("insufficient_scope"), needle),
            }
        }
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": serde_json::from_str::<serde_json::Value>(&obs("p1")).unwrap(), "request": {"method": "POST", "url": "Observation"}},
            {"resource": serde_json::from_str::<serde_json::Value>(&obs("p2")).unwrap(), "request": {"method": "POST", "url": "Observation"}},
        ]});
        let tx = call(&app, "POST", "/fhir/r4", &h, bundle.to_string()).await;
        assert_eq!(tx.status, 403, "{:?}", tx.body);
        assert!(
            tx.diagnostics().contains("entry 1 (POST Observation)"),
            "{}",
            tx.diagnostics()
        );
        let count = get(
            &app,
            "/fhir/r4/Observation?_total=accurate&_count=0",
            Some(&admin),
        )
        .await;
        assert_eq!(
            count.body["total"], 4,
            "{}: obs-p1, obs-p2, the new p1 one and new-obs; nothing from the refused writes",
            db.backend
        );
    }
}

/// This server's tokens are verified once and kept (`hestia::freshness`). A revocation
/// still applies to the next request of the server that revoked, and to another server on
/// the same database once `CHECKED_WITHIN` has passed: by the token (`jti`), and by its
/// grant, with the grant's reason.
#[tokio::test]
async fn kept_tokens_are_refused_once_revoked_here_or_by_another_server() {
    for db in TestDb::all().await {
        let (here, here_state) = raw_app_on(&db, "").await;
        let (there, there_state) = raw_app_on(&db, "").await;
        // `mint` records its tokens under the grant `test-grant`.
        let now = hestia::store::now_secs();
        here_state
            .store()
            .create_grant("test-grant", "app-1", None, now)
            .await
            .unwrap();
        let system = |jti: &str| json!({"sub": "app-1", "scope": "system/Patient.rs", "jti": jti});
        let by_jti = mint(&here_state, system("kept-1")).await;
        let by_grant = mint(&here_state, system("kept-2")).await;
        for token in [&by_jti, &by_grant] {
            for app in [&here, &there] {
                let reply = get(app, "/fhir/r4/Patient", Some(token)).await;
                assert_eq!(reply.status, 200, "{}: {:?}", db.backend, reply.body);
            }
        }

        here_state
            .store()
            .revoke_access_token("kept-1", now)
            .await
            .unwrap();
        let reply = get(&here, "/fhir/r4/Patient", Some(&by_jti)).await;
        assert_refused(&reply, 401, Some("invalid_token"), "the token was revoked");
        let reply = get(&here, "/fhir/r4/Patient", Some(&by_grant)).await;
        assert_eq!(reply.status, 200, "{}: {:?}", db.backend, reply.body);
        tokio::time::sleep(2 * hestia::freshness::CHECKED_WITHIN).await;
        let reply = get(&there, "/fhir/r4/Patient", Some(&by_jti)).await;
        assert_refused(&reply, 401, Some("invalid_token"), "the token was revoked");

        there_state
            .store()
            .revoke_grant("test-grant", now, "its app was switched off")
            .await
            .unwrap();
        let reply = get(&there, "/fhir/r4/Patient", Some(&by_grant)).await;
        assert_refused(
            &reply,
            401,
            Some("invalid_token"),
            "its app was switched off",
        );
        tokio::time::sleep(2 * hestia::freshness::CHECKED_WITHIN).await;
        let reply = get(&here, "/fhir/r4/Patient", Some(&by_grant)).await;
        assert_refused(
            &reply,
            401,
            Some("invalid_token"),
            "its app was switched off",
        );
    }
}

/// A kept token is refused once it expires, as one verified afresh is.
#[tokio::test]
async fn kept_tokens_are_refused_once_expired() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "[fhir]\nclock_skew_secs = 0\n").await;
        let exp = state.oauth().now() + 3;
        let token = mint(
            &state,
            json!({"sub": "app-1", "scope": "system/Patient.rs", "exp": exp}),
        )
        .await;
        let reply = get(&app, "/fhir/r4/Patient", Some(&token)).await;
        assert_eq!(reply.status, 200, "{}: {:?}", db.backend, reply.body);
        while state.oauth().now() < exp {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let reply = get(&app, "/fhir/r4/Patient", Some(&token)).await;
        assert_refused(&reply, 401, Some("invalid_token"), "expired");
    }
}
