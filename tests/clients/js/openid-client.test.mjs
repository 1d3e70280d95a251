// openid-client (v6, a certified OpenID relying party) against Hestia: discovery,
// authorization code + PKCE (the browser signs in and consents; openid-client builds the
// URL, checks the response and exchanges the code), userinfo, refresh, introspection,
// revocation, client_credentials and dynamic client registration.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import * as oidc from 'openid-client';
import { demo, POSTMAN_CALLBACK, claimsOf, launchBrowser, signInAndConsent } from './common.mjs';

let browser;
let config;
before(async () => {
  browser = await launchBrowser();
  config = await oidc.discovery(new URL(demo.baseUrl), demo.clientId, demo.clientSecret);
});
after(async () => { await browser?.close(); });

test('discovery', () => {
  const meta = config.serverMetadata();
  assert.equal(meta.issuer, demo.baseUrl);
  assert.ok(meta.supportsPKCE('S256'));
  assert.equal(meta.token_endpoint, `${demo.baseUrl}/oauth2/token`);
});

test('authorization code + PKCE, userinfo, refresh, introspection, revocation', async () => {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: POSTMAN_CALLBACK,
    scope: 'openid fhirUser profile offline_access launch/patient patient/*.read',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    aud: demo.fhirBase,
  });
  const back = await signInAndConsent(browser, url.href, { redirectUri: POSTMAN_CALLBACK, screenshots: 'openid-client' });
  const tokens = await oidc.authorizationCodeGrant(config, back, {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const idClaims = tokens.claims();
  assert.equal(idClaims.iss, demo.baseUrl);
  assert.equal(idClaims.aud, demo.clientId);
  assert.match(idClaims.fhirUser, new RegExp(`Patient/${demo.patientId}$`));
  const access = claimsOf(tokens.access_token);
  assert.deepEqual([].concat(access.aud), [demo.fhirBase]);
  assert.ok(tokens.refresh_token);

  const info = await oidc.fetchUserInfo(config, tokens.access_token, idClaims.sub);
  assert.equal(info.sub, idClaims.sub);

  const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'refresh tokens rotate');
  assert.deepEqual([].concat(claimsOf(refreshed.access_token).aud), [demo.fhirBase]);

  const active = await oidc.tokenIntrospection(config, refreshed.access_token);
  assert.equal(active.active, true);
  assert.equal(active.client_id, demo.clientId);
  assert.ok([].concat(active.aud).includes(demo.fhirBase));

  await oidc.tokenRevocation(config, refreshed.access_token);
  const revoked = await oidc.tokenIntrospection(config, refreshed.access_token);
  assert.equal(revoked.active, false);
  const refused = await fetch(`${demo.fhirBase}/Patient/${demo.patientId}`, {
    headers: { authorization: `Bearer ${refreshed.access_token}` },
  });
  assert.equal(refused.status, 401);
  assert.match(refused.headers.get('www-authenticate'), /revoked/);
});

test('client_credentials with aud', async () => {
  const tokens = await oidc.clientCredentialsGrant(config, { scope: 'system/*.read', aud: demo.fhirBase });
  const claims = claimsOf(tokens.access_token);
  assert.deepEqual([].concat(claims.aud), [demo.fhirBase]);
  assert.equal(claims.scope, 'system/*.read');
  const res = await fetch(`${demo.fhirBase}/Patient?_count=1`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).resourceType, 'Bundle');
});

test('dynamic client registration, then the new client gets tokens', async () => {
  const registered = await oidc.dynamicClientRegistration(
    new URL(demo.baseUrl),
    {
      client_name: 'openid-client test',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['authorization_code', 'client_credentials'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'system/*.read',
    },
    undefined,
    { initialAccessToken: demo.registrationToken },
  );
  const meta = registered.clientMetadata();
  assert.ok(meta.client_id);
  assert.notEqual(meta.client_id, demo.clientId);
  assert.ok(meta.client_secret);
  assert.ok(meta.registration_access_token);
  const tokens = await oidc.clientCredentialsGrant(registered, { scope: 'system/*.read', aud: demo.fhirBase });
  assert.equal(claimsOf(tokens.access_token).client_id, meta.client_id);
  assert.deepEqual([].concat(claimsOf(tokens.access_token).aud), [demo.fhirBase]);
});
