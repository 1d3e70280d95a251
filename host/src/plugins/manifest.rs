//! `NAME.toml`, the optional manifest beside `NAME.wasm`: what the operator says about a
//! plugin. Parsed strictly (unknown keys are errors) so that a typo does not silently
//! become a default.

use serde::Deserialize;

use super::info::{OnError, PluginKind};

/// What a manifest may ask of WASI. The host grants it only where `PluginSettings::allow_wasi`
/// allows it too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasiAsk {
    #[serde(default)]
    pub clock: bool,
    #[serde(default)]
    pub random: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    pub deadline_ms: Option<u64>,
    pub memory_mib: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The world the component must export; checked against what it really exports.
    pub kind: Option<PluginKind>,
    /// Position in its chain; lower runs first, ties by name.
    pub order: Option<i64>,
    /// Passed to the plugin as JSON by `host.config()`.
    pub config: Option<toml::Table>,
    #[serde(default)]
    pub limits: ManifestLimits,
    /// Refuse the file unless its SHA-256 (hex) is this.
    pub sha256: Option<String>,
    pub on_error: Option<OnError>,
    /// A fresh instance per call instead of a warm one.
    #[serde(default)]
    pub isolation: bool,
    #[serde(default)]
    pub wasi: WasiAsk,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, String> {
        toml::from_str(text).map_err(|e| format!("invalid manifest: {}", e.message()))
    }

    /// The plugin's configuration as a JSON object (`{}` when there is none).
    pub fn config_json(&self) -> String {
        match &self.config {
            Some(table) => serde_json::to_string(table).unwrap_or_else(|_| "{}".to_string()),
            None => "{}".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_manifest() {
        let m = Manifest::parse(
            r#"
            kind = "scope-policy"
            order = 5
            sha256 = "ab"
            on_error = "allow"
            isolation = true
            [config]
            greeting = "hi"
            n = 3
            [limits]
            deadline_ms = 50
            memory_mib = 8
            [wasi]
            clock = true
            "#,
        )
        .unwrap();
        assert_eq!(m.kind, Some(PluginKind::ScopePolicy));
        assert_eq!(m.order, Some(5));
        assert_eq!(m.on_error, Some(OnError::Allow));
        assert!(m.isolation);
        assert_eq!(m.limits.deadline_ms, Some(50));
        assert_eq!(m.limits.memory_mib, Some(8));
        assert_eq!(
            m.wasi,
            WasiAsk {
                clock: true,
                random: false
            }
        );
        let config: serde_json::Value = serde_json::from_str(&m.config_json()).unwrap();
        assert_eq!(config, serde_json::json!({"greeting": "hi", "n": 3}));
    }

    #[test]
    fn empty_manifest_means_defaults() {
        let m = Manifest::parse("").unwrap();
        assert_eq!(m, Manifest::default());
        assert_eq!(m.config_json(), "{}");
    }

    #[test]
    fn typos_are_errors() {
        for text in [
            "knd = \"scope-policy\"",
            "kind = \"scope-polcy\"",
            "on_error = \"maybe\"",
            "[limits]\ndeadline = 3",
            "[wasi]\nnetwork = true",
        ] {
            let err = Manifest::parse(text).unwrap_err();
            assert!(err.starts_with("invalid manifest: "), "{text}: {err}");
        }
    }
}
