//! What the host offers every plugin: logging and the plugin's own configuration.
//!
//! In a component these call the host's `log` and `config` imports. In a native build
//! (`cargo test` on the host target) they use a per-thread stand-in that tests set and
//! read through [`crate::testing`].

use std::fmt;

use serde::de::DeserializeOwned;

/// Log level of a plugin's log line; the host writes it to its own log under the
/// plugin's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Sends one line to the host's log.
pub fn log(level: Level, message: &str) {
    backend::log(level, message);
}

/// The plugin's configuration from its manifest, deserialized.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Config { trusted: Vec<String> }
///
/// # hestia_sdk::testing::set_config(serde_json::json!({"trusted": ["https://a.example"]}));
/// let config: Config = hestia_sdk::config().unwrap();
/// assert_eq!(config.trusted, ["https://a.example"]);
/// ```
pub fn config<T: DeserializeOwned>() -> Result<T, ConfigError> {
    serde_json::from_str(&config_json()).map_err(ConfigError)
}

/// The plugin's configuration as the JSON object text the host passed (`{}` when none).
pub fn config_json() -> String {
    backend::config()
}

/// The plugin's configuration does not have the shape the plugin expects.
#[derive(Debug)]
pub struct ConfigError(serde_json::Error);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plugin configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::Level;
    use crate::bindings::scope_policy::hestia::plugin::{host, types::LogLevel};

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        host::log(level, message);
    }

    pub fn config() -> String {
        host::config()
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod backend {
    use std::cell::RefCell;

    use super::Level;

    #[derive(Default)]
    pub struct NativeHost {
        pub config: Option<String>,
        pub logs: Vec<(Level, String)>,
    }

    thread_local! {
        pub static HOST: RefCell<NativeHost> = RefCell::default();
    }

    pub fn log(level: Level, message: &str) {
        HOST.with_borrow_mut(|h| h.logs.push((level, message.to_string())));
    }

    pub fn config() -> String {
        HOST.with_borrow(|h| h.config.clone().unwrap_or_else(|| "{}".to_string()))
    }
}

/// Logging helpers: `hestia_sdk::log::info("…")`.
pub mod log {
    use super::Level;

    pub fn trace(message: impl AsRef<str>) {
        super::log(Level::Trace, message.as_ref());
    }

    pub fn debug(message: impl AsRef<str>) {
        super::log(Level::Debug, message.as_ref());
    }

    pub fn info(message: impl AsRef<str>) {
        super::log(Level::Info, message.as_ref());
    }

    pub fn warn(message: impl AsRef<str>) {
        super::log(Level::Warn, message.as_ref());
    }

    pub fn error(message: impl AsRef<str>) {
        super::log(Level::Error, message.as_ref());
    }
}
