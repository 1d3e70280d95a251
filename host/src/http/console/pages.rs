//! Console pages: sign-in and sign-out, the overview, clients and users.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::context;
use serde::Deserialize;

use super::render::{page, ser};
use super::{
    ADMIN_ROLE, Address, PageError, SESSION_COOKIE, SIGNIN_COOKIE, SignedIn, audit, cookie,
    live_session, set_cookie,
};
use crate::console::{ClientInput, UserInput};
use crate::oauth::signin::{self, Attempt};
use crate::oauth::tokens::utc;
use crate::store::{NewAuditEvent, User, constant_time_eq, hash_secret};

pub fn routes() -> axum::Router<crate::http::AppState> {
    Router::new()
        .route(
            "/admin",
            get(|| async { super::super::oauth::redirect("/admin/") }),
        )
        .route("/admin/", get(home))
        .route("/admin/signin", post(sign_in))
        .route("/admin/signout", post(sign_out))
        .route("/admin/clients", get(clients).post(create_client))
        .route("/admin/clients/new", get(new_client))
        .route("/admin/clients/{id}", get(client).post(update_client))
        .route("/admin/clients/{id}/rotate", post(rotate_secret))
        .route("/admin/clients/{id}/remove", post(remove_client))
        .route("/admin/clients/{id}/postman", post(postman))
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/{name}", get(user).post(update_user))
        .route("/admin/users/{name}/password", post(reset_password))
        .route("/admin/users/{name}/lock", post(lock))
        .route("/admin/users/{name}/unlock", post(unlock))
        .route(
            "/admin/users/{name}/grants/{grant}/revoke",
            post(revoke_grant),
        )
        .route("/admin/users/{name}/remove", post(remove_user))
        .route(
            "/admin/users/{name}/sessions/{id}/revoke",
            post(end_session),
        )
}

type AppState = crate::http::AppState;
type PageResult = Result<Response, PageError>;

/// The sign-in page, with a fresh CSRF cookie whose value the form carries.
fn sign_in_page(
    state: &AppState,
    status: StatusCode,
    username: &str,
    error: Option<String>,
) -> Response {
    let csrf = crate::oauth::random_token();
    let mut resp = page(
        status,
        "signin.html",
        context! { title => "Sign in", csrf => csrf.clone(), username => username, error => error },
    );
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(state, SIGNIN_COOKIE, &csrf));
    resp
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    let Some((session, token_hash)) = live_session(&state, &headers).await? else {
        return Ok(sign_in_page(&state, StatusCode::OK, "", None));
    };
    let admin = SignedIn {
        session,
        token_hash,
        address: String::new(),
    };
    let console = admin.console(&state);
    let plugins = console.plugins();
    let failed = plugins.iter().filter(|p| p.last_error.is_some()).count();
    let ctx = context! {
        clients => console.clients("").await?.len(),
        users => console.users().await?.len(),
        plugins => plugins.len(),
        failed => failed,
        issuer => state.oauth().issuer(),
        fhir_base => state.settings().fhir_base_url(),
        ..admin.context("Overview", "")
    };
    Ok(page(StatusCode::OK, "dashboard.html", ctx))
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// Same password checks and limits as the OAuth sign-in page (`oauth::signin`), then the
/// role; a new session replaces whatever session the browser had.
async fn sign_in(
    State(state): State<AppState>,
    Address(address): Address,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    super::form_fields(&headers, &body)?;
    let form: SignInForm = serde_urlencoded::from_bytes(&body).unwrap_or(SignInForm {
        csrf: String::new(),
        username: String::new(),
        password: String::new(),
    });
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), form.csrf.as_bytes()) {
        return Err(PageError::Csrf);
    }
    let event = |action: &str, outcome: &str, detail: String| NewAuditEvent {
        actor: form.username.clone(),
        action: action.into(),
        target: "admin console".into(),
        outcome: outcome.into(),
        detail,
        address: address.clone(),
        ..Default::default()
    };
    let store = state.store();
    let attempt = signin::attempt(
        store,
        &form.username,
        &form.password,
        &address,
        true,
        state.oauth().now(),
    )
    .await?;
    // Refused: the page says why, and so does the audit event.
    let (status, why, detail) = match attempt {
        Attempt::SignedIn(user) => {
            if !store
                .user_roles(&user.id)
                .await?
                .iter()
                .any(|r| r == ADMIN_ROLE)
            {
                let why = "the account does not have the admin role";
                audit(&state, event("signin.refused", "refused", why.into())).await;
                return Ok(not_an_administrator(&user));
            }
            let resp = start_session(&state, &headers, &user).await?;
            audit(
                &state,
                event("signin.ok", "ok", "console session started".into()),
            )
            .await;
            return Ok(resp);
        }
        Attempt::Wrong { .. } => (
            StatusCode::UNAUTHORIZED,
            "Wrong username or password.".to_owned(),
            "wrong username or password".to_owned(),
        ),
        Attempt::Paused(pause) => {
            let why = pause.describe(&form.username, &address);
            (StatusCode::TOO_MANY_REQUESTS, why.clone(), why)
        }
    };
    audit(&state, event("signin.failed", "refused", detail)).await;
    Ok(sign_in_page(&state, status, &form.username, Some(why)))
}

/// The page for an account that signed in without the admin role.
fn not_an_administrator(user: &User) -> Response {
    page(
        StatusCode::FORBIDDEN,
        "message.html",
        context! {
            title => "Not an administrator",
            heading => "Not an administrator",
            message => format!("The account {} signed in, but it does not have the admin role, which the console needs. An administrator can give it with: hestia user set {} --role admin", user.username, user.username),
        },
    )
}

/// A new session for `user`, on a new random id: whatever session id the browser brought
/// is ended (against session fixation), and so are sessions idle past the timeout.
async fn start_session(state: &AppState, headers: &HeaderMap, user: &User) -> PageResult {
    let store = state.store();
    if let Some(old) = cookie(headers, SESSION_COOKIE) {
        store.delete_admin_session(&hash_secret(&old)).await?;
    }
    let now = state.oauth().now();
    let idle = state.settings().admin.session_idle.as_secs() as i64;
    store.purge_admin_sessions(now - idle).await?;
    let token = crate::oauth::random_token();
    let csrf = crate::oauth::random_token();
    store
        .create_admin_session(&hash_secret(&token), &user.id, &user.username, &csrf, now)
        .await?;
    let mut resp = super::super::oauth::redirect("/admin/");
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(state, SESSION_COOKIE, &token),
    );
    h.append(header::SET_COOKIE, set_cookie(state, SIGNIN_COOKIE, ""));
    Ok(resp)
}

#[derive(Deserialize)]
struct Empty {}

async fn sign_out(
    State(state): State<AppState>,
    admin: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    state
        .store()
        .delete_admin_session(&admin.token_hash)
        .await?;
    admin
        .console(&state)
        .audit("signout", "admin console", "console session ended")
        .await;
    let mut resp = super::super::oauth::redirect("/admin/");
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, ""));
    Ok(resp)
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: String,
}

async fn clients(
    State(state): State<AppState>,
    admin: SignedIn,
    Query(search): Query<Search>,
) -> PageResult {
    let list = admin.console(&state).clients(&search.q).await?;
    let ctx =
        context! { clients => ser(&list), q => search.q, ..admin.context("Clients", "Clients") };
    Ok(page(StatusCode::OK, "clients.html", ctx))
}

async fn new_client(admin: SignedIn) -> PageResult {
    let blank = context! { client_name => "", redirect_uris => Vec::<String>::new(), scope => "", audiences => Vec::<String>::new() };
    let ctx = context! { client => blank, ..admin.context("New client", "Clients") };
    Ok(page(StatusCode::OK, "client_new.html", ctx))
}

/// The page that shows a secret once, with a copy button and the Postman download.
fn secret_page(
    admin: &SignedIn,
    heading: &str,
    client_id: &str,
    secret: Option<String>,
) -> Response {
    let ctx = context! { heading => heading, client_id => client_id, secret => secret, ..admin.context(heading, "Clients") };
    page(StatusCode::OK, "secret.html", ctx)
}

async fn create_client(
    State(state): State<AppState>,
    admin: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let input: ClientInput = admin.form(&headers, &body)?;
    let (client, secret) = admin.console(&state).create_client(&input).await?;
    let id = client["client_id"].as_str().unwrap_or_default();
    Ok(secret_page(&admin, "Client created", id, secret))
}

async fn client(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    client_page(&state, &admin, &id, None).await
}

async fn client_page(
    state: &AppState,
    admin: &SignedIn,
    id: &str,
    notice: Option<&str>,
) -> PageResult {
    let detail = admin.console(state).client(id).await?;
    let stored = state.store().get_client(id).await?;
    let lifetimes = stored
        .map(|c| {
            let l = state.oauth().lifetimes(&c);
            format!(
                "access token {} s, refresh token {} s, code {} s",
                l.access, l.refresh, l.code
            )
        })
        .unwrap_or_default();
    let ctx = context! {
        created => utc(detail.client["created_at"].as_i64().unwrap_or(0)),
        last_token => detail.last_token_issued.map(utc),
        lifetimes => lifetimes,
        detail => ser(&detail),
        notice => notice,
        ..admin.context(id, "Clients")
    };
    Ok(page(StatusCode::OK, "client.html", ctx))
}

async fn update_client(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let input: ClientInput = admin.form(&headers, &body)?;
    admin.console(&state).update_client(&id, &input).await?;
    client_page(&state, &admin, &id, Some("Saved.")).await
}

async fn rotate_secret(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    let secret = admin.console(&state).rotate_client_secret(&id).await?;
    Ok(secret_page(&admin, "New secret", &id, Some(secret)))
}

async fn remove_client(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    admin.console(&state).remove_client(&id).await?;
    let list = admin.console(&state).clients("").await?;
    let notice = format!("Client {id} removed; its grants and tokens are revoked.");
    let ctx = context! { clients => ser(&list), q => "", notice => notice, ..admin.context("Clients", "Clients") };
    Ok(page(StatusCode::OK, "clients.html", ctx))
}

#[derive(Deserialize)]
struct SecretForm {
    secret: String,
}

/// The Postman environment of a client, with the secret the page showed (the server has
/// only its hash), as a download.
async fn postman(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let form: SecretForm = admin.form(&headers, &body)?;
    let console = admin.console(&state);
    console.client(&id).await?;
    let env = console.postman_environment(&id, &form.secret, &state.settings().fhir_base_url());
    let mut resp = axum::Json(env).into_response();
    let name: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{name}.postman_environment.json\""
    )) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    super::super::oauth::no_store(&mut resp);
    Ok(resp)
}

async fn users(State(state): State<AppState>, admin: SignedIn) -> PageResult {
    users_page(&state, &admin, StatusCode::OK, None, None).await
}

async fn users_page(
    state: &AppState,
    admin: &SignedIn,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> PageResult {
    let list = admin.console(state).users().await?;
    let ctx = context! { users => ser(&list), notice => notice, error => error, ..admin.context("Users", "Users") };
    Ok(page(status, "users.html", ctx))
}

async fn create_user(
    State(state): State<AppState>,
    admin: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let input: UserInput = admin.form(&headers, &body)?;
    match admin.console(&state).create_user(&input).await {
        Ok(user) => {
            users_page(
                &state,
                &admin,
                StatusCode::OK,
                Some(format!("User {} created.", user.username)),
                None,
            )
            .await
        }
        Err(crate::console::ConsoleError::Internal(e)) => {
            Err(crate::console::ConsoleError::Internal(e).into())
        }
        Err(e) => {
            users_page(
                &state,
                &admin,
                StatusCode::BAD_REQUEST,
                None,
                Some(e.to_string()),
            )
            .await
        }
    }
}

async fn user(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(name): Path<String>,
) -> PageResult {
    user_page(&state, &admin, &name, None).await
}

async fn user_page(
    state: &AppState,
    admin: &SignedIn,
    name: &str,
    notice: Option<&str>,
) -> PageResult {
    let user = admin.console(state).user(name).await?;
    let grants: Vec<_> = user
        .grants
        .iter()
        .map(|g| {
            let state = match (&g.revoked_at, &g.revoked_reason) {
                (Some(at), reason) => format!("revoked {} ({})", utc(*at), reason.as_deref().unwrap_or("-")),
                (None, _) => "active".into(),
            };
            context! { grant_id => g.grant_id.clone(), client_id => g.client_id.clone(), created => utc(g.created_at), state => state, revoked => g.revoked_at.is_some() }
        })
        .collect();
    let sessions: Vec<_> = user
        .sessions
        .iter()
        .map(|s| context! { id => s.id.clone(), created => utc(s.created_at), last_seen => utc(s.last_seen) })
        .collect();
    let ctx = context! { created => utc(user.created_at), grants => grants, sessions => sessions, user => ser(&user), notice => notice, ..admin.context(name, "Users") };
    Ok(page(StatusCode::OK, "user.html", ctx))
}

#[derive(Deserialize)]
struct UserForm {
    #[serde(default)]
    roles: String,
    #[serde(default)]
    fhir_user: String,
}

async fn update_user(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let form: UserForm = admin.form(&headers, &body)?;
    admin
        .console(&state)
        .set_user(&name, &form.roles, &form.fhir_user)
        .await?;
    user_page(&state, &admin, &name, Some("Saved.")).await
}

#[derive(Deserialize)]
struct PasswordForm {
    password: String,
}

async fn reset_password(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let form: PasswordForm = admin.form(&headers, &body)?;
    admin
        .console(&state)
        .reset_password(&name, &form.password)
        .await?;
    user_page(&state, &admin, &name, Some("The password is set.")).await
}

async fn lock(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    admin.console(&state).set_locked(&name, true).await?;
    user_page(&state, &admin, &name, Some("Locked.")).await
}

async fn unlock(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    admin.console(&state).set_locked(&name, false).await?;
    user_page(&state, &admin, &name, Some("Unlocked.")).await
}

async fn revoke_grant(
    State(state): State<AppState>,
    admin: SignedIn,
    Path((name, grant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    admin.console(&state).revoke_grant(&name, &grant).await?;
    user_page(&state, &admin, &name, Some("The grant is revoked.")).await
}

async fn remove_user(
    State(state): State<AppState>,
    admin: SignedIn,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    admin.console(&state).remove_user(&name).await?;
    let notice =
        format!("User {name} removed; its grants, tokens and console sessions are revoked.");
    users_page(&state, &admin, StatusCode::OK, Some(notice), None).await
}

async fn end_session(
    State(state): State<AppState>,
    admin: SignedIn,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let _: Empty = admin.form(&headers, &body)?;
    admin.console(&state).end_session(&name, &id).await?;
    user_page(&state, &admin, &name, Some("The session is ended.")).await
}
