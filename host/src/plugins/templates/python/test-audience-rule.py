import pytest

from hestia_sdk import AudienceRequest

from app import Rule

OWN = "https://hestia.test/fhir/r4"


def test_only_registered_audiences():
    assert Rule().resolve(AudienceRequest(requested=[], known=[OWN])) == [OWN]
    with pytest.raises(ValueError, match="not a registered resource server"):
        Rule().resolve(AudienceRequest(requested=["https://elsewhere.test"], known=[OWN]))
    Rule().accept([f"{OWN}/"], OWN)
    with pytest.raises(ValueError, match="not meant for"):
        Rule().accept(["https://elsewhere.test"], OWN)
