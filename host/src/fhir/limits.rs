//! Bounds on what one request may build, checked without recursion: JSON nesting and size
//! of a patched resource, and Bundle entries. A value nested too deeply would overflow the
//! stack wherever it is walked recursively (serialisation, indexing, even its `Drop`), so a
//! JSON Patch is applied one operation at a time and each operation's result is measured
//! before the next one can double it.

use serde_json::Value;

use super::error::FhirError;
use super::outcome::Issue;

/// The request limits the repository applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `fhir.max_json_depth`: nested arrays and objects in a resource (the resource's own
    /// object counts as one).
    pub max_json_depth: usize,
    /// `fhir.max_bundle_entries`: entries of a batch or transaction Bundle.
    pub max_bundle_entries: usize,
    /// `fhir.max_body_bytes`: the size (as compact JSON, about) a patched resource may
    /// reach: no more than a client could send in a `PUT`.
    pub max_resource_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let server = crate::config::RequestLimits::default();
        Self {
            max_json_depth: server.max_json_depth,
            max_bundle_entries: server.max_bundle_entries,
            max_resource_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Which bound a value went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    Depth,
    Size,
}

/// Walks `value`, found `level` containers deep, until it is known to nest deeper than
/// `max_depth` or to take more than `max_bytes`; otherwise returns its size in bytes as
/// compact JSON (numbers counted as 8).
fn measure(
    value: &Value,
    level: usize,
    max_depth: usize,
    max_bytes: usize,
) -> Result<usize, Exceeded> {
    let mut bytes = 0usize;
    let mut stack = vec![(value, level)];
    while let Some((value, level)) = stack.pop() {
        bytes += match value {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                if level + 1 > max_depth {
                    return Err(Exceeded::Depth);
                }
                stack.extend(items.iter().map(|v| (v, level + 1)));
                2 + items.len()
            }
            Value::Object(map) => {
                if level + 1 > max_depth {
                    return Err(Exceeded::Depth);
                }
                stack.extend(map.values().map(|v| (v, level + 1)));
                2 + map.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        };
        if bytes > max_bytes {
            return Err(Exceeded::Size);
        }
    }
    Ok(bytes)
}

fn unprocessable(diagnostics: String) -> FhirError {
    FhirError::Unprocessable(vec![Issue::error("too-costly", diagnostics)])
}

impl Limits {
    /// Applies a JSON Patch to `doc` one operation at a time. After each operation that
    /// puts a value somewhere (add, replace, copy, move), the value at its target is
    /// measured: the resource may nest at most `max_json_depth` deep, and what the
    /// operations put in, with the resource it started from, at most `max_resource_bytes`.
    /// On error `doc` is half patched and must be discarded.
    pub fn apply_patch(&self, doc: &mut Value, patch: &json_patch::Patch) -> Result<(), FhirError> {
        use json_patch::PatchOperation as Op;
        let mut bytes = measure(doc, 0, usize::MAX, usize::MAX).unwrap_or(usize::MAX);
        for (index, op) in patch.0.iter().enumerate() {
            json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(|e| {
                FhirError::Unprocessable(vec![Issue::error(
                    "processing",
                    format!(
                        "the patch cannot be applied: operation '/{index}' failed at path '{}': {}",
                        e.path, e.kind
                    ),
                )])
            })?;
            if matches!(op, Op::Remove(_) | Op::Test(_)) {
                continue;
            }
            let (target, level) = target_of(doc, op.path().as_ref());
            let budget = self.max_resource_bytes.saturating_sub(bytes);
            match measure(target, level, self.max_json_depth, budget) {
                Ok(added) => bytes += added,
                Err(Exceeded::Depth) => {
                    return Err(unprocessable(format!(
                        "operation '/{index}' of the patch nests the resource more than {max} levels deep at {}; at most {max} are allowed (fhir.max_json_depth)",
                        op.path(),
                        max = self.max_json_depth
                    )));
                }
                Err(Exceeded::Size) => {
                    return Err(unprocessable(format!(
                        "operation '/{index}' of the patch makes the resource larger than {} bytes, the most allowed (fhir.max_body_bytes)",
                        self.max_resource_bytes
                    )));
                }
            }
        }
        Ok(())
    }

    /// Refuses a Bundle of more than `max_bundle_entries` entries.
    pub fn check_bundle_entries(&self, entries: usize) -> Result<(), FhirError> {
        if entries <= self.max_bundle_entries {
            return Ok(());
        }
        Err(FhirError::PayloadTooLarge(format!(
            "the Bundle has {entries} entries; at most {} are allowed (fhir.max_bundle_entries)",
            self.max_bundle_entries
        )))
    }
}

/// The value an operation wrote at `pointer` and how many containers hold it. An append
/// (`/list/-`) names no value: its container is measured instead.
fn target_of<'a>(doc: &'a Value, pointer: &str) -> (&'a Value, usize) {
    let mut pointer = pointer;
    loop {
        if let Some(value) = doc.pointer(pointer) {
            return (value, pointer.matches('/').count());
        }
        match pointer.rfind('/') {
            Some(i) => pointer = &pointer[..i],
            None => return (doc, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(ops: Value) -> json_patch::Patch {
        serde_json::from_value(ops).unwrap()
    }

    fn limits(depth: usize, bytes: usize) -> Limits {
        Limits {
            max_json_depth: depth,
            max_bundle_entries: 10,
            max_resource_bytes: bytes,
        }
    }

    #[test]
    fn nesting_is_counted_from_the_resource_object() {
        let mut doc = json!({"a": {}});
        let ok = patch(json!([{"op": "add", "path": "/a/b", "value": {"c": [1]}}]));
        limits(4, 1000).apply_patch(&mut doc, &ok).unwrap();
        assert_eq!(doc, json!({"a": {"b": {"c": [1]}}}));
        let deeper = patch(json!([{"op": "add", "path": "/a/b/c/-", "value": [[]]}]));
        let err = limits(4, 1000).apply_patch(&mut doc, &deeper).unwrap_err();
        assert!(
            err.to_string()
                .contains("more than 4 levels deep at /a/b/c/-")
                && err.to_string().contains("(fhir.max_json_depth)"),
            "{err}"
        );
    }

    #[test]
    fn doubling_copies_stop_at_the_first_operation_past_a_bound() {
        let mut ops = Vec::new();
        for _ in 0..64 {
            ops.push(json!({"op": "copy", "from": "/a", "path": "/a/x"}));
        }
        let mut doc = json!({"a": {"v": 1}});
        let err = limits(20, usize::MAX)
            .apply_patch(&mut doc, &patch(Value::Array(ops.clone())))
            .unwrap_err();
        assert!(err.to_string().contains("operation '/18'"), "{err}");

        let wide: Vec<Value> = (0..64)
            .map(|i| json!({"op": "copy", "from": "/a", "path": format!("/a/x{i}")}))
            .collect();
        let mut doc = json!({"a": {"v": "0123456789"}});
        let err = limits(127, 100_000)
            .apply_patch(&mut doc, &patch(Value::Array(wide)))
            .unwrap_err();
        assert!(err.to_string().contains("(fhir.max_body_bytes)"), "{err}");
    }

    #[test]
    fn failing_operations_are_named_as_before() {
        let mut doc = json!({"a": 1});
        let err = Limits::default()
            .apply_patch(
                &mut doc,
                &patch(json!([{"op": "test", "path": "/a", "value": 1}, {"op": "test", "path": "/a", "value": 2}])),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("operation '/1' failed at path '/a': value did not match"),
            "{err}"
        );
    }
}
