"""Write Hestia plugins (scope policies, audience rules, resource validators) in plain
Python, test them with pytest, and build them into WebAssembly components with
componentize-py (`hestia plugin build`).

The plugin sees the plain types of this module; `export_*` turns a plugin class into the
`WitWorld` class componentize-py looks for, converting to and from the generated bindings
(`wit_world`, which exists only inside the component build). Nothing here needs them to
be imported, so the same code runs under pytest.
"""

import json
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from . import smart
from .smart import ResourceAccess, Scope

__all__ = [
    "AudienceRequest", "Claims", "Constraint", "Decision", "FhirRequest", "Grant", "Issue",
    "ResourceAccess", "Scope", "TokenRequest", "UserGrant", "UserRights", "config",
    "export_audience_rule", "export_resource_validator", "export_scope_policy", "log",
    "same_url", "smart",
]

WRITES = {"update", "patch", "delete", "create"}


@dataclass
class UserGrant:
    scope: str
    patient_compartment: Optional[str] = None


@dataclass
class UserRights:
    roles: List[str] = field(default_factory=list)
    grants: List[UserGrant] = field(default_factory=list)

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass
class Claims:
    """What the host knows about a verified access token."""

    client_id: str = "app"
    scopes: List[str] = field(default_factory=list)
    issuer: str = "https://hestia.test"
    subject: str = "user"
    audiences: List[str] = field(default_factory=list)
    fhir_user: Optional[str] = None
    patient: Optional[str] = None
    expires_at: int = 4_000_000_000
    raw_json: str = "{}"
    user: Optional[UserRights] = None

    def parsed_scopes(self) -> List[Scope]:
        """The token's scopes, parsed; a scope that does not parse is left out."""
        out = []
        for text in self.scopes:
            try:
                out.append(Scope.parse(text))
            except ValueError:
                pass
        return out

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def claim(self, name: str):
        return json.loads(self.raw_json or "{}").get(name)


@dataclass
class FhirRequest:
    """One FHIR REST request; `interaction` is the WIT name (`read`, `search-type`, ...)."""

    interaction: str
    resource_type: Optional[str] = None
    id: Optional[str] = None
    operation: Optional[str] = None
    parameters: List[Tuple[str, str]] = field(default_factory=list)
    body_json: Optional[str] = None
    base_url: str = "https://hestia.test/fhir/r4"

    def is_write(self) -> bool:
        return self.interaction in WRITES

    def body(self):
        return None if self.body_json is None else json.loads(self.body_json)


@dataclass
class Constraint:
    """`patient_compartment(id)` or `search(resource_type, parameters)`."""

    patient: Optional[str] = None
    resource_type: Optional[str] = None
    parameters: List[Tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def patient_compartment(patient: str) -> "Constraint":
        return Constraint(patient=patient)

    @staticmethod
    def search(resource_type: str, parameters) -> "Constraint":
        return Constraint(resource_type=resource_type, parameters=list(parameters))


@dataclass
class Decision:
    """`allow()`, `allow_within([...])` or `deny(reason)`."""

    kind: str
    reason: str = ""
    constraints: List[Constraint] = field(default_factory=list)

    @staticmethod
    def allow() -> "Decision":
        return Decision("allow")

    @staticmethod
    def allow_within(constraints) -> "Decision":
        return Decision("allow-within", constraints=list(constraints))

    @staticmethod
    def deny(reason: str) -> "Decision":
        return Decision("deny", reason=reason)


@dataclass
class TokenRequest:
    client_id: str = "app"
    grant_type: str = "authorization_code"
    requested: List[str] = field(default_factory=list)
    registered: List[str] = field(default_factory=list)
    subject: Optional[str] = None
    fhir_user: Optional[str] = None
    patient: Optional[str] = None
    audiences: List[str] = field(default_factory=list)
    user: Optional[UserRights] = None


@dataclass
class Grant:
    granted: List[str] = field(default_factory=list)
    refused: List[Tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def registered(request: TokenRequest) -> "Grant":
        """The requested scopes the client is registered for; the others refused."""
        grant = Grant()
        for scope in request.requested:
            if scope in request.registered:
                grant.granted.append(scope)
            else:
                grant.refused.append((scope, "the client is not registered for this scope"))
        return grant


@dataclass
class AudienceRequest:
    client_id: str = "app"
    requested: List[str] = field(default_factory=list)
    known: List[str] = field(default_factory=list)


@dataclass
class Issue:
    """One finding of a validator; `severity` is `fatal`, `error`, `warning` or `information`."""

    severity: str
    code: str
    diagnostics: str
    expression: Optional[str] = None

    @staticmethod
    def error(code: str, diagnostics: str, expression: Optional[str] = None) -> "Issue":
        return Issue("error", code, diagnostics, expression)

    @staticmethod
    def warning(code: str, diagnostics: str, expression: Optional[str] = None) -> "Issue":
        return Issue("warning", code, diagnostics, expression)

    @staticmethod
    def required(expression: str) -> "Issue":
        return Issue("error", "required", f"{expression} is required", expression)


def same_url(a: str, b: str) -> bool:
    """Two URLs name the same base: equal up to a trailing `/` and the case of scheme and host."""

    def norm(url: str) -> str:
        url = url.rstrip("/")
        scheme, sep, rest = url.partition("://")
        if not sep:
            return url
        host, slash, path = rest.partition("/")
        return f"{scheme.lower()}://{host.lower()}{slash}{path}"

    return norm(a) == norm(b)


from .host import config, log  # noqa: E402
from .glue import export_audience_rule, export_resource_validator, export_scope_policy  # noqa: E402
