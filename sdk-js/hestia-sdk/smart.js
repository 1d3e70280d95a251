// SMART App Launch scopes (v1 and v2), parsed as the host and the Rust SDK parse them. The
// table of cases in sdk/smart-scope-cases.json is the one every SDK's tests run.

const LETTERS = "cruds";
const SIMPLE = {
  openid: "OpenId", profile: "Profile", fhirUser: "FhirUser", launch: "Launch",
  offline_access: "OfflineAccess", online_access: "OnlineAccess",
};
const PERMISSIONS_HELP = "(expected read, write, *, or letters of cruds in that order)";

/** A scope that does not parse; the message says why. */
export class ScopeError extends Error {}

function isTypeName(s) {
  return s.length > 0 && s.length <= 64 && /^[A-Z][A-Za-z]*$/.test(s);
}

function parsePermissions(s) {
  if (s === "read") return ["rs", "V1"];
  if (s === "write") return ["cud", "V1"];
  if (s === "*") return [LETTERS, "V1"];
  let last = -1;
  for (const c of s) {
    const i = LETTERS.indexOf(c);
    if (i <= last) throw new ScopeError(`bad permissions \`${s}\` ${PERMISSIONS_HELP}`);
    last = i;
  }
  if (s === "") throw new ScopeError(`bad permissions \`\` ${PERMISSIONS_HELP}`);
  return [s, "V2"];
}

function decode(s) {
  if (/%(?![0-9A-Fa-f]{2})/.test(s)) return null;
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

function parseQuery(q) {
  const out = [];
  for (const pair of q.split("&")) {
    const at = pair.indexOf("=");
    if (at < 0) return null;
    const name = decode(pair.slice(0, at));
    const value = decode(pair.slice(at + 1));
    if (!name || !value) return null;
    out.push([name, value]);
  }
  return out;
}

/** `Type.permissions[?query]`: a resource scope without its context. */
export class ResourceAccess {
  constructor(resourceType, permissions, syntax, query = []) {
    Object.assign(this, { resourceType, permissions, syntax, query });
  }

  static parse(s) {
    const q = s.indexOf("?");
    const main = q < 0 ? s : s.slice(0, q);
    const dot = main.indexOf(".");
    if (dot < 0) throw new ScopeError("missing `.permissions` after the resource type");
    const type = main.slice(0, dot);
    if (type !== "*" && !isTypeName(type)) {
      throw new ScopeError(`\`${type}\` is neither \`*\` nor a FHIR resource type name`);
    }
    const [permissions, syntax] = parsePermissions(main.slice(dot + 1));
    let query = [];
    if (q >= 0) {
      if (syntax === "V1") throw new ScopeError("query parameters need SMART v2 permissions (such as .rs)");
      const text = s.slice(q + 1);
      query = parseQuery(text);
      if (query === null) throw new ScopeError(`bad query \`${text}\` (expected name=value&…)`);
    }
    return new ResourceAccess(type === "*" ? null : type, permissions, syntax, query);
  }

  reaches(resourceType) {
    return this.resourceType === null || this.resourceType === resourceType;
  }

  /** Whether it allows `permission` (one of `c r u d s`) on `resourceType`. */
  permits(resourceType, permission) {
    return this.reaches(resourceType) && this.permissions.includes(permission);
  }

  toString() {
    let perms = this.permissions;
    if (this.syntax === "V1") {
      perms = { cruds: "*", rs: "read", cud: "write" }[this.permissions] ?? perms;
    }
    let text = `${this.resourceType ?? "*"}.${perms}`;
    this.query.forEach(([n, v], i) => {
      text += `${i === 0 ? "?" : "&"}${escape(n)}=${escape(v)}`;
    });
    return text;
  }
}

function escape(s) {
  return [...s].map((c) => ("%&=? #".includes(c)
    ? "%" + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0") : c)).join("");
}

/** One scope: `kind` is Resource (with `context` and `access`), OpenId, Profile, FhirUser,
 * Launch, LaunchContext (with `launchContext`), OfflineAccess or OnlineAccess. */
export class Scope {
  constructor(kind, fields = {}) {
    this.kind = kind;
    Object.assign(this, fields);
  }

  static parse(s) {
    if (s === "") throw new ScopeError("empty scope");
    if (Object.hasOwn(SIMPLE, s)) return new Scope(SIMPLE[s]);
    if (s.startsWith("launch/")) {
      const name = s.slice("launch/".length);
      if (/^[a-z]+$/.test(name)) return new Scope("LaunchContext", { launchContext: name });
      throw new ScopeError(`bad launch context \`${name}\``);
    }
    const slash = s.indexOf("/");
    if (slash < 0) {
      throw new ScopeError("not a SMART scope (context/Type.permissions) nor one of openid, profile, fhirUser, launch, launch/<context>, offline_access, online_access");
    }
    const context = s.slice(0, slash);
    if (!["patient", "user", "system"].includes(context)) {
      throw new ScopeError(`unknown context \`${context}\` (expected patient, user or system)`);
    }
    return new Scope("Resource", { context, access: ResourceAccess.parse(s.slice(slash + 1)) });
  }

  permits(resourceType, permission) {
    return this.kind === "Resource" && this.access.permits(resourceType, permission);
  }

  toString() {
    if (this.kind === "Resource") return `${this.context}/${this.access}`;
    if (this.kind === "LaunchContext") return `launch/${this.launchContext}`;
    return Object.keys(SIMPLE).find((k) => SIMPLE[k] === this.kind);
  }
}
