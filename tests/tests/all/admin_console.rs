//! The admin console's HTTP rules, in-process on both databases: sign-in (cookie flags,
//! a new session id at every sign-in, CSRF on the form), CSRF on every change, the idle
//! timeout, accounts without the admin role kept out, the JSON API's authentication, and
//! what a change does to tokens (a rotated secret or a removed client stops them).

use base64::Engine;
use hestia::store::{NewUser, UserUpdate};
use serde_json::json;

use crate::support::{PASSWORD, Reply, TestDb, call, hidden, raw_app_on};

/// The value a response sets for cookie `name` (the text before the first `;`), with the
/// whole `Set-Cookie` line.
fn set_cookie(reply: &Reply, name: &str) -> Option<(String, String)> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|line| line.starts_with(&format!("{name}=")))
        .map(|line| {
            let value = line[name.len() + 1..].split(';').next().unwrap_or_default();
            (value.to_string(), line.to_string())
        })
}

fn text(reply: &Reply) -> String {
    reply
        .body
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| reply.body.to_string())
}

async fn add_user(state: &hestia::http::AppState, name: &str, roles: &[&str]) {
    state
        .store()
        .create_user(NewUser {
            username: name.into(),
            password: PASSWORD.into(),
            fhir_user: None,
        })
        .await
        .unwrap();
    state
        .store()
        .update_user(
            name,
            UserUpdate {
                roles: Some(roles.iter().map(|r| r.to_string()).collect()),
                fhir_user: None,
            },
        )
        .await
        .unwrap();
}

/// The sign-in form's CSRF cookie and field, as a browser gets them from `GET /admin/`.
async fn sign_in_form(app: &axum::Router) -> String {
    let page = call(app, "GET", "/admin/", &[], "").await;
    assert_eq!(page.status, 200);
    let (cookie, line) = set_cookie(&page, "hestia_admin_signin").expect("a sign-in CSRF cookie");
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Strict"),
        "{line}"
    );
    assert_eq!(hidden(&text(&page), "csrf"), cookie);
    cookie
}

/// Posts the sign-in form with `extra_cookie` (e.g. a planted session id) as well.
async fn post_sign_in(app: &axum::Router, user: &str, password: &str, extra_cookie: &str) -> Reply {
    let csrf = sign_in_form(app).await;
    let cookie = format!("hestia_admin_signin={csrf}{extra_cookie}");
    let body = format!(
        "csrf={csrf}&username={user}&password={}",
        password.replace(' ', "+")
    );
    call(
        app,
        "POST",
        "/admin/signin",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookie),
        ],
        body,
    )
    .await
}

/// A signed-in administrator: the session cookie header and the session's CSRF token.
async fn signed_in(app: &axum::Router, user: &str) -> (String, String) {
    let reply = post_sign_in(app, user, PASSWORD, "").await;
    assert_eq!(reply.status, 303, "{}", text(&reply));
    let (session, _) = set_cookie(&reply, "hestia_admin").expect("a session cookie");
    let cookie = format!("hestia_admin={session}");
    let page = call(app, "GET", "/admin/users", &[("cookie", &cookie)], "").await;
    assert_eq!(page.status, 200);
    (cookie, hidden(&text(&page), "csrf"))
}

async fn form(app: &axum::Router, path: &str, cookie: &str, body: &str) -> Reply {
    call(
        app,
        "POST",
        path,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", cookie),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_with_a_new_session_id() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "root", &["admin"]).await;
        // A session id planted in the browser before sign-in (fixation) is not kept.
        let planted = "; hestia_admin=planted-by-someone-else";
        let reply = post_sign_in(&app, "root", PASSWORD, planted).await;
        assert_eq!(reply.status, 303, "{}: {}", db.backend, text(&reply));
        assert_eq!(reply.header("location"), "/admin/");
        let (session, line) = set_cookie(&reply, "hestia_admin").unwrap();
        assert_ne!(session, "planted-by-someone-else");
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
            assert!(line.contains(flag), "{}: {line}", db.backend);
        }
        // Plain HTTP here: a Secure cookie would never come back.
        assert!(!line.contains("Secure"), "{line}");
        let planted_page = call(
            &app,
            "GET",
            "/admin/clients",
            &[("cookie", "hestia_admin=planted-by-someone-else")],
            "",
        )
        .await;
        assert_eq!(planted_page.status, 303, "{}", db.backend);
        let own = call(
            &app,
            "GET",
            "/admin/clients",
            &[("cookie", &format!("hestia_admin={session}"))],
            "",
        )
        .await;
        assert_eq!(own.status, 200, "{}", db.backend);
        // Signing in again gives another session id; the first one ends.
        let again =
            post_sign_in(&app, "root", PASSWORD, &format!("; hestia_admin={session}")).await;
        let (second, _) = set_cookie(&again, "hestia_admin").unwrap();
        assert_ne!(second, session);
        let old = call(
            &app,
            "GET",
            "/admin/clients",
            &[("cookie", &format!("hestia_admin={session}"))],
            "",
        )
        .await;
        assert_eq!(old.status, 303, "{}", db.backend);
    }
}

#[tokio::test]
async fn the_secure_flag_is_set_on_https() {
    let db = TestDb::sqlite();
    let (app, state) = raw_app_on(&db, "public_url = \"https://hestia.example\"").await;
    add_user(&state, "root", &["admin"]).await;
    let reply = post_sign_in(&app, "root", PASSWORD, "").await;
    let (_, line) = set_cookie(&reply, "hestia_admin").unwrap();
    assert!(line.contains("; Secure"), "{line}");
}

#[tokio::test]
async fn forms_without_the_session_csrf_token_change_nothing() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "root", &["admin"]).await;
        let (cookie, csrf) = signed_in(&app, "root").await;
        let fields = "client_name=Evil&profile=backend&scope=system%2F*.read";
        for body in [fields.to_string(), format!("csrf=not-{csrf}&{fields}")] {
            let reply = form(&app, "/admin/clients", &cookie, &body).await;
            assert_eq!(reply.status, 403, "{}: {}", db.backend, text(&reply));
            assert!(text(&reply).contains("CSRF"), "{}", text(&reply));
        }
        assert!(state.store().list_clients().await.unwrap().is_empty());
        let made = form(
            &app,
            "/admin/clients",
            &cookie,
            &format!("csrf={csrf}&{fields}"),
        )
        .await;
        assert_eq!(made.status, 200, "{}: {}", db.backend, text(&made));
        assert!(text(&made).contains("shown only once"));
        assert_eq!(state.store().list_clients().await.unwrap().len(), 1);
        // The sign-in form is checked too: a post without the cookie's value is refused.
        let forged = call(
            &app,
            "POST",
            "/admin/signin",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", "hestia_admin_signin=abc"),
            ],
            format!(
                "csrf=xyz&username=root&password={}",
                PASSWORD.replace(' ', "+")
            ),
        )
        .await;
        assert_eq!(forged.status, 403, "{}", db.backend);
        assert!(set_cookie(&forged, "hestia_admin").is_none());
    }
}

#[tokio::test]
async fn a_session_idle_longer_than_the_timeout_is_over() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "[admin]\nsession_idle_secs = 60").await;
        add_user(&state, "root", &["admin"]).await;
        let (cookie, _) = signed_in(&app, "root").await;
        sqlx::query("UPDATE admin_sessions SET last_seen = last_seen - 59")
            .execute(state.store().pool())
            .await
            .unwrap();
        let fresh = call(&app, "GET", "/admin/keys", &[("cookie", &cookie)], "").await;
        assert_eq!(fresh.status, 200, "{}", db.backend);
        sqlx::query("UPDATE admin_sessions SET last_seen = last_seen - 61")
            .execute(state.store().pool())
            .await
            .unwrap();
        let idle = call(&app, "GET", "/admin/keys", &[("cookie", &cookie)], "").await;
        assert_eq!(idle.status, 303, "{}", db.backend);
        assert_eq!(idle.header("location"), "/admin/");
    }
}

#[tokio::test]
async fn accounts_without_the_admin_role_are_kept_out() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "amy", &["patient"]).await;
        let reply = post_sign_in(&app, "amy", PASSWORD, "").await;
        assert_eq!(reply.status, 403, "{}", db.backend);
        assert!(
            text(&reply).contains("does not have the admin role"),
            "{}",
            text(&reply)
        );
        assert!(set_cookie(&reply, "hestia_admin").is_none());
        // A session of an account whose admin role is taken away ends with it.
        add_user(&state, "root", &["admin"]).await;
        let (cookie, _) = signed_in(&app, "root").await;
        state
            .store()
            .update_user(
                "root",
                UserUpdate {
                    roles: Some(vec![]),
                    fhir_user: None,
                },
            )
            .await
            .unwrap();
        let page = call(&app, "GET", "/admin/users", &[("cookie", &cookie)], "").await;
        assert_eq!(page.status, 303, "{}", db.backend);
        let events = state
            .store()
            .audit_events(&hestia::store::AuditFilter {
                action: Some("signin.refused".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{}", db.backend);
        assert_eq!(events[0].actor, "amy");
    }
}

#[tokio::test]
async fn a_failed_sign_in_is_on_the_activity_page() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "root", &["admin"]).await;
        let wrong = post_sign_in(&app, "root", "not the password", "").await;
        assert_eq!(wrong.status, 401, "{}", db.backend);
        assert!(text(&wrong).contains("Wrong username or password"));
        let (cookie, _) = signed_in(&app, "root").await;
        let page = call(
            &app,
            "GET",
            "/admin/activity?action=signin.failed",
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(page.status, 200);
        let html = text(&page);
        assert!(
            html.contains("signin.failed") && html.contains("wrong username or password"),
            "{html}"
        );
        assert!(
            !html.contains("signin.ok"),
            "the filter keeps to failed sign-ins"
        );
    }
}

#[tokio::test]
async fn the_api_takes_an_admin_session_with_its_csrf_header() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "root", &["admin"]).await;
        let anonymous = call(&app, "GET", "/admin/api/clients", &[], "").await;
        assert_eq!(anonymous.status, 401, "{}", db.backend);
        assert!(
            anonymous
                .header("www-authenticate")
                .contains("hestia-admin")
        );
        let (cookie, csrf) = signed_in(&app, "root").await;
        let body =
            json!({"client_name": "Scripted", "profile": "backend", "scope": "system/*.read"})
                .to_string();
        let json_ct = ("content-type", "application/json");
        let without = call(
            &app,
            "POST",
            "/admin/api/clients",
            &[json_ct, ("cookie", &cookie)],
            body.clone(),
        )
        .await;
        assert_eq!(without.status, 403, "{}: {}", db.backend, without.body);
        let made = call(
            &app,
            "POST",
            "/admin/api/clients",
            &[json_ct, ("cookie", &cookie), ("x-csrf-token", &csrf)],
            body,
        )
        .await;
        assert_eq!(made.status, 201, "{}: {}", db.backend, made.body);
        assert!(
            made.body["client_secret"]
                .as_str()
                .is_some_and(|s| s.len() > 30)
        );
        let list = call(
            &app,
            "GET",
            "/admin/api/clients?q=script",
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(
            list.body["clients"].as_array().unwrap().len(),
            1,
            "{}",
            list.body
        );
        let events = call(
            &app,
            "GET",
            "/admin/api/activity?action=client.create",
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(events.body["events"][0]["actor"], "root", "{}", events.body);
        assert_eq!(events.body["events"][0]["target"], made.body["client_id"]);
    }
}

/// A backend client's token from the token endpoint, in-process.
async fn backend_token(
    app: &axum::Router,
    state: &hestia::http::AppState,
    id: &str,
    secret: &str,
) -> Reply {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let body = format!(
        "grant_type=client_credentials&scope=system%2FPatient.read&aud={}",
        url_encode(&state.settings().fhir_base_url())
    );
    call(
        app,
        "POST",
        "/oauth2/token",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &format!("Basic {basic}")),
        ],
        body,
    )
    .await
}

/// A backend client made with the console's form, scope `system/Patient.read`: its id
/// and its secret, as the page shows them once.
async fn backend_client(app: &axum::Router, cookie: &str, csrf: &str) -> (String, String) {
    let made = form(
        app,
        "/admin/clients",
        cookie,
        &format!("csrf={csrf}&client_name=Batch&profile=backend&scope=system%2FPatient.read"),
    )
    .await;
    let html = text(&made);
    let id = html
        .split("id=\"client-id\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap()
        .to_string();
    let secret = html
        .split("id=\"secret\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    (id, secret)
}

fn url_encode(s: &str) -> String {
    s.replace(':', "%3A").replace('/', "%2F")
}

/// A console signed in as `root` (an admin) and a backend client made with its form.
struct ConsoleClient {
    app: axum::Router,
    state: hestia::http::AppState,
    cookie: String,
    csrf: String,
    id: String,
    secret: String,
}

async fn console_with_backend_client(db: &TestDb) -> ConsoleClient {
    let (app, state) = raw_app_on(db, "").await;
    add_user(&state, "root", &["admin"]).await;
    let (cookie, csrf) = signed_in(&app, "root").await;
    let (id, secret) = backend_client(&app, &cookie, &csrf).await;
    ConsoleClient {
        app,
        state,
        cookie,
        csrf,
        id,
        secret,
    }
}

impl ConsoleClient {
    /// An access token of the client, from the token endpoint with `secret`.
    async fn token(&self, secret: &str) -> String {
        let issued = backend_token(&self.app, &self.state, &self.id, secret).await;
        assert_eq!(issued.status, 200, "{}", issued.body);
        issued.body["access_token"].as_str().unwrap().to_string()
    }

    /// The status of a FHIR search with `token`.
    async fn fhir_status(&self, token: &str) -> u16 {
        let auth = format!("Bearer {token}");
        let reply = call(
            &self.app,
            "GET",
            "/fhir/r4/Patient",
            &[("authorization", &auth)],
            "",
        )
        .await;
        reply.status
    }

    /// The number of active grants the client's page shows.
    async fn active_grants(&self) -> String {
        let path = format!("/admin/clients/{}", self.id);
        let page = call(&self.app, "GET", &path, &[("cookie", &self.cookie)], "").await;
        text(&page)
            .split("id=\"active-grants\">")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap()
            .to_string()
    }

    /// Posts the client's form `action` (`rotate`, `remove`) and expects a 200.
    async fn post(&self, action: &str) -> Reply {
        let path = format!("/admin/clients/{}/{action}", self.id);
        let reply = form(
            &self.app,
            &path,
            &self.cookie,
            &format!("csrf={}", self.csrf),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", text(&reply));
        reply
    }

    /// The actions on clients in the audit trail, newest first.
    async fn client_actions(&self) -> Vec<String> {
        let filter = hestia::store::AuditFilter {
            action: Some("client.".into()),
            limit: 10,
            ..Default::default()
        };
        let events = self.state.store().audit_events(&filter).await.unwrap();
        events.into_iter().map(|e| e.action).collect()
    }
}

#[tokio::test]
async fn a_rotated_secret_stops_the_tokens_of_the_old_one() {
    for db in TestDb::all().await {
        let client = console_with_backend_client(&db).await;
        let token = client.token(&client.secret).await;
        assert_eq!(client.fhir_status(&token).await, 200, "{}", db.backend);
        assert_eq!(client.active_grants().await, "1", "{}", db.backend);

        let rotated = client.post("rotate").await;
        let new_secret = hidden(&text(&rotated), "secret");
        assert_ne!(new_secret, client.secret);
        assert_eq!(client.active_grants().await, "0", "{}", db.backend);
        assert_eq!(
            client.fhir_status(&token).await,
            401,
            "{}: the token of the old secret",
            db.backend
        );
        let old = backend_token(&client.app, &client.state, &client.id, &client.secret).await;
        assert_eq!(old.status, 401, "{}", db.backend);
        let token = client.token(&new_secret).await;
        assert_eq!(client.fhir_status(&token).await, 200, "{}", db.backend);
        assert_eq!(
            client.client_actions().await,
            ["client.rotate_secret", "client.create"],
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn a_removed_client_stops_its_tokens() {
    for db in TestDb::all().await {
        let client = console_with_backend_client(&db).await;
        let token = client.token(&client.secret).await;
        assert_eq!(client.fhir_status(&token).await, 200, "{}", db.backend);
        client.post("remove").await;
        assert_eq!(client.fhir_status(&token).await, 401, "{}", db.backend);
        assert_eq!(
            client.client_actions().await,
            ["client.remove", "client.create"],
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn the_api_takes_a_hestia_admin_token_and_names_its_client() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "amy", &["patient"]).await;
        let narrow = crate::support::mint(&state, json!({"scope": "system/*.read"})).await;
        let refused = call(
            &app,
            "GET",
            "/admin/api/users",
            &[("authorization", &format!("Bearer {narrow}"))],
            "",
        )
        .await;
        assert_eq!(refused.status, 403, "{}: {}", db.backend, refused.body);
        assert!(refused.header("www-authenticate").contains("hestia:admin"));
        let token =
            crate::support::mint(&state, json!({"scope": "hestia:admin", "client_id": "ops"}))
                .await;
        let bearer = format!("Bearer {token}");
        let users = call(
            &app,
            "GET",
            "/admin/api/users",
            &[("authorization", &bearer)],
            "",
        )
        .await;
        assert_eq!(users.status, 200, "{}: {}", db.backend, users.body);
        assert_eq!(users.body["users"][0]["username"], "amy");
        // A token needs no CSRF header: a browser never sends it on its own.
        let locked = call(
            &app,
            "POST",
            "/admin/api/users/amy/lock",
            &[("authorization", &bearer)],
            "",
        )
        .await;
        assert_eq!(locked.status, 204, "{}: {}", db.backend, locked.body);
        let events = call(
            &app,
            "GET",
            "/admin/api/activity?action=user.lock",
            &[("authorization", &bearer)],
            "",
        )
        .await;
        assert_eq!(
            events.body["events"][0]["actor"], "client ops",
            "{}",
            events.body
        );
        let missing = call(
            &app,
            "GET",
            "/admin/api/clients/nobody",
            &[("authorization", &bearer)],
            "",
        )
        .await;
        assert_eq!(missing.status, 404, "{}", missing.body);
        assert_eq!(missing.body["error"], "not_found");
    }
}

#[tokio::test]
async fn the_api_ends_a_session_and_removes_an_account() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "other", &["admin"]).await;
        add_user(&state, "amy", &["patient"]).await;
        let (other_cookie, _) = signed_in(&app, "other").await;
        let token =
            crate::support::mint(&state, json!({"scope": "hestia:admin", "client_id": "ops"}))
                .await;
        let bearer = format!("Bearer {token}");
        let auth = [("authorization", bearer.as_str())];
        let shown = call(&app, "GET", "/admin/api/users/other", &auth, "").await;
        assert_eq!(shown.status, 200, "{}: {}", db.backend, shown.body);
        let id = shown.body["sessions"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: a session: {}", db.backend, shown.body))
            .to_string();
        let path = format!("/admin/api/users/other/sessions/{id}");
        let ended = call(&app, "DELETE", &path, &auth, "").await;
        assert_eq!(ended.status, 204, "{}: {}", db.backend, ended.body);
        let page = call(
            &app,
            "GET",
            "/admin/clients",
            &[("cookie", &other_cookie)],
            "",
        )
        .await;
        assert_eq!(
            page.status, 303,
            "{}: the ended session is signed out",
            db.backend
        );
        let again = call(&app, "DELETE", &path, &auth, "").await;
        assert_eq!(again.status, 404, "{}: {}", db.backend, again.body);
        let malformed = call(
            &app,
            "DELETE",
            "/admin/api/users/other/sessions/x'",
            &auth,
            "",
        )
        .await;
        assert_eq!(malformed.status, 400, "{}: {}", db.backend, malformed.body);

        let removed = call(&app, "DELETE", "/admin/api/users/amy", &auth, "").await;
        assert_eq!(removed.status, 204, "{}: {}", db.backend, removed.body);
        let gone = call(&app, "GET", "/admin/api/users/amy", &auth, "").await;
        assert_eq!(gone.status, 404, "{}: {}", db.backend, gone.body);
        let events = call(
            &app,
            "GET",
            "/admin/api/activity?action=user.remove",
            &auth,
            "",
        )
        .await;
        assert_eq!(
            events.body["events"][0]["actor"], "client ops",
            "{}",
            events.body
        );
        assert_eq!(events.body["events"][0]["target"], "amy", "{}", events.body);
    }
}

#[tokio::test]
async fn a_locked_account_cannot_sign_in_until_unlocked() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "root", &["admin"]).await;
        add_user(&state, "other", &["admin"]).await;
        let (cookie, csrf) = signed_in(&app, "root").await;
        let own = form(
            &app,
            "/admin/users/root/lock",
            &cookie,
            &format!("csrf={csrf}"),
        )
        .await;
        assert_eq!(own.status, 400, "{}: cannot lock oneself", db.backend);
        let locked = form(
            &app,
            "/admin/users/other/lock",
            &cookie,
            &format!("csrf={csrf}"),
        )
        .await;
        assert_eq!(locked.status, 200, "{}", text(&locked));
        assert!(text(&locked).contains("locked: no sign-in"));
        // Refused as a wrong password is: a locked account is not told apart.
        assert_eq!(
            post_sign_in(&app, "other", PASSWORD, "").await.status,
            401,
            "{}",
            db.backend
        );
        form(
            &app,
            "/admin/users/other/unlock",
            &cookie,
            &format!("csrf={csrf}"),
        )
        .await;
        assert_eq!(
            post_sign_in(&app, "other", PASSWORD, "").await.status,
            303,
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn token_answers_are_audited_with_their_cause() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        let refused = backend_token(&app, &state, "no-such-client", "wrong").await;
        assert_eq!(refused.status, 401, "{}", db.backend);
        let events = state
            .store()
            .audit_events(&hestia::store::AuditFilter {
                action: Some("token.".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{}", db.backend);
        assert_eq!(events[0].action, "token.refused");
        assert_eq!(events[0].actor, "no-such-client");
        assert_eq!(events[0].target, "client_credentials");
        let description = refused.body["error_description"].as_str().unwrap();
        assert_eq!(events[0].detail, format!("invalid_client: {description}"));
    }
}

/// The row of resource type `ty` in an Explain page's matrix.
fn explain_row(html: &str, ty: &str) -> String {
    html.split(&format!("<th scope=\"row\">{ty}</th>"))
        .nth(1)
        .and_then(|s| s.split("</tr>").next())
        .unwrap_or_default()
        .to_string()
}

/// Explain by picking: the token endpoint's policy decides the claims a client's token
/// would carry and the gate explains them, a scope the client lacks is refused with the
/// token endpoint's error, a backend client has no account's token; no token is recorded.
#[tokio::test]
async fn explain_by_picking_a_client_and_scopes_mints_nothing() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "root", &["admin"]).await;
        let (cookie, csrf) = signed_in(&app, "root").await;
        let (id, _) = backend_client(&app, &cookie, &csrf).await;
        let get = |query: String| {
            let (app, cookie) = (app.clone(), cookie.clone());
            async move {
                let path = format!("/admin/explain?{query}");
                text(&call(&app, "GET", &path, &[("cookie", &cookie)], "").await)
            }
        };
        let granted = get(format!("client_id={id}&scope=system%2FPatient.read")).await;
        assert!(
            granted.contains("would grant client"),
            "{}: {granted}",
            db.backend
        );
        let patient = explain_row(&granted, "Patient");
        assert!(
            patient.contains("class=\"pass\">✔ allowed"),
            "{}: {patient}",
            db.backend
        );
        assert!(
            patient.contains("class=\"fail\">✘ 403"),
            "{}: {patient}",
            db.backend
        );
        let unregistered = get(format!("client_id={id}&scope=system%2FObservation.read")).await;
        assert!(
            unregistered.contains("Refused: token endpoint: invalid_scope"),
            "{}: {unregistered}",
            db.backend
        );
        let api = call(
            &app,
            "POST",
            "/admin/api/explain",
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("content-type", "application/json"),
            ],
            json!({"client_id": id, "user": "root"}).to_string(),
        )
        .await;
        assert_eq!(api.status, 200, "{}: {}", db.backend, api.body);
        let refused = api.body["refused"].as_str().unwrap_or_default();
        assert!(
            refused.contains("unauthorized_client"),
            "{}: {refused}",
            db.backend
        );
        let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_access_tokens")
            .fetch_one(state.store().pool())
            .await
            .unwrap();
        assert_eq!(recorded, 0, "{}", db.backend);
    }
}

/// A FHIR request refused (403) with a valid token is on the Activity page with a link
/// that explains it again: the token's client and scopes, the refused type first.
#[tokio::test]
async fn a_refused_fhir_request_links_to_its_explanation() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "root", &["admin"]).await;
        let (cookie, csrf) = signed_in(&app, "root").await;
        let (id, secret) = backend_client(&app, &cookie, &csrf).await;
        let issued = backend_token(&app, &state, &id, &secret).await;
        let token = issued.body["access_token"].as_str().unwrap().to_string();
        let refused = call(
            &app,
            "GET",
            "/fhir/r4/Observation",
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await;
        assert_eq!(refused.status, 403, "{}: {}", db.backend, refused.body);
        // The refusal is recorded in a task of its own: wait for its row.
        let filter = hestia::store::AuditFilter {
            action: Some("fhir.refused".into()),
            limit: 10,
            ..Default::default()
        };
        let mut events = Vec::new();
        for _ in 0..500 {
            events = state.store().audit_events(&filter).await.unwrap();
            if !events.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(events.len(), 1, "{}", db.backend);
        let context: serde_json::Value = serde_json::from_str(&events[0].context).unwrap();
        assert_eq!(context["client_id"], id.as_str(), "{}", db.backend);
        assert_eq!(context["user"], "", "{}", db.backend);
        assert_eq!(context["type"], "Observation", "{}", db.backend);
        assert_eq!(events[0].actor, format!("client {id}"), "{}", db.backend);
        let page = call(&app, "GET", "/admin/activity", &[("cookie", &cookie)], "").await;
        let html = text(&page);
        let link = html
            .split("class=\"explain\" href=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("{}: no Explain link in {html}", db.backend))
            .replace("&amp;", "&")
            .replace("&#x2f;", "/");
        assert!(
            link.starts_with("/admin/explain?"),
            "{}: {link}",
            db.backend
        );
        let explained = text(&call(&app, "GET", &link, &[("cookie", &cookie)], "").await);
        assert!(
            explained.contains("would grant client"),
            "{}: {explained}",
            db.backend
        );
        let first = explained
            .split("<th scope=\"row\">")
            .nth(1)
            .and_then(|s| s.split('<').next());
        assert_eq!(first, Some("Observation"), "{}", db.backend);
        let observation = explain_row(&explained, "Observation");
        assert!(
            !observation.contains("class=\"pass\""),
            "{}: {observation}",
            db.backend
        );
    }
}

/// The user's page lists its console sessions and ends one (its cookie stops working at
/// once); removing the account ends the rest, the account is gone and the removal is
/// audited; one's own account is not removed.
#[tokio::test]
async fn a_users_sessions_end_and_the_user_is_removed_from_its_page() {
    for db in TestDb::all().await {
        let (app, state) = raw_app_on(&db, "").await;
        add_user(&state, "root", &["admin"]).await;
        add_user(&state, "ops", &["admin"]).await;
        let (ops_cookie, _) = signed_in(&app, "ops").await;
        let (cookie, csrf) = signed_in(&app, "root").await;
        let get = |path: &'static str, cookie: String| {
            let app = app.clone();
            async move { call(&app, "GET", path, &[("cookie", &cookie)], "").await }
        };
        let page = text(&get("/admin/users/ops", cookie.clone()).await);
        let ids: Vec<&str> = page
            .split("/sessions/")
            .skip(1)
            .filter_map(|s| s.split('/').next())
            .collect();
        assert_eq!(ids.len(), 1, "{}: {page}", db.backend);
        let ended = form(
            &app,
            &format!("/admin/users/ops/sessions/{}/revoke", ids[0]),
            &cookie,
            &format!("csrf={csrf}"),
        )
        .await;
        assert_eq!(ended.status, 200, "{}: {}", db.backend, text(&ended));
        assert_eq!(
            get("/admin/keys", ops_cookie).await.status,
            303,
            "{}",
            db.backend
        );
        let (ops_cookie, _) = signed_in(&app, "ops").await;
        assert_eq!(get("/admin/keys", ops_cookie.clone()).await.status, 200);
        let own = form(
            &app,
            "/admin/users/root/remove",
            &cookie,
            &format!("csrf={csrf}"),
        )
        .await;
        assert_eq!(own.status, 400, "{}: {}", db.backend, text(&own));
        assert!(state.store().find_user("root").await.unwrap().is_some());
        let removed = form(
            &app,
            "/admin/users/ops/remove",
            &cookie,
            &format!("csrf={csrf}"),
        )
        .await;
        assert_eq!(removed.status, 200, "{}: {}", db.backend, text(&removed));
        assert!(
            text(&removed).contains("User ops removed"),
            "{}",
            db.backend
        );
        assert!(state.store().find_user("ops").await.unwrap().is_none());
        assert_eq!(
            get("/admin/keys", ops_cookie).await.status,
            303,
            "{}",
            db.backend
        );
        let events = state
            .store()
            .audit_events(&hestia::store::AuditFilter {
                action: Some("user.remove".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{}", db.backend);
        assert_eq!(
            (events[0].actor.as_str(), events[0].target.as_str()),
            ("root", "ops")
        );
        assert!(
            events[0].detail.contains("1 console session"),
            "{}",
            events[0].detail
        );
    }
}

/// The Plugins page shows the last lines a plugin wrote to stdout and stderr.
#[tokio::test]
async fn the_plugins_page_shows_a_plugins_last_output_lines() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        // A name of this test's own: the kept lines are per plugin name, process-wide.
        let name = format!("printing-{}", db.backend);
        std::fs::copy(
            crate::plugins::guests::FAULTS,
            dir.path().join(format!("{name}.wasm")),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{name}.toml")),
            "[config]\nfault = \"print\"\n",
        )
        .unwrap();
        let plugins = hestia::plugins::PluginHost::start(hestia::plugins::PluginSettings {
            dir: Some(dir.path().to_path_buf()),
            watch: false,
            deadline: std::time::Duration::from_secs(2),
            ..Default::default()
        })
        .unwrap();
        let (app, state) = crate::support::starting_app_with(&db, "", plugins).await;
        state.set_ready();
        add_user(&state, "root", &["admin"]).await;
        let (cookie, _) = signed_in(&app, "root").await;
        let before = text(&call(&app, "GET", "/admin/plugins", &[("cookie", &cookie)], "").await);
        assert!(!before.contains("checking a request"), "{}", db.backend);
        let token = crate::support::mint(&state, json!({"scope": "system/*.*"})).await;
        let auth = format!("Bearer {token}");
        let reply = call(
            &app,
            "GET",
            "/fhir/r4/Patient",
            &[("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(reply.status, 200, "{}: {}", db.backend, reply.body);
        let page = text(&call(&app, "GET", "/admin/plugins", &[("cookie", &cookie)], "").await);
        let section = page
            .split(&format!("{name} <span"))
            .nth(1)
            .and_then(|s| s.split("</section>").next())
            .unwrap_or_default();
        for line in [
            "stdout: checking a request",
            "stderr: a warning from the plugin",
            "stdout: a line without its end",
        ] {
            assert!(
                section.contains(line),
                "{}: {line} in {section}",
                db.backend
            );
        }
    }
}
