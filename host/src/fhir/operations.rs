//! FHIR operations: `$validate` (R4 `Resource-validate`) and `Patient/[id]/$everything`
//! (R4 `Patient-everything`). Plain types in and out, like the repository.

use serde_json::{Map, Value};

use super::access::Access;
use super::definitions::ResourceType;
use super::error::FhirError;
use super::outcome::Issue;
use super::repository::{Repository, check_id};
use super::search::extract;
use super::searchset::{self, TypeAccess};

/// What a `$validate` request asks: the resource, and the `mode` and `profile` parameters.
struct ValidateInput {
    resource: Map<String, Value>,
    mode: Option<String>,
    profile: Option<String>,
}

/// Reads a `$validate` body: the resource itself, or a `Parameters` resource with a
/// `resource` parameter (and optional `mode` and `profile`).
fn validate_input(body: &[u8], resource_type: ResourceType) -> Result<ValidateInput, FhirError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        FhirError::BadRequest(vec![Issue::error(
            "structure",
            format!("the body is not valid JSON, so it cannot be validated: {e}"),
        )])
    })?;
    let Value::Object(object) = value else {
        return Err(FhirError::BadRequest(vec![Issue::error(
            "structure",
            "the body must be a JSON object: a resource, or Parameters with a resource parameter",
        )]));
    };
    let is_parameters = object.get("resourceType").and_then(Value::as_str) == Some("Parameters")
        && resource_type.as_str() != "Parameters";
    if !is_parameters {
        return Ok(ValidateInput {
            resource: object,
            mode: None,
            profile: None,
        });
    }
    let mut input = ValidateInput {
        resource: Map::new(),
        mode: None,
        profile: None,
    };
    let mut found = false;
    let parameters = object
        .get("parameter")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for p in parameters {
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| p.get(*k).and_then(Value::as_str))
                .map(str::to_string)
        };
        match p.get("name").and_then(Value::as_str) {
            Some("resource") => match p.get("resource") {
                Some(Value::Object(r)) => {
                    input.resource = r.clone();
                    found = true;
                }
                _ => {
                    return Err(FhirError::BadRequest(vec![
                        Issue::error("required", "the resource parameter holds no resource")
                            .at("Parameters.parameter.resource"),
                    ]));
                }
            },
            Some("mode") => input.mode = text(&["valueCode", "valueString"]),
            Some("profile") => input.profile = text(&["valueUri", "valueCanonical"]),
            _ => {}
        }
    }
    if !found {
        return Err(FhirError::BadRequest(vec![Issue::error(
            "required",
            "a Parameters body of $validate needs a parameter named resource",
        )]));
    }
    Ok(input)
}

impl Repository {
    /// `POST [base]/[type]/$validate` and `POST [base]/[type]/[id]/$validate`: the checks a
    /// create or update would make (JSON shape, `resourceType`, the id of an instance, what
    /// the index needs, and the resource-validator plugins), without storing anything.
    ///
    /// Following R4 `Resource-validate`, the answer is 200 with an OperationOutcome
    /// whether or not the resource is valid: an error-level issue means the resource would
    /// be refused. An error status (400) means the validation itself could not run: the
    /// body is not JSON, not an object, or a `Parameters` without a `resource`, or `mode`
    /// is not `create` or `update`. A clean resource gets one information issue.
    ///
    /// Instance `$validate` does not read the stored resource (it compares only the ids),
    /// so it reveals nothing about what is stored.
    pub fn validate_operation(
        &self,
        resource_type: ResourceType,
        id: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<Issue>, FhirError> {
        if let Some(id) = id {
            check_id(id)?;
        }
        let input = validate_input(body, resource_type)?;
        let update = match input.mode.as_deref() {
            None => id.is_some(),
            Some("create") => false,
            Some("update") => true,
            Some(other) => {
                return Err(FhirError::invalid(format!(
                    "$validate mode {other:?} is not supported here (create or update)"
                )));
            }
        };
        let resource = input.resource;
        let ty = resource_type.as_str();
        let mut issues = Vec::new();
        match resource.get("resourceType") {
            Some(Value::String(t)) if t == ty => {}
            Some(Value::String(t)) => issues.push(
                Issue::error(
                    "invalid",
                    format!("the resource's resourceType {t:?} does not match the URL's resource type {ty:?}"),
                )
                .at("resourceType"),
            ),
            _ => issues.push(Issue::error("required", "the resource has no resourceType").at("resourceType")),
        }
        match (resource.get("id"), id) {
            (Some(Value::String(body_id)), Some(id)) if body_id != id => issues.push(
                Issue::error(
                    "invalid",
                    format!("the resource's id {body_id:?} does not match the URL's id {id:?}"),
                )
                .at("id"),
            ),
            (None, _) if update => {
                issues.push(Issue::error("required", "an update needs the resource's id").at("id"))
            }
            (Some(v), _) if !v.is_string() => {
                issues.push(Issue::error("structure", "id must be a string").at("id"))
            }
            _ => {}
        }
        if resource.get("meta").is_some_and(|m| !m.is_object()) {
            issues.push(Issue::error("structure", "meta must be an object").at("meta"));
        }
        if issues.is_empty() {
            // Only a resource of the right type is handed to the index and the plugins.
            if let Err(e) = extract(&Value::Object(resource.clone())) {
                issues.push(Issue::error("invalid", e.to_string()));
            }
            issues.extend(self.validate(resource_type, &resource));
        }
        if let Some(profile) = input.profile {
            issues.push(Issue::warning(
                "not-supported",
                format!("the profile {profile} was not checked: this server validates against the base R4 definitions and its validator plugins only"),
            ));
        }
        if issues.is_empty() {
            issues.push(Issue::information(
                "informational",
                format!("no issues: the {ty} passes the server's checks and validator plugins"),
            ));
        }
        Ok(issues)
    }

    /// `GET [base]/Patient/[id]/$everything`: the patient and its compartment as a
    /// `searchset` Bundle, with the resources they refer to. See
    /// [`searchset::everything`] for what is included and how `access` applies.
    pub async fn everything(
        &self,
        patient: &str,
        params: &[(String, String)],
        access: &Access,
        type_access: TypeAccess<'_>,
    ) -> Result<Value, FhirError> {
        let patient_type = super::repository::resource_type("Patient")?;
        // The patient must exist and be visible: 404/410, or 403 under another patient's access.
        self.read_with(None, patient_type, patient, access).await?;
        searchset::everything(
            self.store(),
            &self.options().base_url,
            patient,
            params,
            access,
            type_access,
            self.options().search_limits.max_included,
        )
        .await
    }
}
