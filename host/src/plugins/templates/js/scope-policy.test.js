import assert from "node:assert/strict";
import test from "node:test";

import { Decision, Grant, testing } from "./hestia-sdk/index.js";
import plugin from "./plugin.js";

test("deletes are refused, reads are not", () => {
  const app = testing.claims({ clientId: "my-app", scopes: ["user/*.cruds"] });
  assert.deepEqual(plugin.authorize(testing.request("read", "Patient", "p1"), app), Decision.allow());
  assert.deepEqual(
    plugin.authorize(testing.request("delete", "Patient", "p1"), app),
    Decision.deny("deletes are disabled on this server"),
  );
  assert.deepEqual(testing.takeLogs(), [["info", "refused a delete by my-app"]]);
});

test("only registered scopes are granted", () => {
  const grant = Grant.registered(testing.tokenRequest({ requested: ["user/*.rs", "user/*.cud"], registered: ["user/*.rs"] }));
  assert.deepEqual(grant.granted, ["user/*.rs"]);
});
