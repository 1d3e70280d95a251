//! The authorization server over HTTP, on SQLite and PostgreSQL: discovery, the login and
//! consent pages, every grant, PKCE, audiences, private_key_jwt, refresh rotation and
//! reuse detection, registration (RFC 7591/7592), introspection, revocation, key rotation,
//! and the error of every failure case.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use hestia::config::{FileConfig, FileOauth, RawConfig, ServeFlags, StoreFlags};
use hestia::http::AppState;
use hestia::oauth::{AuthServer, Clock};
use hestia::store::{ClientKind, NewClient, NewUser, Store};
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

use crate::support::{
    CALLBACK, PASSWORD, TestDb, approve, browser, code_flow, hestia, hidden, open_authorize, pkce,
    query_of, sign_in,
};

/// Status, headers and JSON body of a response.
type Reply = (u16, reqwest::header::HeaderMap, Value);

struct Env {
    url: String,
    fhir: String,
    auth: Arc<AuthServer>,
    clock: Arc<Clock>,
    store: Store,
    db: TestDb,
    backend: &'static str,
}

async fn start(db: TestDb, oauth: FileOauth) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let raw = RawConfig {
        flags: ServeFlags {
            store: StoreFlags {
                database_url: Some(db.url.clone()),
                ..Default::default()
            },
            public_url: Some(format!("http://127.0.0.1:{port}")),
            insecure_http: Some(true),
            ..Default::default()
        },
        file: FileConfig {
            oauth,
            ..Default::default()
        },
        file_path: None,
    };
    let settings = raw.resolve().unwrap();
    let store = Store::open(&db.url).await.unwrap();
    let clock = Clock::system();
    let plugins = crate::support::default_plugins();
    let auth = Arc::new(
        AuthServer::new(store.clone(), &settings)
            .with_clock(clock.clone())
            .with_policy(Arc::new(hestia::policy::PluginTokenPolicy(plugins.clone()))),
    );
    auth.ensure_keys().await.unwrap();
    let state = AppState::new(settings.clone(), store.clone(), plugins, auth.clone());
    state.set_ready();
    let app = hestia::http::app(state);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Env {
        url: settings.public_url.clone(),
        fhir: settings.fhir_base_url(),
        auth,
        clock,
        store,
        backend: db.backend,
        db,
    }
}

async fn user(env: &Env, name: &str, fhir_user: Option<&str>) {
    env.store
        .create_user(NewUser {
            username: name.into(),
            password: PASSWORD.into(),
            fhir_user: fhir_user.map(str::to_string),
        })
        .await
        .unwrap();
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
        let consent = sign_in(&env.url, &b, &login, "drsmith").await;
        assert!(
            consent.contains("name=\"patient\""),
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

#[tokio::test]
async fn token_endpoint_errors_name_their_cause() {
    for db in TestDb::all().await {
        let env = start(db, FileOauth::default()).await;
        user(&env, "alice", Some("Patient/1")).await;
        let (id, secret) = app_client(
            &env,
            false,
            "openid patient/*.read",
            &["authorization_code"],
        )
        .await;
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

        // An expired code, and a redirect_uri that differs from the authorization request's.
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
        let initial = env.auth.create_registration_token(600, 1).await.unwrap();
        let reg: Value = reqwest::Client::new()
            .post(format!("{}/oauth2/register", env.url))
            .bearer_auth(&initial)
            .json(&json!({
                "client_name": "Backend service",
                "token_endpoint_auth_method": "private_key_jwt",
                "grant_types": ["client_credentials"],
                "scope": "system/*.rs",
                "jwks": {"keys": [jwk]},
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
