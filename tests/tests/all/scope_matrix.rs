//! The SMART scope matrix (issue #6): v1 and v2 scopes in patient, user and system
//! context against read, vread, search, `_include`/`_revinclude`, history (instance, type,
//! system), create, update and delete, through the default `smart-scopes` plugin and the
//! store, on both databases and with both answers to a hidden read (`fhir.hidden_as`).
//! Each row is a token, a request and exactly what must come back: the ids of a Bundle in
//! order, its total, or the status and the reason of a refusal.

use serde_json::{Value, json};

use crate::support::{Reply, TestDb, call, mint, raw_app_on};

/// What a row expects.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 200 with this resource (`Type/id`).
    Read(&'static str),
    /// A searchset: `total` and its entries in order, `Type/id` for a match and
    /// `+Type/id` for an include.
    Search(i64, &'static [&'static str]),
    /// A searchset of which only the total is known (ids assigned by the server).
    Total(i64),
    /// A history Bundle with exactly these entries (`Type/id`, sorted; total = count).
    History(&'static [&'static str]),
    /// A searchset or history read page by page through its `next` links: every page
    /// reports this total, a page past the last one is never offered, `previous` links
    /// go back, and the pages' matches (`Type/id`, sorted) are exactly these.
    Pages(i64, &'static [&'static str]),
    /// This status, nothing else asserted (a successful write, a 410).
    Status(u16),
    /// 403 whose `WWW-Authenticate` and OperationOutcome contain the text.
    Refused(&'static str),
    /// A read of a resource outside the token's access: like `Refused` by default, 404
    /// "is not known" under `fhir.hidden_as = "not-found"`.
    Hidden(&'static str),
}

use Expect::*;

/// One row: scopes, the launch patient, `METHOD path`, the body (for writes) and the outcome.
struct Row {
    scope: &'static str,
    patient: Option<&'static str>,
    request: &'static str,
    body: Option<Value>,
    expect: Expect,
}

fn row(
    scope: &'static str,
    patient: Option<&'static str>,
    request: &'static str,
    expect: Expect,
) -> Row {
    Row {
        scope,
        patient,
        request,
        body: None,
        expect,
    }
}

fn write(
    scope: &'static str,
    patient: Option<&'static str>,
    request: &'static str,
    body: Value,
    expect: Expect,
) -> Row {
    Row {
        scope,
        patient,
        request,
        body: Some(body),
        expect,
    }
}

fn observation(id: Option<&str>, patient: &str, category: &str) -> Value {
    let mut o = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": category,
        }]}],
        "code": {"text": category},
        "subject": {"reference": format!("Patient/{patient}")},
    });
    if let Some(id) = id {
        o["id"] = json!(id);
    }
    o
}

fn patient(id: Option<&str>) -> Value {
    let mut p = json!({"resourceType": "Patient", "name": [{"family": "Matrix"}]});
    if let Some(id) = id {
        p["id"] = json!(id);
    }
    p
}

/// Two patients, a practitioner, three Observations (two of p1: laboratory and vital
/// signs, one of p2: laboratory) and a Condition of p1, written with a system token.
async fn seed(app: &axum::Router, state: &hestia::http::AppState) {
    let admin = mint(state, json!({"scope": "system/*.*"})).await;
    let auth = format!("Bearer {admin}");
    let mut o1_lab = observation(Some("o1-lab"), "p1", "laboratory");
    o1_lab["performer"] = json!([{"reference": "Practitioner/dr1"}]);
    let resources = [
        json!({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Who"}]}),
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Smith"}],
               "generalPractitioner": [{"reference": "Practitioner/dr1"}]}),
        json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Jones"}]}),
        o1_lab,
        observation(Some("o1-vital"), "p1", "vital-signs"),
        observation(Some("o2-lab"), "p2", "laboratory"),
        json!({"resourceType": "Condition", "id": "c1", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
    ];
    for r in resources {
        let path = format!(
            "/fhir/r4/{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        let reply = call(
            app,
            "PUT",
            &path,
            &[
                ("content-type", "application/fhir+json"),
                ("authorization", auth.as_str()),
            ],
            r.to_string(),
        )
        .await;
        assert_eq!(reply.status, 201, "seed {path}: {:?}", reply.body);
    }
}

const ALL_SEEDED: &[&str] = &[
    "Condition/c1",
    "Observation/o1-lab",
    "Observation/o1-vital",
    "Observation/o2-lab",
    "Patient/p1",
    "Patient/p2",
    "Practitioner/dr1",
];
const ALL_OBS: &[&str] = &[
    "Observation/o1-lab",
    "Observation/o1-vital",
    "Observation/o2-lab",
];
const P1_OBS: &[&str] = &["Observation/o1-lab", "Observation/o1-vital"];

const OBS: &str = "GET Observation";
const OBS_INCLUDE_SUBJECT: &str = "GET Observation?_include=Observation:subject";
const OBS_INCLUDE_PERFORMER: &str = "GET Observation?_include=Observation:performer";
const PATIENT_REVINCLUDE_OBS: &str = "GET Patient?_revinclude=Observation:subject";
const PATIENT_INCLUDE_GP: &str = "GET Patient?_include=Patient:general-practitioner";
const SYSTEM_SEARCH: &str = "GET ?_type=Observation,Patient";

/// Reads, searches and histories: nothing here changes the data.
/// Long: one table of rows, each a scope, a patient context, a request and its expected answer.
fn read_rows() -> Vec<Row> {
    let p1 = Some("p1");
    let compartment = "is outside the patient compartment of Patient/p1";
    vec![
        // ---- SMART v1 ----
        // patient/*.read: the compartment of p1, everywhere.
        row("patient/*.read", p1, "GET Patient/p1", Read("Patient/p1")),
        row(
            "patient/*.read",
            p1,
            "GET Patient/p2",
            Hidden("Patient/p2 is outside the patient compartment of Patient/p1"),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Observation/o1-lab",
            Read("Observation/o1-lab"),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Observation/o2-lab",
            Hidden("Observation/o2-lab is outside the patient compartment of Patient/p1"),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Practitioner/dr1",
            Hidden("Practitioner/dr1 is outside the patient compartment of Patient/p1"),
        ),
        row("patient/*.read", p1, OBS, Search(2, P1_OBS)),
        row(
            "patient/*.read",
            p1,
            OBS_INCLUDE_SUBJECT,
            Search(
                2,
                &["Observation/o1-lab", "Observation/o1-vital", "+Patient/p1"],
            ),
        ),
        row(
            "patient/*.read",
            p1,
            OBS_INCLUDE_PERFORMER,
            Search(2, P1_OBS),
        ),
        row(
            "patient/*.read",
            p1,
            PATIENT_REVINCLUDE_OBS,
            Search(
                1,
                &["Patient/p1", "+Observation/o1-lab", "+Observation/o1-vital"],
            ),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Practitioner",
            Refused("Practitioner resources are outside the patient compartment of Patient/p1"),
        ),
        row(
            "patient/*.read",
            p1,
            SYSTEM_SEARCH,
            Search(
                3,
                &["Patient/p1", "Observation/o1-lab", "Observation/o1-vital"],
            ),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Observation/o1-lab/_history",
            History(&["Observation/o1-lab"]),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Observation/o2-lab/_history",
            Hidden(compartment),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Observation/o1-lab/_history/1",
            Read("Observation/o1-lab"),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Observation/o2-lab/_history/1",
            Hidden(compartment),
        ),
        // Type and system history: versions of the resources the token may see, only.
        row(
            "patient/*.read",
            p1,
            "GET Observation/_history",
            History(P1_OBS),
        ),
        row(
            "patient/*.read",
            p1,
            "GET _history",
            History(&[
                "Condition/c1",
                "Observation/o1-lab",
                "Observation/o1-vital",
                "Patient/p1",
            ]),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Observation/_history?_count=1",
            Pages(2, P1_OBS),
        ),
        row(
            "patient/*.read",
            p1,
            "GET _history?_count=1&_since=2000-01-01",
            Pages(
                4,
                &[
                    "Patient/p1",
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Condition/c1",
                ],
            ),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Observation/_history?_since=2999-01-01",
            History(&[]),
        ),
        row(
            "patient/*.read",
            p1,
            "GET Practitioner/_history",
            Refused("Practitioner resources are outside the patient compartment of Patient/p1"),
        ),
        row(
            "patient/*.read",
            None,
            "GET Patient/p1",
            Refused("patient/ scope without a patient context"),
        ),
        // user/Observation.read: every Observation, nothing else (not even as an include).
        row(
            "user/Observation.read",
            None,
            "GET Observation/o2-lab",
            Read("Observation/o2-lab"),
        ),
        row(
            "user/Observation.read",
            None,
            "GET Patient/p1",
            Refused("plugin smart-scopes denied: no granted scope permits read of Patient"),
        ),
        row("user/Observation.read", None, OBS, Search(3, ALL_OBS)),
        row(
            "user/Observation.read",
            None,
            OBS_INCLUDE_SUBJECT,
            Search(3, ALL_OBS),
        ),
        row(
            "user/Observation.read",
            None,
            SYSTEM_SEARCH,
            Refused("no granted scope permits search of all resource types"),
        ),
        row(
            "user/Observation.read",
            None,
            "GET Observation/o2-lab/_history",
            History(&["Observation/o2-lab"]),
        ),
        row(
            "user/Observation.read",
            None,
            "GET Observation/_history",
            History(ALL_OBS),
        ),
        row(
            "user/Observation.read",
            None,
            "GET _history",
            Refused("no granted scope permits search of all resource types"),
        ),
        // user/Observation.write: writes only.
        row(
            "user/Observation.write",
            None,
            "GET Observation/o1-lab",
            Refused("no granted scope permits read of Observation"),
        ),
        row(
            "user/Observation.write",
            None,
            OBS,
            Refused("no granted scope permits search of Observation"),
        ),
        // system/*.* and system/*.read: everything.
        row("system/*.*", None, "GET Patient/p2", Read("Patient/p2")),
        row(
            "system/*.*",
            None,
            OBS_INCLUDE_SUBJECT,
            Search(
                3,
                &[
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Observation/o2-lab",
                    "+Patient/p1",
                    "+Patient/p2",
                ],
            ),
        ),
        row(
            "system/*.*",
            None,
            SYSTEM_SEARCH,
            Search(
                5,
                &[
                    "Patient/p1",
                    "Patient/p2",
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Observation/o2-lab",
                ],
            ),
        ),
        row("system/*.*", None, "GET _history", History(ALL_SEEDED)),
        row(
            "system/*.read",
            None,
            "GET Practitioner/dr1",
            Read("Practitioner/dr1"),
        ),
        row(
            "system/*.read",
            None,
            "GET Observation/_history",
            History(ALL_OBS),
        ),
        // ---- SMART v2 ----
        // patient/Observation.rs: p1's Observations; no Patient, not even included.
        row(
            "patient/Observation.rs",
            p1,
            "GET Observation/o1-vital",
            Read("Observation/o1-vital"),
        ),
        row(
            "patient/Observation.rs",
            p1,
            "GET Observation/o2-lab",
            Hidden("Observation/o2-lab is outside the patient compartment of Patient/p1"),
        ),
        row(
            "patient/Observation.rs",
            p1,
            "GET Patient/p1",
            Refused("no granted scope permits read of Patient"),
        ),
        row("patient/Observation.rs", p1, OBS, Search(2, P1_OBS)),
        row(
            "patient/Observation.rs",
            p1,
            OBS_INCLUDE_SUBJECT,
            Search(2, P1_OBS),
        ),
        row(
            "patient/Observation.rs",
            p1,
            "GET Condition",
            Refused("no granted scope permits search of Condition"),
        ),
        row(
            "patient/Observation.rs",
            p1,
            "GET Observation/_history",
            History(P1_OBS),
        ),
        row(
            "patient/Observation.r",
            p1,
            OBS,
            Refused("no granted scope permits search of Observation"),
        ),
        row(
            "patient/Observation.s",
            p1,
            "GET Observation/o1-lab",
            Refused("no granted scope permits read of Observation"),
        ),
        // patient/Observation.rs?category=laboratory: p1's laboratory results only.
        row(
            "patient/Observation.rs?category=laboratory",
            p1,
            "GET Observation/o1-lab",
            Read("Observation/o1-lab"),
        ),
        row(
            "patient/Observation.rs?category=laboratory",
            p1,
            "GET Observation/o1-vital",
            Hidden(
                "Observation/o1-vital is outside the patient compartment of Patient/p1 or does not match the granted search Observation?category=laboratory",
            ),
        ),
        row(
            "patient/Observation.rs?category=laboratory",
            p1,
            OBS,
            Search(1, &["Observation/o1-lab"]),
        ),
        row(
            "patient/Observation.rs?category=laboratory",
            p1,
            "GET Observation?category=vital-signs",
            Search(0, &[]),
        ),
        row(
            "patient/Observation.rs?category=laboratory",
            p1,
            "GET Observation/o1-vital/_history",
            Hidden("does not match the granted search Observation?category=laboratory"),
        ),
        row(
            "patient/Observation.rs?category=laboratory",
            p1,
            "GET Observation/o1-vital/_history/1",
            Hidden("does not match the granted search Observation?category=laboratory"),
        ),
        // ... with the Patient: a reverse include keeps to the laboratory results.
        row(
            "patient/Observation.rs?category=laboratory patient/Patient.rs",
            p1,
            PATIENT_REVINCLUDE_OBS,
            Search(1, &["Patient/p1", "+Observation/o1-lab"]),
        ),
        row(
            "patient/Observation.rs?category=laboratory patient/Patient.rs",
            p1,
            OBS_INCLUDE_SUBJECT,
            Search(1, &["Observation/o1-lab", "+Patient/p1"]),
        ),
        // user/Patient.cruds: Patients only; their Observations and practitioners stay out.
        row(
            "user/Patient.cruds",
            None,
            "GET Patient/p2",
            Read("Patient/p2"),
        ),
        row(
            "user/Patient.cruds",
            None,
            "GET Patient",
            Search(2, &["Patient/p1", "Patient/p2"]),
        ),
        row(
            "user/Patient.cruds",
            None,
            PATIENT_REVINCLUDE_OBS,
            Search(2, &["Patient/p1", "Patient/p2"]),
        ),
        row(
            "user/Patient.cruds",
            None,
            PATIENT_INCLUDE_GP,
            Search(2, &["Patient/p1", "Patient/p2"]),
        ),
        row(
            "user/Patient.cruds",
            None,
            "GET Observation/o1-lab",
            Refused("no granted scope permits read of Observation"),
        ),
        row(
            "user/Patient.cruds",
            None,
            "GET Patient/_history",
            History(&["Patient/p1", "Patient/p2"]),
        ),
        // user/Observation.rs?category=laboratory: every patient's laboratory results.
        row(
            "user/Observation.rs?category=laboratory",
            None,
            OBS,
            Search(2, &["Observation/o1-lab", "Observation/o2-lab"]),
        ),
        row(
            "user/Observation.rs?category=laboratory",
            None,
            "GET Observation/o1-vital",
            Hidden(
                "Observation/o1-vital does not match the granted search Observation?category=laboratory",
            ),
        ),
        row(
            "user/Observation.rs?category=laboratory",
            None,
            "GET Observation/_history",
            History(&["Observation/o1-lab", "Observation/o2-lab"]),
        ),
        row(
            "patient/Observation.rs?category=laboratory",
            p1,
            "GET Observation/_history",
            History(&["Observation/o1-lab"]),
        ),
        // user/*.rs and system/*.rs: everything to read, including across types.
        row(
            "user/*.rs",
            None,
            PATIENT_INCLUDE_GP,
            Search(2, &["Patient/p1", "Patient/p2", "+Practitioner/dr1"]),
        ),
        row(
            "system/*.rs",
            None,
            "GET Observation/o2-lab",
            Read("Observation/o2-lab"),
        ),
        row(
            "system/*.rs",
            None,
            OBS_INCLUDE_PERFORMER,
            Search(
                3,
                &[
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Observation/o2-lab",
                    "+Practitioner/dr1",
                ],
            ),
        ),
        row(
            "system/*.rs",
            None,
            SYSTEM_SEARCH,
            Search(
                5,
                &[
                    "Patient/p1",
                    "Patient/p2",
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Observation/o2-lab",
                ],
            ),
        ),
        row("system/*.rs", None, "GET _history", History(ALL_SEEDED)),
    ]
    .into_iter()
    .chain(reach_rows())
    .collect()
}

/// Chains, `_has`, includes, `$everything`, totals and pages: what a request reaches
/// beyond its own resource type stays within the token's access to that other type.
/// Long: one table of rows, each a scope, a patient context, a request and its expected answer.
fn reach_rows() -> Vec<Row> {
    let p1 = Some("p1");
    let p1_and_lab = &["Patient/p1", "Observation/o1-lab"];
    vec![
        // ---- Chains and _has: the other type's own access applies inside them ----
        row(
            "system/*.rs",
            None,
            "GET Observation?subject:Patient.name=Smith",
            Search(2, P1_OBS),
        ),
        row(
            "user/Observation.rs",
            None,
            "GET Observation?subject:Patient.name=Smith",
            Refused(
                "subject:Patient.name reaches into Patient, which this token may not search: plugin smart-scopes denied: no granted scope permits search of Patient",
            ),
        ),
        row(
            "user/Observation.rs user/Patient.rs?name=Jones",
            None,
            "GET Observation?subject:Patient.name=Smith",
            Search(0, &[]),
        ),
        row(
            "user/Observation.rs user/Patient.rs?name=Jones",
            None,
            "GET Observation?subject:Patient.name=Smith,Jones&_count=1",
            Pages(1, &["Observation/o2-lab"]),
        ),
        // Without a type modifier a chain keeps to the target types in reach (Patient here;
        // not Group or Location), and is refused when none is.
        row(
            "user/Observation.rs user/Patient.rs",
            None,
            "GET Observation?subject.name=Smith",
            Search(2, P1_OBS),
        ),
        row(
            "user/Observation.rs",
            None,
            "GET Observation?subject.name=Smith",
            Refused("which this token may not search: plugin smart-scopes denied"),
        ),
        row(
            "user/Observation.rs user/Patient.rs",
            None,
            "GET Observation?subject:Patient.general-practitioner:Practitioner.name=Who",
            Refused(
                "general-practitioner:Practitioner.name reaches into Practitioner, which this token may not search",
            ),
        ),
        row(
            "patient/*.rs",
            p1,
            "GET Observation?performer:Practitioner.name=Who",
            Refused(
                "performer:Practitioner.name reaches into Practitioner, which this token may not search: Practitioner resources are outside the patient compartment of Patient/p1",
            ),
        ),
        row(
            "patient/Patient.rs",
            p1,
            "GET Patient?_has:Observation:patient:category=laboratory",
            Refused(
                "_has:Observation:patient:category reaches into Observation, which this token may not search: plugin smart-scopes denied: no granted scope permits search of Observation",
            ),
        ),
        row(
            "patient/Patient.rs patient/Observation.rs?category=vital-signs",
            p1,
            "GET Patient?_has:Observation:patient:category=laboratory",
            Search(0, &[]),
        ),
        row(
            "patient/Patient.rs patient/Observation.rs?category=vital-signs",
            p1,
            "GET Patient?_has:Observation:patient:category=vital-signs",
            Search(1, &["Patient/p1"]),
        ),
        row(
            "user/Patient.rs user/Observation.rs?category=vital-signs",
            None,
            "GET Patient?_has:Observation:patient:category=laboratory&_total=accurate",
            Search(0, &[]),
        ),
        row(
            "user/Patient.rs user/Observation.rs?category=vital-signs",
            None,
            "GET Patient?_has:Observation:patient:category=vital-signs,laboratory&_total=accurate&_count=1",
            Pages(1, &["Patient/p1"]),
        ),
        // ---- Includes: `_include` follows a reference, which a read (r) or a search (s)
        // of the target type allows; `_revinclude` is a search of the source type (s).
        row(
            "user/Observation.rs user/Patient.r",
            None,
            OBS_INCLUDE_SUBJECT,
            Search(
                3,
                &[
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Observation/o2-lab",
                    "+Patient/p1",
                    "+Patient/p2",
                ],
            ),
        ),
        row(
            "user/Observation.rs user/Patient.s",
            None,
            OBS_INCLUDE_SUBJECT,
            Search(
                3,
                &[
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Observation/o2-lab",
                    "+Patient/p1",
                    "+Patient/p2",
                ],
            ),
        ),
        row(
            "patient/Observation.rs patient/Patient.r",
            p1,
            OBS_INCLUDE_SUBJECT,
            Search(
                2,
                &["Observation/o1-lab", "Observation/o1-vital", "+Patient/p1"],
            ),
        ),
        row(
            "user/Observation.rs user/Patient.r",
            None,
            "GET Observation?_include=Observation:subject&_include:iterate=Patient:general-practitioner",
            Search(
                3,
                &[
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Observation/o2-lab",
                    "+Patient/p1",
                    "+Patient/p2",
                ],
            ),
        ),
        row(
            "user/Patient.rs user/Observation.r",
            None,
            PATIENT_REVINCLUDE_OBS,
            Search(2, &["Patient/p1", "Patient/p2"]),
        ),
        // ---- $everything: the compartment, within each type's access ----
        row(
            "patient/*.rs",
            p1,
            "GET Patient/p1/$everything",
            Search(
                4,
                &[
                    "Patient/p1",
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Condition/c1",
                ],
            ),
        ),
        row(
            "patient/*.rs",
            p1,
            "GET Patient/p1/$everything?_count=1",
            Pages(
                4,
                &[
                    "Patient/p1",
                    "Observation/o1-lab",
                    "Observation/o1-vital",
                    "Condition/c1",
                ],
            ),
        ),
        row(
            "patient/*.rs",
            p1,
            "GET Patient/p2/$everything",
            Hidden("Patient/p2 is outside the patient compartment of Patient/p1"),
        ),
        row(
            "patient/Patient.r patient/Observation.rs?category=laboratory",
            p1,
            "GET Patient/p1/$everything",
            Search(2, p1_and_lab),
        ),
        row(
            "patient/Patient.r patient/Observation.rs?category=laboratory",
            p1,
            "GET Patient/p1/$everything?_count=1",
            Pages(2, p1_and_lab),
        ),
        row(
            "user/Patient.r user/Observation.rs?category=laboratory user/Practitioner.r",
            None,
            "GET Patient/p1/$everything",
            Search(
                2,
                &["Patient/p1", "Observation/o1-lab", "+Practitioner/dr1"],
            ),
        ),
        // ---- Totals and pages of searches never count what the token may not see ----
        row(
            "patient/Observation.rs?category=laboratory",
            p1,
            "GET Observation?_total=accurate&_count=1",
            Pages(1, &["Observation/o1-lab"]),
        ),
        row(
            "patient/*.rs",
            p1,
            "GET ?_type=Observation,Patient&_count=2&_total=accurate",
            Pages(
                3,
                &["Patient/p1", "Observation/o1-lab", "Observation/o1-vital"],
            ),
        ),
    ]
}

/// Writes, in order: each refused one must change nothing (the last row counts).
/// Long: one table of rows, each a write and its expected answer, that run in order.
fn write_rows() -> Vec<Row> {
    let p1 = Some("p1");
    vec![
        // ---- SMART v1 ----
        write(
            "user/Observation.write",
            None,
            "POST Observation",
            observation(None, "p2", "laboratory"),
            Status(201),
        ),
        write(
            "user/Observation.write",
            None,
            "POST Patient",
            patient(None),
            Refused("no granted scope permits create of Patient"),
        ),
        write(
            "system/*.read",
            None,
            "POST Observation",
            observation(None, "p1", "laboratory"),
            Refused("no granted scope permits create of Observation"),
        ),
        write(
            "patient/*.read",
            p1,
            "POST Observation",
            observation(None, "p1", "laboratory"),
            Refused("no granted scope permits create of Observation"),
        ),
        row(
            "patient/*.read",
            p1,
            "DELETE Observation/o1-vital",
            Refused("no granted scope permits delete of Observation"),
        ),
        write(
            "patient/*.write",
            p1,
            "PUT Observation/o2-lab",
            observation(Some("o2-lab"), "p1", "laboratory"),
            Refused("Observation/o2-lab is outside the patient compartment of Patient/p1"),
        ),
        // ---- SMART v2 ----
        write(
            "system/*.rs",
            None,
            "PUT Observation/o2-lab",
            observation(Some("o2-lab"), "p2", "laboratory"),
            Refused("no granted scope permits update of Observation"),
        ),
        write(
            "patient/Observation.rs?category=laboratory",
            p1,
            "POST Observation",
            observation(None, "p1", "laboratory"),
            Refused("no granted scope permits create of Observation"),
        ),
        write(
            "patient/Observation.c?category=laboratory",
            p1,
            "POST Observation",
            observation(None, "p1", "laboratory"),
            Refused("such scopes are read-only here"),
        ),
        write(
            "patient/*.cruds",
            p1,
            "POST Observation",
            observation(None, "p1", "laboratory"),
            Status(201),
        ),
        write(
            "patient/*.cruds",
            p1,
            "POST Observation",
            observation(None, "p2", "laboratory"),
            Refused("does not refer to Patient/p1"),
        ),
        write(
            "patient/*.cruds",
            p1,
            "PUT Observation/o1-vital",
            observation(Some("o1-vital"), "p1", "vital-signs"),
            Status(200),
        ),
        write(
            "patient/*.cruds",
            p1,
            "PUT Observation/o2-lab",
            observation(Some("o2-lab"), "p1", "laboratory"),
            Refused("Observation/o2-lab is outside the patient compartment of Patient/p1"),
        ),
        write(
            "patient/*.cruds",
            p1,
            "PUT Patient/p2",
            patient(Some("p2")),
            Refused("cannot write other Patient resources"),
        ),
        row(
            "patient/*.cruds",
            p1,
            "DELETE Observation/o2-lab",
            Refused("Observation/o2-lab is outside the patient compartment of Patient/p1"),
        ),
        row(
            "patient/Observation.cru",
            p1,
            "DELETE Observation/o1-vital",
            Refused("no granted scope permits delete of Observation"),
        ),
        write(
            "user/Patient.cruds",
            None,
            "POST Patient",
            patient(None),
            Status(201),
        ),
        write(
            "user/Patient.cruds",
            None,
            "PUT Patient/p2",
            patient(Some("p2")),
            Status(200),
        ),
        write(
            "user/Patient.cruds",
            None,
            "POST Observation",
            observation(None, "p2", "laboratory"),
            Refused("no granted scope permits create of Observation"),
        ),
        row("user/Patient.cruds", None, "DELETE Patient/p2", Status(204)),
        row(
            "user/Observation.write",
            None,
            "DELETE Observation/o2-lab",
            Status(204),
        ),
        row(
            "patient/*.cruds",
            p1,
            "DELETE Observation/o1-vital",
            Status(204),
        ),
        row("system/*.*", None, "DELETE Observation/o1-lab", Status(204)),
        row("system/*.*", None, "GET Observation/o1-lab", Status(410)),
        // The two created Observations are all that is left: no refused write happened.
        row("system/*.rs", None, OBS, Total(2)),
        row("system/*.rs", None, "GET Patient", Total(2)),
        // Deleted resources have no current version to judge: a restricted type history
        // leaves them out; p1's one remaining Observation is the one it created.
        row("patient/*.read", p1, "GET Observation/_history", Total(1)),
    ]
}

/// The entries of a searchset: `Type/id` for matches, `+Type/id` for includes.
fn searchset_ids(body: &Value) -> Vec<String> {
    body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] != "outcome")
                .map(|e| {
                    let r = &e["resource"];
                    let key = format!(
                        "{}/{}",
                        r["resourceType"].as_str().unwrap_or("?"),
                        r["id"].as_str().unwrap_or("?")
                    );
                    if e["search"]["mode"] == "include" {
                        format!("+{key}")
                    } else {
                        key
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A 403 that names its reason in `WWW-Authenticate` and in the OperationOutcome.
pub fn assert_forbidden(reply: &Reply, needle: &str, what: &str) {
    assert_eq!(reply.status, 403, "{what}: {:?}", reply.body);
    let challenge = reply.header("www-authenticate");
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains(needle),
        "{what}: WWW-Authenticate {challenge:?} should name {needle:?}"
    );
    assert_eq!(reply.body["resourceType"], "OperationOutcome", "{what}");
    assert!(
        reply.diagnostics().contains(needle),
        "{what}: {:?} should contain {needle:?}",
        reply.diagnostics()
    );
}

/// The `Type/id` of each entry that is a match (searchset) or a version (history).
fn page_keys(body: &Value) -> Vec<String> {
    body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| !matches!(e["search"]["mode"].as_str(), Some("include" | "outcome")))
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap_or("?"),
                        e["resource"]["id"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn link(body: &Value, relation: &str) -> Option<String> {
    body["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(|u| u.trim_start_matches("http://localhost:8080").to_owned())
}

/// Reads every page through `next`, checking each page's total and links.
async fn check_pages(
    app: &axum::Router,
    auth: &str,
    first: &Reply,
    total: i64,
    ids: &[&str],
    what: &str,
) {
    let (mut status, mut body) = (first.status, first.body.clone());
    let mut got: Vec<String> = Vec::new();
    for page in 0.. {
        assert!(page < 20, "{what}: more pages than matches");
        assert_eq!(status, 200, "{what}: page {page}: {body:?}");
        assert_eq!(body["total"], total, "{what}: page {page}");
        assert_eq!(
            link(&body, "previous").is_some(),
            page > 0,
            "{what}: page {page}: a previous link exactly after the first page"
        );
        let keys = page_keys(&body);
        assert!(!keys.is_empty(), "{what}: page {page} is empty");
        got.extend(keys);
        let Some(next) = link(&body, "next") else {
            break;
        };
        let reply = call(app, "GET", &next, &[("authorization", auth)], "").await;
        (status, body) = (reply.status, reply.body);
    }
    got.sort();
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{what}: the matches of all pages");
}

async fn check(
    app: &axum::Router,
    auth: &str,
    reply: &Reply,
    expect: Expect,
    hidden_as_not_found: bool,
    what: &str,
) {
    match expect {
        Pages(total, ids) => check_pages(app, auth, reply, total, ids, what).await,
        Read(key) => {
            assert_eq!(reply.status, 200, "{what}: {:?}", reply.body);
            let got = format!(
                "{}/{}",
                reply.body["resourceType"].as_str().unwrap_or("?"),
                reply.body["id"].as_str().unwrap_or("?")
            );
            assert_eq!(got, key, "{what}");
        }
        Search(total, ids) => {
            assert_eq!(reply.status, 200, "{what}: {:?}", reply.body);
            assert_eq!(reply.body["type"], "searchset", "{what}");
            assert_eq!(searchset_ids(&reply.body), ids, "{what}");
            assert_eq!(reply.body["total"], total, "{what}");
        }
        Total(total) => {
            assert_eq!(reply.status, 200, "{what}: {:?}", reply.body);
            assert_eq!(reply.body["total"], total, "{what}");
        }
        History(ids) => {
            assert_eq!(reply.status, 200, "{what}: {:?}", reply.body);
            assert_eq!(reply.body["type"], "history", "{what}");
            let mut got: Vec<String> = reply.body["entry"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            format!(
                                "{}/{}",
                                e["resource"]["resourceType"].as_str().unwrap_or("?"),
                                e["resource"]["id"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            got.sort();
            assert_eq!(got, ids, "{what}");
            assert_eq!(reply.body["total"], ids.len(), "{what}");
        }
        Status(status) => assert_eq!(reply.status, status, "{what}: {:?}", reply.body),
        Refused(needle) => assert_forbidden(reply, needle, what),
        Hidden(_) if hidden_as_not_found => {
            assert_eq!(reply.status, 404, "{what}: {:?}", reply.body);
            assert!(
                reply.diagnostics().contains("is not known"),
                "{what}: a hidden resource answers as one that does not exist: {}",
                reply.diagnostics()
            );
            assert!(
                !reply.diagnostics().contains("compartment")
                    && !reply.diagnostics().contains("granted"),
                "{what}: the 404 must not say why: {}",
                reply.diagnostics()
            );
        }
        Hidden(needle) => assert_forbidden(reply, needle, what),
    }
}

const HIDDEN_AS: [(&str, bool); 2] = [("", false), ("[fhir]\nhidden_as = \"not-found\"\n", true)];

#[tokio::test]
async fn smart_scope_matrix() {
    let mut failed: Vec<String> = Vec::new();
    for (toml, hidden_as_not_found) in HIDDEN_AS {
        for db in TestDb::all().await {
            let (app, state) = raw_app_on(&db, toml).await;
            seed(&app, &state).await;
            for r in read_rows().into_iter().chain(write_rows()) {
                let mut claims = json!({"scope": r.scope});
                if let Some(p) = r.patient {
                    claims["patient"] = json!(p);
                }
                let token = mint(&state, claims).await;
                let auth = format!("Bearer {token}");
                let (method, path) = r.request.split_once(' ').unwrap();
                let uri = format!("/fhir/r4/{path}").replace("/?", "?");
                let mut headers = vec![("authorization", auth.as_str())];
                let body = match &r.body {
                    Some(b) => {
                        headers.push(("content-type", "application/fhir+json"));
                        b.to_string()
                    }
                    None => String::new(),
                };
                let reply = call(&app, method, &uri, &headers, body).await;
                let what = format!(
                    "{} (hidden_as_not_found={hidden_as_not_found}): [{}] patient={:?}: {}",
                    db.backend, r.scope, r.patient, r.request
                );
                // Each row is checked in a task of its own so that one run names every
                // failing row (the panic of each is printed), not just the first.
                let (app, expect) = (app.clone(), r.expect);
                let checked = tokio::spawn(async move {
                    check(&app, &auth, &reply, expect, hidden_as_not_found, &what).await;
                })
                .await;
                if checked.is_err() {
                    failed.push(format!(
                        "{} (hidden_as_not_found={hidden_as_not_found}): [{}] {}",
                        db.backend, r.scope, r.request
                    ));
                }
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} rows failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The response entries of a batch or transaction: `(status, body)` where the body is
/// the resource, or the OperationOutcome of a failed entry.
fn entries(reply: &Reply) -> Vec<(String, Value)> {
    reply.body["entry"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {:?}", reply.body))
        .iter()
        .map(|e| {
            let status = e["response"]["status"].as_str().unwrap_or("").to_string();
            let body = if e["resource"].is_null() {
                e["response"]["outcome"].clone()
            } else {
                e["resource"].clone()
            };
            (status, body)
        })
        .collect()
}

fn get_entry(url: &str) -> Value {
    json!({"request": {"method": "GET", "url": url}})
}

fn diagnostics(outcome: &Value) -> String {
    outcome["issue"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|i| i["diagnostics"].as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

/// An application seeded by [`seed`] under one `HIDDEN_AS` setting, on one database.
struct Seeded {
    _db: TestDb,
    app: axum::Router,
    state: hestia::http::AppState,
    /// The backend and the setting, for messages.
    b: String,
    hidden_as_not_found: bool,
}

/// One [`Seeded`] per `HIDDEN_AS` setting and database.
async fn seeded_each_way() -> Vec<Seeded> {
    let mut all = Vec::new();
    for (toml, hidden_as_not_found) in HIDDEN_AS {
        for db in TestDb::all().await {
            let b = format!("{} (hidden_as_not_found={hidden_as_not_found})", db.backend);
            let (app, state) = raw_app_on(&db, toml).await;
            seed(&app, &state).await;
            all.push(Seeded {
                _db: db,
                app,
                state,
                b,
                hidden_as_not_found,
            });
        }
    }
    all
}

impl Seeded {
    /// `bundle` posted to the base with a token of `scope` and patient p1.
    async fn post(&self, scope: &str, bundle: Value) -> Reply {
        let token = mint(&self.state, json!({"scope": scope, "patient": "p1"})).await;
        let auth = format!("Bearer {token}");
        let headers = [
            ("content-type", "application/fhir+json"),
            ("authorization", auth.as_str()),
        ];
        call(&self.app, "POST", "/fhir/r4", &headers, bundle.to_string()).await
    }

    /// An entry's status for a resource the token may not see.
    fn hidden_status(&self) -> &'static str {
        if self.hidden_as_not_found {
            "404 Not Found"
        } else {
            "403 Forbidden"
        }
    }
}

/// Reads, vreads and searches inside a batch run under the entry's constraints as they
/// would on their own.
#[tokio::test]
async fn batch_entries_run_under_their_constraints() {
    for s in seeded_each_way().await {
        let b = &s.b;
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            get_entry("Patient/p1"),
            get_entry("Observation/o2-lab"),
            get_entry("Observation?_include=Observation:subject"),
            get_entry("Observation/o1-lab/_history/1"),
            get_entry("Observation/o2-lab/_history/1"),
            get_entry("Practitioner"),
        ]});
        let reply = s.post("patient/*.read", batch).await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        let got = entries(&reply);
        assert_eq!(got[0].0, "200 OK", "{b}");
        assert_eq!(got[0].1["id"], "p1", "{b}");
        assert_eq!(got[1].0, s.hidden_status(), "{b}: {:?}", got[1].1);
        let why = diagnostics(&got[1].1);
        if s.hidden_as_not_found {
            assert!(
                why.contains("Observation/o2-lab is not known"),
                "{b}: {why}"
            );
        } else {
            assert!(
                why.contains("Observation/o2-lab is outside the patient compartment of Patient/p1"),
                "{b}: {why}"
            );
        }
        assert_eq!(got[2].0, "200 OK", "{b}");
        assert_eq!(
            searchset_ids(&got[2].1),
            ["Observation/o1-lab", "Observation/o1-vital", "+Patient/p1"],
            "{b}: the search sees p1's compartment only"
        );
        assert_eq!(got[2].1["total"], 2, "{b}");
        assert_eq!(got[3].0, "200 OK", "{b}");
        assert_eq!(got[3].1["id"], "o1-lab", "{b}");
        assert_eq!(got[4].0, s.hidden_status(), "{b}: {:?}", got[4].1);
        assert_eq!(got[5].0, "403 Forbidden", "{b}");
        assert!(
            diagnostics(&got[5].1).contains(
                "Practitioner resources are outside the patient compartment of Patient/p1"
            ),
            "{b}: {:?}",
            got[5].1
        );
    }
}

/// v2 search constraints hold inside a batch, and an include inside a Bundle keeps to
/// the scopes too.
#[tokio::test]
async fn search_constraints_and_includes_hold_inside_a_batch() {
    for s in seeded_each_way().await {
        let b = &s.b;
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            get_entry("Observation"),
            get_entry("Observation/o1-vital"),
            get_entry("Observation/o1-lab"),
        ]});
        let reply = s
            .post("patient/Observation.rs?category=laboratory", batch)
            .await;
        let got = entries(&reply);
        assert_eq!(searchset_ids(&got[0].1), ["Observation/o1-lab"], "{b}");
        assert_eq!(got[0].1["total"], 1, "{b}");
        assert_eq!(got[1].0, s.hidden_status(), "{b}: {:?}", got[1].1);
        if !s.hidden_as_not_found {
            assert!(
                diagnostics(&got[1].1)
                    .contains("does not match the granted search Observation?category=laboratory"),
                "{b}: {:?}",
                got[1].1
            );
        }
        assert_eq!(got[2].0, "200 OK", "{b}");

        // An include inside a Bundle keeps to the scopes too.
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            get_entry("Observation?_include=Observation:subject"),
        ]});
        let got = entries(&s.post("user/Observation.rs", batch).await);
        assert_eq!(
            searchset_ids(&got[0].1),
            ALL_OBS,
            "{b}: no Patient without a Patient scope"
        );
    }
}

/// A transaction with a hidden read fails as a whole, naming the entry.
#[tokio::test]
async fn a_transaction_with_a_hidden_read_fails_as_a_whole() {
    for s in seeded_each_way().await {
        let b = &s.b;
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            get_entry("Observation/o1-lab"),
            get_entry("Observation/o2-lab"),
        ]});
        let reply = s.post("patient/*.read", tx).await;
        assert_eq!(
            reply.status,
            if s.hidden_as_not_found { 404 } else { 403 },
            "{b}: {:?}",
            reply.body
        );
        assert!(
            reply
                .diagnostics()
                .contains("transaction entry 1 (GET Observation/o2-lab)"),
            "{b}: {}",
            reply.diagnostics()
        );
    }
}

/// Updates and deletes of existing resources inside Bundles: inside the compartment they
/// run, outside it the whole transaction is refused and nothing changes.
#[tokio::test]
async fn writes_of_existing_resources_inside_bundles_keep_to_the_compartment() {
    for s in seeded_each_way().await {
        let b = &s.b;
        let put = |id: &str, patient: &str, category: &str| json!({"resource": observation(Some(id), patient, category), "request": {"method": "PUT", "url": format!("Observation/{id}")}});
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            put("o1-vital", "p1", "vital-signs"),
            get_entry("Observation/o1-lab"),
        ]});
        let reply = s.post("patient/*.cruds", tx).await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        let got = entries(&reply);
        assert_eq!(got[0].0, "200 OK", "{b}");
        assert_eq!(got[1].0, "200 OK", "{b}");
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            put("o1-vital", "p1", "vital-signs"),
            {"request": {"method": "DELETE", "url": "Observation/o2-lab"}},
        ]});
        let reply = s.post("patient/*.cruds", tx).await;
        assert_forbidden(
            &reply,
            "Observation/o2-lab is outside the patient compartment of Patient/p1",
            b,
        );
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            put("o2-lab", "p1", "laboratory"),
        ]});
        let reply = s.post("patient/*.cruds", tx).await;
        assert_forbidden(
            &reply,
            "Observation/o2-lab is outside the patient compartment of Patient/p1",
            b,
        );
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "DELETE", "url": "Observation/o2-lab"}},
        ]});
        let got = entries(&s.post("patient/*.cruds", batch).await);
        assert_eq!(
            got[0].0, "403 Forbidden",
            "{b}: a write stays 403 whatever hidden_as says"
        );

        let admin = mint(&s.state, json!({"scope": "system/*.read"})).await;
        let auth = format!("Bearer {admin}");
        let h = [("authorization", auth.as_str())];
        let vital = call(&s.app, "GET", "/fhir/r4/Observation/o1-vital", &h, "").await;
        assert_eq!(
            vital.body["meta"]["versionId"], "2",
            "{b}: only the first transaction wrote"
        );
        let lab = call(&s.app, "GET", "/fhir/r4/Observation/o2-lab", &h, "").await;
        assert_eq!(lab.status, 200, "{b}");
        assert_eq!(lab.body["meta"]["versionId"], "1", "{b}: o2-lab untouched");
    }
}

const CHAIN_REFUSED: &str =
    "subject:Patient.name reaches into Patient, which this token may not search";

/// The application seeded by [`seed`], and the `Authorization` value of a token of
/// `user/Observation.cruds` (no Patient search).
async fn seeded_for_chains(db: &TestDb) -> (axum::Router, hestia::http::AppState, String) {
    let (app, state) = raw_app_on(db, "").await;
    seed(&app, &state).await;
    let token = mint(&state, json!({"scope": "user/Observation.cruds"})).await;
    (app, state, format!("Bearer {token}"))
}

/// The Observations stored, as a reader of everything finds them.
async fn stored_observations(app: &axum::Router, state: &hestia::http::AppState) -> Vec<String> {
    let admin = mint(state, json!({"scope": "system/*.rs"})).await;
    let admin = format!("Bearer {admin}");
    let h = [("authorization", admin.as_str())];
    let all = call(app, "GET", "/fhir/r4/Observation", &h, "").await;
    searchset_ids(&all.body)
}

/// Conditional interactions decide on search criteria too: a chain in them reaches into
/// another type only as far as the token may search it, so that the outcome (created or
/// existing, updated, deleted) cannot reveal what the token may not see.
#[tokio::test]
async fn chains_in_conditional_criteria_need_search_access_to_their_type() {
    for db in TestDb::all().await {
        let b = db.backend;
        let (app, state, auth) = seeded_for_chains(&db).await;
        let json_headers = [
            ("content-type", "application/fhir+json"),
            ("authorization", auth.as_str()),
        ];
        // If-None-Exist with a chain: neither 200 (exists) nor 412 (several) nor 201.
        let mut headers = json_headers.to_vec();
        headers.push(("if-none-exist", "subject:Patient.name=Smith"));
        let body = observation(None, "p1", "laboratory").to_string();
        let reply = call(&app, "POST", "/fhir/r4/Observation", &headers, body.clone()).await;
        assert_forbidden(&reply, CHAIN_REFUSED, &format!("{b}: conditional create"));
        let uri = "/fhir/r4/Observation?subject:Patient.name=Smith";
        let reply = call(&app, "PUT", uri, &json_headers, body).await;
        assert_forbidden(&reply, CHAIN_REFUSED, &format!("{b}: conditional update"));
        let uri = "/fhir/r4/Observation?subject:Patient.name=Jones";
        let reply = call(&app, "DELETE", uri, &[("authorization", auth.as_str())], "").await;
        assert_forbidden(&reply, CHAIN_REFUSED, &format!("{b}: conditional delete"));
        // Nothing was written or deleted: still the three seeded Observations.
        assert_eq!(stored_observations(&app, &state).await, ALL_OBS, "{b}");
    }
}

/// A search entry of a batch and a conditional create of a transaction with a chain reach
/// into another type only as far as the token may search it.
#[tokio::test]
async fn chains_in_bundle_criteria_need_search_access_to_their_type() {
    for db in TestDb::all().await {
        let b = db.backend;
        let (app, state, auth) = seeded_for_chains(&db).await;
        let json_headers = [
            ("content-type", "application/fhir+json"),
            ("authorization", auth.as_str()),
        ];
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            get_entry("Observation?subject:Patient.name=Smith"),
            get_entry("Observation?subject=Patient/p2"),
        ]});
        let reply = call(&app, "POST", "/fhir/r4", &json_headers, batch.to_string()).await;
        assert_eq!(reply.status, 200, "{b}: {:?}", reply.body);
        let got = entries(&reply);
        assert_eq!(got[0].0, "403 Forbidden", "{b}: {:?}", got[0].1);
        assert!(
            diagnostics(&got[0].1).contains(CHAIN_REFUSED),
            "{b}: {:?}",
            got[0].1
        );
        assert_eq!(searchset_ids(&got[1].1), ["Observation/o2-lab"], "{b}");
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
            "fullUrl": "urn:uuid:0b0a6b4e-8f4e-4a8e-9a57-0e3f1e0c0001",
            "resource": observation(None, "p1", "laboratory"),
            "request": {"method": "POST", "url": "Observation",
                        "ifNoneExist": "subject:Patient.name=Smith"},
        }]});
        let reply = call(&app, "POST", "/fhir/r4", &json_headers, tx.to_string()).await;
        assert_forbidden(&reply, CHAIN_REFUSED, &format!("{b}: transaction"));
        assert_eq!(stored_observations(&app, &state).await, ALL_OBS, "{b}");
    }
}

/// With Patient search access the same conditional requests run, within it.
#[tokio::test]
async fn chains_in_conditional_criteria_run_within_the_search_access() {
    for db in TestDb::all().await {
        let b = db.backend;
        let (app, state, _) = seeded_for_chains(&db).await;
        let both = mint(
            &state,
            json!({"scope": "user/Observation.cruds user/Patient.rs?name=Jones"}),
        )
        .await;
        let both = format!("Bearer {both}");
        let reply = call(
            &app,
            "DELETE",
            "/fhir/r4/Observation?subject:Patient.name=Smith,Jones",
            &[("authorization", both.as_str())],
            "",
        )
        .await;
        assert_eq!(
            reply.status, 204,
            "{b}: only o2-lab matches within name=Jones: {:?}",
            reply.body
        );
        assert_eq!(
            stored_observations(&app, &state).await,
            P1_OBS,
            "{b}: o2-lab deleted"
        );
    }
}
