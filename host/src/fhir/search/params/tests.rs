use super::*;

fn rt(name: &str) -> ResourceType {
    ResourceType::parse(name).unwrap()
}

/// Splits `a=1&b=2` into pairs (no percent-decoding: the tests write decoded text).
fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

fn check(resource_type: &str, query: &str, expected: &str) {
    let parsed = SearchQuery::parse(rt(resource_type), pairs(query))
        .unwrap_or_else(|e| panic!("{resource_type}?{query}: {e}"));
    assert_eq!(parsed.to_string(), expected, "{resource_type}?{query}");
}

fn check_err(resource_type: &str, query: &str, expected: &str) {
    match SearchQuery::parse(rt(resource_type), pairs(query)) {
        Ok(q) => panic!("{resource_type}?{query} parsed as {q}"),
        Err(e) => assert_eq!(e.to_string(), expected, "{resource_type}?{query}"),
    }
}

#[test]
fn strings() {
    check("Patient", "name=Peter", r#"Patient?name(starts "peter")"#);
    check("Patient", "name=Müller", r#"Patient?name(starts "muller")"#);
    check(
        "Patient",
        "name:exact=Müller",
        r#"Patient?name(exact "Müller")"#,
    );
    check(
        "Patient",
        "name:contains=ETE",
        r#"Patient?name(contains "ete")"#,
    );
    check(
        "Patient",
        "name=peter,paul",
        r#"Patient?name(starts "peter" OR starts "paul")"#,
    );
    check("Patient", r"name=a\,b", r#"Patient?name(starts "a,b")"#);
    check(
        "Patient",
        "name=peter&name=chalmers",
        r#"Patient?name(starts "peter") AND name(starts "chalmers")"#,
    );
    check(
        "Patient",
        "address-city=Paris",
        r#"Patient?address-city(starts "paris")"#,
    );
    check("Patient", "name:missing=true", "Patient?name(missing)");
    check("Patient", "name:missing=false", "Patient?name(present)");
    check("Patient", "name=", "Patient?");
    check("Patient", "name=,a,", r#"Patient?name(starts "a")"#);
}

#[test]
fn tokens() {
    check("Patient", "gender=male", "Patient?gender(token *|male)");
    check(
        "Observation",
        "code=http://loinc.org|1234-5",
        "Observation?code(token http://loinc.org|1234-5)",
    );
    check(
        "Observation",
        "code=|1234-5",
        "Observation?code(token |1234-5)",
    );
    check(
        "Observation",
        "code=http://loinc.org|",
        "Observation?code(token http://loinc.org|*)",
    );
    check(
        "Observation",
        "code=http://loinc.org|1,http://snomed.info/sct|2",
        "Observation?code(token http://loinc.org|1 OR token http://snomed.info/sct|2)",
    );
    check("Observation", r"code=a\|b", "Observation?code(token *|a|b)");
    check(
        "Observation",
        "code:text=Body Wéight",
        r#"Observation?code(text "body weight")"#,
    );
    check(
        "Observation",
        "status:not=final",
        "Observation?NOT status(token *|final)",
    );
    check(
        "Patient",
        "identifier=urn:oid:1.2|12345",
        "Patient?identifier(token urn:oid:1.2|12345)",
    );
    check("Patient", "_id=a,b", "Patient?_id(token *|a OR token *|b)");
    check("Patient", "active=true", "Patient?active(token *|true)");
    check("Patient", "_tag=urn:t|x", "Patient?_tag(token urn:t|x)");
    check(
        "Patient",
        "_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
        "Patient?_security(token http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R)",
    );
    check_err(
        "Observation",
        "code=|",
        "search parameter 'code': invalid value '|': neither a system nor a code",
    );
    check_err(
        "Observation",
        "code=a|b|c",
        "search parameter 'code': invalid value 'a|b|c': a token is [system|]code; escape a literal '|' as '\\|'",
    );
    check_err(
        "Observation",
        "code:in=http://vs",
        "search parameter 'code:in': not supported: modifier :in",
    );
    check_err(
        "Observation",
        "code:exact=x",
        "search parameter 'code:exact': modifier ':exact' cannot be used on a token parameter",
    );
}

#[test]
fn references() {
    check(
        "Observation",
        "subject=Patient/123",
        "Observation?subject(ref Patient/123)",
    );
    check(
        "Observation",
        "subject=123",
        "Observation?subject(ref */123)",
    );
    // A parameter with a single target type fills it in.
    check(
        "Encounter",
        "episode-of-care=123",
        "Encounter?episode-of-care(ref EpisodeOfCare/123)",
    );
    // `patient` may also point at a Group, as the R4 definition says.
    check(
        "Observation",
        "patient=123",
        "Observation?patient(ref */123)",
    );
    check(
        "Observation",
        "subject:Patient=123",
        "Observation?subject(ref Patient/123)",
    );
    check(
        "Observation",
        "subject=Patient/123/_history/4",
        "Observation?subject(ref Patient/123/_history/4)",
    );
    check(
        "Observation",
        "subject=http://example.org/fhir/Patient/123",
        "Observation?subject(ref http://example.org/fhir/Patient/123)",
    );
    check(
        "Observation",
        "subject:identifier=http://ids|77",
        "Observation?subject(identifier http://ids|77)",
    );
    check(
        "Observation",
        "subject=Patient/1,Group/2",
        "Observation?subject(ref Patient/1 OR ref Group/2)",
    );
    check_err(
        "Observation",
        "subject=Organization/1",
        "search parameter 'subject': invalid value 'Organization/1': this parameter cannot refer to Organization",
    );
    check_err(
        "Observation",
        "subject=Foo/1",
        "search parameter 'subject': invalid value 'Foo/1': 'Foo' is not a resource type",
    );
    check_err(
        "Observation",
        "subject=Patient/a_b",
        "search parameter 'subject': invalid value 'Patient/a_b': 'a_b' is not a valid resource id",
    );
    check_err(
        "Observation",
        "subject:Patient=Group/1",
        "search parameter 'subject:Patient': invalid value 'Group/1': names Group, but the modifier says Patient",
    );
    check_err(
        "Observation",
        "subject:Foo=1",
        "search parameter 'subject:Foo': unknown modifier ':Foo'",
    );
}

#[test]
fn dates() {
    check(
        "Observation",
        "date=2020",
        "Observation?date(eq 2020-01-01T00:00:00.000Z..2020-12-31T23:59:59.999Z)",
    );
    check(
        "Observation",
        "date=ge2020-02",
        "Observation?date(ge 2020-02-01T00:00:00.000Z..2020-02-29T23:59:59.999Z)",
    );
    check(
        "Observation",
        "date=lt2020-02-03",
        "Observation?date(lt 2020-02-03T00:00:00.000Z..2020-02-03T23:59:59.999Z)",
    );
    check(
        "Observation",
        "date=gt2020-02-03T10:00:00Z",
        "Observation?date(gt 2020-02-03T10:00:00.000Z..2020-02-03T10:00:00.999Z)",
    );
    check(
        "Observation",
        "date=sa2020-02-03T10:00:00+01:00",
        "Observation?date(sa 2020-02-03T09:00:00.000Z..2020-02-03T09:00:00.999Z)",
    );
    check(
        "Observation",
        "date=eb2020-02-03T10:00",
        "Observation?date(eb 2020-02-03T10:00:00.000Z..2020-02-03T10:00:59.999Z)",
    );
    check(
        "Observation",
        "date=ge2020&date=le2021",
        "Observation?date(ge 2020-01-01T00:00:00.000Z..2020-12-31T23:59:59.999Z) AND date(le 2021-01-01T00:00:00.000Z..2021-12-31T23:59:59.999Z)",
    );
    check(
        "Patient",
        "_lastUpdated=ne2024-01-01",
        "Patient?_lastUpdated(ne 2024-01-01T00:00:00.000Z..2024-01-01T23:59:59.999Z)",
    );
}

#[test]
fn numbers_quantities_uris() {
    check(
        "RiskAssessment",
        "probability=gt0.8",
        "RiskAssessment?probability(gt 0.8 [0.75, 0.8500000000000001])",
    );
    check(
        "RiskAssessment",
        "probability=100",
        "RiskAssessment?probability(eq 100 [99.5, 100.5])",
    );
    check(
        "Observation",
        "value-quantity=5.4|http://unitsofmeasure.org|mg",
        "Observation?value-quantity(eq 5.4 [5.3500000000000005, 5.45] http://unitsofmeasure.org|mg)",
    );
    check(
        "Observation",
        "value-quantity=le5.4||mg",
        "Observation?value-quantity(le 5.4 [5.3500000000000005, 5.45] |mg)",
    );
    check(
        "Observation",
        "value-quantity=ap5",
        "Observation?value-quantity(ap 5 [4.5, 5.5])",
    );
    check(
        "ValueSet",
        "url=http://acme.org/vs",
        r#"ValueSet?url(uri Exact "http://acme.org/vs")"#,
    );
    check(
        "ValueSet",
        "url:below=http://acme.org/",
        r#"ValueSet?url(uri Below "http://acme.org/")"#,
    );
    check(
        "ValueSet",
        "url:above=http://acme.org/a/b",
        r#"ValueSet?url(uri Above "http://acme.org/a/b")"#,
    );
    check(
        "Patient",
        "_profile=http://x/sd",
        r#"Patient?_profile(uri Exact "http://x/sd")"#,
    );
}

#[test]
fn invalid_dates_numbers_quantities_uris() {
    check_err(
        "Observation",
        "date=2020-13",
        "search parameter 'date': invalid value '2020-13': month 13 is out of range",
    );
    check_err(
        "Observation",
        "date=xx2020",
        "search parameter 'date': invalid value 'xx2020': year must be 4 digits",
    );
    check_err(
        "Observation",
        "date=2020-02-30",
        "search parameter 'date': invalid value '2020-02-30': day 30 is out of range",
    );
    check_err(
        "RiskAssessment",
        "probability=abc",
        "search parameter 'probability': invalid value 'abc': 'abc' is not a decimal number",
    );
    check_err(
        "Observation",
        "value-quantity=5|mg",
        "search parameter 'value-quantity': invalid value '5|mg': must be [prefix]number or [prefix]number|system|code",
    );
    check_err(
        "ValueSet",
        "url:contains=x",
        "search parameter 'url:contains': modifier ':contains' cannot be used on a uri parameter",
    );
}

#[test]
fn composites() {
    check(
        "Observation",
        "code-value-quantity=http://loinc.org|8480-6$gt100",
        "Observation?code-value-quantity((token http://loinc.org|8480-6 $ gt 100 [99.5, 100.5]))",
    );
    check(
        "Observation",
        r"code-value-string=x$a\$b",
        r#"Observation?code-value-string((token *|x $ starts "a$b"))"#,
    );
    check_err(
        "Observation",
        "code-value-quantity=x",
        "search parameter 'code-value-quantity': invalid value 'x': needs 2 values separated by '$'",
    );
}

#[test]
fn chains_and_has() {
    check(
        "Observation",
        "subject.name=peter",
        r#"Observation?subject->[Location.name(starts "peter") | Patient.name(starts "peter")]"#,
    );
    check(
        "Observation",
        "subject:Patient.name=peter",
        r#"Observation?subject->[Patient.name(starts "peter")]"#,
    );
    check(
        "Observation",
        "subject.identifier=urn:x|1",
        "Observation?subject->[Device.identifier(token urn:x|1) | Group.identifier(token urn:x|1) | Location.identifier(token urn:x|1) | Patient.identifier(token urn:x|1)]",
    );
    check(
        "Observation",
        "patient.organization.name=acme",
        r#"Observation?patient->[Patient.organization->[Organization.name(starts "acme")]]"#,
    );
    check(
        "Observation",
        "subject:Patient.name:exact=Peter",
        r#"Observation?subject->[Patient.name(exact "Peter")]"#,
    );
    check(
        "Patient",
        "_has:Observation:patient:code=1234-5",
        "Patient?has[Observation.patient code(token *|1234-5)]",
    );
    check(
        "Patient",
        "_has:Observation:patient:_has:AuditEvent:entity:agent=Practitioner/1",
        "Patient?has[Observation.patient has[AuditEvent.entity agent(ref Practitioner/1)]]",
    );
    check_err(
        "Observation",
        "status.name=x",
        "search parameter 'status.name': 'status' is a token parameter and cannot be chained",
    );
    check_err(
        "Observation",
        "subject.foo=x",
        "search parameter 'subject.foo': no type that 'subject' refers to has a search parameter 'foo'",
    );
    check_err(
        "Observation",
        "subject:Organization.name=x",
        "search parameter 'subject:Organization.name': 'subject' cannot refer to Organization",
    );
    check_err(
        "Observation",
        "subject.birthdate=x",
        "search parameter 'subject.birthdate': invalid value 'x': year must be 4 digits",
    );
    check_err(
        "Patient",
        "_has:Observation:code:status=final",
        "search parameter '_has:Observation:code:status': Observation.code does not refer to Patient",
    );
    check_err(
        "Patient",
        "_has:Observation:patient",
        "search parameter '_has:Observation:patient': must be _has:Type:reference:parameter",
    );
    check_err(
        "Patient",
        "_has:Foo:patient:code=x",
        "search parameter '_has:Foo:patient:code': 'Foo' is not a resource type",
    );
}

#[test]
fn result_parameters() {
    check("Observation", "_count=10", "Observation? {count 10}");
    check(
        "Observation",
        "_sort=-date,status,_lastUpdated",
        "Observation? {sort -date,status,_lastUpdated}",
    );
    check(
        "Observation",
        "_include=Observation:subject",
        "Observation? {include Observation:subject}",
    );
    check(
        "Observation",
        "_include=Observation:subject:Patient",
        "Observation? {include Observation:subject:Patient}",
    );
    check(
        "Observation",
        "_include:iterate=Patient:organization",
        "Observation? {include Patient:organization iterate}",
    );
    check(
        "Observation",
        "_include=Observation:*",
        "Observation? {include Observation:*}",
    );
    check(
        "Patient",
        "_revinclude=Provenance:target",
        "Patient? {revinclude Provenance:target}",
    );
    check(
        "Patient",
        "_revinclude:iterate=Observation:patient",
        "Patient? {revinclude Observation:patient iterate}",
    );
    check(
        "Patient",
        "_summary=count&_total=accurate",
        "Patient? {summary Count; total Accurate}",
    );
    check("Patient", "_summary=data", "Patient? {summary Data}");
    check(
        "Patient",
        "_elements=name,birthDate",
        "Patient? {elements name,birthDate}",
    );
    check(
        "Patient",
        "_format=json&_pretty=true",
        "Patient? {format json; pretty true}",
    );
    check(
        "Patient",
        "_total=none&name=x",
        r#"Patient?name(starts "x") {total None}"#,
    );
}

#[test]
fn invalid_result_parameters() {
    check_err(
        "Patient",
        "_count=-1",
        "search parameter '_count': invalid value '-1': must be a non-negative integer",
    );
    check_err(
        "Patient",
        "_count=1&_count=2",
        "search parameter '_count': may be given only once",
    );
    check_err(
        "Patient",
        "_summary=maybe",
        "search parameter '_summary': invalid value 'maybe': must be true, count, data, text or false",
    );
    check_err(
        "Patient",
        "_total=some",
        "search parameter '_total': invalid value 'some': must be none, estimate or accurate",
    );
    check_err(
        "Patient",
        "_sort=foo",
        "search parameter '_sort': invalid value 'foo': not a search parameter",
    );
    check_err(
        "Observation",
        "_sort=code-value-quantity",
        "search parameter '_sort': invalid value 'code-value-quantity': cannot sort by a composite parameter",
    );
    check_err(
        "Observation",
        "_include=Observation:status",
        "search parameter '_include': invalid value 'Observation:status': 'status' is not a reference parameter",
    );
    check_err(
        "Observation",
        "_include=Observation:subject:Organization",
        "search parameter '_include': invalid value 'Observation:subject:Organization': 'subject' cannot refer to Organization",
    );
    check_err(
        "Observation",
        "_include=Observation",
        "search parameter '_include': invalid value 'Observation': must be Type:parameter[:TargetType]",
    );
    check_err(
        "Observation",
        "_include:deep=Observation:subject",
        "search parameter '_include:deep': unknown modifier ':deep'",
    );
    check_err(
        "Patient",
        "_elements=na me",
        "search parameter '_elements': invalid value 'na me': not an element name",
    );
    check_err(
        "Patient",
        "_pretty=yes",
        "search parameter '_pretty': invalid value 'yes': must be true or false",
    );
}

#[test]
fn unknown_and_unsupported() {
    check_err(
        "Patient",
        "foo=bar",
        "search parameter 'foo': Patient has no such search parameter",
    );
    check_err(
        "Patient",
        "Name=x",
        "search parameter 'Name': Patient has no such search parameter",
    );
    check_err(
        "Patient",
        "name:foo=x",
        "search parameter 'name:foo': unknown modifier ':foo'",
    );
    check_err(
        "Patient",
        "name:missing=maybe",
        "search parameter 'name:missing': invalid value 'maybe': :missing takes true or false",
    );
    check_err(
        "Patient",
        "_text=x",
        "search parameter '_text': not supported: the definition has no FHIRPath expression",
    );
    check_err(
        "Location",
        "near=1|2|3|km",
        "search parameter 'near': not supported: special parameters are not implemented",
    );
    check_err(
        "Patient",
        "_filter=name eq x",
        "search parameter '_filter': not supported: _filter is not implemented",
    );
    check_err(
        "Bundle",
        "_text=x",
        "search parameter '_text': Bundle has no such search parameter",
    );
}

#[test]
fn lenient_parsing_keeps_the_good_parameters() {
    let (query, errors) = SearchQuery::parse_lenient(
        rt("Patient"),
        pairs("foo=1&name=peter&birthdate=soon&_count=5"),
    );
    assert_eq!(
        query.to_string(),
        r#"Patient?name(starts "peter") {count 5}"#
    );
    let params: Vec<&str> = errors.iter().map(|e| e.param.as_str()).collect();
    assert_eq!(params, ["foo", "birthdate"]);
}

#[test]
fn value_predicates() {
    let query = SearchQuery::parse(
        rt("Observation"),
        pairs("date=ge2020-06&value-quantity=gt100"),
    )
    .unwrap();
    let Criterion::Match { values, .. } = &query.criteria[0] else {
        panic!("{query}")
    };
    let SearchValue::Date(date) = &values[0] else {
        panic!("{query}")
    };
    let day = |s: &str| crate::fhir::search::value::parse_date(s).unwrap();
    let (may, june, july) = (day("2020-05-31"), day("2020-06-15"), day("2020-07-01"));
    assert!(!date.predicate().matches(may.low, may.high));
    assert!(date.predicate().matches(june.low, june.high));
    assert!(date.predicate().matches(july.low, july.high));
    let Criterion::Match { values, .. } = &query.criteria[1] else {
        panic!("{query}")
    };
    let SearchValue::Quantity(q) = &values[0] else {
        panic!("{query}")
    };
    assert!(q.predicate().matches(100.2, 100.2));
    assert!(!q.predicate().matches(100.0, 100.0));
    let eq = SearchQuery::parse(rt("RiskAssessment"), pairs("probability=100")).unwrap();
    let Criterion::Match { values, .. } = &eq.criteria[0] else {
        panic!("{eq}")
    };
    let SearchValue::Number(n) = &values[0] else {
        panic!("{eq}")
    };
    assert!(n.predicate().matches(100.4, 100.4));
    assert!(!n.predicate().matches(100.6, 100.6));
}

#[test]
fn authorization_constraints() {
    let mut query = SearchQuery::parse(rt("Observation"), pairs("code=1234-5")).unwrap();
    query.restrict_to_patient_compartment("p1").unwrap();
    assert_eq!(
        query.to_string(),
        "Observation?code(token *|1234-5) AND any[subject(ref Patient/p1); performer(ref Patient/p1)]"
    );

    let mut patient = SearchQuery::all(rt("Patient"));
    patient.restrict_to_patient_compartment("p1").unwrap();
    assert_eq!(
        patient.to_string(),
        "Patient?any[_id(token *|p1); link(ref Patient/p1)]"
    );

    let mut encounter = SearchQuery::all(rt("Encounter"));
    encounter.restrict_to_patient_compartment("p1").unwrap();
    assert_eq!(encounter.to_string(), "Encounter?patient(ref Patient/p1)");

    let mut org = SearchQuery::all(rt("Organization"));
    assert_eq!(
        org.restrict_to_patient_compartment("p1"),
        Err(ConstraintError::NotInPatientCompartment(rt("Organization")))
    );
    assert_eq!(
        SearchQuery::all(rt("Patient")).restrict_to_patient_compartment("p/1"),
        Err(ConstraintError::InvalidPatientId("p/1".into()))
    );

    let scope =
        SearchQuery::parse(rt("Observation"), pairs("category=laboratory&_count=1")).unwrap();
    let user = SearchQuery::parse(rt("Observation"), pairs("code=x&_count=20")).unwrap();
    assert_eq!(
        user.clone().and(scope).unwrap().to_string(),
        "Observation?code(token *|x) AND category(token *|laboratory) {count 20}"
    );
    assert_eq!(
        user.and(SearchQuery::all(rt("Patient"))),
        Err(ConstraintError::TypeMismatch {
            this: rt("Observation"),
            other: rt("Patient")
        })
    );
}

/// A small deterministic generator (xorshift) instead of a property-testing crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

// Fragments that hit every branch of the parser, glued at random by
// `parsing_never_panics`, plus random characters (including multi-byte ones around the
// separators).
const NAMES: &[&str] = &[
    "name",
    "code",
    "subject",
    "date",
    "value-quantity",
    "code-value-quantity",
    "_has",
    "_include",
    "_revinclude",
    "_sort",
    "_count",
    "_summary",
    "_elements",
    "_total",
    "_id",
    "url",
    "probability",
    "near",
    "_text",
    "x",
    "",
];
const SUFFIXES: &[&str] = &[
    "",
    ":exact",
    ":contains",
    ":missing",
    ":not",
    ":text",
    ":identifier",
    ":Patient",
    ":above",
    ":below",
    ":iterate",
    ":",
    ".",
    ".name",
    ":Observation:patient:",
    "::",
    ".subject.name",
];
const VALUES: &[&str] = &[
    "",
    "a",
    "\\",
    "\\,",
    ",",
    "|",
    "||",
    "$",
    "$$",
    "ge",
    "gt2020",
    "2020-02-29T10:00:00+01:00",
    "1e5",
    "-",
    "é",
    "Patient/1",
    "http://x/Patient/1",
    "Patient:subject",
    "-date",
    "99999999999",
    "T",
    ":",
    "_history",
    "ap1.5|a|b",
];
const CHARS: &[char] = &[
    'a', ':', '.', ',', '|', '$', '\\', '-', '/', 'é', '0', 'T', '+', '🦀',
];

#[test]
fn parsing_never_panics() {
    let types: Vec<ResourceType> = [
        "Patient",
        "Observation",
        "ValueSet",
        "RiskAssessment",
        "Location",
        "Bundle",
    ]
    .iter()
    .map(|t| rt(t))
    .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let mut name = format!("{}{}", rng.pick(NAMES), rng.pick(SUFFIXES));
        let mut value = format!("{}{}", rng.pick(VALUES), rng.pick(VALUES));
        for _ in 0..(rng.next() % 4) {
            let c = CHARS[(rng.next() % CHARS.len() as u64) as usize];
            if rng.next().is_multiple_of(2) {
                name.push(c)
            } else {
                value.push(c)
            }
        }
        let resource_type = types[(rng.next() % types.len() as u64) as usize];
        let (query, errors) =
            SearchQuery::parse_lenient(resource_type, [(name.as_str(), value.as_str())]);
        // Either the pair was understood, or it is reported, never silently half-used.
        assert!(errors.len() <= 1);
        let _ = query.to_string();
    }
}

fn limit_error(resource_type: &str, query: &str, limits: &SearchLimits) -> SearchError {
    let (_, errors) = SearchQuery::parse_lenient_within(rt(resource_type), pairs(query), limits);
    errors
        .into_iter()
        .find(|e| matches!(e.problem, Problem::TooCostly(_)))
        .unwrap_or_else(|| panic!("{resource_type}?{query}: no limit was hit"))
}

#[test]
fn chains_longer_than_the_limit_are_refused_before_they_are_parsed() {
    let limits = SearchLimits::default();
    // Thousands of links: refused from the text, without recursing (this test thread's
    // stack would not hold a recursion per link either).
    let name = format!("{}_id", "part-of.".repeat(5000));
    let e = limit_error("Encounter", &format!("{name}=x"), &limits);
    assert_eq!(
        e.problem.to_string(),
        "the chain has 5000 links; at most 4 are allowed (fhir.max_chain_depth)"
    );
    assert!(e.param.len() < 120, "the name is cut in the error");
    let e = limit_error(
        "Patient",
        &format!("{}code=1", "_has:Observation:patient:".repeat(5)),
        &limits,
    );
    assert!(e.to_string().contains("fhir.max_chain_depth"), "{e}");
    // At the limit, a chain parses.
    check(
        "Encounter",
        "part-of.part-of.part-of.part-of._id=x",
        "Encounter?part-of->[Encounter.part-of->[Encounter.part-of->[Encounter.part-of->[Encounter._id(token *|x)]]]]",
    );
}

#[test]
fn chain_expansion_stops_at_the_path_limit() {
    let limits = SearchLimits {
        max_chain_depth: SearchLimits::CHAIN_DEPTH_CEILING,
        ..SearchLimits::default()
    };
    // part-of of an Observation refers to many types, most of which have part-of again:
    // fully expanded, 16 links would be millions of paths.
    let query = format!("{}_id=x", "part-of.".repeat(16));
    let e = limit_error("Observation", &query, &limits);
    assert_eq!(
        e.problem.to_string(),
        "the chains and _has of this search expand into more than 64 (type, parameter) paths (fhir.max_chain_paths)"
    );
    // The budget is the search's, not the parameter's.
    let narrow = SearchLimits {
        max_chain_paths: 2,
        ..SearchLimits::default()
    };
    let e = limit_error(
        "Observation",
        "subject:Patient.name=a&subject:Patient.name=b&subject:Patient.name=c",
        &narrow,
    );
    assert_eq!(e.param, "subject:Patient.name");
}

#[test]
fn too_many_parameters_or_values_are_refused() {
    let limits = SearchLimits {
        max_params: 3,
        max_values: 2,
        ..SearchLimits::default()
    };
    let e = limit_error("Patient", "_id=a,b,c", &limits);
    assert_eq!(e.param, "_id");
    assert_eq!(
        e.problem.to_string(),
        "the parameter has 3 values; at most 2 are allowed (fhir.max_search_values)"
    );
    // An escaped comma is part of a value.
    let (_, errors) =
        SearchQuery::parse_lenient_within(rt("Patient"), pairs(r"name=a\,b,c"), &limits);
    assert!(errors.is_empty(), "{errors:?}");
    let (_, errors) = SearchQuery::parse_lenient_within(
        rt("Patient"),
        pairs("name=a&name=b&name=c&name=d&gender=x&foo=y"),
        &limits,
    );
    assert_eq!(errors.len(), 1, "the rest is not read: {errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "search parameter 'name': the search has more than 3 parameters (fhir.max_search_params)"
    );
}
