// Write Hestia plugins (scope policies, audience rules, resource validators) in plain
// JavaScript, test them with `node --test`, and build them into WebAssembly components with
// componentize-js (`hestia plugin build`).
//
// A plugin works on the shapes of the WIT contract as the component bindings give them
// (records as objects with camelCase fields, enums as their WIT names, `u64` as BigInt; the
// request and the claims `authorize` borrows as objects with a field per method) and answers
// with the helpers below. `component.js` of a project connects the host's imports
// (`connectHost`) and exports the plugin in its world's shape (`exportScopePolicy`, …);
// nothing here imports the host, so the same code runs under node.

export { ResourceAccess, Scope, ScopeError } from "./smart.js";
import { Scope } from "./smart.js";

const WRITES = new Set(["update", "patch", "delete", "create"]);

export const Decision = {
  allow: () => ({ tag: "allow" }),
  deny: (reason) => ({ tag: "deny", val: reason }),
  allowWithin: (constraints) => ({ tag: "allow-within", val: [...constraints] }),
};

export const Constraint = {
  patientCompartment: (patient) => ({ tag: "patient-compartment", val: patient }),
  search: (resourceType, parameters) => ({ tag: "search", val: { resourceType, parameters } }),
};

export const Grant = {
  /** The requested scopes the client is registered for; the others refused. */
  registered(request) {
    const granted = [];
    const refused = [];
    for (const scope of request.requested) {
      if (request.registered.includes(scope)) granted.push(scope);
      else refused.push([scope, "the client is not registered for this scope"]);
    }
    return { granted, refused };
  },
};

export const Issue = {
  error: (code, diagnostics, expression) => ({ severity: "error", code, expression, diagnostics }),
  warning: (code, diagnostics, expression) => ({ severity: "warning", code, expression, diagnostics }),
  required: (expression) => ({ severity: "error", code: "required", expression, diagnostics: `${expression} is required` }),
};

export function isWrite(request) {
  return WRITES.has(request.interaction);
}

/** The token's scopes, parsed; a scope that does not parse is left out. */
export function scopesOf(claims) {
  return claims.scopes.flatMap((text) => {
    try {
      return [Scope.parse(text)];
    } catch {
      return [];
    }
  });
}

/** Two URLs name the same base: equal up to a trailing `/` and the case of scheme and host. */
export function sameUrl(a, b) {
  const norm = (url) => {
    const trimmed = url.replace(/\/+$/, "");
    const m = /^([^:/]+):\/\/([^/]*)(.*)$/.exec(trimmed);
    return m ? `${m[1].toLowerCase()}://${m[2].toLowerCase()}${m[3]}` : trimmed;
  };
  return norm(a) === norm(b);
}

const native = { config: "{}", logs: [] };
let host = null;

/** Called once by `component.js` with the `hestia:plugin/host` import. */
export function connectHost(imported) {
  host = imported;
}

/** The plugin's configuration table from its manifest (`{}` when none). */
export function config() {
  return JSON.parse(host ? host.config() : native.config);
}

function line(level, message) {
  if (host) host.log(level, String(message));
  else native.logs.push([level, String(message)]);
}

/** Lines in the host's log, under the plugin's name. */
export const log = Object.fromEntries(
  ["trace", "debug", "info", "warn", "error"].map((level) => [level, (m) => line(level, m)]),
);

/** For native tests: what `config()` returns, and the lines logged since the last call. */
export const testing = {
  setConfig(value) {
    native.config = typeof value === "string" ? value : JSON.stringify(value);
  },
  takeLogs() {
    return native.logs.splice(0);
  },
  claims: (fields = {}) => ({
    issuer: "https://hestia.test", subject: "user", clientId: "app", audiences: [], scopes: [],
    fhirUser: undefined, patient: undefined, expiresAt: 4000000000n, rawJson: "{}", user: undefined,
    ...fields,
  }),
  request: (interaction, resourceType, id, fields = {}) => ({
    interaction, resourceType, id, operation: undefined, parameters: [], bodyJson: undefined,
    baseUrl: "https://hestia.test/fhir/r4", ...fields,
  }),
  tokenRequest: (fields = {}) => ({
    clientId: "app", grantType: "authorization_code", requested: [], registered: [],
    subject: undefined, fhirUser: undefined, patient: undefined, audiences: [], user: undefined,
    ...fields,
  }),
};

const HANDLE = Symbol("handle");

/** The class of a view of a borrowed resource (`fhir-request`, `claims`): a getter per field
 * that asks the host for it (the resource's method of that name) when read, so that a policy
 * pays for the fields it reads, and each read asks again (keep a field read more than once
 * in a variable: keeping every answer in the view costs more than most policies save). A
 * view answers only during the `authorize` call that made it; its fields are read by name
 * (`JSON.stringify` reads them all; `{ ...view }` copies none: they are getters). */
function viewOf(fields) {
  class View {
    constructor(handle) {
      this[HANDLE] = handle;
    }

    toJSON() {
      return Object.fromEntries(fields.map((field) => [field, this[field]]));
    }
  }
  for (const field of fields) {
    Object.defineProperty(View.prototype, field, {
      enumerable: true,
      get() {
        return this[HANDLE][field]();
      },
    });
  }
  return View;
}

const RequestView = viewOf(
  ["interaction", "resourceType", "id", "operation", "parameters", "bodyJson", "baseUrl"],
);
const ClaimsView = viewOf([
  "issuer", "subject", "clientId", "audiences", "scopes", "fhirUser", "patient", "expiresAt",
  "rawJson", "user",
]);

/** The exports of the scope-policy world: `authorize(request, claims)` and, optionally,
 * `grant(request)` (default: `Grant.registered`). `authorize` gets the request and the claims
 * the host lends it (contract 0.4.0) as objects with the fields of `testing.request()` and
 * `testing.claims()`, each asked of the host when read. */
export function exportScopePolicy(policy) {
  return {
    grant: (request) => (policy.grant ? policy.grant(request) : Grant.registered(request)),
    authorize: (request, claims) => policy.authorize(new RequestView(request), new ClaimsView(claims)),
  };
}

/** The exports of the audience-rule world: `resolve(request)` and `accept(audiences,
 * baseUrl)`; each throws an Error to refuse, whose message is the reason. */
export function exportAudienceRule(rule) {
  const refusing = (f) => (...args) => {
    try {
      return f(...args);
    } catch (e) {
      throw e instanceof Error ? e.message : String(e);
    }
  };
  return { resolve: refusing((r) => rule.resolve(r)), accept: refusing((a, b) => { rule.accept(a, b); }) };
}

/** The export of the resource-validator world: `validate(resourceType, resource)`, the
 * resource parsed from JSON, returning issues. */
export function exportResourceValidator(validator) {
  return { validate: (resourceType, json) => validator.validate(resourceType, JSON.parse(json)) };
}
