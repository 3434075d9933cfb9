/**
 * The admin center's access and users pages in a real browser (Debian's Chromium through playwright-core) against the
 * real HTTPS server process and a real SQLite file: device access rules (a rule the admin adds refuses the device it
 * matches on its next sync; deleting it lets the device back), conditional-access policies (the API's validation
 * errors shown next to the editor, create, switch the state from the list), What If, and users (create, disable,
 * reset the password and see the generated one once), and an app protection policy created and deleted.
 *
 * Every page is screenshotted (tests/artifacts/web-admin-access/), checked by axe-core (no serious or critical
 * problem) and found free of Content-Security-Policy violations; one page is checked at a phone's width.
 */
import path from 'node:path';
import { openSqliteStore } from '../../server/store/sqlite';
import { hashPassword } from '../../server/identity/passwords';
import type { RunningServer } from '../helpers/server';
import { tempDir } from '../helpers/testApp';
import { startWithIssuer } from '../helpers/ports';
import { tlsFetch } from '../helpers/oidcClient';
import { useBrowser, type TestPage } from '../helpers/browser';
import { waitForHeading as heading, webSignIn } from '../helpers/webSignIn';

const PASSWORD = 'correct horse battery';
const PHONE = { width: 390, height: 844 };

let server: RunningServer & { issuer: string };
let issuer: string;
let fetchTls: ReturnType<typeof tlsFetch>;
const pixel = { deviceId: 'bob-pixel-0000000001', token: '' };

async function seed(dataDir: string) {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const now = Date.now();
  const tenant = await store.tenants.create('Contoso', now);
  const passwordHash = await hashPassword(PASSWORD);
  for (const [username, role] of [['ada', 'admin'], ['bob', 'user']] as const) {
    const user = await store.users.create({ tenantId: tenant.id, username, email: `${username}@contoso.example`, displayName: username[0]!.toUpperCase() + username.slice(1), role, passwordHash }, now);
    await store.mailboxes.create(user.id, now);
  }
  await store.close();
}

/** The development password grant, as a device app signs in. */
function passwordGrant(username: string, password: string, deviceId: string) {
  return fetchTls(`${issuer}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username, password, device_id: deviceId }).toString(),
  });
}

/** The device's call: its bearer token and X-Device-Id. */
async function deviceCall(method: string, p: string, body?: unknown) {
  const res = await fetchTls(`${issuer}${p}`, {
    method,
    headers: { authorization: `Bearer ${pixel.token}`, 'x-device-id': pixel.deviceId, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, text: await res.text() };
}

beforeAll(async () => {
  const dataDir = tempDir('pigeon-web-admin-access-');
  await seed(dataDir);
  server = await startWithIssuer({ PIGEON_DATA_DIR: dataDir, PIGEON_PASSWORD_GRANT: 'true' });
  issuer = server.issuer;
  fetchTls = tlsFetch(server.cert);
  const grant = await passwordGrant('bob', PASSWORD, pixel.deviceId);
  expect(grant.status).toBe(200);
  pixel.token = ((await grant.json()) as { access_token: string }).access_token;
  const reg = await deviceCall('POST', '/v1/devices', { friendlyName: "Bob's Pixel", deviceType: 'phone', deviceModel: 'Pixel 8', deviceOS: 'Android 15', clientType: 'PigeonMail', clientVersion: '2.1' });
  expect(reg.status).toBe(201);
  expect((await deviceCall('GET', '/v1/folders/sync')).status).toBe(200);
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

const browser = useBrowser();

async function inspect(p: TestPage, name: string) {
  await p.expectAccessible();
  await p.screenshot(name);
}

/** Follows a link of the admin center's main navigation. */
async function nav(p: TestPage, label: string, title = label) {
  await p.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: label, exact: true }).click();
  await heading(p, title);
}

/** Nothing wider than a phone's screen. */
async function fitsWidth(p: TestPage) {
  const widths = (await p.page.evaluate('({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth })')) as { scroll: number; client: number };
  expect(widths.scroll).toBeLessThanOrEqual(widths.client);
}

test('an admin adds an access rule that refuses a device, edits conditional access, runs What If, and creates and disables a user', async () => {
  const p = await browser.newPage();
  await webSignIn(p, { issuer, start: '/admin/access-rules', username: 'ada', password: PASSWORD, enrolMfa: true });
  await heading(p, 'Access rules');
  await p.page.getByText('No rules yet.').waitFor();
  await p.page.evaluate('window.__sameDocument = true');

  // An access rule: blocked devices whose model is "Pixel 8". It is listed, and Bob's Pixel is refused at its next sync.
  await p.page.getByLabel('Device field').selectOption({ label: 'Device model' });
  await p.page.getByLabel('Match', { exact: true }).selectOption({ label: 'is' });
  await p.page.getByLabel('Value', { exact: true }).fill('Pixel 8');
  await p.page.getByLabel('Access state', { exact: true }).selectOption({ label: 'Blocked' });
  await p.page.getByLabel('Description (optional)').fill('Lost batch');
  await p.page.getByRole('button', { name: 'Add rule', exact: true }).click();
  const row = p.page.locator('table.rules tbody tr', { hasText: 'Device model is “Pixel 8”' });
  await row.waitFor();
  expect(await row.textContent()).toContain('blocked');
  await inspect(p, 'access-rules');
  const refused = await deviceCall('GET', '/v1/folders/sync');
  expect(refused.status).toBe(403);
  expect(refused.text).toMatch(/blocked/i);

  // Edited, the rule quarantines instead.
  await p.page.getByRole('button', { name: 'Edit the rule Device model is “Pixel 8”', exact: true }).click();
  await p.page.getByRole('heading', { level: 2, name: 'Edit the rule Device model is “Pixel 8”' }).waitFor();
  await p.page.getByLabel('Access state', { exact: true }).selectOption({ label: 'Quarantined' });
  await p.page.getByRole('button', { name: 'Save rule', exact: true }).click();
  await row.locator('.badge.access-quarantined').waitFor();
  expect((await deviceCall('GET', '/v1/folders/sync')).text).toMatch(/quarantin/i);

  // Deleting it asks first, naming the rule; then the device syncs again.
  await p.page.getByRole('button', { name: 'Delete the rule Device model is “Pixel 8”', exact: true }).click();
  const confirmDelete = p.page.getByRole('dialog', { name: 'Delete the rule Device model is “Pixel 8”?' });
  await confirmDelete.waitFor();
  await inspect(p, 'access-rule-delete-confirmation');
  await confirmDelete.getByRole('button', { name: 'Delete rule', exact: true }).click();
  await p.page.getByText('No rules yet.').waitFor();
  expect((await deviceCall('GET', '/v1/folders/sync')).status).toBe(200);

  // The default decides devices no rule matches.
  await p.page.getByLabel('Default access state').selectOption({ label: 'Blocked' });
  await p.page.getByRole('button', { name: 'Save default', exact: true }).click();
  await p.page.getByText('The default access state is now blocked.').waitFor();
  expect((await deviceCall('GET', '/v1/folders/sync')).status).toBe(403);
  await p.page.getByLabel('Default access state').selectOption({ label: 'Allowed' });
  await p.page.getByRole('button', { name: 'Save default', exact: true }).click();
  await p.page.getByText('The default access state is now allowed.').waitFor();
  expect((await deviceCall('GET', '/v1/folders/sync')).status).toBe(200);

  // A conditional-access policy: an invalid document is refused with the API's field errors shown by the form.
  await nav(p, 'Conditional access');
  await p.page.getByRole('link', { name: 'New policy', exact: true }).click();
  await heading(p, 'New policy');
  await p.page.getByLabel('ID', { exact: true }).fill('mfa-everyone');
  await p.page.getByLabel('Name', { exact: true }).fill('Everyone needs MFA');
  await p.page.getByLabel('State', { exact: true }).selectOption('on');
  const editor = p.page.getByLabel('The rest of the policy (JSON)');
  const good = (await editor.inputValue()).trim();
  await editor.fill(good.replace('"mfa"', '"carrierPigeon"'));
  await p.page.getByRole('button', { name: 'Create policy', exact: true }).click();
  const problems = p.page.locator('.form-errors[role="alert"]');
  await problems.waitFor();
  expect(await problems.textContent()).toMatch(/outcome/);
  await inspect(p, 'policy-validation-error');
  await editor.fill(good);
  await p.page.getByRole('button', { name: 'Create policy', exact: true }).click();
  await heading(p, 'Everyone needs MFA');
  expect(new URL(p.page.url()).pathname).toBe('/admin/conditional-access/mfa-everyone');
  await inspect(p, 'policy-detail');

  // What If for Bob without two-step verification: the policy applies and asks for MFA.
  await p.page.getByRole('link', { name: 'What If', exact: true }).first().click();
  await heading(p, 'What If');
  await p.page.getByLabel('User', { exact: true }).selectOption({ label: 'Bob (bob)' });
  await p.page.getByLabel('Two-step verification done').selectOption({ label: 'No' });
  await p.page.getByRole('button', { name: 'Run What If', exact: true }).click();
  await p.page.getByRole('heading', { level: 2, name: 'Decision: Allowed after more sign-in steps' }).waitFor();
  const result = p.page.locator('tr[data-policy="mfa-everyone"]');
  expect(await result.textContent()).toMatch(/Yes.*failure.*unmet: mfa/);
  await inspect(p, 'what-if');

  // Switched to report-only from the list, the policy no longer decides. The state is chosen with the keyboard on
  // the closed select, passing through "Off": nothing is saved until Apply, then exactly one PUT.
  await nav(p, 'Conditional access');
  const writes: string[] = [];
  const onRequest = (r: { method(): string; url(): string }) => {
    if (r.method() !== 'GET' && r.url().includes('/admin/v1/conditional-access/')) writes.push(`${r.method()} ${new URL(r.url()).pathname}`);
  };
  p.page.on('request', onRequest);
  const stateSelect = p.page.getByLabel('State of Everyone needs MFA', { exact: true });
  const apply = p.page.getByRole('button', { name: 'Apply the state of Everyone needs MFA', exact: true });
  expect(await apply.isDisabled()).toBe(true);
  await stateSelect.focus();
  for (const key of ['ArrowDown', 'ArrowDown', 'ArrowUp']) await p.page.keyboard.press(key);
  expect(await stateSelect.inputValue()).toBe('reportOnly');
  await p.page.locator('button[aria-label="Apply the state of Everyone needs MFA"]:not([disabled])').waitFor();
  // The server still has it on; a request the key presses had started would have been seen before this one's.
  const unsaved = (await p.page.evaluate("fetch('/admin/v1/conditional-access/policies/mfa-everyone').then((r) => r.json())")) as { state: string };
  expect(unsaved.state).toBe('on');
  expect(writes).toEqual([]);
  await apply.click();
  await p.page.getByText('Everyone needs MFA is now report-only.').waitFor();
  await p.page.locator('button[aria-label="Apply the state of Everyone needs MFA"][disabled]').waitFor();
  expect(writes).toEqual(['PUT /admin/v1/conditional-access/policies/mfa-everyone']);
  p.page.off('request', onRequest);
  await inspect(p, 'policies');
  await nav(p, 'What If');
  await p.page.getByLabel('User', { exact: true }).selectOption({ label: 'Bob (bob)' });
  await p.page.getByRole('button', { name: 'Run What If', exact: true }).click();
  await p.page.getByRole('heading', { level: 2, name: 'Decision: Allowed' }).waitFor();
  expect(await p.page.locator('tr[data-policy="mfa-everyone"]').textContent()).toContain('reportOnlyFailure');

  // Users: find one, create one (a bad username is refused next to the form), disable it, reset its password.
  await nav(p, 'Users');
  await p.page.locator('table.users tbody tr').nth(1).waitFor();
  await p.page.getByLabel('Search users').fill('bob');
  await p.page.getByText('Showing 1–1 of 1 users').waitFor();
  await inspect(p, 'users');
  await p.page.getByRole('link', { name: 'New user', exact: true }).click();
  await heading(p, 'New user');
  await p.page.getByLabel('Username').fill('dave smith!');
  await p.page.getByLabel('Display name (optional)').fill('Dave');
  await p.page.getByLabel('Initial password (optional)').fill('a long first password');
  await p.page.getByRole('button', { name: 'Create user', exact: true }).click();
  await p.page.locator('.form-errors[role="alert"]', { hasText: 'username' }).waitFor();
  expect(await p.page.getByLabel('Username').getAttribute('aria-invalid')).toBe('true');
  await inspect(p, 'new-user-error');
  await p.page.getByLabel('Username').fill('dave');
  await p.page.getByRole('button', { name: 'Create user', exact: true }).click();
  await heading(p, 'Dave');
  expect((await passwordGrant('dave', 'a long first password', 'dave-phone-000000001')).status).toBe(200);

  await p.page.getByRole('button', { name: 'Disable', exact: true }).click();
  const confirmDisable = p.page.getByRole('dialog', { name: 'Disable Dave?' });
  await confirmDisable.waitFor();
  await inspect(p, 'user-disable-confirmation');
  await confirmDisable.getByRole('button', { name: 'Disable: Dave', exact: true }).click();
  await p.page.locator('[data-field="status"]', { hasText: 'disabled' }).waitFor();
  expect((await passwordGrant('dave', 'a long first password', 'dave-phone-000000001')).status).not.toBe(200);

  await p.page.getByRole('button', { name: 'Reset password', exact: true }).click();
  await p.page.getByRole('dialog', { name: 'Reset the password of Dave?' }).getByRole('button', { name: 'Reset password: Dave', exact: true }).click();
  const oneTime = p.page.locator('[data-field="password"]');
  await oneTime.waitFor();
  expect(((await oneTime.textContent()) ?? '').length).toBeGreaterThanOrEqual(8);
  await inspect(p, 'user-detail');
  expect(await p.page.evaluate('window.__sameDocument')).toBe(true); // every step above without a reload

  // Her own account (known from GET /web/session): marked in the list, and the actions the API refuses on it are
  // not offered — focusable but inert, described by the reason shown next to them.
  await nav(p, 'Users');
  const own = p.page.locator('table.users tbody tr', { hasText: '(you)' });
  await own.waitFor();
  expect(await own.locator('td[data-label="Username"]').textContent()).toBe('ada');
  await own.getByRole('link', { name: 'Ada', exact: true }).click();
  await heading(p, 'Ada');
  for (const name of ['Disable', 'Reset password', 'Revoke sessions', 'Reset two-step verification']) {
    const action = p.page.getByRole('button', { name, exact: true });
    expect(await action.getAttribute('aria-disabled')).toBe('true');
    const describedBy = (await action.getAttribute('aria-describedby')) ?? '';
    expect(await p.page.locator(`#${describedBy}`).textContent()).toMatch(/your own account\. You cannot disable it, reset its password, revoke its sessions or reset its two-step verification/);
  }
  const ownWrites: string[] = [];
  const onOwnRequest = (r: { method(): string; url(): string }) => void (r.method() !== 'GET' && ownWrites.push(r.url()));
  p.page.on('request', onOwnRequest);
  // Reached and pressed from the keyboard, it does nothing.
  await p.page.getByRole('button', { name: 'Disable', exact: true }).focus();
  expect(await p.page.evaluate('document.activeElement.dataset.action')).toBe('disable');
  await p.page.keyboard.press('Enter');
  await p.page.evaluate("fetch('/web/session').then((r) => r.status)"); // a round trip after the key press's effects
  expect(await p.page.getByRole('dialog').count()).toBe(0);
  expect(ownWrites).toEqual([]);
  p.page.off('request', onOwnRequest);
  await inspect(p, 'user-own-account');

  // An app protection policy from the template, then deleted after a confirmation naming it.
  await nav(p, 'App protection');
  await p.page.getByRole('link', { name: 'New app protection policy', exact: true }).click();
  await heading(p, 'New app protection policy');
  await p.page.getByLabel('ID', { exact: true }).fill('guard-mail');
  await p.page.getByLabel('Name', { exact: true }).fill('Guard the mail');
  await inspect(p, 'app-protection-new');
  await p.page.getByRole('button', { name: 'Create app protection policy', exact: true }).click();
  await heading(p, 'Guard the mail');
  await p.page.getByRole('button', { name: 'Delete', exact: true }).click();
  const confirmPolicy = p.page.getByRole('dialog', { name: 'Delete Guard the mail?' });
  await confirmPolicy.waitFor();
  await confirmPolicy.getByRole('button', { name: 'Delete Guard the mail', exact: true }).click();
  await heading(p, 'App protection');
  await p.page.getByText('None yet.').waitFor();
  await inspect(p, 'app-protection');

  // A named location, through the access configuration's tabs.
  await p.page.getByRole('navigation', { name: 'Access configuration' }).getByRole('link', { name: 'Named locations', exact: true }).click();
  await heading(p, 'Named locations');
  await p.page.getByRole('link', { name: 'New named location', exact: true }).click();
  await heading(p, 'New named location');
  await p.page.getByLabel('ID', { exact: true }).fill('head-office');
  await p.page.getByLabel('Name', { exact: true }).fill('Head office');
  await p.page.getByRole('button', { name: 'Create named location', exact: true }).click();
  await heading(p, 'Head office');
  await p.page.getByRole('link', { name: '← Named locations', exact: true }).click();
  await p.page.locator('tr[data-item="head-office"]', { hasText: 'Trusted; 1 range' }).waitFor();
  await inspect(p, 'named-locations');

  // On a phone's screen: one card per user, nothing scrolls sideways.
  await p.page.setViewportSize(PHONE);
  await nav(p, 'Users');
  await p.page.locator('table.users tbody tr').nth(2).waitFor();
  await fitsWidth(p);
  await p.expectAccessible();
  await p.screenshot('users-390');
  // The policy list's state select and its Apply button, in a card.
  await nav(p, 'Conditional access');
  await p.page.locator('tr[data-item="mfa-everyone"]').waitFor();
  await fitsWidth(p);
  await p.expectAccessible();
  await p.screenshot('policies-390');
  await p.expectNoCspViolations();
}, 180_000);
