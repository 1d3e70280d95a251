//! The store on both databases: accounts and clients.

use hestia::store::fhir::{StoredVersion, fhir_current, fhir_write};
use hestia::store::{
    ClientKind, IssuedToken, NewAuditEvent, NewClient, NewUser, Store, StoreError,
};

use crate::support::TestDb;

fn app_client(public: bool) -> NewClient {
    NewClient {
        client_name: "Postman".into(),
        kind: ClientKind::App,
        public,
        redirect_uris: vec!["https://oauth.pstmn.io/v1/callback".into()],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        scope: "openid patient/*.read".into(),
        audiences: vec![],
        metadata: serde_json::json!({"contacts": ["ops@example.org"]}),
    }
}

#[tokio::test]
async fn users_on_both_databases() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        store.migrate().await.expect("migrating twice is a no-op");
        let user = store
            .create_user(NewUser {
                username: "alice".into(),
                password: "correct horse".into(),
                fhir_user: Some("Patient/123".into()),
            })
            .await
            .unwrap();
        assert_eq!(user.fhir_user.as_deref(), Some("Patient/123"));
        // At rest: an argon2id hash (PHC string), never the password.
        let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let hash: String =
            sqlx::query_scalar("SELECT password_hash FROM users WHERE username = $1")
                .bind("alice")
                .fetch_one(&raw)
                .await
                .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{}: {hash}", db.backend);
        assert!(!hash.contains("correct horse"));
        if db.backend == "sqlite" {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&raw)
                .await
                .unwrap();
            assert_eq!(mode, "wal", "SQLite runs in WAL mode");
        }
        raw.close().await;
        let found = store.verify_user("alice", "correct horse").await.unwrap();
        assert_eq!(
            found.as_ref().map(|u| &u.id),
            Some(&user.id),
            "{}",
            db.backend
        );
        assert!(
            store
                .verify_user("alice", "wrong horse")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_user("bob", "correct horse")
                .await
                .unwrap()
                .is_none()
        );

        let dup = store
            .create_user(NewUser {
                username: "alice".into(),
                password: "another one".into(),
                fhir_user: None,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(dup, StoreError::Conflict(_)),
            "{}: {dup}",
            db.backend
        );

        for (username, password, fhir_user, needle) in [
            ("bad name", "long enough", None, "username"),
            ("carol", "short", None, "at least 8"),
            ("dave", "long enough", Some("Observation/1"), "TYPE/ID"),
        ] {
            let err = store
                .create_user(NewUser {
                    username: username.into(),
                    password: password.into(),
                    fhir_user: fhir_user.map(str::to_string),
                })
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{}: {err}", db.backend);
            assert!(
                store.find_user(username).await.unwrap().is_none(),
                "nothing stored"
            );
        }
        store.close().await;
    }
}

/// A confidential client's secret is verified and stored as its SHA-256, never in clear.
#[tokio::test]
async fn client_secrets_are_verified_and_kept_as_sha256_on_both_databases() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let (client, secret) = store.create_client(app_client(false)).await.unwrap();
        let secret = secret.expect("a confidential client gets a secret").0;
        for (client_id, secret, valid) in [
            (client.client_id.as_str(), secret.as_str(), true),
            (client.client_id.as_str(), "guess", false),
            ("unknown", secret.as_str(), false),
        ] {
            assert_eq!(
                store.verify_client_secret(client_id, secret).await.unwrap(),
                valid,
                "{}: {client_id} {secret}",
                db.backend
            );
        }
        assert_eq!(
            store.get_client(&client.client_id).await.unwrap().as_ref(),
            Some(&client),
            "{}",
            db.backend
        );

        // At rest: the secret's SHA-256, never the secret.
        let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let stored: Option<String> =
            sqlx::query_scalar("SELECT secret_hash FROM clients WHERE client_id = $1")
                .bind(&client.client_id)
                .fetch_one(&raw)
                .await
                .unwrap();
        let stored = stored.expect("a confidential client has a secret hash");
        assert!(!stored.contains(&secret), "{}", db.backend);
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(secret.as_bytes());
        assert_eq!(
            stored,
            hex(&digest),
            "the stored value is the secret's SHA-256"
        );
        raw.close().await;
        store.close().await;
    }
}

/// A public client gets no secret, and an empty one does not authenticate it.
#[tokio::test]
async fn public_clients_have_no_secret_on_both_databases() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let (public, none) = store.create_client(app_client(true)).await.unwrap();
        assert!(none.is_none(), "{}", db.backend);
        assert!(public.is_public(), "{}", db.backend);
        assert!(
            !store
                .verify_client_secret(&public.client_id, "")
                .await
                .unwrap(),
            "{}",
            db.backend
        );
        store.close().await;
    }
}

/// Clients are listed all together and by kind, and removed once.
#[tokio::test]
async fn clients_are_listed_by_kind_and_removed_on_both_databases() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let (client, _) = store.create_client(app_client(false)).await.unwrap();
        let (public, _) = store.create_client(app_client(true)).await.unwrap();
        let listed: Vec<_> = store
            .list_clients()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.client_id)
            .collect();
        assert_eq!(listed.len(), 2, "{}", db.backend);
        assert!(listed.contains(&client.client_id) && listed.contains(&public.client_id));
        let mut server = app_client(false);
        server.kind = ClientKind::ResourceServer;
        server.audiences = vec!["https://fhir.example/r4".into()];
        let (server, _) = store.create_client(server).await.unwrap();
        let servers = store
            .list_clients_of_kind(ClientKind::ResourceServer)
            .await
            .unwrap();
        assert_eq!(servers.len(), 1, "{}: {servers:?}", db.backend);
        assert_eq!(servers[0].client_id, server.client_id);
        assert_eq!(servers[0].audiences, ["https://fhir.example/r4"]);
        let apps = store.list_clients_of_kind(ClientKind::App).await.unwrap();
        assert_eq!(apps.len(), 2, "{}", db.backend);
        store.remove_client(&server.client_id).await.unwrap();

        store.remove_client(&public.client_id).await.unwrap();
        assert!(matches!(
            store.remove_client(&public.client_id).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            store.list_clients().await.unwrap().len(),
            1,
            "{}",
            db.backend
        );
        store.close().await;
    }
}

/// A client with a fragment in a redirect URI, a public client with client_credentials
/// or an unsupported grant type is refused, and nothing is stored.
#[tokio::test]
async fn bad_clients_are_refused_and_store_nothing_on_both_databases() {
    let mut fragment = app_client(false);
    fragment.redirect_uris = vec!["https://app.example/cb#frag".into()];
    let mut credentials = app_client(true);
    credentials.grant_types = vec!["client_credentials".into()];
    let mut password = app_client(false);
    password.grant_types = vec!["password".into()];
    let cases = [
        (fragment, "fragment"),
        (credentials, "public client cannot use client_credentials"),
        (password, "\"password\" is not supported"),
    ];
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        store.create_client(app_client(false)).await.unwrap();
        for (bad, needle) in &cases {
            let err = store.create_client(bad.clone()).await.unwrap_err();
            let err = err.to_string();
            assert!(err.contains(needle), "{}: {err}", db.backend);
        }
        assert_eq!(
            store.list_clients().await.unwrap().len(),
            1,
            "bad input stored nothing"
        );
        store.close().await;
    }
}

/// A pooled PostgreSQL connection that the server dropped while it sat idle is not handed
/// to the next query: one idle for half a second or more is pinged first, and one that
/// fails is replaced (connections in use more recently are not pinged before use; see
/// `PING_IF_IDLE_FOR` in `store/mod.rs`); so is the connection kept for the revisions.
#[tokio::test]
async fn pooled_connections_the_server_dropped_are_replaced() {
    use sqlx::Connection;
    for db in TestDb::all().await {
        if db.backend != "postgres" {
            continue;
        }
        let store = Store::open(&db.url).await.unwrap();
        // Several connections in the pool at once.
        let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| store.pool().acquire()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        drop(held);
        store.ping().await.unwrap();
        // And the connection the revisions are read on, kept out of the pool.
        store.revisions().await.unwrap();
        let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let dropped: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(dropped.len() >= 2, "{dropped:?}");
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        for n in 0..8 {
            store.ping().await.unwrap_or_else(|e| {
                panic!("query {n} after the server dropped the pool's connections: {e}")
            });
        }
        store
            .revisions()
            .await
            .expect("the revisions after the server dropped their kept connection");
        admin.close().await.unwrap();
        store.close().await;
    }
}

/// Writes from many requests at once all succeed: on SQLite an update reads the current
/// version and then writes, and without taking turns a concurrent writer made it fail with
/// "database is locked" (a 500) instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_all_succeed_on_both_databases() {
    for db in TestDb::all().await {
        let (app, _) = crate::support::app_on(&db, "").await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let app = app.clone();
            tasks.spawn(async move {
                let mut statuses = Vec::new();
                for version in 1..=4 {
                    let body = serde_json::json!({
                        "resourceType": "Patient", "id": format!("c{i}"),
                        "name": [{"family": format!("Version{version}")}]
                    });
                    let put = crate::support::call(
                        &app,
                        "PUT",
                        &format!("/fhir/r4/Patient/c{i}"),
                        &[("content-type", "application/fhir+json")],
                        body.to_string(),
                    )
                    .await;
                    statuses.push((put.status, put.diagnostics()));
                    let post = crate::support::call(
                        &app,
                        "POST",
                        "/fhir/r4/Patient",
                        &[("content-type", "application/fhir+json")],
                        r#"{"resourceType":"Patient","active":true}"#,
                    )
                    .await;
                    statuses.push((post.status, post.diagnostics()));
                }
                statuses
            });
        }
        let mut failures = Vec::new();
        while let Some(statuses) = tasks.join_next().await {
            failures.extend(
                statuses
                    .unwrap()
                    .into_iter()
                    .filter(|(status, _)| !matches!(status, 200 | 201)),
            );
        }
        assert!(failures.is_empty(), "{}: {failures:?}", db.backend);
        for i in 0..16 {
            let read =
                crate::support::call(&app, "GET", &format!("/fhir/r4/Patient/c{i}"), &[], "").await;
            assert_eq!(
                read.body["meta"]["versionId"], "4",
                "{}: Patient/c{i}",
                db.backend
            );
            assert_eq!(read.body["name"][0]["family"], "Version4", "{}", db.backend);
        }
        let all =
            crate::support::call(&app, "GET", "/fhir/r4/Patient?_summary=count", &[], "").await;
        assert_eq!(all.body["total"], 16 + 16 * 4, "{}", db.backend);
    }
}

/// Concurrent updates, patches and deletes of the same resource all succeed, one after the
/// other: each reads the version the one before committed. On PostgreSQL two updates read
/// the same version without a row lock, and the later one failed with 409 on the version
/// both computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_resource_take_turns_on_both_databases() {
    for db in TestDb::all().await {
        let (app, _) = crate::support::app_on(&db, "").await;
        let json = [("content-type", "application/fhir+json")];
        let created = crate::support::call(
            &app,
            "PUT",
            "/fhir/r4/Patient/shared",
            &json,
            r#"{"resourceType":"Patient","id":"shared"}"#,
        )
        .await;
        assert_eq!(created.status, 201, "{}", db.backend);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let app = app.clone();
            tasks.spawn(async move {
                let mut statuses = Vec::new();
                for round in 0..4 {
                    let answer = if (i + round) % 2 == 0 {
                        let body = serde_json::json!({
                            "resourceType": "Patient", "id": "shared",
                            "name": [{"family": format!("Writer{i}")}]
                        });
                        crate::support::call(
                            &app,
                            "PUT",
                            "/fhir/r4/Patient/shared",
                            &[("content-type", "application/fhir+json")],
                            body.to_string(),
                        )
                        .await
                    } else {
                        crate::support::call(
                            &app,
                            "PATCH",
                            "/fhir/r4/Patient/shared",
                            &[("content-type", "application/json-patch+json")],
                            r#"[{"op":"add","path":"/active","value":true}]"#,
                        )
                        .await
                    };
                    statuses.push((answer.status, answer.diagnostics()));
                }
                statuses
            });
        }
        let mut failures = Vec::new();
        while let Some(statuses) = tasks.join_next().await {
            failures.extend(statuses.unwrap().into_iter().filter(|(s, _)| *s != 200));
        }
        assert!(failures.is_empty(), "{}: {failures:?}", db.backend);
        let read = crate::support::call(&app, "GET", "/fhir/r4/Patient/shared", &[], "").await;
        assert_eq!(read.body["meta"]["versionId"], "33", "{}", db.backend);
        let history =
            crate::support::call(&app, "GET", "/fhir/r4/Patient/shared/_history", &[], "").await;
        assert_eq!(history.body["total"], 33, "{}", db.backend);
    }
}

/// A write transaction that has read, and a write outside the process's write turn (as a
/// token's record is written) committed meanwhile: on SQLite the transaction held the
/// write lock from its start, so the other write waits for its commit instead of leaving
/// it behind a stale snapshot ("database is locked", code 517); both commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_outside_the_turn_waits_for_a_write_transaction() {
    for db in TestDb::all().await {
        let b = db.backend;
        let store = Store::open(&db.url).await.unwrap();
        sqlx::query("CREATE TABLE probe (n INTEGER)")
            .execute(store.pool())
            .await
            .unwrap();
        let mut tx = store.begin().await.unwrap();
        let seen = fhir_current(&mut tx, "Basic", "probe").await.unwrap();
        assert_eq!(seen, None, "{b}");
        let pool = store.pool().clone();
        let outside = tokio::spawn(async move {
            sqlx::query("INSERT INTO probe (n) VALUES (1)")
                .execute(&pool)
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let version = StoredVersion {
            resource_type: "Basic".into(),
            id: "probe".into(),
            version_id: 1,
            last_updated: 1,
            deleted: false,
            content: r#"{"resourceType":"Basic","id":"probe"}"#.into(),
            method: "PUT".into(),
        };
        fhir_write(&mut tx, &version, None)
            .await
            .unwrap_or_else(|e| panic!("{b}: {e}"));
        tx.commit().await.unwrap();
        outside
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{b}: {e}"));
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM probe")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1, "{b}");
        let written = store.fhir_current("Basic", "probe").await.unwrap();
        assert_eq!(written, Some(version), "{b}");
        store.close().await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The purge deletes what expired before the cutoff (access-token records, codes, refresh
/// tokens) and the grants created before it that have none of them left; live records,
/// and the grants they belong to, stay. A backlog larger than one batch goes in one call.
#[tokio::test]
async fn expired_oauth_records_are_purged_on_both_databases() {
    use hestia::store::{PURGE_BATCH, Purged};
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let (client, _) = store.create_client(app_client(false)).await.unwrap();
        let extra = PURGE_BATCH + 5;
        seed_oauth_records(&store, &client.client_id, extra).await;

        let purged = store.purge_expired_oauth(1_000).await.unwrap();
        assert_eq!(
            purged,
            Purged {
                access_tokens: extra + 1,
                codes: 1,
                refresh_tokens: 1,
                grants: 1,
            },
            "{}",
            db.backend
        );
        for (hash, kept) in [
            ("live-access", true),
            ("spent-0", false),
            ("refreshing-access", false),
        ] {
            let found = store.access_token_record(hash).await.unwrap();
            assert_eq!(found.is_some(), kept, "{}: {hash}", db.backend);
        }
        for (hash, kept) in [("refreshing-refresh", true), ("spent-refresh", false)] {
            let found = store.get_refresh_token(hash).await.unwrap();
            assert_eq!(found.is_some(), kept, "{}: {hash}", db.backend);
        }
        let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let mut grants: Vec<String> = sqlx::query_scalar("SELECT grant_id FROM oauth_grants")
            .fetch_all(&raw)
            .await
            .unwrap();
        grants.sort();
        assert_eq!(grants, ["live", "new", "refreshing"], "{}", db.backend);
        raw.close().await;
        assert_eq!(
            store.purge_expired_oauth(1_000).await.unwrap(),
            Purged::default(),
            "a second purge finds nothing: {}",
            db.backend
        );
        store.close().await;
    }
}

/// The grants of [`expired_oauth_records_are_purged_on_both_databases`], of client `cid`,
/// against a cutoff of 1,000: "spent" (everything expired, `spent_tokens` access tokens,
/// a refresh token and a code), "refreshing" (its access token expired, its refresh token
/// lives), "live" (a token that has not expired) and "new" (created after the cutoff, its
/// token not recorded yet: a token request in flight).
async fn seed_oauth_records(store: &Store, cid: &str, spent_tokens: u64) {
    use hestia::store::{CodeRow, RefreshRow};
    let refresh = |hash: &str, grant: &str, expires_at: i64| RefreshRow {
        token_hash: hash.into(),
        grant_id: grant.into(),
        client_id: cid.into(),
        user_id: None,
        scope: "patient/*.read".into(),
        audiences: vec![],
        patient: None,
        fhir_user: None,
        auth_time: None,
        created_at: 100,
        expires_at,
        used_at: None,
    };
    store.create_grant("spent", cid, None, 100).await.unwrap();
    for i in 0..spent_tokens {
        store
            .record_access_token(&format!("spent-{i}"), "spent", cid, 200)
            .await
            .unwrap();
    }
    store
        .insert_refresh_token(&refresh("spent-refresh", "spent", 300))
        .await
        .unwrap();
    store
        .insert_code(&CodeRow {
            code_hash: "spent-code".into(),
            grant_id: "spent".into(),
            client_id: cid.into(),
            user_id: "someone".into(),
            redirect_uri: "https://oauth.pstmn.io/v1/callback".into(),
            redirect_uri_given: true,
            scope: "openid".into(),
            audiences: vec![],
            patient: None,
            fhir_user: None,
            nonce: None,
            code_challenge: None,
            code_challenge_method: None,
            auth_time: 100,
            created_at: 100,
            expires_at: 160,
            used_at: Some(110),
        })
        .await
        .unwrap();
    store
        .create_grant("refreshing", cid, None, 100)
        .await
        .unwrap();
    store
        .record_access_token("refreshing-access", "refreshing", cid, 200)
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh("refreshing-refresh", "refreshing", 10_000))
        .await
        .unwrap();
    store.create_grant("live", cid, None, 100).await.unwrap();
    store
        .record_access_token("live-access", "live", cid, 10_000)
        .await
        .unwrap();
    store.create_grant("new", cid, None, 5_000).await.unwrap();
}

/// The console's purge deletes audit events older than the retention and sessions idle
/// past the timeout; newer events and live sessions stay.
#[tokio::test]
async fn old_audit_events_and_idle_console_sessions_are_purged_on_both_databases() {
    use hestia::config::AdminSettings;
    use hestia::console::{ConsolePurged, purge};
    use hestia::store::AuditFilter;
    use std::time::Duration;
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let day = 86_400;
        let now = 1_000 * day;
        for (at, action) in [
            (now - 91 * day, "old"),
            (now - 89 * day, "kept"),
            (now, "new"),
        ] {
            let event = NewAuditEvent {
                actor: "root".into(),
                action: action.into(),
                ..Default::default()
            };
            store.record_audit(event, at).await.unwrap();
        }
        store
            .create_admin_session("idle", "u1", "root", "c1", now - 901)
            .await
            .unwrap();
        store
            .create_admin_session("live", "u1", "root", "c2", now - 10)
            .await
            .unwrap();
        let admin = AdminSettings {
            session_idle: Duration::from_secs(900),
            audit_retain: Duration::from_secs(90 * day as u64),
        };
        let purged = purge(&store, &admin, now).await.unwrap();
        let expected = ConsolePurged {
            sessions: 1,
            audit_events: 1,
        };
        assert_eq!(purged, expected, "{}", db.backend);
        let filter = AuditFilter {
            limit: 10,
            ..Default::default()
        };
        let left: Vec<_> = store.audit_events(&filter).await.unwrap();
        let actions: Vec<_> = left.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["new", "kept"], "{}", db.backend);
        assert!(
            store
                .touch_admin_session("live", now - 900, now)
                .await
                .unwrap()
                .is_some(),
            "{}",
            db.backend
        );
        assert!(
            store
                .touch_admin_session("idle", now - 900 - 1_000, now)
                .await
                .unwrap()
                .is_none(),
            "the idle session is gone: {}",
            db.backend
        );
        let again = purge(&store, &admin, now).await.unwrap();
        assert_eq!(again, ConsolePurged::default(), "{}", db.backend);
        store.close().await;
    }
}

/// Plain creates sent at once are committed together (`store::group`), and each still gets
/// its own answer: a create whose id is taken fails with a conflict alone, the others of
/// its group are written with their history and index rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_creates_answer_each_create_on_both_databases() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let patient = |id: &str| {
            let resource = serde_json::json!({
                "resourceType": "Patient", "id": id, "name": [{"family": format!("Grouped-{id}")}]
            });
            let index = hestia::fhir::search::extract(&resource).unwrap();
            let version = StoredVersion {
                resource_type: "Patient".into(),
                id: id.into(),
                version_id: 1,
                last_updated: 1_700_000_000_000,
                deleted: false,
                content: resource.to_string(),
                method: "POST".into(),
            };
            (version, index)
        };
        let (taken, index) = patient("taken");
        store.create_grouped(taken, index).await.unwrap();

        let mut creates = tokio::task::JoinSet::new();
        for i in 0..40 {
            let id = if i == 17 {
                "taken".to_string()
            } else {
                format!("g{i}")
            };
            let (version, index) = patient(&id);
            let store = store.clone();
            creates.spawn(async move { (id, store.create_grouped(version, index).await) });
        }
        let mut created = Vec::new();
        while let Some(answer) = creates.join_next().await {
            match answer.unwrap() {
                (id, Ok(version)) => {
                    assert_eq!(version.id, id, "{}", db.backend);
                    created.push(id);
                }
                (id, Err(err)) => {
                    assert_eq!(id, "taken", "{}: {err}", db.backend);
                    assert!(
                        matches!(err, StoreError::Conflict(_)),
                        "{}: {err}",
                        db.backend
                    );
                }
            }
        }
        assert_eq!(created.len(), 39, "{}", db.backend);
        for id in &created {
            let current = store.fhir_current("Patient", id).await.unwrap();
            assert_eq!(
                current.map(|v| v.version_id),
                Some(1),
                "{}: Patient/{id}",
                db.backend
            );
        }
        let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
        for (sql, expected) in [
            (
                "SELECT COUNT(*) FROM fhir_history WHERE resource_type = 'Patient'",
                40,
            ),
            (
                "SELECT COUNT(*) FROM fhir_idx_string WHERE resource_type = 'Patient' \
                 AND param = 'name' AND part = 'family' AND exact LIKE 'Grouped-%'",
                40,
            ),
        ] {
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&raw).await.unwrap();
            assert_eq!(n, expected, "{}: {sql}", db.backend);
        }
        raw.close().await;
        store.close().await;
    }
}

/// Token records and audit events sent at once are committed in groups (`store::group`),
/// and each still gets its own answer: a record whose `jti` is taken fails alone, with the
/// event that came with it, and every other record and event of its group is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_token_records_and_audit_events_answer_each_on_both_databases() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let record = |jti: &str, grant: &str| IssuedToken {
            jti: jti.into(),
            grant_id: grant.into(),
            client_id: "grouped-client".into(),
            expires_at: 4_000_000_000,
            new_grant: Some((None, 1_700_000_000)),
        };
        store
            .record_issued(record("taken", "g-taken"), None)
            .await
            .unwrap();

        let mut writes = tokio::task::JoinSet::new();
        for i in 0..60 {
            let store = store.clone();
            writes.spawn(async move {
                let jti = if i == 24 {
                    "taken".to_string()
                } else {
                    format!("t{i}")
                };
                let event = NewAuditEvent {
                    actor: "grouped-client".into(),
                    action: "token.issued".into(),
                    target: format!("t{i}"),
                    outcome: "ok".into(),
                    ..Default::default()
                };
                let at = 1_700_000_000 + i;
                // Even ones: the event comes with the record; odd ones: on its own.
                let (issued, audited) = if i % 2 == 0 {
                    let record = record(&jti, &format!("g{i}"));
                    (store.record_issued(record, Some((event, at))).await, Ok(()))
                } else {
                    let issued = store.record_issued(record(&jti, &format!("g{i}")), None);
                    (issued.await, store.record_audit(event, at).await)
                };
                (jti, issued, audited)
            });
        }
        let mut recorded = 0;
        while let Some(answer) = writes.join_next().await {
            let (jti, issued, audited) = answer.unwrap();
            audited.unwrap_or_else(|e| panic!("{}: audit of {jti}: {e}", db.backend));
            match issued {
                Ok(()) => recorded += 1,
                Err(err) => assert_eq!(jti, "taken", "{}: {err}", db.backend),
            }
        }
        assert_eq!(recorded, 59, "{}", db.backend);
        for i in [0, 22, 23, 59] {
            let jti = format!("t{i}");
            let found = store.access_token_record(&jti).await.unwrap();
            assert_eq!(
                found.map(|r| r.grant_id),
                Some(format!("g{i}")),
                "{}: {jti}",
                db.backend
            );
        }
        let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
        for (sql, expected) in [
            (
                "SELECT COUNT(*) FROM oauth_access_tokens WHERE client_id = 'grouped-client'",
                60,
            ),
            // The taken jti's grant g24 is not left behind by its failed record, nor its event.
            (
                "SELECT COUNT(*) FROM oauth_grants WHERE client_id = 'grouped-client'",
                60,
            ),
            (
                "SELECT COUNT(*) FROM audit_events WHERE actor = 'grouped-client'",
                59,
            ),
        ] {
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&raw).await.unwrap();
            assert_eq!(n, expected, "{}: {sql}", db.backend);
        }
        raw.close().await;
        store.close().await;
    }
}

/// Many `POST`s at once, through the FHIR API: every one is answered 201 with its own
/// resource, which reads back and is found by a search on what it was created with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_are_each_created_and_found_on_both_databases() {
    for db in TestDb::all().await {
        let (app, _) = crate::support::app_on(&db, "").await;
        let mut posts = tokio::task::JoinSet::new();
        for i in 0..48 {
            let app = app.clone();
            posts.spawn(async move {
                let body = serde_json::json!({
                    "resourceType": "Patient", "name": [{"family": format!("Burst{i}")}]
                });
                let post = crate::support::call(
                    &app,
                    "POST",
                    "/fhir/r4/Patient",
                    &[("content-type", "application/fhir+json")],
                    body.to_string(),
                )
                .await;
                (i, post)
            });
        }
        let mut ids = std::collections::HashSet::new();
        while let Some(answer) = posts.join_next().await {
            let (i, post) = answer.unwrap();
            assert_eq!(post.status, 201, "{}: {}", db.backend, post.diagnostics());
            let id = post.body["id"].as_str().unwrap().to_string();
            assert_eq!(post.body["name"][0]["family"], format!("Burst{i}"));
            assert!(
                ids.insert(id.clone()),
                "{}: {id} answered twice",
                db.backend
            );
            let found = crate::support::call(
                &app,
                "GET",
                &format!("/fhir/r4/Patient?family:exact=Burst{i}"),
                &[],
                "",
            )
            .await;
            assert_eq!(found.body["total"], 1, "{}: Burst{i}", db.backend);
            assert_eq!(
                found.body["entry"][0]["resource"]["id"], id,
                "{}",
                db.backend
            );
        }
        assert_eq!(ids.len(), 48, "{}", db.backend);
    }
}

/// A `Basic` resource's version `version_id`, deleted or with `note` as its content.
fn basic(id: &str, version_id: i64, note: &str, deleted: bool) -> StoredVersion {
    StoredVersion {
        resource_type: "Basic".into(),
        id: id.into(),
        version_id,
        last_updated: version_id,
        deleted,
        content: serde_json::json!({"resourceType": "Basic", "id": id, "text": note}).to_string(),
        method: if deleted { "DELETE" } else { "PUT" }.into(),
    }
}

async fn write_basic(store: &Store, version: &StoredVersion) {
    let mut tx = store.begin().await.unwrap();
    fhir_write(&mut tx, version, None).await.unwrap();
    tx.commit().await.unwrap();
}

/// The current versions a store keeps between reads (`store/resource_cache.rs`) give way
/// to an update or a deletion that another process commits on the same database, by the
/// next read that begins 2 ms after it, and to one of its own at once; the resources'
/// revision moves for those and not for a create.
#[tokio::test]
async fn kept_versions_follow_every_update_on_both_databases() {
    for db in TestDb::all().await {
        let b = db.backend;
        let here = Store::open(&db.url).await.unwrap();
        let elsewhere = Store::connect(&db.url).await.unwrap();
        let after_the_bound = || tokio::time::sleep(std::time::Duration::from_millis(10));
        let note = |v: Option<StoredVersion>| {
            let v = v.unwrap_or_else(|| panic!("{b}: not found"));
            let json: serde_json::Value = serde_json::from_str(&v.content).unwrap();
            (
                v.version_id,
                v.deleted,
                json["text"].as_str().unwrap().to_owned(),
            )
        };
        let revision = || async { here.revisions().await.unwrap().resources };

        write_basic(&here, &basic("k", 1, "one", false)).await;
        let created = revision().await;
        let read = here.fhir_current("Basic", "k").await.unwrap();
        assert_eq!(note(read), (1, false, "one".into()), "{b}");

        write_basic(&elsewhere, &basic("k", 2, "two", false)).await;
        assert!(
            revision().await > created,
            "{b}: an update moves the revision"
        );
        after_the_bound().await;
        let read = here.fhir_current("Basic", "k").await.unwrap();
        assert_eq!(note(read), (2, false, "two".into()), "{b}");

        write_basic(&here, &basic("k", 3, "three", false)).await;
        let read = here.fhir_current("Basic", "k").await.unwrap();
        assert_eq!(
            note(read),
            (3, false, "three".into()),
            "{b}: its own at once"
        );

        let before = revision().await;
        write_basic(&elsewhere, &basic("other", 1, "new", false)).await;
        assert_eq!(revision().await, before, "{b}: a create does not move it");

        write_basic(&elsewhere, &basic("k", 4, "three", true)).await;
        after_the_bound().await;
        let read = here.fhir_current("Basic", "k").await.unwrap();
        assert_eq!(note(read), (4, true, "three".into()), "{b}: the deletion");
    }
}

/// The index rows of `Type/id`, each as one text, sorted: every index table's columns
/// after the key.
async fn index_rows_of(store: &Store, resource_type: &str, id: &str) -> Vec<String> {
    let tables = [
        ("fhir_idx_string", "param, normalized, exact, part"),
        ("fhir_idx_token", "param, system, code, text"),
        (
            "fhir_idx_reference",
            "param, target_type, target_id, version, url",
        ),
        ("fhir_idx_date", "param, low, high"),
        ("fhir_idx_number", "param, value"),
        ("fhir_idx_quantity", "param, value, system, code, unit"),
        ("fhir_idx_uri", "param, value"),
    ];
    let mut rows = Vec::new();
    for (table, columns) in tables {
        let text = columns
            .split(", ")
            .map(|c| format!("COALESCE(CAST(i.{c} AS TEXT), '-')"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let found: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT '{table}|' || {text} FROM {table} i JOIN fhir_resources r ON r.rk = i.rk \
             WHERE r.resource_type = '{resource_type}' AND r.id = '{id}'"
        ))
        .fetch_all(store.pool())
        .await
        .unwrap();
        rows.extend(found);
    }
    rows.sort();
    rows
}

/// A resource of each kind of index row (a Patient's strings, tokens, references and
/// dates; an Observation's quantities and composites; a number; a uri).
fn index_samples() -> [serde_json::Value; 4] {
    [
        serde_json::json!({"resourceType": "Patient", "active": true, "gender": "female",
            "name": [{"family": "Lovelace", "given": ["Ada", "Augusta"]}],
            "identifier": [{"system": "urn:mrn", "value": "42"}], "birthDate": "1815-12-10",
            "telecom": [{"system": "phone", "value": "555"}],
            "address": [{"city": "London", "postalCode": "W1"}],
            "generalPractitioner": [{"reference": "Practitioner/babbage"}]}),
        serde_json::json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-03-01T10:00:00Z",
            "valueQuantity": {"value": 72.5, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                           "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}),
        serde_json::json!({"resourceType": "RiskAssessment", "status": "final",
            "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": 0.25}]}),
        serde_json::json!({"resourceType": "Questionnaire", "status": "active",
            "url": "http://example.org/q/1", "name": "q"}),
    ]
}

/// Creates written in groups (concurrent POSTs; on PostgreSQL a group is one statement,
/// `store/pg_creates.rs`) have exactly the index rows of the same resource written alone
/// (a PUT), for every kind of index row, composites included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_creates_have_the_index_rows_of_single_writes() {
    let samples = index_samples();
    for db in TestDb::all().await {
        let b = db.backend;
        let (app, _) = crate::support::app_on(&db, "").await;
        let json = [("content-type", "application/fhir+json")];
        let mut tasks = tokio::task::JoinSet::new();
        for (s, sample) in samples.iter().enumerate() {
            let t = sample["resourceType"].as_str().unwrap().to_owned();
            let mut alone = sample.clone();
            alone["id"] = format!("alone-{s}").into();
            let put = crate::support::call(
                &app,
                "PUT",
                &format!("/fhir/r4/{t}/alone-{s}"),
                &json,
                alone.to_string(),
            )
            .await;
            assert_eq!(put.status, 201, "{b}: {:?}", put.body);
            for _ in 0..12 {
                let (app, t, body) = (app.clone(), t.clone(), sample.to_string());
                tasks.spawn(async move {
                    let post = crate::support::call(
                        &app,
                        "POST",
                        &format!("/fhir/r4/{t}"),
                        &[("content-type", "application/fhir+json")],
                        body,
                    )
                    .await;
                    assert_eq!(post.status, 201, "{:?}", post.body);
                    (s, t, post.body["id"].as_str().unwrap().to_owned())
                });
            }
        }
        let store = Store::open(&db.url).await.unwrap();
        while let Some(created) = tasks.join_next().await {
            let (s, t, id) = created.unwrap();
            let alone = index_rows_of(&store, &t, &format!("alone-{s}")).await;
            assert!(!alone.is_empty(), "{b}: {t}");
            assert_eq!(index_rows_of(&store, &t, &id).await, alone, "{b}: {t}/{id}");
        }
        store.close().await;
    }
}

/// A transaction Bundle's writes (on PostgreSQL its creates in the one statement of
/// `store/pg_creates.rs`, its updates in multi-row statements, in one transaction) have
/// exactly the index rows of the same resources written alone, and an update in the same
/// Bundle replaces its resource's rows.
#[tokio::test]
async fn transaction_bundles_have_the_index_rows_of_single_writes() {
    let samples = index_samples();
    let put = |id: &str, mut resource: serde_json::Value| {
        resource["id"] = id.into();
        let url = format!("{}/{id}", resource["resourceType"].as_str().unwrap());
        serde_json::json!({"resource": resource, "request": {"method": "PUT", "url": url}})
    };
    let transaction = |entries: Vec<serde_json::Value>| {
        serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
            .to_string()
    };
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for (s, sample) in samples.iter().enumerate() {
        before.push(put(&format!("alone-{s}"), sample.clone()));
        // What `old-{s}` holds until the second Bundle updates it to the sample.
        let mut old = sample.clone();
        old["identifier"] = serde_json::json!([{"system": "urn:old", "value": "x"}]);
        before.push(put(&format!("old-{s}"), old));
        after.push(put(&format!("new-{s}"), sample.clone()));
        after.push(put(&format!("old-{s}"), sample.clone()));
    }
    for db in TestDb::all().await {
        let b = db.backend;
        let (app, _) = crate::support::app_on(&db, "").await;
        let json = [("content-type", "application/fhir+json")];
        for entries in [before.clone(), after.clone()] {
            let r =
                crate::support::call(&app, "POST", "/fhir/r4", &json, transaction(entries)).await;
            assert_eq!(r.status, 200, "{b}: {:?}", r.body);
        }
        let store = Store::open(&db.url).await.unwrap();
        for (s, sample) in samples.iter().enumerate() {
            let t = sample["resourceType"].as_str().unwrap();
            let alone = index_rows_of(&store, t, &format!("alone-{s}")).await;
            assert!(
                alone.iter().all(|r| !r.contains("urn:old")),
                "{b}: {alone:?}"
            );
            for id in [format!("new-{s}"), format!("old-{s}")] {
                assert_eq!(index_rows_of(&store, t, &id).await, alone, "{b}: {t}/{id}");
            }
            let old = store.fhir_current(t, &format!("old-{s}")).await.unwrap();
            assert_eq!(old.map(|v| v.version_id), Some(2), "{b}: {t}");
        }
        store.close().await;
    }
}

/// Transaction Bundles that create the same new resources at once (PUTs of ids nobody has
/// yet; on PostgreSQL their first versions race in `store/pg_creates.rs`'s statement): each
/// Bundle is answered 200 or 409 with an OperationOutcome, never an error of the server,
/// and what the answered ones wrote is whole: every resource has one version per Bundle
/// that succeeded, and all of them hold the last such Bundle's mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_transaction_bundles_of_the_same_creates_are_whole_or_refused() {
    for db in TestDb::all().await {
        let b = db.backend;
        let (app, _) = crate::support::app_on(&db, "").await;
        let mut bundles = tokio::task::JoinSet::new();
        for mark in 0..8 {
            let app = app.clone();
            bundles.spawn(async move {
                let entries: Vec<serde_json::Value> = (0..5)
                    .map(|i| {
                        let patient = serde_json::json!({"resourceType": "Patient",
                            "id": format!("race-{i}"), "name": [{"family": format!("Mark{mark}")}]});
                        serde_json::json!({"resource": patient,
                            "request": {"method": "PUT", "url": format!("Patient/race-{i}")}})
                    })
                    .collect();
                let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction",
                    "entry": entries});
                let json = [("content-type", "application/fhir+json")];
                crate::support::call(&app, "POST", "/fhir/r4", &json, bundle.to_string()).await
            });
        }
        let mut succeeded = 0;
        while let Some(answer) = bundles.join_next().await {
            let answer = answer.unwrap();
            match answer.status {
                200 => succeeded += 1,
                409 => assert_eq!(answer.body["resourceType"], "OperationOutcome", "{b}"),
                other => panic!("{b}: {other}: {}", answer.diagnostics()),
            }
        }
        assert!(succeeded >= 1, "{b}");
        let store = Store::open(&db.url).await.unwrap();
        let mut marks = std::collections::HashSet::new();
        for i in 0..5 {
            let current = store
                .fhir_current("Patient", &format!("race-{i}"))
                .await
                .unwrap();
            let current = current.expect("created by a Bundle that succeeded");
            assert_eq!(current.version_id, succeeded, "{b}: race-{i}");
            let content: serde_json::Value = serde_json::from_str(&current.content).unwrap();
            marks.insert(content["name"][0]["family"].as_str().unwrap().to_owned());
        }
        assert_eq!(marks.len(), 1, "{b}: {marks:?}");
        store.close().await;
    }
}
