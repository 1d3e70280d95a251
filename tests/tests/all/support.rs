//! Shared support for the end-to-end tests: fresh databases on every backend, and the real
//! `hestia` binary started on a free port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A database URL for one test: a new SQLite file, or a new PostgreSQL database.
pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL server the tests create databases on. `scripts/test` starts a private
/// cluster and sets this; without it the PostgreSQL half of the suite fails, loudly.
pub const POSTGRES_ENV: &str = "HESTIA_TEST_POSTGRES_URL";

fn unique_name() -> String {
    format!("hestia_test_{}", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops the test databases of test processes that have ended (their names carry the
/// process id), so that repeated runs against one server do not fill its disk; a
/// database still in use is left for a later sweep.
async fn drop_stale_databases(admin_url: &str) {
    use sqlx::{Connection, Executor, Row};
    let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'hestia\\_test\\_%'")
            .fetch_all(&mut conn)
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default();
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let ended = pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists());
        if ended {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                .await;
        }
    }
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("hestia.db").display());
        Self {
            url,
            backend: "sqlite",
            _dir: Some(dir),
        }
    }

    /// Creates a fresh PostgreSQL database on the server named by `HESTIA_TEST_POSTGRES_URL`.
    pub async fn postgres() -> Self {
        let admin_url = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_ENV} is not set: run the tests through scripts/test (it starts a private PostgreSQL), \
                 or point {POSTGRES_ENV} at a server where this user may CREATE DATABASE"
            )
        });
        let name = unique_name();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_ENV}: {e}"));
        static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        SWEPT.get_or_init(|| drop_stale_databases(&admin_url)).await;
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            backend: "postgres",
            _dir: None,
        }
    }

    /// One fresh database per backend: every store test runs on both.
    pub async fn all() -> Vec<TestDb> {
        vec![Self::sqlite(), Self::postgres().await]
    }
}

/// The `hestia` binary under test (see `src/bin/hestia-e2e.rs`). `HESTIA_TEST_BIN` names
/// another build of it: checkouts that share one target directory share the uplifted
/// `hestia-e2e`, so each copies its own build aside and points its tests at the copy.
pub fn hestia_bin() -> PathBuf {
    std::env::var_os("HESTIA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hestia-e2e")))
}

/// A running `hestia serve`, stopped (SIGTERM, then kill) when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub stdout_lines: Vec<String>,
}

impl Server {
    /// Starts `hestia serve --listen 127.0.0.1:0 ARGS` in `dir` and waits until it listens.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_with(dir, args, &[], None)
    }

    /// [`Server::start`] with extra environment variables (`RUST_LOG` defaults to `warn`),
    /// and standard error written to `stderr_to` when given.
    pub fn start_with(
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        stderr_to: Option<&Path>,
    ) -> Self {
        let stderr = match stderr_to {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("stderr file")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(hestia_bin())
            .current_dir(dir)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start hestia serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let public = line
                        .strip_prefix("hestia: listening on ")
                        .and_then(|rest| rest.split("; public URL ").nth(1))
                        .and_then(|rest| rest.split(';').next())
                        .map(str::to_string);
                    lines.push(line);
                    if let Some(url) = public {
                        let data_dir = dir.join("hestia-data");
                        return Self {
                            child,
                            url,
                            data_dir,
                            stdout_lines: lines,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("hestia serve did not start; it printed: {lines:#?}");
                }
            }
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_for_exit()
    }

    /// Sends a signal (`TERM`, `INT`, …) without waiting.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits (at most 40 s) for the process to exit.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("hestia did not stop within 40 s of the signal");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}

/// Runs `hestia ARGS` in `dir` with `stdin`, returning (success, stdout, stderr).
pub fn hestia(dir: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(hestia_bin())
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hestia");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("hestia output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP client that trusts exactly the given CA certificate (PEM).
pub fn client_trusting(ca_pem: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca_pem).expect("read CA");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
        .build()
        .expect("client")
}

/// The whole application in-process on a fresh database, with settings from `toml` (the
/// `hestia.toml` text) on top of the defaults. Requests without an Authorization header
/// get a `system/*.*` token of the server's own issuer: tests of the FHIR core use this;
/// tests of authorization use [`raw_app_on`].
pub async fn app_on(db: &TestDb, toml: &str) -> (axum::Router, hestia::http::AppState) {
    let (app, state) = raw_app_on(db, toml).await;
    let token = mint(&state, serde_json::json!({"scope": "system/*.*"})).await;
    let bearer = axum::http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let app = app.layer(axum::middleware::map_request(
        move |mut req: axum::extract::Request| {
            let bearer = bearer.clone();
            async move {
                let has_token = req.headers().contains_key("authorization")
                    || req
                        .uri()
                        .query()
                        .is_some_and(|q| q.contains("access_token="));
                if !has_token {
                    req.headers_mut().insert("authorization", bearer);
                }
                req
            }
        },
    ));
    (app, state)
}

/// Signs an access token (a valid default claim set, with `overrides`; a null removes a
/// claim) with the server's own current key, as its authorization server would.
pub async fn mint(state: &hestia::http::AppState, overrides: serde_json::Value) -> String {
    use serde_json::json;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let auth = state.oauth();
    auth.ensure_keys().await.unwrap();
    let now = auth.now();
    let mut claims = json!({
        "iss": auth.issuer(),
        "sub": "user-1",
        "aud": state.settings().fhir_base_url(),
        "client_id": "app-1",
        "scope": "system/*.read system/*.write",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": format!("jti-{now}-{}", N.fetch_add(1, Ordering::Relaxed)),
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    // The server keeps a record of every token it issues (for revocation); so does this.
    let text = |k: &str| claims[k].as_str().unwrap_or_default().to_string();
    auth.store()
        .record_access_token(
            &text("jti"),
            "test-grant",
            &text("client_id"),
            claims["exp"].as_i64().unwrap_or(0),
        )
        .await
        .unwrap();
    let key = hestia::oauth::keys::signing_key(auth.store(), "RS256", now)
        .await
        .unwrap();
    hestia::oauth::tokens::sign(&key, "at+jwt", &claims).unwrap()
}

/// The application without any test token: every request is authorized for real.
pub async fn raw_app_on(db: &TestDb, toml: &str) -> (axum::Router, hestia::http::AppState) {
    let (app, state) = starting_app_on(db, toml).await;
    state.set_ready();
    (app, state)
}

/// [`raw_app_on`] before start-up has finished: the state is not marked ready and the
/// database is not migrated by this call (it may be, by an earlier test).
pub async fn starting_app_on(db: &TestDb, toml: &str) -> (axum::Router, hestia::http::AppState) {
    starting_app_with(db, toml, default_plugins()).await
}

/// [`starting_app_on`] with `plugins` as its plugin host.
pub async fn starting_app_with(
    db: &TestDb,
    toml: &str,
    plugins: std::sync::Arc<hestia::plugins::PluginHost>,
) -> (axum::Router, hestia::http::AppState) {
    let settings = resolve(test_flags(db), hestia_toml(toml));
    app_with(db, settings, plugins, hestia::oauth::Clock::system()).await
}

/// The application of `settings` on `db`, with `plugins`, its authorization server on
/// `clock`: what `hestia serve` assembles, not marked ready.
pub async fn app_with(
    db: &TestDb,
    settings: hestia::config::Settings,
    plugins: std::sync::Arc<hestia::plugins::PluginHost>,
    clock: std::sync::Arc<hestia::oauth::Clock>,
) -> (axum::Router, hestia::http::AppState) {
    let store = hestia::store::Store::open(&db.url)
        .await
        .expect("open test database");
    let auth = std::sync::Arc::new(
        hestia::oauth::AuthServer::new(store.clone(), &settings)
            .with_clock(clock)
            .with_policy(std::sync::Arc::new(hestia::policy::PluginTokenPolicy(
                plugins.clone(),
            ))),
    );
    let state = hestia::http::AppState::new(settings, store, plugins, auth);
    (hestia::http::app(state.clone()), state)
}

/// The flags of an in-process test server on `db`: plain HTTP on a loopback address.
pub fn test_flags(db: &TestDb) -> hestia::config::ServeFlags {
    hestia::config::ServeFlags {
        insecure_http: Some(true),
        listen: Some("127.0.0.1:8080".into()),
        store: hestia::config::StoreFlags {
            database_url: Some(db.url.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A `hestia.toml` from its text.
pub fn hestia_toml(toml: &str) -> hestia::config::FileConfig {
    toml::from_str(toml).expect("test configuration")
}

/// The settings `hestia serve` resolves from `flags` and `file` (its `hestia.toml`).
pub fn resolve(
    flags: hestia::config::ServeFlags,
    file: hestia::config::FileConfig,
) -> hestia::config::Settings {
    hestia::config::RawConfig {
        flags,
        file,
        file_path: None,
    }
    .resolve()
    .expect("test settings")
}

/// Serves `app` on `listener` in the background, with each request's peer address (as
/// `hestia serve` does: sign-in limits count per address).
pub fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .expect("serve the test app");
    })
}

/// A response read to the end: status, headers, and the body as JSON (Null when empty).
pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The diagnostics of an OperationOutcome, joined.
    pub fn diagnostics(&self) -> String {
        self.body["issue"]
            .as_array()
            .map(|issues| {
                issues
                    .iter()
                    .filter_map(|i| i["diagnostics"].as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default()
    }
}

/// Sends one request through the app in-process.
pub async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<axum::body::Body>,
) -> Reply {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        })
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// The default plugins (built in), compiled once per test process.
pub fn default_plugins() -> std::sync::Arc<hestia::plugins::PluginHost> {
    static HOST: std::sync::OnceLock<std::sync::Arc<hestia::plugins::PluginHost>> =
        std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        hestia::plugins::PluginHost::start(hestia::plugins::PluginSettings {
            dir: None,
            watch: false,
            // The tests run in parallel on few cores, debug-built: a thread descheduled for
            // longer than the production default (20 ms) would fail a call that is not
            // slow. The deadline itself is tested with its own host (plugins.rs).
            deadline: std::time::Duration::from_secs(2),
            ..Default::default()
        })
        .expect("the built-in plugins load")
    })
    .clone()
}

// The browser part of the authorization code flow, over HTTP against a running
// authorization server (in-process or the real binary): the login and consent forms as a
// person fills them in.

/// The redirect URI of the test apps (Postman's).
pub const CALLBACK: &str = "https://oauth.pstmn.io/v1/callback";
/// The password of the users the tests make.
pub const PASSWORD: &str = "correct horse battery";

/// A browser: keeps cookies, does not follow redirects (the tests read them).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A browser that trusts exactly the given CA certificate (PEM).
pub fn browser_trusting(ca_pem: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca_pem).expect("read CA");
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
        .build()
        .unwrap()
}

/// A PKCE pair: (code_verifier, S256 code_challenge).
pub fn pkce() -> (String, String) {
    use base64::Engine;
    use sha2::Digest;
    let verifier = format!("{}{}", random_text(), random_text());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// 32 random URL-safe characters.
pub fn random_text() -> String {
    use base64::Engine;
    use rand::Rng;
    let bytes: [u8; 24] = rand::thread_rng().r#gen();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of a hidden input in a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// The query parameters of a (redirect) URL.
pub fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

/// Opens `/oauth2/authorize` of the authorization server at `as_url` with these parameters.
pub async fn open_authorize(
    as_url: &str,
    b: &reqwest::Client,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let url =
        reqwest::Url::parse_with_params(&format!("{as_url}/oauth2/authorize"), params).unwrap();
    b.get(url).send().await.unwrap()
}

/// Signs in on the login page (password [`PASSWORD`]); returns the consent page's HTML.
pub async fn sign_in(
    as_url: &str,
    b: &reqwest::Client,
    login_html: &str,
    username: &str,
) -> String {
    let resp = b
        .post(format!("{as_url}/oauth2/login"))
        .form(&[
            ("request_id", hidden(login_html, "request_id")),
            ("csrf", hidden(login_html, "csrf")),
            ("username", username.into()),
            ("password", PASSWORD.into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/oauth2/consent?request_id="),
        "{location}"
    );
    let consent = b.get(format!("{as_url}{location}")).send().await.unwrap();
    assert_eq!(consent.status(), 200);
    consent.text().await.unwrap()
}

/// The scopes a consent page offers (the values of its `scope` checkboxes).
pub fn offered_scopes(consent_html: &str) -> Vec<String> {
    consent_html
        .split("name=\"scope\"")
        .skip(1)
        .map(|part| {
            part.split("value=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .replace("&amp;", "&")
        })
        .collect()
}

/// Submits the consent form with all offered scopes but `untick`.
pub async fn approve(
    as_url: &str,
    b: &reqwest::Client,
    consent_html: &str,
    untick: &[&str],
    patient: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("request_id".to_string(), hidden(consent_html, "request_id")),
        ("csrf".to_string(), hidden(consent_html, "csrf")),
        ("decision".to_string(), "approve".to_string()),
    ];
    for value in offered_scopes(consent_html) {
        if !untick.contains(&value.as_str()) {
            form.push(("scope".into(), value));
        }
    }
    if let Some(p) = patient {
        form.push(("patient".into(), p.into()));
    }
    b.post(format!("{as_url}/oauth2/consent"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// The whole browser part of the code flow with `b`: authorize (redirect URI
/// [`CALLBACK`], state `st-1`, the PKCE `challenge`, `extra` parameters), login, consent
/// without `untick`; returns the redirect's query.
#[allow(clippy::too_many_arguments)]
pub async fn code_flow(
    as_url: &str,
    b: &reqwest::Client,
    client_id: &str,
    username: &str,
    scope: &str,
    challenge: &str,
    extra: &[(&str, &str)],
    untick: &[&str],
) -> std::collections::HashMap<String, String> {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", CALLBACK),
        ("scope", scope),
        ("state", "st-1"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    let login = open_authorize(as_url, b, &params).await;
    assert_eq!(login.status(), 200);
    let login = login.text().await.unwrap();
    let consent = sign_in(as_url, b, &login, username).await;
    let resp = approve(as_url, b, &consent, untick, None).await;
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(CALLBACK), "{location}");
    query_of(&location)
}

/// The value after `label` on the line of the demo block that has it.
pub fn demo_value(lines: &[String], label: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim().to_string()))
        .unwrap_or_else(|| panic!("no {label:?} in {lines:#?}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A client_credentials token with `scope` (system scopes) from a running `hestia serve`,
/// for a client made with the CLI on the same database; its audience is the FHIR base.
pub async fn system_token_of(
    server: &Server,
    dir: &Path,
    db: &TestDb,
    http: &reqwest::Client,
    scope: &str,
) -> String {
    let client = add_backend_client(dir, db, scope);
    client_token(http, server, &server.url, &client, scope).await
}

/// A `client_credentials` client allowed `scope`, added with `hestia client add` on `db`;
/// answers its JSON (`client_id`, `client_secret`).
pub fn add_backend_client(dir: &Path, db: &TestDb, scope: &str) -> serde_json::Value {
    let args = [
        "client",
        "add",
        "--database-url",
        db.url.as_str(),
        "--name",
        "backend",
        "--grant-type",
        "client_credentials",
        "--scope",
        scope,
    ];
    let (ok, out, err) = hestia(dir, &args, "");
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// A `client_credentials` token of `scope` for `client` (the JSON of `hestia client add`),
/// its audience the FHIR base under `public` (the server's public URL).
pub async fn client_token(
    http: &reqwest::Client,
    server: &Server,
    public: &str,
    client: &serde_json::Value,
    scope: &str,
) -> String {
    let reply: serde_json::Value = http
        .post(format!("{}/oauth2/token", server.url))
        .basic_auth(
            client["client_id"].as_str().unwrap(),
            client["client_secret"].as_str(),
        )
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("aud", format!("{public}/fhir/r4").as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("the client's secret is accepted: {reply}"))
        .to_string()
}
