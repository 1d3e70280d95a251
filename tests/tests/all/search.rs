//! FHIR search on both databases: a data-driven suite over a fixed set of resources
//! (`tests/fixtures/search-resources.json`), paging, result shaping, errors, access
//! constraints, conditional interactions, and the R4 examples round trip.

use std::collections::BTreeSet;

use hestia::fhir::ResourceType;
use hestia::fhir::access::{Access, AccessConstraint};
use serde_json::{Value, json};

use crate::support::{Reply, TestDb, app_on, call};

const BASE: &str = "/fhir/r4";
const JSON: (&str, &str) = ("content-type", "application/fhir+json");

/// `query` (relative to the base) → the ids of the matches; `+id` is an included
/// resource. Matches are compared in order when the query sorts, as sets otherwise.
const CASES: &[(&str, &[&str])] = &[
    // string: default starts-with on the normalized value, :exact, :contains
    ("Patient?name=lovel", &["p1", "p4"]),
    ("Patient?name=LOVELACE", &["p1"]),
    ("Patient?family=muller", &["p2"]),
    ("Patient?family=M%C3%BCller", &["p2"]),
    ("Patient?family:exact=M%C3%BCller", &["p2"]),
    ("Patient?family:exact=muller", &[]),
    ("Patient?family:exact=Lovelace", &["p1"]),
    ("Patient?family:exact=lovelace", &[]),
    ("Patient?family:contains=ove", &["p1", "p4"]),
    ("Patient?family:contains=ell", &[]),
    ("Patient?given=anna", &["p5"]),
    ("Patient?given=sal", &["p3"]),
    ("Patient?name=ada,marie", &["p1", "p3"]),
    ("Patient?name=smith", &["p5"]),
    ("Patient?name:contains=ARI", &["p3"]),
    ("Patient?address-city=boston", &["p1", "p5"]),
    ("Patient?address-city=zurich", &["p2"]),
    ("Patient?address=paris", &["p3"]),
    ("Patient?address-postalcode=021", &["p1"]),
    ("Patient?name=xyz", &[]),
    ("Patient?family=lovelace&given=ada", &["p1"]),
    ("Patient?family=lovelace&given=james", &[]),
    ("Practitioner?name=smi", &["pr1"]),
    ("Organization?name=acme", &["org1"]),
    ("Organization?name:contains=clin", &["org2"]),
    ("Organization?address-city=z%C3%BCrich", &["org2"]),
    // token: code, system|code, system|, |code, :not, :missing, :text
    ("Patient?gender=female", &["p1", "p3"]),
    ("Patient?gender=male", &["p2", "p4"]),
    ("Patient?gender=female,other", &["p1", "p3", "p5"]),
    ("Patient?gender:not=male", &["p1", "p3", "p5"]),
    ("Patient?gender:not=female,male", &["p5"]),
    ("Patient?identifier=MRN1", &["p1", "p5"]),
    ("Patient?identifier=http://hospital/mrn%7CMRN1", &["p1"]),
    (
        "Patient?identifier=http://hospital/mrn|",
        &["p1", "p2", "p3"],
    ),
    ("Patient?identifier=|MRN1", &[]),
    ("Patient?identifier:missing=true", &["p4"]),
    (
        "Patient?identifier:missing=false",
        &["p1", "p2", "p3", "p5"],
    ),
    ("Patient?active=true", &["p1", "p3"]),
    ("Patient?active=false", &["p2"]),
    ("Patient?active:not=true", &["p2", "p4", "p5"]),
    ("Patient?active:missing=true", &["p4", "p5"]),
    ("Observation?code=8867-4", &["o1", "o3", "o8"]),
    (
        "Observation?code=http://loinc.org|8867-4",
        &["o1", "o3", "o8"],
    ),
    ("Observation?code=http://snomed.info/sct|8867-4", &[]),
    (
        "Observation?code=8867-4,2339-0",
        &["o1", "o3", "o4", "o5", "o8"],
    ),
    ("Observation?code:text=heart", &["o1", "o3", "o8"]),
    ("Observation?code:text=free", &["o7"]),
    ("Observation?code:text=glu", &["o4", "o5"]),
    (
        "Observation?status=final",
        &["o1", "o2", "o4", "o6", "o7", "o8", "o9"],
    ),
    ("Observation?status=preliminary,amended", &["o3", "o5"]),
    ("Observation?status:not=final", &["o3", "o5"]),
    ("Observation?category=laboratory", &["o4", "o5"]),
    (
        "Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
        &["o1", "o2", "o3", "o6", "o8", "o9"],
    ),
    ("Observation?category:missing=true", &["o7"]),
    (
        "Observation?code:missing=false",
        &["o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8", "o9"],
    ),
    ("Patient?telecom=555-0001", &["p1"]),
    ("Patient?phone=555-0001", &["p1"]),
    ("Patient?email=hans@example.org", &["p2"]),
    ("Encounter?status=finished", &["e1", "e3"]),
    ("Encounter?class=AMB", &["e1", "e3"]),
    (
        "Encounter?class=http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP",
        &["e2"],
    ),
    ("Condition?clinical-status=active", &["c1", "c2"]),
    ("Condition?code=44054006", &["c2", "c3"]),
    ("Condition?code=http://snomed.info/sct|38341003", &["c1"]),
    ("Condition?code:not=44054006", &["c1", "c4"]),
    ("Practitioner?identifier=http://npi|NPI2", &["pr2"]),
    ("Organization?identifier=ORG1", &["org1"]),
    ("Practitioner?gender=female", &["pr2"]),
    // _id, _tag, _profile, _security, _lastUpdated
    ("Patient?_id=p1", &["p1"]),
    ("Patient?_id=p1,p3,nope", &["p1", "p3"]),
    ("Patient?_id:not=p1", &["p2", "p3", "p4", "p5"]),
    ("Observation?_id=o7", &["o7"]),
    ("Patient?_tag=vip", &["p1"]),
    ("Patient?_tag=http://tags|research", &["p2"]),
    ("Patient?_tag=http://tags|", &["p1", "p2"]),
    ("Patient?_tag:not=vip", &["p2", "p3", "p4", "p5"]),
    ("Patient?_tag:missing=true", &["p3", "p4", "p5"]),
    (
        "Patient?_profile=http://example.org/fhir/StructureDefinition/special-patient",
        &["p1"],
    ),
    ("Patient?_security=R", &["p3"]),
    (
        "Patient?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
        &["p3"],
    ),
    (
        "Patient?_lastUpdated=gt2000-01-01",
        &["p1", "p2", "p3", "p4", "p5"],
    ),
    ("Patient?_lastUpdated=lt2000-01-01", &[]),
    (
        "Patient?_lastUpdated=le2999-12-31",
        &["p1", "p2", "p3", "p4", "p5"],
    ),
    ("Patient?_lastUpdated=sa2999", &[]),
    // date: precision ranges and every prefix
    ("Patient?birthdate=1815-12-10", &["p1"]),
    ("Patient?birthdate=1815", &["p1"]),
    ("Patient?birthdate=1815-12", &["p1"]),
    ("Patient?birthdate=eq1960-05-20", &["p2"]),
    ("Patient?birthdate=ne1960-05-20", &["p1", "p3", "p4", "p5"]),
    ("Patient?birthdate=lt1920", &["p1", "p4"]),
    ("Patient?birthdate=gt1960-05-20", &["p3", "p5"]),
    ("Patient?birthdate=ge1960-05-20", &["p2", "p3", "p5"]),
    ("Patient?birthdate=le1919-07-26", &["p1", "p4"]),
    ("Patient?birthdate=sa1967", &["p5"]),
    ("Patient?birthdate=eb1900", &["p1"]),
    ("Patient?birthdate=ap1960-05-21", &["p2"]),
    ("Patient?birthdate=gt1900&birthdate=lt1965", &["p2", "p4"]),
    ("Patient?birthdate=2000-06-15", &[]),
    ("Patient?birthdate=ap2000-06-15", &["p5"]),
    ("Patient?birthdate=lt1900,gt1999", &["p1", "p5"]),
    ("Patient?birthdate:missing=true", &[]),
    ("Observation?date=2021", &["o1", "o2", "o9"]),
    ("Observation?date=2021-01-01", &["o1"]),
    ("Observation?date=2022-03-03T07:30:00Z", &["o3"]),
    ("Observation?date=2022-03-03T08:30:00%2B01:00", &["o3"]),
    ("Observation?date=ge2022", &["o3", "o5"]),
    ("Observation?date=lt2020", &["o6"]),
    ("Observation?date=2020-01-15", &[]),
    ("Observation?date=ap2020-01-15", &["o8"]),
    ("Observation?date=2020-01", &["o8"]),
    (
        "Observation?date=sa2020-12-31",
        &["o1", "o2", "o3", "o5", "o9"],
    ),
    ("Observation?date:missing=true", &["o7"]),
    ("Encounter?date=2021-01-01", &["e1"]),
    ("Encounter?date=ge2022-06-01", &["e2", "e3"]),
    ("Encounter?date=lt2022-01-01", &["e1"]),
    ("Condition?onset-date=lt2012", &["c1", "c3", "c4"]),
    ("Condition?abatement-date=2020", &["c3"]),
    ("Condition?onset-date=2015", &["c2"]),
    // quantity and number: prefixes, precision, system and code
    ("Observation?value-quantity=72", &["o1"]),
    ("Observation?value-quantity=72.0", &["o1"]),
    ("Observation?value-quantity=gt90", &["o3"]),
    ("Observation?value-quantity=lt10", &["o4", "o5"]),
    ("Observation?value-quantity=ge72", &["o1", "o3"]),
    ("Observation?value-quantity=le37.5", &["o2", "o4", "o5"]),
    (
        "Observation?value-quantity=ne72",
        &["o2", "o3", "o4", "o5", "o6", "o8"],
    ),
    ("Observation?value-quantity=ap70", &["o1"]),
    (
        "Observation?value-quantity=5.5|http://unitsofmeasure.org|mmol/L",
        &["o4"],
    ),
    (
        "Observation?value-quantity=lt100|http://unitsofmeasure.org|/min",
        &["o1", "o3", "o8"],
    ),
    ("Observation?value-quantity=lt100||Cel", &["o2", "o6"]),
    (
        "Observation?value-quantity=gt7|http://unitsofmeasure.org|mmol/L",
        &["o5"],
    ),
    ("Observation?value-quantity=38.2", &["o6"]),
    ("Observation?value-quantity=sa50", &["o1", "o3", "o8"]),
    ("Observation?value-quantity=eb10", &["o4", "o5"]),
    ("Observation?value-quantity:missing=true", &["o7", "o9"]),
    ("RiskAssessment?probability=0.25", &["r1"]),
    ("RiskAssessment?probability=gt0.5", &["r2"]),
    ("RiskAssessment?probability=le0.8", &["r1", "r2"]),
    ("RiskAssessment?probability=ne0.25", &["r2"]),
    // uri: exact, :below, :above
    ("Patient?_profile:below=http://example.org/fhir", &["p1"]),
    ("Patient?_profile:below=http://other", &[]),
    (
        "Patient?_profile:above=http://example.org/fhir/StructureDefinition/special-patient/extra",
        &["p1"],
    ),
    ("Patient?_profile:above=http://example.org/fhir", &[]),
    ("Patient?_profile:missing=false", &["p1"]),
    // reference: Type/id, id, absolute URL, :Type, :identifier, :missing
    ("Observation?subject=Patient/p1", &["o1", "o2", "o9"]),
    ("Observation?subject=p1", &["o1", "o2", "o9"]),
    ("Observation?subject:Patient=p2", &["o3", "o4"]),
    ("Observation?patient=p3", &["o5", "o6"]),
    (
        "Observation?subject=http://localhost:8080/fhir/r4/Patient/p1",
        &["o1", "o2", "o9"],
    ),
    (
        "Observation?subject=http://elsewhere.org/fhir/Patient/p1",
        &[],
    ),
    (
        "Observation?subject=Patient/p1,Patient/p4",
        &["o1", "o2", "o8", "o9"],
    ),
    ("Observation?subject:missing=true", &["o7"]),
    ("Observation?performer=Practitioner/pr1", &["o1", "o2"]),
    ("Observation?performer=Organization/org2", &["o4"]),
    ("Observation?performer:Practitioner=pr2", &["o3", "o5"]),
    ("Observation?encounter=e1", &["o1"]),
    ("Observation?has-member=o1", &["o9"]),
    ("Patient?organization=org1", &["p1", "p3"]),
    ("Patient?general-practitioner=pr2", &["p2", "p3"]),
    ("Patient?link=p1", &["p4"]),
    ("Encounter?service-provider=org1", &["e1", "e3"]),
    ("Encounter?practitioner=pr1", &["e1"]),
    ("Condition?subject=p1", &["c1", "c4"]),
    ("Condition?encounter=Encounter/e1", &["c1"]),
    ("Organization?partof=org1", &["org2"]),
    (
        "Observation?subject:identifier=http://hospital/mrn|MRN3",
        &["o6"],
    ),
    ("Observation?subject=Group/g1", &[]),
    // chains, one level and two
    ("Observation?subject.name=lovelace", &["o1", "o2", "o9"]),
    ("Observation?subject:Patient.family=muller", &["o3", "o4"]),
    (
        "Observation?patient.gender=female",
        &["o1", "o2", "o5", "o6", "o9"],
    ),
    (
        "Observation?subject.organization.name=acme",
        &["o1", "o2", "o5", "o6", "o9"],
    ),
    (
        "Observation?performer:Practitioner.family=jones",
        &["o3", "o5"],
    ),
    ("Encounter?service-provider.name=beta", &["e2"]),
    ("Condition?subject.birthdate=lt1900", &["c1", "c4"]),
    (
        "Observation?subject.identifier=http://hospital/mrn|MRN2",
        &["o3", "o4"],
    ),
    ("Patient?general-practitioner.name=smith", &["p1", "p3"]),
    ("Observation?subject.name=nobody", &[]),
    ("Observation?encounter.status=in-progress", &["o3"]),
    ("Organization?partof.name=acme", &["org2"]),
    // _has
    (
        "Patient?_has:Observation:patient:code=2339-0",
        &["p2", "p3"],
    ),
    (
        "Patient?_has:Observation:subject:status=preliminary",
        &["p2"],
    ),
    (
        "Patient?_has:Condition:subject:code=44054006",
        &["p2", "p3"],
    ),
    (
        "Patient?_has:Condition:subject:clinical-status=inactive",
        &["p1"],
    ),
    (
        "Practitioner?_has:Observation:performer:code=8310-5",
        &["pr1"],
    ),
    (
        "Patient?_has:Encounter:subject:status=finished",
        &["p1", "p3"],
    ),
    ("Encounter?_has:Observation:encounter:code=2339-0", &["e3"]),
    ("Patient?_has:Observation:patient:code=nothing", &[]),
    (
        "Patient?_has:Observation:patient:code=8867-4&gender=male",
        &["p2", "p4"],
    ),
    // AND across parameters, OR within one
    ("Observation?code=8867-4&status=final", &["o1", "o8"]),
    ("Observation?subject=p1&date=2021-06-15", &["o2", "o9"]),
    (
        "Observation?category=vital-signs&value-quantity=gt70",
        &["o1", "o3"],
    ),
    ("Patient?gender=female&address-city=boston", &["p1"]),
    (
        "Observation?status=final&category=laboratory&subject=p2",
        &["o4"],
    ),
    // composite
    ("Observation?code-value-quantity=8867-4$gt80", &["o3"]),
    ("Observation?code-value-quantity=2339-0$lt6", &["o4"]),
    // _include, _revinclude, :iterate
    (
        "Observation?_id=o1&_include=Observation:subject",
        &["o1", "+p1"],
    ),
    (
        "Observation?_id=o1&_include=Observation:performer",
        &["o1", "+pr1"],
    ),
    (
        "Observation?_id=o4&_include=Observation:performer:Organization",
        &["o4", "+org2"],
    ),
    (
        "Observation?_id=o4&_include=Observation:performer:Practitioner",
        &["o4"],
    ),
    (
        "Observation?_id=o1&_include=Observation:*",
        &["o1", "+p1", "+e1", "+pr1"],
    ),
    (
        "Patient?_id=p1&_revinclude=Observation:subject",
        &["p1", "+o1", "+o2", "+o9"],
    ),
    (
        "Patient?_id=p2&_revinclude=Condition:subject&_revinclude=Encounter:subject",
        &["p2", "+c2", "+e2"],
    ),
    (
        "Observation?_id=o9&_include=Observation:has-member",
        &["o9", "+o1", "+o2"],
    ),
    (
        "Observation?_id=o9&_include:iterate=Observation:has-member&_include:iterate=Observation:performer",
        &["o9", "+o1", "+o2", "+pr1"],
    ),
    (
        "Observation?_id=o9&_include=Observation:has-member&_include=Observation:performer",
        &["o9", "+o1", "+o2"],
    ),
    (
        "Patient?_id=p3&_revinclude=Observation:subject&_include:iterate=Observation:performer",
        &["p3", "+o5", "+o6", "+pr2"],
    ),
    (
        "Organization?_id=org1&_revinclude:iterate=Patient:organization&_revinclude:iterate=Observation:subject",
        &["org1", "+p1", "+p3", "+o1", "+o2", "+o9", "+o5", "+o6"],
    ),
    (
        "Organization?_id=org1&_revinclude=Patient:organization&_revinclude=Observation:subject",
        &["org1", "+p1", "+p3"],
    ),
    (
        "Encounter?_id=e1&_include=Encounter:subject&_revinclude=Condition:encounter",
        &["e1", "+p1", "+c1"],
    ),
    (
        "Condition?code=44054006&_include=Condition:subject",
        &["c2", "c3", "+p2", "+p3"],
    ),
    ("Patient?_id=p1&_revinclude=Patient:link", &["p1", "+p4"]),
    (
        "Patient?_id=p1,p3&_include=Patient:general-practitioner",
        &["p1", "p3", "+pr1", "+pr2"],
    ),
    (
        "Patient?_id=p1&_include=Patient:organization&_revinclude=Observation:subject",
        &["p1", "+org1", "+o1", "+o2", "+o9"],
    ),
    // sorting: several keys, descending, missing values last, stable tie-break
    ("Patient?_sort=family", &["p3", "p1", "p4", "p2", "p5"]),
    ("Patient?_sort=-family", &["p5", "p2", "p4", "p1", "p3"]),
    ("Patient?_sort=birthdate", &["p1", "p4", "p2", "p3", "p5"]),
    ("Patient?_sort=-birthdate", &["p5", "p3", "p2", "p4", "p1"]),
    (
        "Patient?_sort=gender,family",
        &["p3", "p1", "p4", "p2", "p5"],
    ),
    (
        "Patient?_sort=gender,-birthdate",
        &["p3", "p1", "p2", "p4", "p5"],
    ),
    (
        "Patient?_sort=-gender,family",
        &["p5", "p4", "p2", "p3", "p1"],
    ),
    ("Patient?_sort=_id", &["p1", "p2", "p3", "p4", "p5"]),
    ("Patient?_sort=-_id", &["p5", "p4", "p3", "p2", "p1"]),
    ("Patient?_sort=active,_id", &["p2", "p1", "p3", "p4", "p5"]),
    (
        "Patient?_sort=address-city",
        &["p1", "p5", "p3", "p2", "p4"],
    ),
    ("Patient?gender=male&_sort=-birthdate", &["p2", "p4"]),
    (
        "Observation?category=laboratory&_sort=value-quantity",
        &["o4", "o5"],
    ),
    (
        "Observation?code=8867-4&_sort=-value-quantity",
        &["o3", "o1", "o8"],
    ),
    (
        "Observation?_sort=date",
        &["o6", "o8", "o4", "o1", "o2", "o9", "o3", "o5", "o7"],
    ),
    (
        "Observation?_sort=-date",
        &["o5", "o3", "o2", "o9", "o1", "o4", "o8", "o6", "o7"],
    ),
    (
        "Observation?_sort=status,-date",
        &["o5", "o2", "o9", "o1", "o4", "o8", "o6", "o7", "o3"],
    ),
    ("Condition?_sort=onset-date", &["c4", "c3", "c1", "c2"]),
    ("Condition?_sort=-onset-date", &["c2", "c1", "c3", "c4"]),
    (
        "Patient?_sort=_lastUpdated",
        &["p1", "p2", "p3", "p4", "p5"],
    ),
];

fn rt(name: &str) -> ResourceType {
    ResourceType::parse(name).expect("resource type")
}

fn fixture() -> Vec<Value> {
    let text = include_str!("../../fixtures/search-resources.json");
    serde_json::from_str(text).expect("fixture is JSON")
}

/// Loads the fixture with `PUT` (create-on-update keeps the ids), in file order.
async fn load(app: &axum::Router, b: &str) {
    for resource in fixture() {
        let url = format!(
            "{BASE}/{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let reply = call(app, "PUT", &url, &[JSON], resource.to_string()).await;
        assert_eq!(reply.status, 201, "{b}: {url}: {:?}", reply.body);
    }
}

/// The entries of a searchset: (matches in order, included as a set).
fn entries(body: &Value) -> (Vec<String>, BTreeSet<String>) {
    let mut matches = Vec::new();
    let mut included = BTreeSet::new();
    for e in body["entry"].as_array().into_iter().flatten() {
        let id = e["resource"]["id"].as_str().unwrap_or("").to_owned();
        match e["search"]["mode"].as_str() {
            Some("match") => matches.push(id),
            Some("include") => {
                included.insert(id);
            }
            _ => {}
        }
    }
    (matches, included)
}

async fn get(app: &axum::Router, query: &str) -> Reply {
    call(app, "GET", &format!("{BASE}/{query}"), &[], "").await
}

/// Runs every case; returns the descriptions of those that failed.
async fn run_cases(app: &axum::Router) -> Vec<String> {
    let mut failures = Vec::new();
    for (query, expected) in CASES {
        let reply = get(app, query).await;
        if reply.status != 200 {
            failures.push(format!(
                "{query}: status {} {}",
                reply.status,
                reply.diagnostics()
            ));
            continue;
        }
        let (mut matches, included) = entries(&reply.body);
        let mut want: Vec<String> = expected
            .iter()
            .filter(|e| !e.starts_with('+'))
            .map(|e| e.to_string())
            .collect();
        let want_included: BTreeSet<String> = expected
            .iter()
            .filter_map(|e| e.strip_prefix('+'))
            .map(str::to_owned)
            .collect();
        if !query.contains("_sort") {
            matches.sort();
            want.sort();
        }
        if matches != want || included != want_included {
            failures.push(format!(
                "{query}: got {matches:?} +{included:?}, expected {want:?} +{want_included:?}"
            ));
        }
        if reply.body["total"].as_u64() != Some(want.len() as u64) {
            failures.push(format!(
                "{query}: total {} for {} matches",
                reply.body["total"],
                want.len()
            ));
        }
    }
    failures
}

#[tokio::test]
async fn data_driven_search_suite_on_both_databases() {
    assert!(CASES.len() >= 150, "{} cases", CASES.len());
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        load(&app, db.backend).await;
        let failures = run_cases(&app).await;
        assert!(
            failures.is_empty(),
            "{}: {} of {} cases failed:\n{}",
            db.backend,
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    }
}
