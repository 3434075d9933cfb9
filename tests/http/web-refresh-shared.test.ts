/**
 * The web session's refresh shared by every process (server/web/sessions.ts): two apps over the same data and the
 * same server secret stand for two worker processes over one SQLite file (PIGEON_WORKERS) or two nodes over one
 * PostgreSQL database. Access tokens live 60 s, the refresh margin, so every call the cookie authenticates refreshes
 * first. Calls carrying the same cookie to both apps at once must share one refresh: the refresh token rotates, and
 * presenting it a second time counts as theft and ends the whole sign-in. Without the store's coordination the
 * second app presents the rotated token and this test fails.
 *
 * The sign-in is the real one (GET /web/login, the sign-in pages, /web/callback), walked without a browser.
 *
 * Then the edges, with sessions.ts over two stores of one SQLite file and a stand-in provider: a holder that died
 * (its lease lapses, a waiter takes the refresh over), a failed refresh (the waiter stops waiting: no session), and a
 * refresh refused by the address's token budget before it reached the provider (no failure remembered).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { createApp } from '../../server/app';
import { loadConfig } from '../../server/config';
import { ManualClock } from '../../server/clock';
import { loadKeys } from '../../server/auth/keys';
import { createLogger } from '../../server/logger';
import { createUserAdmin } from '../../server/admin/users';
import { openSqliteStore } from '../../server/store/sqlite';
import { openPostgresStore } from '../../server/store/postgres';
import type { Store } from '../../server/store/types';
import { createSealer, LOGIN_COOKIE, SESSION_COOKIE, type WebSession } from '../../server/web/session';
import { createWebSessions } from '../../server/web/sessions';
import type { AccessTokens } from '../../server/auth/accessTokens';
import type { TokenAnswer } from '../../server/web/tokenClient';
import type { Request, Response } from 'express';
import { STORE_BACKENDS, type StoreBackend } from '../helpers/storeBackends';
import { freshDatabase } from '../helpers/postgres';
import { tempDir } from '../helpers/testApp';

const ISSUER = 'https://web-refresh.pigeon.test';
const USER = { username: 'wendy', password: 'wendy-web-refresh-password-1' };

type App = ReturnType<typeof createApp>['app'];

interface Apps {
  apps: [App, App];
  clock: ManualClock;
  serverSecret: Buffer;
  close(): Promise<void>;
}

/** Two apps over one store's data (two connections or pools), one clock, one key set: two processes of one server. */
async function openApps(backend: StoreBackend): Promise<Apps> {
  const dir = tempDir('pigeon-web-refresh-');
  const database = backend === 'postgres' ? await freshDatabase('pigeon_web_refresh') : undefined;
  const open = async (node: string): Promise<Store> =>
    database ? openPostgresStore(database.url, { nodeId: node, poolSize: 4 }) : openSqliteStore(path.join(dir, 'pigeon.db'));
  const stores = [await open('web-a'), await open('web-b')] as const;
  const config = loadConfig({ PIGEON_DATA_DIR: dir, PIGEON_DEMO: 'false', PIGEON_ISSUER: ISSUER, PIGEON_ACCESS_TOKEN_TTL: '60' });
  const first = stores[0];
  const keys = await loadKeys(config, first.backend === 'postgres' ? (first as Awaited<ReturnType<typeof openPostgresStore>>).secrets : undefined);
  // The provider stamps tokens with the real time; the services' clock follows it (see `tick`).
  const clock = new ManualClock(Date.now());
  const log = createLogger({ logLevel: 'silent', logPretty: false });
  const apps = stores.map((store) => createApp({ config, store, keys, clock, log, lag: { lagMs: () => 0, stop() {} } }).app) as [App, App];
  await createUserAdmin(first, clock).addUser({ ...USER, role: 'user', email: 'wendy@web-refresh.test' });
  return {
    apps,
    clock,
    serverSecret: keys.serverSecret,
    async close() {
      for (const s of stores) await s.close();
      await database?.drop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An absolute URL of the server's as a path on the app under test. */
const local = (url: string) => {
  const u = new URL(url, ISSUER);
  return u.pathname + u.search;
};
const hiddenField = (html: string, name: string) => new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1] ?? '';
const formActions = (html: string) => [...html.matchAll(/<form method="post" action="([^"]*)"/g)].map((m) => m[1]!.replace(/&amp;/g, '&'));

/** The value a response sets for `name` ('' when it clears it), or undefined when it does not set it. */
function cookieSet(res: request.Response, name: string): string | undefined {
  const lines = ([] as string[]).concat(res.headers['set-cookie'] ?? []);
  const line = lines.find((l) => l.startsWith(`${name}=`));
  return line === undefined ? undefined : line.slice(name.length + 1).split(';')[0]!;
}

/** Signs in through the web pages (password, "Not now" to two-step enrolment, Allow): the session cookie. */
async function webSignIn(app: App): Promise<string> {
  const login = await request(app).get('/web/login?returnTo=/account/devices');
  expect(login.status).toBe(302);
  const loginCookie = cookieSet(login, LOGIN_COOKIE)!;
  const browser = request.agent(app);
  let res = await browser.get(local(String(login.headers.location)));
  for (let step = 0; step < 12 && !res.headers.location?.includes('/web/callback'); step++) {
    if (res.status === 303 || res.status === 302) {
      res = await browser.get(local(String(res.headers.location)));
      continue;
    }
    const title = /<h1>([^<]*)<\/h1>/.exec(res.text ?? '')?.[1];
    const csrf = hiddenField(res.text, 'csrf');
    const actions = formActions(res.text);
    if (title === 'Sign in') res = await browser.post(actions[0]!).type('form').send({ csrf, ...USER });
    else if (title === 'Set up two-step verification') res = await browser.post(actions[1]!).type('form').send({ csrf }); // Not now
    else if (title === 'Allow access') res = await browser.post(actions[0]!).type('form').send({ csrf });
    else throw new Error(`unexpected sign-in page ${res.status} ${title}: ${res.text?.slice(0, 500)}`);
  }
  const callback = await request(app).get(local(String(res.headers.location))).set('Cookie', `${LOGIN_COOKIE}=${loginCookie}`);
  expect(callback.status).toBe(303);
  return cookieSet(callback, SESSION_COOKIE)!;
}

const devices = (app: App, cookie: string) => request(app).get('/account/v1/devices').set('Cookie', `${SESSION_COOKIE}=${cookie}`);

describe.each(STORE_BACKENDS)('%s: a web session refreshed by two processes at once', (backend) => {
  let t: Apps;
  const open = (cookie: string | undefined) => createSealer(t.serverSecret).open<WebSession>(cookie ?? '');
  /** The services' clock to the real time (plus a second): a 60 s access token is then within the refresh margin. */
  const tick = () => t.clock.set(Date.now() + 1000);

  beforeAll(async () => {
    t = await openApps(backend);
  }, 30_000);
  afterAll(() => t?.close());

  test('both answer the same new session, which keeps working; signing out in one ends it in the other', async () => {
    const [a, b] = t.apps;
    tick();
    const first = await webSignIn(a);
    const signedIn = (await open(first))!;

    // The same expiring cookie at both processes at once (the page polls while the user acts).
    tick();
    expect(signedIn.expiresAt - t.clock.now()).toBeLessThan(60_000);
    const [atA, atB] = await Promise.all([devices(a, first), devices(b, first)]);
    expect([atA.status, atB.status]).toEqual([200, 200]);
    const [fromA, fromB] = [await open(cookieSet(atA, SESSION_COOKIE)), await open(cookieSet(atB, SESSION_COOKIE))];
    expect(fromA?.refreshToken).toBeDefined();
    expect(fromA!.refreshToken).not.toBe(signedIn.refreshToken);
    expect(fromB).toEqual(fromA); // one refresh: the same tokens and expiries
    const second = cookieSet(atA, SESSION_COOKIE)!;

    // A call still carrying the old cookie gets the remembered result, at either process.
    tick();
    const late = await devices(b, first);
    expect(late.status).toBe(200);
    expect(await open(cookieSet(late, SESSION_COOKIE))).toEqual(fromA);

    // The sign-in survived: the new session refreshes again, at the other process.
    tick();
    const again = await devices(b, second);
    expect(again.status).toBe(200);
    const third = cookieSet(again, SESSION_COOKIE)!;
    const thirdSession = (await open(third))!;
    expect(thirdSession.refreshToken).not.toBe(fromA!.refreshToken);
    expect((await request(a).get('/web/session').set('Cookie', `${SESSION_COOKIE}=${third}`)).status).toBe(200);

    // Signing out at one process (its own call refreshes once more first): the other no longer hands the ended
    // session, or the one before it, to a copy of an older cookie.
    tick();
    const logout = await request(a)
      .post('/web/logout')
      .set('Cookie', `${SESSION_COOKIE}=${third}`)
      .set('Origin', ISSUER)
      .set('X-CSRF-Token', thirdSession.csrf);
    expect(logout.status).toBe(204);
    for (const older of [third, second]) {
      const stale = await devices(b, older);
      expect(stale.status).toBe(401);
      expect(stale.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(cookieSet(stale, SESSION_COOKIE)).toBe(''); // cleared, not rewritten with a session of the ended sign-in
    }
  }, 60_000);
});

describe('sessions.ts over two stores of one file, with a stand-in provider', () => {
  const NOW = Date.UTC(2026, 5, 1);
  const secret = Buffer.alloc(32, 7);
  let dir: string;
  let stores: Store[];
  let clock: ManualClock;
  /** What the stand-in provider answers next, and the refresh tokens presented to it. */
  let answer: () => TokenAnswer;
  let presented: string[];

  beforeEach(() => {
    dir = tempDir('pigeon-web-refresh-edges-');
    stores = [openSqliteStore(path.join(dir, 'pigeon.db')), openSqliteStore(path.join(dir, 'pigeon.db'))];
    clock = new ManualClock(NOW);
    presented = [];
    answer = () => ({ status: 200, body: { access_token: `access-${presented.length}`, refresh_token: `refresh-${presented.length}` } });
  });
  afterEach(async () => {
    for (const s of stores) await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** One process's sessions: access tokens "verify" to an expiry 10 minutes from the clock. */
  const sessionsOf = (store: Store) =>
    createWebSessions({
      serverSecret: secret,
      accessTokens: { verify: async () => ({ exp: Math.floor((clock.now() + 600_000) / 1000), sub: 'user-1', role: 'user' }) } as unknown as AccessTokens,
      post: async (_req, _path, form) => {
        presented.push(form.refresh_token!);
        return answer();
      },
      now: () => clock.now(),
      refreshTokenTtlSeconds: 3600,
      refreshes: store.webRefresh,
    });
  const expiring = (): WebSession => ({ accessToken: 'access-0', refreshToken: 'refresh-0', expiresAt: clock.now() + 30_000, refreshExpiresAt: clock.now() + 3_600_000, userId: 'user-1', role: 'user', csrf: 'c' });
  const call = async (sessions: ReturnType<typeof sessionsOf>, session: WebSession) => {
    const req = { headers: { cookie: `${SESSION_COOKIE}=${await sessions.sealer.seal(session)}` } } as Request;
    const set: string[] = [];
    const res = { append: (_name: string, value: string) => void set.push(value) } as unknown as Response;
    return { session: await sessions.current(req, res), cookie: set[0] };
  };
  const keyOf = (token: string) => crypto.createHash('sha256').update(token).digest('base64url');

  test('a waiter takes over the refresh of a holder that died once its lease lapses', async () => {
    // "Another process" claimed the refresh and died before finishing it.
    expect(await stores[1]!.webRefresh.claim(keyOf('refresh-0'), clock.now(), 10_000)).toBe('claimed');
    const waiting = call(sessionsOf(stores[0]!), expiring());
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(presented).toEqual([]); // still waiting for the holder
    clock.advance(10_000);
    const { session } = await waiting;
    expect(presented).toEqual(['refresh-0']);
    expect(session?.refreshToken).toBe('refresh-1');
  });

  test('a failed refresh is remembered: a waiter in another process stops waiting and has no session', async () => {
    answer = () => ({ status: 400, body: { error: 'invalid_grant' } });
    const [a, b] = [sessionsOf(stores[0]!), sessionsOf(stores[1]!)];
    const [atA, atB] = await Promise.all([call(a, expiring()), call(b, expiring())]);
    expect(presented).toEqual(['refresh-0']);
    expect([atA.session, atB.session]).toEqual([undefined, undefined]);
    expect([atA.cookie, atB.cookie].map((c) => c?.startsWith(`${SESSION_COOKIE}=;`))).toEqual([true, true]);
  });

  test('a refresh refused by the token budget is no failure: the session goes on, and a later call refreshes', async () => {
    answer = () => ({ status: 429, body: { error: 'rate_limited' }, retryAfter: 7 } as TokenAnswer);
    const sessions = sessionsOf(stores[0]!);
    const held = expiring();
    expect((await call(sessions, held)).session).toEqual(held);
    // Expired meanwhile: 429 with the wait, not a signed-out session.
    await expect(call(sessions, { ...held, expiresAt: clock.now() - 1 })).rejects.toMatchObject({ status: 429, headers: { 'Retry-After': '7' } });
    answer = () => ({ status: 200, body: { access_token: 'access-new', refresh_token: 'refresh-new' } });
    expect((await call(sessionsOf(stores[1]!), held)).session?.refreshToken).toBe('refresh-new');
    expect(presented).toEqual(['refresh-0', 'refresh-0', 'refresh-0']);
  });
});
