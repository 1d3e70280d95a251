//! The command line: `hestia serve | user | policy | client | dev-cert | keys | registration-token | token | plugin | fhir | backup | restore`. Parsing is clap's; each
//! command resolves its configuration and calls into the library.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::{RawConfig, ServeFlags, StoreFlags};
use crate::plugins::{PluginKind, PluginSettings, cli as plugin_cli};
use crate::store::{ClientKind, NewClient, NewUser, Store};

#[derive(Debug, Parser)]
#[command(
    name = "hestia",
    version,
    about = "OAuth2/OpenID Connect + SMART authorization server, FHIR R4 server and WebAssembly policy-plugin host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (default: SQLite in ./hestia-data, HTTPS on 127.0.0.1:8443 with a development certificate).
    Serve(ServeArgs),
    /// Manage user accounts and their roles.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage access policies (TOML documents of grants) and the roles and accounts they are attached to.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Write a development CA and a TLS certificate whose names match the given host names.
    DevCert(DevCertArgs),
    /// Manage the token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage initial access tokens for dynamic client registration (RFC 7591).
    #[command(subcommand, name = "registration-token")]
    RegistrationToken(RegistrationTokenCommand),
    /// Diagnose access tokens the way the FHIR server would.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write, check, test and list WebAssembly plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Maintain the FHIR store.
    #[command(subcommand)]
    Fhir(FhirCommand),
    /// Write a consistent snapshot of the whole database to an archive (safe while `serve` runs).
    Backup {
        /// The archive to write (a tar of zstd-compressed NDJSON per table and a manifest).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Restore an archive of `hestia backup` into an empty database, SQLite or PostgreSQL.
    Restore {
        /// The archive to restore; every checksum is checked before anything is written.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Restore into a database that is not empty: every row of its tables is replaced,
        /// in the restore's one transaction.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        store: StoreFlags,
    },
}

#[derive(Debug, Subcommand)]
pub enum FhirCommand {
    /// Rebuild the search index rows of stored resources from their current content, e.g.
    /// after an upgrade that indexes more. Safe beside a running server; prints what it did.
    Reindex {
        /// Only resources of this type (e.g. Observation).
        #[arg(long = "type", value_name = "TYPE")]
        resource_type: Option<String>,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Load resources from NDJSON files (one resource per line; `.gz` too), or from the
    /// `*.ndjson` and `*.ndjson.gz` files of directories, in batches of one transaction
    /// each, validated by the resource-validator plugins. Refused lines are reported as
    /// OperationOutcome lines naming file and line; the rest is loaded. Safe beside a
    /// running server.
    Import {
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
        /// Where the OperationOutcome lines of refused lines go (default: standard error).
        #[arg(long, value_name = "FILE")]
        errors: Option<PathBuf>,
        /// Resources per transaction (default: 5,000 on SQLite while no other process
        /// writes to the database, else 1,000).
        #[arg(long, value_name = "N")]
        batch: Option<usize>,
        #[command(flatten)]
        store: StoreFlags,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub flags: ServeFlags,
    /// Create (once) a demo user, a Postman client and sample patients; print their credentials and the Postman collection's path.
    #[arg(long, env = "HESTIA_DEMO")]
    pub demo: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Why a token would be accepted or refused (exit status 1 when refused).
    Explain {
        /// The token. Opaque tokens of other issuers may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        token: String,
        /// The FHIR base URL the token is meant for (default: this server's).
        #[arg(long, value_name = "URL")]
        resource: Option<String>,
        /// Also decide one request, e.g. "GET Patient/123" or "GET Observation?category=laboratory".
        #[arg(long, value_name = "METHOD PATH")]
        request: Option<String>,
        /// The server's public URL (its issuer), when not in the configuration.
        #[arg(long, env = "HESTIA_PUBLIC_URL", value_name = "URL")]
        public_url: Option<String>,
        /// The remote authorization server the FHIR server trusts, when not in the
        /// configuration (as `serve --issuer`): its JWKS, and its introspection endpoint with
        /// the FHIR server's stored registration.
        #[arg(long, env = "HESTIA_ISSUER", value_name = "URL")]
        issuer: Option<String>,
        /// CA certificate (PEM) of the issuer's TLS certificate (as `serve --issuer-ca`).
        #[arg(long, env = "HESTIA_ISSUER_CA", value_name = "PEM")]
        issuer_ca: Option<PathBuf>,
        #[command(flatten)]
        store: StoreFlags,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Compile a component; print its world, contract version and imports.
    Check { file: PathBuf },
    /// The plugins a server with this configuration would run: built-ins and files.
    List {
        /// Directory of plugin files. Default: the configuration's (hestia-data/plugins).
        #[arg(long, env = "HESTIA_PLUGINS_DIR", value_name = "DIR")]
        plugins_dir: Option<PathBuf>,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Write a ready-to-build plugin project to OUT/NAME, with the contract and the SDK.
    New {
        name: String,
        #[arg(long, value_parser = parse_kind, value_name = "scope-policy|audience-rule|resource-validator")]
        kind: PluginKind,
        #[arg(long, value_parser = parse_lang, default_value = "rust", value_name = "rust|python|js")]
        lang: plugin_cli::Lang,
        #[arg(long, default_value = ".", value_name = "DIR")]
        out: PathBuf,
        /// Rust: the `sdk/` folder of a Hestia checkout instead of the embedded SDK.
        #[arg(long, value_name = "DIR", conflicts_with = "sdk_git")]
        sdk_path: Option<PathBuf>,
        /// Rust: a git repository of Hestia instead of the embedded SDK.
        #[arg(long, value_name = "URL")]
        sdk_git: Option<String>,
    },
    /// Build a project of `plugin new` into NAME.wasm (cargo, componentize-py or componentize-js).
    Build {
        #[arg(default_value = ".", value_name = "DIR")]
        dir: PathBuf,
        /// JavaScript: compile ahead of time with weval (componentize-js `enableAot`): a
        /// component 3-4 MB bigger, decisions no faster than the rewritten bindings'
        /// (bench/README.md); needs weval 0.5.0.
        #[arg(long)]
        aot: bool,
    },
    /// Run a built component against cases of requests and expected decisions.
    Test {
        file: PathBuf,
        /// The cases (JSON; see docs/plugins.md).
        #[arg(long, value_name = "FILE")]
        cases: PathBuf,
        /// The plugin's manifest. Default: FILE with the extension .toml, when it exists.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// The configuration gives the limits, `[plugins.wasi]` and the compiled-code cache.
        #[command(flatten)]
        store: StoreFlags,
    },
}

fn parse_lang(s: &str) -> Result<plugin_cli::Lang, String> {
    plugin_cli::Lang::ALL
        .into_iter()
        .find(|l| l.as_str() == s)
        .ok_or_else(|| format!("one of rust, python, js, not {s:?}"))
}

fn parse_kind(s: &str) -> Result<PluginKind, String> {
    PluginKind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("one of scope-policy, audience-rule, resource-validator, not {s:?}"))
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Publish a new signing key now; tokens are signed with it after `oauth.key_rotation_overlap_secs`.
    Rotate {
        #[command(flatten)]
        store: StoreFlags,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistrationTokenCommand {
    /// Print a new initial access token (send it as `Authorization: Bearer` to the registration endpoint).
    Create {
        /// How long the token stays valid, in seconds.
        #[arg(long, default_value_t = 86_400, value_name = "SECS")]
        expires_in: i64,
        /// How many registrations it allows.
        #[arg(long, default_value_t = 1, value_name = "N")]
        max_uses: i64,
        #[command(flatten)]
        store: StoreFlags,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input.
    Add {
        username: String,
        /// Read the password from standard input (the only way, so it stays out of shell history).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// The SMART fhirUser of this account, e.g. Patient/123.
        #[arg(long, value_name = "TYPE/ID")]
        fhir_user: Option<String>,
        /// A role (repeat for several): patient, practitioner, admin or a name of your own.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Change a user's roles (the given list replaces the old one) or fhirUser.
    Set {
        username: String,
        /// The new roles (repeat for several); replaces every role the user had.
        #[arg(long = "role", value_name = "ROLE", conflicts_with = "no_roles")]
        roles: Vec<String>,
        /// Remove every role.
        #[arg(long)]
        no_roles: bool,
        /// The new SMART fhirUser, e.g. Patient/123.
        #[arg(long, value_name = "TYPE/ID", conflicts_with = "no_fhir_user")]
        fhir_user: Option<String>,
        /// Remove the fhirUser.
        #[arg(long)]
        no_fhir_user: bool,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// List users: name, fhirUser, roles.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Show a user with its effective rights (roles, policies, grants).
    Show {
        username: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Remove a user and revoke its grants and tokens.
    Remove {
        username: String,
        #[command(flatten)]
        store: StoreFlags,
    },
}

/// Roles and accounts a policy is attached to, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct BindingArgs {
    /// A role (repeat for several).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// A username (repeat for several).
    #[arg(long = "user", value_name = "NAME")]
    pub users: Vec<String>,
}

impl BindingArgs {
    fn into_bindings(self) -> crate::store::Bindings {
        crate::store::Bindings {
            roles: self.roles,
            users: self.users,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Add a policy from its TOML file, or replace the document of the policy of that name
    /// (its bindings are kept unless --role or --user are given; then they are replaced).
    Add {
        file: PathBuf,
        #[command(flatten)]
        bindings: BindingArgs,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// List policies (built-in and stored) with the roles and users they are attached to.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Show a policy's document as stored, with its bindings.
    Show {
        name: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Remove a stored policy and its bindings.
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Attach a policy to more roles or users.
    Attach {
        name: String,
        #[command(flatten)]
        bindings: BindingArgs,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Detach a policy from roles or users.
    Detach {
        name: String,
        #[command(flatten)]
        bindings: BindingArgs,
        #[command(flatten)]
        store: StoreFlags,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its id and secret (shown once) as JSON.
    Add(ClientAddArgs),
    /// List every client, dynamically registered ones included.
    List {
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Show one client as JSON.
    Show {
        client_id: String,
        #[command(flatten)]
        store: StoreFlags,
    },
    /// Remove a client.
    Remove {
        client_id: String,
        #[command(flatten)]
        store: StoreFlags,
    },
}

#[derive(Debug, clap::Args)]
pub struct ClientAddArgs {
    /// A name people recognise, shown on the consent page.
    #[arg(long)]
    pub name: String,
    /// An exact redirect URI (repeat for several).
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uris: Vec<String>,
    /// Space-separated scopes the client may ask for.
    #[arg(
        long,
        default_value = "openid fhirUser launch/patient offline_access patient/*.read user/*.read"
    )]
    pub scope: String,
    /// Grant types (repeat); default: authorization_code and refresh_token, plus client_credentials for confidential clients without redirect URIs.
    #[arg(long = "grant-type", value_name = "GRANT")]
    pub grant_types: Vec<String>,
    /// A public client (no secret; PKCE required).
    #[arg(long)]
    pub public: bool,
    /// Audiences (resource servers' FHIR base URLs) this client may ask tokens for (repeat).
    #[arg(long = "audience", value_name = "URL")]
    pub audiences: Vec<String>,
    /// This client's access-token lifetime in seconds (at most the server's oauth.access_token_lifetime_secs).
    #[arg(long, value_name = "SECS")]
    pub access_token_lifetime: Option<i64>,
    /// This client's refresh-token lifetime in seconds (at most the server's oauth.refresh_token_lifetime_secs).
    #[arg(long, value_name = "SECS")]
    pub refresh_token_lifetime: Option<i64>,
    /// This client's authorization-code lifetime in seconds (at most the server's oauth.code_lifetime_secs).
    #[arg(long, value_name = "SECS")]
    pub code_lifetime: Option<i64>,
    #[command(flatten)]
    pub store: StoreFlags,
}

#[derive(Debug, clap::Args)]
pub struct DevCertArgs {
    /// Host names and IP addresses the certificate must be valid for (repeat).
    #[arg(long = "hostname", value_name = "NAME", required = true)]
    pub hostnames: Vec<String>,
    /// Output directory (the CA is created there once and reused).
    #[arg(long, default_value = "hestia-data/tls", value_name = "DIR")]
    pub out: PathBuf,
}

/// Parses the command line, runs the command, and turns an error into a message and exit code 1.
pub fn main() -> std::process::ExitCode {
    crate::jwt_crypto::install();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("hestia: error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hestia: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => run_serve(args).await,
        Command::Fhir(command) => run_fhir(command).await,
        Command::Backup { out, store } => run_backup(&out, store).await,
        Command::Restore { from, force, store } => run_restore(&from, force, store).await,
        Command::User(command) => run_user(command).await,
        Command::Policy(command) => run_policy(command).await,
        Command::Client(command) => run_client(command).await,
        Command::Token(command) => run_token(command).await,
        Command::Keys(KeysCommand::Rotate { store }) => {
            let auth = open_auth(store).await?;
            auth.ensure_keys().await?;
            let rotations = auth.rotate_keys().await?;
            outln!("{}", serde_json::to_string_pretty(&rotations)?);
            Ok(())
        }
        Command::RegistrationToken(command) => run_registration_token(command).await,
        Command::Plugin(command) => run_plugin(command),
        Command::DevCert(args) => run_dev_cert(&args),
    }
}

/// `hestia serve`: with `--demo`, only as its own authorization server and FHIR server.
async fn run_serve(ServeArgs { flags, demo }: ServeArgs) -> anyhow::Result<()> {
    let settings = RawConfig::load(flags)?.resolve()?;
    crate::telemetry::init_logging(settings.log_format);
    if demo {
        // The demo is the co-located journey: its user and client live in this
        // server's authorization server, its patients in this server's FHIR store.
        if settings.issuer.is_some() {
            anyhow::bail!(
                "--demo needs this server's own authorization server; with --issuer the users and clients live at the issuer (create them there)"
            );
        }
        if !settings.fhir.enabled {
            anyhow::bail!(
                "--demo needs the FHIR server for its sample patients; drop --no-fhir (fhir.enabled = false)"
            );
        }
    }
    crate::app::serve(settings, demo).await
}

/// `hestia fhir reindex | import`.
async fn run_fhir(command: FhirCommand) -> anyhow::Result<()> {
    match command {
        FhirCommand::Reindex {
            resource_type,
            store,
        } => {
            if let Some(ty) = &resource_type
                && crate::fhir::ResourceType::parse(ty).is_none()
            {
                anyhow::bail!("--type {ty}: not a FHIR R4 resource type");
            }
            let store = open_store(store).await?;
            let report = crate::fhir::reindex::reindex(&store, resource_type.as_deref()).await?;
            outln!("{}", serde_json::to_string(&report)?);
            if !report.failed.is_empty() {
                anyhow::bail!(
                    "{} resource(s) could not be indexed: {}",
                    report.failed.len(),
                    report.failed.join("; ")
                );
            }
            Ok(())
        }
        FhirCommand::Import {
            paths,
            errors,
            batch,
            store,
        } => run_import(&paths, errors.as_deref(), batch, store).await,
    }
}

/// `hestia backup`.
async fn run_backup(out: &std::path::Path, store: StoreFlags) -> anyhow::Result<()> {
    let url = RawConfig::load_store(store)?.resolve()?.database_url;
    let started = std::time::Instant::now();
    let manifest = crate::backup::backup(&url, out).await?;
    outln!(
        "hestia: backup of {} written to {} in {:.1} s\n{}",
        crate::store::redact(&url),
        out.display(),
        started.elapsed().as_secs_f64(),
        manifest.summary()
    );
    Ok(())
}

/// `hestia restore`.
async fn run_restore(from: &std::path::Path, force: bool, store: StoreFlags) -> anyhow::Result<()> {
    let url = RawConfig::load_store(store)?.resolve()?.database_url;
    let started = std::time::Instant::now();
    let options = crate::backup::RestoreOptions { force };
    let manifest = crate::backup::restore(from, &url, options).await?;
    outln!(
        "hestia: {} restored into {} in {:.1} s\n{}",
        from.display(),
        crate::store::redact(&url),
        started.elapsed().as_secs_f64(),
        manifest.summary()
    );
    Ok(())
}

/// `hestia client add | list | show | remove`.
async fn run_client(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Add(args) => add_client(args).await,
        ClientCommand::List { store } => {
            let store = open_store(store).await?;
            let clients: Vec<_> = store
                .list_clients()
                .await?
                .iter()
                .map(|c| c.to_json())
                .collect();
            outln!("{}", serde_json::to_string_pretty(&clients)?);
            Ok(())
        }
        ClientCommand::Show { client_id, store } => {
            let store = open_store(store).await?;
            match store.get_client(&client_id).await? {
                Some(client) => outln!("{}", serde_json::to_string_pretty(&client.to_json())?),
                None => bail!("no client with id {client_id:?}"),
            }
            Ok(())
        }
        ClientCommand::Remove { client_id, store } => {
            let store = open_store(store).await?;
            store.remove_client(&client_id).await?;
            outln!("removed client {client_id}");
            Ok(())
        }
    }
}

/// `hestia client add`: the lifetimes checked as registration checks them, the grant
/// types by default from the kind of client; prints the client with its secret.
async fn add_client(args: ClientAddArgs) -> anyhow::Result<()> {
    let auth = open_auth(args.store).await?;
    let mut metadata = serde_json::Map::new();
    for (field, value) in crate::oauth::LIFETIME_FIELDS.iter().zip([
        args.access_token_lifetime,
        args.refresh_token_lifetime,
        args.code_lifetime,
    ]) {
        if let Some(v) = value {
            metadata.insert(field.to_string(), v.into());
        }
    }
    let metadata = serde_json::Value::Object(metadata);
    if let Err(e) = auth.check_client_lifetimes(&metadata) {
        bail!(
            "{}",
            e.description
                .replace("hestia_access_token_lifetime", "--access-token-lifetime")
                .replace("hestia_refresh_token_lifetime", "--refresh-token-lifetime")
                .replace("hestia_code_lifetime", "--code-lifetime")
        );
    }
    let store = auth.store().clone();
    let grant_types = if args.grant_types.is_empty() {
        let mut g = vec![
            "authorization_code".to_string(),
            "refresh_token".to_string(),
        ];
        if !args.public && args.redirect_uris.is_empty() {
            g = vec!["client_credentials".to_string()];
        }
        g
    } else {
        args.grant_types
    };
    let (client, secret) = store
        .create_client(NewClient {
            client_name: args.name,
            kind: ClientKind::App,
            public: args.public,
            redirect_uris: args.redirect_uris,
            grant_types,
            scope: args.scope,
            audiences: args.audiences,
            metadata,
        })
        .await?;
    let mut out = client.to_json();
    out["client_secret"] = secret.map_or(serde_json::Value::Null, |s| s.0.into());
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `hestia token explain`: prints the steps; a refused token is an error (exit status 1).
async fn run_token(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Explain {
        token,
        resource,
        request,
        public_url,
        issuer,
        issuer_ca,
        store,
    } = command;
    let mut raw = RawConfig::load_store(store)?;
    raw.flags.public_url = public_url.or(raw.flags.public_url);
    raw.flags.issuer = issuer;
    raw.flags.issuer_ca = issuer_ca;
    let settings = raw.resolve()?;
    let explanation = crate::explain::explain(
        &settings,
        token.trim(),
        resource.as_deref(),
        request.as_deref(),
    )
    .await?;
    for line in &explanation.lines {
        outln!("{line}");
    }
    if !explanation.accepted {
        bail!("the token would be refused");
    }
    Ok(())
}

/// `hestia registration-token create`.
async fn run_registration_token(command: RegistrationTokenCommand) -> anyhow::Result<()> {
    let RegistrationTokenCommand::Create {
        expires_in,
        max_uses,
        store,
    } = command;
    if expires_in <= 0 || max_uses <= 0 {
        bail!("--expires-in and --max-uses must be positive");
    }
    let auth = open_auth(store).await?;
    let token = auth.create_registration_token(expires_in, max_uses).await?;
    outln!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "initial_access_token": token,
            "expires_in": expires_in,
            "max_uses": max_uses,
            "registration_endpoint": auth.url(crate::oauth::REGISTER_PATH),
        }))?
    );
    Ok(())
}

/// `hestia dev-cert`: prints the files and how to use them.
fn run_dev_cert(args: &DevCertArgs) -> anyhow::Result<()> {
    let (files, outcome) = crate::tls::ensure_dev_cert(&args.out, &args.hostnames)?;
    outln!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "outcome": format!("{outcome:?}").to_lowercase(),
            "ca_cert": files.ca_cert,
            "cert": files.cert,
            "key": files.key,
            "names": args.hostnames,
            "serve": format!("hestia serve --tls-cert {} --tls-key {}", files.cert.display(), files.key.display()),
            "trust": format!("curl --cacert {} https://{}:8443/health/ready", files.ca_cert.display(), args.hostnames[0]),
        }))?
    );
    Ok(())
}

/// The authorization server of the configuration these flags name, on a migrated store.
async fn open_auth(flags: StoreFlags) -> anyhow::Result<crate::oauth::AuthServer> {
    let settings = RawConfig::load_store(flags)?.resolve()?;
    let store = Store::open(&settings.database_url).await?;
    Ok(crate::oauth::AuthServer::new(store, &settings))
}

/// The least per-call deadline of an import's plugins (a plugin's manifest may still set
/// its own). An import is no interactive request: a busy machine that holds a validator's
/// call back for some tens of milliseconds must not refuse a valid resource.
const IMPORT_PLUGIN_DEADLINE: std::time::Duration = std::time::Duration::from_millis(250);

/// `hestia fhir import`: the repository of `serve` (its validator plugins), the report
/// on standard output, refused lines to `errors` or standard error.
async fn run_import(
    paths: &[PathBuf],
    errors: Option<&std::path::Path>,
    batch: Option<usize>,
    flags: StoreFlags,
) -> anyhow::Result<()> {
    use crate::fhir::repository::{Repository, RepositoryOptions};
    let settings = RawConfig::load_store(flags)?.resolve()?;
    let files = crate::fhir::import::input_files(paths)?;
    let store = Store::open(&settings.database_url).await?;
    let mut plugin_settings = PluginSettings::configured(&settings)?;
    plugin_settings.deadline = plugin_settings.deadline.max(IMPORT_PLUGIN_DEADLINE);
    let plugins = crate::plugins::PluginHost::start(plugin_settings)?;
    let fhir = Repository::new(
        store,
        std::sync::Arc::new(crate::policy::PluginValidator(plugins)),
        RepositoryOptions {
            base_url: settings.fhir_base_url(),
            create_on_update: true,
            hidden_as_not_found: false,
            search_limits: settings.fhir.search_limits,
        },
    );
    let mut sink: Box<dyn std::io::Write + Send> = match errors {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::stderr()),
    };
    let options = crate::fhir::import::ImportOptions {
        batch,
        max_line_bytes: settings.fhir.max_body_bytes,
    };
    let progress = crate::fhir::import::Progress::default();
    let report = crate::fhir::import::import(&fhir, &files, options, &mut *sink, &progress).await?;
    sink.flush()?;
    outln!("{}", serde_json::to_string(&report)?);
    if report.invalid > 0 {
        anyhow::bail!(
            "{} line(s) were refused (reported as OperationOutcome lines); the other {} resource(s) were loaded",
            report.invalid,
            report.loaded
        );
    }
    Ok(())
}

async fn open_store(flags: StoreFlags) -> anyhow::Result<Store> {
    let settings = RawConfig::load_store(flags)?.resolve()?;
    Ok(Store::open(&settings.database_url).await?)
}

async fn run_user(command: UserCommand) -> anyhow::Result<()> {
    use crate::accounts;
    let out = match command {
        UserCommand::Add {
            username,
            password_stdin: _,
            fhir_user,
            roles,
            store,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            let store = open_store(store).await?;
            let new = NewUser {
                username,
                password,
                fhir_user,
            };
            accounts::add_user(&store, new, &roles).await?.to_string() + "\n"
        }
        UserCommand::Set {
            username,
            roles,
            no_roles,
            fhir_user,
            no_fhir_user,
            store,
        } => {
            let update = crate::store::UserUpdate {
                roles: (no_roles || !roles.is_empty()).then_some(roles),
                fhir_user: if no_fhir_user {
                    Some(None)
                } else {
                    fhir_user.map(Some)
                },
            };
            accounts::set_user(&open_store(store).await?, &username, update).await?
        }
        UserCommand::List { json, store } => {
            accounts::list_users(&open_store(store).await?, json).await?
        }
        UserCommand::Show {
            username,
            json,
            store,
        } => accounts::show_user(&open_store(store).await?, &username, json).await?,
        UserCommand::Remove { username, store } => {
            accounts::remove_user(&open_store(store).await?, &username).await?
        }
    };
    out!("{out}");
    Ok(())
}

async fn run_policy(command: PolicyCommand) -> anyhow::Result<()> {
    use crate::accounts;
    let out = match command {
        PolicyCommand::Add {
            file,
            bindings,
            store,
        } => {
            let given = !bindings.roles.is_empty() || !bindings.users.is_empty();
            let bindings = given.then(|| bindings.into_bindings());
            accounts::add_policy(&open_store(store).await?, &file, bindings).await?
        }
        PolicyCommand::List { json, store } => {
            accounts::list_policies(&open_store(store).await?, json).await?
        }
        PolicyCommand::Show { name, json, store } => {
            accounts::show_policy(&open_store(store).await?, &name, json).await?
        }
        PolicyCommand::Remove { name, store } => {
            accounts::remove_policy(&open_store(store).await?, &name).await?
        }
        PolicyCommand::Attach {
            name,
            bindings,
            store,
        } => {
            let store = open_store(store).await?;
            accounts::bind_policy(&store, &name, bindings.into_bindings(), false).await?
        }
        PolicyCommand::Detach {
            name,
            bindings,
            store,
        } => {
            let store = open_store(store).await?;
            accounts::bind_policy(&store, &name, bindings.into_bindings(), true).await?
        }
    };
    out!("{out}");
    Ok(())
}

fn run_plugin(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Check { file } => out!("{}", plugin_cli::check(&file)?),
        PluginCommand::List { plugins_dir, store } => {
            let settings = RawConfig::load(ServeFlags {
                store,
                plugins_dir,
                ..ServeFlags::default()
            })?
            .resolve()?;
            let table = plugin_cli::list(PluginSettings::configured(&settings)?)?;
            out!("{table}");
        }
        PluginCommand::New {
            name,
            kind,
            lang,
            out,
            sdk_path,
            sdk_git,
        } => new_plugin(name, kind, lang, out, sdk_path, sdk_git)?,
        PluginCommand::Build { dir, aot } => {
            let built = plugin_cli::build(&dir, aot)?;
            outln!(
                "built the {} plugin {} ({}): {}",
                built.kind,
                built.name,
                built.lang,
                built.wasm.display()
            );
            outln!(
                "  install it: copy {} and {} into the server's plugin directory",
                built.wasm.display(),
                built.manifest.display()
            );
        }
        PluginCommand::Test {
            file,
            cases,
            manifest,
            store,
        } => {
            // The configuration's limits, WASI permissions and cache, as the server would.
            let settings = RawConfig::load(ServeFlags {
                store,
                ..ServeFlags::default()
            })?
            .resolve()?;
            let host = PluginSettings::configured(&settings)?;
            let report = plugin_cli::test(&file, &cases, manifest.as_deref(), host)?;
            out!("{report}");
            if report.failures() > 0 {
                bail!(
                    "{} of {} cases failed",
                    report.failures(),
                    report.results.len()
                );
            }
        }
    }
    Ok(())
}

/// `hestia plugin new`: writes the project and prints the next steps.
fn new_plugin(
    name: String,
    kind: PluginKind,
    lang: plugin_cli::Lang,
    out: PathBuf,
    sdk_path: Option<PathBuf>,
    sdk_git: Option<String>,
) -> anyhow::Result<()> {
    let sdk = match (sdk_path, sdk_git) {
        (Some(path), _) => Some(plugin_cli::SdkSource::Path(path)),
        (None, Some(url)) => Some(plugin_cli::SdkSource::Git(url)),
        (None, None) => None,
    };
    if sdk.is_some() && lang != plugin_cli::Lang::Rust {
        bail!("--sdk-path and --sdk-git are for Rust projects");
    }
    let dir = plugin_cli::new(&plugin_cli::NewPlugin {
        name: name.clone(),
        kind,
        lang,
        out,
        sdk,
    })?;
    outln!(
        "wrote the {kind} plugin {name} ({lang}) to {}",
        dir.display()
    );
    outln!("  cd {}", dir.display());
    outln!(
        "  {}",
        match lang {
            plugin_cli::Lang::Rust => "cargo test",
            plugin_cli::Lang::Python => "python -m pytest",
            plugin_cli::Lang::Js => "npm install && node --test",
        }
    );
    outln!("  hestia plugin build");
    outln!("  hestia plugin test {name}.wasm --cases cases.json");
    outln!("  hestia plugin check {name}.wasm");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command, TokenCommand};

    /// An opaque token is base64url, so it may begin with `-`, even `-U` or `--x`.
    #[test]
    fn token_explain_takes_a_token_beginning_with_a_hyphen() {
        for token in ["-Uq3x_token", "--abc"] {
            let cli = Cli::try_parse_from(["hestia", "token", "explain", token, "--resource", "r"])
                .unwrap();
            let Command::Token(TokenCommand::Explain {
                token: parsed,
                resource,
                ..
            }) = cli.command
            else {
                panic!("not token explain");
            };
            assert_eq!(parsed, token);
            assert_eq!(resource.as_deref(), Some("r"));
        }
    }
}
