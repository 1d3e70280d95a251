"""SMART App Launch scopes (v1 and v2), parsed as the host and the Rust SDK parse them:
`Scope.parse("patient/Observation.rs?category=laboratory")`. The table of cases in
`sdk/smart-scope-cases.json` is the one every SDK's tests run."""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

LETTERS = "cruds"
V1_READ = "rs"
V1_WRITE = "cud"
SIMPLE = {
    "openid": "OpenId", "profile": "Profile", "fhirUser": "FhirUser", "launch": "Launch",
    "offline_access": "OfflineAccess", "online_access": "OnlineAccess",
}
PERMISSIONS_HELP = "(expected read, write, *, or letters of cruds in that order)"


class ScopeError(ValueError):
    """A scope that does not parse; the message says why."""


def _is_type_name(s: str) -> bool:
    return (
        0 < len(s) <= 64 and s[0].isascii() and s[0].isupper()
        and all(c.isascii() and c.isalpha() for c in s)
    )


def _permissions(s: str) -> Tuple[str, str]:
    if s == "read":
        return V1_READ, "V1"
    if s == "write":
        return V1_WRITE, "V1"
    if s == "*":
        return LETTERS, "V1"
    last = -1
    for c in s:
        i = LETTERS.find(c)
        if i <= last:
            raise ScopeError(f"bad permissions `{s}` {PERMISSIONS_HELP}")
        last = i
    if not s:
        raise ScopeError(f"bad permissions `` {PERMISSIONS_HELP}")
    return s, "V2"


def _decode(s: str) -> Optional[str]:
    out = bytearray()
    i = 0
    raw = s.encode()
    while i < len(raw):
        if raw[i] == ord("%"):
            hexa = raw[i + 1:i + 3]
            if len(hexa) != 2 or not all(chr(b) in "0123456789abcdefABCDEF" for b in hexa):
                return None
            out.append(int(hexa, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    try:
        return out.decode()
    except UnicodeDecodeError:
        return None


def _encode(s: str) -> str:
    return "".join(
        "".join(f"%{b:02X}" for b in c.encode()) if c in "%&=? #" else c for c in s
    )


def _query(q: str) -> Optional[List[Tuple[str, str]]]:
    out = []
    for pair in q.split("&"):
        name, sep, value = pair.partition("=")
        if not sep:
            return None
        name, value = _decode(name), _decode(value)
        if not name or not value:
            return None
        out.append((name, value))
    return out


@dataclass
class ResourceAccess:
    """`Type.permissions[?query]`: a resource scope without its context."""

    resource_type: Optional[str]
    permissions: str
    syntax: str
    query: List[Tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def parse(s: str) -> "ResourceAccess":
        main, _, query = s.partition("?")
        has_query = "?" in s
        resource_type, dot, permissions = main.partition(".")
        if not dot:
            raise ScopeError("missing `.permissions` after the resource type")
        if resource_type != "*" and not _is_type_name(resource_type):
            raise ScopeError(f"`{resource_type}` is neither `*` nor a FHIR resource type name")
        permissions, syntax = _permissions(permissions)
        pairs: List[Tuple[str, str]] = []
        if has_query:
            if syntax == "V1":
                raise ScopeError("query parameters need SMART v2 permissions (such as .rs)")
            parsed = _query(query)
            if parsed is None:
                raise ScopeError(f"bad query `{query}` (expected name=value&…)")
            pairs = parsed
        return ResourceAccess(None if resource_type == "*" else resource_type, permissions, syntax, pairs)

    def permits(self, resource_type: str, permission: str) -> bool:
        """Whether it allows `permission` (one of `c r u d s`) on `resource_type`."""
        return self.reaches(resource_type) and permission in self.permissions

    def reaches(self, resource_type: str) -> bool:
        return self.resource_type in (None, resource_type)

    def __str__(self) -> str:
        if self.syntax == "V1" and self.permissions == LETTERS:
            perms = "*"
        elif self.syntax == "V1" and self.permissions == V1_READ:
            perms = "read"
        elif self.syntax == "V1" and self.permissions == V1_WRITE:
            perms = "write"
        else:
            perms = self.permissions
        text = f"{self.resource_type or '*'}.{perms}"
        for i, (name, value) in enumerate(self.query):
            text += f"{'?' if i == 0 else '&'}{_encode(name)}={_encode(value)}"
        return text


@dataclass
class Scope:
    """One scope: a resource scope (`context` is `patient`, `user` or `system`, `access` a
    `ResourceAccess`), or `kind` one of OpenId, Profile, FhirUser, Launch, LaunchContext,
    OfflineAccess, OnlineAccess."""

    kind: str
    context: Optional[str] = None
    access: Optional[ResourceAccess] = None
    launch_context: Optional[str] = None

    @staticmethod
    def parse(s: str) -> "Scope":
        if s == "":
            raise ScopeError("empty scope")
        if s in SIMPLE:
            return Scope(SIMPLE[s])
        if s.startswith("launch/"):
            name = s[len("launch/"):]
            if name and all("a" <= c <= "z" for c in name):
                return Scope("LaunchContext", launch_context=name)
            raise ScopeError(f"bad launch context `{name}`")
        context, slash, rest = s.partition("/")
        if not slash:
            raise ScopeError(
                "not a SMART scope (context/Type.permissions) nor one of openid, profile, "
                "fhirUser, launch, launch/<context>, offline_access, online_access"
            )
        if context not in ("patient", "user", "system"):
            raise ScopeError(f"unknown context `{context}` (expected patient, user or system)")
        return Scope("Resource", context=context, access=ResourceAccess.parse(rest))

    def permits(self, resource_type: str, permission: str) -> bool:
        return self.access is not None and self.access.permits(resource_type, permission)

    def __str__(self) -> str:
        if self.access is not None:
            return f"{self.context}/{self.access}"
        if self.kind == "LaunchContext":
            return f"launch/{self.launch_context}"
        return next(text for text, kind in SIMPLE.items() if kind == self.kind)
