"""What the Python client tests share: the demo server's settings (from the Postman
environment that `hestia serve --demo` writes) and the browser part of the code flow done
with plain HTTP form posts (the login and consent pages are plain HTML forms)."""

import html
import json
import os
import re

import pytest
import requests

POSTMAN_CALLBACK = "https://oauth.pstmn.io/v1/callback"


def _env():
    path = os.environ.get("HESTIA_CLIENTS_ENV")
    if not path:
        raise RuntimeError("HESTIA_CLIENTS_ENV is not set: run these tests through tests/clients/run")
    with open(path, encoding="utf-8") as f:
        return {v["key"]: v["value"] for v in json.load(f)["values"]}


@pytest.fixture(scope="session")
def demo():
    return _env()


def _hidden(page, name):
    found = re.search(r'name="%s" value="([^"]*)"' % re.escape(name), page)
    assert found, f"no hidden field {name} in the page:\n{page}"
    return html.unescape(found.group(1))


def sign_in_and_consent(demo, authorization_url, untick=()):
    """Signs in as the demo user and approves every offered scope but `untick`, the way a
    browser submits the two forms; returns the redirect URI the server sends back to."""
    browser = requests.Session()
    login = browser.get(authorization_url)
    assert login.status_code == 200, login.text
    consent = browser.post(
        demo["baseUrl"] + "/oauth2/login",
        data={
            "request_id": _hidden(login.text, "request_id"),
            "csrf": _hidden(login.text, "csrf"),
            "username": demo["username"],
            "password": demo["password"],
        },
    )
    assert consent.status_code == 200 and "/oauth2/consent" in consent.url, consent.text
    offered = [html.unescape(v) for v in re.findall(r'name="scope" id="[^"]*" value="([^"]*)"', consent.text)]
    for scope in untick:
        assert scope in offered, f"{scope} is not offered: {offered}"
    form = [
        ("request_id", _hidden(consent.text, "request_id")),
        ("csrf", _hidden(consent.text, "csrf")),
        ("decision", "approve"),
    ] + [("scope", s) for s in offered if s not in untick]
    done = browser.post(demo["baseUrl"] + "/oauth2/consent", data=form, allow_redirects=False)
    assert done.status_code == 303, done.text
    return done.headers["Location"]


def claims_of(jwt):
    import base64

    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def audiences(claims):
    aud = claims["aud"]
    return aud if isinstance(aud, list) else [aud]


def register_backend_service(demo, name, scope):
    """A SMART backend service registered (RFC 7591) with the public half of a fresh RS384
    key; returns its client id, the key (joserfc) and the key's kid."""
    import uuid

    from joserfc.jwk import RSAKey

    meta = requests.get(demo["baseUrl"] + "/.well-known/openid-configuration").json()
    key = RSAKey.generate_key(2048)
    kid = str(uuid.uuid4())
    public = dict(key.as_dict(private=False), kid=kid, alg="RS384", use="sig")
    registered = requests.post(
        meta["registration_endpoint"],
        headers={"Authorization": "Bearer " + demo["registration_token"]},
        json={
            "client_name": name,
            "token_endpoint_auth_method": "private_key_jwt",
            "grant_types": ["client_credentials"],
            "scope": scope,
            "jwks": {"keys": [public]},
        },
    )
    assert registered.status_code == 201, registered.text
    assert "client_secret" not in registered.json()
    return registered.json()["client_id"], key, kid
