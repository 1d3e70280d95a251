// The admin console in a real browser (headless Debian chromium, playwright-core): an
// administrator signs in, creates a client and sees its secret once, edits it, rotates the
// secret and removes the client (its tokens stop working), creates a user, rotates the
// signing keys, sees the load error of the broken plugin `tests/clients/run` installs and a
// failed sign-in on the Activity page; a non-admin account is kept out; CSRF and session
// fixation attempts fail. A screenshot of each page goes under the cargo target directory.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { demo, launchBrowser, screenshotDir } from './common.mjs';

const admin = {
  username: process.env.HESTIA_CLIENTS_ADMIN || 'console-admin',
  password: process.env.HESTIA_CLIENTS_ADMIN_PASSWORD,
};
const console_ = `${demo.baseUrl}/admin/`;

let browser;
let context;
let page;
before(async () => {
  assert.ok(admin.password, 'HESTIA_CLIENTS_ADMIN_PASSWORD is not set: run through tests/clients/run');
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  page = await context.newPage();
});
after(async () => { await browser?.close(); });

async function shot(p, name) {
  await p.screenshot({ path: join(screenshotDir(), `console-${name}.png`), fullPage: true });
}

async function signIn(p, username, password) {
  await p.goto(console_);
  await p.fill('#username', username);
  await p.fill('#password', password);
  await Promise.all([p.waitForLoadState('load'), p.click('#signin button[type=submit]')]);
}

async function sessionCookie(ctx) {
  return (await ctx.cookies()).find((c) => c.name === 'hestia_admin');
}

async function tokenFor(clientId, secret) {
  const res = await fetch(`${demo.baseUrl}/oauth2/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/Patient.read', aud: demo.fhirBase }),
  });
  return { status: res.status, body: await res.json() };
}

async function fhirStatus(token) {
  const res = await fetch(`${demo.fhirBase}/Patient`, { headers: { authorization: `Bearer ${token}` } });
  return res.status;
}

test('an account without the admin role is kept out', async () => {
  const ctx = await browser.newContext();
  const p = await ctx.newPage();
  await signIn(p, demo.username, demo.password);
  assert.match(await p.textContent('main'), /does not have the admin role/);
  assert.equal(await sessionCookie(ctx), undefined);
  await shot(p, 'refused');
  await ctx.close();
});

test('a wrong password is refused', async () => {
  await signIn(page, admin.username, 'not the password at all');
  assert.match(await page.textContent('#error'), /Wrong username or password/);
  await shot(page, 'signin-failed');
});

test('session fixation: a session id planted before sign-in is replaced', async () => {
  const host = new URL(demo.baseUrl).hostname;
  await context.addCookies([{ name: 'hestia_admin', value: 'planted-by-an-attacker', domain: host, path: '/admin', secure: true, httpOnly: true, sameSite: 'Strict' }]);
  await signIn(page, admin.username, admin.password);
  const cookie = await sessionCookie(context);
  assert.ok(cookie, 'no session cookie after sign-in');
  assert.notEqual(cookie.value, 'planted-by-an-attacker');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.secure, true);
  assert.match(await page.textContent('main'), /Clients/);
  await shot(page, 'overview');
});

let client;
test('create a client: its secret is shown once, and it gets tokens', async () => {
  await page.goto(`${console_}clients/new`);
  await page.fill('#client_name', 'Console batch job');
  await page.selectOption('#profile', 'backend');
  await page.fill('#scope', 'system/Patient.read');
  await shot(page, 'client-new');
  await Promise.all([page.waitForLoadState('load'), page.click('#create-client button[type=submit]')]);
  const id = (await page.textContent('#client-id')).trim();
  const secret = await page.inputValue('#secret');
  assert.ok(secret.length > 30, 'no secret shown');
  assert.equal(await page.locator('button[data-copy=secret]').count(), 1, 'no copy button');
  await shot(page, 'client-secret');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('text=Download a Postman environment')]);
  const env = JSON.parse(await (await download.createReadStream()).toArray().then((c) => Buffer.concat(c).toString('utf8')));
  assert.equal(env.values.find((v) => v.key === 'client_secret').value, secret);

  await page.goto(`${console_}clients/${encodeURIComponent(id)}`);
  assert.ok(!(await page.content()).includes(secret), 'the secret is shown again');
  const issued = await tokenFor(id, secret);
  assert.equal(issued.status, 200, JSON.stringify(issued.body));
  assert.equal(await fhirStatus(issued.body.access_token), 200);
  client = { id, secret, token: issued.body.access_token };

  await page.goto(`${console_}clients?q=${encodeURIComponent('console batch')}`);
  assert.match(await page.textContent('table'), /Console batch job/);
  await shot(page, 'clients');
});

test('edit the client', async () => {
  await page.goto(`${console_}clients/${encodeURIComponent(client.id)}`);
  await page.fill('#client_name', 'Console batch job (nightly)');
  await Promise.all([page.waitForLoadState('load'), page.click('#edit-client button[type=submit]')]);
  assert.match(await page.textContent('h1'), /nightly/);
  await shot(page, 'client');
});

test('rotate the secret: the old secret and its tokens stop working', async () => {
  await page.goto(`${console_}clients/${encodeURIComponent(client.id)}`);
  await Promise.all([page.waitForLoadState('load'), page.click('#rotate-secret button[type=submit]')]);
  const secret = await page.inputValue('#secret');
  assert.notEqual(secret, client.secret);
  assert.equal(await fhirStatus(client.token), 401);
  assert.equal((await tokenFor(client.id, client.secret)).status, 401);
  const issued = await tokenFor(client.id, secret);
  assert.equal(issued.status, 200, JSON.stringify(issued.body));
  client = { ...client, secret, token: issued.body.access_token };
});

test('explain the client\'s token', async () => {
  await page.goto(`${console_}explain`);
  await page.fill('#token', client.token);
  await Promise.all([page.waitForLoadState('load'), page.click('#explain button[type=submit]')]);
  const matrix = await page.textContent('#matrix');
  assert.match(matrix, /Patient/);
  assert.match(matrix, /allowed/);
  assert.match(matrix, /403/, 'a write with a read scope is refused, naming why');
  await shot(page, 'explain');
});

test('explain by picking the client: the token it would get, none made', async () => {
  await page.goto(`${console_}explain`);
  await page.selectOption('#client_id', client.id);
  await Promise.all([page.waitForLoadState('load'), page.click('#explain-grant button[type=submit]')]);
  assert.match(await page.textContent('main'), /would grant client/);
  assert.match(await page.textContent('#matrix'), /allowed/);
  await shot(page, 'explain-picked');
});

test('remove the client: its tokens stop working', async () => {
  await page.goto(`${console_}clients/${encodeURIComponent(client.id)}`);
  await Promise.all([page.waitForLoadState('load'), page.click('#remove-client button[type=submit]')]);
  assert.match(await page.textContent('main'), /removed/);
  assert.equal(await fhirStatus(client.token), 401);
});

test('CSRF: a form posted without the session\'s token changes nothing', async () => {
  const res = await page.request.post(`${console_}clients`, {
    form: { client_name: 'Forged', profile: 'backend', scope: 'system/*.read' },
  });
  assert.equal(res.status(), 403);
  await page.goto(`${console_}clients?q=Forged`);
  assert.match(await page.textContent('table'), /No client/);
});

test('create a user', async () => {
  await page.goto(`${console_}users`);
  await page.fill('#username', 'console-made');
  await page.fill('#password', 'a long enough password');
  await page.fill('#roles', 'practitioner');
  await Promise.all([page.waitForLoadState('load'), page.click('#create-user button[type=submit]')]);
  assert.match(await page.textContent('table'), /console-made/);
  await shot(page, 'users');
  await page.goto(`${console_}users/console-made`);
  await shot(page, 'user');
});

test('rotate the signing keys', async () => {
  await page.goto(`${console_}keys`);
  await Promise.all([page.waitForLoadState('load'), page.click('#rotate-keys button[type=submit]')]);
  assert.match(await page.textContent('[role=status]'), /New keys/);
  assert.match(await page.textContent('#keys'), /next/);
  await shot(page, 'keys');
});

test('registration tokens', async () => {
  await page.goto(`${console_}registration-tokens`);
  await Promise.all([page.waitForLoadState('load'), page.click('#create-token button[type=submit]')]);
  assert.ok((await page.inputValue('#new-token')).length > 30);
  await shot(page, 'registration-tokens');
});

test('the broken plugin\'s load error is shown', async () => {
  await page.goto(`${console_}plugins`);
  const text = await page.textContent('main');
  assert.match(text, /broken-policy/);
  assert.match(text, /failed/);
  assert.match(await page.textContent('dd.error'), /\S/);
  await shot(page, 'plugins');
});

test('the failed sign-in is on the Activity page', async () => {
  await page.goto(`${console_}activity?action=signin.failed`);
  const events = await page.textContent('#events');
  assert.match(events, new RegExp(admin.username));
  assert.match(events, /wrong username or password/);
  await shot(page, 'activity');
});

test('readable on a phone: nothing is wider than the screen', async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.addCookies(await context.cookies());
  const p = await phone.newPage();
  await p.goto(`${console_}users`);
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the phone`);
  await shot(p, 'phone-users');
  await phone.close();
});

test('sign out ends the session', async () => {
  await page.goto(console_);
  await Promise.all([page.waitForLoadState('load'), page.click('form.signout button')]);
  await page.goto(`${console_}clients`);
  assert.ok(await page.locator('#signin').count(), 'still signed in');
});
