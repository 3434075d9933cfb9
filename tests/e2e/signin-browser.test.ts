/**
 * The identity provider's sign-in pages in a real browser (headless Chromium through playwright-core) against the
 * real HTTPS server process and a real SQLite file: a user types, clicks and presses keys the way a person would
 * (no form is posted by hand), enrols in two-step verification with a code computed here from the key the page
 * shows, allows the app, and the browser lands on the app's loopback redirect (a small plain-HTTP server of this
 * file, RFC 8252 §7.3) with a code this file redeems at the token endpoint and uses at the mailbox API.
 *
 * Every page of the flow is screenshotted (tests/artifacts/signin-browser/), checked by axe-core (no serious or
 * critical problem) and, at the end of every test, found free of Content-Security-Policy violations.
 *
 * The tests share one server and run in order: the second signs in with the key the first enrolled.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { storeWithUser, type RunningServer } from '../helpers/server';
import { tempDir } from '../helpers/testApp';
import { startWithIssuer } from '../helpers/ports';
import { tlsFetch, totp } from '../helpers/oidcClient';
import { useBrowser, type TestPage } from '../helpers/browser';

const CLIENT_ID = 'pigeon-app';
const PASSWORD = 'correct horse battery';
const PHONE = { width: 390, height: 844 };

let server: RunningServer;
let issuer: string;
let fetchTls: ReturnType<typeof tlsFetch>;
let endpoints: { authorization_endpoint: string; token_endpoint: string };

/** The app's side of the redirect: a plain-HTTP loopback server that records every callback's query. */
interface Loopback {
  redirectUri: string;
  callbacks: URLSearchParams[];
  close(): Promise<void>;
}
let loopback: Loopback;

/** What each test took, printed at the end, and how much of it went to axe and to screenshots. */
const timings: string[] = [];
const spent = { axeMs: 0, screenshotMs: 0, pages: 0 };

async function startLoopback(): Promise<Loopback> {
  const callbacks: URLSearchParams[] = [];
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== '/callback') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    callbacks.push(url.searchParams);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Signed in</title></head><body><main><h1>Signed in</h1><p>You can go back to the app.</p></main></body></html>');
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    redirectUri: `http://127.0.0.1:${port}/callback`,
    callbacks,
    close: () => new Promise<void>((resolve) => srv.close(() => resolve())),
  };
}

let startMs = 0;
beforeAll(async () => {
  const t0 = performance.now();
  const dataDir = tempDir('pigeon-signin-browser-');
  // One user per story, so a failed password or an enrolment in one test cannot change what another sees.
  await storeWithUser(dataDir, 'alice', PASSWORD); // enrols, then signs in with a code
  await storeWithUser(dataDir, 'carol', PASSWORD); // a wrong password first, keyboard only
  await storeWithUser(dataDir, 'dave', PASSWORD); // the phone-sized screen
  const [started, loop] = await Promise.all([startWithIssuer({ PIGEON_DATA_DIR: dataDir }), startLoopback()]);
  [server, loopback, issuer] = [started, loop, started.issuer];
  fetchTls = tlsFetch(server.cert);
  const discovery = await fetchTls(`${issuer}/.well-known/openid-configuration`, {});
  expect(discovery.status).toBe(200);
  endpoints = (await discovery.json()) as typeof endpoints;
  startMs = performance.now() - t0;
}, 90_000);

afterAll(async () => {
  await Promise.all([server?.stop(), loopback?.close()]);
  if (timings.length) {
    console.log(
      `sign-in browser timings: server start ${startMs.toFixed(0)} ms; ${timings.join('; ')}; ` +
        `${spent.pages} pages checked: axe ${spent.axeMs.toFixed(0)} ms, screenshots ${spent.screenshotMs.toFixed(0)} ms in all`,
    );
  }
});

const browser = useBrowser();

/** A new authorization request as a native app makes it: PKCE S256, a state, the device's id, the loopback redirect. */
function authorization(deviceId: string) {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const state = crypto.randomBytes(16).toString('base64url');
  const url = new URL(endpoints.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: loopback.redirectUri,
    scope: 'openid offline_access mail',
    code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    state,
    device_id: deviceId,
  }).toString();
  return { url: url.toString(), verifier, state, deviceId };
}

/** Waits until the page's heading is `heading` and the document (its stylesheet too) has loaded. */
async function shows(p: TestPage, heading: string) {
  await p.page.getByRole('heading', { level: 1, name: heading, exact: true }).waitFor();
  await p.page.waitForLoadState('load');
}

/** The checks every page of the flow gets: axe, then a screenshot kept for people to look at. */
async function inspect(p: TestPage, name: string) {
  const t0 = performance.now();
  await p.expectAccessible();
  const t1 = performance.now();
  await p.screenshot(name);
  spent.axeMs += t1 - t0;
  spent.screenshotMs += performance.now() - t1;
  spent.pages++;
}

/** Opens the authorization URL: the provider redirects to its login page, which carries the strict CSP. */
async function openLogin(p: TestPage, url: string) {
  const response = await p.goto(url);
  expect(response?.status()).toBe(200);
  expect(new URL(p.page.url()).pathname).toMatch(/^\/interaction\/[^/]+$/);
  // The CSP checks below mean something only if the pages have a policy to violate.
  const csp = response?.headers()['content-security-policy'] ?? '';
  expect(csp).toMatch(/default-src 'none'/);
  expect(csp).not.toMatch(/unsafe-inline/);
  await shows(p, 'Sign in');
}

async function clickButton(p: TestPage, name: string, nextHeading: string) {
  await p.page.getByRole('button', { name, exact: true }).click();
  await shows(p, nextHeading);
}

/** Clicks Allow on the consent page and waits for the app's redirect; answers the callback's query. */
async function allowAndLand(p: TestPage, state: string, press?: () => Promise<void>) {
  const before = loopback.callbacks.length;
  const landed = p.page.waitForURL((u) => u.origin + u.pathname === loopback.redirectUri);
  await (press ? press() : p.page.getByRole('button', { name: 'Allow', exact: true }).click());
  await landed;
  await p.page.getByRole('heading', { name: 'Signed in' }).waitFor();
  const query = new URL(p.page.url()).searchParams;
  expect(query.get('error')).toBeNull();
  expect(query.get('state')).toBe(state);
  expect(query.get('code')).toMatch(/^[A-Za-z0-9_-]{20,}$/);
  // The app's server saw the same redirect the browser shows.
  expect(loopback.callbacks.length).toBe(before + 1);
  expect(loopback.callbacks[before]!.get('code')).toBe(query.get('code'));
  return query;
}

const claimsOf = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;

/** The app redeems the code (a plain form POST with the verifier) and uses the access token at the mailbox API. */
async function redeemAndUse(code: string, verifier: string, deviceId: string) {
  const res = await fetchTls(endpoints.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', client_id: CLIENT_ID, code, redirect_uri: loopback.redirectUri, code_verifier: verifier }).toString(),
  });
  const tokens = (await res.json()) as { access_token?: string; refresh_token?: string; token_type?: string; error?: string };
  expect({ status: res.status, error: tokens.error }).toEqual({ status: 200, error: undefined });
  expect(tokens.token_type?.toLowerCase()).toBe('bearer');
  expect(tokens.refresh_token).toBeTruthy();
  const accessToken = tokens.access_token!;
  expect(claimsOf(accessToken)).toMatchObject({ iss: issuer, did: deviceId, scope: 'mail', client_id: CLIENT_ID });

  const call = async (method: string, path: string, body?: unknown) => {
    const r = await fetchTls(`${issuer}${path}`, {
      method,
      headers: { authorization: `Bearer ${accessToken}`, 'x-device-id': deviceId, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: r.status, text: await r.text() };
  };
  const registered = await call('POST', '/v1/devices', { friendlyName: 'browser test', deviceType: 'phone', clientType: 'native' });
  expect([200, 201]).toContain(registered.status);
  const session = await call('GET', '/v1/session');
  expect(session.status).toBe(200);
  return claimsOf(accessToken);
}

/**
 * Waits (briefly) until the field `id` has the keyboard focus: the pages put it on their first field (autofocus),
 * which Chromium applies at a rendering update after parsing, so right after `load` it may not have happened yet.
 */
async function focusLandsOn(p: TestPage, id: string) {
  await p.page
    .waitForFunction(`document.activeElement !== null && document.activeElement.id === ${JSON.stringify(id)}`, undefined, { timeout: 5000 })
    .catch(async () => {
      throw new Error(`the keyboard focus is on #${await focusedId(p)}, not #${id}, on ${p.page.url()}`);
    });
}

/** The id of the element that has the keyboard focus. */
const focusedId = (p: TestPage) => p.page.evaluate('document.activeElement ? document.activeElement.id : null') as Promise<string | null>;
/** The accessible text of the focused element (a button's label). */
const focusedText = (p: TestPage) => p.page.evaluate('document.activeElement ? document.activeElement.textContent.trim() : null') as Promise<string | null>;

/** Presses Tab until the focused element is the button labelled `label` (at most `limit` presses). */
async function tabTo(p: TestPage, label: string, limit = 8) {
  for (let i = 0; i < limit; i++) {
    await p.page.keyboard.press('Tab');
    if ((await focusedText(p)) === label) return;
  }
  throw new Error(`${limit} presses of Tab never reached the button "${label}" on ${p.page.url()}`);
}

/** The key alice enrolled with (test 1), for the later sign-in (test 2). */
let aliceSecret: string | undefined;
let aliceSub: unknown;

test('sign in, enrol in two-step verification, allow the app, land on its redirect; the code buys a working token', async () => {
  const started = performance.now();
  const p = await browser.newPage();
  const { url, verifier, state, deviceId } = authorization('device-browser-alice-1');
  await openLogin(p, url);
  await inspect(p, 'login');

  await p.page.getByLabel('Username').fill('alice');
  await p.page.getByLabel('Password').fill(PASSWORD);
  await clickButton(p, 'Sign in', 'Set up two-step verification');
  await inspect(p, 'enrolment');

  // The key as a person reads it off the screen (grouped in fours), and the code their app would show for it.
  const shown = (await p.page.locator('.secret code').textContent()) ?? '';
  expect(shown).toMatch(/^[A-Z2-7]{4}( [A-Z2-7]{1,4})+$/);
  aliceSecret = shown.replace(/ /g, '');
  expect(await p.page.getByRole('link', { name: 'add to authenticator' }).getAttribute('href')).toMatch(new RegExp(`^otpauth://totp/.*secret=${aliceSecret}`));
  await p.page.getByLabel('Code from the app').fill(totp(aliceSecret));
  await clickButton(p, 'Turn on two-step sign-in', 'Save your recovery codes');
  const codes = await p.page.locator('ul.codes li').allTextContents();
  expect(codes).toHaveLength(10);
  expect(new Set(codes).size).toBe(10);
  await inspect(p, 'recovery-codes');

  await clickButton(p, 'I have saved them — continue', 'Allow access');
  await expect(p.page.locator('main').textContent()).resolves.toContain(deviceId);
  await inspect(p, 'consent');

  const callback = await allowAndLand(p, state);
  const signInMs = performance.now() - started;
  const claims = await redeemAndUse(callback.get('code')!, verifier, deviceId);
  aliceSub = claims.sub;
  await p.expectNoCspViolations();
  timings.push(`enrolment sign-in ${signInMs.toFixed(0)} ms in the browser, ${(performance.now() - started).toFixed(0)} ms with the token and API calls`);
});

test('a second sign-in in a fresh browser context asks for a code; a fresh one signs in', async () => {
  expect(aliceSecret).toBeDefined(); // set by the test before, which enrolled
  const started = performance.now();
  const p = await browser.newPage();
  const { url, verifier, state, deviceId } = authorization('device-browser-alice-2');
  await openLogin(p, url);
  await p.page.getByLabel('Username').fill('alice');
  await p.page.getByLabel('Password').fill(PASSWORD);
  await clickButton(p, 'Sign in', 'Two-step verification');
  await inspect(p, 'totp-challenge');

  // Enrolment used the current step's code, and a code is good once: the next step's code is the fresh one.
  await p.page.getByLabel('Verification code').fill(totp(aliceSecret!, Date.now() + 30_000));
  await clickButton(p, 'Verify', 'Allow access');
  const callback = await allowAndLand(p, state);
  const claims = await redeemAndUse(callback.get('code')!, verifier, deviceId);
  expect(claims.sub).toBe(aliceSub);
  await p.expectNoCspViolations();
  timings.push(`code sign-in ${(performance.now() - started).toFixed(0)} ms`);
});

test('a wrong password shows an alert and the form stays usable; the whole sign-in works from the keyboard alone', async () => {
  const started = performance.now();
  const p = await browser.newPage();
  const { url, verifier, state, deviceId } = authorization('device-browser-carol-1');
  await openLogin(p, url);
  const keys = p.page.keyboard;

  // The username field has the focus from the start (autofocus): type, Tab to the password, type, Enter.
  await focusLandsOn(p, 'username');
  await keys.type('carol');
  await keys.press('Tab');
  expect(await focusedId(p)).toBe('password');
  await keys.type('not the password');
  await keys.press('Enter');
  const alert = p.page.getByRole('alert');
  await alert.waitFor();
  await p.page.waitForLoadState('load');
  expect(await alert.textContent()).toBe('The username or password is not right.');
  await expect(p.page.locator('h1').textContent()).resolves.toBe('Sign in');
  await inspect(p, 'login-error');

  // The form is still there: the username kept, the password empty, both enabled, and the alert tied to them.
  const username = p.page.getByLabel('Username');
  const password = p.page.getByLabel('Password');
  expect(await username.inputValue()).toBe('carol');
  expect(await password.inputValue()).toBe('');
  expect(await username.isEditable()).toBe(true);
  expect(await password.isEditable()).toBe(true);
  expect(await password.getAttribute('aria-invalid')).toBe('true');
  expect(await password.getAttribute('aria-describedby')).toBe(await alert.getAttribute('id'));

  // The username is kept, so the focus waits in the password field; Shift+Tab reaches the username back.
  await focusLandsOn(p, 'password');
  await keys.press('Shift+Tab');
  expect(await focusedId(p)).toBe('username');
  await keys.press('Tab');
  expect(await focusedId(p)).toBe('password');
  await keys.type(PASSWORD);
  await keys.press('Enter');
  await shows(p, 'Set up two-step verification');

  // Declining the offer and allowing the app, still by keyboard: Tab to each button, Enter.
  await tabTo(p, 'Not now');
  await keys.press('Enter');
  await shows(p, 'Allow access');
  const callback = await allowAndLand(p, state, async () => {
    await tabTo(p, 'Allow');
    await keys.press('Enter');
  });
  await redeemAndUse(callback.get('code')!, verifier, deviceId);
  await p.expectNoCspViolations();
  timings.push(`wrong password then keyboard sign-in ${(performance.now() - started).toFixed(0)} ms`);
});

test('on a phone-sized screen the pages fit the width; the login page is accessible there too', async () => {
  const started = performance.now();
  const p = await browser.newPage({ context: { viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true } });
  const { url, state } = authorization('device-browser-dave-1');
  /** Nothing wider than the screen: no sideways scrolling to reach a field or a button. */
  const fitsWidth = async () => {
    const widths = (await p.page.evaluate('({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth })')) as { scroll: number; client: number };
    expect(widths.client).toBe(PHONE.width);
    expect(widths.scroll).toBeLessThanOrEqual(widths.client);
  };
  await openLogin(p, url);
  await fitsWidth();
  await inspect(p, 'phone-login');

  await p.page.getByLabel('Username').fill('dave');
  await p.page.getByLabel('Password').fill(PASSWORD);
  await clickButton(p, 'Sign in', 'Set up two-step verification');
  // axe ran on these pages at desktop size (about a second a page on a busy machine); what a narrow screen can
  // break is the layout, which fitsWidth checks and the screenshots show.
  await fitsWidth();
  await p.screenshot('phone-enrolment');

  await clickButton(p, 'Not now', 'Allow access');
  await fitsWidth();
  await p.screenshot('phone-consent');
  await allowAndLand(p, state);
  await p.expectNoCspViolations();
  timings.push(`phone sign-in ${(performance.now() - started).toFixed(0)} ms`);
});
