//! The real binary: TLS with the development certificate, health, metrics, commands
//! against a running server, configuration precedence and errors, graceful shutdown.

use crate::support::{Server, TestDb, client_trusting, hestia};

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
    drop(busy);
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

#[test]
fn dev_cert_command_writes_names_that_match() {
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
}
