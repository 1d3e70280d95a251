//! Configuration in two stages.
//!
//! Stage one, [`RawConfig`], is what the user typed: command-line flags and `HESTIA_*`
//! environment variables (both through clap, flag first), and `hestia.toml`. Every field is
//! optional and stays a string or a plain value, so that errors can quote it back.
//! Stage two, [`Settings`], is resolved: precedence flag > env > file > default, values
//! parsed and checked, and an error names the key, where it came from, and the value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::fhir::search::SearchLimits;

/// Default listen address of `hestia serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Default data directory (SQLite file, development certificate, plugin directory).
pub const DEFAULT_DATA_DIR: &str = "hestia-data";
/// Default FHIR base path, relative to the public URL.
pub const DEFAULT_FHIR_BASE_PATH: &str = "/fhir/r4";

/// A configuration error that names the key, its source and the offending value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for `{key}` (from {origin}): {value:?}: {reason}")]
    Invalid {
        key: &'static str,
        origin: Source,
        value: String,
        reason: String,
    },
    #[error("cannot read configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Conflict(String),
}

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    File,
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            // clap merges flags and HESTIA_* variables before we see them.
            Source::Flag => "the command line or a HESTIA_* environment variable",
            Source::File => "the configuration file",
            Source::Default => "the built-in default",
        })
    }
}

/// Options shared by every command that touches the database.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreFlags {
    /// Configuration file (TOML). Default: ./hestia.toml when it exists.
    #[arg(long, env = "HESTIA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: SQLite database, development certificate, plugins.
    #[arg(long, env = "HESTIA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://FILE or postgres://USER:PASS@HOST/DB. Default: SQLite in the data directory.
    #[arg(long, env = "HESTIA_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

/// Flags of `hestia serve`, each also readable from `HESTIA_*` and `hestia.toml`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeFlags {
    #[command(flatten)]
    pub store: StoreFlags,
    /// Address and port to listen on.
    #[arg(long, env = "HESTIA_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The URL clients use to reach this server (issuer, FHIR base). Default: derived from --listen.
    #[arg(long, env = "HESTIA_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Directory of plugin files (NAME.wasm + NAME.toml), hot-reloaded.
    #[arg(long, env = "HESTIA_PLUGINS_DIR", value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(
        long,
        env = "HESTIA_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(
        long,
        env = "HESTIA_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (loopback and tests). `--insecure-http=false` (or
    /// `HESTIA_INSECURE_HTTP=false`) overrides a configuration file's `tls.insecure_http`.
    #[arg(
        long,
        env = "HESTIA_INSECURE_HTTP",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure_http: Option<bool>,
    /// Log format: text or json.
    #[arg(long, env = "HESTIA_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Trust this remote authorization server (its issuer URL) instead of serving one: the
    /// FHIR server only, registered at the issuer as a resource server.
    #[arg(long, env = "HESTIA_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// CA certificate (PEM) of the issuer's TLS certificate, when a private CA signed it.
    #[arg(long, env = "HESTIA_ISSUER_CA", value_name = "PEM")]
    pub issuer_ca: Option<PathBuf>,
    /// Initial access token for the first registration at the issuer (RFC 7591).
    /// (Tokens are base64url and may begin with `-`: taken as the value, not as a flag.)
    #[arg(
        long,
        env = "HESTIA_REGISTRATION_TOKEN",
        value_name = "TOKEN",
        allow_hyphen_values = true
    )]
    pub registration_token: Option<String>,
    /// Serve the authorization server only, without the FHIR routes (`--no-fhir=false`
    /// overrides a configuration file's `fhir.enabled = false`).
    #[arg(
        long,
        env = "HESTIA_NO_FHIR",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_fhir: Option<bool>,
}

/// `hestia.toml`, as written. Unknown keys are an error, so typos do not pass silently.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub plugins_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    #[serde(default)]
    pub tls: FileTls,
    #[serde(default)]
    pub fhir: FileFhir,
    #[serde(default)]
    pub oauth: FileOauth,
    #[serde(default)]
    pub plugins: FilePlugins,
    #[serde(default)]
    pub issuer: FileIssuer,
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub bulk: FileBulk,
    #[serde(default)]
    pub admin: FileAdmin,
}

/// `[bulk]`: Bulk Data export and import jobs (see [`BulkSettings`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBulk {
    pub dir: Option<PathBuf>,
    pub max_jobs: Option<u64>,
    pub workers: Option<u64>,
    pub retain_secs: Option<u64>,
    pub stale_after_secs: Option<u64>,
    pub file_max_resources: Option<u64>,
    pub import_sources: Option<Vec<String>>,
    pub import_max_bytes: Option<u64>,
    pub import_timeout_secs: Option<u64>,
}

/// `[admin]`: the admin console at `/admin/`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// How long a console session lasts without a request, in seconds.
    pub session_idle_secs: Option<u64>,
    /// How long audit events are kept, in days.
    pub audit_retain_days: Option<u64>,
}

/// `[server]`: bounds on every request, whatever its protocol (see [`RequestLimits`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub request_timeout_secs: Option<u64>,
    pub max_concurrent_requests: Option<u64>,
    pub statement_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
}

/// `[issuer]`: a remote authorization server this FHIR server trusts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIssuer {
    pub url: Option<String>,
    pub ca: Option<PathBuf>,
    pub registration_token: Option<String>,
    /// `opaque-only` (default) or `always`.
    pub introspect: Option<String>,
    pub introspection_cache_secs: Option<u64>,
    pub jwks_refetch_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub insecure_http: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFhir {
    /// `false`: the authorization server only, no FHIR routes.
    pub enabled: Option<bool>,
    pub base_path: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub create_on_update: Option<bool>,
    pub access_token_in_query: Option<bool>,
    pub require_basic_auth: Option<bool>,
    pub clock_skew_secs: Option<u64>,
    /// What a read of a resource the token may not see answers: "forbidden" (403) or
    /// "not-found" (404).
    pub hidden_as: Option<String>,
    // Search limits (`fhir::search::SearchLimits`; defaults in its `Default`).
    /// References one search parameter follows (chain links and `_has:`), 1 to 16.
    pub max_chain_depth: Option<u64>,
    /// (type, parameter) paths the chains and `_has` of one search expand into.
    pub max_chain_paths: Option<u64>,
    /// Parameters of one search.
    pub max_search_params: Option<u64>,
    /// Comma-separated values of one search parameter.
    pub max_search_values: Option<u64>,
    /// Resources `_include`/`_revinclude` (and `$everything`) add to one page.
    pub max_included: Option<u64>,
    /// Request limits of the FHIR layer (see [`RequestLimits`]).
    pub max_json_depth: Option<u64>,
    pub max_bundle_entries: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOauth {
    pub access_token_lifetime_secs: Option<u64>,
    pub refresh_token_lifetime_secs: Option<u64>,
    pub code_lifetime_secs: Option<u64>,
    /// How long a new signing key is published before tokens are signed with it.
    pub key_rotation_overlap_secs: Option<u64>,
    /// How long a just-rotated refresh token may still be used (concurrent refreshes).
    pub refresh_grace_secs: Option<u64>,
    /// Allow dynamic client registration without an initial access token.
    pub open_registration: Option<bool>,
    /// How often `serve` deletes expired access-token records, codes, refresh tokens and
    /// the grants left without any.
    pub purge_interval_secs: Option<u64>,
    /// How long after expiry those records are kept (a replayed code or rotated refresh
    /// token is still recognised, and its grant revoked, within this time).
    pub purge_after_secs: Option<u64>,
    /// Algorithm of access tokens and (by default) id_tokens: RS256 or ES256.
    pub signing_alg: Option<String>,
    /// Reverse proxies (IP addresses or CIDR ranges) whose `X-Forwarded-For` names the
    /// client address that sign-in rate limits count.
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePlugins {
    pub deadline_ms: Option<u64>,
    pub memory_mib: Option<u64>,
    pub watch: Option<bool>,
    #[serde(default)]
    pub wasi: FilePluginsWasi,
}

/// `[plugins.wasi]`: which WASI interfaces a plugin's manifest may ask for (`[wasi]` in
/// `NAME.toml`). A plugin gets one only when both say yes. Default: none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePluginsWasi {
    /// `wasi:clocks/wall-clock` and `wasi:clocks/monotonic-clock`.
    pub clock: Option<bool>,
    /// `wasi:random/random` and `wasi:random/insecure` from the host's generator; without
    /// it they give a fixed sequence, the same in every instance.
    pub random: Option<bool>,
}

/// Stage one: everything the user said, not yet interpreted.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub flags: ServeFlags,
    pub file: FileConfig,
    /// The configuration file that was read, if any.
    pub file_path: Option<PathBuf>,
}

impl RawConfig {
    /// Reads the configuration file named by the flags, or `./hestia.toml` when present.
    pub fn load(flags: ServeFlags) -> Result<Self, ConfigError> {
        let (file, file_path) = match &flags.store.config {
            Some(path) => (read_file(path)?, Some(path.clone())),
            None => {
                let default = PathBuf::from("hestia.toml");
                if default.is_file() {
                    (read_file(&default)?, Some(default))
                } else {
                    (FileConfig::default(), None)
                }
            }
        };
        Ok(Self {
            flags,
            file,
            file_path,
        })
    }

    /// Stage one for commands that only need the database.
    pub fn load_store(store: StoreFlags) -> Result<Self, ConfigError> {
        Self::load(ServeFlags {
            store,
            ..ServeFlags::default()
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// How `serve` speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Certificate chain and key given by the operator.
    Files { cert: PathBuf, key: PathBuf },
    /// A development CA and certificate kept in the data directory, created once.
    DevCert,
    /// Plain HTTP.
    Insecure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Stage two: resolved, checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Without a trailing slash, e.g. `https://localhost:8443`.
    pub public_url: String,
    /// True when no public URL was configured and it was derived from the listen address.
    pub public_url_is_default: bool,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub plugins_dir: PathBuf,
    pub tls: TlsMode,
    pub log_format: LogFormat,
    pub fhir: FhirSettings,
    pub oauth: OauthSettings,
    pub plugins: PluginLimits,
    /// A remote authorization server to trust; `None`: this server is its own issuer.
    pub issuer: Option<IssuerSettings>,
    pub limits: RequestLimits,
    pub bulk: BulkSettings,
    pub admin: AdminSettings,
}

/// `[bulk]`, resolved: where export files go, how many jobs run, and what an import may
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkSettings {
    /// `bulk.dir` (default `DATA_DIR/bulk`): one directory of NDJSON files per job.
    pub dir: PathBuf,
    /// `bulk.max_jobs` (default 4): export jobs in progress at once (in the database, so
    /// across servers); a kick-off beyond that gets 429 with `Retry-After`.
    pub max_jobs: i64,
    /// `bulk.workers` (default 2): jobs this process exports at the same time; the others
    /// wait their turn.
    pub workers: usize,
    /// `bulk.retain_secs` (default 86400): how long a finished job and its files are
    /// kept before they are deleted.
    pub retain: Duration,
    /// `bulk.stale_after_secs` (default 120): a job in progress whose worker has not
    /// reported for this long (its process stopped) is marked failed.
    pub stale_after: Duration,
    /// `bulk.file_max_resources` (default 100000): resources per output file.
    pub file_max_resources: u64,
    /// `bulk.import_sources` (default none): the URL prefixes a `$import` manifest may
    /// name files under (each an `http`/`https` URL whose path ends with `/`); without
    /// any, a manifest of URLs is refused and only an NDJSON body is imported.
    pub import_sources: Vec<url::Url>,
    /// `bulk.import_max_bytes` (default 1 GiB): the bytes a `$import` takes in all, its
    /// body or the files it fetches, as sent.
    pub import_max_bytes: u64,
    /// `bulk.import_timeout_secs` (default 600): the longest a `$import` fetches one file.
    pub import_timeout: Duration,
}

/// `[admin]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// `admin.session_idle_secs` (default 900, from 60 to 86400): a console session
    /// without a request for this long is over.
    pub session_idle: Duration,
    /// `admin.audit_retain_days` (default 90, from 1 to 36500): `serve`'s purge deletes
    /// audit events older than this.
    pub audit_retain: Duration,
}

/// What one request may cost: each bound has a `hestia.toml` key, and a request that
/// reaches it gets an answer naming that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// `fhir.max_json_depth` (default 127, at most 127): how deeply arrays and objects may
    /// nest in a resource a JSON Patch produces. 127 is what the JSON parser accepts in a
    /// request body, so a patched resource can always be read back.
    pub max_json_depth: usize,
    /// `fhir.max_bundle_entries` (default 1,000): entries of a batch or transaction Bundle.
    pub max_bundle_entries: usize,
    /// `server.request_timeout_secs` (default 30): a request that takes longer gets 503.
    pub request_timeout: Duration,
    /// `server.max_concurrent_requests` (default 512): more requests than this in flight
    /// get 503 with `Retry-After` at once (health and metrics are not counted).
    pub max_concurrent_requests: usize,
    /// `server.statement_timeout_secs` (default 30): PostgreSQL's `statement_timeout` on
    /// the connections `serve` opens.
    pub statement_timeout: Duration,
    /// `server.shutdown_grace_secs` (default 30): after SIGTERM or SIGINT, how long the
    /// requests in flight may take to finish before their connections are closed.
    pub shutdown_grace: Duration,
}

/// The most deeply nested JSON the parser (serde_json) accepts.
pub const PARSER_MAX_JSON_DEPTH: usize = 127;

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_json_depth: PARSER_MAX_JSON_DEPTH,
            max_bundle_entries: 1_000,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 512,
            statement_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Which tokens the FHIR server checks through the issuer's introspection endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectMode {
    /// Opaque tokens only; JWTs are verified locally against the issuer's JWKS.
    OpaqueOnly,
    /// Every token, JWTs too (after their signature is verified): a revocation at the
    /// issuer is seen within the cache time.
    Always,
}

#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// The issuer URL, without a trailing slash.
    pub url: String,
    pub ca: Option<PathBuf>,
    pub registration_token: Option<String>,
    pub introspect: IntrospectMode,
    /// How long an introspection answer is reused (never beyond the token's `exp`).
    pub introspection_cache: Duration,
    /// At most one JWKS refetch for an unknown `kid` per this interval.
    pub jwks_refetch_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct FhirSettings {
    /// False: the FHIR routes are not served (an authorization server only).
    pub enabled: bool,
    /// Path of the FHIR base under the public URL, starting with `/`, no trailing slash.
    pub base_path: String,
    pub max_body_bytes: usize,
    /// `PUT` of an unknown id creates the resource with that id.
    pub create_on_update: bool,
    /// Accept the access token as the `access_token` query parameter (as Postman users of
    /// other FHIR servers send it).
    pub access_token_in_query: bool,
    /// Compatibility with IRIS for Health: HTTP Basic credentials must also be sent and
    /// name the token's subject.
    pub require_basic_auth: bool,
    /// Leeway for `exp` and `nbf`, in seconds.
    pub clock_skew_secs: i64,
    /// A read of a resource outside the token's access answers 404 (as if it did not
    /// exist) instead of 403 naming the constraint (`fhir.hidden_as = "not-found"`).
    pub hidden_as_not_found: bool,
    /// `fhir.max_chain_depth`, `fhir.max_chain_paths`, `fhir.max_search_params`,
    /// `fhir.max_search_values`, `fhir.max_included`.
    pub search_limits: SearchLimits,
}

#[derive(Debug, Clone)]
pub struct OauthSettings {
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    pub code_lifetime: Duration,
    pub key_rotation_overlap: Duration,
    pub refresh_grace: Duration,
    /// `oauth.purge_interval_secs`: how often expired records are deleted.
    pub purge_interval: Duration,
    /// `oauth.purge_after_secs`: how long past their expiry they are kept.
    pub purge_after: Duration,
    pub open_registration: bool,
    /// `RS256` or `ES256`.
    pub signing_alg: String,
    /// Proxies whose `X-Forwarded-For` is believed (`oauth.trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub struct PluginLimits {
    pub deadline: Duration,
    pub memory_bytes: usize,
    pub watch: bool,
    /// What plugin manifests may ask of WASI (`[plugins.wasi]`).
    pub allow_wasi: crate::plugins::allowances::WasiAllowances,
}

impl Settings {
    /// The FHIR base URL that tokens name as their audience.
    pub fn fhir_base_url(&self) -> String {
        format!("{}{}", self.public_url, self.fhir.base_path)
    }
}

/// Picks flag, then file, then default, remembering which.
fn pick<T>(flag: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> (T, Source) {
    match (flag, file) {
        (Some(v), _) => (v, Source::Flag),
        (None, Some(v)) => (v, Source::File),
        (None, None) => (default(), Source::Default),
    }
}

/// The search limits of `[fhir]`: each at least 1, `max_chain_depth` at most
/// [`SearchLimits::CHAIN_DEPTH_CEILING`].
fn search_limits(fhir: &FileFhir) -> Result<SearchLimits, ConfigError> {
    let defaults = SearchLimits::default();
    let bounded = |key: &'static str, v: Option<u64>, default: usize, max: u64| match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(
            key,
            Source::File,
            n.to_string(),
            format!("must be between 1 and {max}"),
        )),
    };
    let any = u64::from(u32::MAX);
    Ok(SearchLimits {
        max_chain_depth: bounded(
            "fhir.max_chain_depth",
            fhir.max_chain_depth,
            defaults.max_chain_depth,
            SearchLimits::CHAIN_DEPTH_CEILING as u64,
        )?,
        max_chain_paths: bounded(
            "fhir.max_chain_paths",
            fhir.max_chain_paths,
            defaults.max_chain_paths,
            any,
        )?,
        max_params: bounded(
            "fhir.max_search_params",
            fhir.max_search_params,
            defaults.max_params,
            any,
        )?,
        max_values: bounded(
            "fhir.max_search_values",
            fhir.max_search_values,
            defaults.max_values,
            any,
        )?,
        max_included: bounded(
            "fhir.max_included",
            fhir.max_included,
            defaults.max_included,
            any,
        )?,
    })
}

/// `oauth.trusted_proxies`: each an IP address or a CIDR range.
fn trusted_proxies<'a>(
    entries: impl Iterator<Item = &'a String>,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    entries
        .map(|text| {
            let text = text.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        "oauth.trusted_proxies",
                        Source::File,
                        text,
                        "expected an IP address or a CIDR range such as 10.0.0.0/8",
                    )
                })
        })
        .collect()
}

fn invalid(
    key: &'static str,
    source: Source,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        origin: source,
        value: value.into(),
        reason: reason.into(),
    }
}

impl RawConfig {
    /// Stage two: applies precedence and checks every value, one section after another.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let listen = self.resolve_listen()?;
        let (data_dir, database_url, plugins_dir) = self.resolve_places()?;
        let tls = self.resolve_tls()?;
        let (public_url, public_src) = self.resolve_public_url(listen, &tls)?;
        let log_format = self.resolve_log_format()?;
        let fhir = self.resolve_fhir()?;
        let oauth = self.resolve_oauth()?;
        let plugins = self.resolve_plugins()?;
        let issuer = self.resolve_issuer()?;
        if issuer.is_some() && !fhir.enabled {
            return Err(ConfigError::Conflict(
                "an issuer is set (remote authorization server) and the FHIR server is disabled (`--no-fhir` / `fhir.enabled = false`): there would be nothing to serve; choose one".into(),
            ));
        }
        let bulk = self.resolve_bulk(&data_dir)?;
        Ok(Settings {
            listen,
            public_url,
            public_url_is_default: public_src == Source::Default,
            data_dir,
            database_url,
            plugins_dir,
            tls,
            log_format,
            fhir,
            oauth,
            plugins,
            issuer,
            limits: self.resolve_limits()?,
            admin: self.resolve_admin()?,
            bulk,
        })
    }

    /// `listen`: flag over file over [`DEFAULT_LISTEN`].
    fn resolve_listen(&self) -> Result<SocketAddr, ConfigError> {
        let (listen_raw, src) = pick(self.flags.listen.clone(), self.file.listen.clone(), || {
            DEFAULT_LISTEN.to_string()
        });
        listen_raw.parse().map_err(|e: std::net::AddrParseError| {
            invalid("listen", src, &listen_raw, e.to_string())
        })
    }

    /// Where the data lives: the data directory, the database URL (SQLite or PostgreSQL)
    /// and the plugin directory.
    fn resolve_places(&self) -> Result<(PathBuf, String, PathBuf), ConfigError> {
        let (f, file) = (&self.flags, &self.file);
        let (data_dir, _) = pick(f.store.data_dir.clone(), file.data_dir.clone(), || {
            PathBuf::from(DEFAULT_DATA_DIR)
        });

        let (database_url, src) = pick(
            f.store.database_url.clone(),
            file.database_url.clone(),
            || format!("sqlite://{}", data_dir.join("hestia.db").display()),
        );
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                src,
                &database_url,
                "expected sqlite://FILE or postgres://USER:PASSWORD@HOST/DATABASE",
            ));
        }

        let (plugins_dir, _) = pick(f.plugins_dir.clone(), file.plugins_dir.clone(), || {
            data_dir.join("plugins")
        });
        Ok((data_dir, database_url, plugins_dir))
    }

    /// The TLS mode: flag or environment first (`Some(false)` switches the file's setting
    /// off), then the file; a certificate needs its key and the other way round.
    fn resolve_tls(&self) -> Result<TlsMode, ConfigError> {
        let (f, file) = (&self.flags, &self.file);
        if f.insecure_http == Some(true) {
            if f.tls_cert.is_some() || f.tls_key.is_some() {
                return Err(ConfigError::Conflict(
                    "--insecure-http (HESTIA_INSECURE_HTTP) is set together with --tls-cert/--tls-key (HESTIA_TLS_CERT/HESTIA_TLS_KEY); choose one".into(),
                ));
            }
            return Ok(TlsMode::Insecure);
        }
        if let (Some(cert), Some(key)) = (&f.tls_cert, &f.tls_key) {
            return Ok(TlsMode::Files {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if f.insecure_http.is_none() && file.tls.insecure_http == Some(true) {
            if file.tls.cert.is_some() || file.tls.key.is_some() {
                return Err(ConfigError::Conflict(
                    "the configuration file sets both `tls.insecure_http = true` and `tls.cert`/`tls.key`; choose one".into(),
                ));
            }
            return Ok(TlsMode::Insecure);
        }
        match (&file.tls.cert, &file.tls.key) {
            (Some(cert), Some(key)) => Ok(TlsMode::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => Ok(TlsMode::DevCert),
            (Some(_), None) => Err(ConfigError::Conflict(
                "`tls.cert` is set but `tls.key` is not".into(),
            )),
            (None, Some(_)) => Err(ConfigError::Conflict(
                "`tls.key` is set but `tls.cert` is not".into(),
            )),
        }
    }

    /// `public_url`, by default derived from the listen address and the TLS mode; with
    /// where it came from.
    fn resolve_public_url(
        &self,
        listen: SocketAddr,
        tls: &TlsMode,
    ) -> Result<(String, Source), ConfigError> {
        let (raw, src) = pick(
            self.flags.public_url.clone(),
            self.file.public_url.clone(),
            || {
                let scheme = if *tls == TlsMode::Insecure {
                    "http"
                } else {
                    "https"
                };
                let host = if listen.ip().is_unspecified() || listen.ip().is_loopback() {
                    "localhost".to_string()
                } else {
                    match listen.ip() {
                        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                        ip => ip.to_string(),
                    }
                };
                format!("{scheme}://{host}:{}", listen.port())
            },
        );
        let url =
            check_public_url(&raw).map_err(|reason| invalid("public_url", src, &raw, reason))?;
        Ok((url, src))
    }

    /// `log_format`: `text` or `json`.
    fn resolve_log_format(&self) -> Result<LogFormat, ConfigError> {
        let (raw, src) = pick(
            self.flags.log_format.clone(),
            self.file.log_format.clone(),
            || "text".into(),
        );
        match raw.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(invalid(
                "log_format",
                src,
                &raw,
                "expected `text` or `json`",
            )),
        }
    }

    /// `[fhir]` (and `--no-fhir`), search limits included.
    fn resolve_fhir(&self) -> Result<FhirSettings, ConfigError> {
        let fhir = &self.file.fhir;
        let base_path = fhir
            .base_path
            .clone()
            .unwrap_or_else(|| DEFAULT_FHIR_BASE_PATH.into());
        let base_src = if fhir.base_path.is_some() {
            Source::File
        } else {
            Source::Default
        };
        if !base_path.starts_with('/')
            || base_path.ends_with('/')
            || base_path.contains("//")
            || base_path.contains(['?', '#', ' '])
        {
            return Err(invalid(
                "fhir.base_path",
                base_src,
                &base_path,
                "expected a path that starts with `/` and has no trailing slash, e.g. /fhir/r4",
            ));
        }
        let max_body_bytes = fhir.max_body_bytes.unwrap_or(16 * 1024 * 1024);
        if max_body_bytes == 0 {
            return Err(invalid(
                "fhir.max_body_bytes",
                Source::File,
                "0",
                "must be greater than zero",
            ));
        }
        let hidden_as_not_found = match fhir.hidden_as.as_deref() {
            None | Some("forbidden") => false,
            Some("not-found") => true,
            Some(other) => {
                return Err(invalid(
                    "fhir.hidden_as",
                    Source::File,
                    other,
                    "expected \"forbidden\" (403) or \"not-found\" (404)",
                ));
            }
        };
        Ok(FhirSettings {
            enabled: match self.flags.no_fhir {
                Some(no_fhir) => !no_fhir,
                None => fhir.enabled.unwrap_or(true),
            },
            base_path,
            max_body_bytes: max_body_bytes as usize,
            create_on_update: fhir.create_on_update.unwrap_or(true),
            access_token_in_query: fhir.access_token_in_query.unwrap_or(true),
            require_basic_auth: fhir.require_basic_auth.unwrap_or(false),
            clock_skew_secs: fhir.clock_skew_secs.unwrap_or(30).min(3600) as i64,
            hidden_as_not_found,
            search_limits: search_limits(fhir)?,
        })
    }

    /// `[oauth]`: lifetimes at least one second, the signing algorithm, trusted proxies.
    fn resolve_oauth(&self) -> Result<OauthSettings, ConfigError> {
        let oauth = &self.file.oauth;
        let secs =
            |key: &'static str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
                match v {
                    Some(0) => Err(invalid(
                        key,
                        Source::File,
                        "0",
                        "must be at least one second",
                    )),
                    Some(s) => Ok(Duration::from_secs(s)),
                    None => Ok(Duration::from_secs(default)),
                }
            };
        Ok(OauthSettings {
            access_token_lifetime: secs(
                "oauth.access_token_lifetime_secs",
                oauth.access_token_lifetime_secs,
                3600,
            )?,
            refresh_token_lifetime: secs(
                "oauth.refresh_token_lifetime_secs",
                oauth.refresh_token_lifetime_secs,
                30 * 24 * 3600,
            )?,
            code_lifetime: secs("oauth.code_lifetime_secs", oauth.code_lifetime_secs, 60)?,
            key_rotation_overlap: Duration::from_secs(
                oauth.key_rotation_overlap_secs.unwrap_or(3600),
            ),
            refresh_grace: Duration::from_secs(oauth.refresh_grace_secs.unwrap_or(10)),
            purge_interval: secs("oauth.purge_interval_secs", oauth.purge_interval_secs, 600)?,
            purge_after: Duration::from_secs(oauth.purge_after_secs.unwrap_or(86_400)),
            open_registration: oauth.open_registration.unwrap_or(false),
            signing_alg: match oauth.signing_alg.as_deref() {
                None => "RS256".to_string(),
                Some(alg @ ("RS256" | "ES256")) => alg.to_string(),
                Some(other) => {
                    return Err(invalid(
                        "oauth.signing_alg",
                        Source::File,
                        other,
                        "expected RS256 or ES256",
                    ));
                }
            },
            trusted_proxies: trusted_proxies(oauth.trusted_proxies.iter().flatten())?,
        })
    }

    /// `[plugins]`: the deadline and memory of a call, hot reload, what WASI may give.
    fn resolve_plugins(&self) -> Result<PluginLimits, ConfigError> {
        let plugins = &self.file.plugins;
        let deadline_ms = plugins.deadline_ms.unwrap_or(20);
        if deadline_ms == 0 || deadline_ms > 60_000 {
            return Err(invalid(
                "plugins.deadline_ms",
                Source::File,
                deadline_ms.to_string(),
                "expected 1 to 60000 milliseconds",
            ));
        }
        let memory_mib = plugins.memory_mib.unwrap_or(16);
        let max_mib = crate::plugins::allowances::MAX_MEMORY_MIB;
        if memory_mib == 0 || memory_mib > max_mib {
            return Err(invalid(
                "plugins.memory_mib",
                Source::File,
                memory_mib.to_string(),
                format!("expected 1 to {max_mib} MiB (the plugin instance pool's maximum)"),
            ));
        }
        Ok(PluginLimits {
            deadline: Duration::from_millis(deadline_ms),
            memory_bytes: (memory_mib as usize) * 1024 * 1024,
            watch: plugins.watch.unwrap_or(true),
            allow_wasi: crate::plugins::allowances::WasiAllowances {
                clock: plugins.wasi.clock.unwrap_or(false),
                random: plugins.wasi.random.unwrap_or(false),
            },
        })
    }

    /// `[admin]`: the console's idle timeout and how long audit events are kept.
    fn resolve_admin(&self) -> Result<AdminSettings, ConfigError> {
        let admin = &self.file.admin;
        Ok(AdminSettings {
            session_idle: match admin.session_idle_secs {
                None => Duration::from_secs(900),
                Some(s @ 60..=86_400) => Duration::from_secs(s),
                Some(s) => {
                    return Err(invalid(
                        "admin.session_idle_secs",
                        Source::File,
                        s.to_string(),
                        "must be from 60 to 86400 seconds",
                    ));
                }
            },
            audit_retain: match admin.audit_retain_days {
                None => Duration::from_secs(90 * 86_400),
                Some(d @ 1..=36_500) => Duration::from_secs(d * 86_400),
                Some(d) => {
                    return Err(invalid(
                        "admin.audit_retain_days",
                        Source::File,
                        d.to_string(),
                        "must be from 1 to 36500 days",
                    ));
                }
            },
        })
    }

    /// [`BulkSettings`]: counts and times at least 1.
    fn resolve_bulk(&self, data_dir: &std::path::Path) -> Result<BulkSettings, ConfigError> {
        let bulk = &self.file.bulk;
        let positive = |key: &'static str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(invalid(key, Source::File, "0", "must be at least 1")),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        Ok(BulkSettings {
            dir: bulk.dir.clone().unwrap_or_else(|| data_dir.join("bulk")),
            max_jobs: positive("bulk.max_jobs", bulk.max_jobs, 4)?.min(i64::MAX as u64) as i64,
            workers: positive("bulk.workers", bulk.workers, 2)?.min(1024) as usize,
            retain: Duration::from_secs(positive("bulk.retain_secs", bulk.retain_secs, 86_400)?),
            stale_after: Duration::from_secs(positive(
                "bulk.stale_after_secs",
                bulk.stale_after_secs,
                120,
            )?),
            file_max_resources: positive(
                "bulk.file_max_resources",
                bulk.file_max_resources,
                100_000,
            )?,
            import_sources: import_sources(bulk.import_sources.as_deref().unwrap_or_default())?,
            import_max_bytes: positive("bulk.import_max_bytes", bulk.import_max_bytes, 1 << 30)?,
            import_timeout: Duration::from_secs(positive(
                "bulk.import_timeout_secs",
                bulk.import_timeout_secs,
                600,
            )?),
        })
    }

    /// [`RequestLimits`]: each value at least 1, the JSON depth at most what the parser takes.
    fn resolve_limits(&self) -> Result<RequestLimits, ConfigError> {
        let default = RequestLimits::default();
        let positive = |key: &'static str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(invalid(key, Source::File, "0", "must be at least 1")),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let (fhir, server) = (&self.file.fhir, &self.file.server);
        let max_json_depth = positive(
            "fhir.max_json_depth",
            fhir.max_json_depth,
            default.max_json_depth as u64,
        )?;
        if max_json_depth > PARSER_MAX_JSON_DEPTH as u64 {
            return Err(invalid(
                "fhir.max_json_depth",
                Source::File,
                max_json_depth.to_string(),
                format!(
                    "must be at most {PARSER_MAX_JSON_DEPTH}, the depth the JSON parser accepts (a deeper resource could not be read back)"
                ),
            ));
        }
        let secs = |key, v, d: Duration| positive(key, v, d.as_secs()).map(Duration::from_secs);
        Ok(RequestLimits {
            max_json_depth: max_json_depth as usize,
            max_bundle_entries: positive(
                "fhir.max_bundle_entries",
                fhir.max_bundle_entries,
                default.max_bundle_entries as u64,
            )? as usize,
            request_timeout: secs(
                "server.request_timeout_secs",
                server.request_timeout_secs,
                default.request_timeout,
            )?,
            max_concurrent_requests: positive(
                "server.max_concurrent_requests",
                server.max_concurrent_requests,
                default.max_concurrent_requests as u64,
            )? as usize,
            statement_timeout: secs(
                "server.statement_timeout_secs",
                server.statement_timeout_secs,
                default.statement_timeout,
            )?,
            shutdown_grace: secs(
                "server.shutdown_grace_secs",
                server.shutdown_grace_secs,
                default.shutdown_grace,
            )?,
        })
    }

    /// The `[issuer]` settings: flag (or `HESTIA_*`) over file, and only with an issuer URL.
    fn resolve_issuer(&self) -> Result<Option<IssuerSettings>, ConfigError> {
        let f = &self.flags;
        let file = &self.file.issuer;
        let (url, src) = match (&f.issuer, &file.url) {
            (Some(url), _) => (url.clone(), Source::Flag),
            (None, Some(url)) => (url.clone(), Source::File),
            (None, None) => {
                if f.issuer_ca.is_some() || f.registration_token.is_some() {
                    return Err(ConfigError::Conflict(
                        "--issuer-ca and --registration-token need --issuer URL (the remote authorization server)".into(),
                    ));
                }
                if file.ca.is_some() || file.registration_token.is_some() {
                    return Err(ConfigError::Conflict(
                        "`issuer.ca` and `issuer.registration_token` need `issuer.url` (the remote authorization server)".into(),
                    ));
                }
                return Ok(None);
            }
        };
        let url =
            check_public_url(&url).map_err(|reason| invalid("issuer.url", src, &url, reason))?;
        let introspect = match file.introspect.as_deref() {
            None | Some("opaque-only") => IntrospectMode::OpaqueOnly,
            Some("always") => IntrospectMode::Always,
            Some(other) => {
                return Err(invalid(
                    "issuer.introspect",
                    Source::File,
                    other,
                    "expected `opaque-only` or `always`",
                ));
            }
        };
        Ok(Some(IssuerSettings {
            url,
            ca: f.issuer_ca.clone().or_else(|| file.ca.clone()),
            registration_token: f
                .registration_token
                .clone()
                .or_else(|| file.registration_token.clone()),
            introspect,
            introspection_cache: Duration::from_secs(
                file.introspection_cache_secs.unwrap_or(30).min(3600),
            ),
            jwks_refetch_interval: Duration::from_secs(
                file.jwks_refetch_secs.unwrap_or(10).min(3600),
            ),
        }))
    }
}

/// Accepts `http(s)://host[:port][/path]`, returns it without a trailing slash.
fn check_public_url(raw: &str) -> Result<String, String> {
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .ok_or("expected an absolute http:// or https:// URL")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if raw.contains(['?', '#', ' ']) {
        return Err("the URL must not contain a query, a fragment or spaces".into());
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// The host name of a public URL (for certificate names), without port or brackets.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h.to_string());
    }
    Some(authority.split(':').next()?.to_string()).filter(|h| !h.is_empty())
}

/// `bulk.import_sources`: absolute `http`/`https` URLs without credentials, query or
/// fragment, whose path ends with `/` (a prefix by whole path segments).
fn import_sources(list: &[String]) -> Result<Vec<url::Url>, ConfigError> {
    let key = "bulk.import_sources";
    list.iter()
        .map(|text| {
            let url = url::Url::parse(text).map_err(|e| {
                invalid(key, Source::File, text.as_str(), format!("not a URL: {e}"))
            })?;
            let plain = matches!(url.scheme(), "http" | "https")
                && url.has_host()
                && url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && url.fragment().is_none();
            if !plain {
                return Err(invalid(
                    key,
                    Source::File,
                    text.as_str(),
                    "must be an http or https URL without credentials, query or fragment",
                ));
            }
            if !url.path().ends_with('/') {
                return Err(invalid(
                    key,
                    Source::File,
                    text.as_str(),
                    "must end with / (files are allowed under it, by whole path segments)",
                ));
            }
            Ok(url)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_token_may_begin_with_a_hyphen() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: ServeFlags,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "serve",
            "--registration-token",
            "-Uq3x_token",
            "--insecure-http",
        ])
        .unwrap();
        assert_eq!(cli.flags.registration_token.as_deref(), Some("-Uq3x_token"));
        assert_eq!(cli.flags.insecure_http, Some(true));
    }

    fn raw(flags: ServeFlags, file: &str) -> RawConfig {
        RawConfig {
            flags,
            file: toml::from_str(file).unwrap(),
            file_path: None,
        }
    }

    #[test]
    fn search_limits_have_documented_defaults_and_keys() {
        let s = raw(ServeFlags::default(), "").resolve().unwrap();
        assert_eq!(s.fhir.search_limits, SearchLimits::default());
        let s = raw(
            ServeFlags::default(),
            "[fhir]\nmax_chain_depth = 2\nmax_chain_paths = 9\nmax_search_params = 7\nmax_search_values = 5\nmax_included = 3",
        )
        .resolve()
        .unwrap();
        assert_eq!(
            s.fhir.search_limits,
            SearchLimits {
                max_chain_depth: 2,
                max_chain_paths: 9,
                max_params: 7,
                max_values: 5,
                max_included: 3,
            }
        );
    }

    #[test]
    fn request_limits_have_defaults_and_refuse_what_cannot_hold() {
        let s = raw(ServeFlags::default(), "").resolve().unwrap();
        assert_eq!(s.limits, RequestLimits::default());
        let s = raw(
            ServeFlags::default(),
            "[fhir]\nmax_json_depth = 40\nmax_bundle_entries = 5\n[server]\nrequest_timeout_secs = 2\nmax_concurrent_requests = 3\nstatement_timeout_secs = 4\nshutdown_grace_secs = 5\n",
        )
        .resolve()
        .unwrap();
        assert_eq!(
            (s.limits.max_json_depth, s.limits.max_bundle_entries),
            (40, 5)
        );
        assert_eq!(s.limits.request_timeout, Duration::from_secs(2));
        assert_eq!(s.limits.max_concurrent_requests, 3);
        assert_eq!(s.limits.statement_timeout, Duration::from_secs(4));
        assert_eq!(s.limits.shutdown_grace, Duration::from_secs(5));
        for (file, key) in [
            ("[fhir]\nmax_json_depth = 128\n", "fhir.max_json_depth"),
            (
                "[fhir]\nmax_bundle_entries = 0\n",
                "fhir.max_bundle_entries",
            ),
            (
                "[server]\nrequest_timeout_secs = 0\n",
                "server.request_timeout_secs",
            ),
            (
                "[server]\nshutdown_grace_secs = 0\n",
                "server.shutdown_grace_secs",
            ),
            (
                "[server]\nmax_concurrent_requests = 0\n",
                "server.max_concurrent_requests",
            ),
        ] {
            let err = raw(ServeFlags::default(), file).resolve().unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn import_sources_are_plain_url_prefixes() {
        let s = raw(ServeFlags::default(), "").resolve().unwrap();
        assert!(s.bulk.import_sources.is_empty());
        assert_eq!(s.bulk.import_max_bytes, 1 << 30);
        let s = raw(
            ServeFlags::default(),
            "[bulk]\nimport_sources = [\"https://files.example/exports/\"]\nimport_max_bytes = 5\nimport_timeout_secs = 6\n",
        )
        .resolve()
        .unwrap();
        assert_eq!(
            s.bulk.import_sources[0].as_str(),
            "https://files.example/exports/"
        );
        assert_eq!(s.bulk.import_max_bytes, 5);
        assert_eq!(s.bulk.import_timeout, Duration::from_secs(6));
        for (source, says) in [
            ("https://files.example/exports", "must end with /"),
            ("ftp://files.example/", "http or https"),
            ("https://u:p@files.example/", "without credentials"),
            ("https://files.example/?sig=1", "query"),
            ("files.example/", "not a URL"),
        ] {
            let file = format!("[bulk]\nimport_sources = [{source:?}]\n");
            let err = raw(ServeFlags::default(), &file).resolve().unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("bulk.import_sources") && text.contains(says),
                "{source}: {text}"
            );
        }
    }

    #[test]
    fn defaults_are_usable() {
        let s = raw(ServeFlags::default(), "").resolve().unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(s.public_url, "https://localhost:8443");
        assert_eq!(s.tls, TlsMode::DevCert);
        assert_eq!(
            s.database_url,
            format!(
                "sqlite://{}",
                Path::new("hestia-data").join("hestia.db").display()
            )
        );
        assert_eq!(s.plugins_dir, Path::new("hestia-data").join("plugins"));
        assert_eq!(s.fhir_base_url(), "https://localhost:8443/fhir/r4");
        assert_eq!(s.oauth.purge_interval, Duration::from_secs(600));
        assert_eq!(s.oauth.purge_after, Duration::from_secs(86_400));
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let s = raw(
            ServeFlags::default(),
            "[oauth]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .resolve()
        .unwrap();
        assert_eq!(
            s.oauth.trusted_proxies,
            vec![
                "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        let err = raw(
            ServeFlags::default(),
            "[oauth]\ntrusted_proxies = [\"proxy.local\"]\n",
        )
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`oauth.trusted_proxies`") && err.contains("proxy.local"),
            "{err}"
        );
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let file = "listen = \"127.0.0.1:9000\"\nlog_format = \"json\"\n";
        let s = raw(ServeFlags::default(), file).resolve().unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.log_format, LogFormat::Json);
        let flags = ServeFlags {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let s = raw(flags, file).resolve().unwrap();
        assert_eq!(s.listen.port(), 9100);
        assert_eq!(
            s.log_format,
            LogFormat::Json,
            "the file still applies where no flag is given"
        );
    }

    #[test]
    fn insecure_http_changes_default_public_url() {
        let flags = ServeFlags {
            insecure_http: Some(true),
            listen: Some("0.0.0.0:8080".into()),
            ..Default::default()
        };
        let s = raw(flags, "").resolve().unwrap();
        assert_eq!(s.tls, TlsMode::Insecure);
        assert_eq!(s.public_url, "http://localhost:8080");
    }

    #[test]
    fn bad_values_name_key_source_and_value() {
        let flag = ServeFlags {
            listen: Some("nonsense".into()),
            ..Default::default()
        };
        let from_flag = raw(flag, "").resolve().unwrap_err().to_string();
        for needle in ["`listen`", "command line", "\"nonsense\""] {
            assert!(from_flag.contains(needle), "{from_flag:?} lacks {needle:?}");
        }
        let cases: &[(&str, &[&str])] = &[
            (
                "listen = \"1.2.3.4\"",
                &["`listen`", "configuration file", "\"1.2.3.4\""],
            ),
            ("log_format = \"xml\"", &["`log_format`", "\"xml\"", "text"]),
            (
                "[oauth]\npurge_interval_secs = 0",
                &["`oauth.purge_interval_secs`", "at least one second"],
            ),
            (
                "database_url = \"mysql://x\"",
                &["`database_url`", "\"mysql://x\""],
            ),
            (
                "public_url = \"localhost:8443\"",
                &["`public_url`", "absolute"],
            ),
            (
                "[fhir]\nbase_path = \"fhir/r4/\"",
                &["`fhir.base_path`", "\"fhir/r4/\""],
            ),
            (
                "[fhir]\nhidden_as = \"hide\"",
                &["`fhir.hidden_as`", "\"hide\"", "not-found"],
            ),
            (
                "[fhir]\nmax_chain_depth = 17",
                &["`fhir.max_chain_depth`", "\"17\"", "between 1 and 16"],
            ),
            (
                "[fhir]\nmax_included = 0",
                &["`fhir.max_included`", "\"0\""],
            ),
            (
                "[plugins]\ndeadline_ms = 0",
                &["`plugins.deadline_ms`", "\"0\""],
            ),
            (
                "[plugins]\nmemory_mib = 2048",
                &["`plugins.memory_mib`", "\"2048\"", "1 to 1024 MiB"],
            ),
            ("[tls]\ncert = \"a.pem\"", &["`tls.key`"]),
        ];
        for (file, needles) in cases {
            let err = raw(ServeFlags::default(), file)
                .resolve()
                .unwrap_err()
                .to_string();
            for needle in *needles {
                assert!(
                    err.contains(needle),
                    "error {err:?} should contain {needle:?}"
                );
            }
        }
    }

    #[test]
    fn plugin_wasi_is_off_unless_the_file_allows_it() {
        let s = raw(ServeFlags::default(), "").resolve().unwrap();
        assert_eq!(
            s.plugins.allow_wasi,
            crate::plugins::allowances::WasiAllowances::default()
        );
        let s = raw(ServeFlags::default(), "[plugins.wasi]\nclock = true\n")
            .resolve()
            .unwrap();
        assert!(s.plugins.allow_wasi.clock && !s.plugins.allow_wasi.random);
        assert!(
            toml::from_str::<FileConfig>("[plugins.wasi]\nnetwork = true\n").is_err(),
            "an unknown WASI permission is a typo, not a default"
        );
    }

    #[test]
    fn issuer_flags_beat_the_file_and_need_a_url() {
        let file = "[issuer]\nurl = \"https://as.example/\"\nintrospect = \"always\"\nintrospection_cache_secs = 5\n";
        let s = raw(ServeFlags::default(), file).resolve().unwrap();
        let issuer = s.issuer.unwrap();
        assert_eq!(issuer.url, "https://as.example");
        assert_eq!(issuer.introspect, IntrospectMode::Always);
        assert_eq!(issuer.introspection_cache, Duration::from_secs(5));
        assert_eq!(issuer.jwks_refetch_interval, Duration::from_secs(10));
        let flags = ServeFlags {
            issuer: Some("https://other.example".into()),
            registration_token: Some("t".into()),
            ..Default::default()
        };
        let s = raw(flags, file).resolve().unwrap();
        let issuer = s.issuer.unwrap();
        assert_eq!(issuer.url, "https://other.example");
        assert_eq!(issuer.registration_token.as_deref(), Some("t"));
        assert!(s.fhir.enabled);

        let flags = ServeFlags {
            issuer_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        let err = raw(flags, "").resolve().unwrap_err().to_string();
        assert!(err.contains("--issuer URL"), "{err}");
        let err = raw(ServeFlags::default(), "[issuer]\nurl = \"as.example\"")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`issuer.url`") && err.contains("absolute"),
            "{err}"
        );
        let err = raw(
            ServeFlags::default(),
            "[issuer]\nurl = \"https://a.example\"\nintrospect = \"never\"",
        )
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`issuer.introspect`") && err.contains("\"never\""),
            "{err}"
        );
    }

    #[test]
    fn fhir_can_be_disabled_but_not_together_with_an_issuer() {
        let s = raw(ServeFlags::default(), "[fhir]\nenabled = false")
            .resolve()
            .unwrap();
        assert!(!s.fhir.enabled);
        let flags = ServeFlags {
            no_fhir: Some(true),
            ..Default::default()
        };
        assert!(!raw(flags, "").resolve().unwrap().fhir.enabled);
        let err = raw(
            ServeFlags::default(),
            "[fhir]\nenabled = false\n[issuer]\nurl = \"https://as.example\"",
        )
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("nothing to serve"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = toml::from_str::<FileConfig>("lisen = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn url_host_extracts_names() {
        assert_eq!(
            url_host("https://fhir.example.org:8443/x").as_deref(),
            Some("fhir.example.org")
        );
        assert_eq!(url_host("http://[::1]:80").as_deref(), Some("::1"));
        assert_eq!(url_host("https://localhost").as_deref(), Some("localhost"));
    }

    #[test]
    fn audit_retention_has_a_default_and_a_checked_range() {
        let days = |file: &str| raw(ServeFlags::default(), file).resolve();
        assert_eq!(
            days("").unwrap().admin.audit_retain,
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(
            days("[admin]\naudit_retain_days = 7")
                .unwrap()
                .admin
                .audit_retain,
            Duration::from_secs(7 * 86_400)
        );
        let err = days("[admin]\naudit_retain_days = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.audit_retain_days"), "{err}");
    }
}
