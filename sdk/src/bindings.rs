//! The generated component glue, one module per world. Only `crate::glue` and
//! `crate::host` name these types, but for the contract's plain enums and the validator's
//! `issue`, which the SDK re-exports as its own ([`crate::Interaction`],
//! [`crate::Severity`], [`crate::Issue`]), so that the WIT is their one definition.
//!
//! With `pub_export_macro`, wit-bindgen links the description of each world's *imports*
//! into every plugin (unused imports are dropped when the component is made) and emits the
//! description of a world's *exports* only where its export macro is used, so one SDK
//! crate can carry all three worlds while each plugin exports exactly one.
#![allow(unsafe_code, missing_docs, clippy::all)]

pub mod scope_policy {
    wit_bindgen::generate!({
        world: "scope-policy",
        path: "../wit/v0.3.0",
        additional_type_attributes: {
            "hestia:plugin/types@0.3.0/interaction": [#[derive(Hash)]],
        },
        pub_export_macro: true,
        export_macro_name: "__hestia_export_scope_policy",
        runtime_path: "::hestia_sdk::__private::wit_bindgen::rt",
        type_section_suffix: "hestia-sdk-scope-policy",
    });
}

pub mod audience_rule {
    wit_bindgen::generate!({
        world: "audience-rule",
        path: "../wit/v0.3.0",
        pub_export_macro: true,
        export_macro_name: "__hestia_export_audience_rule",
        runtime_path: "::hestia_sdk::__private::wit_bindgen::rt",
        type_section_suffix: "hestia-sdk-audience-rule",
    });
}

pub mod resource_validator {
    wit_bindgen::generate!({
        world: "resource-validator",
        path: "../wit/v0.3.0",
        additional_type_attributes: {
            "hestia:plugin/types@0.3.0/severity": [#[derive(Hash)]],
            "hestia:plugin/types@0.3.0/issue": [#[derive(PartialEq, Eq)]],
        },
        pub_export_macro: true,
        export_macro_name: "__hestia_export_resource_validator",
        runtime_path: "::hestia_sdk::__private::wit_bindgen::rt",
        type_section_suffix: "hestia-sdk-resource-validator",
    });
}
