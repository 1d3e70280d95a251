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


def _types():
    return _wit_types


def _wit_name(member) -> str:
    return member.name.lower().replace("_", "-")


def _user(user):
    if user is None:
        return None
    grants = [UserGrant(g.scope, g.patient_compartment) for g in user.grants]
    return UserRights(list(user.roles), grants)


def _claims(c) -> Claims:
    return Claims(
        client_id=c.client_id, scopes=list(c.scopes), issuer=c.issuer, subject=c.subject,
        audiences=list(c.audiences), fhir_user=c.fhir_user, patient=c.patient,
        expires_at=c.expires_at, raw_json=c.raw_json, user=_user(c.user),
    )


def _request(r) -> FhirRequest:
    return FhirRequest(
        interaction=_wit_name(r.interaction), resource_type=r.resource_type, id=r.id,
        operation=r.operation, parameters=[tuple(p) for p in r.parameters],
        body_json=r.body_json, base_url=r.base_url,
    )


def _token_request(r) -> TokenRequest:
    return TokenRequest(
        client_id=r.client_id, grant_type=r.grant_type, requested=list(r.requested),
        registered=list(r.registered), subject=r.subject, fhir_user=r.fhir_user,
        patient=r.patient, audiences=list(r.audiences), user=_user(r.user),
    )


def _decision(d: Decision):
    t = _types()
    if d.kind == "allow":
        return t.Decision_Allow()
    if d.kind == "deny":
        return t.Decision_Deny(d.reason)
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
            return _types().Grant(list(grant.granted), [tuple(r) for r in grant.refused])

        def authorize(self, request, claims):
            return _decision(policy().authorize(_request(request), _claims(claims)))

    return WitWorld


def export_audience_rule(rule):
    """`WitWorld = export_audience_rule(MyRule)`: `resolve(request) -> list[str]` and
    `accept(audiences, base_url) -> None`; each raises `ValueError(reason)` to refuse."""

    class WitWorld:
        def resolve(self, request):
            plain = AudienceRequest(request.client_id, list(request.requested), list(request.known))
            try:
                return list(rule().resolve(plain))
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
            t = _types()
            issues = validator().validate(resource_type, json.loads(resource_json))
            return [
                t.Issue(getattr(t.Severity, i.severity.upper()), i.code, i.expression, i.diagnostics)
                for i in issues
            ]

    return WitWorld
