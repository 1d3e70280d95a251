"""From a plugin class to the `WitWorld` class componentize-py exports: conversions between
the SDK's plain types and the generated bindings (`wit_world`, imported only when the
component calls in)."""

import json

from . import (
    AudienceRequest, Claims, Decision, FhirRequest, Grant, TokenRequest, UserGrant, UserRights,
)


# Imported at build time (see host.py); absent under pytest, where nothing converts.
try:
    from componentize_py_types import Err
    from wit_world.imports import types as _wit_types
except ImportError:
    Err = _wit_types = None


def _interaction_names():
    """The WIT name of each `interaction`, indexed by the generated enum's value."""
    names = [""] * len(_wit_types.Interaction)
    for member in _wit_types.Interaction:
        names[member.value] = member.name.lower().replace("_", "-")
    return tuple(names)


if _wit_types is not None:
    _INTERACTIONS = _interaction_names()
    _ALLOW = _wit_types.Decision_Allow()


# The generated records of `claims`, `fhir-request`, `token-request`, `audience-request`
# and `user-rights` have the fields of the SDK's types, by the same names and in the same
# Python types (but for the interaction, an enum there, its WIT name here). Each call's records are its own, so
# the conversions below make them the SDK's types in place (`__class__`: both are plain
# dataclasses, of the same layout) instead of copying every field: a call pays for the
# fields that differ, not for all of them.


def _user(user) -> UserRights:
    user.__class__ = UserRights
    for grant in user.grants:
        grant.__class__ = UserGrant
    return user


def _claims(claims) -> Claims:
    claims.__class__ = Claims
    if claims.user is not None:
        _user(claims.user)
    return claims


def _request(request) -> FhirRequest:
    request.__class__ = FhirRequest
    request.interaction = _INTERACTIONS[request.interaction._value_]
    return request


def _token_request(request) -> TokenRequest:
    request.__class__ = TokenRequest
    if request.user is not None:
        _user(request.user)
    return request


def _audience_request(request) -> AudienceRequest:
    request.__class__ = AudienceRequest
    return request


def _decision(d: Decision):
    kind = d.kind
    if kind == "allow":
        return _ALLOW
    if kind == "deny":
        return _wit_types.Decision_Deny(d.reason)
    t = _wit_types
    constraints = []
    for c in d.constraints:
        if c.patient is not None:
            constraints.append(t.Constraint_PatientCompartment(c.patient))
        else:
            search = t.SearchConstraint(c.resource_type, [tuple(p) for p in c.parameters])
            constraints.append(t.Constraint_Search(search))
    return t.Decision_AllowWithin(constraints)


def export_scope_policy(policy):
    """`WitWorld = export_scope_policy(MyPolicy)`: `MyPolicy` has `authorize(request,
    claims) -> Decision` and may have `grant(request) -> Grant` (default:
    `Grant.registered`)."""

    class WitWorld:
        def grant(self, request):
            plain = _token_request(request)
            grant = policy().grant(plain) if hasattr(policy, "grant") else Grant.registered(plain)
            return _wit_types.Grant(list(grant.granted), [tuple(r) for r in grant.refused])

        def authorize(self, request, claims):
            return _decision(policy().authorize(_request(request), _claims(claims)))

    return WitWorld


def export_audience_rule(rule):
    """`WitWorld = export_audience_rule(MyRule)`: `resolve(request) -> list[str]` and
    `accept(audiences, base_url) -> None`; each raises `ValueError(reason)` to refuse."""

    class WitWorld:
        def resolve(self, request):
            try:
                return list(rule().resolve(_audience_request(request)))
            except ValueError as refusal:
                raise Err(str(refusal))

        # `accept` under the name of the SDK's build world (`wit/audience-rule.wit`).
        def accept_audiences(self, token_audiences, server_base_url):
            try:
                rule().accept(list(token_audiences), server_base_url)
            except ValueError as refusal:
                raise Err(str(refusal))

    return WitWorld


def export_resource_validator(validator):
    """`WitWorld = export_resource_validator(MyValidator)`: `validate(resource_type,
    resource) -> list[Issue]`, the resource parsed from JSON."""

    class WitWorld:
        def validate(self, resource_type, resource_json):
            t = _wit_types
            issues = validator().validate(resource_type, json.loads(resource_json))
            return [
                t.Issue(getattr(t.Severity, i.severity.upper()), i.code, i.expression, i.diagnostics)
                for i in issues
            ]

    return WitWorld
