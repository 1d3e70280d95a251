//! The plugins as built for wasm32-wasip2, and tests that check each is a component
//! exporting exactly its world's functions and importing the Hestia host interface.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The functions each world exports.
pub fn world_exports(world: &str) -> &'static [&'static str] {
    match world {
        "scope-policy" => &["grant", "authorize"],
        "audience-rule" => &["resolve", "accept"],
        "resource-validator" => &["validate"],
        other => panic!("unknown world {other}"),
    }
}

#[cfg(test)]
mod tests {
    use wasmparser::{Parser, Payload, Validator, WasmFeatures};

    use super::{COMPONENTS, world_exports};

    /// `\0asm`, then the component-model version and layer (`0d 00 01 00`); a core module
    /// would have `01 00 00 00`.
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    /// The names of the outermost component's imports and exports.
    fn top_level_names(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        let (mut imports, mut exports) = (Vec::new(), Vec::new());
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.unwrap() {
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(reader) if depth == 0 => {
                    for import in reader {
                        imports.push(import.unwrap().name.name.to_string());
                    }
                }
                Payload::ComponentExportSection(reader) if depth == 0 => {
                    for export in reader {
                        exports.push(export.unwrap().name.name.to_string());
                    }
                }
                _ => {}
            }
        }
        (imports, exports)
    }

    #[test]
    fn every_plugin_is_a_valid_component_exporting_its_world() {
        assert_eq!(COMPONENTS.len(), 7);
        for (name, world, path) in COMPONENTS {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
            assert_eq!(bytes[..8], COMPONENT_HEADER, "{name} is not a component");
            Validator::new_with_features(WasmFeatures::all())
                .validate_all(&bytes)
                .unwrap_or_else(|e| panic!("{name} does not validate: {e}"));
            let (imports, mut exports) = top_level_names(&bytes);
            exports.sort();
            let mut expected: Vec<String> = world_exports(world)
                .iter()
                .map(ToString::to_string)
                .collect();
            expected.sort();
            assert_eq!(exports, expected, "{name} exports");
            // Interfaces of the contract, the WASI 0.2 interfaces Rust's std asks for (the
            // host links them with an empty context), and the contract's type names. An
            // import the plugin never calls (`host` without log or config) is left out.
            let unexpected: Vec<&String> = imports
                .iter()
                .filter(|i| {
                    !(i.starts_with("hestia:plugin/") && i.ends_with("@0.3.0")
                        || i.starts_with("wasi:")
                        || !i.contains(':'))
                })
                .collect();
            assert!(unexpected.is_empty(), "{name} imports {unexpected:?}");
        }
    }
}
