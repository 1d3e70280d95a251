//! The two-host deployment: an authorization server only (`--no-fhir`) and a FHIR server
//! only (`--issuer`), real processes on loopback, the issuer over HTTPS with its
//! development CA. The FHIR server registers itself (RFC 7591) with an initial access
//! token, keeps its registration current (RFC 7592) across restarts, verifies JWTs
//! against the issuer's JWKS (refetched on an unknown kid) and checks opaque tokens (and,
//! with `introspect = "always"`, every token) through introspection. Start-up failures
//! toward the issuer are explained, and a stop during them ends the start at once. The
//! reference journey (code + PKCE through the login and consent pages, SMART v1 and v2
//! scopes, refresh) runs across the two hosts, with `token explain` and the Basic
//! compatibility mode on the FHIR host. In-process, with a clock the test moves: the JWKS
//! refetch rate limit and the introspection cache.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    CALLBACK, PASSWORD, Server, TestDb, browser_trusting, client_trusting, code_flow, hestia,
    hestia_bin, hestia_toml, pkce, raw_app_on, resolve, test_flags,
};

/// An authorization server only, HTTPS with its development certificate; new signing keys
/// sign at once after `hestia keys rotate`.
fn start_issuer(dir: &Path, args: &[&str]) -> Server {
    std::fs::write(
        dir.join("hestia.toml"),
        "[oauth]\nkey_rotation_overlap_secs = 0\n",
    )
    .unwrap();
    let mut all = vec!["--no-fhir"];
    all.extend_from_slice(args);
    Server::start(dir, &all)
}

fn registration_token(issuer_dir: &Path) -> String {
    let (ok, out, err) = hestia(issuer_dir, &["registration-token", "create"], "");
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["initial_access_token"].as_str().unwrap().to_string()
}

fn clients(issuer_dir: &Path) -> Vec<Value> {
    let (ok, out, err) = hestia(issuer_dir, &["client", "list"], "");
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Runs `hestia serve ARGS` that must fail at start-up; its standard error.
fn serve_fails(dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(hestia_bin())
        .current_dir(dir)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--insecure-http"])
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hestia serve {args:?} did not stop; it should have failed at start-up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "hestia serve {args:?} should fail; stderr: {stderr}"
    );
    stderr
}

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn token(
    http: &reqwest::Client,
    endpoint: &str,
    client: &(String, String),
    aud: &str,
) -> String {
    let answer: Value = http
        .post(endpoint)
        .basic_auth(&client.0, Some(&client.1))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read system/*.write"),
            ("aud", aud),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {answer}"))
        .to_string()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// 401 with `WWW-Authenticate` and an OperationOutcome naming the cause; the description.
async fn refused(http: &reqwest::Client, url: &str, bearer: &str) -> String {
    let r = http.get(url).bearer_auth(bearer).send().await.unwrap();
    assert_eq!(r.status(), 401, "{url}");
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let outcome: Value = r.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let text = outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    text
}

/// An issuer and a FHIR server that trusts it: registration, discovery, tokens for the
/// right and the wrong audience, key rotation, introspection and a restart that reuses the
/// registration.
/// Long: one run against the same issuer and FHIR host; the steps share the registration, keys and tokens, and the last restarts the FHIR host to reuse the registration.
async fn two_hosts(db: TestDb) {
    let issuer_dir = tempfile::tempdir().unwrap();
    let issuer = start_issuer(issuer_dir.path(), &[]);
    let ca = issuer.data_dir.join("tls").join("ca.pem");
    let http = client_trusting(&ca);
    let meta: Value = get_json(
        &http,
        &format!("{}/.well-known/openid-configuration", issuer.url),
    )
    .await
    .1;
    let token_endpoint = meta["token_endpoint"].as_str().unwrap().to_string();
    let (status, _) = get_json(&http, &format!("{}/fhir/r4/metadata", issuer.url)).await;
    assert_eq!(status, 404, "the authorization server alone serves no FHIR");

    // The FHIR server registers itself at the issuer with an initial access token.
    let initial = registration_token(issuer_dir.path());
    let fhir_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        fhir_dir.path().join("hestia.toml"),
        "[issuer]\njwks_refetch_secs = 0\n",
    )
    .unwrap();
    let ca_arg = ca.display().to_string();
    let args = [
        "--insecure-http",
        "--issuer",
        issuer.url.as_str(),
        "--issuer-ca",
        ca_arg.as_str(),
        "--registration-token",
        initial.as_str(),
        "--database-url",
        db.url.as_str(),
    ];
    let mut fhir = Server::start(fhir_dir.path(), &args);
    let announced = fhir.stdout_lines.join("\n");
    assert!(
        announced.contains("(client ") && announced.contains("registered"),
        "{announced}"
    );
    let base = format!("{}/fhir/r4", fhir.url);
    let registered: Vec<Value> = clients(issuer_dir.path())
        .into_iter()
        .filter(|c| c["kind"] == "resource-server")
        .collect();
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0]["audiences"], json!([base]));
    let fhir_client_id = registered[0]["client_id"].clone();

    // The FHIR server has no authorization-server endpoints; its discovery names the issuer's.
    let plain = reqwest::Client::new();
    let (status, _) = get_json(
        &plain,
        &format!("{}/.well-known/openid-configuration", fhir.url),
    )
    .await;
    assert_eq!(status, 404);
    let (status, smart) =
        get_json(&plain, &format!("{base}/.well-known/smart-configuration")).await;
    assert_eq!(status, 200);
    assert_eq!(smart["issuer"], issuer.url.as_str());
    assert_eq!(smart["token_endpoint"], token_endpoint.as_str());
    assert_eq!(smart["jwks_uri"], meta["jwks_uri"]);
    let (_, statement) = get_json(&plain, &format!("{base}/metadata")).await;
    let uris = &statement["rest"][0]["security"]["extension"][0]["extension"];
    assert!(
        uris.as_array()
            .unwrap()
            .iter()
            .any(|u| u["url"] == "token" && u["valueUri"] == token_endpoint.as_str()),
        "{uris}"
    );

    // The reference journey: a client of the issuer, a token for the FHIR server.
    let (ok, out, err) = hestia(
        issuer_dir.path(),
        &[
            "client",
            "add",
            "--name",
            "app",
            "--grant-type",
            "client_credentials",
            "--scope",
            "system/*.read system/*.write",
        ],
        "",
    );
    assert!(ok, "{err}");
    let app: Value = serde_json::from_str(&out).unwrap();
    let app = (
        app["client_id"].as_str().unwrap().to_string(),
        app["client_secret"].as_str().unwrap().to_string(),
    );
    let access = token(&http, &token_endpoint, &app, &base).await;
    let created = plain
        .post(format!("{base}/Patient"))
        .bearer_auth(&access)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "name": [{"family": "Remote"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let bundle: Value = plain
        .get(format!("{base}/Patient"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        bundle["entry"][0]["resource"]["name"][0]["family"], "Remote",
        "{bundle}"
    );
    let by_query = plain
        .get(format!("{base}/Patient?access_token={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);

    // A token for another resource server of the same issuer: 401 naming both audiences.
    let other_initial = registration_token(issuer_dir.path());
    let other = http
        .post(meta["registration_endpoint"].as_str().unwrap())
        .bearer_auth(&other_initial)
        .json(&json!({"hestia_client_kind": "resource-server", "hestia_audiences": ["https://other.example/fhir"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201);
    let elsewhere = token(&http, &token_endpoint, &app, "https://other.example/fhir").await;
    let why = refused(&plain, &format!("{base}/Patient"), &elsewhere).await;
    assert!(
        why.contains("audience [https://other.example/fhir] does not include")
            && why.contains(&base),
        "{why}"
    );

    // A token signed by a key the issuer never published.
    let (kid, pem, _) = hestia::oauth::keys::generate("ES256").unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.clone());
    header.typ = Some("at+jwt".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let forged = jsonwebtoken::encode(
        &header,
        &json!({"iss": issuer.url, "sub": "x", "aud": base, "client_id": "x", "scope": "system/*.read", "exp": now + 300, "iat": now, "jti": "forged"}),
        &jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let why = refused(&plain, &format!("{base}/Patient"), &forged).await;
    assert!(
        why.contains(&format!("unknown kid {kid} at issuer {}", issuer.url)),
        "{why}"
    );

    // Key rotation at the issuer: a token signed by the new key is accepted (JWKS refetched).
    let (ok, _, err) = hestia(issuer_dir.path(), &["keys", "rotate"], "");
    assert!(ok, "{err}");
    let rotated = token(&http, &token_endpoint, &app, &base).await;
    assert_ne!(
        kid_of(&rotated),
        kid_of(&access),
        "the issuer signs with its new key"
    );
    let r = plain
        .get(format!("{base}/Patient"))
        .bearer_auth(&rotated)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // An opaque token goes to the issuer's introspection endpoint, with this server's
    // registered credentials (a wrong credential would be an error, not "not active").
    let why = refused(
        &plain,
        &format!("{base}/Patient"),
        "an-opaque-token-the-issuer-never-issued",
    )
    .await;
    assert!(
        why.contains(&format!("not active at issuer {}", issuer.url)),
        "{why}"
    );
    // Without introspection, a revoked JWT is still accepted until it expires.
    let revoked = token(&http, &token_endpoint, &app, &base).await;
    let r = http
        .post(meta["revocation_endpoint"].as_str().unwrap())
        .basic_auth(&app.0, Some(&app.1))
        .form(&[("token", revoked.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = plain
        .get(format!("{base}/Patient"))
        .bearer_auth(&revoked)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "introspect = opaque-only: the JWT's signature is enough"
    );

    // Restart with `introspect = "always"`: the stored registration is reused and, since the
    // FHIR base changed (a new port), updated through RFC 7592 — no second registration.
    assert!(fhir.terminate().success());
    std::fs::write(
        fhir_dir.path().join("hestia.toml"),
        "[issuer]\njwks_refetch_secs = 0\nintrospect = \"always\"\n",
    )
    .unwrap();
    let fhir = Server::start(fhir_dir.path(), &args);
    let announced = fhir.stdout_lines.join("\n");
    assert!(announced.contains("updated"), "{announced}");
    let base = format!("{}/fhir/r4", fhir.url);
    let registered: Vec<Value> = clients(issuer_dir.path())
        .into_iter()
        .filter(|c| {
            c["kind"] == "resource-server"
                && c["audiences"] != json!(["https://other.example/fhir"])
        })
        .collect();
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0]["client_id"], fhir_client_id);
    assert_eq!(registered[0]["audiences"], json!([base]));
    let fresh = token(&http, &token_endpoint, &app, &base).await;
    let r = plain
        .get(format!("{base}/Patient"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked = token(&http, &token_endpoint, &app, &base).await;
    let r = http
        .post(meta["revocation_endpoint"].as_str().unwrap())
        .basic_auth(&app.0, Some(&app.1))
        .form(&[("token", revoked.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let why = refused(&plain, &format!("{base}/Patient"), &revoked).await;
    assert!(
        why.contains(&format!("not active at issuer {}", issuer.url)),
        "{why}"
    );
}

#[tokio::test]
async fn two_hosts_fhir_on_sqlite() {
    two_hosts(TestDb::sqlite()).await;
}

#[tokio::test]
async fn two_hosts_fhir_on_postgres() {
    two_hosts(TestDb::postgres().await).await;
}

#[tokio::test]
async fn start_up_failures_toward_the_issuer_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // An issuer whose certificate names another host.
    let (ok, out, err) = hestia(
        dir.path(),
        &[
            "dev-cert",
            "--hostname",
            "wrong.example",
            "--out",
            "wrong-tls",
        ],
        "",
    );
    assert!(ok, "{out}{err}");
    let wrong = dir.path().join("wrong-tls");
    let cert = wrong.join("cert.pem").display().to_string();
    let key = wrong.join("key.pem").display().to_string();
    let issuer_dir = tempfile::tempdir().unwrap();
    let issuer = start_issuer(issuer_dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    let fhir = tempfile::tempdir().unwrap();

    let err = serve_fails(fhir.path(), &["--issuer", &issuer.url]);
    assert!(
        err.contains("unknown CA") && err.contains("--issuer-ca FILE"),
        "{err}"
    );

    let ca = wrong.join("ca.pem").display().to_string();
    let err = serve_fails(fhir.path(), &["--issuer", &issuer.url, "--issuer-ca", &ca]);
    assert!(
        err.contains("not valid for the host name localhost")
            && err.contains("(the certificate's names: wrong.example)")
            && err.contains("hestia dev-cert --hostname localhost"),
        "{err}"
    );

    let err = serve_fails(fhir.path(), &["--issuer", "https://no-such-host.invalid"]);
    assert!(
        err.contains("the host name no-such-host.invalid does not resolve"),
        "{err}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = serve_fails(
        fhir.path(),
        &["--issuer", &format!("http://127.0.0.1:{port}")],
    );
    assert!(err.contains(&format!("port {port} was refused")), "{err}");

    // A reachable issuer that wants an initial access token: its RFC 6749 error is shown.
    let good_dir = tempfile::tempdir().unwrap();
    let good = start_issuer(good_dir.path(), &[]);
    let good_ca = good
        .data_dir
        .join("tls")
        .join("ca.pem")
        .display()
        .to_string();
    let err = serve_fails(
        fhir.path(),
        &["--issuer", &good.url, "--issuer-ca", &good_ca],
    );
    assert!(
        err.contains("refused the registration")
            && err.contains("\"error\":\"invalid_token\"")
            && err.contains("--registration-token"),
        "{err}"
    );
    let err = serve_fails(
        fhir.path(),
        &[
            "--issuer",
            &good.url,
            "--issuer-ca",
            &good_ca,
            "--registration-token",
            "made-up",
        ],
    );
    assert!(err.contains("unknown, expired or used up"), "{err}");
    // The issuer URL must be the issuer's own (its metadata names it).
    let alias = good.url.replace("localhost", "127.0.0.1");
    let err = serve_fails(fhir.path(), &["--issuer", &alias, "--issuer-ca", &good_ca]);
    assert!(err.contains(&format!("use --issuer {}", good.url)), "{err}");
}

/// Signs access-token claims with `key` and records the token at the issuer (as its
/// token endpoint does), so that revocation and introspection know it.
async fn issue_with(
    auth: &hestia::oauth::AuthServer,
    key: &hestia::store::KeyRow,
    jti: &str,
) -> String {
    let now = auth.now();
    let claims = json!({
        "iss": auth.issuer(), "sub": "app", "aud": "http://fhir.test/fhir/r4", "client_id": "app",
        "scope": "system/*.read", "exp": now + 600, "iat": now, "nbf": now, "jti": jti,
    });
    auth.store()
        .record_access_token(jti, "grant", "app", now + 600)
        .await
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Co-located mode keeps the published keys in memory: a key added by another process
/// (`hestia keys rotate`) is read at its first token, a retirement scheduled elsewhere is
/// seen within the cache's age, and revocation is still checked on every request.
#[tokio::test]
async fn local_key_cache_sees_new_keys_retirements_and_revocations() {
    use hestia::oauth::{AuthServer, Clock, LOCAL_JWKS_MAX_AGE_SECS, TokenError, keys};
    for db in TestDb::all().await {
        let (_, state) = raw_app_on(&db, "").await;
        let clock = Clock::system();
        let auth =
            AuthServer::new(state.store().clone(), state.settings()).with_clock(clock.clone());
        auth.ensure_keys().await.unwrap();
        let store = auth.store().clone();
        let now = auth.now();
        let first = keys::create(&store, "RS256", now, now).await.unwrap();
        let one = issue_with(&auth, &first, "one").await;
        assert_eq!(auth.verify_access_token(&one).await.unwrap().jti, "one");

        // Another process publishes a key: its first token makes the cache read again.
        let second = keys::create(&store, "RS256", now, now).await.unwrap();
        let two = issue_with(&auth, &second, "two").await;
        assert_eq!(
            auth.verify_access_token(&two).await.unwrap().jti,
            "two",
            "{}",
            db.backend
        );

        // Revocation is per request, whatever the cache holds.
        store.revoke_access_token("one", now).await.unwrap();
        let err = auth.verify_access_token(&one).await.unwrap_err();
        assert!(matches!(err, TokenError::Revoked { .. }), "{err}");

        // Another process schedules the first key's retirement: seen once the copy is
        // older than its maximum age, and the key stops verifying when it retires.
        let three = issue_with(&auth, &first, "three").await;
        auth.verify_access_token(&three).await.unwrap();
        let retire = now + LOCAL_JWKS_MAX_AGE_SECS + 30;
        store
            .schedule_key_retirement("RS256", &second.kid, retire)
            .await
            .unwrap();
        clock.advance(LOCAL_JWKS_MAX_AGE_SECS);
        auth.verify_access_token(&three).await.unwrap();
        clock.advance(30);
        let err = auth.verify_access_token(&three).await.unwrap_err();
        assert!(matches!(err, TokenError::UnknownKid { .. }), "{err}");
        auth.verify_access_token(&two).await.unwrap();
    }
}

/// An issuer in-process on a loopback port with open registration, and this server's
/// `RemoteIssuer` of it (`introspect = "always"`, JWKS refetched at most every 10 s,
/// introspection answers kept 30 s) on a clock the test moves, discovered.
struct RemoteEnv {
    _issuer_db: TestDb,
    issuer: hestia::http::AppState,
    issuer_url: String,
    settings: hestia::config::Settings,
    store: hestia::store::Store,
    clock: std::sync::Arc<hestia::oauth::Clock>,
    remote: hestia::verifier::RemoteIssuer,
}

async fn remote_env(db: &TestDb) -> RemoteEnv {
    use hestia::oauth::Clock;
    use hestia::verifier::RemoteIssuer;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer_url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let issuer_db = TestDb::sqlite();
    let (app, issuer) = raw_app_on(
        &issuer_db,
        &format!("public_url = \"{issuer_url}\"\n[fhir]\nenabled = false\n[oauth]\nopen_registration = true\n"),
    )
    .await;
    issuer.oauth().ensure_keys().await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let flags = hestia::config::ServeFlags {
        public_url: Some("http://fhir.test".into()),
        issuer: Some(issuer_url.clone()),
        ..test_flags(db)
    };
    let settings = resolve(
        flags,
        hestia_toml(
            "[issuer]\nintrospect = \"always\"\njwks_refetch_secs = 10\nintrospection_cache_secs = 30\n",
        ),
    );
    let store = hestia::store::Store::open(&db.url).await.unwrap();
    let clock = Clock::system();
    let remote = RemoteIssuer::new(&settings, clock.clone()).unwrap();
    remote.discover().await.unwrap();
    RemoteEnv {
        _issuer_db: issuer_db,
        issuer,
        issuer_url,
        settings,
        store,
        clock,
        remote,
    }
}

impl RemoteEnv {
    /// Registers this server at the issuer.
    async fn register(&self) {
        use hestia::verifier::RegistrationOutcome;
        let outcome = self.remote.ensure_registration(&self.store).await.unwrap();
        assert_eq!(outcome, RegistrationOutcome::Registered);
    }

    /// A new signing key at the issuer, and the time it was made.
    async fn new_key(&self) -> (hestia::store::KeyRow, i64) {
        let now = self.issuer.oauth().now();
        let store = self.issuer.oauth().store();
        let key = hestia::oauth::keys::create(store, "RS256", now, now)
            .await
            .unwrap();
        (key, now)
    }
}

/// `token`'s header changed by `change`, over `claims`, signed with `key`.
fn resigned(
    token: &str,
    change: impl FnOnce(&mut jsonwebtoken::Header),
    claims: Value,
    key: &hestia::store::KeyRow,
) -> String {
    let mut header = jsonwebtoken::decode_header(token).unwrap();
    change(&mut header);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// This server registers at the issuer once; another start reuses the registration.
#[tokio::test]
async fn a_registration_at_the_issuer_is_made_once_and_reused() {
    use hestia::verifier::{RegistrationOutcome, RemoteIssuer};
    for db in TestDb::all().await {
        let env = remote_env(&db).await;
        assert_eq!(env.remote.jwks_fetches(), 1);
        env.register().await;
        let again = RemoteIssuer::new(&env.settings, env.clock.clone()).unwrap();
        again.discover().await.unwrap();
        assert_eq!(
            again.ensure_registration(&env.store).await.unwrap(),
            RegistrationOutcome::Reused,
            "{}",
            db.backend
        );
        assert_eq!(
            again.credentials().unwrap().client_id,
            env.remote.credentials().unwrap().client_id
        );
        env.store.close().await;
    }
}

/// A new key at the issuer is not seen before the refetch interval has passed, and an
/// unknown kid refetches at most once per interval.
#[tokio::test]
async fn jwks_refetch_is_rate_limited() {
    use hestia::oauth::TokenError;
    for db in TestDb::all().await {
        let env = remote_env(&db).await;
        env.register().await;
        let (remote, issuer_url) = (&env.remote, &env.issuer_url);
        let (key, _) = env.new_key().await;
        let token = issue_with(env.issuer.oauth(), &key, "t-1").await;
        let err = remote.verify(&token, 0).await.unwrap_err();
        assert!(matches!(err, TokenError::UnknownKid { .. }), "{err}");
        assert_eq!(remote.jwks_fetches(), 1, "rate-limited: no refetch yet");
        env.clock.advance(10);
        let verified = remote.verify(&token, 0).await.unwrap();
        assert_eq!(verified.claims.jti, "t-1");
        assert_eq!(remote.jwks_fetches(), 2);
        assert_eq!(remote.introspections(), 1, "introspect = always");
        let (other_kid, _, _) = hestia::oauth::keys::generate("RS256").unwrap();
        let forged = resigned(
            &token,
            |h| h.kid = Some(other_kid.clone()),
            json!({"iss": issuer_url}),
            &key,
        );
        let err = remote.verify(&forged, 0).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("unknown kid {other_kid} at issuer {issuer_url}")),
            "{err}"
        );
        assert_eq!(remote.jwks_fetches(), 2, "one refetch per interval");
        env.store.close().await;
    }
}

/// Introspection answers are reused for the cache time: a revocation is seen after it.
#[tokio::test]
async fn introspection_answers_are_cached_for_their_time() {
    for db in TestDb::all().await {
        let env = remote_env(&db).await;
        env.register().await;
        let remote = &env.remote;
        let (key, now) = env.new_key().await;
        let token = issue_with(env.issuer.oauth(), &key, "t-1").await;
        env.clock.advance(10);
        remote.verify(&token, 0).await.unwrap();
        assert_eq!(remote.introspections(), 1);
        remote.verify(&token, 0).await.unwrap();
        assert_eq!(remote.introspections(), 1);
        let issuer_store = env.issuer.oauth().store();
        issuer_store.revoke_access_token("t-1", now).await.unwrap();
        remote.verify(&token, 0).await.unwrap();
        env.clock.advance(30);
        let err = remote.verify(&token, 0).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("not active at issuer {}", env.issuer_url)),
            "{err}"
        );
        assert_eq!(remote.introspections(), 2);
        env.store.close().await;
    }
}

/// Opaque tokens, and JWTs of another profile than RFC 9068, are the issuer's to judge:
/// introspection only.
#[tokio::test]
async fn opaque_tokens_and_other_jwt_profiles_go_to_introspection() {
    use hestia::oauth::TokenError;
    for db in TestDb::all().await {
        let env = remote_env(&db).await;
        env.register().await;
        let remote = &env.remote;
        let err = remote.verify("opaque", 0).await.unwrap_err();
        assert!(matches!(err, TokenError::Inactive { .. }), "{err}");
        assert_eq!(remote.introspections(), 1);
        let (key, _) = env.new_key().await;
        let token = issue_with(env.issuer.oauth(), &key, "t-1").await;
        let other_profile = resigned(
            &token,
            |h| h.typ = Some("JWT".into()),
            json!({"iss": env.issuer_url, "sub": "x"}),
            &key,
        );
        let err = remote.verify(&other_profile, 0).await.unwrap_err();
        assert!(matches!(err, TokenError::Inactive { .. }), "{err}");
        assert_eq!(remote.introspections(), 2);
        env.store.close().await;
    }
}

/// `hestia client add ARGS` at `dir`: (client_id, client_secret).
fn add_client(dir: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["client", "add"];
    all.extend_from_slice(args);
    let (ok, out, err) = hestia(dir, &all, "");
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().unwrap_or_default().to_string(),
    )
}

/// `hestia user add NAME --password-stdin ARGS` at `dir` (password [`PASSWORD`]).
fn add_user(dir: &Path, name: &str, args: &[&str]) {
    let mut all = vec!["user", "add", name, "--password-stdin"];
    all.extend_from_slice(args);
    let (ok, out, err) = hestia(dir, &all, &format!("{PASSWORD}\n"));
    assert!(ok, "{out}{err}");
}

/// `Type/id` of every entry of a searchset, sorted.
fn entries(bundle: &Value) -> Vec<String> {
    assert_eq!(bundle["resourceType"], "Bundle", "{bundle}");
    let mut ids: Vec<String> = bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap(),
                        e["resource"]["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// GET `url` with the token as Bearer and, again, as the access_token query parameter:
/// both answer 200 with the same entries, which are returned.
async fn search_both_ways(http: &reqwest::Client, url: &str, token: &str) -> Vec<String> {
    let r = http.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}: {}", r.text().await.unwrap());
    let by_header = entries(&r.json().await.unwrap());
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = http
        .get(format!("{url}{sep}access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url} with access_token");
    assert_eq!(entries(&r.json().await.unwrap()), by_header, "{url}");
    by_header
}

/// A 403 (insufficient_scope when the plugins refused) with an OperationOutcome; its text.
async fn forbidden(http: &reqwest::Client, url: &str, token: &str) -> String {
    let r = http.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 403, "{url}");
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let outcome: Value = r.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    format!("{challenge} {}", outcome["issue"][0]["diagnostics"])
}

/// The authorization code for `verifier`'s challenge exchanged at the issuer.
async fn exchange(
    http: &reqwest::Client,
    token_endpoint: &str,
    app: &(String, String),
    code: &str,
    verifier: &str,
) -> Value {
    let r = http
        .post(token_endpoint)
        .basic_auth(&app.0, Some(&app.1))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

/// The reference journey of the design across two hosts: a person signs in on the login
/// page of the authorization server (`--no-fhir`), approves scopes on its consent page,
/// and the app's token (authorization code + PKCE, `aud=` then `resource=` naming the
/// FHIR server's base, SMART `launch/patient`) reads from the FHIR server (`--issuer`),
/// as Bearer and as the access_token query; what comes back is what the approved scopes
/// allow (v1 `patient/*.read`: the patient's compartment; v2
/// `patient/Observation.rs?category=…`: those Observations). A refresh at the issuer gives
/// a token the FHIR server takes; `hestia token explain` on the FHIR host introspects an
/// opaque token and says what the server says; the Basic compatibility mode checks the
/// FHIR host's own accounts against the issuer's user.
/// Long: one journey across the issuer and the FHIR host; each step uses the tokens and state of the steps before it.
async fn journey_across_two_hosts(db: TestDb) {
    let issuer_dir = tempfile::tempdir().unwrap();
    let issuer = start_issuer(issuer_dir.path(), &[]);
    let ca = issuer.data_dir.join("tls").join("ca.pem");
    let http = client_trusting(&ca);
    let meta = get_json(
        &http,
        &format!("{}/.well-known/openid-configuration", issuer.url),
    )
    .await
    .1;
    let token_endpoint = meta["token_endpoint"].as_str().unwrap().to_string();

    let initial = registration_token(issuer_dir.path());
    let fhir_dir = tempfile::tempdir().unwrap();
    let ca_arg = ca.display().to_string();
    let args = [
        "--insecure-http",
        "--issuer",
        issuer.url.as_str(),
        "--issuer-ca",
        ca_arg.as_str(),
        "--registration-token",
        initial.as_str(),
        "--database-url",
        db.url.as_str(),
    ];
    let mut fhir = Server::start(fhir_dir.path(), &args);
    let base = format!("{}/fhir/r4", fhir.url);
    let plain = reqwest::Client::new();

    // Data, written with a backend-service token of the issuer.
    let loader = add_client(
        issuer_dir.path(),
        &[
            "--name",
            "loader",
            "--grant-type",
            "client_credentials",
            "--scope",
            "system/*.read system/*.write",
        ],
    );
    let system = token(&http, &token_endpoint, &loader, &base).await;
    let observation = |id: &str, patient: &str, category: &str| {
        json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
            "code": {"text": id}, "subject": {"reference": format!("Patient/{patient}")},
        })
    };
    for resource in [
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}]}),
        json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Two"}]}),
        observation("o1-lab", "p1", "laboratory"),
        observation("o1-vital", "p1", "vital-signs"),
        observation("o2-lab", "p2", "laboratory"),
    ] {
        let url = format!(
            "{base}/{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let r = plain
            .put(&url)
            .bearer_auth(&system)
            .header("content-type", "application/fhir+json")
            .body(resource.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{url}: {}", r.text().await.unwrap());
    }

    // A person of the issuer (the patient p1) and Postman, a confidential app there.
    add_user(
        issuer_dir.path(),
        "alice",
        &["--fhir-user", "Patient/p1", "--role", "patient"],
    );
    let app = add_client(
        issuer_dir.path(),
        &[
            "--name",
            "Postman",
            "--redirect-uri",
            CALLBACK,
            "--scope",
            "openid fhirUser launch/patient offline_access patient/*.read",
        ],
    );

    // Round 1: SMART v1 `patient/*.read`, the audience named with `aud=`.
    let b = browser_trusting(&ca);
    let (verifier, challenge) = pkce();
    let q = code_flow(
        &issuer.url,
        &b,
        &app.0,
        "alice",
        "openid fhirUser launch/patient offline_access patient/*.read",
        &challenge,
        &[("aud", base.as_str())],
        &[],
    )
    .await;
    assert_eq!(q["iss"], issuer.url);
    let t = exchange(&http, &token_endpoint, &app, &q["code"], &verifier).await;
    assert_eq!(t["patient"], "p1", "{t}");
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims_of(&access)["aud"], base.as_str());
    assert_eq!(
        search_both_ways(&plain, &format!("{base}/Patient"), &access).await,
        ["Patient/p1"],
        "{}: only the patient's own record",
        db.backend
    );
    assert_eq!(
        search_both_ways(&plain, &format!("{base}/Observation"), &access).await,
        ["Observation/o1-lab", "Observation/o1-vital"],
        "{}: the patient's compartment",
        db.backend
    );
    let why = forbidden(&plain, &format!("{base}/Patient/p2"), &access).await;
    assert!(why.contains("Patient/p1"), "{why}");
    let r = plain
        .get(format!("{base}/Patient/p1"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Round 2: SMART v2 with a query, the audience named with `resource=` (RFC 8707); the
    // person unticks patient/Patient.rs on the consent page.
    let v2 = format!("patient/Observation.rs?category={LAB}");
    let (verifier2, challenge2) = pkce();
    let q = code_flow(
        &issuer.url,
        &b,
        &app.0,
        "alice",
        &format!("launch/patient patient/Patient.rs {v2}"),
        &challenge2,
        &[("resource", base.as_str())],
        &["patient/Patient.rs"],
    )
    .await;
    let t2 = exchange(&http, &token_endpoint, &app, &q["code"], &verifier2).await;
    assert_eq!(t2["scope"], format!("launch/patient {v2}"), "{t2}");
    let access2 = t2["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims_of(&access2)["aud"], base.as_str());
    assert_eq!(
        search_both_ways(&plain, &format!("{base}/Observation"), &access2).await,
        ["Observation/o1-lab"],
        "{}: the v2 query and the patient's compartment",
        db.backend
    );
    let why = forbidden(&plain, &format!("{base}/Patient"), &access2).await;
    assert!(
        why.contains("insufficient_scope")
            && why.contains("no granted scope permits search of Patient"),
        "{why}"
    );

    // A refresh at the issuer: the new token reads at the FHIR server as the first did.
    let refreshed: Value = http
        .post(&token_endpoint)
        .basic_auth(&app.0, Some(&app.1))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access3 = refreshed["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{refreshed}"))
        .to_string();
    assert_ne!(access3, access);
    assert_eq!(claims_of(&access3)["aud"], base.as_str());
    assert_eq!(
        search_both_ways(&plain, &format!("{base}/Observation"), &access3).await,
        ["Observation/o1-lab", "Observation/o1-vital"]
    );

    // `hestia token explain` on the FHIR host: the same verifier as the server. An opaque
    // token (the new refresh token) is introspected with the stored registration.
    let refresh = refreshed["refresh_token"].as_str().unwrap().to_string();
    let explain = |token: &str, extra: &[&str]| {
        let mut all = vec![
            "token",
            "explain",
            token,
            "--issuer",
            issuer.url.as_str(),
            "--issuer-ca",
            ca_arg.as_str(),
            "--database-url",
            db.url.as_str(),
            "--public-url",
            fhir.url.as_str(),
        ];
        all.extend_from_slice(extra);
        hestia(fhir_dir.path(), &all, "")
    };
    let (ok, out, err) = explain(&refresh, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("token: opaque (not a JWT)"), "{out}{err}");
    let said = refused(&plain, &format!("{base}/Patient"), &refresh).await;
    assert!(
        said.contains(&format!(
            "issuer {} says this is a refresh_token",
            issuer.url
        )),
        "{said}"
    );
    assert!(
        out.contains(&format!("refused: 401 invalid_token: {said}")),
        "the server's words: {said}\nexplain: {out}"
    );
    let (ok, out, _) = explain("never-issued", &[]);
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "refused: 401 invalid_token: not active at issuer {}",
            issuer.url
        )),
        "{out}"
    );
    // Against a database without this server's registration, an opaque token cannot be
    // checked at all: the server would answer 503, and explain says so.
    let unregistered = TestDb::sqlite();
    let (ok, out, _) = hestia(
        fhir_dir.path(),
        &[
            "token",
            "explain",
            "never-issued",
            "--issuer",
            issuer.url.as_str(),
            "--issuer-ca",
            ca_arg.as_str(),
            "--database-url",
            unregistered.url.as_str(),
        ],
        "",
    );
    assert!(!ok);
    assert!(
        out.contains("not checked: 503")
            && out.contains(&format!(
                "this server has no client credentials at issuer {}",
                issuer.url
            )),
        "{out}"
    );
    let (ok, out, err) = explain(&access2, &["--request", "GET Observation"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("revocation at the issuer is not seen")
            && out.contains(&format!("audience: accepted for {base}"))
            && out.contains("GET Observation: allowed within")
            && out.contains("laboratory"),
        "{out}"
    );

    // A token of an issuer this server does not trust is refused as such (and its key is
    // not looked for at the trusted issuer).
    let (kid, pem, _) = hestia::oauth::keys::generate("ES256").unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid);
    header.typ = Some("at+jwt".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let foreign = jsonwebtoken::encode(
        &header,
        &json!({"iss": "https://foreign.example", "sub": "x", "aud": base, "client_id": "x", "scope": "system/*.read", "exp": now + 300, "iat": now, "jti": "f"}),
        &jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let why = refused(&plain, &format!("{base}/Patient"), &foreign).await;
    assert!(
        why.contains("issuer \"https://foreign.example\" is not trusted")
            && why.contains(&issuer.url),
        "{why}"
    );

    // Basic compatibility mode on the FHIR host: its own accounts (it has no others), and
    // the account must be the token's user as the issuer names it. Its rights there are
    // those of that account.
    add_user(
        fhir_dir.path(),
        "alice",
        &[
            "--fhir-user",
            "Patient/p1",
            "--role",
            "patient",
            "--database-url",
            db.url.as_str(),
        ],
    );
    add_user(fhir_dir.path(), "bob", &["--database-url", db.url.as_str()]);
    assert!(fhir.terminate().success());
    std::fs::write(
        fhir_dir.path().join("hestia.toml"),
        "[fhir]\nrequire_basic_auth = true\n",
    )
    .unwrap();
    let fhir = Server::start(fhir_dir.path(), &args);
    let base = format!("{}/fhir/r4", fhir.url);
    let (verifier, challenge) = pkce();
    let q = code_flow(
        &issuer.url,
        &b,
        &app.0,
        "alice",
        "launch/patient patient/*.read",
        &challenge,
        &[("aud", base.as_str())],
        &[],
    )
    .await;
    let t = exchange(&http, &token_endpoint, &app, &q["code"], &verifier).await;
    let access = t["access_token"].as_str().unwrap().to_string();
    let with_basic = |user: &str, password: &str, token: &str| {
        plain
            .get(format!("{base}/Patient?access_token={token}"))
            .basic_auth(user, Some(password))
            .send()
    };
    let r = with_basic("alice", PASSWORD, &access).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(entries(&r.json().await.unwrap()), ["Patient/p1"]);
    let challenge_of = |r: &reqwest::Response| {
        assert_eq!(r.status(), 401);
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let r = plain
        .get(format!("{base}/Patient"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let why = challenge_of(&r);
    assert!(
        why.contains("also requires HTTP Basic credentials"),
        "{why}"
    );
    // Another account's right password and the token's user's wrong one: one answer.
    let r = with_basic("bob", PASSWORD, &access).await.unwrap();
    let other_account = challenge_of(&r);
    let r = with_basic("alice", "not the password", &access)
        .await
        .unwrap();
    let why = challenge_of(&r);
    assert!(
        why.contains("the Basic credentials are not the username and password of the token's user")
            && why.contains("this FHIR server's own accounts"),
        "{why}"
    );
    assert_eq!(
        other_account.replace("(4 of 5 attempts left", "(3 of 5 attempts left"),
        why,
        "the same answer but for the attempts left"
    );
    let system = token(&http, &token_endpoint, &loader, &base).await;
    let r = with_basic("alice", PASSWORD, &system).await.unwrap();
    let why = challenge_of(&r);
    assert!(
        why.contains(&format!(
            "no Basic user can match the token: issuer {} names no username for it",
            issuer.url
        )),
        "{why}"
    );

    // The issuer stops: a token that needs it cannot be checked, which is not the token's
    // fault: 503 naming the cause (not a 401 that would make the client drop the token).
    let mut issuer = issuer;
    assert!(issuer.terminate().success());
    let r = with_basic("alice", PASSWORD, "opaque-while-the-issuer-is-down")
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("www-authenticate").is_none());
    let outcome: Value = r.json().await.unwrap();
    let why = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        why.contains("cannot check the token")
            && why.contains("introspection at issuer")
            && why.contains("was refused"),
        "{why}"
    );
    assert_eq!(outcome["issue"][0]["code"], "transient");
}

#[tokio::test]
async fn journey_across_two_hosts_on_sqlite() {
    journey_across_two_hosts(TestDb::sqlite()).await;
}

#[tokio::test]
async fn journey_across_two_hosts_on_postgres() {
    journey_across_two_hosts(TestDb::postgres().await).await;
}

/// A stop asked for while the issuer's discovery waits for an answer ends the start at
/// once, saying so (the issuer here accepts connections and never answers).
#[tokio::test]
async fn a_stop_during_discovery_ends_the_start_at_once() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(hestia_bin())
        .current_dir(dir.path())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--insecure-http"])
        .args(["--issuer", &format!("http://127.0.0.1:{port}")])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server is in discovery once its request has arrived (and is left unanswered).
    let (mut connection, _) = silent.accept().unwrap();
    let mut head = [0u8; 64];
    let n = std::io::Read::read(&mut connection, &mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("GET /.well-known/openid-configuration"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "hestia: stopped by SIGTERM during discovery of the issuer http://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    drop(connection);
}

/// A remote issuer's users on the FHIR server: one with an account of the same user name
/// there (the name from the issuer's introspection, as its JWTs carry none) has that
/// account's rights, and a role taken from it there refuses its next request; one without
/// an account reads nothing through `user/` scopes, however its issuer's roles let it ask;
/// one whose fhirUser is a Patient reads only that patient's records.
async fn remote_users_have_the_rights_of_their_local_accounts(db: TestDb) {
    let hosts = RightsHosts::start(&db).await;
    let b = db.backend;

    let drlocal = hosts.token_of("drlocal").await;
    assert_eq!(hosts.read(&drlocal, "p2").await.0, 200, "{b}");
    hosts.local(&["user", "set", "drlocal", "--role", "nurse"]);
    let (status, why) = hosts.read(&drlocal, "p2").await;
    assert_eq!(status, 403, "{b}: {why}");
    assert!(why.contains("roles: nurse"), "{why}");

    let stranger = hosts.token_of("drstranger").await;
    let (status, why) = hosts.read(&stranger, "p1").await;
    assert_eq!(status, 403, "{b}: {why}");
    assert!(why.contains("roles: none"), "{why}");

    let pat = hosts.token_of("pat").await;
    assert_eq!(hosts.read(&pat, "p1").await.0, 200, "{b}");
    let (status, why) = hosts.read(&pat, "p2").await;
    assert_eq!(status, 403, "{b}: {why}");
    let url = format!("{}/Patient", hosts.base);
    let all = search_both_ways(&hosts.plain, &url, &pat).await;
    assert_eq!(all, ["Patient/p1"], "{b}");
}

/// An issuer and a FHIR server that trusts it (on the test's database), with Patients
/// p1 and p2; at the issuer the practitioners drlocal, drstranger and pat (fhirUser
/// Patient/p1) and an app of `openid fhirUser user/*.rs`; at the FHIR server an account
/// drlocal of role practitioner.
struct RightsHosts {
    issuer_dir: tempfile::TempDir,
    issuer: Server,
    fhir_dir: tempfile::TempDir,
    _fhir: Server,
    db_url: String,
    http: reqwest::Client,
    browser: reqwest::Client,
    plain: reqwest::Client,
    token_endpoint: String,
    base: String,
    app: (String, String),
}

impl RightsHosts {
    async fn start(db: &TestDb) -> RightsHosts {
        let issuer_dir = tempfile::tempdir().unwrap();
        let issuer = start_issuer(issuer_dir.path(), &[]);
        let ca = issuer.data_dir.join("tls").join("ca.pem");
        let http = client_trusting(&ca);
        let discovery = format!("{}/.well-known/openid-configuration", issuer.url);
        let meta = get_json(&http, &discovery).await.1;
        let token_endpoint = meta["token_endpoint"].as_str().unwrap().to_string();
        let initial = registration_token(issuer_dir.path());
        let fhir_dir = tempfile::tempdir().unwrap();
        let ca_arg = ca.display().to_string();
        let fhir = Server::start(
            fhir_dir.path(),
            &[
                "--insecure-http",
                "--issuer",
                issuer.url.as_str(),
                "--issuer-ca",
                ca_arg.as_str(),
                "--registration-token",
                initial.as_str(),
                "--database-url",
                db.url.as_str(),
            ],
        );
        let base = format!("{}/fhir/r4", fhir.url);
        let app = add_client(
            issuer_dir.path(),
            &[
                "--name",
                "app",
                "--redirect-uri",
                CALLBACK,
                "--scope",
                "openid fhirUser user/*.rs",
            ],
        );
        let hosts = RightsHosts {
            browser: browser_trusting(&ca),
            issuer_dir,
            issuer,
            fhir_dir,
            _fhir: fhir,
            db_url: db.url.clone(),
            http,
            plain: reqwest::Client::new(),
            token_endpoint,
            base,
            app,
        };
        hosts.put_patients().await;
        // At the issuer all three are practitioners (their apps get user/*.rs there).
        for (name, fhir_user) in [
            ("drlocal", "Practitioner/d1"),
            ("drstranger", "Practitioner/d2"),
            ("pat", "Patient/p1"),
        ] {
            let args = ["--fhir-user", fhir_user, "--role", "practitioner"];
            add_user(hosts.issuer_dir.path(), name, &args);
        }
        // At the FHIR server only drlocal has an account.
        hosts.local(&[
            "user",
            "add",
            "drlocal",
            "--password-stdin",
            "--role",
            "practitioner",
        ]);
        hosts
    }

    /// Patients p1 and p2, written with a system token of a client of the issuer.
    async fn put_patients(&self) {
        let loader = add_client(
            self.issuer_dir.path(),
            &[
                "--name",
                "loader",
                "--grant-type",
                "client_credentials",
                "--scope",
                "system/*.read system/*.write",
            ],
        );
        let system = token(&self.http, &self.token_endpoint, &loader, &self.base).await;
        for id in ["p1", "p2"] {
            let r = self
                .plain
                .put(format!("{}/Patient/{id}", self.base))
                .bearer_auth(&system)
                .header("content-type", "application/fhir+json")
                .body(json!({"resourceType": "Patient", "id": id}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    }

    /// `hestia ARGS` on the FHIR server's database, the password on stdin.
    fn local(&self, args: &[&str]) {
        let mut all = args.to_vec();
        all.extend(["--database-url", self.db_url.as_str()]);
        let (ok, out, err) = hestia(self.fhir_dir.path(), &all, &format!("{PASSWORD}\n"));
        assert!(ok, "{args:?}: {out}{err}");
    }

    /// An access token of the issuer's user `name` for the app, `user/*.rs`.
    async fn token_of(&self, name: &str) -> String {
        let (verifier, challenge) = pkce();
        let aud = [("aud", self.base.as_str())];
        let (issuer, b, app) = (&self.issuer.url, &self.browser, &self.app);
        let q = code_flow(issuer, b, &app.0, name, "user/*.rs", &challenge, &aud, &[]).await;
        let t = exchange(&self.http, &self.token_endpoint, app, &q["code"], &verifier).await;
        t["access_token"].as_str().unwrap().to_string()
    }

    /// The status and body of a read of Patient `id` with `token`.
    async fn read(&self, token: &str, id: &str) -> (u16, String) {
        let url = format!("{}/Patient/{id}", self.base);
        let r = self.plain.get(url).bearer_auth(token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }
}

#[tokio::test]
async fn remote_users_have_the_rights_of_their_local_accounts_on_sqlite() {
    remote_users_have_the_rights_of_their_local_accounts(TestDb::sqlite()).await;
}

#[tokio::test]
async fn remote_users_have_the_rights_of_their_local_accounts_on_postgres() {
    remote_users_have_the_rights_of_their_local_accounts(TestDb::postgres().await).await;
}
