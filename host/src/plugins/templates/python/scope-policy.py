"""{name}: a scope policy. Deletes are refused; everything else is left to the other scope
policies (the built-in `smart-scopes` still checks the token's SMART scopes)."""

from hestia_sdk import Decision, export_scope_policy, log


class Policy:
    def authorize(self, request, claims):
        if request.interaction == "delete":
            log.info(f"refused a delete by {claims.client_id}")
            return Decision.deny("deletes are disabled on this server")
        return Decision.allow()


WitWorld = export_scope_policy(Policy)
