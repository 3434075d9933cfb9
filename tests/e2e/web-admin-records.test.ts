/**
 * The admin center's record pages in a real browser (Debian's Chromium through playwright-core) against the real
 * HTTPS server process and a real SQLite file: the sign-in log (the admin's own sign-in through the web pages, the
 * filters, the server's cursor paging), the audit log (paging, and an action taken elsewhere appearing without a
 * reload), a diagnostics incident uploaded by a device looked up by the ID a user reads out and its zip downloaded
 * with the session cookie, and the organization with its regions. A plain user's cookie gets none of these APIs.
 *
 * Every page is screenshotted (tests/artifacts/web-admin-records/), checked by axe-core (no serious or critical
 * problem) and found free of Content-Security-Policy violations. The tests share one server and run in order.
 */
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import zlib from 'node:zlib';
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
/** Seeded before the server starts, so both logs have more than one page (the pages show 50 a page). */
const SEEDED_SIGN_INS = 60;
const SEEDED_AUDIT = 60;

let server: RunningServer & { issuer: string };
let issuer: string;
let fetchTls: ReturnType<typeof tlsFetch>;
let incidentId: string;
let bobDevice: { token: string; deviceId: string; recordId: string };

/** One tenant with an admin (ada) and two users; carol has 60 old sign-ins, and the audit log 60 old entries. */
async function seed(dataDir: string) {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const now = Date.now();
  const tenant = await store.tenants.create('Contoso', now);
  const passwordHash = await hashPassword(PASSWORD);
  const ids: Record<string, string> = {};
  for (const [username, role] of [['ada', 'admin'], ['bob', 'user'], ['carol', 'user']] as const) {
    const user = await store.users.create({ tenantId: tenant.id, username, email: `${username}@contoso.example`, displayName: username[0]!.toUpperCase() + username.slice(1), role, passwordHash }, now);
    await store.mailboxes.create(user.id, now);
    ids[username] = user.id;
  }
  for (let i = 0; i < SEEDED_SIGN_INS; i++) {
    await store.access.logSignIn({
      id: `seeded-${String(i).padStart(3, '0')}`, tenantId: tenant.id, userId: ids.carol!, at: now - 2 * 3600_000 - i * 60_000, kind: 'password',
      clientId: 'pigeon-app', deviceId: 'carol-seeded-000001', ip: '192.0.2.7', sessionId: null, authMethods: ['pwd'], riskLevel: 'none',
      riskScore: 0, riskSignals: [], policyResults: [], decision: 'allow', reason: null,
    });
  }
  for (let i = SEEDED_AUDIT; i > 0; i--) {
    await store.audit.append({ tenantId: tenant.id, at: now - 3 * 3600_000 - i * 60_000, actorId: null, actorName: 'system', action: 'device.purge', targetType: 'device', targetId: `old-device-${i}`, details: { reason: 'inactive' } });
  }
  await store.close();
}

async function deviceCall(d: { token: string; deviceId: string }, method: string, p: string, body?: unknown) {
  const res = await fetchTls(`${issuer}${p}`, {
    method,
    headers: { authorization: `Bearer ${d.token}`, 'x-device-id': d.deviceId, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/** POST /v1/diagnostics with binary bytes (the shared tlsFetch sends text bodies only). */
function uploadBundle(d: { token: string; deviceId: string }, gzip: Buffer): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${issuer}/v1/diagnostics`, {
      method: 'POST',
      ca: server.cert,
      headers: { authorization: `Bearer ${d.token}`, 'x-device-id': d.deviceId, 'content-type': 'application/gzip', 'content-length': String(gzip.length) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(gzip);
  });
}

/** Bob's phone signs in (development password grant), registers, and uploads a small gzip log as "Send diagnostics". */
async function bobUploadsDiagnostics() {
  const deviceId = 'bob-iphone-000000001';
  const res = await fetchTls(`${issuer}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username: 'bob', password: PASSWORD, device_id: deviceId }).toString(),
  });
  expect(res.status).toBe(200);
  const token = ((await res.json()) as { access_token: string }).access_token;
  const reg = await deviceCall({ token, deviceId }, 'POST', '/v1/devices', { friendlyName: "Bob's iPhone", deviceType: 'phone', deviceModel: 'iPhone15,2', deviceOS: 'iOS 18', clientType: 'PigeonMail', clientVersion: '2.1' });
  expect(reg.status).toBe(201);
  bobDevice = { token, deviceId, recordId: String(reg.json.id) };
  const up = await uploadBundle(bobDevice, zlib.gzipSync('12:00:01 sync failed: 503\n12:00:02 retrying\n'));
  expect(up.status).toBe(201);
  incidentId = String(up.json.incidentId);
  expect(incidentId).toMatch(/^PGN-[0-9A-Z]{4}-[0-9A-Z]{4}$/);
}

beforeAll(async () => {
  const dataDir = tempDir('pigeon-web-records-');
  await seed(dataDir);
  server = await startWithIssuer({ PIGEON_DATA_DIR: dataDir, PIGEON_PASSWORD_GRANT: 'true' });
  issuer = server.issuer;
  fetchTls = tlsFetch(server.cert);
  await bobUploadsDiagnostics();
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

const browser = useBrowser();

async function inspect(p: TestPage, name: string) {
  await p.expectAccessible();
  await p.screenshot(name);
}

/** Signs in through the identity pages from `start` (tests/helpers/webSignIn.ts). */
const signIn = (p: TestPage, start: string, username: string, o: { enrolMfa: boolean }) =>
  webSignIn(p, { issuer, start, username, password: PASSWORD, enrolMfa: o.enrolMfa });

/** Polls (the page's CSP forbids waitForFunction's string evaluation) until `probe` holds. */
async function until(what: string, probe: () => Promise<boolean>, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const rows = (p: TestPage) => p.page.locator('table.records tbody tr');
const rowTexts = (p: TestPage) => rows(p).allTextContents();
async function waitForRows(p: TestPage, n: number) {
  await until(`${n} rows`, async () => (await rows(p).count()) === n);
}

async function fitsWidth(p: TestPage) {
  const widths = (await p.page.evaluate('({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth })')) as { scroll: number; client: number };
  expect(widths.scroll).toBeLessThanOrEqual(widths.client);
}

test('an admin sees their own sign-in, filters and pages the sign-in log, looks up and downloads an incident, pages the audit log live and views the organization', async () => {
  const p = await browser.newPage();
  await signIn(p, '/admin/sign-ins', 'ada', { enrolMfa: true });
  await waitForHeading(p, 'Sign-ins');

  // The admin's own sign-in through the web pages is on the first page, under their username (resolved from the id).
  const ownRow = rows(p).filter({ hasText: 'pigeon-web' }).filter({ hasText: 'ada' });
  await ownRow.first().waitFor();
  expect(await ownRow.first().textContent()).toMatch(/Interactive.*allow/);
  await ownRow.first().locator('summary').click();
  await expect(ownRow.first().locator('details').textContent()).resolves.toMatch(/mfa|otp/);
  await inspect(p, 'admin-sign-ins');

  // Filters: a username, then paging through the server's cursors (carol has 60: 50 + 10), then a decision.
  await p.page.getByLabel('User', { exact: true }).fill('carol');
  await until("a page of carol's sign-ins", async () => {
    const texts = await rowTexts(p);
    return texts.length === 50 && texts.every((t) => t.includes('carol') && t.includes('carol-seeded-000001'));
  });
  const firstPage = await rows(p).first().getAttribute('data-signin');
  await p.page.getByRole('navigation', { name: 'Sign-in log pages' }).getByRole('button', { name: 'Next' }).click();
  await waitForRows(p, SEEDED_SIGN_INS - 50);
  expect(await rows(p).last().getAttribute('data-signin')).toBe(`seeded-${String(SEEDED_SIGN_INS - 1).padStart(3, '0')}`);
  await p.page.getByRole('navigation', { name: 'Sign-in log pages' }).getByRole('button', { name: 'Previous' }).click();
  await waitForRows(p, 50);
  expect(await rows(p).first().getAttribute('data-signin')).toBe(firstPage);
  await p.page.getByLabel('Decision').selectOption('failure');
  await p.page.getByText('No sign-ins match.').waitFor();
  await p.page.getByLabel('Decision').selectOption('');
  await p.page.getByLabel('User', { exact: true }).fill('nobody-here');
  await p.page.getByRole('alert').filter({ hasText: 'No user named nobody-here' }).waitFor();
  await p.expectAccessible();

  // Diagnostics: the ID as a person might type it (lower case, no dashes) finds bob's incident.
  await p.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Diagnostics' }).click();
  await waitForHeading(p, 'Diagnostics');
  await p.page.getByLabel('Incident ID').fill('nope');
  await p.page.getByRole('button', { name: 'Look up' }).click();
  await p.page.getByRole('alert').filter({ hasText: 'An incident ID reads PGN-' }).waitFor();
  await p.page.getByLabel('Incident ID').fill(incidentId.toLowerCase().replace(/-/g, ''));
  await p.page.getByRole('button', { name: 'Look up' }).click();
  await p.page.locator('[data-field="incidentId"]', { hasText: incidentId }).waitFor();
  expect(new URL(p.page.url()).pathname).toBe(`/admin/diagnostics/${incidentId}`);
  const incidentText = (await p.page.locator('article.incident').textContent()) ?? '';
  expect(incidentText).toContain('bob');
  expect(incidentText).toContain(bobDevice.deviceId);
  await inspect(p, 'admin-diagnostics-incident');

  // The bundle downloads with a plain GET the session cookie authenticates: a zip named after the incident.
  const [download] = await Promise.all([p.page.waitForEvent('download'), p.page.getByRole('link', { name: /Download the bundle/ }).click()]);
  expect(download.suggestedFilename()).toBe(`${incidentId}.zip`);
  const zip = fs.readFileSync((await download.path())!);
  expect(zip.subarray(0, 2).toString('latin1')).toBe('PK');
  expect(zip.includes(Buffer.from('device.json'))).toBe(true);

  // An incident that does not exist (or another tenant's) is said so next to the form.
  await p.page.getByLabel('Incident ID').fill('PGN-0000-0000');
  await p.page.getByRole('button', { name: 'Look up' }).click();
  await p.page.getByRole('alert').filter({ hasText: 'No incident PGN-0000-0000' }).waitFor();

  // The audit log: the lookup and the download just made are on top, by the admin; older entries on the next page.
  await p.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Audit log' }).click();
  await waitForHeading(p, 'Audit log');
  await waitForRows(p, 50);
  const top = await rows(p).evaluateAll((trs) => trs.slice(0, 3).map((tr) => `${(tr as unknown as { dataset: { action: string } }).dataset.action} ${tr.textContent}`));
  expect(top.some((t) => t.startsWith('diagnostics.download') && t.includes('ada') && t.includes(incidentId))).toBe(true);
  expect(top.some((t) => t.startsWith('diagnostics.view') && t.includes('ada'))).toBe(true);
  await inspect(p, 'admin-audit');
  const pager = p.page.getByRole('navigation', { name: 'Audit log pages' });
  await pager.getByRole('button', { name: 'Next' }).click();
  await until('the second audit page', async () => (await rows(p).first().getAttribute('data-action')) === 'device.purge' && (await rows(p).count()) < 50);
  await pager.getByRole('button', { name: 'Previous' }).click();
  await until('the first audit page', async () => (await rows(p).first().getAttribute('data-action'))?.startsWith('diagnostics.') ?? false);

  // An action taken elsewhere (the admin API, as another tab would call it) shows up without a reload.
  await p.page.evaluate('window.__sameDocument = true');
  const session = (await (await p.page.request.get(`${issuer}/web/session`)).json()) as { csrfToken: string };
  const blocked = await p.page.request.post(`${issuer}/admin/v1/devices/${bobDevice.recordId}/block`, { headers: { origin: issuer, 'x-csrf-token': session.csrfToken } });
  expect(blocked.status()).toBe(200);
  await until('the block in the audit log', async () => (await rows(p).first().getAttribute('data-action')) === 'device.block');
  expect(await p.page.evaluate('window.__sameDocument')).toBe(true);

  // The organization and its regions, read-only.
  await p.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Organization' }).click();
  await waitForHeading(p, 'Organization');
  await expect(p.page.locator('[data-field="tenantName"]').textContent()).resolves.toBe('Contoso');
  const region = (await p.page.locator('[data-field="tenantRegion"]').textContent()) ?? '';
  expect(region).not.toBe('');
  expect(await p.page.locator(`tr[data-region="${region}"]`).textContent()).toContain('Yes');
  expect(await p.page.getByRole('button').allTextContents()).toEqual(['Sign out']);
  await inspect(p, 'admin-organization');

  // The sign-in log on a phone's screen: one card per entry, nothing scrolls sideways.
  await p.page.setViewportSize(PHONE);
  await p.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Sign-ins' }).click();
  await waitForHeading(p, 'Sign-ins');
  await ownRow.first().waitFor();
  await fitsWidth(p);
  await inspect(p, 'admin-sign-ins-390');
  await p.expectNoCspViolations();
}, 180_000);

test("a plain user's session cookie gets none of the record APIs, not even the bundle download", async () => {
  const p = await browser.newPage();
  await signIn(p, '/account/devices', 'carol', { enrolMfa: false });
  await waitForHeading(p, 'My devices');
  for (const api of ['/admin/v1/sign-ins', '/admin/v1/audit', `/admin/v1/diagnostics/${incidentId}`, `/admin/v1/diagnostics/${incidentId}/bundle`, '/admin/v1/tenant', '/admin/v1/regions']) {
    expect({ api, status: (await p.page.request.get(`${issuer}${api}`)).status() }).toEqual({ api, status: 403 });
  }
  expect((await p.page.request.get(`${issuer}/admin/diagnostics/${incidentId}`)).status()).toBe(403);
  await p.expectNoCspViolations();
}, 120_000);
