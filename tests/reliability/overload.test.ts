/**
 * Overload (issue 8): one device over its rate gets 429 with Retry-After and does not slow the others down; a
 * saturated process sheds new requests with 503 Retry-After (health probes excepted) and takes them again as soon
 * as it has caught up; a burst at twice the sustainable rate over real HTTPS yields only 200/429, never another
 * status, and a calm run right after it is answered in full (its latency is logged, not asserted: speed is the
 * benchmark suite's to judge).
 */
import request from 'supertest';
import autocannon from 'autocannon';
import { buildTestApp, signIn, tempDir, type TestContext } from '../helpers/testApp';
import { httpsCall, startServer, storeWithUser, type RunningServer } from '../helpers/server';
import type { LagSource } from '../../server/http/overload';
import { createApp } from '../../server/app';
import { createLogger } from '../../server/logger';
import path from 'node:path';

const PW = 'password-for-tests';

async function deviceHeaders(ctx: TestContext, app: TestContext['app'], deviceId: string) {
  const t = await signIn(ctx, 'alice', PW, { device_id: deviceId });
  const h = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
  await request(app).post('/v1/devices').set(h).send({}).expect(201);
  return h;
}

describe('per-device rate limit', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await buildTestApp({ deviceRateLimit: 5, deviceRateBurst: 10 });
    await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
  });
  afterAll(() => ctx.close());

  test('past its burst a device gets 429 rateLimited with Retry-After; another device is unaffected', async () => {
    const a = await deviceHeaders(ctx, ctx.app, 'rate-device-a-00001');
    const b = await deviceHeaders(ctx, ctx.app, 'rate-device-b-00001');
    const statuses: number[] = [];
    let limited: request.Response | undefined;
    for (let i = 0; i < 20; i++) {
      const res = await request(ctx.app).get('/v1/folders/sync').set(a);
      statuses.push(res.status);
      if (res.status === 429) limited ??= res;
    }
    // Registration spent one token; the rest of the burst passes, then 429s (a few may refill meanwhile).
    expect(statuses.slice(0, 8).every((s) => s === 200)).toBe(true);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(8);
    expect(statuses.every((s) => s === 200 || s === 429)).toBe(true);
    expect(limited!.headers['retry-after']).toMatch(/^\d+$/);
    expect(limited!.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(limited!.body).toMatchObject({ status: 429, code: 'rateLimited' });
    await request(ctx.app).get('/v1/folders/sync').set(b).expect(200);
    // The bucket refills with time: after a second, the device may call again.
    await new Promise((r) => setTimeout(r, 1100));
    await request(ctx.app).get('/v1/folders/sync').set(a).expect(200);
  });
});

describe('load shedding on event-loop lag', () => {
  let ctx: TestContext;
  let lagMs = 0;
  const lag: LagSource = { lagMs: () => lagMs, stop: () => {} };
  let app: TestContext['app'];
  beforeAll(async () => {
    ctx = await buildTestApp();
    await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
    app = createApp({ config: ctx.config, store: ctx.store, keys: ctx.keys, clock: ctx.clock, log: createLogger({ logLevel: 'silent', logPretty: false }), lag }).app;
  });
  afterAll(() => ctx.close());

  test('above the lag threshold new requests get 503 with Retry-After; health probes pass; recovery is immediate', async () => {
    const h = await deviceHeaders(ctx, app, 'shed-device-0000001');
    lagMs = ctx.config.shedLagMs + 1;
    const shed = await request(app).get('/v1/folders/sync').set(h);
    expect(shed.status).toBe(503);
    expect(shed.headers['retry-after']).toBe('1');
    expect(shed.body).toMatchObject({ status: 503, code: 'unavailable' });
    await request(app).get('/healthz').expect(200);
    lagMs = 0;
    await request(app).get('/v1/folders/sync').set(h).expect(200);
  });
});

describe('a burst at twice the sustainable rate over HTTPS', () => {
  let server: RunningServer;
  let headers: Record<string, string>;
  beforeAll(async () => {
    const dataDir = tempDir('pigeon-burst-');
    await storeWithUser(dataDir, 'alice', PW);
    server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_LMTP_ENABLED: 'false', PIGEON_DEVICE_RATE_LIMIT: '50', PIGEON_DEVICE_RATE_BURST: '50' });
    const form = `grant_type=password&client_id=pigeon-app&username=alice&password=${PW}&device_id=burst-device-000001`;
    const token = await httpsCall(server, 'POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
    headers = { Authorization: `Bearer ${token.body.access_token}`, 'X-Device-Id': 'burst-device-000001' };
    expect((await httpsCall(server, 'POST', '/v1/devices', { ...headers, 'content-type': 'application/json' }, '{}')).status).toBe(201);
  });
  afterAll(async () => {
    await server?.stop();
  });

  const run = (opts: Partial<autocannon.Options>) =>
    autocannon({
      url: `https://127.0.0.1:${server.port}/v1/folders/sync`,
      headers,
      connections: 8,
      duration: 2,
      // The dev certificate is self-signed; autocannon has no CA option, and this traffic never leaves loopback.
      tlsOptions: { rejectUnauthorized: false },
      ...opts,
    } as autocannon.Options);

  test('only 200 and 429 come back, and the calm run right after is answered in full', async () => {
    // PIGEON_DEVICE_RATE_LIMIT for this device. Low on purpose: the burst (twice this) must be a rate the load
    // generator reaches on a busy 2-core machine too, or no request is ever over the limit.
    const sustainable = 50;
    const calm = await run({ overallRate: sustainable / 2 });
    const burst = await run({ overallRate: sustainable * 2 });
    // One second for the device's bucket to refill (burst 50 at 50/s): the burst's debt is paid, nothing more.
    await new Promise((r) => setTimeout(r, 1000));
    const after = await run({ overallRate: sustainable / 2 });
    const statusCounts = (r: autocannon.Result) => r.statusCodeStats as unknown as Record<string, { count: number }>;
    const codes = Object.keys(statusCounts(burst)).map(Number);
    const summary = JSON.stringify({ calm: [statusCounts(calm), calm.latency.p50], burst: [statusCounts(burst), burst.errors, burst.timeouts], after: [statusCounts(after), after.latency.p50] });
    expect({ codes, summary }).toEqual({ codes: codes.filter((c) => c === 200 || c === 429), summary });
    expect(statusCounts(burst)['429']?.count ?? 0).toBeGreaterThan(0);
    expect({ failures: burst.errors + burst.timeouts, summary }).toEqual({ failures: 0, summary });
    // Recovery: the calm run right after the burst is answered in full, with no 429 left over. Its latency is
    // reported, not asserted: speed is the benchmark suite's to judge (a test's timing depends on what else the
    // machine runs — the parallel suite made a 5 ms p50 read 40 ms here), never a timed assertion's.
    expect({ after: Object.keys(statusCounts(after)), summary }).toEqual({ after: ['200'], summary });
    expect({ answered: after.errors + after.timeouts, summary }).toEqual({ answered: 0, summary });
    console.log(`overload: calm p50 ${calm.latency.p50} ms, burst ${summary}, after the burst p50 ${after.latency.p50} ms`);
  }, 30_000);
});
