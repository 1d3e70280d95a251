import assert from "node:assert/strict";
import test from "node:test";

import plugin from "./plugin.js";

test("patients need a name and a birth date", () => {
  const complete = { resourceType: "Patient", name: [{ family: "Chalmers" }], birthDate: "1974-12-25" };
  assert.deepEqual(plugin.validate("Patient", complete), []);
  const issues = plugin.validate("Patient", { resourceType: "Patient" });
  assert.deepEqual(issues.map((i) => i.expression), ["Patient.name", "Patient.birthDate"]);
  assert.deepEqual(plugin.validate("Observation", {}), []);
});
