import assert from "node:assert/strict";
import test from "node:test";

import plugin from "./plugin.js";

const OWN = "https://hestia.test/fhir/r4";

test("only registered audiences", () => {
  assert.deepEqual(plugin.resolve({ clientId: "app", requested: [], known: [OWN] }), [OWN]);
  assert.throws(
    () => plugin.resolve({ clientId: "app", requested: ["https://elsewhere.test"], known: [OWN] }),
    /not a registered resource server/,
  );
  plugin.accept([`${OWN}/`], OWN);
  assert.throws(() => plugin.accept(["https://elsewhere.test"], OWN), /not meant for/);
});
