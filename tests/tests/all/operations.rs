//! Operations: `hestia backup` while the server writes, `hestia restore` across backends,
//! and what a restore refuses (a database that is not empty, a damaged archive) or leaves
//! behind when it fails (nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::support::{
    CALLBACK, PASSWORD, Server, TestDb, browser, client_token, code_flow, hestia, pkce,
    system_token_of,
};

const BASE: &str = "/fhir/r4";

/// A directory for a server under write load: its `hestia.toml` gives plugins a deadline
/// that a machine busy with other tests still meets (the default, 20 ms, is for production).
fn loaded_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hestia.toml"),
        "[plugins]\ndeadline_ms = 10000\n",
    )
    .unwrap();
    dir
}

/// Runs `hestia ARGS --database-url URL`, asserting success; returns standard output.
fn cli(dir: &Path, url: &str, args: &[&str], stdin: &str) -> String {
    let mut all = args.to_vec();
    all.extend(["--database-url", url]);
    let (ok, out, err) = hestia(dir, &all, stdin);
    assert!(ok, "hestia {args:?} failed: {err}");
    out
}

/// The tables of the database as its own catalogue lists them, read here without the
/// code under test; sqlx's migration bookkeeping is not data.
async fn schema_tables(url: &str) -> BTreeSet<String> {
    sqlx::any::install_default_drivers();
    let url = match url.starts_with("sqlite:") {
        true => format!("{url}?mode=rwc"),
        false => url.to_string(),
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let sql = if url.starts_with("sqlite:") {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    } else {
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    };
    let names: Vec<String> = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    names
        .into_iter()
        .filter(|n| n != "_sqlx_migrations")
        .collect()
}

async fn row_counts(url: &str) -> BTreeMap<String, u64> {
    let tables = schema_tables(url).await;
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let mut counts = BTreeMap::new();
    for t in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{t}\""))
            .fetch_one(&pool)
            .await
            .unwrap();
        counts.insert(t, n as u64);
    }
    pool.close().await;
    counts
}

/// An archive read without the code under test: the manifest, and each table's rows as
/// objects by column name.
struct Archive {
    manifest: Value,
    rows: BTreeMap<String, Vec<serde_json::Map<String, Value>>>,
}

fn read_archive(path: &Path) -> Archive {
    let mut members = BTreeMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(path).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        members.insert(name, bytes);
    }
    let manifest: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    let mut rows = BTreeMap::new();
    for t in manifest["tables"].as_array().unwrap() {
        let bytes = &members[t["member"].as_str().unwrap()];
        assert_eq!(
            t["sha256"].as_str().unwrap(),
            hex_sha256(bytes),
            "{}",
            t["member"]
        );
        let text = String::from_utf8(zstd::decode_all(bytes.as_slice()).unwrap()).unwrap();
        let columns: Vec<&str> = t["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let table_rows: Vec<_> = text
            .lines()
            .map(|line| {
                let values: Vec<Value> = serde_json::from_str(line).unwrap();
                columns.iter().map(|c| c.to_string()).zip(values).collect()
            })
            .collect();
        assert_eq!(table_rows.len() as u64, t["rows"].as_u64().unwrap(), "{t}");
        rows.insert(t["name"].as_str().unwrap().to_string(), table_rows);
    }
    Archive { manifest, rows }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn table_names(archive: &Archive) -> BTreeSet<String> {
    archive.rows.keys().cloned().collect()
}

async fn put_patient(http: &reqwest::Client, server: &Server, token: &str, id: &str, family: &str) {
    let body = json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]});
    let r = http
        .put(format!("{}{BASE}/Patient/{id}", server.url))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn search_total(http: &reqwest::Client, server: &Server, token: &str, query: &str) -> u64 {
    let r = http
        .get(format!(
            "{}{BASE}/Patient?{query}&_total=accurate",
            server.url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let bundle: Value = r.json().await.unwrap();
    bundle["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{bundle}"))
}

/// Backups taken while four writers create and update Patients: in each archive every
/// resource's current version is in its history with the same content, its history has
/// every version up to it and none beyond, and every table of the schema is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writes_run_is_consistent() {
    for db in TestDb::all().await {
        let b = db.backend;
        let dir = loaded_dir();
        let server = Arc::new(Server::start(
            dir.path(),
            &["--insecure-http", "--database-url", db.url.as_str()],
        ));
        let http = reqwest::Client::new();
        let token = system_token_of(&server, dir.path(), &db, &http, "system/*.*").await;
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (server, http, token) = (server.clone(), http.clone(), token.clone());
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("w{w}-{}", i / 3);
                    put_patient(&http, &server, &token, &id, &format!("Family{i}")).await;
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
        let mut archives = Vec::new();
        for n in 0..2 {
            while acknowledged.load(Ordering::Relaxed) < 20 * (n + 1) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let out = dir.path().join(format!("backup-{n}.tar"));
            let (d, url, o) = (dir.path().to_path_buf(), db.url.clone(), out.clone());
            tokio::task::spawn_blocking(move || {
                cli(&d, &url, &["backup", "--out", o.to_str().unwrap()], "")
            })
            .await
            .unwrap();
            archives.push(out);
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        let schema = schema_tables(&db.url).await;
        for path in &archives {
            let archive = read_archive(path);
            assert_eq!(
                table_names(&archive),
                schema,
                "{b}: every table of the schema"
            );
            check_history_matches(&archive, b);
        }
    }
}

fn check_history_matches(archive: &Archive, b: &str) {
    let key = |r: &serde_json::Map<String, Value>| {
        (
            r["resource_type"].as_str().unwrap().to_string(),
            r["id"].as_str().unwrap().to_string(),
        )
    };
    let mut history: BTreeMap<(String, String), BTreeMap<i64, Value>> = BTreeMap::new();
    for h in &archive.rows["fhir_history"] {
        history
            .entry(key(h))
            .or_default()
            .insert(h["version_id"].as_i64().unwrap(), h["content"].clone());
    }
    let current = &archive.rows["fhir_resources"];
    assert!(current.len() >= 4, "{b}: the writers' resources are there");
    assert_eq!(
        current.len(),
        history.len(),
        "{b}: a history for every resource"
    );
    for r in current {
        let version = r["version_id"].as_i64().unwrap();
        let versions = &history[&key(r)];
        assert_eq!(
            versions.keys().copied().collect::<Vec<_>>(),
            (1..=version).collect::<Vec<_>>(),
            "{b}: {:?}",
            key(r)
        );
        assert_eq!(versions[&version], r["content"], "{b}: {:?}", key(r));
    }
}

/// Restored on PostgreSQL from SQLite and back: the row counts are the archive's, a
/// search finds what it found, a token issued before the backup is accepted, a client's
/// secret and a user's password still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_moves_everything_between_backends() {
    let dir = loaded_dir();
    let http = reqwest::Client::new();
    let sqlite = TestDb::sqlite();
    let server = Server::start(
        dir.path(),
        &["--insecure-http", "--database-url", sqlite.url.as_str()],
    );
    cli(
        dir.path(),
        &sqlite.url,
        &["user", "add", "bob", "--password-stdin"],
        PASSWORD,
    );
    let scope = "openid fhirUser patient/*.read";
    let app: Value = serde_json::from_str(&cli(
        dir.path(),
        &sqlite.url,
        &[
            "client",
            "add",
            "--name",
            "app",
            "--redirect-uri",
            CALLBACK,
            "--scope",
            scope,
        ],
        "",
    ))
    .unwrap();
    let backend: Value = serde_json::from_str(&cli(
        dir.path(),
        &sqlite.url,
        &[
            "client",
            "add",
            "--name",
            "backend",
            "--grant-type",
            "client_credentials",
            "--scope",
            "system/*.*",
        ],
        "",
    ))
    .unwrap();
    let token = client_token(&http, &server, &server.url, &backend, "system/*.*").await;
    for i in 0..5 {
        put_patient(&http, &server, &token, &format!("moved-{i}"), "Moved").await;
    }
    put_patient(&http, &server, &token, "stays", "Other").await;
    let first = dir.path().join("from-sqlite.tar");
    cli(
        dir.path(),
        &sqlite.url,
        &["backup", "--out", first.to_str().unwrap()],
        "",
    );
    drop(server);

    let postgres = TestDb::postgres().await;
    let back = TestDb::sqlite();
    let second = dir.path().join("from-postgres.tar");
    for (target, archive) in [(&postgres, &first), (&back, &second)] {
        if archive == &second {
            cli(
                dir.path(),
                &postgres.url,
                &["backup", "--out", second.to_str().unwrap()],
                "",
            );
        }
        let out = cli(
            dir.path(),
            &target.url,
            &["restore", "--from", archive.to_str().unwrap()],
            "",
        );
        assert!(out.contains("restored"), "{out}");
        let manifest = read_archive(archive).manifest;
        let counts = row_counts(&target.url).await;
        for t in manifest["tables"].as_array().unwrap() {
            assert_eq!(
                counts[t["name"].as_str().unwrap()],
                t["rows"].as_u64().unwrap(),
                "{}: {}",
                target.backend,
                t["name"]
            );
        }
        check_restored_server(dir.path(), target, &http, &token, &app, &backend).await;
    }
}

async fn check_restored_server(
    dir: &Path,
    db: &TestDb,
    http: &reqwest::Client,
    old_token: &str,
    app: &Value,
    backend: &Value,
) {
    let b = db.backend;
    // The restored server answers for the source's public URL (the tokens' issuer and
    // audience) from another port.
    let public = claims(old_token)["iss"].as_str().unwrap().to_string();
    let mut server = Server::start(
        dir,
        &[
            "--insecure-http",
            "--database-url",
            db.url.as_str(),
            "--public-url",
            public.as_str(),
        ],
    );
    let bound = server.stdout_lines.last().unwrap()["hestia: listening on ".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    server.url = format!("http://{bound}");
    assert_eq!(
        search_total(http, &server, old_token, "family=Moved").await,
        5,
        "{b}"
    );
    assert_eq!(
        search_total(http, &server, old_token, "family=Other").await,
        1,
        "{b}"
    );
    client_token(http, &server, &public, backend, "system/*.*").await;
    let (_, challenge) = pkce();
    // `code_flow` asserts that the sign-in with the password is accepted.
    let q = code_flow(
        &server.url,
        &browser(),
        app["client_id"].as_str().unwrap(),
        "bob",
        "openid fhirUser patient/*.read",
        &challenge,
        &[],
        &[],
    )
    .await;
    assert!(q.contains_key("code"), "{b}: {q:?}");
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// An archive with one user, made with the CLI on a new SQLite database.
fn small_archive(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("source.db");
    let url = format!("sqlite://{}", source.display());
    cli(
        dir,
        &url,
        &["user", "add", "carol", "--password-stdin"],
        PASSWORD,
    );
    let out = dir.join("small.tar");
    cli(dir, &url, &["backup", "--out", out.to_str().unwrap()], "");
    out
}

async fn usernames(url: &str) -> Vec<String> {
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let names = sqlx::query_scalar("SELECT username FROM users ORDER BY username")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    names
}

/// A database with an account in it is refused, and keeps its account; `--force`
/// replaces what it holds with the archive's.
#[tokio::test]
async fn a_restore_refuses_a_database_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let archive = small_archive(dir.path());
    for db in TestDb::all().await {
        let b = db.backend;
        cli(
            dir.path(),
            &db.url,
            &["user", "add", "dave", "--password-stdin"],
            PASSWORD,
        );
        let args = [
            "restore",
            "--from",
            archive.to_str().unwrap(),
            "--database-url",
            db.url.as_str(),
        ];
        let (ok, _, err) = hestia(dir.path(), &args, "");
        assert!(!ok, "{b}");
        assert!(
            err.contains("not empty")
                && err.contains("users has 1 rows")
                && err.contains("--force"),
            "{b}: {err}"
        );
        assert_eq!(usernames(&db.url).await, ["dave"], "{b}");
        cli(
            dir.path(),
            &db.url,
            &["restore", "--from", archive.to_str().unwrap(), "--force"],
            "",
        );
        assert_eq!(usernames(&db.url).await, ["carol"], "{b}");
    }
}

/// The byte offset and length of `member`'s data in the tar file.
fn member_span(archive: &Path, member: &str) -> (u64, u64) {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == member {
            return (entry.raw_file_position(), entry.size());
        }
    }
    panic!("no {member} in {}", archive.display());
}

/// One byte changed in a table's member: the restore names the member, and the target
/// gets no table at all (the checksums are checked before the database is touched).
#[tokio::test]
async fn a_damaged_archive_is_refused_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let archive = small_archive(dir.path());
    let (offset, len) = member_span(&archive, "tables/users.ndjson.zst");
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes[(offset + len / 2) as usize] ^= 0x40;
    let damaged = dir.path().join("damaged.tar");
    std::fs::write(&damaged, bytes).unwrap();
    for db in TestDb::all().await {
        let b = db.backend;
        let args = [
            "restore",
            "--from",
            damaged.to_str().unwrap(),
            "--database-url",
            db.url.as_str(),
        ];
        let (ok, _, err) = hestia(dir.path(), &args, "");
        assert!(!ok, "{b}");
        assert!(
            err.contains("damaged") && err.contains("tables/users.ndjson.zst"),
            "{b}: {err}"
        );
        assert_eq!(
            schema_tables(&db.url).await,
            BTreeSet::new(),
            "{b}: nothing written"
        );
    }
}

/// A tar like `archive` with `member` replaced by `content` (compressed), its checksum
/// and size updated in the manifest so that only the rows themselves are wrong.
fn with_member(archive: &Path, member: &str, content: &str, out: &Path) {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut members = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        members.push((name, bytes));
    }
    let replaced = zstd::encode_all(content.as_bytes(), 3).unwrap();
    let mut builder = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, mut bytes) in members {
        if name == member {
            bytes = replaced.clone();
        } else if name == "manifest.json" {
            let mut manifest: Value = serde_json::from_slice(&bytes).unwrap();
            for t in manifest["tables"].as_array_mut().unwrap() {
                if t["member"] == member {
                    t["sha256"] = hex_sha256(&replaced).into();
                    t["bytes"] = replaced.len().into();
                }
            }
            bytes = serde_json::to_vec(&manifest).unwrap();
        }
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        builder
            .append_data(&mut header, &name, bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap().flush().unwrap();
}

/// A restore that fails on the last table, after writing the others, leaves the target
/// as empty as it found it: a second restore of a good archive needs no `--force`.
#[tokio::test]
async fn a_restore_that_fails_midway_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = small_archive(dir.path());
    let order: Vec<String> = read_archive(&archive).manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        order.last().map(String::as_str),
        Some("users"),
        "users come last"
    );
    let broken = dir.path().join("broken.tar");
    with_member(
        &archive,
        "tables/users.ndjson.zst",
        "[\"one value\"]\n",
        &broken,
    );
    for db in TestDb::all().await {
        let b = db.backend;
        let args = [
            "restore",
            "--from",
            broken.to_str().unwrap(),
            "--database-url",
            db.url.as_str(),
        ];
        let (ok, _, err) = hestia(dir.path(), &args, "");
        assert!(!ok, "{b}");
        assert!(
            err.contains("users") && err.contains("columns"),
            "{b}: {err}"
        );
        let counts = row_counts(&db.url).await;
        let filled: Vec<_> = counts
            .iter()
            // The `*_revision` tables hold the one row their migration seeds.
            .filter(|(t, n)| **n > 0 && !t.ends_with("_revision"))
            .collect();
        assert!(filled.is_empty(), "{b}: {filled:?}");
        cli(
            dir.path(),
            &db.url,
            &["restore", "--from", archive.to_str().unwrap()],
            "",
        );
        assert_eq!(usernames(&db.url).await, ["carol"], "{b}");
    }
}

/// SIGTERM: new connections are refused, a request in flight that completes within
/// `server.shutdown_grace_secs` is answered, and one that does not (its body never ends)
/// holds the stop no longer than the grace period, after which the process exits cleanly.
#[test]
fn shutdown_finishes_requests_in_flight_within_the_grace_period() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hestia.toml"),
        "[server]\nshutdown_grace_secs = 3\n",
    )
    .unwrap();
    let mut server = Server::start(dir.path(), &["--insecure-http"]);
    let address = server.url.trim_start_matches("http://").to_string();
    let body = "grant_type=client_credentials&client_id=nobody-at-all";
    let start = |address: &str| {
        let mut conn = TcpStream::connect(address).unwrap();
        write!(
            conn,
            "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            &body[..10]
        )
        .unwrap();
        conn.flush().unwrap();
        conn
    };
    let (mut slow, mut stuck) = (start(&address), start(&address));
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.signal("TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        TcpStream::connect(&address).is_err(),
        "no new connection after SIGTERM"
    );
    slow.write_all(&body.as_bytes()[10..]).unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // The default grace is 30 s: an exit well before it is this configuration's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck request held the stop past shutdown_grace_secs"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut cut = Vec::new();
    let _ = stuck.read_to_end(&mut cut);
    assert!(cut.is_empty(), "{}", String::from_utf8_lossy(&cut));
}

/// SIGKILL while four writers create Patients: after a restart every create the server
/// acknowledged (201) is there, on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_create_survives_kill_9() {
    for db in TestDb::all().await {
        let b = db.backend;
        let dir = loaded_dir();
        let args = ["--insecure-http", "--database-url", db.url.as_str()];
        let mut server = Server::start(dir.path(), &args);
        let http = reqwest::Client::new();
        let token = system_token_of(&server, dir.path(), &db, &http, "system/*.*").await;
        let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut writers = Vec::new();
        for _ in 0..4 {
            let (url, http, token) = (server.url.clone(), http.clone(), token.clone());
            let acknowledged = acknowledged.clone();
            writers.push(tokio::spawn(async move {
                let body = json!({"resourceType": "Patient", "name": [{"family": "Durable"}]});
                loop {
                    let sent = http
                        .post(format!("{url}{BASE}/Patient"))
                        .bearer_auth(&token)
                        .header("content-type", "application/fhir+json")
                        .body(body.to_string())
                        .send()
                        .await;
                    let Ok(reply) = sent else { break };
                    if reply.status() != 201 {
                        break;
                    }
                    let Ok(created) = reply.json::<Value>().await else {
                        break;
                    };
                    let id = created["id"].as_str().unwrap().to_string();
                    acknowledged.lock().unwrap().push(id);
                }
            }));
        }
        while acknowledged.lock().unwrap().len() < 40 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for w in writers {
            w.await.unwrap();
        }
        let ids = acknowledged.lock().unwrap().clone();
        let server = Server::start(dir.path(), &args);
        // Another port, so another issuer: a new token.
        let token = system_token_of(&server, dir.path(), &db, &http, "system/*.read").await;
        for id in &ids {
            let r = http
                .get(format!("{}{BASE}/Patient/{id}", server.url))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{b}: Patient/{id} was acknowledged");
        }
        assert!(ids.len() >= 40, "{b}");
    }
}

/// The last migration of the previous release: a database it made is upgraded by `serve`.
const PREVIOUS_SCHEMA: i64 = 7;

/// A database as the previous release left it (the migrations up to
/// [`PREVIOUS_SCHEMA`], with an account, a client and a Patient written as that schema
/// holds them) is migrated by `serve` of this build, and its data still works: the
/// client's secret gets a token, the Patient reads back, the password verifies.
#[tokio::test]
async fn serve_upgrades_a_database_of_the_previous_schema() {
    use hestia::store::{NewUser, Store, hash_secret};
    for db in TestDb::all().await {
        let b = db.backend;
        let store = Store::connect(&db.url).await.unwrap();
        store.migrate_to(Some(PREVIOUS_SCHEMA)).await.unwrap();
        assert!(
            !schema_tables(&db.url).await.contains("user_roles"),
            "{b}: the older schema"
        );
        store
            .create_user(NewUser {
                username: "erin".into(),
                password: PASSWORD.into(),
                fhir_user: None,
            })
            .await
            .unwrap();
        let secret = "a-client-secret-of-the-previous-release";
        sqlx::query(
            "INSERT INTO clients (client_id, client_name, secret_hash, kind, token_endpoint_auth_method, redirect_uris, grant_types, scope, audiences, metadata, created_at) \
             VALUES ('old-backend', 'old', $1, 'app', 'client_secret_basic', '[]', '[\"client_credentials\"]', 'system/*.*', '[]', '{}', 1700000000)",
        )
        .bind(hash_secret(secret))
        .execute(store.pool())
        .await
        .unwrap();
        let patient = json!({"resourceType": "Patient", "id": "old-1", "meta": {"versionId": "1", "lastUpdated": "2023-11-14T22:13:20Z"}, "name": [{"family": "Older"}]});
        for sql in [
            "INSERT INTO fhir_resources (resource_type, id, version_id, last_updated, deleted, content) VALUES ('Patient', 'old-1', 1, 1700000000000, 0, $1)",
            "INSERT INTO fhir_history (resource_type, id, version_id, last_updated, method, deleted, content) VALUES ('Patient', 'old-1', 1, 1700000000000, 'POST', 0, $1)",
        ] {
            sqlx::query(sql)
                .bind(patient.to_string())
                .execute(store.pool())
                .await
                .unwrap();
        }
        store.close().await;

        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(
            dir.path(),
            &["--insecure-http", "--database-url", db.url.as_str()],
        );
        assert!(
            schema_tables(&db.url).await.contains("user_roles"),
            "{b}: migrated"
        );
        let http = reqwest::Client::new();
        let client = json!({"client_id": "old-backend", "client_secret": secret});
        let token = client_token(&http, &server, &server.url, &client, "system/*.*").await;
        let r = http
            .get(format!("{}{BASE}/Patient/old-1", server.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{b}");
        let read: Value = r.json().await.unwrap();
        assert_eq!(read["name"][0]["family"], "Older", "{b}");
        let store = Store::connect(&db.url).await.unwrap();
        assert!(
            store.verify_user("erin", PASSWORD).await.unwrap().is_some(),
            "{b}"
        );
        store.close().await;
    }
}

/// `serve --demo` also serves the Basic-compatibility FHIR base its Postman environment
/// names (`basicFhirBase`): there a token alone is refused for want of Basic credentials,
/// while the main FHIR base takes the same token.
#[tokio::test]
async fn the_demo_serves_the_basic_compatibility_base_of_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo"]);
    let lines = server.stdout_lines.clone();
    let client_id = crate::support::demo_value(&lines, "client_id ");
    let secret = crate::support::demo_value(&lines, "client_secret ");
    let environment = server
        .data_dir
        .join("postman")
        .join("Hestia.postman_environment.json");
    let env: Value = serde_json::from_str(&std::fs::read_to_string(environment).unwrap()).unwrap();
    let value = |key: &str| {
        env["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {env}"))["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (main, basic) = (value("fhirBase"), value("basicFhirBase"));
    assert!(basic.starts_with("https://") && basic != main, "{basic}");
    assert!(
        lines.iter().any(|l| l.contains(&basic)),
        "the banner names it: {lines:#?}"
    );
    let http = crate::support::client_trusting(&server.data_dir.join("tls").join("ca.pem"));
    let client = json!({"client_id": client_id, "client_secret": secret});
    let token = client_token(&http, &server, &server.url, &client, "system/*.read").await;
    let get = |base: String| {
        http.get(format!("{base}/Patient/demo-amy"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(get(main).await.unwrap().status(), 200);
    let refused = get(basic).await.unwrap();
    assert_eq!(refused.status(), 401);
    let text = refused.text().await.unwrap();
    assert!(text.contains("require_basic_auth"), "{text}");
}

/// Tables the migrations may yet add, with the types that differ between the backends:
/// booleans, bytes, JSON, timestamps, reals and a generated key survive SQLite →
/// PostgreSQL → SQLite, and PostgreSQL's sequence continues after the restored keys.
#[tokio::test]
async fn a_restore_converts_column_types_between_backends() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let (sqlite, postgres, back) = (TestDb::sqlite(), TestDb::postgres().await, TestDb::sqlite());
    let sqlite_table = "CREATE TABLE kinds (id INTEGER PRIMARY KEY AUTOINCREMENT, flag BOOLEAN NOT NULL, data BLOB, doc JSONB, at TIMESTAMP, ratio DOUBLE PRECISION)";
    let postgres_table = "CREATE TABLE kinds (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, flag BOOLEAN NOT NULL, data BYTEA, doc JSONB, at TIMESTAMPTZ, ratio DOUBLE PRECISION)";
    cli(dir.path(), &sqlite.url, &["user", "list"], "");
    let run = |url: String, sql: String| async move {
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::query(&sql).execute(&pool).await.unwrap();
        pool.close().await;
    };
    run(sqlite.url.clone(), sqlite_table.into()).await;
    run(
        sqlite.url.clone(),
        "INSERT INTO kinds (flag, data, doc, at, ratio) VALUES (1, x'00ff', '{\"a\": [1, 2]}', '2026-01-02 03:04:05+00', 0.5), (0, NULL, NULL, NULL, NULL)".into(),
    )
    .await;
    let first = dir.path().join("kinds.tar");
    cli(
        dir.path(),
        &sqlite.url,
        &["backup", "--out", first.to_str().unwrap()],
        "",
    );
    run(postgres.url.clone(), postgres_table.into()).await;
    cli(
        dir.path(),
        &postgres.url,
        &["restore", "--from", first.to_str().unwrap()],
        "",
    );
    run(
        postgres.url.clone(),
        "INSERT INTO kinds (flag) VALUES (true)".into(),
    )
    .await;
    let pool = sqlx::AnyPool::connect(&postgres.url).await.unwrap();
    let row: (String, String, String, bool, f64) = sqlx::query_as(
        "SELECT flag::text, encode(data, 'hex'), (doc->'a'->>1), at = '2026-01-02 03:04:05+00'::timestamptz, ratio FROM kinds WHERE id = 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row, ("true".into(), "00ff".into(), "2".into(), true, 0.5));
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM kinds ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        ids,
        [1, 2, 3],
        "the sequence continues after the restored keys"
    );
    pool.close().await;

    let second = dir.path().join("kinds-back.tar");
    cli(
        dir.path(),
        &postgres.url,
        &["backup", "--out", second.to_str().unwrap()],
        "",
    );
    cli(dir.path(), &back.url, &["user", "list"], "");
    run(back.url.clone(), sqlite_table.into()).await;
    cli(
        dir.path(),
        &back.url,
        &["restore", "--from", second.to_str().unwrap()],
        "",
    );
    let pool = sqlx::AnyPool::connect(&back.url).await.unwrap();
    let row: (i64, String, i64, String, f64) = sqlx::query_as(
        "SELECT CAST(flag AS INTEGER), hex(data), json_extract(doc, '$.a[1]'), CAST(at AS TEXT), ratio FROM kinds WHERE id = 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((row.0, row.1.as_str(), row.2, row.4), (1, "00FF", 2, 0.5));
    assert!(row.3.starts_with("2026-01-02 03:04:05"), "{}", row.3);
    let nulls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM kinds WHERE id = 2 AND flag = 0 AND data IS NULL AND doc IS NULL AND at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(nulls, 1);
    pool.close().await;
}

/// The archive of a SQLite database holding `n` Patients, loaded by `hestia fhir import`
/// (with their history and search index rows: about ten rows each).
fn large_archive(dir: &Path, n: usize) -> std::path::PathBuf {
    let url = format!("sqlite://{}", dir.join("large.db").display());
    let file = dir.join("patients.ndjson");
    let lines: Vec<String> = (0..n)
        .map(|i| {
            json!({"resourceType": "Patient", "id": format!("big{i}"),
                   "identifier": [{"system": "urn:test", "value": format!("{i}")}],
                   "name": [{"family": format!("Family{}", i % 97), "given": ["Kim", "Lee"]}],
                   "gender": "female", "birthDate": "1970-01-01"})
            .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let data = dir.join("import-data");
    let args = [
        "fhir",
        "import",
        "--database-url",
        &url,
        "--data-dir",
        data.to_str().unwrap(),
        file.to_str().unwrap(),
    ];
    let (ok, _, err) = hestia(dir, &args, "");
    assert!(ok, "hestia fhir import failed: {err}");
    let out = dir.join("large.tar");
    cli(dir, &url, &["backup", "--out", out.to_str().unwrap()], "");
    out
}

/// Whether a restore's transaction is writing into `db`, seen from outside: PostgreSQL
/// lists its `INSERT` into a resource table inside an open transaction; on SQLite the
/// schema is complete (the migrations, each committed on its own, are over) and another
/// connection holds the write lock, which only the restore's transaction takes after them.
async fn restore_is_writing(db: &TestDb, schema_version: i64) -> bool {
    use sqlx::Connection;
    if db.backend == "postgres" {
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let writing: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND xact_start IS NOT NULL \
             AND query LIKE 'INSERT INTO \"fhir_%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        return writing > 0;
    }
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.url)
        .unwrap()
        .busy_timeout(std::time::Duration::ZERO);
    // Not there yet, or not migrated yet: not writing rows.
    let Ok(mut conn) = sqlx::SqliteConnection::connect_with(&options).await else {
        return false;
    };
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .ok()
        .flatten();
    let locked = version == Some(schema_version)
        && match sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await {
            Ok(_) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                false
            }
            Err(e) => {
                assert!(e.to_string().contains("locked"), "{e}");
                true
            }
        };
    conn.close().await.unwrap();
    locked
}

/// `hestia restore` killed with SIGKILL while its transaction writes rows: the target has
/// none of the archive's rows, and a second restore, without `--force`, fills it.
#[tokio::test]
async fn a_restore_killed_midway_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = large_archive(dir.path(), 10_000);
    let manifest = read_archive(&archive).manifest;
    let version = manifest["schema_version"].as_i64().unwrap();
    for db in TestDb::all().await {
        let b = db.backend;
        let mut child = std::process::Command::new(crate::support::hestia_bin())
            .current_dir(dir.path())
            .args(["restore", "--from", archive.to_str().unwrap()])
            .args(["--database-url", db.url.as_str()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !restore_is_writing(&db, version).await {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{b}: the restore ended before it was seen writing"
            );
            assert!(started.elapsed().as_secs() < 300, "{b}: no restore seen");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Into its rows, well before their end.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{b}: the restore finished before the kill"
        );
        let filled: Vec<_> = row_counts(&db.url)
            .await
            .into_iter()
            // The `*_revision` tables hold the one row their migration seeds.
            .filter(|(t, n)| *n > 0 && !t.ends_with("_revision"))
            .collect();
        assert!(filled.is_empty(), "{b}: {filled:?}");

        cli(
            dir.path(),
            &db.url,
            &["restore", "--from", archive.to_str().unwrap()],
            "",
        );
        let counts = row_counts(&db.url).await;
        for t in manifest["tables"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            assert_eq!(counts[name], t["rows"].as_u64().unwrap(), "{b}: {name}");
        }
        assert_eq!(counts["fhir_resources"], 10_000, "{b}");
    }
}
