//! The authorization server over HTTP, on SQLite and PostgreSQL: discovery, the login and
//! consent pages, every grant, PKCE, audiences, private_key_jwt, refresh rotation and
//! reuse detection, registration (RFC 7591/7592), introspection, revocation, key rotation,
//! and the error of every failure case.

use std::sync::Arc;

use base64::Engine;
use hestia::config::{FileConfig, FileOauth, ServeFlags};
use hestia::http::AppState;
use hestia::oauth::{AuthServer, Clock};
use hestia::store::{ClientKind, NewClient, NewUser, Store};
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

use crate::support::{
    CALLBACK, PASSWORD, Server, TestDb, app_with, approve, browser, browser_trusting, code_flow,
    default_plugins, demo_value, hestia, hidden, open_authorize, pkce, query_of, resolve, serve,
    sign_in, test_flags,
};

/// Status, headers and JSON body of a response.
type Reply = (u16, reqwest::header::HeaderMap, Value);

struct Env {
    url: String,
    fhir: String,
    auth: Arc<AuthServer>,
    clock: Arc<Clock>,
    store: Store,
    state: AppState,
    db: TestDb,
    backend: &'static str,
    port: u16,
    file: FileConfig,
    server: tokio::task::JoinHandle<()>,
}

async fn start(db: TestDb, oauth: FileOauth) -> Env {
    start_with(
        db,
        FileConfig {
            oauth,
            ..Default::default()
        },
        None,
    )
    .await
}

/// The application on `db` with `file` settings, served on `port` (a free one when `None`).
async fn start_with(db: TestDb, file: FileConfig, port: Option<u16>) -> Env {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let flags = ServeFlags {
        public_url: Some(format!("http://127.0.0.1:{port}")),
        ..test_flags(&db)
    };
    let settings = resolve(flags, file.clone());
    let clock = Clock::system();
    let (app, state) = app_with(&db, settings.clone(), default_plugins(), clock.clone()).await;
    let auth = state.oauth().clone();
    auth.ensure_keys().await.unwrap();
    state.set_ready();
    Env {
        url: settings.public_url.clone(),
        fhir: settings.fhir_base_url(),
        auth,
        clock,
        store: state.store().clone(),
        state,
        backend: db.backend,
        db,
        port,
        file,
        server: serve(listener, app),
    }
}

/// Stops the server, drops its authorization server and store, and starts a new one on
/// the same database, port and settings: what a restart of the process keeps.
async fn restart(env: Env) -> Env {
    let Env {
        db,
        port,
        file,
        server,
        store,
        auth,
        state,
        ..
    } = env;
    server.abort();
    let _ = server.await;
    drop((auth, state));
    store.close().await;
    start_with(db, file, Some(port)).await
}
/// An account: a patient when its fhirUser is a Patient (its own records), else a
/// practitioner (all clinical data), so that its tokens reach what the tests read.
async fn user(env: &Env, name: &str, fhir_user: Option<&str>) {
    env.store
        .create_user(NewUser {
            username: name.into(),
            password: PASSWORD.into(),
            fhir_user: fhir_user.map(str::to_string),
        })
        .await
        .unwrap();
    let role = match fhir_user {
        Some(f) if f.starts_with("Patient/") => "patient",
        _ => "practitioner",
    };
    env.store
        .update_user(
            name,
            hestia::store::UserUpdate {
                roles: Some(vec![role.into()]),
                fhir_user: None,
            },
        )
        .await
        .unwrap();
}

/// A Patient in the server's FHIR data.
async fn patient(env: &Env, id: &str, given: &str, family: &str, birth_date: &str) {
    let resource = json!({
        "resourceType": "Patient",
        "id": id,
        "name": [{"given": [given], "family": family}],
        "birthDate": birth_date,
    });
    env.state
        .fhir()
        .update(
            None,
            hestia::fhir::definitions::ResourceType::parse("Patient").unwrap(),
            id,
            resource.as_object().unwrap().clone(),
            None,
            &hestia::fhir::access::Access::Unrestricted,
        )
        .await
        .unwrap();
}

/// Registers a client (RFC 7591) with a fresh single-use initial access token; the answer.
async fn register(env: &Env, metadata: Value) -> Value {
    register_reply(env, metadata).await.2
}

/// [`register`] with the status and headers of the answer.
async fn register_reply(env: &Env, metadata: Value) -> Reply {
    let initial = env.auth.create_registration_token(600, 1).await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth2/register", env.url))
        .bearer_auth(&initial)
        .json(&metadata)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

async fn app_client(env: &Env, public: bool, scope: &str, grants: &[&str]) -> (String, String) {
    let (client, secret) = env
        .store
        .create_client(NewClient {
            client_name: "Postman <demo>".into(),
            kind: ClientKind::App,
            public,
            redirect_uris: vec![CALLBACK.into()],
            grant_types: grants.iter().map(|g| g.to_string()).collect(),
            scope: scope.into(),
            audiences: vec![],
            metadata: json!({}),
        })
        .await
        .unwrap();
    (client.client_id, secret.map(|s| s.0).unwrap_or_default())
}

/// POSTs a form to the token-like endpoint `path`; returns status, headers and JSON.
async fn post_form(
    env: &Env,
    path: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Reply {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", env.url))
        .form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, headers, body)
}

/// Asserts an RFC 6749 error with a description naming the cause.
fn assert_error(got: &Reply, status: u16, code: &str, needle: &str) {
    let (s, headers, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let desc = body["error_description"].as_str().unwrap_or_default();
    assert!(desc.contains(needle), "{desc:?} should name {needle:?}");
    assert_eq!(headers["cache-control"], "no-store");
    if status == 401 {
        let challenge = headers
            .get("www-authenticate")
            .unwrap_or_else(|| panic!("a 401 carries WWW-Authenticate: {body}"));
        assert!(
            challenge.to_str().unwrap().starts_with("Basic")
                || challenge.to_str().unwrap().starts_with("Bearer"),
            "{challenge:?}"
        );
    }
}

async fn jwks(env: &Env) -> JwkSet {
    reqwest::get(format!("{}/oauth2/jwks", env.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Verifies a JWT with the JWKS from the endpoint, as a relying party would.
async fn verify(env: &Env, token: &str) -> (jsonwebtoken::Header, Value) {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let set = jwks(env).await;
    let kid = header.kid.clone().unwrap();
    let jwk = set
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} is published"));
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).unwrap();
    (data.header, data.claims)
}

async fn client_credentials(env: &Env, id: &str, secret: &str, extra: &[(&str, &str)]) -> Value {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend_from_slice(extra);
    let got = post_form(env, "/oauth2/token", &form, Some((id, secret))).await;
    assert_eq!(got.0, 200, "{}", got.2);
    got.2
}

async fn introspect(env: &Env, id: &str, secret: &str, token: &str) -> Value {
    let got = post_form(
        env,
        "/oauth2/introspect",
        &[("token", token)],
        Some((id, secret)),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.2);
    got.2
}

#[tokio::test]
async fn discovery_and_jwks() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let oidc: Value = reqwest::get(format!("{}/.well-known/openid-configuration", env.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rfc8414: Value = reqwest::get(format!(
            "{}/.well-known/oauth-authorization-server",
            env.url
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(oidc, rfc8414);
        assert_eq!(oidc["issuer"], env.url);
        for (field, path) in [
            ("authorization_endpoint", "/oauth2/authorize"),
            ("token_endpoint", "/oauth2/token"),
            ("jwks_uri", "/oauth2/jwks"),
            ("registration_endpoint", "/oauth2/register"),
            ("introspection_endpoint", "/oauth2/introspect"),
            ("revocation_endpoint", "/oauth2/revoke"),
            ("userinfo_endpoint", "/oauth2/userinfo"),
        ] {
            assert_eq!(oidc[field], format!("{}{path}", env.url), "{field}");
        }
        assert_eq!(oidc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(oidc["response_types_supported"], json!(["code"]));
        assert_eq!(
            oidc["token_endpoint_auth_signing_alg_values_supported"],
            json!(["RS384", "ES384"])
        );
        assert_eq!(
            oidc["grant_types_supported"],
            json!(["authorization_code", "client_credentials", "refresh_token"])
        );
        let set = jwks(&env).await;
        let algs: Vec<String> = set
            .keys
            .iter()
            .map(|k| format!("{:?}", k.common.key_algorithm.unwrap()))
            .collect();
        assert_eq!(algs.len(), 2, "{} {algs:?}", env.backend);
        assert!(algs.contains(&"RS256".into()) && algs.contains(&"ES256".into()));
        assert!(set.keys.iter().all(|k| k.common.key_id.is_some()));
    }
}

/// The authorization-code flow with PKCE: a login page, consent, the code exchange and
/// what a reused code revokes.
/// Long: one authorization-code journey (login, consent, exchange, userinfo, reuse of the code) whose steps run in order on the same code and session.
#[tokio::test]
async fn code_flow_with_pkce_login_consent_and_code_reuse() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "alice", Some("Patient/123")).await;
        let (id, secret) = app_client(
            &env,
            false,
            "openid fhirUser launch/patient offline_access patient/*.read",
            &["authorization_code", "refresh_token"],
        )
        .await;
        let (verifier, challenge) = pkce();
        let b = browser();
        let scope = "openid fhirUser launch/patient offline_access patient/Observation.rs patient/Patient.read";
        let login = open_authorize(
            &env.url,
            &b,
            &[
                ("response_type", "code"),
                ("client_id", &id),
                ("redirect_uri", CALLBACK),
                ("scope", scope),
                ("state", "xyz"),
                ("nonce", "n-1"),
                ("aud", &env.fhir),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
        assert_eq!(login.status(), 200);
        assert_eq!(login.headers()["x-frame-options"], "DENY");
        let login = login.text().await.unwrap();
        assert!(
            login.contains("Postman &lt;demo&gt;"),
            "the client name is escaped"
        );

        // A wrong password shows the page again with a message.
        let wrong = b
            .post(format!("{}/oauth2/login", env.url))
            .form(&[
                ("request_id", hidden(&login, "request_id")),
                ("csrf", hidden(&login, "csrf")),
                ("username", "alice".into()),
                ("password", "not it at all".into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        assert!(
            wrong
                .text()
                .await
                .unwrap()
                .contains("Wrong username or password")
        );

        // A forged form (wrong CSRF token) is refused.
        let forged = b
            .post(format!("{}/oauth2/login", env.url))
            .form(&[
                ("request_id", hidden(&login, "request_id")),
                ("csrf", "forged".into()),
                ("username", "alice".into()),
                ("password", PASSWORD.into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 400);
        assert!(forged.text().await.unwrap().contains("anti-forgery"));

        let consent = sign_in(&env.url, &b, &login, "alice").await;
        assert!(consent.contains("Read and search Observation records of the selected patient"));
        assert!(
            consent.contains("The app will see only your own records (Patient/123)"),
            "{consent}"
        );
        assert!(
            !consent.contains("name=\"patient\""),
            "a patient needs no picker"
        );
        let resp = approve(&env.url, &b, &consent, &["patient/Patient.read"], None).await;
        assert_eq!(resp.status(), 303);
        let q = query_of(resp.headers()["location"].to_str().unwrap());
        assert_eq!(q["state"], "xyz");
        assert_eq!(q["iss"], env.url);
        let code = q["code"].clone();

        // PKCE mismatch.
        let bad = post_form(
            &env,
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &"x".repeat(50)),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_error(&bad, 400, "invalid_grant", "PKCE verification failed");

        // The code was spent by the failed attempt; a fresh one for the real exchange.
        let q = code_flow(
            &env.url,
            &browser(),
            &id,
            "alice",
            scope,
            &challenge,
            &[("aud", &env.fhir), ("nonce", "n-1")],
            &["patient/Patient.read"],
        )
        .await;
        let code = q["code"].clone();
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier.as_str()),
        ];
        let got = post_form(&env, "/oauth2/token", &form, Some((&id, &secret))).await;
        assert_eq!(got.0, 200, "{}", got.2);
        assert_eq!(got.1["cache-control"], "no-store");
        let t = got.2;
        assert_eq!(
            t["scope"],
            "openid fhirUser launch/patient offline_access patient/Observation.rs"
        );
        assert_eq!(t["patient"], "123");
        assert_eq!(t["fhirUser"], "Patient/123");
        assert_eq!(t["token_type"], "Bearer");
        assert!(t["refresh_token"].is_string());
        let access = t["access_token"].as_str().unwrap();
        let (header, claims) = verify(&env, access).await;
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(claims["iss"], env.url);
        assert_eq!(claims["aud"], env.fhir);
        assert_eq!(claims["client_id"], id);
        assert_eq!(claims["patient"], "123");
        assert_eq!(claims["fhirUser"], "Patient/123");
        assert!(
            !claims["scope"]
                .as_str()
                .unwrap()
                .contains("patient/Patient.read")
        );
        for c in ["exp", "iat", "nbf", "jti", "sub"] {
            assert!(!claims[c].is_null(), "{c}");
        }
        let (_, id_claims) = verify(&env, t["id_token"].as_str().unwrap()).await;
        assert_eq!(id_claims["aud"], id);
        assert_eq!(id_claims["nonce"], "n-1");
        assert_eq!(id_claims["fhirUser"], "Patient/123");
        assert_eq!(id_claims["sub"], claims["sub"]);

        // userinfo
        let info: Value = reqwest::Client::new()
            .get(format!("{}/oauth2/userinfo", env.url))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["preferred_username"], "alice");
        assert_eq!(info["fhirUser"], "Patient/123");
        let denied = reqwest::Client::new()
            .get(format!("{}/oauth2/userinfo", env.url))
            .bearer_auth("not.a.token")
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), 401);
        assert!(
            denied.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );

        // The verifier is what a co-located resource server calls.
        let verified = env.auth.verify_access_token(access).await.unwrap();
        assert_eq!(verified.patient.as_deref(), Some("123"));

        // Reusing the code fails and revokes what was issued from it.
        let again = post_form(&env, "/oauth2/token", &form, Some((&id, &secret))).await;
        assert_error(&again, 400, "invalid_grant", "already used");
        assert_eq!(
            introspect(&env, &id, &secret, access).await["active"],
            false
        );
        let err = env.auth.verify_access_token(access).await.unwrap_err();
        assert!(err.to_string().contains("used twice"), "{err}");
        let refresh = post_form(
            &env,
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_error(&refresh, 400, "invalid_grant", "revoked");
    }
}

#[tokio::test]
async fn public_client_resource_parameter_and_patient_picker() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "drsmith", Some("Practitioner/7")).await;
        env.store
            .create_client(NewClient {
                client_name: "Other FHIR server".into(),
                kind: ClientKind::ResourceServer,
                public: false,
                redirect_uris: vec![],
                grant_types: vec![],
                scope: String::new(),
                audiences: vec!["https://other.example/fhir".into()],
                metadata: json!({}),
            })
            .await
            .unwrap();
        let (id, _) = app_client(
            &env,
            true,
            "openid launch/patient patient/*.read",
            &["authorization_code"],
        )
        .await;

        // A public client must use PKCE: an error redirect to the validated redirect URI.
        let b = browser();
        let resp = open_authorize(
            &env.url,
            &b,
            &[
                ("response_type", "code"),
                ("client_id", &id),
                ("redirect_uri", CALLBACK),
                ("scope", "openid"),
                ("state", "s"),
            ],
        )
        .await;
        assert_eq!(resp.status(), 303);
        let q = query_of(resp.headers()["location"].to_str().unwrap());
        assert_eq!(q["error"], "invalid_request");
        assert!(q["error_description"].contains("PKCE"), "{q:?}");
        assert_eq!(q["state"], "s");

        let (verifier, challenge) = pkce();
        let login = open_authorize(
            &env.url,
            &b,
            &[
                ("response_type", "code"),
                ("client_id", &id),
                ("scope", "launch/patient patient/Observation.read"),
                ("resource", "https://other.example/fhir"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .await
        .text()
        .await
        .unwrap();
        patient(&env, "456", "Ann", "Adams", "1980-02-03").await;
        let consent = sign_in(&env.url, &b, &login, "drsmith").await;
        assert!(
            consent.contains("name=\"patient\" id=\"patient-0\" value=\"456\""),
            "a practitioner picks a patient"
        );
        let again = approve(&env.url, &b, &consent, &[], None).await;
        assert_eq!(again.status(), 400);
        let again = again.text().await.unwrap();
        assert!(again.contains("Choose the patient"), "{again}");
        let resp = approve(&env.url, &b, &again, &[], Some("456")).await;
        assert_eq!(resp.status(), 303);
        let q = query_of(resp.headers()["location"].to_str().unwrap());
        assert!(!q.contains_key("state"));
        let got = post_form(
            &env,
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &id),
                ("code", &q["code"]),
                ("code_verifier", &verifier),
            ],
            None,
        )
        .await;
        assert_eq!(got.0, 200, "{}", got.2);
        assert_eq!(got.2["patient"], "456");
        assert!(
            got.2.get("refresh_token").is_none(),
            "no refresh grant, no offline_access"
        );
        let (_, claims) = verify(&env, got.2["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["aud"], "https://other.example/fhir");
        assert_eq!(claims["fhirUser"], "Practitioner/7");
    }
}

#[tokio::test]
async fn authorize_errors_redirect_only_to_validated_uris() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let (id, _) = app_client(
            &env,
            false,
            "openid patient/*.read",
            &["authorization_code"],
        )
        .await;
        let (_, challenge) = pkce();
        let b = browser();
        let base = |extra: &[(&'static str, &'static str)]| {
            let mut p: Vec<(&str, String)> = vec![
                ("response_type", "code".into()),
                ("client_id", id.clone()),
                ("redirect_uri", CALLBACK.into()),
                ("code_challenge", challenge.clone()),
                ("code_challenge_method", "S256".into()),
                ("state", "s1".into()),
            ];
            for (k, v) in extra {
                p.retain(|(pk, _)| pk != k);
                p.push((k, v.to_string()));
            }
            p
        };
        let page = |p: Vec<(&str, String)>| {
            let b = b.clone();
            let url = reqwest::Url::parse_with_params(&format!("{}/oauth2/authorize", env.url), &p)
                .unwrap();
            async move { b.get(url).send().await.unwrap() }
        };
        // Unknown client and unregistered redirect URIs: a page, never a redirect.
        for (extra, needle) in [
            (vec![("client_id", "nobody")], "unknown client"),
            (
                vec![("redirect_uri", "https://evil.example/cb")],
                "is not registered for client",
            ),
        ] {
            let resp = page(base(&extra)).await;
            assert_eq!(resp.status(), 400);
            assert!(resp.headers().get("location").is_none());
            let text = resp.text().await.unwrap();
            assert!(text.contains(needle), "{text}");
        }
        for (extra, code, needle) in [
            (
                vec![("scope", "user/*.read")],
                "invalid_scope",
                "scope user/*.read: plugin smart-scopes: client",
            ),
            (
                vec![("response_type", "token")],
                "unsupported_response_type",
                "token",
            ),
            (
                vec![("aud", "https://unknown.example/fhir")],
                "invalid_target",
                "audience https://unknown.example/fhir is not a registered resource server",
            ),
            (
                vec![("code_challenge_method", "plain")],
                "invalid_request",
                "plain",
            ),
            (vec![("prompt", "none")], "login_required", "prompt=none"),
        ] {
            let resp = page(base(&extra)).await;
            assert_eq!(resp.status(), 303, "{extra:?}");
            let q = query_of(resp.headers()["location"].to_str().unwrap());
            assert_eq!(q["error"], code, "{q:?}");
            assert!(q["error_description"].contains(needle), "{q:?}");
            assert_eq!(q["state"], "s1");
            assert_eq!(q["iss"], env.url);
        }
        let _ = &env.db;
    }
}

/// An environment with the user alice (Patient/1) and a confidential client of the
/// authorization-code grant with `openid patient/*.read`: its id and secret.
async fn alice_and_a_code_client(db: TestDb) -> (Env, String, String) {
    let env = start(db, FileOauth::default()).await;
    user(&env, "alice", Some("Patient/1")).await;
    let (id, secret) = app_client(
        &env,
        false,
        "openid patient/*.read",
        &["authorization_code"],
    )
    .await;
    (env, id, secret)
}

/// Each refusal of the token endpoint names its cause.
/// Long: one table of refused token requests, each with its status, error and diagnosis.
#[tokio::test]
async fn token_endpoint_errors_name_their_cause() {
    for db in TestDb::all().await {
        let (env, id, secret) = alice_and_a_code_client(db).await;
        let (cc, cc_secret) =
            app_client(&env, false, "system/*.read", &["client_credentials"]).await;
        let token = "/oauth2/token";
        let cases: Vec<(Reply, u16, &str, &str)> = vec![
            (
                post_form(
                    &env,
                    token,
                    &[("grant_type", "client_credentials")],
                    Some((&cc, "wrong")),
                )
                .await,
                401,
                "invalid_client",
                "wrong client secret",
            ),
            (
                post_form(
                    &env,
                    token,
                    &[("grant_type", "client_credentials")],
                    Some(("nobody", "x")),
                )
                .await,
                401,
                "invalid_client",
                "unknown client",
            ),
            (
                post_form(
                    &env,
                    token,
                    &[
                        ("grant_type", "client_credentials"),
                        ("client_id", &cc),
                        ("client_secret", "nope"),
                    ],
                    None,
                )
                .await,
                401,
                "invalid_client",
                "wrong client secret",
            ),
            (
                post_form(
                    &env,
                    token,
                    &[("grant_type", "password")],
                    Some((&cc, &cc_secret)),
                )
                .await,
                400,
                "unsupported_grant_type",
                "\"password\" is not supported",
            ),
            (
                post_form(
                    &env,
                    token,
                    &[
                        ("grant_type", "client_credentials"),
                        ("scope", "system/*.write"),
                    ],
                    Some((&cc, &cc_secret)),
                )
                .await,
                400,
                "invalid_scope",
                "scope system/*.write: plugin smart-scopes: client",
            ),
            (
                post_form(
                    &env,
                    token,
                    &[("grant_type", "client_credentials")],
                    Some((&id, &secret)),
                )
                .await,
                400,
                "unauthorized_client",
                "not registered for the client_credentials grant",
            ),
            (
                post_form(
                    &env,
                    token,
                    &[
                        ("grant_type", "client_credentials"),
                        ("resource", "https://elsewhere.example/"),
                    ],
                    Some((&cc, &cc_secret)),
                )
                .await,
                400,
                "invalid_target",
                "https://elsewhere.example/",
            ),
            (
                post_form(
                    &env,
                    token,
                    &[("grant_type", "authorization_code"), ("code", "made-up")],
                    Some((&id, &secret)),
                )
                .await,
                400,
                "invalid_grant",
                "unknown",
            ),
        ];
        for (got, status, code, needle) in &cases {
            assert_error(got, *status, code, needle);
        }
        assert_eq!(cases[0].0.1["www-authenticate"], "Basic realm=\"hestia\"");
    }
}

/// At the token endpoint, an expired code and a redirect_uri that differs from the
/// authorization request's are refused as `invalid_grant`, naming the cause.
#[tokio::test]
async fn code_exchange_errors_name_their_cause() {
    for db in TestDb::all().await {
        let (env, id, secret) = alice_and_a_code_client(db).await;
        let token = "/oauth2/token";
        let (verifier, challenge) = pkce();
        let q = code_flow(
            &env.url,
            &browser(),
            &id,
            "alice",
            "openid",
            &challenge,
            &[],
            &[],
        )
        .await;
        env.clock.advance(61);
        let expired = post_form(
            &env,
            token,
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &verifier),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_error(&expired, 400, "invalid_grant", "expired at");
        let q = code_flow(
            &env.url,
            &browser(),
            &id,
            "alice",
            "openid",
            &challenge,
            &[],
            &[],
        )
        .await;
        let wrong_uri = post_form(
            &env,
            token,
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", "https://other.example/cb"),
                ("code_verifier", &verifier),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_error(
            &wrong_uri,
            400,
            "invalid_grant",
            "redirect_uri https://other.example/cb differs",
        );
    }
}

#[tokio::test]
async fn client_credentials_audiences_introspection_and_revocation() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let (cc, secret) = app_client(&env, false, "system/*.read", &["client_credentials"]).await;
        let t = client_credentials(&env, &cc, &secret, &[]).await;
        assert_eq!(t["scope"], "system/*.read");
        assert!(t.get("refresh_token").is_none());
        let (_, claims) = verify(&env, t["access_token"].as_str().unwrap()).await;
        assert_eq!(
            claims["aud"], env.fhir,
            "the default audience is this server's FHIR base"
        );
        assert_eq!(claims["sub"], cc);

        // client_secret_post, the aud parameter and a narrower SMART v2 scope.
        let got = post_form(
            &env,
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &cc),
                ("client_secret", &secret),
                ("aud", &env.fhir),
                ("scope", "system/Patient.rs"),
            ],
            None,
        )
        .await;
        assert_eq!(got.0, 200, "{}", got.2);
        let (_, claims) = verify(&env, got.2["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["aud"], env.fhir);
        assert_eq!(claims["scope"], "system/Patient.rs");
        let resource = format!("{}/", env.fhir);
        let t2 = client_credentials(&env, &cc, &secret, &[("resource", &resource)]).await;
        let (_, claims) = verify(&env, t2["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["aud"], env.fhir);

        let live = introspect(&env, &cc, &secret, t["access_token"].as_str().unwrap()).await;
        assert_eq!(live["active"], true);
        assert_eq!(live["client_id"], cc);
        assert_eq!(live["scope"], "system/*.read");
        assert_eq!(
            introspect(&env, &cc, &secret, "garbage").await,
            json!({"active": false})
        );
        let unauthenticated = post_form(&env, "/oauth2/introspect", &[("token", "x")], None).await;
        assert_error(
            &unauthenticated,
            401,
            "invalid_client",
            "no client authentication",
        );

        // Revocation (RFC 7009).
        let (s, _, _) = post_form(
            &env,
            "/oauth2/revoke",
            &[("token", t["access_token"].as_str().unwrap())],
            Some((&cc, &secret)),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(
            introspect(&env, &cc, &secret, t["access_token"].as_str().unwrap()).await["active"],
            false
        );
        assert_eq!(
            introspect(&env, &cc, &secret, t2["access_token"].as_str().unwrap()).await["active"],
            true
        );

        // Expiry: one hour later, the other token is inactive and names why.
        env.clock.advance(3601);
        assert_eq!(
            introspect(&env, &cc, &secret, t2["access_token"].as_str().unwrap()).await["active"],
            false
        );
        let err = env
            .auth
            .verify_access_token(t2["access_token"].as_str().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("expired at "), "{err}");
    }
}

/// Refresh tokens rotate; a concurrent refresh within the grace window still works, a reuse
/// after it revokes the chain; a refresh may narrow the scope, not widen it.
/// Long: one refresh-token chain in order; the grace window and the reuse detection act on the rotations before them.
#[tokio::test]
async fn refresh_rotation_grace_and_reuse_detection() {
    for db in TestDb::all().await {
        let env = start(
            db,
            FileOauth {
                refresh_grace_secs: Some(5),
                ..Default::default()
            },
        )
        .await;
        user(&env, "alice", Some("Patient/9")).await;
        let (id, secret) = app_client(
            &env,
            false,
            "openid offline_access patient/*.read",
            &["authorization_code"],
        )
        .await;
        let (verifier, challenge) = pkce();
        let q = code_flow(
            &env.url,
            &browser(),
            &id,
            "alice",
            "offline_access patient/*.read",
            &challenge,
            &[],
            &[],
        )
        .await;
        let got = post_form(
            &env,
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &verifier),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_eq!(got.0, 200, "{}", got.2);
        let r0 = got.2["refresh_token"].as_str().unwrap().to_string();
        assert!(got.2.get("id_token").is_none(), "no openid, no id_token");
        let refresh = |token: String| {
            let env = &env;
            let (id, secret) = (id.clone(), secret.clone());
            async move {
                post_form(
                    env,
                    "/oauth2/token",
                    &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                    Some((&id, &secret)),
                )
                .await
            }
        };
        let r1 = refresh(r0.clone()).await;
        assert_eq!(r1.0, 200, "{}", r1.2);
        let r1_token = r1.2["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(r1_token, r0, "refresh tokens rotate");
        assert_eq!(
            introspect(&env, &id, &secret, &r1_token).await["token_type"],
            "refresh_token"
        );
        assert_eq!(
            introspect(&env, &id, &secret, &r0).await["active"],
            true,
            "within the grace window"
        );
        // A concurrent refresh within the grace window still works.
        let concurrent = refresh(r0.clone()).await;
        assert_eq!(concurrent.0, 200, "{}", concurrent.2);
        // A narrower scope on refresh; a wider one is refused.
        let wider = post_form(
            &env,
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &r1_token),
                ("scope", "openid"),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_error(
            &wider,
            400,
            "invalid_scope",
            "scope openid was not granted originally",
        );
        env.clock.advance(6);
        let reuse = refresh(r0.clone()).await;
        assert_error(&reuse, 400, "invalid_grant", "refresh token reuse detected");
        let family = refresh(r1_token.clone()).await;
        assert_error(&family, 400, "invalid_grant", "revoked");
        let access = r1.2["access_token"].as_str().unwrap();
        assert_eq!(
            introspect(&env, &id, &secret, access).await["active"],
            false
        );
    }
}

/// An ES384 key pair for a backend client: (PKCS#8 PEM, public JWK).
fn es384_key(kid: &str) -> (String, Value) {
    use p384::elliptic_curve::sec1::ToEncodedPoint;
    use p384::pkcs8::EncodePrivateKey;
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret
        .to_pkcs8_pem(p384::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let point = secret.public_key().to_encoded_point(false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({
        "kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384", "use": "sig",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
    });
    (pem, jwk)
}

fn assertion(pem: &str, kid: &str, client_id: &str, aud: &str, exp_in: i64, jti: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some(kid.into());
    let now = hestia::store::now_secs();
    jsonwebtoken::encode(
        &header,
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in, "jti": jti}),
        &jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn private_key_jwt_backend_services() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let (pem, jwk) = es384_key("k1");
        let reg = register(
            &env,
            json!({
                "client_name": "Backend service",
                "token_endpoint_auth_method": "private_key_jwt",
                "grant_types": ["client_credentials"],
                "scope": "system/*.rs",
                "jwks": {"keys": [jwk]},
            }),
        )
        .await;
        let id = reg["client_id"].as_str().unwrap().to_string();
        assert!(reg.get("client_secret").is_none(), "{reg}");
        let token_url = format!("{}/oauth2/token", env.url);
        let send = |a: String, scope: &'static str| {
            let env = &env;
            async move {
                post_form(
                    env,
                    "/oauth2/token",
                    &[
                        ("grant_type", "client_credentials"),
                        ("scope", scope),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", &a),
                    ],
                    None,
                )
                .await
            }
        };
        let a = assertion(&pem, "k1", &id, &token_url, 240, "jti-1");
        let ok = send(a.clone(), "system/Observation.rs").await;
        assert_eq!(ok.0, 200, "{}", ok.2);
        let (_, claims) = verify(&env, ok.2["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["client_id"], id);
        assert_eq!(claims["scope"], "system/Observation.rs");
        assert_error(
            &send(a, "system/Observation.rs").await,
            401,
            "invalid_client",
            "jti \"jti-1\" was already used (replay)",
        );
        assert_error(
            &send(
                assertion(&pem, "k1", &id, &token_url, 3600, "jti-2"),
                "system/Observation.rs",
            )
            .await,
            401,
            "invalid_client",
            "at most 300 s",
        );
        assert_error(
            &send(
                assertion(&pem, "k1", &id, &env.url, 60, "jti-3"),
                "system/Observation.rs",
            )
            .await,
            401,
            "invalid_client",
            "expected the token endpoint",
        );
        let (other_pem, _) = es384_key("k1");
        assert_error(
            &send(
                assertion(&other_pem, "k1", &id, &token_url, 60, "jti-4"),
                "system/Observation.rs",
            )
            .await,
            401,
            "invalid_client",
            "signature invalid",
        );
        assert_error(
            &send(
                assertion(&pem, "k9", &id, &token_url, 60, "jti-5"),
                "system/Observation.rs",
            )
            .await,
            401,
            "invalid_client",
            "no key k9",
        );
    }
}

/// Dynamic registration (RFC 7591) with an initial access token from the command line, and
/// its management (RFC 7592).
/// Long: one registered client's life in order: registration, the administrator's view, introspection, then RFC 7592 read, update and delete.
#[tokio::test]
async fn dynamic_registration_and_management() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let http = reqwest::Client::new();
        let register = format!("{}/oauth2/register", env.url);
        let body = json!({
            "client_name": "FHIR server on host B",
            "hestia_client_kind": "resource-server",
            "hestia_audiences": ["https://fhir-b.example/fhir/r4"],
            "grant_types": ["client_credentials"],
            "scope": "system/*.read",
        });
        let closed = http.post(&register).json(&body).send().await.unwrap();
        assert_eq!(closed.status(), 401);
        assert!(
            closed.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let closed: Value = closed.json().await.unwrap();
        assert!(
            closed["error_description"]
                .as_str()
                .unwrap()
                .contains("hestia registration-token create")
        );

        // The initial access token comes from the command line, against the same database.
        let dir = tempfile::tempdir().unwrap();
        let (ok, out, err) = hestia(
            dir.path(),
            &[
                "registration-token",
                "create",
                "--database-url",
                &env.db.url,
            ],
            "",
        );
        assert!(ok, "{err}");
        let initial = serde_json::from_str::<Value>(&out).unwrap()["initial_access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let created = http
            .post(&register)
            .bearer_auth(&initial)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let reg: Value = created.json().await.unwrap();
        let id = reg["client_id"].as_str().unwrap().to_string();
        let secret = reg["client_secret"].as_str().unwrap().to_string();
        let rat = reg["registration_access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let uri = reg["registration_client_uri"].as_str().unwrap().to_string();
        assert_eq!(uri, format!("{register}/{id}"));
        assert_eq!(reg["hestia_client_kind"], "resource-server");
        let used_up = http
            .post(&register)
            .bearer_auth(&initial)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            used_up.status(),
            401,
            "the initial token allowed one registration"
        );

        // The administrator sees it.
        let (ok, out, _) = hestia(
            dir.path(),
            &["client", "show", &id, "--database-url", &env.db.url],
            "",
        );
        assert!(ok);
        assert!(out.contains("resource-server"), "{out}");

        // The resource server introspects with its credentials; its base URL is a known audience.
        let (app, app_secret) =
            app_client(&env, false, "system/*.read", &["client_credentials"]).await;
        let t = client_credentials(
            &env,
            &app,
            &app_secret,
            &[("aud", "https://fhir-b.example/fhir/r4")],
        )
        .await;
        let seen = introspect(&env, &id, &secret, t["access_token"].as_str().unwrap()).await;
        assert_eq!(seen["active"], true);
        assert_eq!(seen["aud"], json!(["https://fhir-b.example/fhir/r4"]));

        // RFC 7592: read, update, delete.
        let read: Value = http
            .get(&uri)
            .bearer_auth(&rat)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(read["client_name"], "FHIR server on host B");
        assert!(read.get("client_secret").is_none());
        let wrong = http.get(&uri).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401);
        let mut changed = body.clone();
        changed["client_id"] = id.clone().into();
        changed["client_name"] = "FHIR server B (renamed)".into();
        changed["hestia_access_token_lifetime"] = 120.into();
        let put = http
            .put(&uri)
            .bearer_auth(&rat)
            .json(&changed)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
        let put: Value = put.json().await.unwrap();
        assert_eq!(put["client_name"], "FHIR server B (renamed)");
        assert_eq!(put["hestia_access_token_lifetime"], 120);
        let t = client_credentials(&env, &id, &secret, &[]).await;
        assert_eq!(t["expires_in"], 120, "per-client lifetime");
        let bad = http
            .post(&register)
            .bearer_auth(&initial)
            .json(&json!({"redirect_uris": ["not a uri"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            bad.status(),
            401,
            "the used-up token is checked before the metadata"
        );
        let deleted = http.delete(&uri).bearer_auth(&rat).send().await.unwrap();
        assert_eq!(deleted.status(), 204);
        assert_eq!(
            http.get(&uri)
                .bearer_auth(&rat)
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
}

#[tokio::test]
async fn open_registration_validates_metadata() {
    for db in TestDb::all().await {
        let env = start(
            db,
            FileOauth {
                open_registration: Some(true),
                ..Default::default()
            },
        )
        .await;
        let http = reqwest::Client::new();
        let register = format!("{}/oauth2/register", env.url);
        for (body, code, needle) in [
            (
                json!({"redirect_uris": ["not a uri"]}),
                "invalid_redirect_uri",
                "not a uri",
            ),
            (
                json!({"grant_types": ["authorization_code"]}),
                "invalid_redirect_uri",
                "redirect_uris is required",
            ),
            (
                json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"]}),
                "invalid_client_metadata",
                "jwks",
            ),
            (
                json!({"hestia_client_kind": "resource-server"}),
                "invalid_client_metadata",
                "hestia_audiences",
            ),
            (
                json!({"grant_types": ["implicit"]}),
                "invalid_client_metadata",
                "implicit",
            ),
        ] {
            let resp = http.post(&register).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{body}");
            let err: Value = resp.json().await.unwrap();
            assert_eq!(err["error"], code, "{err}");
            assert!(
                err["error_description"].as_str().unwrap().contains(needle),
                "{err}"
            );
        }
        let public = http
            .post(&register)
            .json(&json!({"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "none", "client_name": "SPA"}))
            .send()
            .await
            .unwrap();
        assert_eq!(public.status(), 201);
        let public: Value = public.json().await.unwrap();
        assert!(public.get("client_secret").is_none());
        assert_eq!(public["grant_types"], json!(["authorization_code"]));
    }
}

#[tokio::test]
async fn login_is_rate_limited_per_account() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "bob", None).await;
        let (id, _) = app_client(&env, false, "openid", &["authorization_code"]).await;
        let b = browser();
        let login = open_authorize(
            &env.url,
            &b,
            &[
                ("response_type", "code"),
                ("client_id", &id),
                ("scope", "openid"),
            ],
        )
        .await
        .text()
        .await
        .unwrap();
        let mut last = String::new();
        for _ in 0..6 {
            last = b
                .post(format!("{}/oauth2/login", env.url))
                .form(&[
                    ("request_id", hidden(&login, "request_id")),
                    ("csrf", hidden(&login, "csrf")),
                    ("username", "bob".into()),
                    ("password", "guess guess".into()),
                ])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
        }
        assert!(
            last.contains("Too many failed sign-ins for account"),
            "{last}"
        );
        // Even the right password waits now.
        let right = b
            .post(format!("{}/oauth2/login", env.url))
            .form(&[
                ("request_id", hidden(&login, "request_id")),
                ("csrf", hidden(&login, "csrf")),
                ("username", "bob".into()),
                ("password", PASSWORD.into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 401);
        assert!(right.text().await.unwrap().contains("Try again in"));
    }
}

/// `hestia keys rotate` without overlap in the second the previous key was made: the new
/// key signs (the two tie on their times; the one scheduled to retire is the old one).
#[tokio::test]
async fn a_key_rotated_in_its_predecessors_second_signs_at_once() {
    use hestia::oauth::keys;
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let now = 1_700_000_000;
        // The kids are random, so an unbroken tie would pick either: try several times.
        for round in 0..8 {
            keys::create(&store, "RS256", now, now).await.unwrap();
            let rotated = keys::rotate(&store, now, 0, 3600).await.unwrap();
            let new = rotated.iter().find(|r| r.alg == "RS256").unwrap();
            let signing = keys::signing_key(&store, "RS256", now).await.unwrap();
            assert_eq!(signing.kid, new.kid, "{} round {round}", db.backend);
        }
        store.close().await;
    }
}

/// The signing keys are parsed once and kept, yet a rotation without overlap signs the very
/// next token: one by `hestia keys rotate` in another process (the keys' revision moved)
/// and one by this process (the console's).
#[tokio::test]
async fn a_rotated_key_signs_the_next_token_of_a_running_server() {
    for db in TestDb::all().await {
        let env = start(
            db,
            FileOauth {
                key_rotation_overlap_secs: Some(0),
                ..Default::default()
            },
        )
        .await;
        let (cc, secret) = app_client(&env, false, "system/*.read", &["client_credentials"]).await;
        let kid_of = |token: &Value| {
            let token = token["access_token"].as_str().unwrap();
            jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
        };
        let first = kid_of(&client_credentials(&env, &cc, &secret, &[]).await);
        assert_eq!(
            first,
            kid_of(&client_credentials(&env, &cc, &secret, &[]).await)
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hestia.toml"),
            "[oauth]\nkey_rotation_overlap_secs = 0\n",
        )
        .unwrap();
        let (ok, out, err) = hestia(
            dir.path(),
            &["keys", "rotate", "--database-url", &env.db.url],
            "",
        );
        assert!(ok, "{err}");
        let rotated: Value = serde_json::from_str(&out).unwrap();
        let by_cli = rotated
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alg"] == "RS256")
            .unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_string();
        assert_ne!(by_cli, first);
        let token = client_credentials(&env, &cc, &secret, &[]).await;
        assert_eq!(
            kid_of(&token),
            by_cli,
            "the other process's key signs the next token"
        );
        verify(&env, token["access_token"].as_str().unwrap()).await;

        let rotations = env.auth.rotate_keys().await.unwrap();
        let by_console = &rotations.iter().find(|r| r.alg == "RS256").unwrap().kid;
        assert_ne!(by_console, &by_cli);
        let token = client_credentials(&env, &cc, &secret, &[]).await;
        assert_eq!(
            &kid_of(&token),
            by_console,
            "this process's key signs the next token"
        );
        verify(&env, token["access_token"].as_str().unwrap()).await;
    }
}

/// Token requests of the same moment are recorded together; still each token has its own
/// record and grant: revoking one token's grant revokes that token only.
#[tokio::test]
async fn concurrent_tokens_each_have_their_own_record_and_grant() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let (cc, secret) = app_client(&env, false, "system/*.read", &["client_credentials"]).await;
        let requests = (0..24).map(|_| client_credentials(&env, &cc, &secret, &[]));
        let tokens: Vec<String> = futures_util::future::join_all(requests)
            .await
            .iter()
            .map(|t| t["access_token"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(env.store.active_grants_of_client(&cc).await.unwrap(), 24);
        let mut grants = Vec::new();
        for token in &tokens {
            let claims = env.auth.verify_access_token(token).await.unwrap();
            let record = env.store.access_token_record(&claims.jti).await.unwrap();
            let record = record.expect("every token is recorded");
            assert_eq!(record.client_id, cc);
            assert!(!grants.contains(&record.grant_id), "a grant per token");
            grants.push(record.grant_id);
        }
        env.store
            .revoke_grant(&grants[0], env.auth.now(), "one of many")
            .await
            .unwrap();
        let err = env.auth.verify_access_token(&tokens[0]).await.unwrap_err();
        assert!(err.to_string().contains("one of many"), "{err}");
        for token in &tokens[1..] {
            env.auth.verify_access_token(token).await.unwrap();
        }
    }
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_verifiable_during_the_overlap() {
    for db in TestDb::all().await {
        let env = start(
            db,
            FileOauth {
                key_rotation_overlap_secs: Some(600),
                ..Default::default()
            },
        )
        .await;
        let (cc, secret) = app_client(&env, false, "system/*.read", &["client_credentials"]).await;
        let t1 = client_credentials(&env, &cc, &secret, &[]).await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let kid1 = jsonwebtoken::decode_header(&t1).unwrap().kid.unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hestia.toml"),
            "[oauth]\nkey_rotation_overlap_secs = 600\n",
        )
        .unwrap();
        let (ok, out, err) = hestia(
            dir.path(),
            &["keys", "rotate", "--database-url", &env.db.url],
            "",
        );
        assert!(ok, "{err}");
        let rotated: Value = serde_json::from_str(&out).unwrap();
        let new_rs = rotated
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alg"] == "RS256")
            .unwrap();
        let kid2 = new_rs["kid"].as_str().unwrap().to_string();
        assert_eq!(
            new_rs["signs_from"].as_i64().unwrap() - new_rs["published_at"].as_i64().unwrap(),
            600
        );

        let set = jwks(&env).await;
        assert_eq!(set.keys.len(), 4, "old and new keys are published");
        assert!(set.find(&kid2).is_some());
        let t2 = client_credentials(&env, &cc, &secret, &[]).await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            jsonwebtoken::decode_header(&t2).unwrap().kid.unwrap(),
            kid1,
            "the old key signs during the overlap"
        );

        env.clock.advance(601);
        let t3 = client_credentials(&env, &cc, &secret, &[]).await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            jsonwebtoken::decode_header(&t3).unwrap().kid.unwrap(),
            kid2,
            "the new key signs after the overlap"
        );
        // The token signed by the old key still verifies with the published JWKS.
        let (_, claims) = verify(&env, &t1).await;
        assert_eq!(claims["client_id"], cc);
        assert_eq!(introspect(&env, &cc, &secret, &t2).await["active"], true);

        // Once every token of the old key has expired, it is no longer published.
        env.clock.advance(3600);
        let set = jwks(&env).await;
        assert!(set.find(&kid1).is_none(), "the old key is retired");
        assert!(set.find(&kid2).is_some());
        let err = env
            .auth
            .verify_access_token(&t2)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("unknown kid {kid1}")) || err.starts_with("expired"),
            "{err}"
        );
    }
}

// ---- the audit's cases: each fails without its fix ----

/// Tokens of the code flow for `client` (a public one when `secret` is empty) and `username`.
async fn tokens_via_code(
    env: &Env,
    client: &str,
    secret: &str,
    username: &str,
    scope: &str,
) -> Value {
    let (verifier, challenge) = pkce();
    let q = code_flow(
        &env.url,
        &browser(),
        client,
        username,
        scope,
        &challenge,
        &[],
        &[],
    )
    .await;
    let got = exchange(env, client, secret, &q["code"], &verifier).await;
    assert_eq!(got.0, 200, "{}", got.2);
    got.2
}

/// Exchanges a code (public client when `secret` is empty).
async fn exchange(env: &Env, client: &str, secret: &str, code: &str, verifier: &str) -> Reply {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CALLBACK),
        ("code_verifier", verifier),
    ];
    if secret.is_empty() {
        form.push(("client_id", client));
        post_form(env, "/oauth2/token", &form, None).await
    } else {
        post_form(env, "/oauth2/token", &form, Some((client, secret))).await
    }
}

async fn refresh_with(
    env: &Env,
    client: &str,
    secret: &str,
    token: &str,
    scope: Option<&str>,
) -> Reply {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    post_form(env, "/oauth2/token", &form, Some((client, secret))).await
}

fn text(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
        .to_string()
}

#[tokio::test]
async fn a_refused_refresh_does_not_spend_the_refresh_token() {
    for db in TestDb::all().await {
        let env = start(
            db,
            FileOauth {
                refresh_grace_secs: Some(5),
                ..Default::default()
            },
        )
        .await;
        user(&env, "alice", None).await;
        let (id, secret) = app_client(
            &env,
            false,
            "openid offline_access patient/*.read",
            &["authorization_code"],
        )
        .await;
        let t = tokens_via_code(&env, &id, &secret, "alice", "offline_access patient/*.read").await;
        let r0 = text(&t, "refresh_token");
        let wider = refresh_with(&env, &id, &secret, &r0, Some("openid patient/*.read")).await;
        assert_error(
            &wider,
            400,
            "invalid_scope",
            "scope openid was not granted originally",
        );
        // Past the grace window: had the refused request spent it, this would be a reuse.
        env.clock.advance(6);
        let ok = refresh_with(&env, &id, &secret, &r0, Some("patient/*.read")).await;
        assert_eq!(ok.0, 200, "{} {}", env.backend, ok.2);
        assert_eq!(ok.2["scope"], "patient/*.read");
        // Now it is spent: past the window again, a reuse revokes the family.
        env.clock.advance(6);
        let reuse = refresh_with(&env, &id, &secret, &r0, None).await;
        assert_error(&reuse, 400, "invalid_grant", "refresh token reuse detected");
    }
}

#[tokio::test]
async fn public_clients_may_not_introspect_but_may_revoke_their_own_tokens() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "alice", None).await;
        let (rs, rs_secret) =
            app_client(&env, false, "system/*.read", &["client_credentials"]).await;
        let (public, _) = app_client(
            &env,
            true,
            "offline_access patient/*.read",
            &["authorization_code", "refresh_token"],
        )
        .await;
        let other = client_credentials(&env, &rs, &rs_secret, &[]).await;
        let own =
            tokens_via_code(&env, &public, "", "alice", "offline_access patient/*.read").await;
        for token in [text(&other, "access_token"), text(&own, "access_token")] {
            let got = post_form(
                &env,
                "/oauth2/introspect",
                &[("token", &token), ("client_id", &public)],
                None,
            )
            .await;
            assert_error(
                &got,
                401,
                "invalid_client",
                "public clients may not introspect",
            );
            assert!(got.2.get("active").is_none(), "{}", got.2);
        }
        // Revoking another client's token is refused, and it stays valid.
        let refused = post_form(
            &env,
            "/oauth2/revoke",
            &[
                ("token", &text(&other, "access_token")),
                ("client_id", &public),
            ],
            None,
        )
        .await;
        assert_error(
            &refused,
            400,
            "unauthorized_client",
            "only its client may revoke it",
        );
        assert_eq!(
            introspect(&env, &rs, &rs_secret, &text(&other, "access_token")).await["active"],
            true
        );
        // RFC 7009: a public client revokes its own refresh token with its client_id.
        let refresh = text(&own, "refresh_token");
        let (status, _, _) = post_form(
            &env,
            "/oauth2/revoke",
            &[("token", &refresh), ("client_id", &public)],
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            introspect(&env, &rs, &rs_secret, &refresh).await["active"],
            false
        );
        assert_eq!(
            introspect(&env, &rs, &rs_secret, &text(&own, "access_token")).await["active"],
            false,
            "the family's access token goes with it"
        );
    }
}

/// One sign-in attempt on the login page `login_html`; the page that answers.
async fn try_login(
    env: &Env,
    b: &reqwest::Client,
    login_html: &str,
    username: &str,
    password: &str,
) -> String {
    try_login_via(env, b, login_html, username, password, None).await
}

/// [`try_login`] with an `X-Forwarded-For` header.
async fn try_login_via(
    env: &Env,
    b: &reqwest::Client,
    login_html: &str,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> String {
    let mut req = b.post(format!("{}/oauth2/login", env.url));
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.form(&[
        ("request_id", hidden(login_html, "request_id")),
        ("csrf", hidden(login_html, "csrf")),
        ("username", username.into()),
        ("password", password.into()),
    ])
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap()
}

async fn login_page(env: &Env, b: &reqwest::Client, client: &str) -> String {
    open_authorize(
        &env.url,
        b,
        &[
            ("response_type", "code"),
            ("client_id", client),
            ("scope", "openid"),
        ],
    )
    .await
    .text()
    .await
    .unwrap()
}

#[tokio::test]
async fn login_is_rate_limited_per_address_even_in_parallel() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "bob", None).await;
        let (id, _) = app_client(&env, false, "openid", &["authorization_code"]).await;
        let b = browser();
        let login = login_page(&env, &b, &id).await;
        // X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
        for i in 0..20 {
            let xff = format!("198.51.100.{i}");
            let page =
                try_login_via(&env, &b, &login, &format!("user{i}"), "guess", Some(&xff)).await;
            assert!(page.contains("Wrong username or password"), "{i}: {page}");
        }
        let page = try_login(&env, &b, &login, "user20", "guess").await;
        assert!(
            page.contains(
                "Too many failed sign-ins from your address (127.0.0.1): 20 in the last 15 minutes"
            ),
            "{page}"
        );
        // The window passes; old attempts are deleted when the next one is recorded.
        env.clock
            .advance(hestia::oauth::authorize::LOGIN_WINDOW + 1);
        let login = login_page(&env, &b, &id).await;
        let page = try_login(&env, &b, &login, "user21", "guess").await;
        assert!(page.contains("Wrong username or password"), "{page}");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_login_attempts")
            .fetch_one(env.store.pool())
            .await
            .unwrap();
        assert_eq!(
            rows, 1,
            "{}: attempts older than the window are pruned",
            env.backend
        );

        // Parallel guesses at one account: no more than the limit get their password checked.
        let mut guesses = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let (b, login, url) = (b.clone(), login.clone(), env.url.clone());
            guesses.spawn(async move {
                b.post(format!("{url}/oauth2/login"))
                    .form(&[
                        ("request_id", hidden(&login, "request_id")),
                        ("csrf", hidden(&login, "csrf")),
                        ("username", "bob".into()),
                        ("password", "guess".into()),
                    ])
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            });
        }
        let (mut checked, mut paused) = (0, 0);
        while let Some(page) = guesses.join_next().await {
            let page = page.unwrap();
            if page.contains("Wrong username or password") {
                checked += 1;
            } else if page.contains("Too many failed sign-ins for account") {
                paused += 1;
            } else {
                panic!("{page}");
            }
        }
        assert!(
            checked <= hestia::oauth::authorize::MAX_FAILURES_PER_USER,
            "{}: {checked} parallel guesses were checked",
            env.backend
        );
        assert_eq!(checked + paused, 12);
    }
}

/// A client assertion signed with `key` (`alg`).
fn assertion_with(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    kid: &str,
    client_id: &str,
    aud: &str,
    jti: &str,
    now: i64,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 240, "jti": jti}),
        key,
    )
    .unwrap()
}

/// An RSA key for RS384 assertions: (encoding key, public JWK with `kid`).
fn rs384_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    let (_, pem, jwk) = hestia::oauth::keys::generate("RS256").unwrap();
    let mut jwk = serde_json::to_value(jwk).unwrap();
    jwk["kid"] = kid.into();
    jwk["alg"] = "RS384".into();
    (
        jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        jwk,
    )
}

async fn send_assertion(env: &Env, a: &str) -> Reply {
    post_form(
        env,
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", a),
        ],
        None,
    )
    .await
}

/// A client's own web server publishing `keys` at a `jwks_uri`: the URI, the keys it
/// serves (which the test may change) and how many times they were fetched.
async fn serve_jwks(
    keys: Value,
) -> (
    String,
    Arc<std::sync::Mutex<Value>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let served = Arc::new(std::sync::Mutex::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_uri = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get({
            let (served, fetches) = (served.clone(), fetches.clone());
            move || {
                let (served, fetches) = (served.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(served.lock().unwrap().clone())
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (jwks_uri, served, fetches)
}

/// A client's keys from its `jwks_uri`, along the clock: fetched once and cached, fetched
/// again for an unknown kid at most once per refetch interval, and after the cache time.
#[tokio::test]
async fn private_key_jwt_rs384_with_a_cached_jwks_uri() {
    use std::sync::atomic::Ordering;
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let (k1, jwk1) = rs384_key("r1");
        let (jwks_uri, served, fetches) = serve_jwks(json!({"keys": [jwk1.clone()]})).await;
        let fetched = || fetches.load(Ordering::SeqCst);
        let reg = register(
            &env,
            json!({
                "client_name": "Backend service (jwks_uri)",
                "token_endpoint_auth_method": "private_key_jwt",
                "grant_types": ["client_credentials"],
                "scope": "system/*.rs",
                "jwks_uri": jwks_uri,
            }),
        )
        .await;
        let id = text(&reg, "client_id");
        let token_url = format!("{}/oauth2/token", env.url);
        // The token endpoint's answer to an assertion signed with `key` as `kid`.
        let assert_as = |alg, key, kid: &'static str, jti: &'static str| {
            let assertion = assertion_with(alg, key, kid, &id, &token_url, jti, env.auth.now());
            let env = &env;
            async move { send_assertion(env, &assertion).await }
        };
        let rs384 = jsonwebtoken::Algorithm::RS384;

        let ok = assert_as(rs384, &k1, "r1", "a1").await;
        assert_eq!((ok.0, fetched()), (200, 1), "{}", ok.2);
        let ok = assert_as(rs384, &k1, "r1", "a2").await;
        assert_eq!((ok.0, fetched()), (200, 1), "the keys are cached: {}", ok.2);

        // The client adds a key: an unknown kid fetches again (once the rate limit allows).
        let (k2, jwk2) = rs384_key("r2");
        *served.lock().unwrap() = json!({"keys": [jwk1, jwk2]});
        env.clock
            .advance(hestia::oauth::client_auth::JWKS_URI_REFETCH_SECS + 1);
        let ok = assert_as(rs384, &k2, "r2", "a3").await;
        assert_eq!((ok.0, fetched()), (200, 2), "{}", ok.2);
        // A made-up kid right after: refused from the cached keys, without another fetch.
        let unknown = assert_as(rs384, &k2, "r9", "a4").await;
        assert_error(
            &unknown,
            401,
            "invalid_client",
            "no key r9 in the client's JWKS from",
        );
        assert_eq!(fetched(), 2, "refetches are rate-limited");
        // After the cache time, the keys are fetched again.
        env.clock
            .advance(hestia::oauth::client_auth::JWKS_URI_CACHE_SECS + 1);
        let ok = assert_as(rs384, &k1, "r1", "a5").await;
        assert_eq!((ok.0, fetched()), (200, 3), "{}", ok.2);
        // An RS256 assertion is refused (SMART Backend Services: RS384 or ES384).
        let rs256 = assert_as(jsonwebtoken::Algorithm::RS256, &k1, "r1", "a6").await;
        assert_error(&rs256, 401, "invalid_client", "alg RS256 is not accepted");
    }
}

/// Opens the code flow as a practitioner up to the consent page; returns (browser, html).
async fn practitioner_consent(
    env: &Env,
    client: &str,
    challenge: &str,
) -> (reqwest::Client, String) {
    consent_of(env, "drsmith", client, challenge).await
}

/// Opens the code flow (`launch/patient patient/*.read`) as `username` up to the consent
/// page; returns (browser, html).
async fn consent_of(
    env: &Env,
    username: &str,
    client: &str,
    challenge: &str,
) -> (reqwest::Client, String) {
    let b = browser();
    let login = open_authorize(
        &env.url,
        &b,
        &[
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", CALLBACK),
            ("scope", "launch/patient patient/*.read"),
            ("state", "st-1"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    let consent = sign_in(&env.url, &b, &login, username).await;
    (b, consent)
}

/// The ids the consent page's picker offers, in its order.
fn offered_patients(consent: &str) -> Vec<String> {
    consent
        .split("name=\"patient\" id=\"patient-")
        .skip(1)
        .filter_map(|rest| {
            let value = rest.split("value=\"").nth(1)?;
            Some(value[..value.find('"')?].to_string())
        })
        .collect()
}

/// The picker's environment: patients p-a1 (Adams) and p-a2 (Carter) of clinic A and
/// p-b1 (Baker) of clinic B; accounts drsmith (a practitioner), amy (Patient p-b1), clerk
/// (role clinic, whose policy reads clinic A's patients) and nobody (no role); and a
/// confidential app of `launch/patient patient/*.read` (its id and secret).
async fn picker_env(db: TestDb) -> (Env, String, String) {
    let env = start(db, FileOauth::default()).await;
    let patient = hestia::fhir::definitions::ResourceType::parse("Patient").unwrap();
    let unrestricted = hestia::fhir::access::Access::Unrestricted;
    for (id, family, org) in [
        ("p-a1", "Adams", "clinic-a"),
        ("p-b1", "Baker", "clinic-b"),
        ("p-a2", "Carter", "clinic-a"),
    ] {
        let resource = json!({
            "resourceType": "Patient",
            "id": id,
            "name": [{"given": ["Pat"], "family": family}],
            "managingOrganization": {"reference": format!("Organization/{org}")},
        });
        let content = resource.as_object().unwrap().clone();
        let fhir = env.state.fhir();
        fhir.update(None, patient, id, content, None, &unrestricted)
            .await
            .unwrap();
    }
    user(&env, "drsmith", Some("Practitioner/7")).await;
    user(&env, "amy", Some("Patient/p-b1")).await;
    user(&env, "clerk", Some("Practitioner/8")).await;
    user(&env, "nobody", None).await;
    for (name, roles) in [("clerk", vec!["clinic".to_string()]), ("nobody", vec![])] {
        let update = hestia::store::UserUpdate {
            roles: Some(roles),
            fhir_user: None,
        };
        env.store.update_user(name, update).await.unwrap();
    }
    let clinic_a = "name = \"clinic-a\"\ngrants = [\"Patient.rs?organization=Organization/clinic-a\", \"Observation.rs\"]";
    let bindings = hestia::store::Bindings {
        roles: vec!["clinic".into()],
        users: vec![],
    };
    env.store
        .put_policy("clinic-a.toml", clinic_a, Some(&bindings))
        .await
        .unwrap();
    let (id, secret) = app_client(
        &env,
        false,
        "launch/patient patient/*.read",
        &["authorization_code"],
    )
    .await;
    (env, id, secret)
}

/// The patients the consent page offers for `patient_search=search`.
async fn searched_patients(env: &Env, b: &reqwest::Client, consent: &str, search: &str) -> String {
    b.get(format!(
        "{}/oauth2/consent?request_id={}&patient_search={search}",
        env.url,
        hidden(consent, "request_id")
    ))
    .send()
    .await
    .unwrap()
    .text()
    .await
    .unwrap()
}

/// Unrestricted Patient read: every patient, by name.
#[tokio::test]
async fn the_patient_picker_offers_every_patient_to_an_unrestricted_reader() {
    for db in TestDb::all().await {
        let (env, id, _) = picker_env(db).await;
        let (_, challenge) = pkce();
        let (_, consent) = consent_of(&env, "drsmith", &id, &challenge).await;
        assert_eq!(
            offered_patients(&consent),
            ["p-a1", "p-b1", "p-a2"],
            "{consent}"
        );
        assert!(!consent.contains("patients-limited"), "{consent}");
    }
}

/// A patient launches with itself: no picker, and the code carries its own id whatever
/// the form says.
#[tokio::test]
async fn a_patient_launches_with_itself_whatever_the_form_says() {
    for db in TestDb::all().await {
        let (env, id, secret) = picker_env(db).await;
        let (verifier, challenge) = pkce();
        let (b, consent) = consent_of(&env, "amy", &id, &challenge).await;
        assert!(offered_patients(&consent).is_empty(), "{consent}");
        assert!(!consent.contains("id=\"patients\""), "{consent}");
        let resp = approve(&env.url, &b, &consent, &[], Some("p-a1")).await;
        assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
        let q = query_of(resp.headers()["location"].to_str().unwrap());
        let got = exchange(&env, &id, &secret, &q["code"], &verifier).await;
        assert_eq!(got.2["patient"], "p-b1", "{}", got.2);
    }
}

/// A criterion: only clinic A's patients are offered, also through a name search, and
/// accepted; another clinic's patient (or one that does not exist) is refused, no code
/// issued.
#[tokio::test]
async fn the_patient_picker_keeps_to_the_criterion_of_an_accounts_rights() {
    for db in TestDb::all().await {
        let (env, id, secret) = picker_env(db).await;
        let (verifier, challenge) = pkce();
        let (b, consent) = consent_of(&env, "clerk", &id, &challenge).await;
        assert_eq!(offered_patients(&consent), ["p-a1", "p-a2"], "{consent}");
        assert!(consent.contains("patients-limited"), "{consent}");
        let searched = searched_patients(&env, &b, &consent, "bak").await;
        assert!(offered_patients(&searched).is_empty(), "{searched}");
        let searched = searched_patients(&env, &b, &consent, "cart").await;
        assert_eq!(offered_patients(&searched), ["p-a2"], "{searched}");
        for outside in ["p-b1", "p-nobody"] {
            let refused = approve(&env.url, &b, &consent, &[], Some(outside)).await;
            assert_eq!(refused.status(), 400);
            assert!(refused.headers().get("location").is_none());
            let refused = refused.text().await.unwrap();
            assert!(
                refused.contains(&format!(
                    "Patient “{outside}” is not one of the patients your account may access"
                )),
                "{refused}"
            );
        }
        let resp = approve(&env.url, &b, &consent, &[], Some("p-a2")).await;
        assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
        let q = query_of(resp.headers()["location"].to_str().unwrap());
        let got = exchange(&env, &id, &secret, &q["code"], &verifier).await;
        assert_eq!(got.2["patient"], "p-a2", "{}", got.2);
    }
}

/// No role: no patient to choose, and any id is refused.
#[tokio::test]
async fn an_account_without_patient_rights_gets_no_patient() {
    for db in TestDb::all().await {
        let (env, id, _) = picker_env(db).await;
        let (_, challenge) = pkce();
        let (b, consent) = consent_of(&env, "nobody", &id, &challenge).await;
        assert!(offered_patients(&consent).is_empty(), "{consent}");
        assert!(consent.contains("may not access any patient"), "{consent}");
        let refused = approve(&env.url, &b, &consent, &[], Some("p-a1")).await;
        assert_eq!(refused.status(), 400);
        let refused = refused.text().await.unwrap();
        assert!(
            refused.contains("Your account may not access any patient's records here"),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn patient_picker_lists_this_servers_patients_and_refuses_unknown_ids() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "drsmith", Some("Practitioner/7")).await;
        patient(&env, "p-zeta", "Zoe", "Zeta", "1990-01-01").await;
        patient(&env, "p-adams", "Ann", "Adams", "1980-02-03").await;
        patient(&env, "p-muller", "Max", "Müller", "1970-03-04").await;
        let (id, secret) = app_client(
            &env,
            false,
            "launch/patient patient/*.read",
            &["authorization_code"],
        )
        .await;
        let (verifier, challenge) = pkce();
        let (b, consent) = practitioner_consent(&env, &id, &challenge).await;
        assert!(
            !consent.contains("type=\"text\" id=\"patient\""),
            "a list, not a text box"
        );
        let at = |needle: &str| {
            consent
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} in {consent}"))
        };
        assert!(at("value=\"p-adams\"") < at("value=\"p-muller\""));
        assert!(
            at("value=\"p-muller\"") < at("value=\"p-zeta\""),
            "sorted by name"
        );
        assert!(consent.contains("Ann Adams, born 1980-02-03"), "{consent}");
        assert!(consent.contains("type=\"radio\" name=\"patient\""));

        // A name search narrows the list (diacritics folded, as FHIR string search does).
        let searched = b
            .get(format!(
                "{}/oauth2/consent?request_id={}&patient_search=mull",
                env.url,
                hidden(&consent, "request_id")
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(searched.contains("value=\"p-muller\""), "{searched}");
        assert!(!searched.contains("value=\"p-adams\""), "{searched}");
        assert!(!searched.contains("value=\"p-zeta\""), "{searched}");

        // An id that is no Patient here is refused, with the page shown again.
        let refused = approve(&env.url, &b, &consent, &[], Some("p-nobody")).await;
        assert_eq!(refused.status(), 400);
        let refused = refused.text().await.unwrap();
        assert!(
            refused.contains("There is no patient with id “p-nobody” on this server"),
            "{refused}"
        );
        let resp = approve(&env.url, &b, &refused, &[], Some("p-adams")).await;
        assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
        let q = query_of(resp.headers()["location"].to_str().unwrap());
        let got = exchange(&env, &id, &secret, &q["code"], &verifier).await;
        assert_eq!(got.0, 200, "{}", got.2);
        assert_eq!(got.2["patient"], "p-adams");
        let (_, claims) = verify(&env, got.2["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["patient"], "p-adams");
    }
}

#[tokio::test]
async fn patient_picker_without_fhir_asks_for_an_id() {
    for db in TestDb::all().await {
        let mut file = FileConfig::default();
        file.fhir.enabled = Some(false);
        let env = start_with(db, file, None).await;
        env.store
            .create_client(NewClient {
                client_name: "The FHIR server".into(),
                kind: ClientKind::ResourceServer,
                public: false,
                redirect_uris: vec![],
                grant_types: vec![],
                scope: String::new(),
                audiences: vec!["https://fhir.example/r4".into()],
                metadata: json!({}),
            })
            .await
            .unwrap();
        user(&env, "drsmith", Some("Practitioner/7")).await;
        let (id, secret) = app_client(
            &env,
            false,
            "launch/patient patient/*.read",
            &["authorization_code"],
        )
        .await;
        let (verifier, challenge) = pkce();
        let (b, consent) = practitioner_consent(&env, &id, &challenge).await;
        assert!(
            consent.contains("type=\"text\" id=\"patient\""),
            "{consent}"
        );
        assert!(
            consent.contains("This server does not hold the patient records"),
            "{consent}"
        );
        let resp = approve(&env.url, &b, &consent, &[], Some("elsewhere-1")).await;
        assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
        let q = query_of(resp.headers()["location"].to_str().unwrap());
        let got = exchange(&env, &id, &secret, &q["code"], &verifier).await;
        assert_eq!(got.0, 200, "{}", got.2);
        assert_eq!(got.2["patient"], "elsewhere-1");
    }
}

/// Metadata of a confidential client that asks for refresh tokens.
fn short_lived() -> Value {
    json!({
        "client_name": "Short-lived",
        "redirect_uris": [CALLBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "offline_access patient/*.read",
    })
}

/// Registers [`short_lived`] with a refresh-token lifetime of 100 s and a code lifetime of
/// 5 s, under the server's; the answer, checked to be a 201 that echoes them.
async fn register_short_lived(env: &Env) -> Reply {
    let mut body = short_lived();
    body["hestia_refresh_token_lifetime"] = 100.into();
    body["hestia_code_lifetime"] = 5.into();
    let reg = register_reply(env, body).await;
    assert_eq!(reg.0, 201, "{}", reg.2);
    assert_eq!(reg.2["hestia_code_lifetime"], 5, "echoed as registered");
    reg
}

/// Per-client lifetimes above the server's are refused at registration and at an RFC 7592
/// update, naming the field and the maximum.
#[tokio::test]
async fn per_client_lifetimes_above_the_servers_are_refused() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let http = reqwest::Client::new();
        for (field, value, needle) in [
            (
                "hestia_refresh_token_lifetime",
                2_592_001,
                "hestia_refresh_token_lifetime is 2592001 s, above this server's maximum of 2592000 s",
            ),
            (
                "hestia_code_lifetime",
                61,
                "hestia_code_lifetime is 61 s, above this server's maximum of 60 s",
            ),
            (
                "hestia_access_token_lifetime",
                3601,
                "hestia_access_token_lifetime is 3601 s, above this server's maximum of 3600 s",
            ),
        ] {
            let mut body = short_lived();
            body[field] = value.into();
            assert_error(
                &register_reply(&env, body).await,
                400,
                "invalid_client_metadata",
                needle,
            );
        }
        let reg = register_short_lived(&env).await;
        // RFC 7592 update: the same rule, and nothing changes.
        let mut update = reg.2.clone();
        for field in [
            "registration_access_token",
            "client_secret",
            "client_secret_expires_at",
        ] {
            update.as_object_mut().unwrap().remove(field);
        }
        update["hestia_code_lifetime"] = 600.into();
        let put = http
            .put(text(&reg.2, "registration_client_uri"))
            .bearer_auth(text(&reg.2, "registration_access_token"))
            .json(&update)
            .send()
            .await
            .unwrap();
        let put: Reply = (
            put.status().as_u16(),
            put.headers().clone(),
            put.json().await.unwrap(),
        );
        assert_error(
            &put,
            400,
            "invalid_client_metadata",
            "hestia_code_lifetime is 600 s, above this server's maximum of 60 s",
        );
    }
}

/// Per-client lifetimes under the server's apply: the client's code and refresh-token
/// lifetimes, not the server's.
#[tokio::test]
async fn per_client_lifetimes_under_the_servers_apply() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "alice", None).await;
        let reg = register_short_lived(&env).await;
        let (id, secret) = (text(&reg.2, "client_id"), text(&reg.2, "client_secret"));
        // A code older than the client's 5 s (the server's is 60 s) is refused.
        let (verifier, challenge) = pkce();
        let q = code_flow(
            &env.url,
            &browser(),
            &id,
            "alice",
            "offline_access patient/*.read",
            &challenge,
            &[],
            &[],
        )
        .await;
        env.clock.advance(6);
        let late = exchange(&env, &id, &secret, &q["code"], &verifier).await;
        assert_error(&late, 400, "invalid_grant", "codes live 5 s");

        // The refresh token lives the client's 100 s.
        let t = tokens_via_code(&env, &id, &secret, "alice", "offline_access patient/*.read").await;
        let r0 = text(&t, "refresh_token");
        let seen = introspect(&env, &id, &secret, &r0).await;
        assert_eq!(
            seen["exp"].as_i64().unwrap() - seen["iat"].as_i64().unwrap(),
            100
        );
        env.clock.advance(101);
        assert_eq!(introspect(&env, &id, &secret, &r0).await["active"], false);
        let expired = refresh_with(&env, &id, &secret, &r0, None).await;
        assert_error(
            &expired,
            400,
            "invalid_grant",
            "the refresh token expired at",
        );
    }
}

/// `hestia client add`: lifetimes above the server's are refused in the flags' words;
/// others apply.
#[tokio::test]
async fn hestia_client_add_refuses_lifetimes_above_the_servers_and_applies_others() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let (ok, _, err) = hestia(
            dir.path(),
            &[
                "client",
                "add",
                "--name",
                "cli",
                "--grant-type",
                "client_credentials",
                "--refresh-token-lifetime",
                "9999999999",
                "--database-url",
                &env.db.url,
            ],
            "",
        );
        assert!(!ok);
        assert!(
            err.contains(
                "--refresh-token-lifetime is 9999999999 s, above this server's maximum of 2592000 s"
            ),
            "{err}"
        );
        let (ok, out, err) = hestia(
            dir.path(),
            &[
                "client",
                "add",
                "--name",
                "cli",
                "--grant-type",
                "client_credentials",
                "--scope",
                "system/*.read",
                "--access-token-lifetime",
                "120",
                "--database-url",
                &env.db.url,
            ],
            "",
        );
        assert!(ok, "{err}");
        let added: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(added["metadata"]["hestia_access_token_lifetime"], 120);
        let t = client_credentials(
            &env,
            &text(&added, "client_id"),
            &text(&added, "client_secret"),
            &[],
        )
        .await;
        assert_eq!(t["expires_in"], 120);
    }
}

#[tokio::test]
async fn introspection_and_revocation_of_refresh_token_families() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "alice", None).await;
        let (id, secret) = app_client(
            &env,
            false,
            "offline_access patient/*.read",
            &["authorization_code"],
        )
        .await;
        let (rs, rs_secret) =
            app_client(&env, false, "system/*.read", &["client_credentials"]).await;
        let active = |token: String| {
            let (env, rs, rs_secret) = (&env, rs.clone(), rs_secret.clone());
            async move { introspect(env, &rs, &rs_secret, &token).await["active"].clone() }
        };
        let scope = "offline_access patient/*.read";

        // Revoking a refresh token revokes its family: every refresh and access token of it.
        let t0 = tokens_via_code(&env, &id, &secret, "alice", scope).await;
        let t1 = refresh_with(&env, &id, &secret, &text(&t0, "refresh_token"), None)
            .await
            .2;
        let (s, _, _) = post_form(
            &env,
            "/oauth2/revoke",
            &[
                ("token", &text(&t1, "refresh_token")),
                ("token_type_hint", "refresh_token"),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_eq!(s, 200);
        for token in [&t0, &t1] {
            assert_eq!(active(text(token, "refresh_token")).await, false);
            assert_eq!(active(text(token, "access_token")).await, false);
        }
        let after = refresh_with(&env, &id, &secret, &text(&t1, "refresh_token"), None).await;
        assert_error(&after, 400, "invalid_grant", "revoked");

        // Another client may not revoke this client's tokens; they stay valid.
        let t2 = tokens_via_code(&env, &id, &secret, "alice", scope).await;
        for field in ["refresh_token", "access_token"] {
            let refused = post_form(
                &env,
                "/oauth2/revoke",
                &[("token", &text(&t2, field))],
                Some((&rs, &rs_secret)),
            )
            .await;
            assert_error(
                &refused,
                400,
                "unauthorized_client",
                &format!("issued to client {id}"),
            );
            assert_eq!(active(text(&t2, field)).await, true, "{field}");
        }

        // Spent, past the grace window: inactive (its successor is active).
        let r2 = text(&t2, "refresh_token");
        let t3 = refresh_with(&env, &id, &secret, &r2, None).await.2;
        assert_eq!(active(r2.clone()).await, true, "within the grace window");
        env.clock.advance(11);
        assert_eq!(active(r2).await, false, "spent past the grace window");
        assert_eq!(active(text(&t3, "refresh_token")).await, true);

        // Expired.
        env.clock.advance(2_592_000);
        assert_eq!(active(text(&t3, "refresh_token")).await, false);
        assert_eq!(active(text(&t3, "access_token")).await, false);
    }
}

/// Posts a consent form with these fields through `b`.
async fn post_consent(
    env: &Env,
    b: &reqwest::Client,
    fields: &[(&str, String)],
) -> reqwest::Response {
    b.post(format!("{}/oauth2/consent", env.url))
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn consent_refuses_forgery_and_other_browsers_and_reports_denials() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "alice", None).await;
        let (id, _) = app_client(
            &env,
            false,
            "openid patient/*.read",
            &["authorization_code"],
        )
        .await;
        let open = |b: reqwest::Client| {
            let (env, id) = (&env, id.clone());
            async move {
                let login = open_authorize(
                    &env.url,
                    &b,
                    &[
                        ("response_type", "code"),
                        ("client_id", &id),
                        ("redirect_uri", CALLBACK),
                        ("scope", "openid patient/*.read"),
                        ("state", "st-9"),
                    ],
                )
                .await
                .text()
                .await
                .unwrap();
                sign_in(&env.url, &b, &login, "alice").await
            }
        };
        let b = browser();
        let consent = open(b.clone()).await;
        let form = |csrf: String, decision: &str, scopes: &[&str]| {
            let mut f = vec![
                ("request_id", hidden(&consent, "request_id")),
                ("csrf", csrf),
                ("decision", decision.to_string()),
            ];
            f.extend(scopes.iter().map(|s| ("scope", s.to_string())));
            f
        };
        let all = ["openid", "patient/*.read"];

        let forged = post_consent(&env, &b, &form("forged".into(), "approve", &all)).await;
        assert_eq!(forged.status(), 400);
        assert!(
            forged
                .text()
                .await
                .unwrap()
                .contains("anti-forgery token is wrong")
        );

        // The right form from another browser (its own cookie, or none) is refused.
        let other = browser();
        let _ = open(other.clone()).await;
        for b2 in [other, browser()] {
            let resp =
                post_consent(&env, &b2, &form(hidden(&consent, "csrf"), "approve", &all)).await;
            assert_eq!(resp.status(), 400);
            assert!(
                resp.text()
                    .await
                    .unwrap()
                    .contains("was not opened in this browser"),
                "browser binding"
            );
        }

        // Deny: back to the app with access_denied and the state.
        let denied = post_consent(&env, &b, &form(hidden(&consent, "csrf"), "deny", &all)).await;
        assert_eq!(denied.status(), 303);
        let q = query_of(denied.headers()["location"].to_str().unwrap());
        assert_eq!(q["error"], "access_denied");
        assert_eq!(q["state"], "st-9");
        assert!(q["error_description"].contains("denied"), "{q:?}");

        // Approving with every scope unticked is a denial too.
        let consent2 = open(b.clone()).await;
        let none = post_consent(
            &env,
            &b,
            &[
                ("request_id", hidden(&consent2, "request_id")),
                ("csrf", hidden(&consent2, "csrf")),
                ("decision", "approve".into()),
            ],
        )
        .await;
        assert_eq!(none.status(), 303);
        let q = query_of(none.headers()["location"].to_str().unwrap());
        assert_eq!(q["error"], "access_denied");
        assert_eq!(q["state"], "st-9");
        assert!(q["error_description"].contains("approved none"), "{q:?}");
    }
}

#[tokio::test]
async fn codes_refresh_tokens_and_assertion_jtis_survive_a_restart() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "alice", None).await;
        let (id, secret) = app_client(
            &env,
            false,
            "offline_access patient/*.read",
            &["authorization_code"],
        )
        .await;
        let scope = "offline_access patient/*.read";
        let t = tokens_via_code(&env, &id, &secret, "alice", scope).await;
        let (verifier, challenge) = pkce();
        let q = code_flow(
            &env.url,
            &browser(),
            &id,
            "alice",
            scope,
            &challenge,
            &[],
            &[],
        )
        .await;
        let (pem, jwk) = es384_key("k1");
        let reg = register(
            &env,
            json!({
                "token_endpoint_auth_method": "private_key_jwt",
                "grant_types": ["client_credentials"],
                "scope": "system/*.rs",
                "jwks": {"keys": [jwk]},
            }),
        )
        .await;
        let backend = text(&reg, "client_id");
        let a = assertion(
            &pem,
            "k1",
            &backend,
            &format!("{}/oauth2/token", env.url),
            240,
            "once",
        );
        assert_eq!(send_assertion(&env, &a).await.0, 200);

        let env = restart(env).await;
        let got = exchange(&env, &id, &secret, &q["code"], &verifier).await;
        assert_eq!(
            got.0, 200,
            "{}: the code outlives the process: {}",
            env.backend, got.2
        );
        let replay = send_assertion(&env, &a).await;
        assert_error(
            &replay,
            401,
            "invalid_client",
            "jti \"once\" was already used (replay)",
        );
        let refreshed = refresh_with(&env, &id, &secret, &text(&t, "refresh_token"), None).await;
        assert_eq!(refreshed.0, 200, "{}", refreshed.2);
        assert_eq!(
            env.auth
                .verify_access_token(&text(&t, "access_token"))
                .await
                .unwrap()
                .client_id,
            id,
            "an access token of before still verifies"
        );
    }
}

/// The OpenID discovery document names exactly the fields and values this server supports.
/// Long: one table of the document's fields, each with the value it must have.
#[tokio::test]
async fn discovery_lists_exactly_what_is_supported() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let doc: Value = reqwest::get(format!("{}/.well-known/openid-configuration", env.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut fields: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "authorization_endpoint",
                "authorization_response_iss_parameter_supported",
                "claims_parameter_supported",
                "claims_supported",
                "code_challenge_methods_supported",
                "grant_types_supported",
                "id_token_signing_alg_values_supported",
                "introspection_endpoint",
                "introspection_endpoint_auth_methods_supported",
                "introspection_endpoint_auth_signing_alg_values_supported",
                "issuer",
                "jwks_uri",
                "prompt_values_supported",
                "registration_endpoint",
                "request_parameter_supported",
                "request_uri_parameter_supported",
                "response_modes_supported",
                "response_types_supported",
                "revocation_endpoint",
                "revocation_endpoint_auth_methods_supported",
                "revocation_endpoint_auth_signing_alg_values_supported",
                "scopes_supported",
                "subject_types_supported",
                "token_endpoint",
                "token_endpoint_auth_methods_supported",
                "token_endpoint_auth_signing_alg_values_supported",
                "userinfo_endpoint",
            ]
        );
        let expect = [
            (
                "grant_types_supported",
                json!(["authorization_code", "client_credentials", "refresh_token"]),
            ),
            (
                "token_endpoint_auth_methods_supported",
                json!([
                    "client_secret_basic",
                    "client_secret_post",
                    "private_key_jwt",
                    "none"
                ]),
            ),
            (
                "introspection_endpoint_auth_methods_supported",
                json!([
                    "client_secret_basic",
                    "client_secret_post",
                    "private_key_jwt"
                ]),
            ),
            (
                "revocation_endpoint_auth_methods_supported",
                json!([
                    "client_secret_basic",
                    "client_secret_post",
                    "private_key_jwt",
                    "none"
                ]),
            ),
            (
                "token_endpoint_auth_signing_alg_values_supported",
                json!(["RS384", "ES384"]),
            ),
            (
                "introspection_endpoint_auth_signing_alg_values_supported",
                json!(["RS384", "ES384"]),
            ),
            (
                "revocation_endpoint_auth_signing_alg_values_supported",
                json!(["RS384", "ES384"]),
            ),
            (
                "scopes_supported",
                json!([
                    "openid",
                    "fhirUser",
                    "launch/patient",
                    "offline_access",
                    "online_access",
                    "patient/*.read",
                    "patient/*.rs",
                    "user/*.read",
                    "user/*.rs",
                    "system/*.read",
                    "system/*.rs"
                ]),
            ),
            ("code_challenge_methods_supported", json!(["S256"])),
            ("response_types_supported", json!(["code"])),
            ("response_modes_supported", json!(["query"])),
            ("subject_types_supported", json!(["public"])),
            (
                "id_token_signing_alg_values_supported",
                json!(["RS256", "ES256"]),
            ),
            (
                "prompt_values_supported",
                json!(["none", "login", "consent"]),
            ),
            (
                "claims_supported",
                json!([
                    "iss",
                    "sub",
                    "aud",
                    "exp",
                    "iat",
                    "auth_time",
                    "nonce",
                    "fhirUser",
                    "preferred_username"
                ]),
            ),
            ("claims_parameter_supported", json!(false)),
            ("request_parameter_supported", json!(false)),
            ("request_uri_parameter_supported", json!(false)),
            (
                "authorization_response_iss_parameter_supported",
                json!(true),
            ),
        ];
        for (field, value) in expect {
            assert_eq!(doc[field], value, "{field}");
        }
    }
}

#[tokio::test]
async fn removing_a_client_revokes_what_it_was_issued() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "alice", None).await;
        let (rs, rs_secret) =
            app_client(&env, false, "system/*.read", &["client_credentials"]).await;
        let active = |token: String| {
            let (env, rs, rs_secret) = (&env, rs.clone(), rs_secret.clone());
            async move { introspect(env, &rs, &rs_secret, &token).await["active"].clone() }
        };

        // `hestia client remove`.
        let (id, secret) = app_client(
            &env,
            false,
            "offline_access patient/*.read",
            &["authorization_code"],
        )
        .await;
        let t = tokens_via_code(&env, &id, &secret, "alice", "offline_access patient/*.read").await;
        let dir = tempfile::tempdir().unwrap();
        let (ok, _, err) = hestia(
            dir.path(),
            &["client", "remove", &id, "--database-url", &env.db.url],
            "",
        );
        assert!(ok, "{err}");
        assert_eq!(active(text(&t, "access_token")).await, false);
        assert_eq!(active(text(&t, "refresh_token")).await, false);
        let err = env
            .auth
            .verify_access_token(&text(&t, "access_token"))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("its client {id} was removed")),
            "{err}"
        );
        let refresh = refresh_with(&env, &id, &secret, &text(&t, "refresh_token"), None).await;
        assert_error(&refresh, 401, "invalid_client", "unknown client");

        // RFC 7592 DELETE.
        let http = reqwest::Client::new();
        let reg = register(
            &env,
            json!({"grant_types": ["client_credentials"], "scope": "system/*.read"}),
        )
        .await;
        let (cid, csecret) = (text(&reg, "client_id"), text(&reg, "client_secret"));
        let c = client_credentials(&env, &cid, &csecret, &[]).await;
        assert_eq!(active(text(&c, "access_token")).await, true);
        let deleted = http
            .delete(text(&reg, "registration_client_uri"))
            .bearer_auth(text(&reg, "registration_access_token"))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
        assert_eq!(active(text(&c, "access_token")).await, false);
        // The other client's tokens are untouched.
        let mine = client_credentials(&env, &rs, &rs_secret, &[]).await;
        assert_eq!(active(text(&mine, "access_token")).await, true);
    }
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    for db in TestDb::all().await {
        let env = start(
            db,
            FileOauth {
                trusted_proxies: Some(vec!["127.0.0.0/8".into()]),
                ..Default::default()
            },
        )
        .await;
        let (id, _) = app_client(&env, false, "openid", &["authorization_code"]).await;
        let b = browser();
        let login = login_page(&env, &b, &id).await;
        let far = "203.0.113.5, 127.0.0.1";
        for i in 0..20 {
            let page =
                try_login_via(&env, &b, &login, &format!("user{i}"), "guess", Some(far)).await;
            assert!(page.contains("Wrong username or password"), "{i}: {page}");
        }
        let page = try_login_via(&env, &b, &login, "user20", "guess", Some(far)).await;
        assert!(
            page.contains("Too many failed sign-ins from your address (203.0.113.5): 20"),
            "{page}"
        );
        // Another client behind the same proxy is not held back.
        let page = try_login_via(&env, &b, &login, "user20", "guess", Some("203.0.113.6")).await;
        assert!(page.contains("Wrong username or password"), "{page}");
    }
}

// ---- equal answers and equal work; nothing written before a request is valid ----

/// The value of `hestia_password_checks_total` on the server's `/metrics` (0 before any).
async fn password_checks(http: &reqwest::Client, url: &str) -> f64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("hestia_password_checks_total "))
        .map_or(0.0, |n| n.trim().parse().unwrap())
}

/// A wrong password for an unknown account costs one argon2id verification, as one for a
/// known account does, and gets the same page.
#[tokio::test]
async fn unknown_users_cost_a_password_check_like_known_ones() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(dir.path(), &["--demo", "--database-url", db.url.as_str()]);
        let client_id = demo_value(&server.stdout_lines, "client_id ");
        let b = browser_trusting(&server.data_dir.join("tls").join("ca.pem"));
        let login = open_authorize(
            &server.url,
            &b,
            &[
                ("response_type", "code"),
                ("client_id", &client_id),
                ("scope", "openid"),
            ],
        )
        .await
        .text()
        .await
        .unwrap();
        let try_as = |username: &'static str| {
            let (b, url, login) = (b.clone(), server.url.clone(), login.clone());
            async move {
                let page = b
                    .post(format!("{url}/oauth2/login"))
                    .form(&[
                        ("request_id", hidden(&login, "request_id")),
                        ("csrf", hidden(&login, "csrf")),
                        ("username", username.into()),
                        ("password", "not the password".into()),
                    ])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(page.status(), 401);
                let typed = format!("value=\"{username}\"");
                page.text().await.unwrap().replace(&typed, "value=\"NAME\"")
            }
        };
        let before = password_checks(&b, &server.url).await;
        let unknown = try_as("nobody-here").await;
        assert_eq!(
            password_checks(&b, &server.url).await,
            before + 1.0,
            "{}: an unknown user's password is checked (against the dummy hash)",
            db.backend
        );
        let known = try_as("demo").await;
        assert_eq!(password_checks(&b, &server.url).await, before + 2.0);
        assert!(unknown.contains("Wrong username or password"), "{unknown}");
        assert_eq!(unknown, known, "{}: the same page for both", db.backend);
        assert!(server.terminate().success());
    }
}

/// Every table's row count.
async fn row_counts(env: &Env) -> std::collections::BTreeMap<String, i64> {
    let tables_sql = if env.backend == "postgres" {
        "SELECT CAST(tablename AS TEXT) AS name FROM pg_tables WHERE schemaname = current_schema()"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    };
    let tables: Vec<String> = sqlx::query_scalar(tables_sql)
        .fetch_all(env.store.pool())
        .await
        .unwrap();
    assert!(tables.len() > 10, "{tables:?}");
    let mut counts = std::collections::BTreeMap::new();
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(env.store.pool())
            .await
            .unwrap();
        counts.insert(table, n);
    }
    counts
}

/// Unauthenticated authorization requests, valid or not, and sign-in forms that are not
/// this server's write nothing; the first write is the one of a successful sign-in.
#[tokio::test]
async fn authorize_writes_nothing_before_a_sign_in() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "bob", None).await;
        let (confidential, _) = app_client(&env, false, "openid", &["authorization_code"]).await;
        let (public, _) = app_client(&env, true, "openid", &["authorization_code"]).await;
        let b = browser();
        // A first page, so that the browser has its cookie and the keys their rows.
        let login = login_page(&env, &b, &confidential).await;
        let before = row_counts(&env).await;
        let (_, challenge) = pkce();
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![("response_type", "code"), ("client_id", "no-such-client")],
            vec![
                ("response_type", "code"),
                ("client_id", &confidential),
                ("redirect_uri", "https://elsewhere.example/cb"),
            ],
            vec![("response_type", "token"), ("client_id", &confidential)],
            vec![("response_type", "code"), ("client_id", &public)],
            vec![
                ("response_type", "code"),
                ("client_id", &confidential),
                ("scope", "openid not-a-scope"),
            ],
            vec![
                ("response_type", "code"),
                ("client_id", &public),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
            vec![
                ("response_type", "code"),
                ("client_id", &confidential),
                ("scope", "openid"),
            ],
        ];
        for _ in 0..5 {
            for params in &cases {
                let resp = open_authorize(&env.url, &b, params).await;
                assert!(
                    [200, 303, 400].contains(&resp.status().as_u16()),
                    "{params:?}: {}",
                    resp.status()
                );
            }
            // Sign-in forms this server did not make, or made for another form.
            for (request_id, csrf) in [
                ("forged".to_string(), hidden(&login, "csrf")),
                (hidden(&login, "request_id"), "forged".to_string()),
            ] {
                let resp = b
                    .post(format!("{}/oauth2/login", env.url))
                    .form(&[
                        ("request_id", request_id),
                        ("csrf", csrf),
                        ("username", "bob".into()),
                        ("password", PASSWORD.into()),
                    ])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 400);
            }
        }
        assert_eq!(
            row_counts(&env).await,
            before,
            "{}: no row written or deleted",
            env.backend
        );
        // The first write is the signed-in request.
        sign_in(&env.url, &b, &login, "bob").await;
        let after = row_counts(&env).await;
        assert_eq!(
            after["oauth_auth_requests"],
            before["oauth_auth_requests"] + 1,
            "{}",
            env.backend
        );
    }
}

/// A refused code exchange leaves the code as it was, and a refused registration the
/// initial access token's uses.
#[tokio::test]
async fn refused_token_and_registration_requests_spend_nothing() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "bob", None).await;
        let (client, _) = app_client(&env, true, "openid", &["authorization_code"]).await;
        let (verifier, challenge) = pkce();
        let q = code_flow(
            &env.url,
            &browser(),
            &client,
            "bob",
            "openid",
            &challenge,
            &[],
            &[],
        )
        .await;
        let (wrong_verifier, _) = pkce();
        let refused = exchange(&env, &client, "", &q["code"], &wrong_verifier).await;
        assert_error(&refused, 400, "invalid_grant", "code_verifier");
        let (other, _) = app_client(&env, true, "openid", &["authorization_code"]).await;
        let refused = exchange(&env, &other, "", &q["code"], &verifier).await;
        assert_error(&refused, 400, "invalid_grant", "another client");
        let got = exchange(&env, &client, "", &q["code"], &verifier).await;
        assert_eq!(got.0, 200, "{}: {}", env.backend, got.2);

        let initial = env.auth.create_registration_token(600, 1).await.unwrap();
        let http = reqwest::Client::new();
        let register = |body: Value| {
            http.post(format!("{}/oauth2/register", env.url))
                .bearer_auth(&initial)
                .json(&body)
                .send()
        };
        let refused = register(json!({"redirect_uris": ["not a uri"]}))
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        let done = register(json!({"redirect_uris": [CALLBACK], "client_name": "App"}))
            .await
            .unwrap();
        assert_eq!(
            done.status(),
            201,
            "{}: {}",
            env.backend,
            done.text().await.unwrap()
        );
    }
}

/// The scopes the narrowing tests ask for.
const NARROWED_ASK: &str = "openid offline_access user/*.read";

/// Accounts pat (Patient pat-1) and nobody (no role), and a confidential app of
/// `openid fhirUser offline_access user/*.read` with refresh tokens (its id and secret).
async fn narrowing_env(db: TestDb) -> (Env, String, String) {
    let env = start(db, FileOauth::default()).await;
    user(&env, "pat", Some("Patient/pat-1")).await;
    env.store
        .create_user(NewUser {
            username: "nobody".into(),
            password: PASSWORD.into(),
            fhir_user: None,
        })
        .await
        .unwrap();
    let (id, secret) = app_client(
        &env,
        false,
        "openid fhirUser offline_access user/*.read",
        &["authorization_code", "refresh_token"],
    )
    .await;
    (env, id, secret)
}

/// The token response to a code flow of `username` asking for [`NARROWED_ASK`].
async fn narrowed_token(env: &Env, id: &str, secret: &str, username: &str) -> Reply {
    let (verifier, challenge) = pkce();
    let q = code_flow(
        &env.url,
        &browser(),
        id,
        username,
        NARROWED_ASK,
        &challenge,
        &[("aud", &env.fhir)],
        &[],
    )
    .await;
    exchange(env, id, secret, &q["code"], &verifier).await
}

/// A token of an account holds what its rights leave of the requested scopes: a patient's
/// `user/*.read` becomes `patient/*.read` with the patient as launch context (in the token
/// response, the token and introspection), and stays so through a refresh.
#[tokio::test]
async fn a_patients_user_scopes_become_patient_scopes_of_itself() {
    for db in TestDb::all().await {
        let (env, id, secret) = narrowing_env(db).await;
        let got = narrowed_token(&env, &id, &secret, "pat").await;
        assert_eq!(got.0, 200, "{}", got.2);
        let t = got.2;
        assert_eq!(t["scope"], "openid offline_access patient/*.read", "{t}");
        assert_eq!(t["patient"], "pat-1", "{t}");
        let access = t["access_token"].as_str().unwrap();
        let (_, claims) = verify(&env, access).await;
        assert_eq!(claims["patient"], "pat-1");
        assert_eq!(
            introspect(&env, &id, &secret, access).await["scope"],
            t["scope"]
        );
        let refreshed = post_form(
            &env,
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_eq!(refreshed.0, 200, "{}", refreshed.2);
        assert_eq!(refreshed.2["scope"], "openid offline_access patient/*.read");
        assert_eq!(refreshed.2["patient"], "pat-1");
    }
}

/// An account with no role gets the identity scopes only, and the consent page says so
/// before the account approves.
#[tokio::test]
async fn an_account_without_a_role_gets_the_identity_scopes_only() {
    for db in TestDb::all().await {
        let (env, id, secret) = narrowing_env(db).await;
        let b = browser();
        let (_, challenge) = pkce();
        let params = [
            ("response_type", "code"),
            ("client_id", id.as_str()),
            ("redirect_uri", CALLBACK),
            ("scope", NARROWED_ASK),
            ("state", "st"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let login = open_authorize(&env.url, &b, &params)
            .await
            .text()
            .await
            .unwrap();
        let consent = sign_in(&env.url, &b, &login, "nobody").await;
        assert!(
            consent.contains("Your account has no access to health records here (roles: none)"),
            "{consent}"
        );
        let got = narrowed_token(&env, &id, &secret, "nobody").await;
        assert_eq!(got.0, 200, "{}", got.2);
        assert_eq!(got.2["scope"], "openid offline_access", "{}", got.2);
        assert!(got.2["patient"].is_null(), "{}", got.2);
    }
}

/// The token endpoint keeps clients (and the registered resource servers) in memory as of
/// the clients' revision: what another process changes (here a second connection to the
/// database, as the CLI or another server would be) applies to the requests that begin
/// after it, a secret rotation and a removal included.
#[tokio::test]
async fn token_endpoint_follows_client_changes_made_by_another_process() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        let b = env.backend;
        let other = Store::connect(&env.db.url).await.unwrap();
        let (id, secret) = app_client(&env, false, "system/*.rs", &["client_credentials"]).await;
        let token = |secret: String, aud: &'static str| {
            let (env, id) = (&env, id.clone());
            async move {
                let form = [
                    ("grant_type", "client_credentials"),
                    ("scope", "system/Patient.rs"),
                    (
                        "aud",
                        if aud.is_empty() {
                            env.fhir.as_str()
                        } else {
                            aud
                        },
                    ),
                ];
                post_form(env, "/oauth2/token", &form, Some((&id, &secret))).await
            }
        };
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(20));
        assert_eq!(token(secret.clone(), "").await.0, 200, "{b}");

        // A resource server registered elsewhere becomes a valid audience.
        let elsewhere = "https://elsewhere.example/fhir";
        let refused = token(secret.clone(), elsewhere).await;
        assert_ne!(refused.0, 200, "{b}: {}", refused.2);
        other
            .create_client(NewClient {
                client_name: "Elsewhere".into(),
                kind: ClientKind::ResourceServer,
                public: false,
                redirect_uris: vec![],
                grant_types: vec![],
                scope: String::new(),
                audiences: vec![elsewhere.into()],
                metadata: json!({}),
            })
            .await
            .unwrap();
        pause().await;
        let got = token(secret.clone(), elsewhere).await;
        assert_eq!(got.0, 200, "{b}: {}", got.2);

        // A secret rotated elsewhere: the old one is refused, the new one accepted.
        other
            .set_client_secret(&id, &hestia::store::hash_secret("rotated"), 0)
            .await
            .unwrap();
        pause().await;
        assert_error(
            &token(secret, "").await,
            401,
            "invalid_client",
            "wrong client secret",
        );
        assert_eq!(token("rotated".into(), "").await.0, 200, "{b}");

        // A client removed elsewhere is unknown at once.
        other.remove_client(&id).await.unwrap();
        pause().await;
        assert_error(
            &token("rotated".into(), "").await,
            401,
            "invalid_client",
            "unknown client",
        );
        other.close().await;
    }
}
