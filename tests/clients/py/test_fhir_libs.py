"""The SMART and FHIR libraries of Python against Hestia: fhirclient (a SMART app: it finds
the OAuth endpoints in the CapabilityStatement's oauth-uris extension, sends `aud` and PKCE,
exchanges the code) and fhirpy (CRUD and search)."""

import time

import requests
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from conftest import POSTMAN_CALLBACK, audiences, claims_of, sign_in_and_consent


def test_fhirclient_smart_launch(demo):
    smart = smart_client.FHIRClient(
        settings={
            "app_id": demo["client_id"],
            "app_secret": demo["client_secret"],
            "api_base": demo["fhirBase"],
            "redirect_uri": POSTMAN_CALLBACK,
            "scope": "openid fhirUser launch/patient patient/*.read",
        }
    )
    assert not smart.ready
    url = smart.authorize_url  # reads the CapabilityStatement to find the endpoints
    assert url.startswith(demo["baseUrl"] + "/oauth2/authorize?")
    assert smart.server.auth._token_uri == demo["baseUrl"] + "/oauth2/token"
    smart.handle_callback(sign_in_and_consent(demo, url))
    assert smart.ready
    assert smart.patient_id == demo["patient_id"]
    assert audiences(claims_of(smart.server.auth.access_token)) == [demo["fhirBase"]]

    patient = Patient.read(demo["patient_id"], smart.server)
    assert patient.name[0].family == "Shaw"
    assert smart.human_name(patient.name[0]) == "Amy Shaw"
    observations = list(Observation.where(struct={"patient": demo["patient_id"]}).perform_resources_iter(smart.server))
    assert observations, "the demo patient has Observations"
    assert {o.subject.reference for o in observations} == {"Patient/" + demo["patient_id"]}


def _system_token(demo):
    got = requests.post(
        demo["baseUrl"] + "/oauth2/token",
        auth=(demo["client_id"], demo["client_secret"]),
        data={"grant_type": "client_credentials", "scope": "system/*.read system/*.write", "aud": demo["fhirBase"]},
    )
    assert got.status_code == 200, got.text
    return got.json()["access_token"]


def test_fhirpy_crud_and_search(demo):
    client = SyncFHIRClient(demo["fhirBase"], authorization="Bearer " + _system_token(demo))
    family = f"Py{time.time_ns()}"
    patient = client.resource("Patient", name=[{"family": family, "given": ["Pia"]}], gender="female")
    patient.save()
    assert patient.id
    assert patient["meta"]["versionId"] == "1"

    read = client.reference("Patient", patient.id).to_resource()
    assert read["name"][0]["family"] == family
    read["birthDate"] = "1999-09-09"
    read.save()
    assert read["meta"]["versionId"] == "2"

    found = client.resources("Patient").search(family=family, birthdate="1999-09-09").fetch()
    assert [p.id for p in found] == [patient.id]
    labs = client.resources("Observation").search(subject="Patient/" + demo["patient_id"], category="laboratory").fetch_all()
    assert labs and all(o["subject"]["reference"] == "Patient/" + demo["patient_id"] for o in labs)

    read.delete()
    try:
        client.reference("Patient", patient.id).to_resource()
        raise AssertionError("a deleted patient is still read")
    except ResourceNotFound:
        pass
