use hestia_sdk::{Issue, ResourceValidator, Severity, Value, json};

use super::StructuralValidator;

/// Renders issues as `code expression: diagnostics` lines.
fn render(issues: &[Issue]) -> Vec<String> {
    issues
        .iter()
        .map(|i| {
            let severity = match i.severity {
                Severity::Fatal => "fatal",
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Information => "information",
            };
            format!(
                "{severity} {} {}: {}",
                i.code,
                i.expression.as_deref().unwrap_or("-"),
                i.diagnostics
            )
        })
        .collect()
}

fn check(resource: Value, expected: &[&str]) {
    let resource_type = resource["resourceType"]
        .as_str()
        .unwrap_or("Patient")
        .to_string();
    let issues = StructuralValidator::validate(&resource_type, &resource);
    assert_eq!(render(&issues), expected, "{resource}");
}

#[test]
fn real_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let resource: Value = hestia_sdk::serde_json::from_str(&text).unwrap();
        let resource_type = resource["resourceType"].as_str().unwrap().to_string();
        let issues = hestia_sdk::validate_json::<StructuralValidator>(&resource_type, &text);
        assert_eq!(render(&issues), Vec::<String>::new(), "{}", path.display());
        count += 1;
    }
    assert!(count >= 10, "only {count} examples in {}", dir.display());
}

#[test]
fn resource_type() {
    check(
        json!({"id": "x"}),
        &["error required resourceType: resourceType is required"],
    );
    check(
        json!({"resourceType": "Patinet"}),
        &["error invalid resourceType: unknown resource type `Patinet`"],
    );
    check(
        json!({"resourceType": "DomainResource"}),
        &["error invalid resourceType: unknown resource type `DomainResource`"],
    );
    check(
        json!({"resourceType": 3}),
        &["error structure resourceType: resourceType must be a string"],
    );
    let issues = StructuralValidator::validate("Observation", &json!({"resourceType": "Patient"}));
    assert_eq!(
        render(&issues),
        [
            "error invalid resourceType: resourceType is Patient, but the request is about Observation"
        ]
    );
}

#[test]
fn ids() {
    check(json!({"resourceType": "Patient", "id": "pat-1.a"}), &[]);
    check(
        json!({"resourceType": "Patient", "id": "pat 1"}),
        &["error value Patient.id: Patient.id: \"pat 1\" is not an id ([A-Za-z0-9-.]{1,64})"],
    );
    check(
        json!({"resourceType": "Patient", "id": 7}),
        &["error value Patient.id: Patient.id: 7 is not an id ([A-Za-z0-9-.]{1,64})"],
    );
}

#[test]
fn required_elements() {
    check(
        json!({"resourceType": "Observation"}),
        &[
            "error required Observation.code: Observation.code is required",
            "error required Observation.status: Observation.status is required",
        ],
    );
    check(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        &[],
    );
    // A required primitive may be present only through its extension.
    check(
        json!({"resourceType": "Observation", "_status": {"extension": []}, "code": {"text": "x"}}),
        &[],
    );
    // A required choice: any one variant.
    check(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 1}}),
        &[],
    );
    check(
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": {"reference": "Patient/1"}}),
        &[
            "error required MedicationRequest.medication[x]: MedicationRequest.medication[x] is required",
        ],
    );
}

#[test]
fn primitive_formats() {
    check(
        json!({"resourceType": "Patient", "birthDate": "1974-12-25", "active": true, "gender": "male"}),
        &[],
    );
    check(
        json!({"resourceType": "Patient", "birthDate": "25/12/1974"}),
        &[
            "error value Patient.birthDate: Patient.birthDate: \"25/12/1974\" is not a date (YYYY, YYYY-MM or YYYY-MM-DD)",
        ],
    );
    check(
        json!({"resourceType": "Patient", "active": "yes"}),
        &["error value Patient.active: Patient.active: \"yes\" is not a JSON boolean"],
    );
    check(
        json!({"resourceType": "Patient", "deceasedDateTime": "2015-02-07T13:28:17"}),
        &[
            "error value Patient.deceasedDateTime: Patient.deceasedDateTime: \"2015-02-07T13:28:17\" is not a dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)",
        ],
    );
    check(
        json!({"resourceType": "Patient", "multipleBirthInteger": 1.5}),
        &[
            "error value Patient.multipleBirthInteger: Patient.multipleBirthInteger: 1.5 is not an integer",
        ],
    );
    check(
        json!({"resourceType": "Observation", "status": " final", "code": {}, "issued": "2015-02-07"}),
        &[
            "error value Observation.issued: Observation.issued: \"2015-02-07\" is not an instant (YYYY-MM-DDThh:mm:ss(.sss)Z or ±hh:mm)",
            "error value Observation.status: Observation.status: \" final\" is not a code (no leading, trailing or double whitespace)",
        ],
    );
    check(
        json!({"resourceType": "Patient", "implicitRules": "http://example.org/rules x"}),
        &[
            "error value Patient.implicitRules: Patient.implicitRules: \"http://example.org/rules x\" is not a URI without whitespace",
        ],
    );
    // A no-break space is not whitespace to the R4 expressions (R4 CodeSystem/v2-0550 has
    // such codes); a tab is.
    check(
        json!({"resourceType": "Observation", "status": "final\u{a0}", "code": {}}),
        &[],
    );
    check(
        json!({"resourceType": "Observation", "status": "fi\tnal", "code": {}}),
        &[
            "error value Observation.status: Observation.status: \"fi\\tnal\" is not a code (no leading, trailing or double whitespace)",
        ],
    );
}

#[test]
fn structure() {
    check(
        json!({"resourceType": "Patient", "nmae": [{"family": "Chalmers"}]}),
        &["error structure Patient.nmae: Patient has no element `nmae`"],
    );
    check(
        json!({"resourceType": "Patient", "name": {"family": "Chalmers"}}),
        &["error structure Patient.name: Patient.name repeats, so it must be an array"],
    );
    check(
        json!({"resourceType": "Patient", "name": []}),
        &["error structure Patient.name: Patient.name must not be an empty array"],
    );
    check(
        json!({"resourceType": "Patient", "gender": ["male"]}),
        &[
            "error structure Patient.gender: Patient.gender does not repeat, so it must not be an array",
        ],
    );
    check(
        json!({"resourceType": "Patient", "name": ["Chalmers"]}),
        &[
            "error structure Patient.name[0]: Patient.name[0] is a HumanName, so it must be a JSON object",
        ],
    );
    check(
        json!({"resourceType": "Patient", "deceasedBoolean": false, "deceasedDateTime": "2020"}),
        &[
            "error structure Patient.deceasedDateTime: only one of Patient.deceased[x] may be present, not deceasedBoolean and deceasedDateTime",
        ],
    );
    check(
        json!({"resourceType": "Patient", "deceasedString": "no"}),
        &["error structure Patient.deceasedString: Patient has no element `deceasedString`"],
    );
    check(
        json!({"resourceType": "Patient", "_birthDate": {"extension": [{"url": "http://x", "valueString": "y"}]}}),
        &[],
    );
    check(
        json!({"resourceType": "Patient", "_birthDate": "x"}),
        &["error structure Patient._birthDate: Patient._birthDate must be an object"],
    );
    check(
        json!({"resourceType": "Patient", "_name": {}}),
        &[
            "error structure Patient._name: Patient._name: only primitive elements have a `_` companion",
        ],
    );
}

/// Backbone elements and complex datatypes are checked like the resource, at any depth,
/// each issue at its FHIRPath-like location.
#[test]
fn nested_elements() {
    check(
        json!({"resourceType": "Patient",
               "identifier": [{"system": "urn:oid:1.2.3", "value": "1"}, {"system": "not a uri", "value": "2"}],
               "contact": [{"period": {"start": "yesterday"}}],
               "name": [{"famly": "Doe"}]}),
        &[
            "error value Patient.contact[0].period.start: Patient.contact[0].period.start: \"yesterday\" is not a dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)",
            "error value Patient.identifier[1].system: Patient.identifier[1].system: \"not a uri\" is not a URI without whitespace",
            "error structure Patient.name[0].famly: Patient.name[0] has no element `famly`",
        ],
    );
    check(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
        "component": [
            {"code": {"text": "systolic"}, "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
            {"code": {"text": "diastolic"}, "valueQuantity": {"value": "80"}},
            {"valueString": "x"}
        ]}),
        &[
            "error value Observation.component[1].valueQuantity.value: Observation.component[1].valueQuantity.value: \"80\" is not a JSON number",
            "error required Observation.component[2].code: Observation.component[2].code is required",
        ],
    );
    // Extensions are a datatype too (`url` is required), and recursive definitions
    // (`Questionnaire.item.item`) are followed.
    check(
        json!({"resourceType": "Questionnaire", "status": "draft",
               "extension": [{"valueBoolean": true}],
               "item": [{"linkId": "1", "type": "group", "item": [{"type": "string", "text": "name"}]}]}),
        &[
            "error required Questionnaire.extension[0].url: Questionnaire.extension[0].url is required",
            "error required Questionnaire.item[0].item[0].linkId: Questionnaire.item[0].item[0].linkId is required",
        ],
    );
    check(
        json!({"resourceType": "Patient", "communication": [{"preferred": true}],
               "contact": [{"name": {"family": ["Doe"]}}]}),
        &[
            "error required Patient.communication[0].language: Patient.communication[0].language is required",
            "error structure Patient.contact[0].name.family: Patient.contact[0].name.family does not repeat, so it must not be an array",
        ],
    );
}

/// Resources inside a resource (contained, Bundle entries) are walked by their own type.
#[test]
fn resources_inside_resources() {
    check(
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/1"}, "medicationReference": {"reference": "#med"},
               "contained": [{"resourceType": "Medication", "id": "med", "code": {"text": "aspirin"}}]}),
        &[],
    );
    check(
        json!({"resourceType": "Patient",
        "contained": [
            {"resourceType": "Practitioner", "id": "dr", "birthDate": "soon", "nmae": []},
            {"id": "x"},
            {"resourceType": "Doctor"},
            {"resourceType": "Observation", "status": "final"}
        ]}),
        &[
            "error value Patient.contained[0].birthDate: Patient.contained[0].birthDate: \"soon\" is not a date (YYYY, YYYY-MM or YYYY-MM-DD)",
            "error structure Patient.contained[0].nmae: Patient.contained[0] has no element `nmae`",
            "error required Patient.contained[1].resourceType: Patient.contained[1].resourceType is required",
            "error invalid Patient.contained[2].resourceType: unknown resource type `Doctor`",
            "error required Patient.contained[3].code: Patient.contained[3].code is required",
        ],
    );
    check(
        json!({"resourceType": "Bundle", "type": "collection",
               "entry": [{"resource": {"resourceType": "Patient", "gender": " male"}}]}),
        &[
            "error value Bundle.entry[0].resource.gender: Bundle.entry[0].resource.gender: \" male\" is not a code (no leading, trailing or double whitespace)",
        ],
    );
}

#[test]
fn not_json_objects() {
    let render_json = |text: &str| {
        render(&hestia_sdk::validate_json::<StructuralValidator>(
            "Patient", text,
        ))
    };
    assert_eq!(
        render_json("[]"),
        ["error structure -: a resource must be a JSON object"]
    );
    assert!(
        render_json("{")
            .first()
            .is_some_and(|l| l.starts_with("error structure -: the resource is not valid JSON"))
    );
}

/// An example of the R4 package that is itself invalid: its `base` (1..*) is missing.
#[test]
fn real_invalid_example() {
    let text =
        include_str!("../tests/invalid/SearchParameter-valueset-extensions-ValueSet-author.json");
    let issues = hestia_sdk::validate_json::<StructuralValidator>("SearchParameter", text);
    assert_eq!(
        render(&issues),
        ["error required SearchParameter.base: SearchParameter.base is required"]
    );
}
