//! `hestia plugin new NAME --kind KIND`: a ready-to-build plugin crate. The files come from
//! `templates/`, one working example per kind, with a native unit test, a manifest and the
//! cases `hestia plugin test` runs against the built component.

use std::path::{Path, PathBuf};

use super::{PluginError, PluginKind};

/// Where the generated crate finds `hestia-sdk`.
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
    /// The crate is written to `out/NAME`.
    pub out: PathBuf,
    pub sdk: SdkSource,
}

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.in");

fn templates(kind: PluginKind) -> (&'static str, &'static str) {
    match kind {
        PluginKind::ScopePolicy => (
            include_str!("templates/scope-policy.rs"),
            include_str!("templates/scope-policy.cases.json"),
        ),
        PluginKind::AudienceRule => (
            include_str!("templates/audience-rule.rs"),
            include_str!("templates/audience-rule.cases.json"),
        ),
        PluginKind::ResourceValidator => (
            include_str!("templates/resource-validator.rs"),
            include_str!("templates/resource-validator.cases.json"),
        ),
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

/// Writes the crate and returns its directory. Refuses to overwrite an existing one.
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
    let sdk = match &plugin.sdk {
        SdkSource::Path(path) => {
            let path = std::path::absolute(path).map_err(|e| fail(e.to_string()))?;
            if !path.join("Cargo.toml").is_file() {
                return Err(fail(format!(
                    "--sdk-path {} has no Cargo.toml (it is the `sdk/` folder of a Hestia checkout)",
                    path.display()
                )));
            }
            format!("{{ path = {} }}", toml_string(&path.display().to_string()))
        }
        SdkSource::Git(url) => format!("{{ git = {} }}", toml_string(url)),
    };
    let crate_name = plugin.name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{name}", &plugin.name)
            .replace("{crate_name}", &crate_name)
            .replace("{sdk}", &sdk)
    };
    let (lib, cases) = templates(plugin.kind);
    let manifest = format!(
        "# The manifest Hestia reads beside {name}.wasm in its plugin directory.\nkind = \"{kind}\"\n# Position in the {kind} chain: lower runs first; the built-ins have order 0.\norder = 10\n",
        name = plugin.name,
        kind = plugin.kind,
    );
    let files = [
        ("Cargo.toml".to_string(), fill(CARGO_TOML)),
        ("src/lib.rs".to_string(), fill(lib)),
        (format!("{}.toml", plugin.name), manifest),
        ("cases.json".to_string(), cases.to_string()),
    ];
    for (relative, text) in &files {
        write(&dir.join(relative), text).map_err(fail)?;
    }
    Ok(dir)
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
    use super::check_name;

    #[test]
    fn names() {
        for good in ["no-deletes", "a", "policy2"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "2fa", "No", "a_b", "../x", "a b", "-x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
