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
    // a part's parameter matches only that part of the name or address
    ("Patient?given=lovelace", &[]),
    ("Patient?family=ada", &[]),
    ("Patient?address-city=021", &[]),
    ("Patient?address-city:missing=true", &["p4"]),
    (
        "Patient?address-postalcode:missing=true",
        &["p2", "p3", "p4", "p5"],
    ),
    (
        "Patient?family:missing=false",
        &["p1", "p2", "p3", "p4", "p5"],
    ),
    ("Practitioner?family=jones", &["pr2"]),
    ("Practitioner?given=smith", &[]),
    ("Practitioner?_sort=-given", &["pr1", "pr2"]),
    ("Patient?name=xyz", &[]),
    // phonetic has the expression of name: it is searched on name's rows
    ("Patient?phonetic=lovel", &["p1", "p4"]),
    ("Patient?phonetic:exact=Lovelace", &["p1"]),
    ("Practitioner?phonetic=smi", &["pr1"]),
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
    // phone and email are searched on the telecom rows of their system
    ("Patient?email=555-0001", &[]),
    ("Patient?phone=hans@example.org", &[]),
    ("Patient?telecom=hans@example.org", &["p2"]),
    ("Patient?phone:missing=false", &["p1"]),
    ("Patient?email:missing=false", &["p2"]),
    (
        "Patient?phone:missing=true&email:missing=true&_id=p1,p2,p3",
        &["p3"],
    ),
    ("Patient?_sort=phone&_id=p1,p2", &["p1", "p2"]),
    ("Patient?_sort=email&_id=p1,p2", &["p2", "p1"]),
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
    // A count starts from the first indexed criterion's rows (`gender`); `_id` and `_has`
    // after it are tested on those rows, which name their resource by key, not by id.
    ("Patient?gender=male&_id=p1,p2,p3", &["p2"]),
    ("Patient?gender=male&_id:not=p2", &["p4"]),
    (
        "Patient?gender=female&_has:Observation:patient:code=2339-0",
        &["p3"],
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

/// Composite parameters over `tests/fixtures/search-composites.json`: blood pressures
/// with two (or three) components; each case needs its components within one element.
const COMPOSITE_CASES: &[(&str, &[&str])] = &[
    // bp1: systolic 90, diastolic 110; a match across its components would be wrong.
    (
        "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100",
        &["bp2", "bp3"],
    ),
    (
        "Observation?component-code-value-quantity=8480-6$gt100",
        &["bp2", "bp3"],
    ),
    (
        "Observation?component-code-value-quantity=8462-4$gt100",
        &["bp1"],
    ),
    (
        "Observation?component-code-value-quantity=8480-6$lt100",
        &["bp1"],
    ),
    (
        "Observation?component-code-value-quantity=8480-6$gt125",
        &["bp2"],
    ),
    ("Observation?component-code-value-quantity=8480-6$85", &[]),
    (
        "Observation?component-code-value-quantity=8462-4$85",
        &["bp2"],
    ),
    (
        "Observation?component-code-value-quantity=8462-4$110",
        &["bp1"],
    ),
    ("Observation?component-code-value-quantity=8480-6$110", &[]),
    (
        "Observation?component-code-value-quantity=8480-6$gt100%7Chttp://unitsofmeasure.org%7Cmm%5BHg%5D",
        &["bp2", "bp3"],
    ),
    (
        "Observation?component-code-value-quantity=8480-6$gt100%7Chttp://unitsofmeasure.org%7Cmg",
        &[],
    ),
    (
        "Observation?component-code-value-quantity=8480-6$gt125,8462-4$gt100",
        &["bp1", "bp2"],
    ),
    (
        "Observation?component-code-value-quantity=8480-6$lt100&component-code-value-quantity=8462-4$gt100",
        &["bp1"],
    ),
    (
        "Observation?component-code-value-quantity=8480-6$lt100&component-code-value-quantity=8462-4$lt100",
        &[],
    ),
    (
        "Observation?component-code-value-quantity=8480-6$ge120",
        &["bp2", "bp3"],
    ),
    (
        "Observation?component-code-value-concept=cuff-site$left-arm",
        &["bp3"],
    ),
    (
        "Observation?component-code-value-concept=http://example.org/bp|cuff-site$http://example.org/site|right-arm",
        &["bp2"],
    ),
    (
        "Observation?component-code-value-concept=8480-6$left-arm",
        &[],
    ),
    // combo: the Observation's own code and value, or a component's.
    (
        "Observation?combo-code-value-quantity=8480-6$gt100",
        &["bp2", "bp3"],
    ),
    (
        "Observation?combo-code-value-quantity=8867-4$gt100",
        &["hr1"],
    ),
    (
        "Observation?combo-code-value-quantity=8462-4$gt100",
        &["bp1"],
    ),
    // code-value-quantity: the Observation's own code with its own value only.
    ("Observation?code-value-quantity=8867-4$110", &["hr1"]),
    ("Observation?code-value-quantity=85354-9$gt0", &[]),
    ("Observation?code-value-quantity=8462-4$110", &[]),
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
    load_resources(app, b, fixture()).await
}

async fn load_resources(app: &axum::Router, b: &str, resources: Vec<Value>) {
    for resource in resources {
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

/// `GET [base]/query`; a query starting with `?` is a system search at the base itself.
async fn get(app: &axum::Router, query: &str) -> Reply {
    let sep = if query.starts_with('?') { "" } else { "/" };
    call(app, "GET", &format!("{BASE}{sep}{query}"), &[], "").await
}

/// Runs every case; returns the descriptions of those that failed.
async fn run_cases(app: &axum::Router, cases: &[(&str, &[&str])]) -> Vec<String> {
    let mut failures = Vec::new();
    for (query, expected) in cases {
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
        let failures = run_cases(&app, CASES).await;
        assert!(
            failures.is_empty(),
            "{}: {} of {} cases failed:\n{}",
            db.backend,
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    }
    let composites: Vec<Value> =
        serde_json::from_str(include_str!("../../fixtures/search-composites.json"))
            .expect("fixture is JSON");
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        load_resources(&app, db.backend, composites.clone()).await;
        let failures = run_cases(&app, COMPOSITE_CASES).await;
        assert!(
            failures.is_empty(),
            "{}: {} of {} composite cases failed:\n{}",
            db.backend,
            failures.len(),
            COMPOSITE_CASES.len(),
            failures.join("\n")
        );
    }
}

/// Follows `next` links from `first` to the end; returns the match ids in order and the
/// number of pages.
async fn follow_pages(app: &axum::Router, first: &str) -> (Vec<String>, usize, Vec<Value>) {
    let mut url = format!("{BASE}/{first}");
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    loop {
        let reply = call(app, "GET", &url, &[], "").await;
        assert_eq!(reply.status, 200, "{url}: {:?}", reply.body);
        ids.extend(entries(&reply.body).0);
        let next = link(&reply.body, "next");
        pages.push(reply.body);
        match next {
            Some(next) => url = relative(&next),
            None => break,
        }
        assert!(pages.len() < 100, "paging does not end");
    }
    (ids, pages.len(), pages)
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

/// A link of the test server (`http://localhost:8080/fhir/r4/...`) as a path.
fn relative(url: &str) -> String {
    url.strip_prefix("http://localhost:8080")
        .unwrap_or_else(|| panic!("{url} is not on this server"))
        .to_owned()
}

/// The match ids of the pages before and including `last`, walked back by `previous`
/// links (at most `most` of them).
async fn walked_back(app: &axum::Router, last: &Value, most: usize) -> Vec<String> {
    let mut back = entries(last).0;
    let mut page = last.clone();
    while let Some(url) = link(&page, "previous") {
        let reply = call(app, "GET", &relative(&url), &[], "").await;
        assert_eq!(reply.status, 200, "{url}: {:?}", reply.body);
        page = reply.body;
        back.splice(0..0, entries(&page).0);
        assert!(back.len() <= most, "previous does not end: {back:?}");
    }
    back
}

#[tokio::test]
async fn paging_follows_next_links_to_the_end_on_a_stable_cursor() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let all = entries(&get(&app, "Observation?_sort=date").await.body).0;
        assert_eq!(all.len(), 9, "{b}");
        for count in [1, 2, 4, 8, 9, 20] {
            let (ids, pages, bodies) =
                follow_pages(&app, &format!("Observation?_sort=date&_count={count}")).await;
            assert_eq!(
                ids, all,
                "{b}: _count={count}: nothing missing, nothing twice, same order"
            );
            assert_eq!(pages, 9usize.div_ceil(count), "{b}: _count={count}");
            for body in &bodies {
                assert_eq!(body["total"], 9, "{b}");
            }
            if pages > 1 {
                let second = &bodies[1];
                let previous = link(second, "previous").expect("previous link");
                let back = call(&app, "GET", &relative(&previous), &[], "").await;
                assert_eq!(
                    entries(&back.body).0,
                    entries(&bodies[0]).0,
                    "{b}: previous"
                );
                let own = link(second, "self").expect("self link");
                let again = call(&app, "GET", &relative(&own), &[], "").await;
                assert_eq!(
                    entries(&again.body).0,
                    entries(second).0,
                    "{b}: self reproduces the page"
                );
            }
        }
    }
}

/// Several sort keys, descending ones and decimal ones with resources that have none
/// (NULLs last) page forward and back in the order of one page; so does the default
/// order (no `_sort`).
#[tokio::test]
async fn paging_keeps_the_order_of_every_sort() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let sorted = entries(&get(&app, "Patient?_sort=gender,-birthdate").await.body).0;
        let (paged, _, _) = follow_pages(&app, "Patient?_sort=gender,-birthdate&_count=2").await;
        assert_eq!(paged, sorted, "{b}");
        for sort in ["value-quantity", "-value-quantity", "code,-value-quantity"] {
            let sorted = entries(&get(&app, &format!("Observation?_sort={sort}")).await.body).0;
            assert_eq!(sorted.len(), 9, "{b}");
            for count in [1, 2, 4] {
                let (paged, _, bodies) =
                    follow_pages(&app, &format!("Observation?_sort={sort}&_count={count}")).await;
                assert_eq!(paged, sorted, "{b}: _sort={sort}&_count={count}");
                let back = walked_back(&app, bodies.last().unwrap(), 9).await;
                assert_eq!(back, sorted, "{b}: _sort={sort}&_count={count}: previous");
            }
        }
        let (unsorted, _, _) = follow_pages(&app, "Observation?_count=3").await;
        let set: BTreeSet<_> = unsorted.iter().cloned().collect();
        assert_eq!((unsorted.len(), set.len()), (9, 9), "{b}: {unsorted:?}");
    }
}

/// A search sorted by a date parameter with one value per resource and criteria on that
/// parameter only is read in the order of its index (`Observation.effective`); the same
/// search with one more criterion takes the general plan. Both give the same pages, forward
/// and back, with ties (o2, o9), a Period (o8), a resource without the element (o7, last)
/// and a deleted one.
#[tokio::test]
async fn a_sort_read_in_index_order_pages_as_the_general_plan_does() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let gone = json!({"resourceType": "Observation", "id": "gone", "status": "final",
                          "code": {"text": "x"}, "effectiveDateTime": "2021-03-01"});
        let url = format!("{BASE}/Observation/gone");
        let put = call(&app, "PUT", &url, &[JSON], gone.to_string()).await;
        assert_eq!(put.status, 201, "{b}: {:?}", put.body);
        assert_eq!(call(&app, "DELETE", &url, &[], "").await.status, 204, "{b}");
        for sort in ["date", "-date"] {
            for criteria in ["", "&date=ge2020-06", "&date=lt2021-06-15&date=ge2000"] {
                let ordered = format!("Observation?_sort={sort}{criteria}");
                // `_id:not` is a criterion on another parameter: the general plan.
                let general = format!("{ordered}&_id:not=none");
                let all = entries(&get(&app, &general).await.body).0;
                assert!(
                    !all.is_empty() && !all.contains(&"gone".to_owned()),
                    "{b}: {all:?}"
                );
                assert_eq!(
                    entries(&get(&app, &ordered).await.body).0,
                    all,
                    "{b}: {ordered}"
                );
                for count in [1, 2, 3] {
                    let (paged, _, bodies) =
                        follow_pages(&app, &format!("{ordered}&_count={count}")).await;
                    assert_eq!(paged, all, "{b}: {ordered}&_count={count}");
                    let back = walked_back(&app, bodies.last().unwrap(), all.len()).await;
                    assert_eq!(back, all, "{b}: {ordered}&_count={count}: previous");
                }
            }
        }
        let ascending = entries(&get(&app, "Observation?_sort=date").await.body).0;
        assert_eq!(
            ascending,
            ["o6", "o8", "o4", "o1", "o2", "o9", "o3", "o5", "o7"],
            "{b}: ties in creation order, no date last"
        );
        let descending = entries(&get(&app, "Observation?_sort=-date").await.body).0;
        assert_eq!(
            descending,
            ["o5", "o3", "o2", "o9", "o1", "o4", "o8", "o6", "o7"],
            "{b}: ties in creation order too"
        );
    }
}

/// Resources written after the first page do not shift the next pages; a fresh search
/// sees them.
#[tokio::test]
async fn pages_after_the_first_keep_its_snapshot_across_creates() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let first = get(&app, "Observation?_sort=-date&_count=3").await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let created = call(
            &app,
            "POST",
            &format!("{BASE}/Observation"),
            &[JSON],
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "late"}, "effectiveDateTime": "2030-01-01"}).to_string(),
        )
        .await;
        assert_eq!(created.status, 201, "{b}");
        let mut ids = entries(&first.body).0;
        let mut next = link(&first.body, "next");
        while let Some(url) = next {
            let page = call(&app, "GET", &relative(&url), &[], "").await;
            ids.extend(entries(&page.body).0);
            next = link(&page.body, "next");
        }
        let want = entries(&get(&app, "Observation?_sort=-date").await.body).0;
        assert_eq!(want.len(), 10, "{b}: a fresh search sees the new one");
        assert_eq!(ids.len(), 9, "{b}: the cursor's snapshot does not: {ids:?}");
        assert!(
            !ids.contains(&created.body["id"].as_str().unwrap().to_owned()),
            "{b}"
        );
    }
}

/// `_count` bounds: 0 gives the total only; above the maximum is capped.
#[tokio::test]
async fn count_zero_gives_the_total_and_a_large_count_is_capped() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let zero = get(&app, "Observation?_count=0").await;
        assert_eq!(
            (zero.status, zero.body["total"].as_u64()),
            (200, Some(9)),
            "{b}"
        );
        assert!(zero.body.get("entry").is_none(), "{b}");
        let big = get(&app, "Observation?_count=5000").await;
        assert_eq!(entries(&big.body).0.len(), 9, "{b}");
    }
}

/// The match ids and their `meta.versionId`s of a page.
fn versions(body: &Value) -> Vec<(String, String)> {
    body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            (
                e["resource"]["id"].as_str().unwrap_or("").to_owned(),
                e["resource"]["meta"]["versionId"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

/// Puts a Basic resource `id` with the code text `text`.
async fn put_basic(app: &axum::Router, id: &str, text: &str) -> Reply {
    let body = json!({"resourceType": "Basic", "id": id, "code": {"text": text}});
    let uri = format!("{BASE}/Basic/{id}");
    call(app, "PUT", &uri, &[JSON], body.to_string()).await
}

/// `first` and the pages its `next` links lead to.
async fn pages_from(app: &axum::Router, first: &Value) -> Vec<Value> {
    let mut pages = vec![first.clone()];
    let mut next = link(first, "next");
    while let Some(url) = next {
        let page = call(app, "GET", &relative(&url), &[], "").await;
        assert_eq!(page.status, 200, "{url}: {:?}", page.body);
        next = link(&page.body, "next");
        pages.push(page.body);
        assert!(pages.len() < 10, "paging does not end");
    }
    pages
}

#[tokio::test]
async fn pages_keep_the_result_set_of_their_snapshot_across_updates_and_deletes() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        for n in 0..6 {
            assert!(
                put_basic(&app, &format!("pg{n}"), "one").await.status < 300,
                "{b}"
            );
        }
        for query in [
            "Basic?_sort=_id&_count=2",
            "Basic?_count=2",
            "Basic?_sort=-_id&_count=2",
        ] {
            let descending = query.contains("-_id");
            let order: Vec<String> = if descending {
                (0..6).rev().map(|n| format!("pg{n}")).collect()
            } else {
                (0..6).map(|n| format!("pg{n}")).collect()
            };
            let first = get(&app, query).await;
            assert_eq!(entries(&first.body).0, order[..2], "{b}: {query}");
            // Between pages (a millisecond later at least: the snapshot is the first
            // page's millisecond): the first page's first row updated, a row not yet
            // paged updated, another deleted, and a new one created.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let (seen, later, gone) = (&order[0], &order[3], &order[4]);
            let mut then = std::collections::HashMap::new();
            for id in [later, gone] {
                let read = call(&app, "GET", &format!("{BASE}/Basic/{id}"), &[], "").await;
                then.insert(id.clone(), read.body["meta"]["versionId"].clone());
            }
            assert_eq!(put_basic(&app, seen, "two").await.status, 200, "{b}");
            assert_eq!(put_basic(&app, later, "two").await.status, 200, "{b}");
            let deleted = call(&app, "DELETE", &format!("{BASE}/Basic/{gone}"), &[], "").await;
            assert!(deleted.status < 300, "{b}: {:?}", deleted.body);
            assert_eq!(put_basic(&app, "pg9", "new").await.status, 201, "{b}");

            let pages = pages_from(&app, &first.body).await;
            let ids: Vec<String> = pages.iter().flat_map(|p| entries(p).0).collect();
            assert_eq!(
                ids, order,
                "{b}: {query}: each resource of the snapshot exactly once, in order"
            );
            for page in &pages {
                assert_eq!(page["total"], 6, "{b}: {query}: the snapshot's total");
                for (id, version) in versions(page) {
                    // Answered as they were at the snapshot.
                    if let Some(want) = then.get(&id) {
                        assert_eq!(version, want.as_str().unwrap(), "{b}: {query}: {id}");
                    }
                }
            }
            let back = walked_back(&app, pages.last().unwrap(), 19).await;
            assert_eq!(back, order, "{b}: {query}: previous links");

            // A fresh search sees the present: the new one in, the deleted one out.
            let now = entries(&get(&app, "Basic?_sort=_id&_count=50").await.body).0;
            assert!(
                now.contains(&"pg9".to_owned()) && !now.contains(gone),
                "{b}: {now:?}"
            );
            // Put things back for the next query.
            call(&app, "DELETE", &format!("{BASE}/Basic/pg9"), &[], "").await;
            assert_eq!(put_basic(&app, gone, "one").await.status, 201, "{b}");
        }
    }
}

/// A cursor that is not ours, or of another sort order, is a 400.
#[tokio::test]
async fn a_foreign_cursor_or_one_of_another_sort_is_a_400() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        for n in 0..6 {
            assert!(
                put_basic(&app, &format!("pg{n}"), "one").await.status < 300,
                "{b}"
            );
        }
        let bad = get(&app, "Basic?_count=2&_after=not-a-cursor").await;
        assert_eq!(bad.status, 400, "{b}: {:?}", bad.body);
        let first = get(&app, "Basic?_sort=_id&_count=2").await;
        let next = relative(&link(&first.body, "next").unwrap());
        let other = get(
            &app,
            &next.replace("_sort=_id&", "_sort=_id,_lastUpdated&")[BASE.len() + 1..],
        )
        .await;
        assert_eq!(other.status, 400, "{b}: {:?}", other.body);
    }
}

/// `_total` (none, accurate) and `_summary=count`.
#[tokio::test]
async fn totals_and_summary_count() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let none = get(&app, "Patient?_total=none").await;
        assert!(none.body.get("total").is_none(), "{b}: {:?}", none.body);
        assert_eq!(entries(&none.body).0.len(), 5, "{b}");
        let accurate = get(&app, "Patient?gender=female&_total=accurate&_count=1").await;
        assert_eq!(accurate.body["total"], 2, "{b}");
        assert_eq!(accurate.body["type"], "searchset");

        let count = get(&app, "Observation?status=final&_summary=count").await;
        assert_eq!(count.body["total"], 7, "{b}");
        assert!(count.body.get("entry").is_none(), "{b}");
    }
}

/// `_summary` and `_elements` subset the resources, and a full match keeps everything.
#[tokio::test]
async fn summaries_and_elements_subset_the_matches() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let summary = get(&app, "Patient?_id=p1&_summary=true").await;
        let p1 = &summary.body["entry"][0]["resource"];
        assert_eq!(
            p1["name"][0]["family"], "Lovelace",
            "{b}: name is a summary element"
        );
        assert!(
            p1.get("generalPractitioner").is_none(),
            "{b}: not a summary element: {p1}"
        );
        assert!(
            p1["meta"]["tag"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["code"] == "SUBSETTED"),
            "{b}"
        );

        let data = get(&app, "Patient?_id=p1&_summary=data").await;
        assert!(
            data.body["entry"][0]["resource"]
                .get("generalPractitioner")
                .is_some(),
            "{b}"
        );

        let elements = get(&app, "Observation?_id=o1&_elements=subject,valueQuantity").await;
        let o1 = &elements.body["entry"][0]["resource"];
        assert_eq!(o1["subject"]["reference"], "Patient/p1", "{b}");
        assert_eq!(o1["valueQuantity"]["value"], 72, "{b}");
        assert_eq!(o1["status"], "final", "{b}: mandatory elements stay");
        assert!(
            o1.get("performer").is_none() && o1.get("encounter").is_none(),
            "{b}: {o1}"
        );
        assert_eq!(o1["id"], "o1");

        let full = &get(&app, "Observation?_id=o1").await.body["entry"][0];
        assert_eq!(
            full["fullUrl"], "http://localhost:8080/fhir/r4/Observation/o1",
            "{b}"
        );
        assert_eq!(full["search"]["mode"], "match", "{b}");
        assert!(full["resource"].get("performer").is_some(), "{b}");
    }
}

/// POST `_search`: the form body, merged with the query string; its self link reproduces
/// it.
#[tokio::test]
async fn post_search_merges_the_form_with_the_query() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let posted = call(
            &app,
            "POST",
            &format!("{BASE}/Observation/_search?status=final"),
            &[("content-type", "application/x-www-form-urlencoded")],
            "code=http%3A%2F%2Floinc.org%7C8867-4&_sort=-date",
        )
        .await;
        assert_eq!(posted.status, 200, "{b}: {:?}", posted.body);
        assert_eq!(entries(&posted.body).0, vec!["o1", "o8"], "{b}");
        let self_link = link(&posted.body, "self").unwrap();
        let again = call(&app, "GET", &relative(&self_link), &[], "").await;
        assert_eq!(
            entries(&again.body).0,
            vec!["o1", "o8"],
            "{b}: the self link reproduces a POSTed search"
        );
    }
}

/// System search with `_type`, and without (common parameters only), by GET and POST.
#[tokio::test]
async fn system_search_with_and_without_type() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let system = get(&app, "?_type=Patient,Practitioner&_id=p1,pr1,o1").await;
        let (mut ids, _) = entries(&system.body);
        ids.sort();
        assert_eq!(ids, vec!["p1", "pr1"], "{b}: {:?}", system.body);
        let any = get(&app, "?_id=o1,p2&_sort=_id").await;
        assert_eq!(
            entries(&any.body).0,
            vec!["o1", "p2"],
            "{b}: {:?}",
            any.body
        );
        let posted = call(
            &app,
            "POST",
            &format!("{BASE}/_search"),
            &[("content-type", "application/x-www-form-urlencoded")],
            "_type=Condition&code=44054006",
        )
        .await;
        let (mut ids, _) = entries(&posted.body);
        ids.sort();
        assert_eq!(ids, vec!["c2", "c3"], "{b}: {:?}", posted.body);
    }
}

async fn put_patient(app: &axum::Router, id: &str, family: &str) -> Reply {
    let body = json!({"resourceType": "Patient", "id": id, "gender": "female",
                      "name": [{"family": family}]});
    call(
        app,
        "PUT",
        &format!("{BASE}/Patient/{id}"),
        &[JSON],
        body.to_string(),
    )
    .await
}

/// `total` counts each resource the search sees once, whether it was updated, deleted
/// or created since (a count from the index rows takes out what the search does not
/// see), on the first page and on the later pages of its snapshot, through a chain, and
/// through `_has` (stored resources only, from sources not deleted).
#[tokio::test]
async fn totals_count_each_match_the_search_sees_once() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        for n in 0..6 {
            assert_eq!(
                put_patient(&app, &format!("c{n}"), "Count").await.status,
                201
            );
            let obs = json!({"resourceType": "Observation", "id": format!("co{n}"),
                "status": "final", "code": {"text": "counted"},
                "subject": {"reference": format!("Patient/c{n}")}});
            let url = format!("{BASE}/Observation/co{n}");
            assert_eq!(
                call(&app, "PUT", &url, &[JSON], obs.to_string())
                    .await
                    .status,
                201
            );
        }
        let first = get(&app, "Patient?gender=female&family=count&_count=2").await;
        assert_eq!(first.body["total"], 6, "{b}: {:?}", first.body);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        assert_eq!(put_patient(&app, "c1", "Counted").await.status, 200, "{b}");
        let deleted = call(&app, "DELETE", &format!("{BASE}/Patient/c4"), &[], "").await;
        assert!(deleted.status < 300, "{b}: {:?}", deleted.body);
        assert_eq!(put_patient(&app, "c9", "Count").await.status, 201, "{b}");
        // A reference to a Patient that is not stored: `_has` finds no Patient through it.
        let ghost = json!({"resourceType": "Observation", "id": "co-ghost", "status": "final",
            "code": {"text": "counted"}, "subject": {"reference": "Patient/ghost"}});
        let url = format!("{BASE}/Observation/co-ghost");
        let put = call(&app, "PUT", &url, &[JSON], ghost.to_string()).await;
        assert_eq!(put.status, 201, "{b}: {:?}", put.body);
        // Two performers that both match a chain: one match (`performer` has many
        // elements per resource, so its count is of distinct Observations).
        let two = json!({"resourceType": "Observation", "id": "co-two", "status": "final",
            "code": {"text": "two performers"},
            "performer": [{"reference": "Patient/c0"}, {"reference": "Patient/c2"}]});
        let url = format!("{BASE}/Observation/co-two");
        let put = call(&app, "PUT", &url, &[JSON], two.to_string()).await;
        assert_eq!(put.status, 201, "{b}: {:?}", put.body);
        // A deleted Observation makes no Patient match through `_has`.
        let url = format!("{BASE}/Observation/co2");
        let deleted = call(&app, "DELETE", &url, &[], "").await;
        assert!(deleted.status < 300, "{b}: {:?}", deleted.body);

        let pages = pages_from(&app, &first.body).await;
        let ids: Vec<String> = pages.iter().flat_map(|p| entries(p).0).collect();
        assert_eq!(
            ids,
            ["c0", "c1", "c2", "c3", "c4", "c5"],
            "{b}: the snapshot's"
        );
        for page in &pages {
            assert_eq!(page["total"], 6, "{b}: the snapshot's total on every page");
        }
        for (query, total) in [
            ("Patient?gender=female&family=count", 6),
            ("Patient?family=count&gender=female", 6),
            ("Patient?family=counted", 1),
            ("Observation?subject.gender=female", 4),
            ("Observation?subject.family=counted&code:text=counted", 1),
            ("Observation?code:text=counted&subject:missing=false", 6),
            ("Observation?performer:Patient.family=count", 1),
            ("Patient?_has:Observation:subject:code:text=counted", 4),
            (
                "Patient?_has:Observation:subject:code:text=counted&family=counted",
                1,
            ),
        ] {
            let now = get(&app, query).await;
            assert_eq!(now.status, 200, "{b}: {query}: {:?}", now.body);
            assert_eq!(now.body["total"], total, "{b}: {query}: {:?}", now.body);
            let (seen, _, _) = follow_pages(&app, &format!("{query}&_count=2")).await;
            assert_eq!(seen.len(), total, "{b}: {query}: {seen:?}");
        }
    }
}

/// A deleted resource is not found by search; includes of the others stay.
#[tokio::test]
async fn deleted_resources_are_not_found() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let deleted = call(&app, "DELETE", &format!("{BASE}/Patient/p5"), &[], "").await;
        assert_eq!(deleted.status, 204, "{b}");
        let after = get(&app, "Patient?name=smith").await;
        assert_eq!(after.body["total"], 0, "{b}");
        let revinclude = get(&app, "Observation?_id=o8&_include=Observation:subject").await;
        assert_eq!(entries(&revinclude.body).1.len(), 1, "{b}: p4 still there");
    }
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them_or_warnings_when_lenient() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        for (query, named) in [
            ("Patient?foo=bar", "foo"),
            ("Patient?birthdate=yesterday", "birthdate"),
            ("Observation?value-quantity=lots", "value-quantity"),
            ("Patient?name:fuzzy=ada", "name:fuzzy"),
            ("Patient?gender:exact=male", "gender:exact"),
            ("Patient?_sort=nonsense", "_sort"),
            ("Patient?_count=-1", "_count"),
            ("Patient?_include=Patient:name", "_include"),
            ("Observation?subject.nonsense=1", "subject.nonsense"),
            (
                "Patient?_has:Observation:nonsense:code=1",
                "_has:Observation:nonsense:code",
            ),
            ("?_type=Patient,Observation&family=x", "family"),
            ("?name=x", "name"),
            ("?_type=Nonsense", "_type"),
        ] {
            let reply = get(&app, query).await;
            assert_eq!(reply.status, 400, "{b}: {query}: {:?}", reply.body);
            assert_eq!(reply.body["resourceType"], "OperationOutcome");
            assert!(
                reply.diagnostics().contains(named),
                "{b}: {query}: {}",
                reply.diagnostics()
            );
        }
        let unknown_type = get(&app, "Nonsense?name=x").await;
        assert_eq!(unknown_type.status, 404, "{b}");

        let lenient = call(
            &app,
            "GET",
            &format!("{BASE}/Patient?foo=bar&gender=female&birthdate=yesterday"),
            &[("prefer", "handling=lenient")],
            "",
        )
        .await;
        assert_eq!(lenient.status, 200, "{b}: {:?}", lenient.body);
        let (mut ids, _) = entries(&lenient.body);
        ids.sort();
        assert_eq!(
            ids,
            vec!["p1", "p3"],
            "{b}: the good parameters still apply"
        );
        let outcome = lenient.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["search"]["mode"] == "outcome")
            .expect("an outcome entry");
        let text = outcome["resource"].to_string();
        assert!(
            text.contains("foo") && text.contains("birthdate") && text.contains("warning"),
            "{b}: {text}"
        );
        let self_link = link(&lenient.body, "self").unwrap();
        assert!(
            !self_link.contains("foo") && self_link.contains("gender=female"),
            "{b}: {self_link}"
        );
    }
}

fn compartment(patient: &str) -> Access {
    Access::Within(vec![AccessConstraint::PatientCompartment(patient.into())])
}

/// The matched ids, sorted, and the included ids of a searchset's [`entries`].
fn sorted((mut ids, included): (Vec<String>, BTreeSet<String>)) -> (Vec<String>, Vec<String>) {
    ids.sort();
    (ids, included.into_iter().collect())
}

/// The strings of `v`, owned.
fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A patient-compartment constraint applies inside every search: matches, totals, chains,
/// `_has`, includes, paging and system searches see only what it allows.
#[tokio::test]
async fn access_constraints_apply_inside_every_search() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let p1 = app.clone().layer(axum::Extension(compartment("p1")));
        // Matches and totals.
        let obs = get(&p1, "Observation?_total=accurate").await;
        assert_eq!(
            sorted(entries(&obs.body)),
            (strings(&["o1", "o2", "o9"]), vec![]),
            "{b}"
        );
        assert_eq!(
            obs.body["total"], 3,
            "{b}: only visible resources are counted"
        );
        let count = get(&p1, "Observation?_summary=count").await;
        assert_eq!(count.body["total"], 3, "{b}");
        assert_eq!(get(&p1, "Observation?_id=o3").await.body["total"], 0, "{b}");
        // The Patient compartment of p1 holds p1 and the patient that links to it.
        let patients = get(&p1, "Patient").await;
        assert_eq!(
            sorted(entries(&patients.body)).0,
            strings(&["p1", "p4"]),
            "{b}"
        );
        // Chains and _has do not see through the constraint.
        assert_eq!(
            get(&p1, "Observation?subject.name=muller").await.body["total"],
            0,
            "{b}"
        );
        assert_eq!(
            get(&p1, "Patient?_has:Observation:patient:code=2339-0")
                .await
                .body["total"],
            0,
            "{b}"
        );
        // Includes: only what is visible; Practitioner and Organization are outside the compartment.
        let inc = get(
            &p1,
            "Observation?_include=Observation:performer&_include=Observation:subject",
        )
        .await;
        assert_eq!(
            sorted(entries(&inc.body)),
            (strings(&["o1", "o2", "o9"]), strings(&["p1"])),
            "{b}"
        );
        let rev = get(
            &p1,
            "Patient?_id=p1&_revinclude=Observation:subject&_revinclude=Condition:subject",
        )
        .await;
        assert_eq!(
            sorted(entries(&rev.body)),
            (strings(&["p1"]), strings(&["c1", "c4", "o1", "o2", "o9"])),
            "{b}"
        );
        let iterate = get(&p1, "Organization?_id=org1").await;
        assert_eq!(
            iterate.status, 403,
            "{b}: a type outside the compartment is refused"
        );
        let practitioners = get(&p1, "Practitioner?name=smith").await;
        assert_eq!(practitioners.status, 403, "{b}");
        assert!(
            practitioners
                .diagnostics()
                .contains("outside the patient compartment"),
            "{b}"
        );
        // Paging never passes another patient's resource.
        let (ids, pages, bodies) = follow_pages(&p1, "Observation?_count=1&_sort=_id").await;
        assert_eq!((ids, pages), (strings(&["o1", "o2", "o9"]), 3), "{b}");
        assert!(bodies.iter().all(|page| page["total"] == 3), "{b}");
        // System search: only visible types and resources.
        let system = get(&p1, "?_type=Observation,Practitioner&_id=o1,o3,pr1").await;
        assert_eq!(
            sorted(entries(&system.body)).0,
            strings(&["o1"]),
            "{b}: {:?}",
            system.body
        );
        let everything = get(&p1, "?_id=o1,o3,pr1,p1,p2").await;
        assert_eq!(
            sorted(entries(&everything.body)).0,
            strings(&["o1", "p1"]),
            "{b}: {:?}",
            everything.body
        );
    }
}

/// A patient-compartment constraint applies to reads, naming what is outside it.
#[tokio::test]
async fn access_constraints_apply_to_reads() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        let p1 = app.clone().layer(axum::Extension(compartment("p1")));
        let own = call(&p1, "GET", &format!("{BASE}/Observation/o1"), &[], "").await;
        assert_eq!(own.status, 200, "{b}");
        let other = call(&p1, "GET", &format!("{BASE}/Observation/o3"), &[], "").await;
        assert_eq!(other.status, 403, "{b}");
        assert!(
            other
                .diagnostics()
                .contains("Observation/o3 is outside the patient compartment of Patient/p1"),
            "{b}: {}",
            other.diagnostics()
        );
        let other_patient = call(&p1, "GET", &format!("{BASE}/Patient/p2"), &[], "").await;
        assert_eq!(other_patient.status, 403, "{b}");
    }
}

/// A scope's search constraint restricts its type only, includes too; with a compartment
/// both apply; a malformed one fails closed.
#[tokio::test]
async fn search_constraints_restrict_their_own_type_and_fail_closed() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        load(&app, b).await;
        // A scope's search constraint restricts its type only, includes too.
        let lab = app.clone().layer(axum::Extension(Access::Within(vec![
            AccessConstraint::Search {
                resource_type: rt("Observation"),
                params: vec![("category".into(), "laboratory".into())],
            },
        ])));
        assert_eq!(
            sorted(entries(&get(&lab, "Observation").await.body)).0,
            strings(&["o4", "o5"]),
            "{b}"
        );
        assert_eq!(get(&lab, "Patient").await.body["total"], 5, "{b}");
        let rev = get(&lab, "Patient?_id=p2&_revinclude=Observation:subject").await;
        assert_eq!(
            sorted(entries(&rev.body)),
            (strings(&["p2"]), strings(&["o4"])),
            "{b}"
        );
        let refused = call(&lab, "GET", &format!("{BASE}/Observation/o3"), &[], "").await;
        assert_eq!(refused.status, 403, "{b}");
        assert!(
            refused.diagnostics().contains("category=laboratory"),
            "{b}: {}",
            refused.diagnostics()
        );

        // Both at once: p2's laboratory results only.
        let both = app.clone().layer(axum::Extension(Access::Within(vec![
            AccessConstraint::PatientCompartment("p2".into()),
            AccessConstraint::Search {
                resource_type: rt("Observation"),
                params: vec![("category".into(), "laboratory".into())],
            },
        ])));
        assert_eq!(
            sorted(entries(&get(&both, "Observation").await.body)).0,
            strings(&["o4"]),
            "{b}"
        );

        // A malformed constraint fails closed.
        let broken = app.clone().layer(axum::Extension(Access::Within(vec![
            AccessConstraint::Search {
                resource_type: rt("Observation"),
                params: vec![("no-such".into(), "x".into())],
            },
        ])));
        assert_eq!(get(&broken, "Observation").await.status, 403, "{b}");
    }
}

/// A repository that answers hidden reads with 404 (`hidden_as_not_found`), holding
/// Observation x1 of Patient/a; and x1's content.
async fn hidden_repo_with_x1(
    db: &TestDb,
) -> (
    hestia::fhir::repository::Repository,
    serde_json::Map<String, Value>,
) {
    let (_, state) = app_on(db, "").await;
    let store = state.store().clone();
    let repo = hestia::fhir::repository::Repository::new(
        store,
        std::sync::Arc::new(hestia::fhir::repository::NoValidation),
        hestia::fhir::repository::RepositoryOptions {
            base_url: "http://localhost:8080/fhir/r4".into(),
            create_on_update: true,
            hidden_as_not_found: true,
            search_limits: Default::default(),
        },
    );
    let mut o = serde_json::Map::new();
    o.insert("resourceType".into(), json!("Observation"));
    o.insert("id".into(), json!("x1"));
    o.insert("status".into(), json!("final"));
    o.insert("code".into(), json!({"text": "t"}));
    o.insert("subject".into(), json!({"reference": "Patient/a"}));
    repo.update(
        None,
        rt("Observation"),
        "x1",
        o.clone(),
        None,
        &Access::Unrestricted,
    )
    .await
    .unwrap();
    (repo, o)
}

#[tokio::test]
async fn hidden_reads_can_answer_404() {
    for db in TestDb::all().await {
        let (repo, _) = hidden_repo_with_x1(&db).await;
        let err = repo
            .read_with(None, rt("Observation"), "x1", &compartment("b"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, hestia::fhir::error::FhirError::NotFound(_)),
            "{}: {err:?}",
            db.backend
        );
        let ok = repo
            .read_with(None, rt("Observation"), "x1", &compartment("a"))
            .await;
        assert!(ok.is_ok(), "{}", db.backend);
    }
}

/// Writes take the access decision and check it in their own transaction: outside it,
/// 403 (a write is not a read, whatever hidden_as says) and nothing stored.
#[tokio::test]
async fn writes_outside_the_access_are_forbidden_where_hidden_reads_are_404() {
    for db in TestDb::all().await {
        let (repo, o) = hidden_repo_with_x1(&db).await;
        let b = db.backend;
        let forbidden = |r: Result<_, hestia::fhir::error::FhirError>, what: &str| match r {
            Err(hestia::fhir::error::FhirError::Forbidden(_)) => {}
            other => panic!("{b}: {what}: {other:?}"),
        };
        let mut changed = o.clone();
        changed.insert("status".into(), json!("amended"));
        forbidden(
            repo.update(
                None,
                rt("Observation"),
                "x1",
                changed.clone(),
                None,
                &compartment("b"),
            )
            .await
            .map(|_| ()),
            "update",
        );
        let patch = json!([{"op": "replace", "path": "/status", "value": "amended"}]).to_string();
        forbidden(
            repo.patch(
                None,
                rt("Observation"),
                "x1",
                patch.as_bytes(),
                None,
                &compartment("b"),
            )
            .await
            .map(|_| ()),
            "patch",
        );
        forbidden(
            repo.delete(None, rt("Observation"), "x1", None, &compartment("b"))
                .await
                .map(|_| ()),
            "delete",
        );
        let current = repo.read(None, rt("Observation"), "x1").await.unwrap();
        assert_eq!(current.version_id, 1, "{b}: nothing stored");
        let written = repo
            .update(
                None,
                rt("Observation"),
                "x1",
                changed,
                None,
                &compartment("a"),
            )
            .await
            .unwrap();
        assert_eq!(written.version.version_id, 2, "{b}: within the access");
        repo.delete(None, rt("Observation"), "x1", None, &compartment("a"))
            .await
            .unwrap();
    }
}

/// A Patient with the MRN `mrn` (system `http://mrn`) and the family name `family`.
fn patient(mrn: &str, family: &str) -> String {
    json!({"resourceType": "Patient", "identifier": [{"system": "http://mrn", "value": mrn}], "name": [{"family": family}]}).to_string()
}

/// Stores a Patient with the MRN `mrn`, by PUT under `id` when given, else by POST; its id.
async fn store_patient(app: &axum::Router, mrn: &str, id: Option<&str>) -> String {
    let mut body: Value = serde_json::from_str(&patient(mrn, "Stored")).unwrap();
    let reply = match id {
        Some(id) => {
            body["id"] = json!(id);
            let uri = format!("{BASE}/Patient/{id}");
            call(app, "PUT", &uri, &[JSON], body.to_string()).await
        }
        None => {
            call(
                app,
                "POST",
                &format!("{BASE}/Patient"),
                &[JSON],
                body.to_string(),
            )
            .await
        }
    };
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// A conditional create (If-None-Exist) creates on no match, answers with the match on one
/// and refuses several.
#[tokio::test]
async fn conditional_create_creates_answers_or_refuses() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        let none_exist = ("if-none-exist", "identifier=http://mrn|A1");
        let first = call(
            &app,
            "POST",
            &format!("{BASE}/Patient"),
            &[JSON, none_exist],
            patient("A1", "One"),
        )
        .await;
        assert_eq!(first.status, 201, "{b}: no match creates");
        let id = first.body["id"].as_str().unwrap().to_owned();
        let second = call(
            &app,
            "POST",
            &format!("{BASE}/Patient"),
            &[JSON, none_exist],
            patient("A1", "Two"),
        )
        .await;
        assert_eq!(second.status, 200, "{b}: one match answers it");
        assert_eq!(second.body["id"], id.as_str());
        assert_eq!(
            second.body["name"][0]["family"], "One",
            "{b}: nothing written"
        );
        let dup = call(
            &app,
            "POST",
            &format!("{BASE}/Patient"),
            &[JSON],
            patient("A1", "Dup"),
        )
        .await;
        assert_eq!(dup.status, 201);
        let third = call(
            &app,
            "POST",
            &format!("{BASE}/Patient"),
            &[JSON, none_exist],
            patient("A1", "Three"),
        )
        .await;
        assert_eq!(third.status, 412, "{b}: several match");
        let all = get(&app, "Patient").await;
        assert_eq!(all.body["total"], 2, "{b}");
    }
}

/// A conditional update creates on no match (with the body's id when given), updates the one
/// match, and refuses several matches, a different id and missing or unknown criteria.
#[tokio::test]
async fn conditional_update_creates_updates_or_refuses() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        store_patient(&app, "A1", None).await;
        store_patient(&app, "A1", None).await;
        let created = call(
            &app,
            "PUT",
            &format!("{BASE}/Patient?identifier=http://mrn|B1"),
            &[JSON],
            patient("B1", "Bee"),
        )
        .await;
        assert_eq!(
            created.status, 201,
            "{b}: no match creates: {:?}",
            created.body
        );
        let b1 = created.body["id"].as_str().unwrap().to_owned();
        let updated = call(
            &app,
            "PUT",
            &format!("{BASE}/Patient?identifier=http://mrn|B1"),
            &[JSON],
            patient("B1", "Bumble"),
        )
        .await;
        assert_eq!(updated.status, 200, "{b}: {:?}", updated.body);
        assert_eq!(
            (
                updated.body["id"].as_str(),
                updated.body["meta"]["versionId"].as_str()
            ),
            (Some(b1.as_str()), Some("2")),
            "{b}"
        );
        let mut wrong_id: Value = serde_json::from_str(&patient("B1", "X")).unwrap();
        wrong_id["id"] = json!("someone-else");
        let mismatch = call(
            &app,
            "PUT",
            &format!("{BASE}/Patient?identifier=http://mrn|B1"),
            &[JSON],
            wrong_id.to_string(),
        )
        .await;
        assert_eq!(mismatch.status, 400, "{b}");
        let several = call(
            &app,
            "PUT",
            &format!("{BASE}/Patient?identifier=http://mrn|A1"),
            &[JSON],
            patient("A1", "X"),
        )
        .await;
        assert_eq!(several.status, 412, "{b}");
        let mut with_id: Value = serde_json::from_str(&patient("C1", "Sea")).unwrap();
        with_id["id"] = json!("c-one");
        let as_create = call(
            &app,
            "PUT",
            &format!("{BASE}/Patient?identifier=http://mrn|C1"),
            &[JSON],
            with_id.to_string(),
        )
        .await;
        assert_eq!(
            (as_create.status, as_create.body["id"].as_str()),
            (201, Some("c-one")),
            "{b}"
        );
        let no_criteria = call(
            &app,
            "PUT",
            &format!("{BASE}/Patient"),
            &[JSON],
            patient("D1", "Dee"),
        )
        .await;
        assert_eq!(no_criteria.status, 400, "{b}");
        let bad_criteria = call(
            &app,
            "PUT",
            &format!("{BASE}/Patient?nonsense=1"),
            &[JSON],
            patient("D1", "Dee"),
        )
        .await;
        assert_eq!(bad_criteria.status, 400, "{b}");
    }
}

/// A conditional delete refuses several matches, does nothing on none and deletes the one
/// match; under a constraint it sees only what the access allows.
#[tokio::test]
async fn conditional_delete_deletes_the_one_visible_match() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        store_patient(&app, "A1", None).await;
        store_patient(&app, "A1", None).await;
        let b1 = store_patient(&app, "B1", None).await;
        store_patient(&app, "C1", Some("c-one")).await;
        let many = call(
            &app,
            "DELETE",
            &format!("{BASE}/Patient?identifier=http://mrn|A1"),
            &[],
            "",
        )
        .await;
        assert_eq!(many.status, 412, "{b}");
        let nothing = call(
            &app,
            "DELETE",
            &format!("{BASE}/Patient?identifier=http://mrn|Z9"),
            &[],
            "",
        )
        .await;
        assert_eq!(nothing.status, 204, "{b}");
        let one = call(
            &app,
            "DELETE",
            &format!("{BASE}/Patient?identifier=http://mrn|B1"),
            &[],
            "",
        )
        .await;
        assert_eq!(one.status, 204, "{b}");
        let gone = call(&app, "GET", &format!("{BASE}/Patient/{b1}"), &[], "").await;
        assert_eq!(gone.status, 410, "{b}");

        // Under a constraint, conditional matching sees only what the access allows.
        let limited = app.clone().layer(axum::Extension(compartment("nobody")));
        let hidden = call(
            &limited,
            "DELETE",
            &format!("{BASE}/Patient?identifier=http://mrn|C1"),
            &[],
            "",
        )
        .await;
        assert_eq!(hidden.status, 204, "{b}");
        let still = call(&app, "GET", &format!("{BASE}/Patient/c-one"), &[], "").await;
        assert_eq!(still.status, 200, "{b}: not deleted: it was not visible");
    }
}

/// Resources of the package that are refused, each for what it breaks: `(type/id, status,
/// what the OperationOutcome says)`.
const REFUSED_EXAMPLES: &[(&str, u16, &str)] = &[
    // Not valid R4: SearchParameter.base is 1..* and these have none.
    (
        "SearchParameter/codesystem-extensions-CodeSystem-author",
        422,
        "SearchParameter.base is required",
    ),
    (
        "SearchParameter/codesystem-extensions-CodeSystem-effective",
        422,
        "SearchParameter.base is required",
    ),
    (
        "SearchParameter/codesystem-extensions-CodeSystem-end",
        422,
        "SearchParameter.base is required",
    ),
    (
        "SearchParameter/codesystem-extensions-CodeSystem-keyword",
        422,
        "SearchParameter.base is required",
    ),
    (
        "SearchParameter/codesystem-extensions-CodeSystem-workflow",
        422,
        "SearchParameter.base is required",
    ),
    (
        "SearchParameter/valueset-extensions-ValueSet-author",
        422,
        "SearchParameter.base is required",
    ),
    (
        "SearchParameter/valueset-extensions-ValueSet-effective",
        422,
        "SearchParameter.base is required",
    ),
    (
        "SearchParameter/valueset-extensions-ValueSet-end",
        422,
        "SearchParameter.base is required",
    ),
    (
        "SearchParameter/valueset-extensions-ValueSet-keyword",
        422,
        "SearchParameter.base is required",
    ),
    (
        "SearchParameter/valueset-extensions-ValueSet-workflow",
        422,
        "SearchParameter.base is required",
    ),
    // Not valid R4: an id is at most 64 characters; this one has 68.
    (
        "SearchParameter/questionnaireresponse-extensions-QuestionnaireResponse-item-subject",
        400,
        "is not a valid resource id",
    ),
    // Not valid R4: ImplementationGuide.name and .status are 1..1 and the package's own
    // guide (two files of the same id) has neither.
    (
        "ImplementationGuide/fhir",
        422,
        "ImplementationGuide.name is required",
    ),
    // Not valid R4: nested items without their required `linkId` (1..1).
    (
        "Questionnaire/qs1",
        422,
        "Questionnaire.item[0].item[0].linkId is required",
    ),
];

/// The acceptance test of the FHIR core: every non-Bundle resource of
/// `hl7.fhir.r4.examples@4.0.1` (selected by `tools/fhir-defs/examples.py`: the examples
/// and the specification's own definitions) is created with `PUT` and read back equal
/// apart from `meta`, except those of [`REFUSED_EXAMPLES`], which are refused as said.
#[tokio::test]
async fn every_r4_example_round_trips() {
    let packed = include_bytes!("../../fixtures/r4-examples.json.zst");
    let text = zstd::decode_all(&packed[..]).expect("zstd fixture");
    let examples: Vec<Value> = serde_json::from_slice(&text).expect("examples are JSON");
    // Every non-Bundle resource of the package (tools/fhir-defs/examples.py).
    assert_eq!(examples.len(), 5262, "examples");
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        let started = std::time::Instant::now();
        let mut failures = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut refused = std::collections::HashSet::new();
        for example in &examples {
            let ty = example["resourceType"].as_str().unwrap();
            let id = example["id"].as_str().unwrap();
            let url = format!("{BASE}/{ty}/{id}");
            let put = call(&app, "PUT", &url, &[JSON], example.to_string()).await;
            let key = format!("{ty}/{id}");
            if let Some((_, status, why)) = REFUSED_EXAMPLES.iter().find(|r| r.0 == key) {
                if put.status != *status || !put.diagnostics().contains(why) {
                    failures.push(format!(
                        "PUT {url}: {} {}, expected {status} {why}",
                        put.status,
                        put.diagnostics()
                    ));
                }
                refused.insert(key);
                continue;
            }
            // The package has two files for some ids: the second updates.
            let want = if seen.insert((ty, id)) { 201 } else { 200 };
            if put.status != want {
                failures.push(format!("PUT {url}: {} {}", put.status, put.diagnostics()));
                continue;
            }
            let read = call(&app, "GET", &url, &[], "").await;
            let without_meta = |v: &Value| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("meta");
                }
                v
            };
            if read.status != 200 || without_meta(&read.body) != without_meta(example) {
                failures.push(format!("GET {url}: {} differs", read.status));
            }
        }
        assert!(
            failures.is_empty(),
            "{b}: {} of {} examples failed:\n{}",
            failures.len(),
            examples.len(),
            failures.join("\n")
        );
        assert_eq!(refused.len(), REFUSED_EXAMPLES.len(), "{b}: {refused:?}");
        eprintln!(
            "{b}: {} resources created and read back in {:?}",
            examples.len(),
            started.elapsed()
        );
        // The examples are searchable: a few spot checks across the index.
        let patients = get(&app, "Patient?_summary=count").await;
        assert!(patients.body["total"].as_u64().unwrap() >= 20, "{b}");
        let example = get(&app, "Patient?_id=example&_revinclude=Observation:subject").await;
        assert!(
            entries(&example.body).1.len() >= 5,
            "{b}: {:?}",
            entries(&example.body)
        );
    }
}

/// `hestia fhir reindex` rebuilds index rows that a database lacks (as one written by an
/// older build would), from each resource's current content, beside a serving app; a
/// deleted resource is left as it is, and a bad `--type` is refused.
/// The searches the reindex test runs: one per kind of index row it drops.
const REINDEX_SEARCHES: [&str; 3] = [
    "Observation?code=http://loinc.org|85354-9",
    "Observation?component-code-value-quantity=http://loinc.org|8480-6$120",
    "Patient?family=reindexed",
];

/// The ids of the matches of `search` (relative to the base).
pub(crate) async fn search_ids(app: &axum::Router, search: &str) -> Vec<String> {
    let reply = call(app, "GET", &format!("{BASE}/{search}"), &[], "").await;
    assert_eq!(reply.status, 200, "{search}: {}", reply.body);
    reply.body["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Blood pressures bp1 and bp2 (deleted) and Patient p1 of family Reindexed.
async fn put_reindex_fixture(app: &axum::Router, b: &str) {
    let observation = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                       "valueQuantity": {"value": 120, "unit": "mmHg"}}]});
    let patient = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Reindexed"}]});
    let mut resources = vec![patient];
    for id in ["bp1", "bp2"] {
        let mut body = observation.clone();
        body["id"] = json!(id);
        resources.push(body);
    }
    for body in resources {
        let uri = format!(
            "{BASE}/{}/{}",
            body["resourceType"].as_str().unwrap(),
            body["id"].as_str().unwrap()
        );
        let put = call(app, "PUT", &uri, &[JSON], body.to_string()).await;
        assert_eq!(put.status, 201, "{b}: {}", put.body);
    }
    let deleted = call(app, "DELETE", &format!("{BASE}/Observation/bp2"), &[], "").await;
    assert_eq!(deleted.status, 204, "{b}");
}

#[tokio::test]
async fn reindex_rebuilds_missing_index_rows_on_both_databases() {
    for db in TestDb::all().await {
        let (app, _) = app_on(&db, "").await;
        let b = db.backend;
        put_reindex_fixture(&app, b).await;
        for search in REINDEX_SEARCHES {
            assert_eq!(search_ids(&app, search).await.len(), 1, "{b}: {search}");
        }

        // The database loses its index rows, as one indexed by an older build would lack them.
        let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
        for table in ["fhir_idx_token", "fhir_idx_quantity", "fhir_idx_string"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&raw)
                .await
                .unwrap();
        }
        for search in REINDEX_SEARCHES {
            assert!(search_ids(&app, search).await.is_empty(), "{b}: {search}");
        }

        let dir = tempfile::tempdir().unwrap();
        let db_flag = format!("--database-url={}", db.url);
        let (ok, _, err) = crate::support::hestia(
            dir.path(),
            &["fhir", "reindex", "--type", "Observaton", &db_flag],
            "",
        );
        assert!(
            !ok && err.contains("Observaton: not a FHIR R4 resource type"),
            "{err}"
        );
        // `hestia fhir reindex ARGS` on this database: what it printed.
        let reindex = |args: &[&str]| {
            let mut all = vec!["fhir", "reindex", db_flag.as_str()];
            all.extend_from_slice(args);
            let (ok, out, err) = crate::support::hestia(dir.path(), &all, "");
            assert!(ok, "{b}: {err}");
            serde_json::from_str::<Value>(&out).unwrap()
        };
        assert_eq!(
            reindex(&["--type", "Observation"]),
            json!({"reindexed": 1, "gone": 0, "failed": []})
        );
        // Only Observations.
        for (search, want) in REINDEX_SEARCHES.iter().zip([&["bp1"][..], &["bp1"], &[]]) {
            assert_eq!(search_ids(&app, search).await, want, "{b}: {search}");
        }
        // Every type; the deleted bp2 keeps no rows and is not counted.
        assert_eq!(
            reindex(&[]),
            json!({"reindexed": 2, "gone": 0, "failed": []})
        );
        assert_eq!(search_ids(&app, REINDEX_SEARCHES[2]).await, ["p1"], "{b}");
        let tokens: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM fhir_idx_token WHERE rk = \
                 (SELECT rk FROM fhir_resources WHERE id = 'bp2')",
        )
        .fetch_one(&raw)
        .await
        .unwrap();
        assert_eq!(tokens, 0, "{b}");
    }
}

/// The planners' statistics: the 1,024th write transaction of a process starts
/// `Store::analyze`, which writes them (SQLite's `sqlite_stat1`; PostgreSQL's
/// `last_analyze`, apart from autovacuum's). Without them SQLite chose the index holding
/// every reference row of the type for a `_revinclude` of one patient, and PostgreSQL
/// compared every pair in a chained search.
#[tokio::test]
async fn planner_statistics_follow_the_writes() {
    for db in TestDb::all().await {
        let store = hestia::store::Store::open(&db.url).await.unwrap();
        let repo = hestia::fhir::repository::Repository::new(
            store.clone(),
            std::sync::Arc::new(hestia::fhir::repository::NoValidation),
            hestia::fhir::repository::RepositoryOptions {
                base_url: "http://localhost:8080/fhir/r4".into(),
                create_on_update: true,
                hidden_as_not_found: false,
                search_limits: Default::default(),
            },
        );
        let analyzed = || async {
            if db.backend == "sqlite" {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl = 'fhir_idx_reference'",
                )
                .fetch_one(store.pool())
                .await
                .is_ok_and(|n| n > 0)
            } else {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM pg_stat_user_tables \
                     WHERE relname = 'fhir_idx_reference' AND last_analyze IS NOT NULL",
                )
                .fetch_one(store.pool())
                .await
                .unwrap()
                    > 0
            }
        };
        let create = |subject: String| {
            let o = json!({"resourceType": "Observation", "status": "final",
                "code": {"text": "t"}, "subject": {"reference": subject}});
            repo.create(
                None,
                rt("Observation"),
                hestia::fhir::repository::new_id(),
                o.as_object().unwrap().clone(),
            )
        };
        assert!(
            !analyzed().await,
            "{}: no statistics before any write",
            db.backend
        );
        for i in 0..1023 {
            create(format!("Patient/p{}", i % 50)).await.unwrap();
        }
        assert!(
            !analyzed().await,
            "{}: none after 1,023 writes either",
            db.backend
        );
        create("Patient/p0".into()).await.unwrap();
        // The 1,024th started it in the background.
        let mut done = false;
        for _ in 0..100 {
            done = analyzed().await;
            if done {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(done, "{}: statistics after 1,024 writes", db.backend);
        store.analyze().await.expect("and on demand");
        if db.backend != "sqlite" {
            continue;
        }
        // The new statistics are read by connections opened after them; a new store's are.
        let fresh = hestia::store::Store::open(&db.url).await.unwrap();
        let plan: Vec<String> = sqlx::query(
            "EXPLAIN QUERY PLAN SELECT DISTINCT f.resource_type, f.rk \
             FROM fhir_idx_reference f WHERE f.resource_type = 'Observation' \
             AND f.target_type = 'Patient' AND f.target_id IN ('p7') AND f.param = 'subject'",
        )
        .fetch_all(fresh.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
        .collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("fhir_idx_reference_by_target")),
            "one patient's referring rows come from the target index: {plan:?}"
        );
    }
}

/// The last migration before string rows recorded their part of a name or address.
const SCHEMA_BEFORE_PARTS: i64 = 28;

/// A database whose string rows were written before they recorded their part (`family`
/// and `given` rows of their own beside `name`'s, `address-city` beside `address`'s) is
/// migrated to rows of the whole with their parts: every search finds what it found, and
/// the part rows of their own are gone.
#[tokio::test]
async fn string_rows_written_before_parts_are_migrated_to_parts() {
    use hestia::store::Store;
    for db in TestDb::all().await {
        let b = db.backend;
        let store = Store::connect(&db.url).await.unwrap();
        store.migrate_to(Some(SCHEMA_BEFORE_PARTS)).await.unwrap();
        let patient = json!({"resourceType": "Patient", "id": "old", "meta": {"versionId": "1", "lastUpdated": "2023-11-14T22:13:20Z"},
            "name": [{"family": "Dr", "given": ["Ann"], "prefix": ["Dr"], "text": "Ann Older"}],
            "address": [{"city": "Lyon", "line": ["1 Rue"]}]});
        sqlx::query(
            "INSERT INTO fhir_resources (resource_type, id, version_id, last_updated, deleted, content) \
             VALUES ('Patient', 'old', 1, 1700000000000, 0, $1)",
        )
        .bind(patient.to_string())
        .execute(store.pool())
        .await
        .unwrap();
        // The rows that build wrote: `name` and `address` without parts, and the parts'
        // parameters' own.
        for (param, value) in [
            ("name", "Dr"),
            ("name", "Ann"),
            ("name", "Ann Older"),
            ("family", "Dr"),
            ("given", "Ann"),
            ("address", "Lyon"),
            ("address", "1 Rue"),
            ("address-city", "Lyon"),
        ] {
            sqlx::query(
                "INSERT INTO fhir_idx_string (resource_type, rk, param, normalized, exact) \
                 SELECT 'Patient', rk, $1, $2, $3 FROM fhir_resources WHERE id = 'old'",
            )
            .bind(param)
            .bind(value.to_lowercase())
            .bind(value)
            .execute(store.pool())
            .await
            .unwrap();
        }
        store.close().await;

        let (app, _) = app_on(&db, "").await;
        for (search, found) in [
            ("Patient?family=dr", true),
            ("Patient?given=ann", true),
            ("Patient?given=dr", false),
            ("Patient?family=ann", false),
            ("Patient?name=dr", true),
            ("Patient?name=ann%20older", true),
            ("Patient?address-city=lyon", true),
            ("Patient?address-city=1%20rue", false),
            ("Patient?address=1%20rue", true),
        ] {
            assert_eq!(
                search_ids(&app, search).await,
                if found {
                    vec!["old".to_string()]
                } else {
                    vec![]
                },
                "{b}: {search}"
            );
        }
        let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT param, exact, part FROM fhir_idx_string ORDER BY param, exact, part",
        )
        .fetch_all(&raw)
        .await
        .unwrap();
        let rows: Vec<(&str, &str, Option<&str>)> = rows
            .iter()
            .map(|(p, e, part)| (p.as_str(), e.as_str(), part.as_deref()))
            .collect();
        assert_eq!(
            rows,
            [
                ("address", "1 Rue", None),
                ("address", "Lyon", Some("city")),
                ("name", "Ann", Some("given")),
                ("name", "Ann Older", None),
                ("name", "Dr", Some("family")),
            ],
            "{b}"
        );
        raw.close().await;
    }
}
