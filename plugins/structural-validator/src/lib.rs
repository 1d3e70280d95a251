//! The default resource validator: structural checks from the FHIR R4 definitions.
//!
//! - `resourceType` is present, a known concrete R4 resource type, and the type the
//!   request is about (code `invalid` otherwise);
//! - every top-level element is one the resource type defines (a choice element with one
//!   of its types, `valueQuantity`; a primitive's `_element` companion), and only one
//!   variant of a choice is present (code `structure`);
//! - repeating elements are non-empty arrays, the others are not arrays; complex elements
//!   are JSON objects (code `structure`);
//! - required top-level elements (minimum cardinality 1 or more) are present (code
//!   `required`);
//! - top-level primitives have their JSON type and format: `boolean`, `integer`,
//!   `positiveInt`, `unsignedInt`, `decimal`, `string`, `markdown`, `code`, `id`, `uri`,
//!   `url`, `canonical`, `oid`, `uuid`, `date`, `dateTime`, `instant`, `time`,
//!   `base64Binary` (code `value`).
//!
//! Nested elements, contained resources beyond being objects, terminology bindings and
//! invariants are not checked. The table of resource types is generated (`gen/`).

use hestia_sdk::serde_json::Map;
use hestia_sdk::{Issue, ResourceValidator, Value};

#[rustfmt::skip]
mod r4;
mod primitive;

pub struct StructuralValidator;

impl ResourceValidator for StructuralValidator {
    fn validate(resource_type: &str, resource: &Value) -> Vec<Issue> {
        match resource.as_object() {
            Some(object) => validate(resource_type, object),
            None => vec![Issue::error(
                "structure",
                "a resource must be a JSON object",
            )],
        }
    }
}

hestia_sdk::export_resource_validator!(StructuralValidator);

/// One resource type of the generated table.
pub struct ResourceDef {
    pub name: &'static str,
    /// Sorted by name.
    pub elements: &'static [Element],
}

/// One top-level element of a resource type.
pub struct Element {
    /// Without `[x]` for a choice.
    pub name: &'static str,
    pub min: u32,
    /// Maximum cardinality above 1.
    pub many: bool,
    /// A choice (`value[x]`): the JSON name is the name followed by the type, capitalized.
    pub choice: bool,
    pub types: &'static [&'static str],
}

/// The definition of a concrete R4 resource type.
pub fn resource_def(name: &str) -> Option<&'static ResourceDef> {
    r4::RESOURCES
        .binary_search_by(|r| r.name.cmp(name))
        .ok()
        .map(|i| &r4::RESOURCES[i])
}

impl ResourceDef {
    /// The element and type a JSON property name stands for: `birthDate`, or
    /// `deceasedBoolean` for the choice `deceased[x]`.
    fn element(&self, key: &str) -> Option<(&'static Element, &'static str)> {
        if let Ok(i) = self.elements.binary_search_by(|e| e.name.cmp(key)) {
            let e = &self.elements[i];
            if !e.choice {
                return Some((e, e.types.first().copied().unwrap_or("BackboneElement")));
            }
        }
        self.elements.iter().filter(|e| e.choice).find_map(|e| {
            let suffix = key.strip_prefix(e.name)?;
            let ty = e.types.iter().find(|t| capitalized_eq(t, suffix))?;
            Some((e, *ty))
        })
    }
}

/// `suffix` is `ty` with its first letter upper-cased (`dateTime` → `DateTime`).
fn capitalized_eq(ty: &str, suffix: &str) -> bool {
    let mut t = ty.chars();
    let mut s = suffix.chars();
    match (t.next(), s.next()) {
        (Some(a), Some(b)) => a.to_ascii_uppercase() == b && t.eq(s),
        _ => false,
    }
}

fn validate(expected_type: &str, resource: &Map<String, Value>) -> Vec<Issue> {
    let resource_type = match resource.get("resourceType") {
        None => return vec![Issue::required("resourceType")],
        Some(Value::String(t)) => t.as_str(),
        Some(_) => {
            return vec![
                Issue::error("structure", "resourceType must be a string").at("resourceType"),
            ];
        }
    };
    let Some(def) = resource_def(resource_type) else {
        return vec![
            Issue::error(
                "invalid",
                format!("unknown resource type `{resource_type}`"),
            )
            .at("resourceType"),
        ];
    };
    let mut issues = Vec::new();
    if resource_type != expected_type {
        issues.push(
            Issue::error(
                "invalid",
                format!(
                    "resourceType is {resource_type}, but the request is about {expected_type}"
                ),
            )
            .at("resourceType"),
        );
    }

    let mut choices_seen: Vec<(&str, &str)> = Vec::new();
    for (key, value) in resource {
        if key == "resourceType" {
            continue;
        }
        let path = format!("{resource_type}.{key}");
        let (companion, name) = match key.strip_prefix('_') {
            Some(base) => (true, base),
            None => (false, key.as_str()),
        };
        let Some((element, ty)) = def.element(name) else {
            issues.push(
                Issue::error(
                    "structure",
                    format!("{resource_type} has no element `{name}`"),
                )
                .at(path),
            );
            continue;
        };
        if companion {
            check_companion(element, ty, value, &path, &mut issues);
            continue;
        }
        if element.choice {
            if let Some((_, other)) = choices_seen
                .iter()
                .find(|(n, k)| *n == element.name && k != key)
            {
                issues.push(
                    Issue::error(
                        "structure",
                        format!("only one of {resource_type}.{}[x] may be present, not {other} and {key}", element.name),
                    )
                    .at(&path),
                );
            }
            choices_seen.push((element.name, key));
        }
        check_value(
            element,
            ty,
            value,
            &path,
            resource.contains_key(&format!("_{key}")),
            &mut issues,
        );
    }

    for element in def.elements.iter().filter(|e| e.min > 0) {
        let present = resource.keys().any(|key| {
            let name = key.strip_prefix('_').unwrap_or(key);
            def.element(name)
                .is_some_and(|(e, _)| std::ptr::eq(e, element))
        });
        if !present {
            let suffix = if element.choice { "[x]" } else { "" };
            issues.push(Issue::required(format!(
                "{resource_type}.{}{suffix}",
                element.name
            )));
        }
    }
    issues
}

/// Checks the cardinality shape and each item's type of one element.
fn check_value(
    element: &Element,
    ty: &str,
    value: &Value,
    path: &str,
    has_companion: bool,
    issues: &mut Vec<Issue>,
) {
    match (element.many, value) {
        (true, Value::Array(items)) if items.is_empty() => {
            issues.push(
                Issue::error("structure", format!("{path} must not be an empty array")).at(path),
            );
        }
        (true, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                // A null keeps the place of an item that only has an extension (`_name`).
                if item.is_null() && has_companion {
                    continue;
                }
                check_item(ty, item, &format!("{path}[{i}]"), issues);
            }
        }
        (true, _) => {
            issues.push(
                Issue::error(
                    "structure",
                    format!("{path} repeats, so it must be an array"),
                )
                .at(path),
            );
        }
        (false, Value::Array(_)) => {
            issues.push(
                Issue::error(
                    "structure",
                    format!("{path} does not repeat, so it must not be an array"),
                )
                .at(path),
            );
        }
        (false, item) => check_item(ty, item, path, issues),
    }
}

fn check_item(ty: &str, value: &Value, path: &str, issues: &mut Vec<Issue>) {
    if let Some(check) = primitive::check(ty) {
        if let Err(problem) = check(value) {
            issues.push(Issue::error("value", format!("{path}: {problem}")).at(path));
        }
    } else if !value.is_object() {
        issues.push(
            Issue::error(
                "structure",
                format!("{path} is a {ty}, so it must be a JSON object"),
            )
            .at(path),
        );
    }
}

/// `_birthDate`: the id and extensions of a primitive, an object (or an array of objects
/// and nulls for a repeating element).
fn check_companion(
    element: &Element,
    ty: &str,
    value: &Value,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    if primitive::check(ty).is_none() {
        issues.push(
            Issue::error(
                "structure",
                format!("{path}: only primitive elements have a `_` companion"),
            )
            .at(path),
        );
        return;
    }
    let ok = match value {
        Value::Object(_) => !element.many,
        Value::Array(items) => element.many && items.iter().all(|i| i.is_object() || i.is_null()),
        _ => false,
    };
    if !ok {
        let shape = if element.many {
            "an array of objects and nulls"
        } else {
            "an object"
        };
        issues.push(Issue::error("structure", format!("{path} must be {shape}")).at(path));
    }
}

#[cfg(test)]
mod tests;
