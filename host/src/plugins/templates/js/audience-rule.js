// {name}: an audience rule. Tokens are issued only for registered resource servers (this
// server's FHIR base URL when the client names none), and accepted only when one of their
// audiences is this server's FHIR base URL.
import { sameUrl } from "./hestia-sdk/index.js";

export default {
  resolve(request) {
    if (request.requested.length === 0) {
      if (request.known.length === 0) throw new Error("no resource server is registered");
      return [request.known[0]];
    }
    return request.requested.map((aud) => {
      const known = request.known.find((k) => sameUrl(k, aud));
      if (known === undefined) throw new Error(`audience ${aud} is not a registered resource server`);
      return known;
    });
  },

  accept(audiences, baseUrl) {
    if (!audiences.some((aud) => sameUrl(aud, baseUrl))) {
      throw new Error(`the token is not meant for ${baseUrl}`);
    }
  },
};
