/**
 * The web pages' token calls under the token endpoint's per-address rate limit, against the real server over HTTPS:
 * the server exchanges the code and refreshes for the browser in process (server/web/tokenClient.ts), and those
 * calls spend the same budget as calls to /oauth2/token from the browser's address. With a budget of 4 and access
 * tokens of 60 s (so every request of a session refreshes it): a sign-in and three refreshes spend it; then a direct
 * token call from that address is refused, a sign-in finishing now is told to wait (its code exchange refused), a new
 * one is told at once, a session whose access token still works keeps working (it is not refreshed, and not ended),
 * one whose access token has expired gets 429 with its cookie kept, and signing out still works.
 */
import fs from 'node:fs';
import path from 'node:path';
import { storeWithUser, type RunningServer } from '../helpers/server';
import { startWithIssuer } from '../helpers/ports';
import { tempDir } from '../helpers/testApp';
import { FormClient, formActions, hiddenField, type PageResponse } from '../helpers/oidcClient';
import { createSealer, SESSION_COOKIE, type WebSession } from '../../server/web/session';

const PASSWORD = 'correct horse battery';
const BUDGET = 4;

let server: RunningServer & { issuer: string };
let issuer: string;

beforeAll(async () => {
  const dataDir = tempDir('pigeon-web-limit-');
  await storeWithUser(dataDir, 'alice', PASSWORD);
  server = await startWithIssuer({ PIGEON_DATA_DIR: dataDir, PIGEON_TOKEN_REQUESTS_PER_IP: String(BUDGET), PIGEON_ACCESS_TOKEN_TTL: '60' });
  issuer = server.issuer;
}, 90_000);

afterAll(async () => {
  await server?.stop();
});

/** Walks /web/login and the sign-in pages (two-step enrolment declined); answers the redirect to /web/callback. */
async function toCallback(browser: FormClient): Promise<string> {
  let page = await browser.follow(await browser.get('/web/login?returnTo=/account/devices'));
  page = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf'), username: 'alice', password: PASSWORD });
  if (page.text.includes('Set up two-step verification')) page = await browser.post(formActions(page.text)[1]!, { csrf: hiddenField(page.text, 'csrf') });
  page = await browser.follow(page);
  expect(page.text).toContain('Allow access');
  let res: PageResponse = await browser.post(formActions(page.text)[0]!, { csrf: hiddenField(page.text, 'csrf') });
  for (let i = 0; i < 10 && res.location && !new URL(res.location, issuer).pathname.startsWith('/web/callback'); i++) res = await browser.get(res.location);
  expect(res.location).toMatch(/\/web\/callback\?/);
  return res.location!;
}

const sessionCookieSet = (res: PageResponse) => ((res.headers['set-cookie'] as string[] | undefined) ?? []).filter((c) => c.startsWith(`${SESSION_COOKIE}=`));

test('sign-ins and refreshes through the pages spend the token endpoint budget of their address', async () => {
  // Walked to the callback before the budget is spent; its code exchange comes after.
  const late = new FormClient(server.cert, issuer);
  const lateCallback = await toCallback(late);

  // A sign-in (1: the code exchange), landing on My devices (2: a refresh), then two more refreshes (3, 4).
  const alice = new FormClient(server.cert, issuer);
  const landed = await alice.follow(await alice.get(await toCallback(alice)));
  expect(landed.status).toBe(200);
  expect(landed.text).toContain('/web/assets/app.mjs');
  for (let i = 0; i < 2; i++) {
    const res = await alice.get('/web/session');
    expect(res.status).toBe(200);
    expect(sessionCookieSet(res)).toHaveLength(1); // refreshed: a new cookie
  }

  // Spent: a direct call from the same address is refused, as if the pages' calls had been made directly.
  const direct = await alice.request('POST', '/oauth2/token', { grant_type: 'refresh_token', refresh_token: 'not-a-token', client_id: 'pigeon-app' });
  expect(direct.status).toBe(429);
  expect(direct.headers['retry-after']).toMatch(/^\d+$/);

  // The session's access token still works: it is used as it is, neither refreshed nor ended.
  const kept = await alice.get('/web/session');
  expect(kept.status).toBe(200);
  expect(JSON.parse(kept.text).user.username).toBe('alice');
  expect(sessionCookieSet(kept)).toEqual([]);
  expect((await alice.get('/account/devices')).status).toBe(200);

  // A sign-in finishing now: its code exchange is refused, and the page says why and when to come back.
  const refused = await late.get(lateCallback);
  expect(refused.status).toBe(429);
  expect(refused.headers['retry-after']).toMatch(/^\d+$/);
  expect(refused.text).toContain('Too many sign-ins and session refreshes came from your network address. Try again in');
  expect(refused.headers['content-security-policy']).toContain("script-src 'self'");
  // A sign-in starting now is told before the sign-in pages.
  const early = await new FormClient(server.cert, issuer).get('/web/login?returnTo=/account/devices');
  expect(early.status).toBe(429);
  expect(early.text).toContain('Too many sign-ins');

  // A session whose access token has expired: 429, and its cookie is kept for when the budget is back.
  const secret = Buffer.from(fs.readFileSync(path.join(server.dataDir, 'keys', 'server-secret'), 'utf8').trim(), 'hex');
  const sealer = createSealer(secret);
  const current = (await sealer.open<WebSession>(alice.cookies.get(SESSION_COOKIE)!))!;
  const expired = new FormClient(server.cert, issuer);
  expired.cookies.set(SESSION_COOKIE, await sealer.seal({ ...current, expiresAt: Date.now() - 1000 }));
  const waiting = await expired.get('/web/session');
  expect(waiting.status).toBe(429);
  expect(waiting.headers['content-type']).toMatch(/problem\+json/);
  expect(sessionCookieSet(waiting)).toEqual([]);
  const page = await expired.get('/account/devices');
  expect(page.status).toBe(429);
  expect(page.text).toContain('Too many sign-ins');
  expect(sessionCookieSet(page)).toEqual([]);

  // Signing out still works, and ends the sign-in: the other copy of the session is refused too.
  const out = await expired.post('/web/logout', {}, { 'x-csrf-token': current.csrf });
  expect(out.status).toBe(204);
  expect((await alice.get('/web/session')).status).toBe(401);
}, 120_000);
