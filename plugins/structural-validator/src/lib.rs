//! The default resource validator: structural checks from the FHIR R4 definitions.
//!
//! - `resourceType` is present, a known concrete R4 resource type, and the type the
//!   request is about (code `invalid` otherwise).
//!
//! At every level — the resource, its backbone elements (`Patient.contact`), the complex
//! datatypes they use (`Identifier`, `Period`, `Quantity`, …, recursively) and their
//! extensions:
//!
//! - every element is one the definition has (a choice element with one of its types,
//!   `valueQuantity`; a primitive's `_element` companion), and only one variant of a choice
//!   is present (code `structure`);
//! - repeating elements are non-empty arrays, the others are not arrays; complex elements
//!   are JSON objects (code `structure`);
//! - required elements (minimum cardinality 1 or more) are present (code `required`);
//! - primitives have their JSON type and format: `boolean`, `integer`, `positiveInt`,
//!   `unsignedInt`, `decimal`, `string`, `markdown`, `code`, `id`, `uri`, `url`,
//!   `canonical`, `oid`, `uuid`, `date`, `dateTime`, `instant`, `time`, `base64Binary`,
//!   `xhtml` (code `value`).
//!
//! Each issue's location is a FHIRPath-like expression (`Patient.identifier[0].system`).
//! Contained resources and other `Resource`-typed elements (`Bundle.entry.resource`,
//! `Parameters.parameter.resource`) are walked by the definition their own `resourceType`
//! names (`Patient.contained[0].code`). Terminology bindings and invariants are not
//! checked. The tables of resource types and
//! datatypes are generated (`gen/`).
//!
//! Speed: this runs on every write. The body is parsed into a tree that borrows its
//! strings from the text ([`json`]), not into a `serde_json::Value`. The path of an element
//! is kept in one buffer that grows and shrinks as the walk goes (no string per element),
//! and strings are built only for issues. Issues come in document order.

use hestia_sdk::{Issue, ResourceValidator, Value};
use json::{Json, Members};
use primitive::Prim;

#[rustfmt::skip]
mod r4;
pub mod json;
mod primitive;

pub struct StructuralValidator;

impl ResourceValidator for StructuralValidator {
    fn validate(resource_type: &str, resource: &Value) -> Vec<Issue> {
        validate_tree(resource_type, &Json::from(resource))
    }

    fn validate_json(resource_type: &str, resource_json: &str) -> Vec<Issue> {
        match Json::parse(resource_json) {
            Ok(resource) => validate_tree(resource_type, &resource),
            Err(e) => vec![Issue::not_json(&e)],
        }
    }
}

fn validate_tree(resource_type: &str, resource: &Json<'_>) -> Vec<Issue> {
    match resource.as_object() {
        Some(members) => validate(resource_type, members),
        None => vec![Issue::not_an_object()],
    }
}

hestia_sdk::export_resource_validator!(StructuralValidator);

/// One resource type or complex datatype of the generated tables.
pub struct ResourceDef {
    pub name: &'static str,
    /// Sorted by name.
    pub elements: &'static [Element],
}

/// One element of a definition.
pub struct Element {
    /// Without `[x]` for a choice.
    pub name: &'static str,
    pub min: u32,
    /// Maximum cardinality above 1.
    pub many: bool,
    /// A choice (`value[x]`): the JSON name is the name followed by the type, capitalized.
    pub choice: bool,
    pub types: &'static [Type],
}

/// One type an element may have: its code, and what it is.
pub struct Type {
    pub name: &'static str,
    pub kind: Kind,
}

/// A type, resolved by the generator so that the walk compares no type names.
pub enum Kind {
    Primitive(Prim),
    /// A backbone element's own elements (or an `Element`-typed group's, `Timing.repeat`),
    /// or a complex datatype's; sorted by name.
    Complex(&'static [Element]),
    /// A resource of any type (contained resources, Bundle entries): walked by the
    /// definition its `resourceType` names.
    Resource,
    /// Not looked into (an element whose definition names no type).
    Opaque,
}

/// The type of an element whose definition names none.
static OPAQUE: Type = Type {
    name: "BackboneElement",
    kind: Kind::Opaque,
};

/// `a.cmp(b)`, deciding by the first byte where it can: most comparisons of a binary
/// search differ there, and a `memcmp` call per comparison was half of a walk's time.
fn name_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

fn find(table: &'static [ResourceDef], name: &str) -> Option<&'static ResourceDef> {
    table
        .binary_search_by(|r| name_cmp(r.name, name))
        .ok()
        .map(|i| &table[i])
}

/// The definition of a concrete R4 resource type.
pub fn resource_def(name: &str) -> Option<&'static ResourceDef> {
    find(r4::RESOURCES, name)
}

/// The definition of a complex R4 datatype (`Identifier`, `Period`, …).
pub fn datatype_def(name: &str) -> Option<&'static ResourceDef> {
    find(r4::DATATYPES, name)
}

/// The element and type a JSON property name stands for among `elements`: `birthDate`, or
/// `deceasedBoolean` for the choice `deceased[x]`.
fn element_of(
    elements: &'static [Element],
    key: &str,
) -> Option<(&'static Element, &'static Type)> {
    if let Ok(i) = elements.binary_search_by(|e| name_cmp(e.name, key)) {
        let e = &elements[i];
        if !e.choice {
            return Some((e, e.types.first().unwrap_or(&OPAQUE)));
        }
    }
    elements.iter().filter(|e| e.choice).find_map(|e| {
        let suffix = key.strip_prefix(e.name)?;
        let ty = e.types.iter().find(|t| capitalized_eq(t.name, suffix))?;
        Some((e, ty))
    })
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

fn validate(expected_type: &str, resource: &Members<'_>) -> Vec<Issue> {
    let mut walk = Walk {
        path: String::with_capacity(64),
        issues: Vec::new(),
    };
    walk.resource(resource, Some(expected_type));
    walk.issues
}

/// The walk over one resource: where it is, and what it found.
struct Walk {
    /// The current location, `Patient.contact[0].name`; grows and shrinks with the walk.
    path: String,
    issues: Vec<Issue>,
}

impl Walk {
    fn error(&mut self, code: &str, diagnostics: String) {
        let issue = Issue::error(code, diagnostics).at(self.path.as_str());
        self.issues.push(issue);
    }

    /// Runs `f` with `.key` appended to the path. (`push_str`, not `write!`: the
    /// formatting machinery cost more than the rest of a small resource's walk.)
    fn at(&mut self, key: &str, f: impl FnOnce(&mut Walk)) {
        let len = self.path.len();
        self.path.push('.');
        self.path.push_str(key);
        f(self);
        self.path.truncate(len);
    }

    /// Runs `f` with `[i]` appended to the path.
    fn at_index(&mut self, i: usize, f: impl FnOnce(&mut Walk)) {
        let len = self.path.len();
        self.path.push('[');
        if i < 10 {
            self.path.push(char::from(b'0' + i as u8));
        } else {
            self.path.push_str(&i.to_string());
        }
        self.path.push(']');
        f(self);
        self.path.truncate(len);
    }

    /// A resource: the one validated (the path is empty, and becomes its type), or one
    /// inside it (the path is where it is, `Patient.contained[0]`). Without a known
    /// `resourceType` its elements cannot be checked.
    fn resource(&mut self, object: &Members<'_>, expected_type: Option<&str>) {
        let top = self.path.is_empty();
        let at = |w: &Walk| {
            if top {
                "resourceType".to_string()
            } else {
                format!("{}.resourceType", w.path)
            }
        };
        let resource_type = match json::get(object, "resourceType") {
            Some(Json::String(t)) => t.as_ref(),
            None => {
                self.issues.push(Issue::required(at(self)));
                return;
            }
            Some(_) => {
                let issue = Issue::error("structure", "resourceType must be a string").at(at(self));
                self.issues.push(issue);
                return;
            }
        };
        let Some(def) = resource_def(resource_type) else {
            let message = format!("unknown resource type `{resource_type}`");
            let issue = Issue::error("invalid", message).at(at(self));
            self.issues.push(issue);
            return;
        };
        if let Some(expected) = expected_type.filter(|e| *e != resource_type) {
            let message =
                format!("resourceType is {resource_type}, but the request is about {expected}");
            let issue = Issue::error("invalid", message).at(at(self));
            self.issues.push(issue);
        }
        if top {
            self.path.push_str(resource_type);
        }
        self.object(def.elements, object, true);
    }

    /// The elements of one object (the resource, a backbone element, a datatype value)
    /// against their definitions; `resource` skips `resourceType`.
    fn object(&mut self, elements: &'static [Element], object: &Members<'_>, resource: bool) {
        let mut choices_seen: Vec<(&str, &str)> = Vec::new();
        for (key, value) in object {
            let key = key.as_ref();
            if resource && key == "resourceType" {
                continue;
            }
            let (companion, name) = match key.strip_prefix('_') {
                Some(base) => (true, base),
                None => (false, key),
            };
            let Some((element, ty)) = element_of(elements, name) else {
                let owner = self.path.clone();
                self.at(key, |w| {
                    w.error("structure", format!("{owner} has no element `{name}`"));
                });
                continue;
            };
            if companion {
                self.at(key, |w| w.companion(element, ty, value));
                continue;
            }
            if element.choice {
                if let Some((_, other)) = choices_seen
                    .iter()
                    .find(|(n, k)| *n == element.name && *k != key)
                {
                    let message = format!(
                        "only one of {}.{}[x] may be present, not {other} and {key}",
                        self.path, element.name
                    );
                    self.at(key, |w| w.error("structure", message));
                }
                choices_seen.push((element.name, key));
            }
            self.at(key, |w| {
                w.value(element, ty, value, || {
                    object
                        .iter()
                        .find(|(k, _)| k.strip_prefix('_') == Some(key))
                        .map(|(_, v)| v)
                });
            });
        }

        for element in elements.iter().filter(|e| e.min > 0) {
            let present = object.iter().any(|(key, _)| {
                let name = key.strip_prefix('_').unwrap_or(key);
                element_of(elements, name).is_some_and(|(e, _)| std::ptr::eq(e, element))
            });
            if !present {
                let suffix = if element.choice { "[x]" } else { "" };
                let expression = format!("{}.{}{suffix}", self.path, element.name);
                self.issues.push(Issue::required(expression));
            }
        }
    }

    /// The cardinality shape and each item of one element. `companion` finds the element's
    /// `_key` companion, looked up only when a null item asks for it.
    fn value<'v>(
        &mut self,
        element: &'static Element,
        ty: &'static Type,
        value: &'v Json<'v>,
        companion: impl Fn() -> Option<&'v Json<'v>>,
    ) {
        match (element.many, value) {
            (true, Json::Array(items)) if items.is_empty() => {
                let message = format!("{} must not be an empty array", self.path);
                self.error("structure", message);
            }
            (true, Json::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    // A null keeps the place of an item that only has an extension (`_name`).
                    if item.is_null() && companion().is_some() {
                        continue;
                    }
                    self.at_index(i, |w| w.item(ty, item));
                }
            }
            (true, _) => {
                let message = format!("{} repeats, so it must be an array", self.path);
                self.error("structure", message);
            }
            (false, Json::Array(_)) => {
                let message = format!("{} does not repeat, so it must not be an array", self.path);
                self.error("structure", message);
            }
            (false, item) => self.item(ty, item),
        }
    }

    fn item(&mut self, ty: &'static Type, value: &Json<'_>) {
        if let Kind::Primitive(prim) = ty.kind {
            if let Err(problem) = prim.check()(value) {
                let message = format!("{}: {problem}", self.path);
                self.error("value", message);
            }
            return;
        }
        let Json::Object(object) = value else {
            let message = format!(
                "{} is a {}, so it must be a JSON object",
                self.path, ty.name
            );
            self.error("structure", message);
            return;
        };
        match ty.kind {
            Kind::Complex(elements) => self.object(elements, object, false),
            Kind::Resource => self.resource(object, None),
            Kind::Primitive(_) | Kind::Opaque => {}
        }
    }

    /// `_birthDate`: the id and extensions of a primitive, an object (or an array of
    /// objects and nulls for a repeating element).
    fn companion(&mut self, element: &Element, ty: &Type, value: &Json<'_>) {
        if !matches!(ty.kind, Kind::Primitive(_)) {
            let message = format!(
                "{}: only primitive elements have a `_` companion",
                self.path
            );
            self.error("structure", message);
            return;
        }
        let ok = match value {
            Json::Object(_) => !element.many,
            Json::Array(items) => {
                element.many && items.iter().all(|i| i.is_object() || i.is_null())
            }
            _ => false,
        };
        if !ok {
            let shape = if element.many {
                "an array of objects and nulls"
            } else {
                "an object"
            };
            let message = format!("{} must be {shape}", self.path);
            self.error("structure", message);
        }
    }
}

#[cfg(test)]
mod tests;
