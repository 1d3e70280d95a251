//! Rights of accounts on both databases: roles and access policies managed with the real
//! binary's `hestia user` and `hestia policy`, and what `Store::rights_of` adds them up to.

use std::path::Path;

use hestia::rights::Rights;
use hestia::store::Store;
use serde_json::{Value, json};

use crate::support::{TestDb, call, hestia, mint, raw_app_on};

const PASSWORD: &str = "a-long-password";

const CLINIC_A: &str = r#"
name = "clinic-a"
description = "Practitioners of clinic A: their organization's patients and those patients' data"
grants = [
  "Patient.cruds?organization=Organization/clinic-a",
  "Observation.cruds?subject:Patient.organization=Organization/clinic-a",
]
"#;

const AUDITOR: &str = "name = \"auditor\"\ngrants = [\"*.read\"]\n";

/// `hestia ARGS --database-url URL` in `dir`; panics with its output when it fails.
fn run(dir: &Path, db: &TestDb, args: &[&str], stdin: &str) -> String {
    let (ok, out, err) = try_run(dir, db, args, stdin);
    assert!(ok, "{}: hestia {args:?}: {out}{err}", db.backend);
    out
}

fn try_run(dir: &Path, db: &TestDb, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend(["--database-url", db.url.as_str()]);
    hestia(dir, &all, stdin)
}

fn add_user(dir: &Path, db: &TestDb, name: &str, args: &[&str]) -> Value {
    let mut all = vec!["user", "add", name, "--password-stdin"];
    all.extend_from_slice(args);
    serde_json::from_str(&run(dir, db, &all, &format!("{PASSWORD}\n"))).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn rights(store: &Store, username: &str) -> Rights {
    let user = store.find_user(username).await.unwrap().unwrap();
    store.rights_of(&user.id).await.unwrap()
}

fn grants(rights: &Rights) -> Vec<String> {
    rights.grants.iter().map(|g| g.to_string()).collect()
}

/// The accounts of the rights tests, made with `hestia user add` in `d`: amy (a patient),
/// doc (a practitioner), carol (role clinic-a-staff), nora (no role) and pat (a patient's
/// account with the roles practitioner and staff), and the policy clinic-a attached to
/// the roles clinic-a-staff and staff.
fn add_accounts(d: &Path, db: &TestDb) {
    let amy = add_user(
        d,
        db,
        "amy",
        &["--fhir-user", "Patient/amy", "--role", "patient"],
    );
    assert_eq!(amy["roles"], json!(["patient"]), "{}", db.backend);
    add_user(
        d,
        db,
        "doc",
        &["--fhir-user", "Practitioner/doc", "--role", "practitioner"],
    );
    add_user(d, db, "carol", &["--role", "clinic-a-staff"]);
    add_user(d, db, "nora", &[]);
    // A patient's account given the practitioner role stays within its own records.
    add_user(
        d,
        db,
        "pat",
        &[
            "--fhir-user",
            "Patient/p2",
            "--role",
            "practitioner",
            "--role",
            "staff",
        ],
    );
    let file = write(d, "clinic-a.toml", CLINIC_A);
    let out = run(
        d,
        db,
        &[
            "policy",
            "add",
            &file,
            "--role",
            "clinic-a-staff",
            "--role",
            "staff",
        ],
        "",
    );
    assert!(
        out.contains("added policy clinic-a; attached to role clinic-a-staff, role staff"),
        "{out}"
    );
}

#[tokio::test]
async fn rights_of_patients_practitioners_custom_roles_and_nobody() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        add_accounts(dir.path(), &db);
        let store = Store::open(&db.url).await.unwrap();
        let amy = rights(&store, "amy").await;
        assert_eq!(grants(&amy), ["*.rs"], "{}", db.backend);
        assert_eq!(amy.fhir_user_compartment.as_deref(), Some("amy"));
        let doc = rights(&store, "doc").await;
        assert_eq!(grants(&doc), ["*.cruds"]);
        assert_eq!(doc.fhir_user_compartment, None);
        let carol = rights(&store, "carol").await;
        assert_eq!(
            grants(&carol),
            [
                "Patient.cruds?organization=Organization/clinic-a",
                "Observation.cruds?subject:Patient.organization=Organization/clinic-a"
            ]
        );
        assert_eq!(carol.policies, ["clinic-a"]);
        assert_eq!(carol.fhir_user_compartment, None);
        let nora = rights(&store, "nora").await;
        assert!(
            nora.grants.is_empty() && nora.policies.is_empty(),
            "{nora:?}"
        );
        let pat = rights(&store, "pat").await;
        assert_eq!(
            grants(&pat),
            ["*.cruds"],
            "the wider grant covers clinic-a's"
        );
        assert_eq!(pat.fhir_user_compartment.as_deref(), Some("p2"));
        assert_eq!(pat.roles, ["practitioner", "staff"]);
        assert_eq!(
            store
                .user_roles(&store.find_user("pat").await.unwrap().unwrap().id)
                .await
                .unwrap(),
            ["practitioner", "staff"]
        );
        store.close().await;
    }
}

/// What scripts read: the list and one account with its effective grants.
#[tokio::test]
async fn user_list_and_show_print_accounts_with_their_rights() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        add_accounts(d, &db);
        let list: Value =
            serde_json::from_str(&run(d, &db, &["user", "list", "--json"], "")).unwrap();
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["amy", "carol", "doc", "nora", "pat"]);
        assert_eq!(list[4]["fhir_user"], "Patient/p2");
        let shown: Value =
            serde_json::from_str(&run(d, &db, &["user", "show", "pat", "--json"], "")).unwrap();
        assert_eq!(shown["rights"]["grants"], json!(["*.cruds"]));
        assert_eq!(shown["rights"]["fhir_user_compartment"], "p2");
        let text = run(d, &db, &["user", "show", "nora"], "");
        assert!(text.contains("grants:     none"), "{text}");
        let table = run(d, &db, &["user", "list"], "");
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["amy", "Patient/amy", "patient"]),
            "{table}"
        );
    }
}

#[tokio::test]
async fn roles_are_set_replaced_and_cleared() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        add_user(d, &db, "bob", &["--role", "practitioner"]);
        let store = Store::open(&db.url).await.unwrap();
        let before = store.rights_revision().await.unwrap();
        assert_eq!(grants(&rights(&store, "bob").await), ["*.cruds"]);

        let out = run(
            d,
            &db,
            &["user", "set", "bob", "--role", "nurse", "--role", "admin"],
            "",
        );
        assert!(out.contains("roles admin, nurse"), "{out}");
        let bob = rights(&store, "bob").await;
        assert_eq!(bob.roles, ["admin", "nurse"], "{}", db.backend);
        assert!(
            bob.grants.is_empty(),
            "admin alone reads no FHIR data: {bob:?}"
        );
        assert!(
            store.rights_revision().await.unwrap() > before,
            "a change bumps the revision"
        );

        run(
            d,
            &db,
            &[
                "user",
                "set",
                "bob",
                "--fhir-user",
                "Patient/b1",
                "--role",
                "patient",
            ],
            "",
        );
        let bob = rights(&store, "bob").await;
        assert_eq!(
            (grants(&bob), bob.fhir_user_compartment.as_deref()),
            (vec!["*.rs".to_string()], Some("b1"))
        );
        run(d, &db, &["user", "set", "bob", "--no-fhir-user"], "");
        let bob = rights(&store, "bob").await;
        assert!(
            bob.grants.is_empty(),
            "the patient policy needs a Patient fhirUser: {bob:?}"
        );
        assert!(
            bob.notes[0].contains("fhirUser is not set"),
            "{:?}",
            bob.notes
        );
        run(d, &db, &["user", "set", "bob", "--no-roles"], "");
        assert!(rights(&store, "bob").await.roles.is_empty());

        // Bad input changes nothing and says why.
        let revision = store.rights_revision().await.unwrap();
        for (args, needle) in [
            (
                vec!["user", "set", "bob", "--role", "a b"],
                "role \"a b\" must be",
            ),
            (
                vec!["user", "set", "bob", "--fhir-user", "Patient"],
                "must be TYPE/ID",
            ),
            (vec!["user", "set", "bob"], "nothing to change"),
            (
                vec!["user", "set", "nobody", "--role", "x"],
                "user \"nobody\" not found",
            ),
            (
                vec!["user", "add", "eve", "--password-stdin", "--role", "x/y"],
                "role \"x/y\" must be",
            ),
        ] {
            let (ok, _, err) = try_run(d, &db, &args, &format!("{PASSWORD}\n"));
            assert!(!ok && err.contains(needle), "{args:?}: {err}");
        }
        assert!(
            store.find_user("eve").await.unwrap().is_none(),
            "a bad role creates no account"
        );
        assert_eq!(store.rights_revision().await.unwrap(), revision);
        store.close().await;
    }
}

/// A policy is added, replaced (keeping or replacing its bindings), attached to and detached
/// from roles and accounts, and removed; built-in policies cannot be removed.
/// Long: one policy's life in order; each step checks the grants and bindings the steps before left.
#[tokio::test]
async fn policies_are_added_replaced_attached_and_removed() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        add_user(d, &db, "carol", &["--role", "clinic-a-staff"]);
        add_user(d, &db, "ann", &[]);
        let store = Store::open(&db.url).await.unwrap();
        let file = write(d, "clinic-a.toml", CLINIC_A);
        run(
            d,
            &db,
            &["policy", "add", &file, "--role", "clinic-a-staff"],
            "",
        );

        // Replacing the document keeps the bindings and changes the grants.
        let narrower = CLINIC_A.replace(
            "  \"Observation.cruds?subject:Patient.organization=Organization/clinic-a\",\n",
            "",
        );
        let file = write(d, "clinic-a.toml", &narrower);
        let out = run(d, &db, &["policy", "add", &file], "");
        assert!(
            out.contains(
                "replaced the document of policy clinic-a; kept its bindings: role clinic-a-staff"
            ),
            "{out}"
        );
        assert_eq!(
            grants(&rights(&store, "carol").await),
            ["Patient.cruds?organization=Organization/clinic-a"],
            "{}",
            db.backend
        );
        let shown = run(d, &db, &["policy", "show", "clinic-a"], "");
        assert!(
            shown.contains("# roles: clinic-a-staff") && shown.ends_with(&narrower),
            "{shown}"
        );

        // Given bindings replace the old ones.
        let auditor = write(d, "auditor.toml", AUDITOR);
        run(d, &db, &["policy", "add", &auditor, "--user", "carol"], "");
        let out = run(d, &db, &["policy", "add", &auditor, "--user", "ann"], "");
        assert!(out.contains("attached to user ann"), "{out}");
        assert_eq!(grants(&rights(&store, "ann").await), ["*.rs"]);
        assert_eq!(rights(&store, "carol").await.policies, ["clinic-a"]);

        // Attach and detach, by role and by account.
        run(
            d,
            &db,
            &["policy", "attach", "auditor", "--role", "clinic-a-staff"],
            "",
        );
        assert_eq!(
            grants(&rights(&store, "carol").await),
            ["*.rs", "Patient.cruds?organization=Organization/clinic-a"]
        );
        let out = run(
            d,
            &db,
            &["policy", "detach", "auditor", "--user", "ann"],
            "",
        );
        assert!(out.contains("now attached to role clinic-a-staff"), "{out}");
        assert!(rights(&store, "ann").await.grants.is_empty());
        let (ok, _, err) = try_run(
            d,
            &db,
            &["policy", "detach", "auditor", "--user", "ann"],
            "",
        );
        assert!(
            !ok && err.contains("policy auditor is not attached to user ann"),
            "{err}"
        );

        let list: Value =
            serde_json::from_str(&run(d, &db, &["policy", "list", "--json"], "")).unwrap();
        let rows: Vec<(String, bool, Value)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["built_in"].as_bool().unwrap(),
                    p["bindings"].clone(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "patient".to_string(),
                    true,
                    json!({"roles": ["patient"], "users": []})
                ),
                (
                    "practitioner".to_string(),
                    true,
                    json!({"roles": ["practitioner"], "users": []})
                ),
                (
                    "admin".to_string(),
                    true,
                    json!({"roles": ["admin"], "users": []})
                ),
                (
                    "auditor".to_string(),
                    false,
                    json!({"roles": ["clinic-a-staff"], "users": []})
                ),
                (
                    "clinic-a".to_string(),
                    false,
                    json!({"roles": ["clinic-a-staff"], "users": []})
                ),
            ]
        );

        // Removed: no longer applies; built-in policies cannot be removed.
        run(d, &db, &["policy", "remove", "clinic-a"], "");
        assert_eq!(grants(&rights(&store, "carol").await), ["*.rs"]);
        let (ok, _, err) = try_run(d, &db, &["policy", "remove", "clinic-a"], "");
        assert!(
            !ok && err.contains("policy \"clinic-a\" not found"),
            "{err}"
        );
        let (ok, _, err) = try_run(d, &db, &["policy", "remove", "practitioner"], "");
        assert!(!ok && err.contains("built-in policy"), "{err}");
        store.close().await;
    }
}

#[tokio::test]
async fn invalid_policies_are_refused_and_nothing_is_stored() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        add_user(d, &db, "carol", &[]);
        let store = Store::open(&db.url).await.unwrap();
        let revision = store.rights_revision().await.unwrap();
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "name = \"x\"\ngrants = []\nroles = [\"a\"]\n",
                &[],
                "unknown field `roles`",
            ),
            (
                "name = \"x\"\ngrants = [\"Observation.rs?colour=red\"]\n",
                &[],
                "grant \"Observation.rs?colour=red\": search parameter 'colour': Observation has no such search parameter",
            ),
            (
                "name = \"x\"\ngrants = [\"Observation.sr\"]\n",
                &[],
                "grant \"Observation.sr\": permissions \"sr\"",
            ),
            (
                "name = \"x\"\ngrants = [\"Obsrvation.rs\"]\n",
                &[],
                "Obsrvation is not a FHIR R4 resource type",
            ),
            (
                "name = \"x\"\ngrants = [\"user/*.rs\"]\n",
                &[],
                "without the patient/, user/ or system/ prefix",
            ),
            (
                "name = \"x\"\ngrants = [\"*.rs\"]\ncompartment = \"practitioner\"\n",
                &[],
                "compartment \"practitioner\" is not supported",
            ),
            (
                "name = \"admin\"\ngrants = [\"*.rs\"]\n",
                &[],
                "built-in policy",
            ),
            (
                "name = \"x\"\ngrants = [\"*.rs\"]\n",
                &["--user", "nobody"],
                "user \"nobody\" not found",
            ),
            (
                "name = \"x\"\ngrants = [\"*.rs\"]\n",
                &["--role", "bad role"],
                "role \"bad role\" must be",
            ),
        ];
        for (text, extra, needle) in cases {
            let file = write(d, "bad.toml", text);
            let mut args = vec!["policy", "add", file.as_str()];
            args.extend_from_slice(extra);
            let (ok, out, err) = try_run(d, &db, &args, "");
            assert!(!ok, "{}: {text} was accepted: {out}", db.backend);
            assert!(err.contains(needle), "{text}: {err}");
            if extra.is_empty() {
                assert!(
                    err.contains("bad.toml: "),
                    "the error names the file: {err}"
                );
            }
        }
        let list: Value =
            serde_json::from_str(&run(d, &db, &["policy", "list", "--json"], "")).unwrap();
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .all(|p| p["built_in"] == true),
            "{list}"
        );
        assert_eq!(
            store.rights_revision().await.unwrap(),
            revision,
            "nothing was written"
        );
        assert!(rights(&store, "carol").await.grants.is_empty());
        store.close().await;
    }
}

/// Accounts amy (a patient) and other (no role), both bound to the policy auditor; a
/// grant of each (amy's is `test-grant`, under which `mint` records), a token of other's
/// recorded as `other-jti` and one of amy's minted as `amy-jti`, which it answers.
async fn amy_and_other(d: &Path, db: &TestDb, state: &hestia::http::AppState) -> String {
    let store = state.store();
    add_user(
        d,
        db,
        "amy",
        &["--fhir-user", "Patient/amy", "--role", "patient"],
    );
    add_user(d, db, "other", &[]);
    let amy = store.find_user("amy").await.unwrap().unwrap();
    let other = store.find_user("other").await.unwrap().unwrap();
    let auditor = write(d, "auditor.toml", AUDITOR);
    let bind = [
        "policy", "add", &auditor, "--user", "amy", "--user", "other",
    ];
    run(d, db, &bind, "");
    let now = hestia::store::now_secs();
    store
        .create_grant("test-grant", "app-1", Some(&amy.id), now)
        .await
        .unwrap();
    store
        .create_grant("other-grant", "app-1", Some(&other.id), now)
        .await
        .unwrap();
    store
        .record_access_token("other-jti", "other-grant", "app-1", now + 300)
        .await
        .unwrap();
    mint(
        state,
        json!({"sub": amy.id, "scope": "user/Patient.rs", "jti": "amy-jti"}),
    )
    .await
}

/// A search of Patients with `token`.
async fn search_patients(app: &axum::Router, token: &str) -> crate::support::Reply {
    let bearer = format!("Bearer {token}");
    call(
        app,
        "GET",
        "/fhir/r4/Patient",
        &[("authorization", &bearer)],
        "",
    )
    .await
}

#[tokio::test]
async fn removing_a_user_revokes_what_was_issued_for_it() {
    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (app, state) = raw_app_on(&db, "").await;
        let store = state.store().clone();
        let token = amy_and_other(d, &db, &state).await;
        let before = search_patients(&app, &token).await;
        assert_eq!(before.status, 200, "{}: {:?}", db.backend, before.body);

        let out = run(d, &db, &["user", "remove", "amy"], "");
        assert!(out.contains("removed user amy"), "{out}");
        let after = search_patients(&app, &token).await;
        assert_eq!(after.status, 401, "{}: {:?}", db.backend, after.body);
        assert!(
            after
                .header("www-authenticate")
                .contains("its user amy was removed"),
            "{}",
            after.header("www-authenticate")
        );
        let record = store.access_token_record("amy-jti").await.unwrap().unwrap();
        assert!(record.revoked.is_some());
        let grant = store.grant_revocation("test-grant").await.unwrap().unwrap();
        assert_eq!(
            grant.reason, "its user amy was removed",
            "refresh tokens of the grant are refused with it"
        );
        // Only amy's: another account's grant and token stand, and its policy binding too.
        let other_grant = store.grant_revocation("other-grant").await.unwrap();
        assert!(other_grant.is_none(), "{other_grant:?}");
        let other_token = store.access_token_record("other-jti").await.unwrap();
        assert!(other_token.unwrap().revoked.is_none());
        assert!(store.find_user("amy").await.unwrap().is_none());
        let shown = run(d, &db, &["policy", "show", "auditor"], "");
        assert!(shown.contains("# users: other\n"), "{shown}");
        let (ok, _, err) = try_run(d, &db, &["user", "remove", "amy"], "");
        assert!(!ok && err.contains("user \"amy\" not found"), "{err}");
        // The account's roles went with it: a new account of the same name starts with none.
        add_user(d, &db, "amy", &[]);
        let again = rights(&store, "amy").await;
        assert!(
            again.roles.is_empty() && again.grants.is_empty(),
            "{again:?}"
        );
    }
}
