"""The SMART scope parser against the table every SDK passes."""

import json
import pathlib

from hestia_sdk.smart import Scope, ScopeError

TABLE = pathlib.Path(__file__).resolve().parents[2] / "sdk" / "smart-scope-cases.json"


def describe(text: str) -> str:
    """The form of the table: canonical text, then context, type, permissions, syntax, query."""
    try:
        scope = Scope.parse(text)
    except ScopeError as e:
        return f"err: {e}"
    if scope.access is None:
        detail = f'LaunchContext("{scope.launch_context}")' if scope.launch_context else scope.kind
        return f"{scope} | {detail}"
    a = scope.access
    query = ", ".join(f"{n}={v}" for n, v in a.query)
    return f"{scope} | {scope.context} {a.resource_type or '*'} {a.permissions} {a.syntax} [{query}]"


def test_the_shared_table_of_scopes():
    cases = json.loads(TABLE.read_text())
    assert len(cases) >= 50
    for case in cases:
        assert describe(case["scope"]) == case["expect"], case["scope"]


def test_permits():
    scope = Scope.parse("patient/Observation.rs?category=laboratory")
    assert scope.permits("Observation", "s")
    assert not scope.permits("Observation", "c")
    assert not scope.permits("Patient", "r")
    assert Scope.parse("user/*.read").permits("Patient", "r")
