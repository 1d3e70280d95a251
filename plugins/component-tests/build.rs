//! Builds the plugins of this workspace for wasm32-wasip2, in a target directory of its own
//! (the outer cargo holds the locks of the usual one), and emits one path constant per
//! plugin into `$OUT_DIR/components.rs`: `(crate name, world, path to the .wasm)`.

use std::env;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

/// Every plugin crate of the workspace (its folder, whose last part is the crate name),
/// with the world it must export.
const PLUGINS: &[(&str, &str)] = &[
    ("smart-scopes", "scope-policy"),
    ("audience", "audience-rule"),
    ("structural-validator", "resource-validator"),
    ("examples/tenant-isolation", "scope-policy"),
    ("examples/trusted-audiences", "audience-rule"),
    ("examples/us-core-validator", "resource-validator"),
    ("examples/consent-labels", "scope-policy"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("wasm");

    for watched in ["../../sdk", "../../wit", "../Cargo.toml", "../Cargo.lock"] {
        println!("cargo:rerun-if-changed={watched}");
    }
    for (dir, _) in PLUGINS {
        println!("cargo:rerun-if-changed=../{dir}");
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for (dir, _) in PLUGINS {
        cmd.arg("-p").arg(crate_name(dir));
    }
    without_host_build_vars(&mut cmd);
    let status = cmd
        .status()
        .expect("running cargo for the wasm32-wasip2 plugins");
    assert!(
        status.success(),
        "building the plugins for wasm32-wasip2 failed"
    );

    let mut consts = String::from("pub const COMPONENTS: &[(&str, &str, &str)] = &[\n");
    for (dir, world) in PLUGINS {
        let name = crate_name(dir);
        let file = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        writeln!(
            consts,
            "    ({name:?}, {world:?}, {:?}),",
            file.display().to_string()
        )
        .unwrap();
    }
    consts.push_str("];\n");
    std::fs::write(out_dir.join("components.rs"), consts).unwrap();
}

fn crate_name(dir: &str) -> &str {
    dir.rsplit('/').next().unwrap_or(dir)
}

include!("../../tools/guest_cargo.rs");
