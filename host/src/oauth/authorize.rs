//! The authorization endpoint and its two pages: sign-in (CSRF-protected, rate-limited per
//! account and per address) and consent (scopes in plain words, each can be unticked; a
//! patient picker for `launch/patient` when the user is not a patient). Errors follow RFC
//! 6749 §4.1.2.1: a redirect only to a validated redirect URI, otherwise a page.

use serde::{Deserialize, Serialize};

use super::errors::ErrorCode;
use super::{AuthServer, OAuthError, Params, hash_token, pkce, random_token, scopes};
use crate::store::{AuthRequestRow, Client, CodeRow, User, constant_time_eq};

/// How long the sign-in and consent pages of one request stay usable.
pub const REQUEST_LIFETIME: i64 = 600;
/// Sign-in rate limits: failures allowed within [`LOGIN_WINDOW`] seconds.
pub const LOGIN_WINDOW: i64 = 900;
pub const MAX_FAILURES_PER_USER: i64 = 5;
pub const MAX_FAILURES_PER_ADDRESS: i64 = 20;

/// A validated authorization request, kept between the pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_given: bool,
    /// What the policy grants of the requested scopes; the user may untick some.
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub audiences: Vec<String>,
}

/// A failure the browser is shown: a page, or a redirect back to the client with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Shown as an error page (the redirect URI could not be trusted, or the page expired).
    Page(String),
    /// The absolute URL to redirect to (`error`, `error_description`, `state`, `iss`).
    Redirect(String),
}

impl From<OAuthError> for AuthorizeError {
    fn from(e: OAuthError) -> Self {
        AuthorizeError::Page(e.description)
    }
}

/// What the sign-in page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPage {
    pub request_id: String,
    pub csrf: String,
    pub client_name: String,
    pub username: String,
    pub error: Option<String>,
    /// A new browser-binding cookie value to set, when the browser had none.
    pub set_browser: Option<String>,
}

/// What the consent page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentPage {
    pub request_id: String,
    pub csrf: String,
    pub client_name: String,
    pub username: String,
    /// (scope, plain words)
    pub scopes: Vec<(String, String)>,
    pub audiences: Vec<String>,
    /// True when `launch/patient` is asked and the user is not a patient.
    pub patient_picker: bool,
    pub error: Option<String>,
}

pub enum LoginOutcome {
    /// Signed in: go to the consent page of this request.
    Consent(String),
    /// Show the sign-in page again, with a message.
    Retry(LoginPage),
}

pub enum ConsentOutcome {
    Redirect(String),
    Retry(ConsentPage),
}

/// The URL of a redirect back to the client (RFC 9207 `iss` included).
fn redirect_url(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        Err(_) => redirect_uri.to_string(),
    }
}

fn patient_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

impl AuthServer {
    fn error_redirect(&self, req: &AuthorizeRequest, e: &OAuthError) -> AuthorizeError {
        let mut pairs = vec![
            ("error", e.code.as_str()),
            ("error_description", e.description.as_str()),
        ];
        if let Some(state) = &req.state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", self.issuer()));
        AuthorizeError::Redirect(redirect_url(&req.redirect_uri, &pairs))
    }

    /// `GET /authorize`: validates the request and opens the sign-in page.
    pub async fn authorize(
        &self,
        params: &Params,
        browser: Option<&str>,
    ) -> Result<LoginPage, AuthorizeError> {
        // Until client and redirect URI are validated, errors are pages (never redirects).
        let client_id = params.require("client_id")?;
        let client = self
            .store()
            .get_client(client_id)
            .await
            .map_err(OAuthError::from)?;
        let Some(client) = client else {
            return Err(AuthorizeError::Page(format!(
                "unknown client: no client with id {client_id:?} is registered"
            )));
        };
        let (redirect_uri, given) = match params.get("redirect_uri")? {
            Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => (uri.to_string(), true),
            Some(uri) => {
                return Err(AuthorizeError::Page(format!(
                    "redirect_uri {uri} is not registered for client {client_id} (registered: {}); it must match exactly",
                    if client.redirect_uris.is_empty() {
                        "none".into()
                    } else {
                        client.redirect_uris.join(", ")
                    }
                )));
            }
            None if client.redirect_uris.len() == 1 => (client.redirect_uris[0].clone(), false),
            None => {
                return Err(AuthorizeError::Page(format!(
                    "redirect_uri is missing, and client {client_id} has {} registered redirect URIs, so it must say which",
                    client.redirect_uris.len()
                )));
            }
        };
        let mut req = AuthorizeRequest {
            client_id: client.client_id.clone(),
            redirect_uri,
            redirect_uri_given: given,
            scopes: Vec::new(),
            state: params.get("state").ok().flatten().map(str::to_string),
            nonce: None,
            code_challenge: None,
            code_challenge_method: None,
            audiences: Vec::new(),
        };
        match self.check_authorize(params, &client, &mut req).await {
            Ok(()) => {}
            Err(e) => return Err(self.error_redirect(&req, &e)),
        }

        let now = self.now();
        let (browser, set_browser) = match browser.filter(|b| b.len() >= 32) {
            Some(b) => (b.to_string(), None),
            None => {
                let b = random_token();
                (b.clone(), Some(b))
            }
        };
        let row = AuthRequestRow {
            id: random_token(),
            browser_hash: hash_token(&browser),
            csrf: random_token(),
            client_id: client.client_id.clone(),
            params: serde_json::to_string(&req).map_err(OAuthError::server)?,
            user_id: None,
            auth_time: None,
            created_at: now,
            expires_at: now + REQUEST_LIFETIME,
        };
        self.store()
            .create_auth_request(&row)
            .await
            .map_err(OAuthError::from)?;
        Ok(LoginPage {
            request_id: row.id,
            csrf: row.csrf,
            client_name: client.client_name,
            username: String::new(),
            error: None,
            set_browser,
        })
    }

    async fn check_authorize(
        &self,
        params: &Params,
        client: &Client,
        req: &mut AuthorizeRequest,
    ) -> Result<(), OAuthError> {
        match params.get("response_type")? {
            Some("code") => {}
            Some(other) => {
                return Err(OAuthError::new(
                    ErrorCode::UnsupportedResponseType,
                    format!("response_type {other:?} is not supported; use code"),
                ));
            }
            None => {
                return Err(OAuthError::invalid_request(
                    "response_type is missing; use code",
                ));
            }
        }
        if !client.grant_types.iter().any(|g| g == "authorization_code") {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!(
                    "client {} is not registered for the authorization_code grant",
                    client.client_id
                ),
            ));
        }
        if params.get("request")?.is_some() || params.get("request_uri")?.is_some() {
            return Err(OAuthError::invalid_request(
                "request objects (request, request_uri) are not supported",
            ));
        }
        if params.get("launch")?.is_some() {
            return Err(OAuthError::invalid_request(
                "EHR launch (the launch parameter) is not supported; use a standalone launch with the launch/patient scope",
            ));
        }
        req.nonce = params.get("nonce")?.map(str::to_string);
        match params.get("code_challenge")? {
            Some(challenge) => {
                let method = params.get("code_challenge_method")?;
                pkce::check_challenge(challenge, method).map_err(OAuthError::invalid_request)?;
                req.code_challenge = Some(challenge.to_string());
                req.code_challenge_method = Some(pkce::S256.to_string());
            }
            None if client.is_public() => {
                return Err(OAuthError::invalid_request(format!(
                    "PKCE is required for public client {}: send code_challenge with code_challenge_method=S256",
                    client.client_id
                )));
            }
            None => {}
        }
        let requested = scopes::split(params.get("scope")?.unwrap_or_default());
        req.scopes = self.decide_scopes(client, "authorization_code", requested, None)?;
        req.audiences = self.decide_audiences(client, params).await?;
        if params.get("prompt")? == Some("none") {
            return Err(OAuthError::new(
                ErrorCode::LoginRequired,
                "prompt=none was asked, but the user must sign in (this server keeps no sign-in session)",
            ));
        }
        Ok(())
    }

    /// Loads a request and checks that it belongs to this browser and form.
    async fn load_request(
        &self,
        id: &str,
        browser: Option<&str>,
        csrf: Option<&str>,
    ) -> Result<(AuthRequestRow, AuthorizeRequest, Client), AuthorizeError> {
        let expired = || {
            AuthorizeError::Page(
                "this sign-in page has expired or was already used; go back to the application and start again".into(),
            )
        };
        let row = self
            .store()
            .get_auth_request(id)
            .await
            .map_err(OAuthError::from)?
            .ok_or_else(expired)?;
        if self.now() >= row.expires_at {
            return Err(expired());
        }
        let bound = browser.is_some_and(|b| {
            constant_time_eq(hash_token(b).as_bytes(), row.browser_hash.as_bytes())
        });
        if !bound {
            return Err(AuthorizeError::Page(
                "this form was not opened in this browser (its cookie is missing or different); go back to the application and start again".into(),
            ));
        }
        if let Some(csrf) = csrf
            && !constant_time_eq(csrf.as_bytes(), row.csrf.as_bytes())
        {
            return Err(AuthorizeError::Page(
                "the form's anti-forgery token is wrong or stale (was it submitted twice?); go back to the application and start again".into(),
            ));
        }
        let req: AuthorizeRequest =
            serde_json::from_str(&row.params).map_err(OAuthError::server)?;
        let client = self
            .store()
            .get_client(&req.client_id)
            .await
            .map_err(OAuthError::from)?
            .ok_or_else(|| AuthorizeError::Page("the client was removed".into()))?;
        Ok((row, req, client))
    }

    /// `POST /login`: checks the password under the rate limits.
    pub async fn login(
        &self,
        form: &Params,
        browser: Option<&str>,
        address: &str,
    ) -> Result<LoginOutcome, AuthorizeError> {
        let id = form.require("request_id")?;
        let csrf = form.require("csrf")?;
        let (row, _req, client) = self.load_request(id, browser, Some(csrf)).await?;
        let username = form.get("username")?.unwrap_or_default().trim().to_string();
        let password = form.get("password")?.unwrap_or_default();
        let retry = |error: String| {
            LoginOutcome::Retry(LoginPage {
                request_id: row.id.clone(),
                csrf: row.csrf.clone(),
                client_name: client.client_name.clone(),
                username: username.clone(),
                error: Some(error),
                set_browser: None,
            })
        };
        if username.is_empty() || password.is_empty() {
            return Ok(retry("Enter your username and password.".into()));
        }
        let now = self.now();
        let store = self.store();
        let (user_failures, user_first, addr_failures, addr_first) = store
            .login_failures(&username, address, now - LOGIN_WINDOW)
            .await
            .map_err(OAuthError::from)?;
        let minutes = |first: i64| ((first + LOGIN_WINDOW - now).max(60) + 59) / 60;
        if user_failures >= MAX_FAILURES_PER_USER {
            return Ok(retry(format!(
                "Too many failed sign-ins for account “{username}”: {user_failures} in the last {} minutes. Try again in {} minutes.",
                LOGIN_WINDOW / 60,
                minutes(user_first)
            )));
        }
        if addr_failures >= MAX_FAILURES_PER_ADDRESS {
            return Ok(retry(format!(
                "Too many failed sign-ins from your address ({address}): {addr_failures} in the last {} minutes. Try again in {} minutes.",
                LOGIN_WINDOW / 60,
                minutes(addr_first)
            )));
        }
        let user = store
            .verify_user(&username, password)
            .await
            .map_err(OAuthError::from)?;
        store
            .record_login_attempt(&username, address, now, user.is_some())
            .await
            .map_err(OAuthError::from)?;
        let Some(user) = user else {
            let left = MAX_FAILURES_PER_USER - user_failures - 1;
            return Ok(retry(format!(
                "Wrong username or password. {left} more attempt{} before this account is paused for {} minutes.",
                if left == 1 { "" } else { "s" },
                LOGIN_WINDOW / 60
            )));
        };
        // A new anti-forgery token for the consent form.
        store
            .set_auth_request_user(&row.id, &user.id, now, &random_token())
            .await
            .map_err(OAuthError::from)?;
        Ok(LoginOutcome::Consent(row.id))
    }

    async fn signed_in_user(&self, row: &AuthRequestRow) -> Result<User, AuthorizeError> {
        let Some(user_id) = &row.user_id else {
            return Err(AuthorizeError::Page(
                "sign in first: this request has no signed-in user".into(),
            ));
        };
        self.store()
            .get_user(user_id)
            .await
            .map_err(OAuthError::from)?
            .ok_or_else(|| AuthorizeError::Page("the signed-in account no longer exists".into()))
    }

    fn consent_view(
        row: &AuthRequestRow,
        req: &AuthorizeRequest,
        client: &Client,
        user: &User,
        error: Option<String>,
    ) -> ConsentPage {
        let is_patient = user
            .fhir_user
            .as_deref()
            .is_some_and(|f| f.starts_with("Patient/"));
        ConsentPage {
            request_id: row.id.clone(),
            csrf: row.csrf.clone(),
            client_name: client.client_name.clone(),
            username: user.username.clone(),
            scopes: req
                .scopes
                .iter()
                .map(|s| (s.clone(), scopes::describe(s)))
                .collect(),
            audiences: req.audiences.clone(),
            patient_picker: req.scopes.iter().any(|s| s == "launch/patient") && !is_patient,
            error,
        }
    }

    /// `GET /consent`: what the signed-in user is asked to approve.
    pub async fn consent_page(
        &self,
        request_id: &str,
        browser: Option<&str>,
    ) -> Result<ConsentPage, AuthorizeError> {
        let (row, req, client) = self.load_request(request_id, browser, None).await?;
        let user = self.signed_in_user(&row).await?;
        Ok(Self::consent_view(&row, &req, &client, &user, None))
    }

    /// `POST /consent`: approve (some of) the scopes, or deny; issues the code.
    pub async fn consent(
        &self,
        form: &Params,
        browser: Option<&str>,
    ) -> Result<ConsentOutcome, AuthorizeError> {
        let id = form.require("request_id")?;
        let csrf = form.require("csrf")?;
        let (row, req, client) = self.load_request(id, browser, Some(csrf)).await?;
        let user = self.signed_in_user(&row).await?;
        let approve = form.get("decision")? == Some("approve");
        let ticked = form.all("scope");
        let approved: Vec<String> = req
            .scopes
            .iter()
            .filter(|s| ticked.contains(&s.as_str()))
            .cloned()
            .collect();
        if !approve || approved.is_empty() {
            self.store()
                .take_auth_request(&row.id)
                .await
                .map_err(OAuthError::from)?;
            let why = if approve {
                "the user approved none of the requested scopes"
            } else {
                "the user denied the request"
            };
            return Err(self.error_redirect(&req, &OAuthError::new(ErrorCode::AccessDenied, why)));
        }
        let patient = if approved.iter().any(|s| s == "launch/patient") {
            match user
                .fhir_user
                .as_deref()
                .and_then(|f| f.strip_prefix("Patient/"))
            {
                Some(own) => Some(own.to_string()),
                None => match form.get("patient")?.map(str::trim) {
                    Some(p) if patient_id_ok(p.trim_start_matches("Patient/")) => {
                        Some(p.trim_start_matches("Patient/").to_string())
                    }
                    other => {
                        let error = match other {
                            Some(p) => format!("“{p}” is not a patient id (letters, digits, - and . only)."),
                            None => "Choose the patient this app will work with (enter the patient's id), or untick that permission.".into(),
                        };
                        return Ok(ConsentOutcome::Retry(Self::consent_view(
                            &row,
                            &req,
                            &client,
                            &user,
                            Some(error),
                        )));
                    }
                },
            }
        } else {
            None
        };
        let granted = match self.decide_scopes(&client, "authorization_code", approved, Some(&user))
        {
            Ok(g) => g,
            Err(e) => return Err(self.error_redirect(&req, &e)),
        };
        if !self
            .store()
            .take_auth_request(&row.id)
            .await
            .map_err(OAuthError::from)?
        {
            return Err(AuthorizeError::Page(
                "this request was already answered; go back to the application".into(),
            ));
        }
        let now = self.now();
        let grant_id = random_token();
        let code = random_token();
        self.store()
            .create_grant(&grant_id, &client.client_id, Some(&user.id), now)
            .await
            .map_err(OAuthError::from)?;
        self.store()
            .insert_code(&CodeRow {
                code_hash: hash_token(&code),
                grant_id,
                client_id: client.client_id.clone(),
                user_id: user.id.clone(),
                redirect_uri: req.redirect_uri.clone(),
                redirect_uri_given: req.redirect_uri_given,
                scope: scopes::join(&granted),
                audiences: req.audiences.clone(),
                patient,
                fhir_user: user.fhir_user.clone(),
                nonce: req.nonce.clone(),
                code_challenge: req.code_challenge.clone(),
                code_challenge_method: req.code_challenge_method.clone(),
                auth_time: row.auth_time.unwrap_or(now),
                created_at: now,
                expires_at: now + self.lifetimes(&client).code,
                used_at: None,
            })
            .await
            .map_err(OAuthError::from)?;
        let mut pairs = vec![("code", code.as_str())];
        if let Some(state) = &req.state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", self.issuer()));
        Ok(ConsentOutcome::Redirect(redirect_url(
            &req.redirect_uri,
            &pairs,
        )))
    }
}
