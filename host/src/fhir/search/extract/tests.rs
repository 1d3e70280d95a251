use serde_json::{Value, json};

use super::*;
use crate::fhir::search::value::format_instant;

/// Example resources from `hl7.fhir.r4.examples@4.0.1` (CC0), unchanged.
fn fixture(name: &str) -> Value {
    let text = match name {
        "Patient-example" => include_str!("../../../../fhir-defs/testdata/Patient-example.json"),
        "Observation-example" => {
            include_str!("../../../../fhir-defs/testdata/Observation-example.json")
        }
        "Observation-blood-pressure" => {
            include_str!("../../../../fhir-defs/testdata/Observation-blood-pressure.json")
        }
        "Condition-example" => {
            include_str!("../../../../fhir-defs/testdata/Condition-example.json")
        }
        "Encounter-example" => {
            include_str!("../../../../fhir-defs/testdata/Encounter-example.json")
        }
        "Practitioner-example" => {
            include_str!("../../../../fhir-defs/testdata/Practitioner-example.json")
        }
        "Appointment-example" => {
            include_str!("../../../../fhir-defs/testdata/Appointment-example.json")
        }
        "Immunization-example" => {
            include_str!("../../../../fhir-defs/testdata/Immunization-example.json")
        }
        "RiskAssessment-prognosis" => {
            include_str!("../../../../fhir-defs/testdata/RiskAssessment-prognosis.json")
        }
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).expect("fixture parses")
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// Every row of `param`, rendered compactly and sorted. A parameter on a part of a name or
/// address (`family`) is rendered as the rows of the whole (`name`) its search reads.
fn rendered(rows: &IndexRows, resource_type: &str, param: &str) -> Vec<String> {
    let def = ResourceType::parse(resource_type).and_then(|t| t.search_param(param));
    let (strings_of, part) = match def.and_then(|d| Some((d.rows_code(), d.rows_subset()?))) {
        Some((whole, ("part", part))) => (whole, Some(part)),
        _ => (param, None),
    };
    let mut out = Vec::new();
    out.extend(
        rows.strings
            .iter()
            .filter(|r| r.param == strings_of && part.is_none_or(|p| r.part == Some(p)))
            .map(|r| format!("s {} / {}", r.normalized, r.exact)),
    );
    out.extend(
        rows.tokens
            .iter()
            .filter(|r| r.param == param)
            .map(|r| format!("t {}|{} {}", opt(&r.system), opt(&r.code), opt(&r.text))),
    );
    out.extend(
        rows.references
            .iter()
            .filter(|r| r.param == param)
            .map(|r| {
                format!(
                    "r {}/{}{} {}",
                    r.target_type.map_or("-", |t| t.as_str()),
                    opt(&r.target_id),
                    r.version
                        .as_ref()
                        .map(|v| format!("/_history/{v}"))
                        .unwrap_or_default(),
                    opt(&r.url)
                )
            }),
    );
    out.extend(
        rows.dates
            .iter()
            .filter(|r| r.param == param)
            .map(|r| format!("d {}..{}", format_instant(r.low), format_instant(r.high))),
    );
    out.extend(
        rows.numbers
            .iter()
            .filter(|r| r.param == param)
            .map(|r| format!("n {}", r.value)),
    );
    out.extend(
        rows.quantities
            .iter()
            .filter(|r| r.param == param)
            .map(|r| {
                format!(
                    "q {} {}|{} {}",
                    r.value,
                    opt(&r.system),
                    opt(&r.code),
                    opt(&r.unit)
                )
            }),
    );
    out.extend(
        rows.uris
            .iter()
            .filter(|r| r.param == param)
            .map(|r| format!("u {}", r.value)),
    );
    out.sort();
    out
}

fn check(resource: &Value, param: &str, expected: &[&str]) {
    let rows = extract(resource).expect("extracts");
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        rendered(&rows, resource["resourceType"].as_str().unwrap(), param),
        expected,
        "{} {param}",
        resource["resourceType"]
    );
}

#[test]
fn patient_example() {
    let p = fixture("Patient-example");
    // `_id` is the resource's id column, and `phonetic` is searched on the rows of
    // `name` (same expression): neither writes rows of its own.
    check(&p, "_id", &[]);
    check(&p, "phonetic", &[]);
    check(
        &p,
        "family",
        &["s chalmers / Chalmers", "s windsor / Windsor"],
    );
    check(
        &p,
        "name",
        &[
            "s chalmers / Chalmers",
            "s james / James",
            "s jim / Jim",
            "s peter / Peter",
            "s windsor / Windsor",
        ],
    );
    check(&p, "gender", &["t -|male -"]);
    check(&p, "active", &["t -|true -"]);
    check(&p, "deceased", &["t -|false -"]);
    check(
        &p,
        "birthdate",
        &["d 1974-12-25T00:00:00.000Z..1974-12-25T23:59:59.999Z"],
    );
    check(
        &p,
        "identifier",
        &["t urn:oid:1.2.36.146.595.217.0.1|12345 -"],
    );
    // `phone` is searched on the `telecom` rows with system phone: no rows of its own.
    check(
        &p,
        "telecom",
        &[
            "t phone|(03) 3410 5613 -",
            "t phone|(03) 5555 6473 -",
            "t phone|(03) 5555 8834 -",
        ],
    );
    check(&p, "phone", &[]);
    check(&p, "email", &[]);
    check(&p, "address-city", &["s pleasantville / PleasantVille"]);
    check(&p, "address-postalcode", &["s 3999 / 3999"]);
    check(&p, "organization", &["r Organization/1 -"]);
    check(&p, "link", &[]);
}

/// `family`, `given` and the `address-*` parameters are searched on the rows of `name`
/// and `address` with their part: they write none of their own.
#[test]
fn patient_example_parts() {
    let p = fixture("Patient-example");
    let rows = extract(&p).unwrap();
    let own = |param: &str| rows.strings.iter().filter(|r| r.param == param).count();
    assert_eq!(
        (own("family"), own("given"), own("address-city")),
        (0, 0, 0)
    );
    let mut parts: Vec<_> = rows
        .strings
        .iter()
        .filter(|r| r.param == "address")
        .map(|r| (r.exact.as_str(), r.part))
        .collect();
    parts.sort();
    assert_eq!(
        parts,
        [
            ("3999", Some("postalCode")),
            ("534 Erewhon St", Some("line")),
            (
                "534 Erewhon St PeasantVille, Rainbow, Vic  3999",
                Some("text")
            ),
            ("PleasantVille", Some("city")),
            ("Rainbow", Some("district")),
            ("Vic", Some("state")),
        ]
    );
}

#[test]
fn observation_examples() {
    let o = fixture("Observation-example");
    check(
        &o,
        "code",
        &[
            "t http://acme.org/devices/clinical-codes|body-weight body weight",
            "t http://loinc.org|29463-7 body weight",
            "t http://loinc.org|3141-9 body weight measured",
            "t http://snomed.info/sct|27113001 body weight",
        ],
    );
    check(&o, "subject", &["r Patient/example -"]);
    check(&o, "patient", &["r Patient/example -"]);
    check(&o, "encounter", &["r Encounter/example -"]);
    check(
        &o,
        "date",
        &["d 2016-03-28T00:00:00.000Z..2016-03-28T23:59:59.999Z"],
    );
    check(
        &o,
        "value-quantity",
        &["q 185 http://unitsofmeasure.org|[lb_av] lbs"],
    );
    check(
        &o,
        "combo-value-quantity",
        &["q 185 http://unitsofmeasure.org|[lb_av] lbs"],
    );
    check(&o, "value-concept", &[]);
    check(&o, "status", &["t -|final -"]);

    let bp = fixture("Observation-blood-pressure");
    check(
        &bp,
        "_profile",
        &["u http://hl7.org/fhir/StructureDefinition/vitalsigns"],
    );
    check(
        &bp,
        "component-value-quantity",
        &[
            "q 107 http://unitsofmeasure.org|mm[Hg] mmHg",
            "q 60 http://unitsofmeasure.org|mm[Hg] mmHg",
        ],
    );
    check(
        &bp,
        "code",
        &[
            "t -|- blood pressure systolic & diastolic",
            "t http://loinc.org|85354-9 blood pressure panel with all children optional",
        ],
    );
    // `basedOn` holds only an identifier: a token row for `based-on:identifier`.
    check(&bp, "based-on", &["t https://acme.org/identifiers|1234 -"]);
    check(&bp, "performer", &["r Practitioner/example -"]);
    check(&bp, "value-quantity", &[]);
}

#[test]
fn other_examples() {
    let e = fixture("Encounter-example");
    check(
        &e,
        "class",
        &["t http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP inpatient encounter"],
    );
    check(&e, "patient", &["r Patient/example -"]);
    check(&e, "status", &["t -|in-progress -"]);

    let r = fixture("RiskAssessment-prognosis");
    check(
        &r,
        "date",
        &["d 2010-11-22T00:00:00.000Z..2010-11-22T23:59:59.999Z"],
    );
    check(&r, "condition", &["r Condition/stroke -"]);
    check(
        &r,
        "risk",
        &["t http://terminology.hl7.org/CodeSystem/risk-probability|moderate moderate likelihood"],
    );
    check(&r, "probability", &[]);

    let a = fixture("Appointment-example");
    check(
        &a,
        "actor",
        &[
            "r Location/1 -",
            "r Patient/example -",
            "r Practitioner/example -",
        ],
    );
    check(&a, "patient", &["r Patient/example -"]);
    check(&a, "practitioner", &["r Practitioner/example -"]);
    check(&a, "location", &["r Location/1 -"]);
    // `start` is an instant: the range of its one second.
    check(
        &a,
        "date",
        &["d 2013-12-10T09:00:00.000Z..2013-12-10T09:00:00.999Z"],
    );

    let i = fixture("Immunization-example");
    check(&i, "lot-number", &["s aajn11k / AAJN11K"]);
    check(
        &i,
        "date",
        &["d 2013-01-10T00:00:00.000Z..2013-01-10T23:59:59.999Z"],
    );

    let c = fixture("Condition-example");
    check(&c, "subject", &["r Patient/example -"]);
    check(
        &c,
        "onset-date",
        &["d 2012-05-24T00:00:00.000Z..2012-05-24T23:59:59.999Z"],
    );

    let pr = fixture("Practitioner-example");
    check(&pr, "family", &["s careful / Careful"]);
    check(
        &pr,
        "identifier",
        &["t http://www.acme.org/practitioners|23 -"],
    );
}

#[test]
fn shapes_not_in_the_fixtures() {
    let resource = json!({
        "resourceType": "Observation", "id": "o",
        "meta": {"lastUpdated": "2024-05-01T12:00:00.123Z", "tag": [{"system": "urn:t", "code": "x"}]},
        "effectivePeriod": {"start": "2020-01-01"},
        "valueRange": {"low": {"value": 1, "unit": "mg"}, "high": {"value": 3, "unit": "mg"}},
        "subject": {"reference": "http://example.org/fhir/Patient/9/_history/2"},
        "focus": [{"reference": "#contained"}, {"reference": "urn:uuid:0f3c"}],
        "hasMember": [{"reference": "not a reference"}]
    });
    // `_lastUpdated` is the resource's column, whatever the content's meta says.
    check(&resource, "_lastUpdated", &[]);
    check(&resource, "_tag", &["t urn:t|x -"]);
    // An instant is a range of one millisecond.
    check(
        &json!({"resourceType": "AuditEvent", "recorded": "2024-05-01T12:00:00.123Z"}),
        "date",
        &["d 2024-05-01T12:00:00.123Z..2024-05-01T12:00:00.123Z"],
    );
    check(
        &resource,
        "date",
        &["d 2020-01-01T00:00:00.000Z..9999-12-31T23:59:59.999Z"],
    );
    check(&resource, "value-quantity", &[]);
    check(
        &resource,
        "subject",
        &["r Patient/9/_history/2 http://example.org/fhir/Patient/9/_history/2"],
    );
    check(&resource, "focus", &["r -/- urn:uuid:0f3c"]);
    check(&resource, "has-member", &[]);
}

#[test]
fn quantities_probabilities_and_timings() {
    let money = json!({"resourceType": "Claim", "total": {"value": 12.5, "currency": "EUR"}});
    // Claim has no quantity on total; use ChargeItem.priceOverride through `price-override`.
    assert!(extract(&money).unwrap().quantities.is_empty());
    let charge =
        json!({"resourceType": "ChargeItem", "priceOverride": {"value": 12.5, "currency": "EUR"}});
    check(
        &charge,
        "price-override",
        &["q 12.5 urn:iso:std:iso:4217|EUR EUR"],
    );

    let risk = json!({"resourceType": "RiskAssessment", "prediction": [
        {"probabilityDecimal": 0.02}, {"probabilityRange": {"low": {"value": 20}, "high": {"value": 30}}}]});
    check(&risk, "probability", &["n 0.02", "n 20", "n 30"]);

    // MedicationRequest's `date` selects the events themselves; CarePlan's
    // `activity-date` selects the whole Timing (first to last event).
    let timing = json!({"resourceType": "MedicationRequest", "dosageInstruction": [{"timing": {"event": ["2021-03-01", "2021-02-01T08:00:00Z"]}}]});
    check(
        &timing,
        "date",
        &[
            "d 2021-02-01T08:00:00.000Z..2021-02-01T08:00:00.999Z",
            "d 2021-03-01T00:00:00.000Z..2021-03-01T23:59:59.999Z",
        ],
    );
    let plan = json!({"resourceType": "CarePlan", "activity": [{"detail": {"scheduledTiming": {"event": ["2021-03-01", "2021-02-01T08:00:00Z"]}}}]});
    check(
        &plan,
        "activity-date",
        &["d 2021-02-01T08:00:00.000Z..2021-03-01T23:59:59.999Z"],
    );
}

#[test]
fn bundles_booleans_canonicals_and_accents() {
    let bundle = json!({"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}]});
    check(&bundle, "composition", &["r Composition/c1 -"]);
    check(&bundle, "type", &["t -|document -"]);

    let deceased = json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"});
    check(&deceased, "deceased", &["t -|true -"]);
    check(
        &json!({"resourceType": "Patient"}),
        "deceased",
        &["t -|false -"],
    );

    let library = json!({"resourceType": "PlanDefinition", "library": ["http://example.org/Library/lib|1.0"],
        "relatedArtifact": [{"type": "depends-on", "resource": "http://example.org/fhir/Library/other"}, {"type": "citation", "resource": "http://x/y"}]});
    // Canonicals keep their url (version included); a tail that looks like Type/id is
    // also recorded, for servers whose canonical URLs are their resource URLs.
    check(
        &library,
        "depends-on",
        &[
            "r Library/lib http://example.org/Library/lib|1.0",
            "r Library/other http://example.org/fhir/Library/other",
        ],
    );
    check(
        &json!({"resourceType": "PlanDefinition", "library": ["urn:oid:1.2.3"]}),
        "depends-on",
        &["r -/- urn:oid:1.2.3"],
    );

    let accents =
        json!({"resourceType": "Patient", "name": [{"family": "Müller", "given": ["Zoë"]}]});
    check(&accents, "name", &["s muller / Müller", "s zoe / Zoë"]);
}

#[test]
fn rejects_what_is_not_a_resource() {
    assert_eq!(extract(&json!([1])), Err(ExtractError::NotAnObject));
    assert_eq!(
        extract(&json!({"id": "x"})),
        Err(ExtractError::MissingResourceType)
    );
    assert_eq!(
        extract(&json!({"resourceType": "Patients"})),
        Err(ExtractError::UnknownResourceType("Patients".into()))
    );
    // A resource with nothing in it still has its `_id`-less, empty row set.
    assert!(
        extract(&json!({"resourceType": "Basic"}))
            .unwrap()
            .is_empty()
    );
}
