from hestia_sdk import Claims, Decision, FhirRequest, Grant, TokenRequest
from hestia_sdk.testing import take_logs

from app import Policy


def test_deletes_are_refused_reads_are_not():
    app = Claims(client_id="my-app", scopes=["user/*.cruds"])
    assert Policy().authorize(FhirRequest("read", "Patient", "p1"), app) == Decision.allow()
    assert Policy().authorize(FhirRequest("delete", "Patient", "p1"), app) == Decision.deny(
        "deletes are disabled on this server"
    )
    assert take_logs() == [("info", "refused a delete by my-app")]


def test_only_registered_scopes_are_granted():
    grant = Grant.registered(TokenRequest(requested=["user/*.rs", "user/*.cud"], registered=["user/*.rs"]))
    assert grant.granted == ["user/*.rs"]
