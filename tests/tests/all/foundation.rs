//! The real binary: TLS with the development certificate, health, metrics, commands
//! against a running server, configuration precedence and errors, graceful shutdown.

use crate::support::{Server, TestDb, call, client_trusting, hestia, starting_app_on};

#[tokio::test]
async fn serve_with_development_certificate_answers_ready_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    assert!(
        server.url.starts_with("https://localhost:"),
        "{}",
        server.url
    );
    let ca = server.data_dir.join("tls").join("ca.pem");
    assert!(
        server
            .stdout_lines
            .iter()
            .any(|l| l.contains("--cacert") && l.contains("ca.pem")),
        "serve says how to trust its CA: {:#?}",
        server.stdout_lines
    );
    let client = client_trusting(&ca);
    let ready = client
        .get(format!("{}/health/ready", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let id = ready
        .headers()
        .get("x-request-id")
        .expect("a request id on every response");
    assert_eq!(id.to_str().unwrap().len(), 36);
    let echoed = client
        .get(format!("{}/health/live", server.url))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        echoed.headers()["x-request-id"],
        "trace-me-123",
        "a client's request id is kept"
    );

    // The same name by its IP address is in the certificate too.
    let by_ip = server.url.replace("localhost", "127.0.0.1");
    assert_eq!(
        client
            .get(format!("{by_ip}/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A client that does not trust the development CA is refused at the handshake.
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(true)
        .build()
        .unwrap();
    let err = stranger
        .get(format!("{}/health/live", server.url))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.is_connect() || err.to_string().contains("certificate"),
        "{err:?}"
    );

    let metrics = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "hestia_http_requests_total{method=\"GET\",route=\"/health/ready\",status=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("hestia_http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    // The certificate is created once and reused by the next start.
    let cert_before = std::fs::read(server.data_dir.join("tls").join("cert.pem")).unwrap();
    assert!(server.terminate().success(), "SIGTERM is a clean shutdown");
    let mut again = Server::start(dir.path(), &[]);
    assert_eq!(
        std::fs::read(again.data_dir.join("tls").join("cert.pem")).unwrap(),
        cert_before
    );
    assert!(again.terminate().success());
}

#[tokio::test]
async fn user_and_client_commands_work_against_a_running_server() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let db_flag = ["--database-url", db.url.as_str()];
        let mut args = vec!["--insecure-http"];
        args.extend(db_flag);
        let mut server = Server::start(dir.path(), &args);
        let client = reqwest::Client::new();
        assert_eq!(
            client
                .get(format!("{}/health/ready", server.url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        let mut user_add = vec![
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--fhir-user",
            "Patient/p1",
        ];
        user_add.extend(db_flag);
        let (ok, out, err) = hestia(dir.path(), &user_add, "s3cret-password\n");
        assert!(ok, "{}: {err}", db.backend);
        let user: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(user["username"], "alice");
        assert_eq!(user["fhir_user"], "Patient/p1");
        let (ok, _, err) = hestia(dir.path(), &user_add, "s3cret-password\n");
        assert!(
            !ok && err.contains("already exists"),
            "{}: {err}",
            db.backend
        );

        let mut client_add = vec![
            "client",
            "add",
            "--name",
            "Postman",
            "--redirect-uri",
            "https://oauth.pstmn.io/v1/callback",
        ];
        client_add.extend(db_flag);
        let (ok, out, err) = hestia(dir.path(), &client_add, "");
        assert!(ok, "{err}");
        let created: serde_json::Value = serde_json::from_str(&out).unwrap();
        let id = created["client_id"].as_str().unwrap().to_string();
        let secret = created["client_secret"].as_str().unwrap().to_string();
        assert!(secret.len() >= 40, "{secret}");

        let mut list = vec!["client", "list"];
        list.extend(db_flag);
        let (ok, out, _) = hestia(dir.path(), &list, "");
        assert!(ok);
        assert!(
            out.contains(&id) && !out.contains(&secret),
            "the secret is shown once only: {out}"
        );

        let mut remove = vec!["client", "remove", &id];
        remove.extend(db_flag);
        assert!(hestia(dir.path(), &remove, "").0);
        let (ok, _, err) = hestia(dir.path(), &remove, "");
        assert!(!ok && err.contains("not found"), "{err}");

        assert_eq!(
            client
                .get(format!("{}/health/ready", server.url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert!(server.terminate().success());
    }
}

#[tokio::test]
async fn configuration_precedence_is_flag_then_env_then_file() {
    let dir = tempfile::tempdir().unwrap();
    // The file asks for a port that cannot be bound by a test (already in use).
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("hestia.toml"),
        format!("listen = \"127.0.0.1:{busy_port}\"\n[tls]\ninsecure_http = true\n"),
    )
    .unwrap();

    // File alone: the busy port is used, and the error says so.
    let (ok, _, err) = hestia(dir.path(), &["serve"], "");
    assert!(!ok && err.contains(&busy_port.to_string()), "{err}");

    // A flag beats the file (and the environment).
    let mut server = Server::start(dir.path(), &[]);
    assert!(
        server.url.starts_with("http://localhost:"),
        "the file's tls.insecure_http applies: {}",
        server.url
    );
    assert!(!server.url.ends_with(&format!(":{busy_port}")));
    assert!(server.terminate().success());

    // The environment beats the file.
    let out = std::process::Command::new(crate::support::hestia_bin())
        .current_dir(dir.path())
        .args(["serve"])
        .env("HESTIA_LISTEN", "not-an-address")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("`listen`") && err.contains("not-an-address"),
        "{err}"
    );

    // A flag beats the environment (Server::start_with passes --listen 127.0.0.1:0).
    let mut server = Server::start_with(
        dir.path(),
        &[],
        &[("HESTIA_LISTEN", "not-an-address")],
        None,
    );
    assert!(server.terminate().success());

    // Booleans too: the environment's `false` beats the file's `true`, and a flag's
    // `false` beats the environment's `1`.
    let mut server =
        Server::start_with(dir.path(), &[], &[("HESTIA_INSECURE_HTTP", "false")], None);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    assert!(server.terminate().success());
    let mut server = Server::start_with(
        dir.path(),
        &["--insecure-http=false"],
        &[("HESTIA_INSECURE_HTTP", "1")],
        None,
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    assert!(server.terminate().success());
    drop(busy);

    // Without a file, HESTIA_INSECURE_HTTP=1 (or yes/on/true) alone means plain HTTP.
    let bare = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(bare.path(), &[], &[("HESTIA_INSECURE_HTTP", "1")], None);
    assert!(server.url.starts_with("http://"), "{}", server.url);
    assert!(server.terminate().success());
}

#[test]
fn bad_configuration_names_the_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "log_format = \"yaml\"\n",
            &["`log_format`", "\"yaml\"", "configuration file"],
        ),
        (
            "[fhir]\nbase_path = \"fhir\"\n",
            &["`fhir.base_path`", "\"fhir\""],
        ),
        ("listn = \"x\"\n", &["listn", "hestia.toml"]),
        (
            "database_url = \"mysql://db\"\n",
            &["`database_url`", "mysql://db"],
        ),
    ];
    for (file, needles) in cases {
        std::fs::write(dir.path().join("hestia.toml"), file).unwrap();
        let (ok, _, err) = hestia(dir.path(), &["serve", "--insecure-http"], "");
        assert!(!ok, "{file}");
        for needle in *needles {
            assert!(
                err.contains(needle),
                "for {file:?}: {err:?} should contain {needle:?}"
            );
        }
    }
    assert!(
        !dir.path().join("hestia-data").join("hestia.db").exists(),
        "nothing was created"
    );
}

#[tokio::test]
async fn dev_cert_command_writes_names_that_match() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = hestia(
        dir.path(),
        &[
            "dev-cert",
            "--hostname",
            "fhir.example.test",
            "--hostname",
            "10.0.0.7",
            "--out",
            "certs",
        ],
        "",
    );
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["outcome"], "created");
    let names = std::fs::read_to_string(dir.path().join("certs").join("names.txt")).unwrap();
    assert_eq!(names.trim(), "10.0.0.7 fhir.example.test");
    let (ok, _, err) = hestia(
        dir.path(),
        &["dev-cert", "--hostname", "bad host!", "--out", "certs"],
        "",
    );
    assert!(!ok && err.contains("bad host!"), "{err}");

    // The certificate answers a handshake for the names it was made for, and only them.
    let mut server = Server::start(
        dir.path(),
        &["--tls-cert", "certs/cert.pem", "--tls-key", "certs/key.pem"],
    );
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let ca = dir.path().join("certs").join("ca.pem");
    assert_eq!(handshake(&ca, "fhir.example.test", &port).await, Ok(200));
    let other = handshake(&ca, "localhost", &port).await;
    assert!(
        other.as_ref().is_err_and(|e| e.contains("certificate")),
        "a name the certificate lacks is refused: {other:?}"
    );
    assert!(server.terminate().success());

    // `serve` without TLS flags keeps the names dev-cert put in its directory, and adds
    // its own.
    let (ok, _, err) = hestia(
        dir.path(),
        &["dev-cert", "--hostname", "fhir.example.test"],
        "",
    );
    assert!(ok, "{err}");
    let mut server = Server::start(dir.path(), &[]);
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let ca = dir.path().join("hestia-data").join("tls").join("ca.pem");
    assert_eq!(handshake(&ca, "fhir.example.test", &port).await, Ok(200));
    assert_eq!(handshake(&ca, "localhost", &port).await, Ok(200));
    assert!(server.terminate().success());
}

/// `GET https://NAME:PORT/health/ready` with NAME resolved to 127.0.0.1, trusting `ca`:
/// the status, or the error chain as text.
async fn handshake(ca: &std::path::Path, name: &str, port: &str) -> Result<u16, String> {
    let pem = std::fs::read(ca).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve(name, format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    match client
        .get(format!("https://{name}:{port}/health/ready"))
        .send()
        .await
    {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            Err(text.to_lowercase())
        }
    }
}

/// Until start-up has finished, every route but health and metrics answers 503 in its
/// protocol's error shape; readiness follows the database afterwards.
#[tokio::test]
async fn routes_wait_for_start_up_and_readiness_follows_the_database() {
    for db in TestDb::all().await {
        let (app, state) = starting_app_on(&db, "").await;
        let ready = call(&app, "GET", "/health/ready", &[], "").await;
        assert_eq!(ready.status, 503, "{}", db.backend);
        assert_eq!(ready.body["status"], "starting");
        assert_eq!(call(&app, "GET", "/health/live", &[], "").await.status, 200);

        let fhir = call(&app, "GET", "/fhir/r4/Patient", &[], "").await;
        assert_eq!(fhir.status, 503);
        assert_eq!(fhir.header("retry-after"), "1");
        assert_eq!(fhir.body["resourceType"], "OperationOutcome");
        assert_eq!(fhir.body["issue"][0]["code"], "transient");
        assert!(fhir.diagnostics().contains("starting"), "{:?}", fhir.body);

        let token = call(
            &app,
            "POST",
            "/oauth2/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(token.status, 503);
        assert_eq!(token.body["error"], "temporarily_unavailable");
        assert!(
            token.body["error_description"]
                .as_str()
                .unwrap()
                .contains("starting")
        );

        state.store().migrate().await.unwrap();
        state.set_ready();
        assert_eq!(
            call(&app, "GET", "/health/ready", &[], "").await.status,
            200
        );
        let fhir = call(&app, "GET", "/fhir/r4/Patient", &[], "").await;
        assert_eq!(fhir.status, 401, "past start-up the token is asked for");

        state.store().close().await;
        let gone = call(&app, "GET", "/health/ready", &[], "").await;
        assert_eq!(gone.status, 503);
        assert_eq!(gone.body["status"], "unavailable");
        assert!(
            gone.body["reason"]
                .as_str()
                .unwrap()
                .contains("database does not answer")
        );
    }
}

/// SIGTERM and SIGINT let a request in flight finish (its body arrives after the signal)
/// before the process exits with success.
#[test]
fn shutdown_lets_requests_in_flight_finish() {
    use std::io::{Read, Write};
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::start(dir.path(), &["--insecure-http"]);
        let port = server.url.rsplit(':').next().unwrap().to_string();
        let mut conn = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        let body = "grant_type=client_credentials&client_id=nobody-at-all";
        let (first, rest) = body.split_at(10);
        write!(
            conn,
            "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}",
            body.len()
        )
        .unwrap();
        conn.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        server.signal(signal);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "SIG{signal}: the process waits for the request in flight"
        );
        conn.write_all(rest.as_bytes()).unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 401"),
            "SIG{signal}: the request in flight is answered: {response}"
        );
        assert!(response.contains("invalid_client"), "{response}");
        assert!(server.wait_for_exit().success(), "SIG{signal}");
    }
}

/// `--log-format json`: every line is a JSON object, and a request's lines carry its id.
#[test]
fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut server = Server::start_with(
        dir.path(),
        &["--insecure-http", "--log-format", "json"],
        &[("RUST_LOG", "info,tower_http=debug")],
        Some(&log),
    );
    let status = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-H", "x-request-id: log-me-42"])
        .arg(format!("{}/fhir/r4/Patient", server.url))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(server.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{text}");
    let of_request: Vec<_> = lines
        .iter()
        .filter(|l| l["span"]["id"] == "log-me-42")
        .collect();
    assert!(
        of_request.len() >= 2,
        "the request's start and finish lines carry its id: {text}"
    );
    assert!(
        of_request.iter().any(|l| l["status"] == 401),
        "the response line says the status: {text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no terminal colour codes in a file"
    );
}
