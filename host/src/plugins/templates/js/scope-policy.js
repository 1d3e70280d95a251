// {name}: a scope policy. Deletes are refused; everything else is left to the other scope
// policies (the built-in `smart-scopes` still checks the token's SMART scopes).
import { Decision, log } from "./hestia-sdk/index.js";

export default {
  authorize(request, claims) {
    if (request.interaction === "delete") {
      log.info(`refused a delete by ${claims.clientId}`);
      return Decision.deny("deletes are disabled on this server");
    }
    return Decision.allow();
  },
};
