// A real browser (headless Debian chromium, driven by playwright-core) through Hestia's
// login and consent pages: authorization code + PKCE, a scope unticked on the consent page,
// and a token that carries only what was approved. Screenshots of both pages go under the
// cargo target directory.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { demo, POSTMAN_CALLBACK, claimsOf, launchBrowser, signInAndConsent, waitForCallback } from './common.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

async function discovery() {
  const res = await fetch(`${demo.baseUrl}/.well-known/openid-configuration`);
  assert.equal(res.status, 200);
  return res.json();
}

test('code flow with PKCE in a browser: an unticked scope is not in the token', async () => {
  const meta = await discovery();
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const state = randomBytes(16).toString('base64url');
  const url = new URL(meta.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: demo.clientId,
    redirect_uri: POSTMAN_CALLBACK,
    scope: 'openid fhirUser launch/patient patient/Patient.read patient/Observation.read',
    aud: demo.fhirBase,
    state,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  }).toString();

  const back = await signInAndConsent(browser, url.toString(), {
    redirectUri: POSTMAN_CALLBACK,
    untick: ['patient/Observation.read'],
    screenshots: 'browser',
  });
  assert.equal(back.searchParams.get('state'), state);
  assert.equal(back.searchParams.get('iss'), meta.issuer);
  const code = back.searchParams.get('code');
  assert.ok(code, `no code in ${back}`);

  const res = await fetch(meta.token_endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${demo.clientId}:${demo.clientSecret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: POSTMAN_CALLBACK, code_verifier: verifier }),
  });
  const token = await res.json();
  assert.equal(res.status, 200, JSON.stringify(token));
  const granted = token.scope.split(' ');
  assert.ok(granted.includes('patient/Patient.read'), token.scope);
  assert.ok(!granted.includes('patient/Observation.read'), `unticked, yet granted: ${token.scope}`);
  assert.equal(token.patient, demo.patientId);
  const claims = claimsOf(token.access_token);
  assert.deepEqual([].concat(claims.aud), [demo.fhirBase]);
  assert.ok(!claims.scope.split(' ').includes('patient/Observation.read'), claims.scope);

  // The FHIR server applies exactly the approved scopes.
  const bearer = { authorization: `Bearer ${token.access_token}` };
  const patient = await fetch(`${demo.fhirBase}/Patient/${demo.patientId}`, { headers: bearer });
  assert.equal(patient.status, 200);
  const observations = await fetch(`${demo.fhirBase}/Observation`, { headers: bearer });
  assert.equal(observations.status, 403);
  assert.match(observations.headers.get('www-authenticate'), /insufficient_scope/);
  const outcome = await observations.json();
  assert.equal(outcome.resourceType, 'OperationOutcome');
  assert.match(outcome.issue[0].diagnostics, /Observation/);
});

test('denying on the consent page sends access_denied back to the client', async () => {
  const meta = await discovery();
  const url = new URL(meta.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code', client_id: demo.clientId, redirect_uri: POSTMAN_CALLBACK,
    scope: 'openid patient/*.read', aud: demo.fhirBase, state: 'deny-1',
  }).toString();
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(url.toString());
    await page.fill('#username', demo.username);
    await page.fill('#password', 'not the password');
    await page.click('#sign-in');
    await page.waitForSelector('#error');
    assert.match(await page.textContent('#error'), /password/i);
    await page.fill('#password', demo.password);
    await Promise.all([page.waitForURL(/\/oauth2\/consent/), page.click('#sign-in')]);
    const [callback] = await Promise.all([waitForCallback(page, POSTMAN_CALLBACK), page.click('#deny')]);
    assert.equal(callback.searchParams.get('error'), 'access_denied');
    assert.equal(callback.searchParams.get('state'), 'deny-1');
    assert.equal(callback.searchParams.get('code'), null);
  } finally {
    await context.close();
  }
});
