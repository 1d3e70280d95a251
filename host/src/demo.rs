//! `hestia serve --demo`: a first run that leads straight into the reference journey.
//!
//! Creates once, in the configured database: a user `demo` whose `fhirUser` is a sample
//! patient, a confidential client for Postman (callback `https://oauth.pstmn.io/v1/callback`),
//! and a few sample patients with Observations. The password and the client secret are
//! random per data directory; because the database keeps only their hashes, they are also
//! kept in `DATA_DIR/demo.json` (mode 0600) so that every start can print them again.
//! Each start also prints a fresh initial access token for dynamic registration and writes
//! the Postman collection with an environment filled in for this server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Settings;
use crate::fhir::error::FhirError;
use crate::fhir::repository::{NoValidation, Repository, RepositoryOptions};
use crate::store::{ClientKind, NewClient, NewUser, Store};

/// The Postman collection of the repository (`postman/`), shipped inside the binary so that
/// `--demo` can hand it out next to an environment for this server.
const COLLECTION: &str = include_str!("../../postman/Hestia.postman_collection.json");

pub const USERNAME: &str = "demo";
pub const PATIENT: &str = "demo-amy";
pub const POSTMAN_CALLBACK: &str = "https://oauth.pstmn.io/v1/callback";
/// What the Postman client may ask for: SMART user and patient scopes for the code flow,
/// system scopes for client_credentials.
pub const CLIENT_SCOPE: &str = "openid fhirUser profile launch/patient offline_access \
patient/*.read patient/*.rs user/*.read user/*.rs system/*.read system/*.rs system/*.write";
/// How long the printed initial access token is valid, and how many registrations it allows.
const REGISTRATION_TOKEN_SECS: i64 = 86_400;
const REGISTRATION_TOKEN_USES: i64 = 20;

/// What `demo.json` keeps between starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Saved {
    username: String,
    password: String,
    client_id: String,
    client_secret: String,
}

/// What a start prints.
#[derive(Debug, Clone, Serialize)]
pub struct Demo {
    pub username: String,
    pub password: String,
    pub fhir_user: String,
    pub client_id: String,
    pub client_secret: String,
    pub registration_token: String,
    pub patients: Vec<String>,
    pub collection: PathBuf,
    pub environment: PathBuf,
    pub credentials_file: PathBuf,
    /// The compatibility FHIR base (`fhir.require_basic_auth`) served beside the main one.
    pub basic_fhir_base: String,
}

fn random_secret() -> String {
    let mut buf = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Writes a file only its owner can read (it holds credentials).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates what is missing of the demo and returns what to print.
pub async fn ensure(settings: &Settings, basic_fhir_base: &str) -> anyhow::Result<Demo> {
    let store = Store::open(&settings.database_url).await?;
    let credentials_file = settings.data_dir.join("demo.json");
    let saved = read_saved(&credentials_file)?;

    let fhir_user = format!("Patient/{PATIENT}");
    let password = saved
        .as_ref()
        .map_or_else(random_secret, |s| s.password.clone());
    ensure_user(&store, &password, &fhir_user, &credentials_file).await?;
    let (client_id, client_secret) = ensure_client(&store, saved.as_ref()).await?;
    let now = Saved {
        username: USERNAME.into(),
        password: password.clone(),
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
    };
    if saved.as_ref() != Some(&now) {
        write_private(&credentials_file, &serde_json::to_string_pretty(&now)?)?;
    }

    let patients = ensure_samples(&store, settings).await?;

    let auth = crate::oauth::AuthServer::new(store.clone(), settings);
    let registration_token = auth
        .create_registration_token(REGISTRATION_TOKEN_SECS, REGISTRATION_TOKEN_USES)
        .await?;

    let (collection, environment) = write_postman(
        settings,
        &[
            ("baseUrl", &settings.public_url),
            ("fhirBase", &settings.fhir_base_url()),
            ("basicFhirBase", basic_fhir_base),
            ("client_id", &client_id),
            ("client_secret", &client_secret),
            ("username", USERNAME),
            ("password", &password),
            ("patient_id", PATIENT),
            ("registration_token", &registration_token),
        ],
    )?;
    store.close().await;

    Ok(Demo {
        username: USERNAME.into(),
        password,
        fhir_user,
        client_id,
        client_secret,
        registration_token,
        patients,
        collection,
        environment,
        credentials_file,
        basic_fhir_base: basic_fhir_base.to_string(),
    })
}

/// The credentials of an earlier start, if `demo.json` exists.
fn read_saved(credentials_file: &Path) -> anyhow::Result<Option<Saved>> {
    match std::fs::read_to_string(credentials_file) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not the demo's credentials file; move it away to start afresh",
                credentials_file.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context(format!("cannot read {}", credentials_file.display())),
    }
}

/// The demo user with this password, created as a patient when missing; one of that name
/// with another password is refused rather than changed.
async fn ensure_user(
    store: &Store,
    password: &str,
    fhir_user: &str,
    credentials_file: &Path,
) -> anyhow::Result<()> {
    if store.find_user(USERNAME).await?.is_none() {
        store
            .create_user(NewUser {
                username: USERNAME.into(),
                password: password.to_owned(),
                fhir_user: Some(fhir_user.to_owned()),
            })
            .await?;
        // A patient: the demo's apps see the records of its own patient.
        store
            .update_user(
                USERNAME,
                crate::store::UserUpdate {
                    roles: Some(vec!["patient".into()]),
                    fhir_user: None,
                },
            )
            .await?;
    } else if store.verify_user(USERNAME, password).await?.is_none() {
        bail!(
            "the user {USERNAME:?} exists in this database, but its password is not the one in {}: \
             use another --data-dir/--database-url for the demo",
            credentials_file.display()
        );
    }
    Ok(())
}

/// The saved Postman client if it still exists with its secret, else a new one: its id
/// and secret.
async fn ensure_client(store: &Store, saved: Option<&Saved>) -> anyhow::Result<(String, String)> {
    if let Some(s) = saved
        && store.get_client(&s.client_id).await?.is_some()
        && store
            .verify_client_secret(&s.client_id, &s.client_secret)
            .await?
    {
        return Ok((s.client_id.clone(), s.client_secret.clone()));
    }
    let (client, secret) = store
        .create_client(NewClient {
            client_name: "Postman (Hestia demo)".into(),
            kind: ClientKind::App,
            public: false,
            redirect_uris: vec![POSTMAN_CALLBACK.into()],
            grant_types: vec![
                "authorization_code".into(),
                "refresh_token".into(),
                "client_credentials".into(),
            ],
            scope: CLIENT_SCOPE.into(),
            audiences: vec![],
            metadata: json!({}),
        })
        .await?;
    let secret = secret.context("a confidential client has a secret")?.0;
    Ok((client.client_id, secret))
}

/// The collection and an environment of `values` in `DATA_DIR/postman/`: their paths.
fn write_postman(
    settings: &Settings,
    values: &[(&str, &str)],
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let postman_dir = settings.data_dir.join("postman");
    let collection = postman_dir.join("Hestia.postman_collection.json");
    let environment = postman_dir.join("Hestia.postman_environment.json");
    std::fs::create_dir_all(&postman_dir)
        .with_context(|| format!("cannot create {}", postman_dir.display()))?;
    std::fs::write(&collection, COLLECTION)
        .with_context(|| format!("cannot write {}", collection.display()))?;
    let env = postman_environment(values);
    write_private(&environment, &serde_json::to_string_pretty(&env)?)?;
    Ok((collection, environment))
}

/// A Postman environment (the format Postman exports and newman reads).
pub(crate) fn postman_environment(values: &[(&str, &str)]) -> Value {
    json!({
        "id": "6f1f7a52-1d55-4a7e-9d8c-4e6d1f0a9e21",
        "name": "Hestia demo",
        "values": values.iter().map(|(k, v)| json!({
            "key": k,
            "value": v,
            "type": if k.contains("secret") || k.contains("password") || k.contains("token") { "secret" } else { "default" },
            "enabled": true,
        })).collect::<Vec<_>>(),
        "_postman_variable_scope": "environment",
    })
}

/// The sample data: three patients, a few Observations (vital signs and laboratory, so that
/// SMART v2 `?category=` scopes have something to tell apart). Each resource is created when
/// it never existed; one a person deleted or changed stays as they left it.
fn samples() -> Vec<Value> {
    let patient = |id: &str, family: &str, given: &str, gender: &str, birth: &str| {
        json!({"resourceType": "Patient", "id": id, "active": true,
               "name": [{"family": family, "given": [given]}],
               "gender": gender, "birthDate": birth})
    };
    let observation = |id: &str,
                       patient: &str,
                       category: &str,
                       code: (&str, &str),
                       value: f64,
                       unit: &str,
                       date: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
               "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
               "code": {"coding": [{"system": "http://loinc.org", "code": code.0, "display": code.1}], "text": code.1},
               "subject": {"reference": format!("Patient/{patient}")},
               "effectiveDateTime": date,
               "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}})
    };
    vec![
        patient(PATIENT, "Shaw", "Amy", "female", "1987-02-20"),
        patient("demo-ben", "Okafor", "Ben", "male", "1975-11-03"),
        patient("demo-chen", "Li", "Chen", "other", "2001-06-14"),
        observation(
            "demo-amy-heart-rate",
            PATIENT,
            "vital-signs",
            ("8867-4", "Heart rate"),
            72.0,
            "/min",
            "2024-05-01T09:30:00Z",
        ),
        observation(
            "demo-amy-glucose",
            PATIENT,
            "laboratory",
            ("2339-0", "Glucose [Mass/volume] in Blood"),
            95.0,
            "mg/dL",
            "2024-05-01T09:45:00Z",
        ),
        observation(
            "demo-ben-heart-rate",
            "demo-ben",
            "vital-signs",
            ("8867-4", "Heart rate"),
            64.0,
            "/min",
            "2024-04-11T14:10:00Z",
        ),
    ]
}

async fn ensure_samples(store: &Store, settings: &Settings) -> anyhow::Result<Vec<String>> {
    // The samples are fixed and valid; the server's validator plugins are not started here.
    let repo = Repository::new(
        store.clone(),
        Arc::new(NoValidation),
        RepositoryOptions {
            base_url: settings.fhir_base_url(),
            create_on_update: true,
            hidden_as_not_found: false,
            search_limits: Default::default(),
        },
    );
    let mut patients = Vec::new();
    for sample in samples() {
        let Value::Object(resource): Value = sample else {
            unreachable!("samples are objects")
        };
        let type_name = resource["resourceType"].as_str().unwrap_or_default();
        let id = resource["id"].as_str().unwrap_or_default().to_string();
        let resource_type = crate::fhir::repository::resource_type(type_name)?;
        if type_name == "Patient" {
            patients.push(format!("Patient/{id}"));
        }
        match repo.read(None, resource_type, &id).await {
            Err(FhirError::NotFound(_)) => {
                repo.update(
                    None,
                    resource_type,
                    &id,
                    resource.clone(),
                    None,
                    &crate::fhir::access::Access::Unrestricted,
                )
                .await
                .with_context(|| format!("cannot create the sample {type_name}/{id}"))?;
            }
            Ok(_) | Err(FhirError::Gone(_)) => {}
            Err(e) => return Err(e).context(format!("cannot read {type_name}/{id}")),
        }
    }
    Ok(patients)
}

impl Demo {
    /// The lines `serve --demo` prints before the server starts.
    pub fn describe(&self, settings: &Settings) -> String {
        format!(
            "hestia: demo (credentials kept in {creds})\n\
             \x20 user:          {user} / {password}  (fhirUser {fhir_user})\n\
             \x20 Postman client: client_id {client_id}\n\
             \x20                 client_secret {client_secret}\n\
             \x20                 redirect URI {callback}; grants authorization_code, refresh_token, client_credentials\n\
             \x20 registration:   initial access token {token} (Authorization: Bearer, {uses} uses, 24 h)\n\
             \x20 sample data:    {patients} with Observations\n\
             \x20 Postman:        import {collection}\n\
             \x20                 and the environment {environment} (filled in for {base})\n\
             \x20 newman:         newman run {collection} -e {environment}{ca}\n\
             \x20 Basic compatibility (fhir.require_basic_auth): FHIR base {basic}, same tokens and accounts\n\
             \x20 authorize at {base}/oauth2/authorize, token at {base}/oauth2/token, audience (aud) {fhir}\n\
             \x20 admin console:  {base}/admin/ (this client is under Clients as {client_id}); sign in with an\n\
             \x20                 account made by `hestia user add NAME --password-stdin --role admin`",
            ca = match settings.tls {
                crate::config::TlsMode::DevCert => format!(
                    " --ssl-extra-ca-certs {}",
                    settings.data_dir.join("tls").join("ca.pem").display()
                ),
                _ => String::new(),
            },
            basic = self.basic_fhir_base,
            creds = self.credentials_file.display(),
            user = self.username,
            password = self.password,
            fhir_user = self.fhir_user,
            client_id = self.client_id,
            client_secret = self.client_secret,
            callback = POSTMAN_CALLBACK,
            token = self.registration_token,
            uses = REGISTRATION_TOKEN_USES,
            patients = self.patients.join(", "),
            collection = self.collection.display(),
            environment = self.environment.display(),
            base = settings.public_url,
            fhir = settings.fhir_base_url(),
        )
    }
}
