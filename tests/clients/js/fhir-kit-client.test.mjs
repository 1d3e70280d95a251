// fhir-kit-client: SMART endpoints from the server's metadata, then CRUD and search with a
// client_credentials token that names the FHIR base as its audience.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from 'fhir-kit-client';
import { demo, claimsOf } from './common.mjs';

let client;
before(async () => {
  client = new Client({ baseUrl: demo.fhirBase });
});

test('smartAuthMetadata finds the authorization and token endpoints', async () => {
  const { authorizeUrl, tokenUrl } = await client.smartAuthMetadata();
  assert.equal(String(authorizeUrl), `${demo.baseUrl}/oauth2/authorize`);
  assert.equal(String(tokenUrl), `${demo.baseUrl}/oauth2/token`);
});

test('CRUD and search with a Bearer token', async () => {
  const { tokenUrl } = await client.smartAuthMetadata();
  const res = await fetch(String(tokenUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials', client_id: demo.clientId, client_secret: demo.clientSecret,
      scope: 'system/*.read system/*.write', aud: demo.fhirBase,
    }),
  });
  const token = await res.json();
  assert.equal(res.status, 200, JSON.stringify(token));
  assert.deepEqual([].concat(claimsOf(token.access_token).aud), [demo.fhirBase]);
  client.bearerToken = token.access_token;

  const family = `Kit${Date.now()}`;
  const created = await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ family, given: ['Fiona'] }] } });
  assert.equal(created.resourceType, 'Patient');
  assert.ok(created.id);
  const read = await client.read({ resourceType: 'Patient', id: created.id });
  assert.equal(read.name[0].family, family);
  const updated = await client.update({ resourceType: 'Patient', id: created.id, body: { ...read, birthDate: '1990-01-02' } });
  assert.equal(updated.meta.versionId, '2');
  const found = await client.search({ resourceType: 'Patient', searchParams: { family, birthdate: '1990-01-02' } });
  assert.equal(found.resourceType, 'Bundle');
  assert.deepEqual(found.entry.map((e) => e.resource.id), [created.id]);
  const demoPatient = await client.search({ resourceType: 'Observation', searchParams: { subject: `Patient/${demo.patientId}`, category: 'laboratory' } });
  assert.ok(demoPatient.entry.length >= 1);
  demoPatient.entry.forEach((e) => assert.equal(e.resource.subject.reference, `Patient/${demo.patientId}`));
  await client.delete({ resourceType: 'Patient', id: created.id });
  await assert.rejects(client.read({ resourceType: 'Patient', id: created.id }), (err) => err.response?.status === 410);
});

test('without a token the server refuses and says why', async () => {
  const anonymous = new Client({ baseUrl: demo.fhirBase });
  await assert.rejects(anonymous.read({ resourceType: 'Patient', id: demo.patientId }), (err) => {
    assert.equal(err.response.status, 401);
    assert.match(err.response.data.issue[0].diagnostics, /no access token/);
    return true;
  });
});
