"""{name}: an audience rule. Tokens are issued only for registered resource servers (this
server's FHIR base URL when the client names none), and accepted only when one of their
audiences is this server's FHIR base URL. A `ValueError` is a refusal, with its message as
the reason."""

from hestia_sdk import export_audience_rule, same_url


class Rule:
    def resolve(self, request):
        if not request.requested:
            if not request.known:
                raise ValueError("no resource server is registered")
            return [request.known[0]]
        audiences = []
        for aud in request.requested:
            known = next((k for k in request.known if same_url(k, aud)), None)
            if known is None:
                raise ValueError(f"audience {aud} is not a registered resource server")
            audiences.append(known)
        return audiences

    def accept(self, audiences, base_url):
        if not any(same_url(aud, base_url) for aud in audiences):
            raise ValueError(f"the token is not meant for {base_url}")


WitWorld = export_audience_rule(Rule)
