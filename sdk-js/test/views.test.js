// `exportScopePolicy` lends a policy the request and the claims of contract 0.4.0 (borrowed
// resources, a method per field) as objects with the fields of `testing.request()` and
// `testing.claims()`, asking the host only for the fields the policy reads.
import assert from "node:assert/strict";
import test from "node:test";

import { Decision, exportScopePolicy, testing } from "../hestia-sdk/index.js";

/** A stand-in for a borrowed resource: a method per field of `plain`, counting calls. */
function borrowed(plain) {
  const asked = [];
  const handle = {};
  for (const [field, value] of Object.entries(plain)) handle[field] = () => (asked.push(field), value);
  return { handle, asked };
}

test("a policy reads the fields it uses, and only those are asked", () => {
  const request = borrowed(testing.request("delete", "Patient", "p1"));
  const claims = borrowed(testing.claims({ clientId: "my-app" }));
  const exported = exportScopePolicy({
    authorize: (r, c) => (r.interaction === "delete" ? Decision.deny(`no deletes by ${c.clientId}`) : Decision.allow()),
  });
  assert.deepEqual(exported.authorize(request.handle, claims.handle), Decision.deny("no deletes by my-app"));
  assert.deepEqual(request.asked, ["interaction"]);
  assert.deepEqual(claims.asked, ["clientId"]);
});

test("a view has every field of the plain shapes, and JSON of it reads them all", () => {
  const plainRequest = testing.request("search-type", "Observation", undefined, { parameters: [["code", "x"]] });
  const plainClaims = testing.claims({ scopes: ["patient/*.rs"], expiresAt: 5n });
  let seen;
  const exported = exportScopePolicy({
    authorize: (r, c) => {
      seen = {
        request: Object.fromEntries(Object.keys(plainRequest).map((k) => [k, r[k]])),
        claims: Object.fromEntries(Object.keys(plainClaims).map((k) => [k, c[k]])),
        json: JSON.parse(JSON.stringify(r)),
      };
      return Decision.allow();
    },
  });
  exported.authorize(borrowed(plainRequest).handle, borrowed(plainClaims).handle);
  assert.deepEqual(seen.request, plainRequest);
  assert.deepEqual(seen.claims, plainClaims);
  assert.deepEqual(seen.json.parameters, [["code", "x"]]);
  assert.equal(seen.json.interaction, "search-type");
});
