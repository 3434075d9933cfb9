/**
 * The admin center's device inventory and "My devices" in a real browser (Debian's Chromium through playwright-core)
 * against the real HTTPS server process and a real SQLite file. People sign in through the identity pages (the admin
 * enrols in two-step verification and signs in with a code), click and type; the devices are played by this file
 * over the API with their own tokens and X-Device-Id.
 *
 * Every page is screenshotted (tests/artifacts/web-devices/), checked by axe-core (no serious or critical problem)
 * and found free of Content-Security-Policy violations. The tests share one server and run in order.
 */
import path from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { openSqliteStore } from '../../server/store/sqlite';
import { hashPassword } from '../../server/identity/passwords';
import type { RunningServer } from '../helpers/server';
import { tempDir } from '../helpers/testApp';
import { startWithIssuer } from '../helpers/ports';
import { tlsFetch } from '../helpers/oidcClient';
import { useBrowser, type TestPage } from '../helpers/browser';
import { waitForHeading, webSignIn } from '../helpers/webSignIn';

const PASSWORD = 'correct horse battery';
const PHONE = { width: 390, height: 844 };
const SESSION_COOKIE = '__Host-pigeon-web';

let server: RunningServer & { issuer: string };
let issuer: string;
let fetchTls: ReturnType<typeof tlsFetch>;

/** A device this file plays: its owner's token for it and its id. */
interface Device {
  name: string;
  deviceId: string;
  username: string;
  token: string;
  recordId: string;
}
const devices: Record<string, Device> = {};

/** One tenant with an admin (ada) and two users (bob, carol), each with a mailbox. */
async function seed(dataDir: string) {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const now = Date.now();
  const tenant = await store.tenants.create('Contoso', now);
  const passwordHash = await hashPassword(PASSWORD);
  for (const [username, role] of [['ada', 'admin'], ['bob', 'user'], ['carol', 'user']] as const) {
    const user = await store.users.create({ tenantId: tenant.id, username, email: `${username}@contoso.example`, displayName: username[0]!.toUpperCase() + username.slice(1), role, passwordHash }, now);
    await store.mailboxes.create(user.id, now);
  }
  await store.close();
}

/** The device's API call: its bearer token and X-Device-Id, as the app makes it. */
async function deviceCall(d: Pick<Device, 'token' | 'deviceId'>, method: string, p: string, body?: unknown) {
  const res = await fetchTls(`${issuer}${p}`, {
    method,
    headers: { authorization: `Bearer ${d.token}`, 'x-device-id': d.deviceId, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/** A device token from the development password grant, bound to the device id. */
async function deviceToken(username: string, deviceId: string) {
  const res = await fetchTls(`${issuer}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username, password: PASSWORD, device_id: deviceId }).toString(),
  });
  const body = (await res.json()) as { access_token?: string; wipe?: unknown };
  expect(res.status).toBe(200);
  return body;
}

/** Registers a device and syncs once, so it has a last sync. */
async function registerDevice(key: string, username: string, deviceId: string, name: string, model: string) {
  const { access_token: token } = await deviceToken(username, deviceId);
  const d = { name, deviceId, username, token: token!, recordId: '' };
  const reg = await deviceCall(d, 'POST', '/v1/devices', { friendlyName: name, deviceType: 'phone', deviceModel: model, deviceOS: 'iOS 18', clientType: 'PigeonMail', clientVersion: '2.1' });
  expect(reg.status).toBe(201);
  d.recordId = String(reg.json.id);
  expect((await deviceCall(d, 'GET', '/v1/folders/sync')).status).toBe(200);
  devices[key] = d;
}

beforeAll(async () => {
  const dataDir = tempDir('pigeon-web-devices-');
  await seed(dataDir);
  server = await startWithIssuer({ PIGEON_DATA_DIR: dataDir, PIGEON_PASSWORD_GRANT: 'true' });
  issuer = server.issuer;
  fetchTls = tlsFetch(server.cert);
  await registerDevice('iphone', 'bob', 'bob-iphone-000000001', "Bob's iPhone", 'iPhone15,2');
  await registerDevice('pixel', 'bob', 'bob-pixel-0000000001', "Bob's Pixel", 'Pixel 8');
  await registerDevice('tablet', 'bob', 'bob-tablet-000000001', "Bob's old tablet", 'iPad7,5');
  await registerDevice('galaxy', 'carol', 'carol-galaxy-0000001', "Carol's Galaxy", 'SM-S911B');
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

const browser = useBrowser();

/** axe, then a screenshot kept for people to look at. */
async function inspect(p: TestPage, name: string) {
  await p.expectAccessible();
  await p.screenshot(name);
}

/** Signs in through the identity pages from `start` (tests/helpers/webSignIn.ts). */
const signIn = (p: TestPage, start: string, username: string, o: { enrolMfa: boolean }) =>
  webSignIn(p, { issuer, start, username, password: PASSWORD, enrolMfa: o.enrolMfa });

/** Waits until the device table shows `n` rows (the page's CSP forbids waitForFunction's string evaluation). */
async function waitForRows(p: TestPage, n: number) {
  const deadline = Date.now() + 15_000;
  while ((await rows(p).count()) !== n) {
    if (Date.now() > deadline) throw new Error(`the device table shows ${await rows(p).count()} rows, not ${n}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The session cookie is HttpOnly, Secure and SameSite=Strict; no token is kept in the page's storage. */
async function expectSessionSafe(p: TestPage, context: BrowserContext) {
  const cookie = (await context.cookies(issuer)).find((c) => c.name === SESSION_COOKIE);
  expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict', path: '/' });
  const storage = (await p.page.evaluate('JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage })')) as string;
  expect(storage).toBe('{}{}');
  expect(await p.page.evaluate('document.cookie')).not.toContain(SESSION_COOKIE); // HttpOnly: invisible to scripts
}

/** Nothing wider than a phone's screen. */
async function fitsWidth(p: TestPage) {
  const widths = (await p.page.evaluate('({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth })')) as { scroll: number; client: number };
  expect(widths.scroll).toBeLessThanOrEqual(widths.client);
}

const rows = (p: TestPage) => p.page.locator('table.devices tbody tr');

test('an admin signs in with two-step verification, finds a device, blocks it, wipes it and sees the acknowledgement live', async () => {
  const p = await browser.newPage();
  await signIn(p, '/admin/', 'ada', { enrolMfa: true });
  await waitForHeading(p, 'Devices');
  await waitForRows(p, 4);
  await expectSessionSafe(p, p.context);
  await inspect(p, 'admin-devices');

  // Find by name: the server's search, one row left.
  await p.page.getByLabel('Search by name').fill('iphone');
  await waitForRows(p, 1);
  expect(await rows(p).first().textContent()).toContain("Bob's iPhone");
  await p.page.getByRole('link', { name: "Bob's iPhone" }).click();
  await waitForHeading(p, "Bob's iPhone");
  expect(new URL(p.page.url()).pathname).toBe(`/admin/devices/${devices.iphone!.recordId}`);
  await expect(p.page.locator('dl.fields').textContent()).resolves.toContain('bob-iphone-000000001');
  await inspect(p, 'admin-device-detail');

  // Block: the device's next sync is refused.
  await p.page.getByRole('button', { name: 'Block', exact: true }).click();
  await p.page.locator('.badge.access-blocked').waitFor();
  const refused = await deviceCall(devices.iphone!, 'GET', '/v1/folders/sync');
  expect(refused.status).toBe(403);
  expect(refused.text).toMatch(/blocked/i);

  // Wipe: the confirmation names the device; then the state is pending.
  await p.page.getByRole('button', { name: 'Wipe', exact: true }).click();
  const dialog = p.page.getByRole('dialog', { name: "Wipe Bob's iPhone?" });
  await dialog.waitFor();
  expect(await dialog.textContent()).toContain("Bob's iPhone");
  await inspect(p, 'admin-wipe-confirmation');
  await dialog.getByRole('button', { name: "Wipe Bob's iPhone", exact: true }).click();
  await p.page.locator('[data-field="wipeState"]', { hasText: 'pending' }).waitFor();

  // The device signs in again, learns of the wipe and acknowledges it: the page shows it without a reload.
  await p.page.evaluate('window.__sameDocument = true');
  const again = await deviceToken('bob', devices.iphone!.deviceId);
  expect(again.wipe).toEqual({ scope: 'account' });
  const ack = await deviceCall({ token: again.access_token!, deviceId: devices.iphone!.deviceId }, 'POST', '/v1/devices/current/wipe-ack', { status: 'ok' });
  expect(ack.status).toBe(200);
  await p.page.locator('[data-field="wipeState"]', { hasText: 'acknowledged' }).waitFor({ timeout: 15_000 });
  expect(await p.page.evaluate('window.__sameDocument')).toBe(true);
  await p.screenshot('admin-device-wiped');

  // The device list on a phone's screen: one card per device, nothing scrolls sideways.
  await p.page.getByRole('link', { name: '← All devices' }).click();
  await waitForHeading(p, 'Devices');
  await p.page.setViewportSize(PHONE);
  await waitForRows(p, 4);
  await fitsWidth(p);
  await p.expectAccessible();
  await p.screenshot('admin-devices-390');

  // A device that appears elsewhere shows up in the open list by itself.
  await registerDevice('carolPhone', 'carol', 'carol-newphone-00001', "Carol's new phone", 'Pixel 9');
  await waitForRows(p, 5);
  expect(await p.page.evaluate('window.__sameDocument')).toBe(true);
  await p.expectNoCspViolations();
}, 120_000);

test('a plain user is refused the admin pages and the admin API; My devices shows and acts on their own devices only', async () => {
  const p = await browser.newPage();
  await signIn(p, '/admin/', 'bob', { enrolMfa: false });
  expect(await p.page.getByRole('heading', { level: 1 }).textContent()).toBe('Not an administrator');
  await inspect(p, 'not-an-admin');
  expect((await p.page.request.get(`${issuer}/admin/v1/devices`)).status()).toBe(403);

  await p.page.getByRole('link', { name: 'Go to My devices' }).click();
  await waitForHeading(p, 'My devices');
  await p.page.locator('li.card').nth(2).waitFor();
  const names = await p.page.locator('li.card h2').allTextContents();
  expect(names.sort()).toEqual(["Bob's Pixel", "Bob's iPhone", "Bob's old tablet"]);
  await expectSessionSafe(p, p.context);
  await inspect(p, 'my-devices');

  // Wipe the lost phone: the confirmation names it; the card then says the wipe is pending.
  await p.page.getByRole('button', { name: "Wipe Bob's Pixel", exact: true }).click();
  const dialog = p.page.getByRole('dialog', { name: "Wipe Bob's Pixel?" });
  await dialog.waitFor();
  await inspect(p, 'my-devices-wipe-confirmation');
  await dialog.getByRole('button', { name: "Wipe Bob's Pixel", exact: true }).click();
  await p.page.locator(`li[data-device="${devices.pixel!.recordId}"] [data-wipe="pending"]`).waitFor();
  expect((await deviceCall(devices.pixel!, 'GET', '/v1/folders/sync')).status).not.toBe(200); // told to wipe

  // Remove the old tablet.
  await p.page.getByRole('button', { name: "Remove Bob's old tablet", exact: true }).click();
  await p.page.getByRole('dialog', { name: "Remove Bob's old tablet?" }).getByRole('button', { name: "Remove Bob's old tablet" }).click();
  await p.page.locator(`li[data-device="${devices.tablet!.recordId}"]`).waitFor({ state: 'detached' });

  // Another user's device is not found through the account API, whatever the call.
  const session = (await (await p.page.request.get(`${issuer}/web/session`)).json()) as { csrfToken: string; role: string };
  expect(session.role).toBe('user');
  const headers = { origin: issuer, 'x-csrf-token': session.csrfToken };
  const galaxy = devices.galaxy!.recordId;
  expect((await p.page.request.post(`${issuer}/account/v1/devices/${galaxy}/wipe`, { headers, data: { confirm: "Carol's Galaxy" } })).status()).toBe(404);
  expect((await p.page.request.delete(`${issuer}/account/v1/devices/${galaxy}`, { headers })).status()).toBe(404);
  expect((await deviceCall(devices.galaxy!, 'GET', '/v1/folders/sync')).status).toBe(200);
  await p.expectNoCspViolations();
}, 120_000);

test('CSRF: a cookie-authenticated call without the token, with a foreign Origin or with a wrong token is refused', async () => {
  const p = await browser.newPage();
  await signIn(p, '/account/devices', 'carol', { enrolMfa: false });
  await waitForHeading(p, 'My devices');
  const { csrfToken } = (await (await p.page.request.get(`${issuer}/web/session`)).json()) as { csrfToken: string };
  const wipe = (headers: Record<string, string>) => p.page.request.post(`${issuer}/account/v1/devices/${devices.galaxy!.recordId}/wipe`, { headers, data: { confirm: "Carol's Galaxy" } });
  const refusals: Array<Record<string, string>> = [{ origin: issuer }, { origin: 'https://evil.example', 'x-csrf-token': csrfToken }, { 'x-csrf-token': csrfToken }, { origin: issuer, 'x-csrf-token': `${csrfToken}x` }];
  for (const headers of refusals) {
    const res = await wipe(headers);
    expect({ headers, status: res.status() }).toEqual({ headers, status: 403 });
    expect(res.headers()['content-type']).toMatch(/application\/problem\+json/);
  }
  // Nothing happened to the device, and the same call with both is carried out.
  expect((await deviceCall(devices.galaxy!, 'GET', '/v1/folders/sync')).status).toBe(200);
  expect((await wipe({ origin: issuer, 'x-csrf-token': csrfToken })).status()).toBe(200);
  // The cookie never authenticates the device API.
  expect((await p.page.request.get(`${issuer}/v1/devices`)).status()).toBe(401);
  await p.expectNoCspViolations();
}, 120_000);

test('the session refreshes itself near expiry (one refresh for calls at once) and signing out ends it for good', async () => {
  // A server whose access tokens live 60 s, the refresh margin: every call the cookie authenticates refreshes first.
  const dataDir = tempDir('pigeon-web-refresh-');
  await seed(dataDir);
  const short = await startWithIssuer({ PIGEON_DATA_DIR: dataDir, PIGEON_ACCESS_TOKEN_TTL: '60' });
  const [mainIssuer] = [issuer];
  issuer = short.issuer;
  const p = await browser.newPage();
  try {
    await signIn(p, '/account/devices', 'carol', { enrolMfa: false });
    await waitForHeading(p, 'My devices');
    await p.page.getByText('No devices are signed in.').waitFor();
    const cookieNow = async () => (await p.context.cookies(issuer)).find((c) => c.name === SESSION_COOKIE)?.value;
    const first = await cookieNow();

    // Calls at once share one refresh (a rotated refresh token presented twice would end the sign-in).
    const answers = await Promise.all(Array.from({ length: 5 }, () => p.page.request.get(`${issuer}/account/v1/devices`)));
    expect(answers.map((a) => a.status())).toEqual([200, 200, 200, 200, 200]);
    const second = await cookieNow();
    expect(second).not.toBe(first);
    expect((await p.page.request.get(`${issuer}/account/v1/devices`)).status()).toBe(200);
    await expectSessionSafe(p, p.context);

    // Sign out from the page: the refresh token is revoked, so even an old copy of the cookie is worthless.
    const stolen = await cookieNow();
    await p.page.getByRole('button', { name: 'Sign out' }).click();
    await waitForHeading(p, 'Signed out');
    expect(await cookieNow()).toBeUndefined();
    await p.context.addCookies([{ name: SESSION_COOKIE, value: stolen!, url: `${issuer}/`, secure: true, httpOnly: true, sameSite: 'Strict' }]);
    expect((await p.page.request.get(`${issuer}/web/session`)).status()).toBe(401);
    expect((await p.page.request.get(`${issuer}/account/v1/devices`)).status()).toBe(401);
    await p.expectNoCspViolations();
  } finally {
    issuer = mainIssuer!;
    await p.close(); // first: the browser's open connections would hold the server's graceful stop
    await short.stop();
  }
}, 120_000);
