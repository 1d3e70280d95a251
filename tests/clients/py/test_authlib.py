"""authlib's OAuth 2 client against Hestia: client_credentials, private_key_jwt (a client
registered with a JWKS, RS384 assertions as in SMART Backend Services), and the
authorization code flow with PKCE."""

import secrets

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign

from conftest import POSTMAN_CALLBACK, audiences, claims_of, register_backend_service, sign_in_and_consent


class BackendServicesJWT(PrivateKeyJWT):
    """authlib's private_key_jwt with the assertion lifetime of SMART Backend Services: `exp`
    at most five minutes ahead (authlib's default is an hour, which Hestia refuses)."""

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            claims=self.claims,
            header=self.headers,
            alg=self.alg,
            expires_in=300,
        )


def metadata(demo):
    got = requests.get(demo["baseUrl"] + "/.well-known/openid-configuration")
    assert got.status_code == 200
    return got.json()


def test_client_credentials(demo):
    meta = metadata(demo)
    session = OAuth2Session(demo["client_id"], demo["client_secret"], scope="system/*.read")
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", aud=demo["fhirBase"])
    claims = claims_of(token["access_token"])
    assert audiences(claims) == [demo["fhirBase"]]
    assert claims["scope"] == "system/*.read"
    bundle = session.get(demo["fhirBase"] + "/Patient", params={"_count": 5})
    assert bundle.status_code == 200, bundle.text
    assert bundle.json()["resourceType"] == "Bundle"


def test_private_key_jwt_backend_service(demo):
    meta = metadata(demo)
    client_id, key, kid = register_backend_service(
        demo, "authlib backend service", "system/Patient.rs system/Observation.rs"
    )

    session = OAuth2Session(
        client_id,
        key,
        token_endpoint_auth_method=BackendServicesJWT(meta["token_endpoint"], alg="RS384", headers={"kid": kid}),
        scope="system/Observation.rs",
    )
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", aud=demo["fhirBase"])
    claims = claims_of(token["access_token"])
    assert claims["client_id"] == client_id
    assert claims["scope"] == "system/Observation.rs"
    assert audiences(claims) == [demo["fhirBase"]]
    # A second token: a new assertion (new jti), so no replay.
    again = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", aud=demo["fhirBase"])
    assert claims_of(again["access_token"])["jti"] != claims["jti"]
    observations = session.get(demo["fhirBase"] + "/Observation", params={"category": "laboratory"})
    assert observations.status_code == 200, observations.text
    # Observation.rs only: reading patients is refused, and the refusal says why.
    patients = session.get(demo["fhirBase"] + "/Patient")
    assert patients.status_code == 403
    assert "insufficient_scope" in patients.headers["WWW-Authenticate"]
    assert "Patient" in patients.json()["issue"][0]["diagnostics"]


def test_authorization_code_with_pkce(demo):
    meta = metadata(demo)
    session = OAuth2Session(
        demo["client_id"],
        demo["client_secret"],
        scope="openid fhirUser launch/patient offline_access patient/Patient.read patient/Observation.read",
        redirect_uri=POSTMAN_CALLBACK,
        code_challenge_method="S256",
    )
    verifier = secrets.token_urlsafe(48)
    url, state = session.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, aud=demo["fhirBase"]
    )
    assert "code_challenge=" in url
    location = sign_in_and_consent(demo, url, untick=["patient/Observation.read"])
    token = session.fetch_token(
        meta["token_endpoint"], authorization_response=location, state=state, code_verifier=verifier
    )
    granted = token["scope"].split()
    assert "patient/Patient.read" in granted
    assert "patient/Observation.read" not in granted, "unticked on the consent page"
    assert token["patient"] == demo["patient_id"]
    claims = claims_of(token["access_token"])
    assert audiences(claims) == [demo["fhirBase"]]
    me = session.get(demo["fhirBase"] + "/Patient/" + demo["patient_id"])
    assert me.status_code == 200, me.text
    assert me.json()["name"][0]["family"] == "Shaw"
    refused = session.get(demo["fhirBase"] + "/Observation")
    assert refused.status_code == 403, refused.text
    assert "insufficient_scope" in refused.headers["WWW-Authenticate"]

    # authlib sends the session's scope with a refresh; asking again for the unticked scope
    # is refused (RFC 6749 §6), so the session adopts what was granted.
    session.scope = token["scope"]
    refreshed = session.refresh_token(meta["token_endpoint"])
    assert refreshed["access_token"] != token["access_token"]
    assert "patient/Observation.read" not in refreshed["scope"].split()
    assert session.get(demo["fhirBase"] + "/Patient/" + demo["patient_id"]).status_code == 200
