"""smart-fetch (PyPI, SMART on FHIR's bulk-data client) against Hestia: a backend service
registered with a JWKS, SMART Backend Services authorization (a client assertion it signs
itself), `$export` kick-off, status polling, and the NDJSON downloads, as its users run it
from the command line. What it writes must be what a search with the same access finds."""

import gzip
import json
import pathlib
import subprocess
import sys

import requests

from conftest import register_backend_service

SMART_FETCH = pathlib.Path(sys.executable).parent / "smart-fetch"


def backend_service_jwks(demo, tmp_path, scope):
    """A registered backend service and the path of a JWKS file holding its private key,
    in the form smart-fetch reads."""
    client_id, key, kid = register_backend_service(demo, "smart-fetch bulk export", scope)
    private = dict(key.as_dict(private=True), kid=kid, alg="RS384", key_ops=["sign"])
    jwks = tmp_path / "smart-fetch.jwks"
    jwks.write_text(json.dumps({"keys": [private]}))
    return client_id, jwks


def bulk(demo, out, client_id, jwks, *options):
    """`smart-fetch bulk` into `out` as the backend service `client_id`."""
    args = ["bulk", out, "--fhir-url", demo["fhirBase"], "--smart-client-id", client_id, "--smart-key", jwks]
    run = subprocess.run(
        [str(SMART_FETCH), *map(str, args + list(options))], capture_output=True, text=True, timeout=300
    )
    print(run.stdout, run.stderr)
    return run


def exported(folder, resource_type):
    """The resources of `resource_type` in smart-fetch's output folder (gzip or not)."""
    found = []
    for path in sorted(folder.glob(f"*{resource_type}*.ndjson*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            found += [json.loads(line) for line in f if line.strip()]
    return found


def searched_ids(demo, resource_type, query=""):
    """Every id a search of `resource_type` (narrowed by `query`) finds with the demo's
    system token."""
    token = requests.post(
        demo["baseUrl"] + "/oauth2/token",
        auth=(demo["client_id"], demo["client_secret"]),
        data={"grant_type": "client_credentials", "scope": "system/*.read", "aud": demo["fhirBase"]},
    ).json()["access_token"]
    ids, url = set(), f"{demo['fhirBase']}/{resource_type}?_count=100&_elements=id{query}"
    while url:
        page = requests.get(url, headers={"Authorization": "Bearer " + token}).json()
        ids |= {e["resource"]["id"] for e in page.get("entry", [])}
        url = next((l["url"] for l in page.get("link", []) if l["relation"] == "next"), None)
    return ids


def test_smart_fetch_exports_what_the_backend_service_may_read(demo, tmp_path):
    client_id, jwks = backend_service_jwks(demo, tmp_path, "system/*.read")
    out = tmp_path / "export"
    run = bulk(demo, out, client_id, jwks, "--type", "Patient,Observation", "--no-default-filters")
    assert run.returncode == 0, run.stdout + run.stderr
    for resource_type in ("Patient", "Observation"):
        resources = exported(out, resource_type)
        assert resources, f"no {resource_type} in {sorted(p.name for p in out.iterdir())}"
        assert {r["resourceType"] for r in resources} == {resource_type}
        assert {r["id"] for r in resources} == searched_ids(demo, resource_type), resource_type
    # Its log names the kick-off it made and the manifest it was given.
    log = [json.loads(line) for line in (out / "log.ndjson").read_text().splitlines()]
    kickoff = next(e for e in log if e["eventId"] == "kickoff")
    assert "$export" in kickoff["eventDetail"]["exportUrl"], kickoff
    complete = next(e for e in log if e["eventId"] == "status_complete")
    assert complete["eventDetail"]["transactionTime"], complete


def test_smart_fetch_type_filter_narrows_the_export(demo, tmp_path):
    client_id, jwks = backend_service_jwks(demo, tmp_path, "system/*.read")
    out = tmp_path / "labs"
    run = bulk(
        demo, out, client_id, jwks, "--type", "Observation", "--type-filter", "Observation?category=laboratory"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    labs = searched_ids(demo, "Observation", "&category=laboratory")
    assert labs, "the demo data has laboratory Observations"
    assert labs != searched_ids(demo, "Observation"), "and Observations of other categories"
    assert {r["id"] for r in exported(out, "Observation")} == labs


def test_smart_fetch_is_told_which_scope_the_client_lacks(demo, tmp_path):
    # smart-fetch asks for system/<type>.read of every type it knows; a client registered
    # for Patients only is refused at the token endpoint, nothing is exported, and
    # smart-fetch stops with the server's reason, naming a scope and the client.
    client_id, jwks = backend_service_jwks(demo, tmp_path, "system/Patient.read")
    out = tmp_path / "export"
    run = bulk(demo, out, client_id, jwks, "--type", "Patient", "--no-default-filters")
    assert run.returncode != 0, run.stdout
    said = run.stdout + run.stderr
    assert f"client {client_id} is not registered for it" in said, said
    assert not exported(out, "Patient") if out.exists() else True
