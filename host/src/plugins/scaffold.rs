//! `hestia plugin new NAME --kind KIND [--lang LANG]`: a ready-to-build plugin project, from
//! the binary alone. The files come from `templates/` (one working example per kind and
//! language, with native unit tests, a manifest and the cases `hestia plugin test` runs);
//! the WIT contract and the language's SDK are embedded in the binary (`host/build.rs`
//! lists them) and written into the project, so that it builds offline once the language's
//! build tool is installed.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{PluginError, PluginKind};

/// The languages a plugin project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::Rust, Lang::Python, Lang::Js];

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// The project file that marks a project of this language (`hestia plugin build`).
    pub(crate) fn marker(self) -> &'static str {
        match self {
            Lang::Rust => "Cargo.toml",
            Lang::Python => "app.py",
            Lang::Js => "plugin.js",
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a Rust project finds `hestia-sdk` instead of the copy written into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A checkout's `sdk/` folder (made absolute).
    Path(PathBuf),
    /// A git repository holding the Hestia workspace.
    Git(String),
}

/// What `hestia plugin new` writes.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    pub name: String,
    pub kind: PluginKind,
    pub lang: Lang,
    /// The project is written to `out/NAME`.
    pub out: PathBuf,
    /// Rust only: an SDK elsewhere instead of the embedded one.
    pub sdk: Option<SdkSource>,
}

/// The contract version new projects are written against (`hestia/wit/CONTRACT`).
pub(crate) const CONTRACT: &str = "v0.3.0";

/// The contract version new JavaScript projects are written against: 0.4.0, whose
/// `authorize` borrows the request and the claims, so that a JavaScript policy lifts only
/// the fields it reads (what lifting costs a JavaScript guest makes this most of a decision).
/// The project's `component.js` names it, and `plugin build` builds against the version it
/// names ([`crate::plugins::builder`]).
pub(crate) const JS_CONTRACT: &str = "v0.4.0";

/// The WIT package and the SDKs, as (path in the repository, text).
pub(crate) static EMBEDDED: &[(&str, &str)] =
    include!(concat!(env!("OUT_DIR"), "/embedded_files.rs"));

/// Where each embedded tree goes in a project of `lang`: (repository prefix, project prefix).
fn layout(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[("wit/", "hestia/wit/"), ("sdk/", "hestia/sdk/")],
        Lang::Python => &[
            ("wit/", "hestia/wit/"),
            ("sdk-python/hestia_sdk/", "hestia_sdk/"),
            // The world Python audience rules build against (`builder::python`).
            ("sdk-python/wit/", "hestia/python/"),
        ],
        Lang::Js => &[
            ("wit/", "hestia/wit/"),
            ("sdk-js/hestia-sdk/", "hestia-sdk/"),
        ],
    }
}

fn cases(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::ScopePolicy => include_str!("templates/scope-policy.cases.json"),
        PluginKind::AudienceRule => include_str!("templates/audience-rule.cases.json"),
        PluginKind::ResourceValidator => include_str!("templates/resource-validator.cases.json"),
    }
}

/// The project's own files of `lang` and `kind`, as (path, template).
fn sources(lang: Lang, kind: PluginKind) -> Vec<(&'static str, &'static str)> {
    use PluginKind::{AudienceRule as A, ResourceValidator as V, ScopePolicy as S};
    match (lang, kind) {
        (Lang::Rust, k) => vec![
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml.in")),
            (
                "hestia/sdk/Cargo.toml",
                include_str!("templates/rust/sdk.Cargo.toml"),
            ),
            (
                "src/lib.rs",
                match k {
                    S => include_str!("templates/rust/scope-policy.rs"),
                    A => include_str!("templates/rust/audience-rule.rs"),
                    V => include_str!("templates/rust/resource-validator.rs"),
                },
            ),
        ],
        (Lang::Python, k) => vec![
            (
                "app.py",
                match k {
                    S => include_str!("templates/python/scope-policy.py"),
                    A => include_str!("templates/python/audience-rule.py"),
                    V => include_str!("templates/python/resource-validator.py"),
                },
            ),
            (
                "test_app.py",
                match k {
                    S => include_str!("templates/python/test-scope-policy.py"),
                    A => include_str!("templates/python/test-audience-rule.py"),
                    V => include_str!("templates/python/test-resource-validator.py"),
                },
            ),
        ],
        (Lang::Js, k) => vec![
            ("package.json", include_str!("templates/js/package.json")),
            (
                "plugin.js",
                match k {
                    S => include_str!("templates/js/scope-policy.js"),
                    A => include_str!("templates/js/audience-rule.js"),
                    V => include_str!("templates/js/resource-validator.js"),
                },
            ),
            (
                "component.js",
                match k {
                    S => include_str!("templates/js/scope-policy.component.js"),
                    A => include_str!("templates/js/audience-rule.component.js"),
                    V => include_str!("templates/js/resource-validator.component.js"),
                },
            ),
            (
                "plugin.test.js",
                match k {
                    S => include_str!("templates/js/scope-policy.test.js"),
                    A => include_str!("templates/js/audience-rule.test.js"),
                    V => include_str!("templates/js/resource-validator.test.js"),
                },
            ),
        ],
    }
}

/// A plugin name is a file stem and a crate name: ASCII letters, digits and `-`, starting
/// with a letter.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if starts_with_letter && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a plugin name: use lowercase ASCII letters, digits and '-', starting with a letter"
        ))
    }
}

/// Writes the project and returns its directory. Refuses to overwrite an existing one.
pub fn new(plugin: &NewPlugin) -> Result<PathBuf, PluginError> {
    let dir = plugin.out.join(&plugin.name);
    let fail = |reason: String| PluginError::Check {
        path: dir.clone(),
        reason,
    };
    check_name(&plugin.name).map_err(fail)?;
    if dir.exists() {
        return Err(fail("already exists; choose another name or --out".into()));
    }
    let sdk = rust_sdk(plugin.sdk.as_ref()).map_err(fail)?;
    let fill = |template: &str| {
        template
            .replace("{name}", &plugin.name)
            .replace("{crate_name}", &plugin.name.replace('-', "_"))
            .replace("{sdk}", &sdk)
            .replace("{kind}", plugin.kind.as_str())
            .replace("{version}", env!("CARGO_PKG_VERSION"))
    };
    let manifest = format!(
        "# The manifest Hestia reads beside {name}.wasm in its plugin directory.\nkind = \"{kind}\"\n# Position in the {kind} chain: lower runs first; the built-ins have order 0.\norder = 10\n{limits}",
        name = plugin.name,
        kind = plugin.kind,
        limits = interpreter_limits(plugin.lang),
    );
    let mut files: Vec<(String, String)> = vec![
        (format!("{}.toml", plugin.name), manifest),
        ("cases.json".to_string(), cases(plugin.kind).to_string()),
    ];
    for (path, template) in sources(plugin.lang, plugin.kind) {
        if plugin.sdk.is_some() && path.starts_with("hestia/sdk/") {
            continue;
        }
        files.push((path.to_string(), fill(template)));
    }
    for (from, to) in layout(plugin.lang) {
        if plugin.sdk.is_some() && *to == "hestia/sdk/" {
            continue;
        }
        for (path, text) in EMBEDDED {
            // The Rust SDK's own manifest names its workspace; the template replaces it.
            if let Some(rest) = path.strip_prefix(from)
                && *path != "sdk/Cargo.toml"
            {
                files.push((format!("{to}{rest}"), text.to_string()));
            }
        }
    }
    for (relative, text) in &files {
        write(&dir.join(relative), text).map_err(fail)?;
    }
    Ok(dir)
}

/// Interpreter-based components hold a whole runtime: more memory and a longer first call.
fn interpreter_limits(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "",
        Lang::Python | Lang::Js => {
            "\n# An interpreter runs inside the component: it needs more room than the host's default.\n[limits]\nmemory_mib = 64\ndeadline_ms = 100\n"
        }
    }
}

/// The `hestia-sdk` dependency of a Rust project.
fn rust_sdk(source: Option<&SdkSource>) -> Result<String, String> {
    Ok(match source {
        None => "{ path = \"hestia/sdk\" }".to_string(),
        Some(SdkSource::Path(path)) => {
            let path = std::path::absolute(path).map_err(|e| e.to_string())?;
            if !path.join("Cargo.toml").is_file() {
                return Err(format!(
                    "--sdk-path {} has no Cargo.toml (it is the `sdk/` folder of a Hestia checkout)",
                    path.display()
                ));
            }
            format!("{{ path = {} }}", toml_string(&path.display().to_string()))
        }
        Some(SdkSource::Git(url)) => format!("{{ git = {} }}", toml_string(url)),
    })
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::{EMBEDDED, check_name};

    #[test]
    fn names() {
        for good in ["no-deletes", "a", "policy2"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "2fa", "No", "a_b", "../x", "a b", "-x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_contract_and_the_sdks_are_embedded() {
        let has = |path: &str| EMBEDDED.iter().any(|(p, _)| *p == path);
        for path in [
            "wit/v0.3.0/plugin.wit",
            "wit/v0.4.0/plugin.wit",
            "sdk/src/lib.rs",
            "sdk/src/smart/tests.rs",
            "sdk-python/hestia_sdk/__init__.py",
            "sdk-python/wit/audience-rule.wit",
            "sdk-js/hestia-sdk/index.js",
        ] {
            assert!(has(path), "{path} is not embedded");
        }
    }
}
