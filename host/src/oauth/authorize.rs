//! The authorization endpoint and its two pages: sign-in (CSRF-protected, rate-limited per
//! account and per address) and consent (scopes in plain words, each can be unticked; a
//! patient picker for `launch/patient` when the user is not a patient). Errors follow RFC
//! 6749 §4.1.2.1: a redirect only to a validated redirect URI, otherwise a page.
//!
//! Until someone signs in, nothing is written: the validated request travels in the
//! sign-in form, sealed ([`super::sealed`]). A successful sign-in stores it as an
//! authorization-request row, which the consent page reads and the code consumes.

use serde::{Deserialize, Serialize};

use super::errors::ErrorCode;
use super::picker::PatientReach;
use super::signin::{self, Attempt};
use super::{AuthServer, OAuthError, Params, hash_token, pkce, random_token, scopes, sealed};
use crate::store::{AuthRequestRow, Client, CodeRow, User, constant_time_eq};

pub use super::picker::{PICKER_LIMIT, PatientChoice, PatientList};
pub use super::signin::{LOGIN_WINDOW, MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_USER};

/// How long the sign-in and consent pages of one request stay usable.
pub const REQUEST_LIFETIME: i64 = 600;

/// What the sealed `request_id` of the sign-in form holds.
const SEALED_LOGIN: &str = "hestia sign-in form";

/// A validated request waiting for its sign-in, sealed into the sign-in form.
#[derive(Serialize, Deserialize)]
struct PendingSignIn {
    request: AuthorizeRequest,
    browser_hash: String,
    csrf: String,
}

fn expired_page() -> AuthorizeError {
    AuthorizeError::Page(
        "this sign-in page has expired or was already used; go back to the application and start again".into(),
    )
}

/// Whether a form belongs to the browser that opened it and carries its anti-forgery token.
fn check_form_binding(
    browser: Option<&str>,
    browser_hash: &str,
    csrf: Option<&str>,
    expected_csrf: &str,
) -> Result<(), AuthorizeError> {
    let bound = browser
        .is_some_and(|b| constant_time_eq(hash_token(b).as_bytes(), browser_hash.as_bytes()));
    if !bound {
        return Err(AuthorizeError::Page(
            "this form was not opened in this browser (its cookie is missing or different); go back to the application and start again".into(),
        ));
    }
    if let Some(csrf) = csrf
        && !constant_time_eq(csrf.as_bytes(), expected_csrf.as_bytes())
    {
        return Err(AuthorizeError::Page(
            "the form's anti-forgery token is wrong or stale (was it submitted twice?); go back to the application and start again".into(),
        ));
    }
    Ok(())
}

/// What an account's records reach, as the consent page says it.
fn reach_in_words(rights: &crate::rights::Rights) -> String {
    let roles = if rights.roles.is_empty() {
        "none".to_string()
    } else {
        rights.roles.join(", ")
    };
    match (&rights.fhir_user_compartment, rights.grants.is_empty()) {
        (_, true) => format!(
            "Your account has no access to health records here (roles: {roles}): the app will get none."
        ),
        (Some(patient), false) => format!(
            "The app will see only your own records (Patient/{patient}), as far as you allow below."
        ),
        (None, false) => format!(
            "The app will see records of the patients your account may access (roles: {roles}), as far as you allow below."
        ),
    }
}

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
    /// The patients to pick from, when this server holds the FHIR data (`None`: it serves
    /// no FHIR, so the patient's id is typed in).
    pub patients: Option<PatientList>,
    /// What the records asked for reach, in words, for an account whose rights bound them
    /// (`None` when the app asks for no records).
    pub reach: Option<String>,
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
    Retry(Box<ConsentPage>),
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

    /// `GET /authorize`: validates the request and opens the sign-in page; writes nothing.
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
        let (redirect_uri, given) = chosen_redirect_uri(params, &client)?;
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
        let pending = PendingSignIn {
            request: req,
            browser_hash: hash_token(&browser),
            csrf: random_token(),
        };
        let request_id = sealed::seal(
            self.store(),
            SEALED_LOGIN,
            &pending,
            now + REQUEST_LIFETIME,
            now,
        )
        .await
        .map_err(OAuthError::server)?;
        Ok(LoginPage {
            request_id,
            csrf: pending.csrf,
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
        req.scopes = self
            .decide_scopes(client, "authorization_code", requested, None, None)
            .await?
            .scopes;
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
        let row = self
            .store()
            .get_auth_request(id)
            .await
            .map_err(OAuthError::from)?
            .ok_or_else(expired_page)?;
        if self.now() >= row.expires_at {
            return Err(expired_page());
        }
        check_form_binding(browser, &row.browser_hash, csrf, &row.csrf)?;
        let req: AuthorizeRequest =
            serde_json::from_str(&row.params).map_err(OAuthError::server)?;
        let client = self.request_client(&req).await?;
        Ok((row, req, client))
    }

    async fn request_client(&self, req: &AuthorizeRequest) -> Result<Client, AuthorizeError> {
        self.store()
            .get_client(&req.client_id)
            .await
            .map_err(OAuthError::from)?
            .ok_or_else(|| AuthorizeError::Page("the client was removed".into()))
    }

    /// Opens the sealed request of a sign-in form and checks that it belongs to this
    /// browser and form.
    async fn open_sign_in(
        &self,
        sealed_request: &str,
        browser: Option<&str>,
        csrf: &str,
    ) -> Result<(PendingSignIn, Client), AuthorizeError> {
        let pending: PendingSignIn =
            sealed::open(self.store(), SEALED_LOGIN, sealed_request, self.now())
                .await
                .map_err(OAuthError::server)?
                .ok_or_else(expired_page)?;
        check_form_binding(browser, &pending.browser_hash, Some(csrf), &pending.csrf)?;
        let client = self.request_client(&pending.request).await?;
        Ok((pending, client))
    }

    /// `POST /login`: checks the password under the rate limits; a successful sign-in
    /// stores the request for the consent page.
    pub async fn login(
        &self,
        form: &Params,
        browser: Option<&str>,
        address: &str,
    ) -> Result<LoginOutcome, AuthorizeError> {
        let sealed_request = form.require("request_id")?;
        let csrf = form.require("csrf")?;
        let (pending, client) = self.open_sign_in(sealed_request, browser, csrf).await?;
        let username = form.get("username")?.unwrap_or_default().trim().to_string();
        let password = form.get("password")?.unwrap_or_default();
        let retry = |error: String| {
            LoginOutcome::Retry(LoginPage {
                request_id: sealed_request.to_string(),
                csrf: csrf.to_string(),
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
        let attempt = signin::attempt(self.store(), &username, password, address, true, now)
            .await
            .map_err(OAuthError::from)?;
        let user = match attempt {
            Attempt::SignedIn(user) => user,
            Attempt::Paused(pause) => {
                return Ok(retry(
                    pause.describe(&format!("account “{username}”"), address),
                ));
            }
            Attempt::Wrong { left } => {
                return Ok(retry(format!(
                    "Wrong username or password. {left} more attempt{} before this account is paused for {} minutes.",
                    if left == 1 { "" } else { "s" },
                    LOGIN_WINDOW / 60
                )));
            }
        };
        let row = AuthRequestRow {
            id: random_token(),
            browser_hash: pending.browser_hash,
            // A new anti-forgery token for the consent form.
            csrf: random_token(),
            client_id: client.client_id.clone(),
            params: serde_json::to_string(&pending.request).map_err(OAuthError::server)?,
            user_id: Some(user.id),
            auth_time: Some(now),
            created_at: now,
            expires_at: now + REQUEST_LIFETIME,
        };
        self.store()
            .create_auth_request(&row)
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

    /// Whether this server holds the FHIR data its patient ids refer to.
    pub(super) fn holds_patients(&self) -> bool {
        self.fhir_base.is_some()
    }

    async fn consent_view(
        &self,
        row: &AuthRequestRow,
        req: &AuthorizeRequest,
        client: &Client,
        user: &User,
        patient_search: Option<&str>,
        error: Option<String>,
    ) -> Result<ConsentPage, AuthorizeError> {
        let rights = self
            .store()
            .rights_of(&user.id)
            .await
            .map_err(OAuthError::from)?;
        // An account confined to its own records launches with its patient: no picker.
        let patient_picker = req.scopes.iter().any(|s| s == "launch/patient")
            && rights.fhir_user_compartment.is_none();
        let patients = if patient_picker && self.holds_patients() {
            let search = patient_search.unwrap_or_default().trim().to_string();
            Some(self.picker_list(&PatientReach::of(&rights), search).await?)
        } else {
            None
        };
        let asks_records = req
            .scopes
            .iter()
            .any(|s| s.starts_with("user/") || s.starts_with("patient/"));
        let reach = asks_records.then(|| reach_in_words(&rights));
        Ok(ConsentPage {
            reach,
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
            patient_picker,
            patients,
            error,
        })
    }

    /// The patient of a `launch/patient` the user approved: an account confined to its own
    /// records launches with its patient; any other chooses one its rights reach (the
    /// inner error says why the choice is refused, for the page shown again).
    async fn chosen_patient(
        &self,
        form: &Params,
        user: &User,
    ) -> Result<Result<String, String>, AuthorizeError> {
        let rights = self
            .store()
            .rights_of(&user.id)
            .await
            .map_err(OAuthError::from)?;
        if let Some(own) = rights.fhir_user_compartment.clone() {
            return Ok(Ok(own));
        }
        let chosen = form
            .get("patient")?
            .map(|p| p.trim().trim_start_matches("Patient/"))
            .unwrap_or_default();
        if chosen.is_empty() {
            return Ok(Err(if self.holds_patients() {
                "Choose the patient this app will work with, or untick that permission.".into()
            } else {
                "Choose the patient this app will work with (enter the patient's id), or untick that permission.".into()
            }));
        }
        if !patient_id_ok(chosen) {
            return Ok(Err(format!(
                "“{chosen}” is not a patient id (letters, digits, - and . only)."
            )));
        }
        match self
            .pick_problem(&PatientReach::of(&rights), chosen)
            .await?
        {
            Some(problem) => Ok(Err(problem)),
            None => Ok(Ok(chosen.to_string())),
        }
    }

    /// `GET /consent`: what the signed-in user is asked to approve; `patient_search`
    /// narrows the patient picker by name.
    pub async fn consent_page(
        &self,
        request_id: &str,
        browser: Option<&str>,
        patient_search: Option<&str>,
    ) -> Result<ConsentPage, AuthorizeError> {
        let (row, req, client) = self.load_request(request_id, browser, None).await?;
        let user = self.signed_in_user(&row).await?;
        self.consent_view(&row, &req, &client, &user, patient_search, None)
            .await
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
            match self.chosen_patient(form, &user).await? {
                Ok(patient) => Some(patient),
                Err(error) => {
                    let search = form.get("patient_search")?;
                    let page = self
                        .consent_view(&row, &req, &client, &user, search, Some(error))
                        .await?;
                    return Ok(ConsentOutcome::Retry(Box::new(page)));
                }
            }
        } else {
            None
        };
        // A scope the account's rights confined to its own records carries that patient
        // as the launch context, as SMART's patient/ scopes need one.
        let (granted, patient) = match self
            .decide_scopes(
                &client,
                "authorization_code",
                approved,
                Some(&user),
                patient.as_deref(),
            )
            .await
        {
            Ok(decision) => (decision.scopes, decision.patient),
            Err(e) => return Err(self.error_redirect(&req, &e)),
        };
        let code = self
            .issue_code(&row, &req, &client, &user, &granted, patient)
            .await?;
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

    /// Spends the request (once: a second answer is refused) and stores a grant and its
    /// code for the approved scopes; returns the code.
    async fn issue_code(
        &self,
        row: &AuthRequestRow,
        req: &AuthorizeRequest,
        client: &Client,
        user: &User,
        granted: &[String],
        patient: Option<String>,
    ) -> Result<String, AuthorizeError> {
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
        let grant_id = super::record_id();
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
                scope: scopes::join(granted),
                audiences: req.audiences.clone(),
                patient,
                fhir_user: user.fhir_user.clone(),
                nonce: req.nonce.clone(),
                code_challenge: req.code_challenge.clone(),
                code_challenge_method: req.code_challenge_method.clone(),
                auth_time: row.auth_time.unwrap_or(now),
                created_at: now,
                expires_at: now + self.lifetimes(client).code,
                used_at: None,
            })
            .await
            .map_err(OAuthError::from)?;
        Ok(code)
    }
}

/// The redirect URI of an authorization request: the given one when it is registered
/// exactly, else the client's only one; with whether it was given. Errors are pages, as
/// where to redirect is not known yet.
fn chosen_redirect_uri(params: &Params, client: &Client) -> Result<(String, bool), AuthorizeError> {
    let client_id = &client.client_id;
    match params.get("redirect_uri")? {
        Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => Ok((uri.to_string(), true)),
        Some(uri) => Err(AuthorizeError::Page(format!(
            "redirect_uri {uri} is not registered for client {client_id} (registered: {}); it must match exactly",
            if client.redirect_uris.is_empty() {
                "none".into()
            } else {
                client.redirect_uris.join(", ")
            }
        ))),
        None if client.redirect_uris.len() == 1 => Ok((client.redirect_uris[0].clone(), false)),
        None => Err(AuthorizeError::Page(format!(
            "redirect_uri is missing, and client {client_id} has {} registered redirect URIs, so it must say which",
            client.redirect_uris.len()
        ))),
    }
}
