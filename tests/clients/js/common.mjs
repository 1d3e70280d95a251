// What the client tests share: the demo server's settings (from the Postman environment that
// `hestia serve --demo` writes) and a real browser that signs in and consents.
import { readFileSync, mkdirSync } from 'node:fs';
import { createHash, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/clients/run`);
  return value;
}

const values = Object.fromEntries(
  JSON.parse(readFileSync(required('HESTIA_CLIENTS_ENV'), 'utf8')).values.map((v) => [v.key, v.value]),
);

/** The demo server: URLs and the credentials `--demo` printed. */
export const demo = {
  baseUrl: values.baseUrl,
  fhirBase: values.fhirBase,
  clientId: values.client_id,
  clientSecret: values.client_secret,
  username: values.username,
  password: values.password,
  patientId: values.patient_id,
  registrationToken: values.registration_token,
};
export const POSTMAN_CALLBACK = 'https://oauth.pstmn.io/v1/callback';

/** The claims of a JWT (no verification: the tests compare them with what was asked for). */
export function claimsOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

/**
 * Headless Debian chromium. The server's development certificate is trusted by its public key
 * (SPKI pin): Chromium has no option to add a CA file, and ignoring certificate errors would
 * also hide a wrong certificate.
 */
export async function launchBrowser() {
  const cert = new X509Certificate(readFileSync(required('HESTIA_CLIENTS_CERT')));
  const spki = createHash('sha256')
    .update(cert.publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64');
  return chromium.launch({
    executablePath: process.env.HESTIA_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      `--ignore-certificate-errors-spki-list=${spki}`,
      // The redirect URIs of the tests (the Postman callback) are never fetched: the browser
      // resolves their host to nothing, and the tests read the URL it was sent to.
      `--host-resolver-rules=MAP oauth.pstmn.io ~NOTFOUND, MAP callback.invalid ~NOTFOUND`,
    ],
  });
}

export function screenshotDir() {
  const dir = required('HESTIA_CLIENTS_SCREENSHOTS');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * Opens `authorizationUrl` in a new page, signs in as the demo user on Hestia's login page,
 * unticks `untick` on the consent page, approves, and returns the URL the browser was sent
 * back to (the browser is not let to fetch it: nothing leaves the machine).
 */
export async function signInAndConsent(browser, authorizationUrl, { redirectUri, untick = [], screenshots } = {}) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const callbackPrefix = redirectUri.split('?')[0];
    const login = await page.goto(authorizationUrl);
    if (login.status() !== 200) throw new Error(`the authorize URL answered ${login.status()}: ${await page.content()}`);
    await page.waitForSelector('form#login');
    await page.fill('#username', demo.username);
    await page.fill('#password', demo.password);
    if (screenshots) await page.screenshot({ path: join(screenshotDir(), `${screenshots}-login.png`), fullPage: true });
    await Promise.all([page.waitForURL(/\/oauth2\/consent/), page.click('#sign-in')]);
    await page.waitForSelector('form#consent');
    for (const scope of untick) {
      const box = page.locator(`input[name="scope"][value="${scope}"]`);
      if ((await box.count()) !== 1) throw new Error(`the consent page offers no scope ${scope}`);
      await box.uncheck();
    }
    if (screenshots) await page.screenshot({ path: join(screenshotDir(), `${screenshots}-consent.png`), fullPage: true });
    const [callback] = await Promise.all([waitForCallback(page, callbackPrefix), page.click('#approve')]);
    return callback;
  } finally {
    await context.close();
  }
}

/** The URL of the first request the page makes to `prefix` (a redirect hop included). */
export async function waitForCallback(page, prefix) {
  const request = await page.waitForRequest((r) => r.url().startsWith(prefix));
  return new URL(request.url());
}
