//! `hestia plugin build [DIR]`: a project written by `hestia plugin new` into `NAME.wasm`
//! beside its manifest `NAME.toml`, with the language's own tool: cargo for Rust,
//! componentize-py for Python, componentize-js (through node) for JavaScript. A missing tool
//! is named with the command that installs the tested version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::scaffold::{CONTRACT, Lang};
use super::{Manifest, PluginError, PluginKind};

/// The versions the templates are tested with (`scripts/plugin-tools.sh` installs them).
pub const COMPONENTIZE_PY: &str = "0.25.1";
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// What `hestia plugin build` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub name: String,
    pub kind: PluginKind,
    pub lang: Lang,
    pub wasm: PathBuf,
    pub manifest: PathBuf,
}

/// Builds the project in `dir`.
pub fn build(dir: &Path) -> Result<Built, PluginError> {
    let fail = |reason: String| PluginError::Check {
        path: dir.to_path_buf(),
        reason,
    };
    // The tools run in the project; every path given to them is absolute.
    let dir = &std::path::absolute(dir).map_err(|e| fail(e.to_string()))?;
    let (name, kind, manifest) = project_manifest(dir).map_err(fail)?;
    let lang = Lang::ALL
        .into_iter()
        .find(|lang| dir.join(lang.marker()).is_file())
        .ok_or_else(|| {
            fail("no Cargo.toml, app.py or plugin.js: not a project of `hestia plugin new`".into())
        })?;
    let wasm = dir.join(format!("{name}.wasm"));
    match lang {
        Lang::Rust => rust(dir, &name, &wasm),
        Lang::Python => python(dir, kind, &wasm),
        Lang::Js => js(dir, kind, &wasm),
    }
    .map_err(fail)?;
    Ok(Built {
        name,
        kind,
        lang,
        wasm,
        manifest,
    })
}

/// The one `NAME.toml` of the project that is a plugin manifest naming its kind.
fn project_manifest(dir: &Path) -> Result<(String, PluginKind, PathBuf), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read: {e}"))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let (Some(stem), Some("toml")) = (stem, path.extension().and_then(|e| e.to_str())) else {
            continue;
        };
        if ["Cargo", "pyproject"].contains(&stem.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{stem}.toml: {e}"))?;
        let kind = Manifest::parse(&text)
            .map_err(|e| format!("{stem}.toml: {e}"))?
            .kind
            .ok_or_else(|| format!("{stem}.toml names no kind"))?;
        found.push((stem, kind, path));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("no plugin manifest NAME.toml (with `kind = ...`)".into()),
        _ => Err("more than one plugin manifest *.toml; keep one".into()),
    }
}

/// Runs `cmd`; a tool that is not there is named with what installs it.
fn run(mut cmd: Command, install: &str) -> Result<(), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("`{program}` is not installed: {install}"),
            _ => format!("cannot run `{program}`: {e}"),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program}` failed ({status}); its output is above"
        ))
    }
}

fn rust(dir: &Path, name: &str, wasm: &Path) -> Result<(), String> {
    const INSTALL: &str =
        "install Rust (https://rustup.rs), then `rustup target add wasm32-wasip2`";
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .map_err(|_| format!("`rustc` is not installed: {INSTALL}"))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&libdir.stdout).trim());
    if !libdir.is_dir() {
        return Err(
            "the Rust target wasm32-wasip2 is not installed: `rustup target add wasm32-wasip2`"
                .into(),
        );
    }
    // The user's CARGO_TARGET_DIR, as cargo itself would; otherwise the project's own.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(shared) => dir.join(shared),
        None => dir.join("target"),
    };
    let mut cmd = Command::new("cargo");
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--target-dir",
    ])
    .arg(&target)
    .current_dir(dir);
    run(cmd, INSTALL)?;
    let artifact = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::copy(&artifact, wasm).map_err(|e| format!("{}: {e}", artifact.display()))?;
    Ok(())
}

fn python(dir: &Path, kind: PluginKind, wasm: &Path) -> Result<(), String> {
    let mut cmd = Command::new("componentize-py");
    cmd.arg("-d")
        .arg(format!("hestia/wit/{CONTRACT}"))
        .args(["-w", kind.as_str(), "componentize", "-p", ".", "app", "-o"])
        .arg(wasm)
        .current_dir(dir);
    run(
        cmd,
        &format!(
            "`pip install componentize-py=={COMPONENTIZE_PY}` (in a virtual environment on PATH)"
        ),
    )
}

/// componentize-js from the project's `node_modules`, or from `HESTIA_JS_TOOLS` (a folder
/// whose `node_modules` has it, shared by several projects).
fn componentize_js(dir: &Path) -> Option<PathBuf> {
    let relative = "node_modules/@bytecodealliance/componentize-js/src/componentize.js";
    std::iter::once(dir.to_path_buf())
        .chain(std::env::var_os("HESTIA_JS_TOOLS").map(PathBuf::from))
        .map(|base| base.join(relative))
        .find(|path| path.is_file())
}

fn js(dir: &Path, kind: PluginKind, wasm: &Path) -> Result<(), String> {
    let Some(module) = componentize_js(dir) else {
        return Err(format!(
            "componentize-js is not installed: run `npm install` in {} (package.json pins \
             @bytecodealliance/componentize-js {COMPONENTIZE_JS}), or point HESTIA_JS_TOOLS at a \
             folder where `npm install @bytecodealliance/componentize-js@{COMPONENTIZE_JS}` ran",
            dir.display()
        ));
    };
    let module = std::path::absolute(&module).map_err(|e| e.to_string())?;
    // No WASI features: the plugin talks to the host only through the contract.
    let script = format!(
        "const {{ componentize }} = await import({module:?});\n\
         const {{ writeFile }} = await import('node:fs/promises');\n\
         const {{ component }} = await componentize({{ sourcePath: 'component.js', \
         witPath: 'hestia/wit/{CONTRACT}', worldName: '{kind}', \
         disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'] }});\n\
         await writeFile(process.argv[1], component);",
        module = format!("file://{}", module.display()),
        kind = kind.as_str(),
    );
    let mut cmd = Command::new("node");
    cmd.args(["--input-type=module", "-e", &script])
        .arg(wasm)
        .current_dir(dir);
    run(cmd, "install Node.js 20 or later (https://nodejs.org)")
}
