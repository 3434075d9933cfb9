/**
 * The fast lane (server/http/fastLane.ts) answers exactly as the Express chain does. Two apps over one store, keys
 * and clock — one with the lane, one without (PIGEON_FAST_LANE=false) — each behind the production HTTPS listener
 * with the production listener composition (`withFastLane`, as server/main.ts builds it), get the same requests:
 * status, every header (names, values and order; Date's value aside) and the body bytes must be identical, and the
 * lane must have taken exactly the requests it is meant to take. Then the log lines and the metrics of the two
 * apps must be the same too.
 */
import https from 'node:https';
import zlib from 'node:zlib';
import request from 'supertest';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import { devCertificate } from '../helpers/server';
import { createApp } from '../../server/app';
import type { Config } from '../../server/config';
import { createLogger } from '../../server/logger';
import { withFastLane } from '../../server/http/fastLane';
import { listenHttps, type HttpsHandle } from '../../server/httpsServer';

const PW = 'password-for-tests';

interface Side {
  built: ReturnType<typeof createApp>;
  logs: string[];
  https: HttpsHandle;
}

let ctx: TestContext;
let tls: { cert: string; key: string };
let lagMs = 0;
const sides: Side[] = [];

async function side(config: Partial<Config>): Promise<Side> {
  const logs: string[] = [];
  const log = createLogger({ logLevel: 'info', logPretty: false }, { write: (line: string) => void logs.push(line) });
  const built = createApp({ config: { ...ctx.config, ...config }, store: ctx.store, keys: ctx.keys, clock: ctx.clock, log, lag: { lagMs: () => lagMs, stop() {} } });
  const server = await listenHttps(withFastLane(built.app, built.fastLane), tls, { ...ctx.config, host: '127.0.0.1', port: 0 });
  const s = { built, logs, https: server };
  sides.push(s);
  return s;
}

interface Raw {
  status: number;
  headers: string[];
  body: Buffer;
}

interface Req {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

function send(s: Side, r: Req): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: s.https.port, method: r.method ?? 'GET', path: r.path, headers: r.headers, ca: tls.cert, servername: 'localhost', agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.rawHeaders, body: Buffer.concat(chunks) }));
      },
    );
    req.once('error', reject);
    req.end(r.body);
  });
}

/** Raw headers as `Name: value` lines in order; Date's value (and a generated request id) masked. */
function normalized(r: Raw): { status: number; headers: string[]; body: string } {
  const headers: string[] = [];
  let id: string | undefined;
  for (let i = 0; i < r.headers.length; i += 2) {
    const name = r.headers[i]!;
    let value = r.headers[i + 1]!;
    if (name.toLowerCase() === 'date') value = '<date>';
    if (name.toLowerCase() === 'x-request-id' && !value.startsWith('parity-')) {
      id = value;
      value = '<generated>';
    }
    headers.push(`${name}: ${value}`);
  }
  let body = r.body.toString('base64');
  if (id) body = Buffer.from(r.body.toString('latin1').split(id).join('<generated>'), 'latin1').toString('base64');
  return { status: r.status, headers, body };
}

const header = (r: Raw, name: string) => {
  for (let i = 0; i < r.headers.length; i += 2) if (r.headers[i]!.toLowerCase() === name) return r.headers[i + 1];
  return undefined;
};

/** Sends one request to both apps and checks they answered the same; answers the fast side's response. */
async function parity(r: Req, taken: boolean, fast: Side, slow: Side): Promise<Raw> {
  const before = fast.built.fastLane!.served;
  const a = await send(slow, r);
  const b = await send(fast, r);
  expect(fast.built.fastLane!.served - before).toBe(taken ? 1 : 0);
  expect(normalized(b)).toEqual(normalized(a));
  return b;
}

// State the cases read, set up in beforeAll.
const st = {
  device: {} as Record<string, string>,
  deviceId: 'parity-device-000000001',
  unbound: '',
  inboxId: '',
  pollToken: '',
  folderToken: '',
  blocked: {} as Record<string, string>,
  blockedId: 'parity-blocked-00000001',
  wiped: {} as Record<string, string>,
  quarantined: {} as Record<string, string>,
  resetToken: '',
  reset: {} as Record<string, string>,
};
let fast: Side;
let slow: Side;
let n = 0;
const rid = () => ({ 'X-Request-Id': `parity-${++n}` });

beforeAll(async () => {
  ctx = await buildTestApp();
  await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
  await ctx.users.addUser({ username: 'root', password: PW, role: 'admin' });
  const cert = await devCertificate(ctx.dir);
  tls = { cert: cert.cert, key: require('node:fs').readFileSync(cert.keyFile, 'utf8') };
  slow = await side({ fastLane: false });
  fast = await side({ fastLane: true });
  expect(slow.built.fastLane).toBeUndefined();

  const admin = `Bearer ${(await signIn(ctx, 'root', PW)).access_token}`;
  const register = async (deviceId: string) => {
    const t = await signIn(ctx, 'alice', PW, { device_id: deviceId });
    const h = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
    const reg = await request(ctx.app).post('/v1/devices').set(h).send({ friendlyName: 'phone' });
    expect(reg.status).toBe(201);
    return { h, id: reg.body.id as string };
  };
  const act = async (id: string, action: string) => {
    await request(ctx.app).post(`/admin/v1/devices/${id}/${action}`).set('Authorization', admin).expect(200);
  };

  const alice = (await ctx.store.users.byUsername('alice'))!;
  const inbox = (await ctx.store.folders.byKind(alice.id, 'inbox'))!;
  st.inboxId = inbox.id;
  for (let i = 0; i < 40; i++) {
    await ctx.store.items.create(
      { userId: alice.id, folderId: inbox.id, type: 'email', receivedAt: ctx.clock.now() - i * 60_000, subject: `Quarterly figures, part ${i}`, from: { name: 'Sender', address: 's@example.test' }, preview: 'The figures for the quarter are attached; see the second sheet.' },
      ctx.clock.now(),
    );
  }

  st.device = (await register(st.deviceId)).h;
  const sync = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(st.device).expect(200);
  st.pollToken = sync.body.token;
  st.folderToken = (await request(ctx.app).get('/v1/folders/sync').set(st.device).expect(200)).body.token;
  st.unbound = `Bearer ${(await signIn(ctx, 'alice', PW)).access_token}`;

  const blocked = await register(st.blockedId);
  await act(blocked.id, 'block');
  st.blocked = blocked.h;
  const wiped = await register('parity-wiped-000000001');
  await act(wiped.id, 'wipe');
  st.wiped = wiped.h;
  const quarantined = await register('parity-quarantine-0001');
  await act(quarantined.id, 'quarantine');
  st.quarantined = quarantined.h;
  const reset = await register('parity-reset-000000001');
  st.reset = reset.h;
  st.resetToken = (await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync`).set(reset.h).expect(200)).body.token;
  await act(reset.id, 'resync');
});

afterAll(async () => {
  for (const s of sides) await s.https.drain(1000);
  await ctx?.close();
});

const items = () => `/v1/folders/${st.inboxId}/items/sync`;
const poll = () => `${items()}?token=${encodeURIComponent(st.pollToken)}`;

interface Case {
  name: string;
  req: () => Req;
  status: number;
  /** Whether the fast lane takes it (false: it declines and Express answers). */
  taken: boolean;
  /** The expected Content-Encoding, when compressed. */
  encoding?: string;
}

const cases: Case[] = [
  { name: 'folder sync', req: () => ({ path: '/v1/folders/sync', headers: { ...st.device, ...rid() } }), status: 200, taken: true },
  { name: 'folder sync, no change', req: () => ({ path: `/v1/folders/sync?token=${encodeURIComponent(st.folderToken)}`, headers: { ...st.device, ...rid() } }), status: 200, taken: true },
  { name: 'item sync, initial window, identity', req: () => ({ path: items(), headers: { ...st.device, ...rid() } }), status: 200, taken: true },
  { name: 'item sync, initial window, gzip', req: () => ({ path: items(), headers: { ...st.device, ...rid(), 'Accept-Encoding': 'gzip' } }), status: 200, taken: true, encoding: 'gzip' },
  { name: 'item sync, initial window, br', req: () => ({ path: items(), headers: { ...st.device, ...rid(), 'Accept-Encoding': 'br' } }), status: 200, taken: true, encoding: 'br' },
  { name: 'item sync, initial window, deflate', req: () => ({ path: items(), headers: { ...st.device, ...rid(), 'Accept-Encoding': 'deflate' } }), status: 200, taken: true, encoding: 'deflate' },
  { name: 'item sync, initial window, browser-like list', req: () => ({ path: items(), headers: { ...st.device, ...rid(), 'Accept-Encoding': 'gzip, deflate, br, zstd' } }), status: 200, taken: true, encoding: 'br' },
  { name: 'item sync, initial window, gzip refused', req: () => ({ path: items(), headers: { ...st.device, ...rid(), 'Accept-Encoding': 'gzip;q=0, identity' } }), status: 200, taken: true },
  { name: 'item sync, initial window, explicit identity', req: () => ({ path: items(), headers: { ...st.device, ...rid(), 'Accept-Encoding': 'identity' } }), status: 200, taken: true },
  { name: 'item sync, small window below the threshold', req: () => ({ path: `${items()}?maxChanges=1`, headers: { ...st.device, ...rid(), 'Accept-Encoding': 'gzip' } }), status: 200, taken: true },
  { name: 'no-change poll', req: () => ({ path: poll(), headers: { ...st.device, ...rid() } }), status: 200, taken: true },
  { name: 'no-change poll, gzip (small: Vary only)', req: () => ({ path: poll(), headers: { ...st.device, ...rid(), 'Accept-Encoding': 'gzip, br' } }), status: 200, taken: true },
  { name: 'no-change poll, generated request id', req: () => ({ path: poll(), headers: { ...st.device } }), status: 200, taken: true },
  { name: 'no-change poll, insane request id', req: () => ({ path: poll(), headers: { ...st.device, 'X-Request-Id': 'not sane!' } }), status: 200, taken: true },
  { name: 'session', req: () => ({ path: '/v1/session', headers: { ...st.device, ...rid(), 'Accept-Encoding': 'gzip' } }), status: 200, taken: true },
  { name: 'session, unbound token, no device', req: () => ({ path: '/v1/session', headers: { Authorization: st.unbound, ...rid() } }), status: 200, taken: true },
  { name: 'session, empty query', req: () => ({ path: '/v1/session?', headers: { ...st.device, ...rid() } }), status: 200, taken: true },
  { name: 'HEAD item sync (large)', req: () => ({ method: 'HEAD', path: items(), headers: { ...st.device, ...rid(), 'Accept-Encoding': 'gzip' } }), status: 200, taken: true },
  { name: 'HEAD session', req: () => ({ method: 'HEAD', path: '/v1/session', headers: { ...st.device, ...rid() } }), status: 200, taken: true },
  { name: 'HEAD 401', req: () => ({ method: 'HEAD', path: '/v1/folders/sync', headers: { ...rid() } }), status: 401, taken: true },
  { name: '401 no token', req: () => ({ path: '/v1/folders/sync', headers: { ...rid(), 'X-Device-Id': st.deviceId } }), status: 401, taken: true },
  { name: '401 bad token', req: () => ({ path: poll(), headers: { ...rid(), Authorization: 'Bearer not.a.token', 'X-Device-Id': st.deviceId } }), status: 401, taken: true },
  { name: '401 not a bearer header', req: () => ({ path: '/v1/session', headers: { ...rid(), Authorization: 'Basic YWxpY2U6cHc=' } }), status: 401, taken: true },
  { name: '401 token in the query', req: () => ({ path: `/v1/session?access_token=${st.device.Authorization!.slice(7)}`, headers: { ...rid() } }), status: 401, taken: true },
  { name: '401 token bound to another device', req: () => ({ path: '/v1/folders/sync', headers: { ...rid(), Authorization: st.device.Authorization!, 'X-Device-Id': 'parity-other-device-0001' } }), status: 401, taken: true },
  { name: '403 deviceNotRegistered (no device)', req: () => ({ path: '/v1/folders/sync', headers: { ...rid(), Authorization: st.unbound } }), status: 403, taken: true },
  { name: '403 deviceNotRegistered (unknown device)', req: () => ({ path: items(), headers: { ...rid(), Authorization: st.unbound, 'X-Device-Id': 'parity-unknown-00000001' } }), status: 403, taken: true },
  { name: '403 deviceBlocked (its ended sign-in)', req: () => ({ path: '/v1/folders/sync', headers: { ...st.blocked, ...rid() } }), status: 403, taken: true },
  { name: '403 deviceBlocked (the gate)', req: () => ({ path: '/v1/folders/sync', headers: { ...rid(), Authorization: st.unbound, 'X-Device-Id': st.blockedId } }), status: 403, taken: true },
  { name: '403 wipeRequested', req: () => ({ path: poll(), headers: { ...st.wiped, ...rid() } }), status: 403, taken: true },
  { name: '403 wipeRequested on the session call', req: () => ({ path: '/v1/session', headers: { ...st.wiped, ...rid() } }), status: 403, taken: true },
  { name: '403 deviceQuarantined', req: () => ({ path: '/v1/folders/sync', headers: { ...st.quarantined, ...rid() } }), status: 403, taken: true },
  { name: '400 bad query', req: () => ({ path: `${items()}?maxChanges=lots`, headers: { ...st.device, ...rid() } }), status: 400, taken: true },
  { name: '400 repeated query parameter', req: () => ({ path: `${items()}?maxChanges=1&maxChanges=2`, headers: { ...st.device, ...rid() } }), status: 400, taken: true },
  { name: '400 bad sync token', req: () => ({ path: `${items()}?token=garbage`, headers: { ...st.device, ...rid() } }), status: 400, taken: true },
  { name: '400 malformed X-Device-Id', req: () => ({ path: '/v1/folders/sync', headers: { ...rid(), Authorization: st.unbound, 'X-Device-Id': 'no good' } }), status: 400, taken: true },
  { name: '404 folderNotFound', req: () => ({ path: '/v1/folders/no-such-folder/items/sync', headers: { ...st.device, ...rid() } }), status: 404, taken: true },
  { name: '404 folderNotFound, escaped param', req: () => ({ path: '/v1/folders/a%2Fb%20c/items/sync', headers: { ...st.device, ...rid() } }), status: 404, taken: true },
  { name: '410 resyncRequired', req: () => ({ path: `${items()}?token=${encodeURIComponent(st.resetToken)}`, headers: { ...st.reset, ...rid() } }), status: 410, taken: true },
  // Declined: Express answers, and the answer is the same.
  { name: 'declined: trailing slash', req: () => ({ path: '/v1/session/', headers: { ...st.device, ...rid() } }), status: 200, taken: false },
  { name: 'declined: other case', req: () => ({ path: '/V1/Folders/Sync', headers: { ...st.device, ...rid() } }), status: 200, taken: false },
  { name: 'declined: POST', req: () => ({ method: 'POST', path: '/v1/folders/sync', headers: { ...st.device, ...rid(), 'Content-Type': 'application/json' }, body: '{}' }), status: 405, taken: false },
  { name: 'declined: a GET with a body', req: () => ({ path: '/v1/folders/sync', headers: { ...st.device, ...rid(), 'Content-Type': 'application/json', 'Content-Length': '2' }, body: '{}' }), status: 200, taken: false },
  { name: 'declined: conditional request', req: () => ({ path: '/v1/session', headers: { ...st.device, ...rid(), 'If-None-Match': '*' } }), status: 304, taken: false },
  { name: 'declined: an escape that is not UTF-8', req: () => ({ path: '/v1/folders/%E0%A4%A/items/sync', headers: { ...st.device, ...rid() } }), status: 400, taken: false },
  { name: 'declined: absolute-form target', req: () => ({ path: 'https://localhost/v1/session', headers: { ...st.device, ...rid() } }), status: 200, taken: false },
  { name: 'declined: another route', req: () => ({ path: '/v1/devices', headers: { ...st.device, ...rid() } }), status: 200, taken: false },
];

describe('the same answer with and without the fast lane', () => {
  test.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const r = await parity(c.req(), c.taken, fast, slow);
    expect(r.status).toBe(c.status);
    expect(header(r, 'x-powered-by')).toBeUndefined();
    expect(header(r, 'content-encoding')).toBe(c.encoding);
    if (c.encoding) {
      const plain = { gzip: zlib.gunzipSync, br: zlib.brotliDecompressSync, deflate: zlib.inflateSync }[c.encoding]!(r.body);
      expect(JSON.parse(plain.toString('utf8')).created.length).toBeGreaterThan(0);
    }
  });

  test('503 while the event loop lags', async () => {
    lagMs = ctx.config.shedLagMs + 1;
    try {
      const r = await parity({ path: poll(), headers: { ...st.device, ...rid() } }, true, fast, slow);
      expect(r.status).toBe(503);
    } finally {
      lagMs = 0;
    }
  });

  test('the same log lines and metrics', async () => {
    type Line = Record<string, unknown>;
    // Log lines are written when a response closes: give the last one a moment.
    await new Promise((r) => setTimeout(r, 50));
    const lines = (s: Side) =>
      s.logs
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.msg !== 'push channels closed')
        .map(({ time: _t, ms, pid: _p, hostname: _h, requestId, ...rest }): Line => ({
          ...rest,
          ms: typeof ms,
          requestId: typeof requestId === 'string' && !requestId.startsWith('parity-') ? '<generated>' : requestId,
        }));
    const slowLines = lines(slow);
    expect(slowLines.length).toBeGreaterThanOrEqual(cases.length);
    expect(lines(fast)).toEqual(slowLines);
    expect(slowLines.some((l) => l.route === '/v1/folders/:folderId/items/sync' && l.status === 404)).toBe(true);
    expect(slowLines.some((l) => l.route === 'unmatched' && l.status === 401)).toBe(true);

    const requests = async (s: Side) => s.built.metrics.registry.getSingleMetricAsString('pigeon_http_requests_total');
    expect(await requests(fast)).toEqual(await requests(slow));
    const counts = async (s: Side) =>
      (await s.built.metrics.registry.getSingleMetricAsString('pigeon_http_request_duration_seconds'))
        .split('\n')
        .filter((l) => l.includes('_count'));
    expect(await counts(fast)).toEqual(await counts(slow));
  });
});

describe('the device rate limit', () => {
  test('429 past the burst, the same from both', async () => {
    const limited = { deviceRateLimit: 1, deviceRateBurst: 2 };
    const [f, s] = [await side({ ...limited, fastLane: true }), await side({ ...limited, fastLane: false })];
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await parity({ path: poll(), headers: { ...st.device, ...rid() } }, true, f, s)).status);
    expect(statuses.slice(0, 2)).toEqual([200, 200]);
    expect(statuses.slice(2)).toContain(429);
  });
});

describe('last-seen times', () => {
  test('a gated call through the lane counts as seen; the session call does not, as through Express', async () => {
    const seen = async (s: Side, path: string) => {
      const t = await signIn(ctx, 'alice', PW, { device_id: `parity-seen-${sides.indexOf(s)}-${path.length}-0001` });
      const deviceId = `parity-seen-${sides.indexOf(s)}-${path.length}-0001`;
      const h = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
      await request(ctx.app).post('/v1/devices').set(h).send({}).expect(201);
      await ctx.built.devices.flushLastSeen();
      const at = ctx.clock.now() + 60_000;
      ctx.clock.set(at);
      expect((await send(s, { path, headers: h })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 20)); // the touch is made when the response finishes
      await s.built.devices.flushLastSeen();
      const record = (await ctx.store.devices.byUserAndDeviceId((await ctx.store.users.byUsername('alice'))!.id, deviceId))!;
      return record.lastSuccessSyncTime === at;
    };
    const before = fast.built.fastLane!.served;
    expect([await seen(fast, '/v1/folders/sync'), await seen(slow, '/v1/folders/sync')]).toEqual([true, true]);
    expect([await seen(fast, '/v1/session'), await seen(slow, '/v1/session')]).toEqual([false, false]);
    expect(fast.built.fastLane!.served - before).toBe(2);
  });
});
