//! `hestia plugin build [DIR]`: a project written by `hestia plugin new` into `NAME.wasm`
//! beside its manifest `NAME.toml`, with the language's own tool: cargo for Rust,
//! componentize-py for Python, componentize-js (through node) for JavaScript, optionally
//! ahead of time with weval (`--aot`). A missing tool is named with the command that
//! installs the tested version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::scaffold::{CONTRACT, JS_CONTRACT, Lang};
use super::{Manifest, PluginError, PluginKind};

/// The versions the templates are tested with (`scripts/plugin-tools.sh` installs them).
pub const COMPONENTIZE_PY: &str = "0.25.1";
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// The weval componentize-js's ahead-of-time mode runs (its inline-cache corpus,
/// `starlingmonkey_ics.wevalcache`, is made for this version); built from crates.io.
pub const WEVAL: &str = "0.5.0";

/// What `hestia plugin build` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub name: String,
    pub kind: PluginKind,
    pub lang: Lang,
    pub wasm: PathBuf,
    pub manifest: PathBuf,
}

/// Builds the project in `dir`; `aot`: a JavaScript project compiled ahead of time.
pub fn build(dir: &Path, aot: bool) -> Result<Built, PluginError> {
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
    if aot && lang != Lang::Js {
        return Err(fail(format!(
            "--aot is for JavaScript projects (componentize-js with weval); this is a {lang} project"
        )));
    }
    let wasm = dir.join(format!("{name}.wasm"));
    match lang {
        Lang::Rust => rust(dir, &name, &wasm),
        Lang::Python => python(dir, kind, &wasm),
        Lang::Js => js(dir, kind, &wasm, aot),
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

/// The world a Python audience rule builds against (`sdk-python/wit/audience-rule.wit`,
/// written into the project by `plugin new`): the contract's, with the export `accept`
/// named [`PYTHON_ACCEPT`], since componentize-py links the C library, whose socket
/// function `accept` clashes with it. The built component's export is renamed back.
const PYTHON_AUDIENCE_WIT: &str = "hestia/python/audience-rule.wit";
const PYTHON_AUDIENCE_WORLD: &str = "hestia:python-sdk/audience-rule";
const PYTHON_ACCEPT: &str = "accept-audiences";

fn python(dir: &Path, kind: PluginKind, wasm: &Path) -> Result<(), String> {
    let audience = kind == PluginKind::AudienceRule;
    if audience && !dir.join(PYTHON_AUDIENCE_WIT).is_file() {
        return Err(format!(
            "{PYTHON_AUDIENCE_WIT} is missing: a Python audience rule builds against it \
             (`hestia plugin new` writes it)"
        ));
    }
    let mut cmd = Command::new("componentize-py");
    cmd.arg("-d").arg(format!("hestia/wit/{CONTRACT}"));
    if audience {
        cmd.args(["-d", PYTHON_AUDIENCE_WIT, "-w", PYTHON_AUDIENCE_WORLD]);
    } else {
        cmd.args(["-w", kind.as_str()]);
    }
    cmd.args(["componentize", "-p", ".", "app", "-o"])
        .arg(wasm)
        .current_dir(dir);
    run(
        cmd,
        &format!(
            "`pip install componentize-py=={COMPONENTIZE_PY}` (in a virtual environment on PATH)"
        ),
    )?;
    if audience {
        let bytes = std::fs::read(wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
        let renamed = rename_export(&bytes, PYTHON_ACCEPT, "accept")?;
        std::fs::write(wasm, renamed).map_err(|e| format!("{}: {e}", wasm.display()))?;
    }
    Ok(())
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

/// The weval binary for `--aot`: `HESTIA_WEVAL`, else `weval` on PATH, at version [`WEVAL`].
fn weval() -> Result<PathBuf, String> {
    let install = format!(
        "`cargo install weval --version {WEVAL} --locked`, then put it on PATH or point \
         HESTIA_WEVAL at it"
    );
    let path = std::env::var_os("HESTIA_WEVAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("weval"));
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "--aot needs weval {WEVAL}; `{}`: {e}: {install}",
                path.display()
            )
        })?;
    let version = String::from_utf8_lossy(&out.stdout);
    match version.trim().strip_prefix("weval ") {
        Some(v) if v == WEVAL => Ok(path),
        _ => Err(format!(
            "--aot needs weval {WEVAL}; `{} --version` says {:?}: {install}",
            path.display(),
            version.trim()
        )),
    }
}

fn js(dir: &Path, kind: PluginKind, wasm: &Path, aot: bool) -> Result<(), String> {
    // Before componentize-js: with `--aot`, a missing weval is named first.
    let weval = if aot { Some(weval()?) } else { None };
    let Some(module) = componentize_js(dir) else {
        return Err(format!(
            "componentize-js is not installed: run `npm install` in {} (package.json pins \
             @bytecodealliance/componentize-js {COMPONENTIZE_JS}), or point HESTIA_JS_TOOLS at a \
             folder where `npm install @bytecodealliance/componentize-js@{COMPONENTIZE_JS}` ran",
            dir.display()
        ));
    };
    let module = std::path::absolute(&module).map_err(|e| e.to_string())?;
    let contract = js_contract(dir)?;
    let mut cmd = Command::new("node");
    cmd.args([
        "--input-type=module",
        "-e",
        &js_script(kind, &module, &contract),
    ])
    .arg(wasm)
    .args(weval)
    .current_dir(dir);
    run(cmd, "install Node.js 20 or later (https://nodejs.org)")
}

/// The contract folder a JavaScript project builds against: the version of the
/// `hestia:plugin/host@X` import in its `component.js` (a project made by an older `plugin
/// new` names the version of its SDK), or [`JS_CONTRACT`] when it names none.
fn js_contract(dir: &Path) -> Result<String, String> {
    const IMPORT: &str = "hestia:plugin/host@";
    let entry = dir.join("component.js");
    let source = std::fs::read_to_string(&entry)
        .map_err(|e| format!("{}: {e} (`hestia plugin new` writes it)", entry.display()))?;
    let Some((_, rest)) = source.split_once(IMPORT) else {
        return Ok(JS_CONTRACT.to_string());
    };
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let contract = format!("v{version}");
    if dir.join("hestia/wit").join(&contract).is_dir() {
        Ok(contract)
    } else {
        Err(format!(
            "component.js imports {IMPORT}{version}, but hestia/wit/{contract} is missing \
             (supported: {})",
            super::bindings::Version::supported()
        ))
    }
}

/// The node script that builds a JavaScript project: componentize-js with the bindings it
/// generates rewritten by `js_bindings.mjs` (the splicer module's exported object is the one
/// componentize-js calls, so wrapping its `spliceBindings` sees them), no WASI features (the
/// plugin talks to the host only through the contract), and with a weval binary (argv[2])
/// the weval-enabled engine compiled ahead of time. Writes the component to argv[1].
fn js_script(kind: PluginKind, componentize: &Path, contract: &str) -> String {
    let module = format!("file://{}", componentize.display());
    format!(
        "{tighten}\n\
         const tools = {module:?};\n\
         const {{ componentize }} = await import(tools);\n\
         const {{ writeFile }} = await import('node:fs/promises');\n\
         let tightened = null;\n\
         try {{\n\
           const {{ splicer }} = await import(new URL('../lib/spidermonkey-embedding-splicer.js', tools));\n\
           const splice = splicer.spliceBindings;\n\
           splicer.spliceBindings = (...args) => {{\n\
             const spliced = splice(...args);\n\
             const {{ src, exports }} = tightenBindings(spliced.jsBindings);\n\
             tightened = exports;\n\
             return {{ ...spliced, jsBindings: src }};\n\
           }};\n\
         }} catch (e) {{ console.error(`warning: cannot reach componentize-js's bindings: ${{e.message}}`); }}\n\
         const weval = process.argv[2];\n\
         const {{ component }} = await componentize({{ sourcePath: 'component.js', \
         witPath: 'hestia/wit/{contract}', worldName: '{kind}', \
         disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'], \
         ...(weval ? {{ enableAot: true, wevalBin: weval }} : {{}}) }});\n\
         await writeFile(process.argv[1], component);\n\
         if (tightened) console.log(`componentize-js bindings: the lifting code of ${{tightened}} exports rewritten for speed`);\n\
         else console.error('warning: componentize-js bindings used as generated (not componentize-js {COMPONENTIZE_JS}?): decisions run slower');",
        tighten = include_str!("js_bindings.mjs"),
        kind = kind.as_str(),
    )
}

/// `bytes`, a component, with its own export `from` renamed to `to`: every other byte as it
/// was (nested modules and components, whose exports are their own, are copied whole).
pub(crate) fn rename_export(bytes: &[u8], from: &str, to: &str) -> Result<Vec<u8>, String> {
    use wasm_encoder::RawSection;
    use wasmparser::{Parser, Payload};
    let invalid = |e: wasmparser::BinaryReaderError| format!("not a component: {e}");
    let mut out = wasm_encoder::Component::new();
    let mut renamed = false;
    // Payloads of nested modules and components come between their section and their `End`.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(invalid)?;
        let nests = matches!(
            payload,
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. }
        );
        if depth > 0 {
            match payload {
                _ if nests => depth += 1,
                Payload::End(_) => depth -= 1,
                _ => {}
            }
            continue;
        }
        match payload {
            Payload::ComponentExportSection(reader) => {
                let (id, range) = (11, reader.range());
                let data = renamed_exports(bytes, reader, from, to).map_err(invalid)?;
                renamed |= data.is_some();
                let data = data.as_deref().unwrap_or(&bytes[range]);
                out.section(&RawSection { id, data });
            }
            Payload::Version { .. } | Payload::End(_) => {}
            other => {
                let Some((id, range)) = other.as_section() else {
                    return Err("not a component: a core module section at its top".into());
                };
                out.section(&RawSection {
                    id,
                    data: &bytes[range],
                });
                if nests {
                    depth = 1;
                }
            }
        }
    }
    if !renamed {
        return Err(format!("the component exports no `{from}`"));
    }
    Ok(out.finish())
}

/// The export section `reader` with the entry named `from` named `to`, its other bytes
/// as they were; `None` when no entry is named `from`.
fn renamed_exports(
    bytes: &[u8],
    reader: wasmparser::ComponentExportSectionReader<'_>,
    from: &str,
    to: &str,
) -> Result<Option<Vec<u8>>, wasmparser::BinaryReaderError> {
    use wasm_encoder::Encode;
    let end = reader.range().end;
    let mut data = Vec::new();
    reader.count().encode(&mut data);
    let entries: Vec<_> = reader.into_iter_with_offsets().collect::<Result<_, _>>()?;
    let mut found = false;
    for (n, (start, export)) in entries.iter().enumerate() {
        let stop = entries.get(n + 1).map_or(end, |(next, _)| *next);
        let entry = &bytes[*start..stop];
        // A plain name (no options) is a 0x00 or 0x01 byte, then the string.
        if export.name.name == from && entry[0] != 0x02 {
            let mut name = Vec::new();
            from.encode(&mut name);
            data.push(0x00);
            to.encode(&mut data);
            data.extend_from_slice(&entry[1 + name.len()..]);
            found = true;
        } else {
            data.extend_from_slice(entry);
        }
    }
    Ok(found.then_some(data))
}

#[cfg(test)]
mod tests {
    use super::{js_contract, rename_export};
    use crate::plugins::runtime::{compile, engine};
    use crate::plugins::{PluginKind, default_builtins};

    #[test]
    fn an_export_renamed_and_back_is_the_world_it_was() {
        let audience = default_builtins()
            .into_iter()
            .find(|p| p.kind == PluginKind::AudienceRule)
            .expect("a built-in audience rule");
        let engine = engine(None).unwrap();
        let renamed = rename_export(&audience.wasm, "accept", "accept-audiences").unwrap();
        let refused = compile(&engine, &renamed)
            .err()
            .expect("no audience-rule world");
        assert!(refused.contains("accept-audiences"), "{refused}");
        let back = rename_export(&renamed, "accept-audiences", "accept").unwrap();
        assert_eq!(back, *audience.wasm, "every other byte as it was");
        assert_eq!(
            compile(&engine, &back).map(|c| c.kind).ok(),
            Some(PluginKind::AudienceRule)
        );
        let missing = rename_export(&audience.wasm, "nothing", "x").unwrap_err();
        assert!(missing.contains("exports no `nothing`"), "{missing}");
        assert!(rename_export(b"garbage", "accept", "x").is_err());
    }

    /// A JavaScript project builds against the contract its `component.js` imports: a project
    /// of an older `plugin new` (0.3.0) keeps its version, a new one gets 0.4.0, and a version
    /// the project has no WIT for is named.
    #[test]
    fn a_javascript_project_builds_against_the_version_it_imports() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["v0.3.0", "v0.4.0"] {
            std::fs::create_dir_all(dir.path().join("hestia/wit").join(v)).unwrap();
        }
        let entry = |text: &str| std::fs::write(dir.path().join("component.js"), text).unwrap();
        entry("import * as host from \"hestia:plugin/host@0.3.0\";\n");
        assert_eq!(js_contract(dir.path()).as_deref(), Ok("v0.3.0"));
        entry("import * as host from \"hestia:plugin/host@0.4.0\";\n");
        assert_eq!(js_contract(dir.path()).as_deref(), Ok("v0.4.0"));
        entry("export function authorize() {}\n");
        assert_eq!(js_contract(dir.path()).as_deref(), Ok("v0.4.0"));
        entry("import * as host from \"hestia:plugin/host@0.9.0\";\n");
        let missing = js_contract(dir.path()).unwrap_err();
        assert!(
            missing.contains("hestia/wit/v0.9.0 is missing"),
            "{missing}"
        );
        std::fs::remove_file(dir.path().join("component.js")).unwrap();
        assert!(
            js_contract(dir.path())
                .unwrap_err()
                .contains("component.js")
        );
    }
}
