// The SMART scope parser against the table every SDK passes.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";

import { Scope, ScopeError } from "../hestia-sdk/index.js";

const TABLE = new URL("../../sdk/smart-scope-cases.json", import.meta.url);

function describe(text) {
  let scope;
  try {
    scope = Scope.parse(text);
  } catch (e) {
    if (e instanceof ScopeError) return `err: ${e.message}`;
    throw e;
  }
  if (scope.kind !== "Resource") {
    const detail = scope.kind === "LaunchContext" ? `LaunchContext("${scope.launchContext}")` : scope.kind;
    return `${scope} | ${detail}`;
  }
  const a = scope.access;
  const query = a.query.map(([n, v]) => `${n}=${v}`).join(", ");
  return `${scope} | ${scope.context} ${a.resourceType ?? "*"} ${a.permissions} ${a.syntax} [${query}]`;
}

test("the shared table of scopes", () => {
  const cases = JSON.parse(readFileSync(TABLE, "utf8"));
  assert.ok(cases.length >= 50);
  for (const c of cases) assert.equal(describe(c.scope), c.expect, c.scope);
});

test("permits", () => {
  const scope = Scope.parse("patient/Observation.rs?category=laboratory");
  assert.ok(scope.permits("Observation", "s"));
  assert.ok(!scope.permits("Observation", "c"));
  assert.ok(!scope.permits("Patient", "r"));
  assert.ok(Scope.parse("user/*.read").permits("Patient", "r"));
});
