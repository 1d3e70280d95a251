// {name}: a resource validator. A Patient needs a name and a birth date; other resource
// types pass (the built-in `structural-validator` still checks every resource).
import { Issue } from "./hestia-sdk/index.js";

export default {
  validate(resourceType, resource) {
    if (resourceType !== "Patient") return [];
    return ["name", "birthDate"].filter((f) => !(f in resource)).map((f) => Issue.required(`Patient.${f}`));
  },
};
