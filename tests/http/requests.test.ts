/**
 * The HTTP layer's promises: strict bodies, problem+json for every error, request ids, compression, security
 * headers, and the operational endpoints. `/oauth2/token` and `/oauth2/revoke` are the body-taking routes so far;
 * a JSON route is exercised through a tiny app built from the same middleware.
 */
import http from 'node:http';
import zlib from 'node:zlib';
import express from 'express';
import request from 'supertest';
import pino from 'pino';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import { jsonDepth } from '../../server/http/body';
import { errorHandler, notFoundHandler } from '../../server/http/problem';
import { requestId } from '../../server/http/requestContext';
import { serveTable, type Route, type TableOptions } from '../../server/http/table';
import { bearerMatches, startMetricsServer, type MetricsServer } from '../../server/http/metricsServer';

let ctx: TestContext;
let token: string;
beforeAll(async () => {
  ctx = await buildTestApp();
  await ctx.users.addUser({ username: 'alice', password: 'alice-password-1', role: 'user' });
  token = (await signIn(ctx, 'alice', 'alice-password-1')).access_token;
});
afterAll(() => ctx.close());

/** A JSON echo route built from the production middleware, recording what reached the handler. */
function jsonApp() {
  const seen: unknown[] = [];
  const app = express();
  app.use(requestId);
  // The production route-table adapter with its JSON body handling; nothing here is idempotent.
  const idempotency = {} as TableOptions['idempotency'];
  const echo: Route = {
    method: 'POST',
    path: '/echo',
    handler: (call) => {
      seen.push(call.body);
      return { body: { ok: true, keys: Object.keys(call.body as object) } };
    },
  };
  app.use(serveTable([echo], { maxRequestBytes: 64 * 1024, maxJsonDepth: 32, idempotency }));
  app.use(notFoundHandler);
  app.use(errorHandler(pino({ level: 'silent' })));
  return { app, seen };
}

describe('strict JSON bodies', () => {
  const { app, seen } = jsonApp();
  // serialize(identity): superagent would otherwise JSON-encode a Buffer instead of sending its bytes.
  const post = (body: string | Buffer, type = 'application/json') =>
    request(app).post('/echo').set('Content-Type', type).serialize((x: unknown) => x as string).send(body as string);

  beforeEach(() => (seen.length = 0));

  test('valid JSON reaches the handler', async () => {
    const res = await post('{"a":"é 😀"}');
    expect(res.status).toBe(200);
    expect(seen).toEqual([{ a: 'é 😀' }]);
  });

  test.each([
    ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d])],
    ['overlong UTF-8', Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')])],
    ['a lone high surrogate escape', '{"a":"\\ud800"}'],
    ['a lone low surrogate escape', '{"a":"x\\udc00y"}'],
    ['reversed surrogate pair', '{"a":"\\udc00\\ud800"}'],
    ['10,000-deep nesting', '['.repeat(10000) + ']'.repeat(10000)],
    ['malformed JSON', '{"a":'],
    ['trailing garbage', '{"a":1} x'],
    ['a bare string (strict mode)', '"hello"'],
  ])('%s → 400 invalidRequest, handler never runs', async (_name, body) => {
    const res = await post(body);
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toContain('application/problem+json');
    expect(res.body).toMatchObject({ status: 400, code: 'invalidRequest', requestId: res.headers['x-request-id'] });
    expect(seen).toHaveLength(0);
  });

  test('a valid surrogate pair escape is accepted', async () => {
    const res = await post('{"a":"\\ud83d\\ude00"}');
    expect(res.status).toBe(200);
    expect(seen).toEqual([{ a: '😀' }]);
  });

  test('over-size body → 413 payloadTooLarge', async () => {
    const res = await post(JSON.stringify({ a: 'x'.repeat(70 * 1024) }));
    expect(res.status).toBe(413);
    expect(res.body.code).toBe('payloadTooLarge');
    expect(seen).toHaveLength(0);
  });

  test.each(['text/plain', 'application/x-www-form-urlencoded', 'application/xml'])('Content-Type %s → 415', async (type) => {
    const res = await post('{"a":1}', type);
    expect(res.status).toBe(415);
    expect(res.body.code).toBe('unsupportedMediaType');
    expect(seen).toHaveLength(0);
  });

  test('a non-UTF-8 charset → 415', async () => {
    const res = await post('{"a":1}', 'application/json; charset=latin1');
    expect(res.status).toBe(415);
  });

  test('__proto__ keys change nothing', async () => {
    const res = await post('{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}');
    expect(res.status).toBe(200);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(seen[0])).toBe(Object.prototype);
  });

  test('jsonDepth ignores brackets inside strings', () => {
    expect(jsonDepth('{"a":"[[[[[[["}')).toBe(1);
    expect(jsonDepth('[[["\\"[["]]]')).toBe(3);
  });
});

describe('strict form bodies at the token endpoint', () => {
  test('invalid UTF-8 in a form body → 400 and nothing issued', async () => {
    const before = ctx.store.db.prepare('SELECT count(*) AS n FROM refresh_tokens').get() as { n: number };
    const body = Buffer.concat([Buffer.from('grant_type=password&client_id=pigeon-app&username=alice&password='), Buffer.from([0xff, 0xfe])]);
    const res = await request(ctx.app).post('/oauth2/token').set('Content-Type', 'application/x-www-form-urlencoded').send(body);
    expect(res.status).toBe(400);
    const after = ctx.store.db.prepare('SELECT count(*) AS n FROM refresh_tokens').get() as { n: number };
    expect(after.n).toBe(before.n);
  });

  test('over-size form body → 413', async () => {
    const res = await request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'password', password: 'x'.repeat(2 * 1024 * 1024) });
    expect(res.status).toBe(413);
    expect(res.body.code).toBe('payloadTooLarge');
  });
});

describe('errors are problem+json', () => {
  test('unknown route → 404', async () => {
    const res = await request(ctx.app).get('/nope');
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toContain('application/problem+json');
    expect(res.body).toMatchObject({ type: 'urn:pigeon:problem:notFound', title: 'Not found', status: 404, code: 'notFound' });
  });

  test('unknown /v1 route: 401 without a token, 403 from an unregistered device, 404 from a registered one', async () => {
    expect((await request(ctx.app).get('/v1/nope')).status).toBe(401);
    const deviceId = 'requests-test-device-1';
    const bound = (await signIn(ctx, 'alice', 'alice-password-1', { device_id: deviceId })).access_token;
    const unregistered = await request(ctx.app).get('/v1/nope').set('Authorization', `Bearer ${bound}`).set('X-Device-Id', deviceId);
    expect(unregistered.body.code).toBe('deviceNotRegistered');
    await request(ctx.app).post('/v1/devices').set('Authorization', `Bearer ${bound}`).set('X-Device-Id', deviceId).send({}).expect(201);
    const res = await request(ctx.app).get('/v1/nope').set('Authorization', `Bearer ${bound}`).set('X-Device-Id', deviceId);
    expect(res.status).toBe(404);
    expect(res.body.code).toBe('notFound');
  });

  test('wrong method → 405 with Allow', async () => {
    const res = await request(ctx.app).delete('/oauth2/token');
    expect(res.status).toBe(405);
    expect(res.headers.allow).toBe('POST');
    expect(res.body.code).toBe('methodNotAllowed');
    const get = await request(ctx.app).post('/healthz');
    expect(get.headers.allow).toBe('GET, HEAD');
  });

  test('an unknown error is 500 internal with only the request id', async () => {
    const app = express();
    app.use(requestId);
    app.get('/boom', () => {
      throw new Error('secret internals at /var/lib/x');
    });
    const logged: string[] = [];
    app.use(errorHandler(pino({}, { write: (l: string) => void logged.push(l) })));
    const res = await request(app).get('/boom').set('X-Request-Id', 'req-123');
    expect(res.status).toBe(500);
    expect(res.body).toEqual({
      type: 'urn:pigeon:problem:internal',
      title: 'Internal error',
      status: 500,
      detail: 'An internal error occurred; quote the request id when reporting it.',
      code: 'internal',
      requestId: 'req-123',
    });
    expect(logged.join('')).toContain('req-123');
  });
});

describe('request ids, compression, headers', () => {
  test('X-Request-Id is echoed when sane, generated otherwise', async () => {
    expect((await request(ctx.app).get('/healthz').set('X-Request-Id', 'abc-123')).headers['x-request-id']).toBe('abc-123');
    const bad = await request(ctx.app).get('/healthz').set('X-Request-Id', 'bad id <script>');
    expect(bad.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect((await request(ctx.app).get('/nope')).headers['x-request-id']).toBeTruthy();
  });

  test('responses over 1 KiB are gzipped when asked; small ones are not', async () => {
    const big = await request(ctx.app).get('/openapi.yaml').set('Accept-Encoding', 'gzip');
    expect(big.headers['content-encoding']).toBe('gzip');
    const small = await request(ctx.app).get('/healthz').set('Accept-Encoding', 'gzip');
    expect(small.headers['content-encoding']).toBeUndefined();
  });

  test('security headers: HSTS two years, no x-powered-by, nosniff', async () => {
    const res = await request(ctx.app).get('/healthz');
    expect(res.headers['strict-transport-security']).toBe('max-age=63072000; includeSubDomains');
    expect(res.headers['x-powered-by']).toBeUndefined();
    expect(res.headers['x-content-type-options']).toBe('nosniff');
  });
});

describe('operational endpoints and session', () => {
  test('healthz, readyz', async () => {
    expect((await request(ctx.app).get('/healthz')).body).toEqual({ status: 'ok' });
    expect((await request(ctx.app).get('/readyz')).body).toEqual({ status: 'ready' });
  });

  test('the API port has no /metrics: 404 problem+json, like any unknown path', async () => {
    const res = await request(ctx.app).get('/metrics');
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.body).toMatchObject({ status: 404 });
    expect(res.text).not.toContain('pigeon_http_requests_total');
  });

  test('GET /v1/session: 401 first, then the user and the limits', async () => {
    expect((await request(ctx.app).get('/v1/session')).status).toBe(401);
    const res = await request(ctx.app).get('/v1/session').set('Authorization', `Bearer ${token}`);
    expect(res.status).toBe(200);
    expect(res.body.user).toMatchObject({ username: 'alice', role: 'user' });
    expect(res.body.limits).toEqual({
      maxChangesPerPage: 512,
      defaultWindow: 500,
      maxWindow: 1000,
      changeHistoryDays: 30,
      maxBatchOperations: 500,
      maxRequestBytes: 1048576,
      maxMessageBytes: 52428800,
      maxSendRequestBytes: Math.ceil((52428800 * 4) / 3) + 65536,
      pingSeconds: [60, 1740],
    });
  });

  test('the request log has one line per request and never a token or password', async () => {
    ctx.logLines.length = 0;
    await request(ctx.app).get('/v1/session').set('Authorization', `Bearer ${token}`);
    await request(ctx.app).post('/oauth2/token').type('form').send({ grant_type: 'password', client_id: 'pigeon-app', username: 'alice', password: 'alice-password-1' });
    await request(ctx.app).get(`/v1/session?access_token=${token}`);
    const lines = ctx.logLines.map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatchObject({ method: 'GET', route: '/v1/session', status: 200, user: expect.any(String) });
    const all = ctx.logLines.join('\n');
    expect(all).not.toContain(token.slice(-20));
    expect(all).not.toContain('alice-password-1');
  });
});

describe('form bodies: percent-escapes', () => {
  test('a percent-escape that is not UTF-8 is 400, not U+FFFD', async () => {
    const res = await request(ctx.app)
      .post('/oauth2/token')
      .set('Content-Type', 'application/x-www-form-urlencoded')
      .send('grant_type=password&client_id=pigeon-app&username=alice&password=%FF%FE');
    expect(res.status).toBe(400);
    const ok = await request(ctx.app)
      .post('/oauth2/token')
      .set('Content-Type', 'application/x-www-form-urlencoded')
      .send('grant_type=password&client_id=pigeon-app&username=alice&password=alice-password-1&x=%C3%A9');
    expect(ok.status).toBe(200);
  });

  test('the API description is gzipped too', async () => {
    const res = await request(ctx.app).get('/openapi.yaml').set('Accept-Encoding', 'gzip');
    expect(res.headers['content-encoding']).toBe('gzip');
  });
});

/** GET (or another method) on a metrics listener; the body comes back as text, gunzipped when it was gzipped. */
function scrape(m: MetricsServer, method = 'GET', p = '/metrics', headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string; bytes: number }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: m.port, method, path: p, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const body = res.headers['content-encoding'] === 'gzip' ? zlib.gunzipSync(raw) : raw;
        resolve({ status: res.statusCode!, headers: res.headers, text: body.toString('utf8'), bytes: raw.length });
      });
    });
    req.once('error', reject);
    req.end();
  });
}

describe('the metrics listener (its own port, loopback by default)', () => {
  let open: MetricsServer;
  let guarded: MetricsServer;
  const TOKEN = 'metrics-token-0123456789abcdef';
  beforeAll(async () => {
    const registry = ctx.built.metrics.registry;
    open = await startMetricsServer({ host: '127.0.0.1', port: 0, token: '', registry });
    guarded = await startMetricsServer({ host: '127.0.0.1', port: 0, token: TOKEN, registry });
  });
  afterAll(async () => {
    await open.close();
    await guarded.close();
  });

  test('counts API requests by route pattern and status; publishes the dropped log lines', async () => {
    await request(ctx.app).get('/v1/session').set('Authorization', `Bearer ${token}`);
    const res = await scrape(open);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.text).toMatch(/pigeon_http_requests_total\{route="\/v1\/session",method="GET",status="200"\} \d+/);
    expect(res.text).toContain('pigeon_http_request_duration_seconds_bucket');
    expect(res.text).toMatch(/^# TYPE pigeon_log_lines_dropped_total counter$/m);
    expect(res.text).toMatch(/^pigeon_log_lines_dropped_total \d+$/m);
    expect(res.text).toMatch(/^pigeon_log_queue_bytes \d+$/m);
  });

  test('gzip when asked (not when refused); HEAD has no body; other paths 404, other methods 405', async () => {
    const plain = await scrape(open);
    const zipped = await scrape(open, 'GET', '/metrics', { 'Accept-Encoding': 'gzip' });
    expect(zipped.headers['content-encoding']).toBe('gzip');
    expect(zipped.bytes).toBeLessThan(plain.bytes / 2);
    expect(zipped.text).toContain('pigeon_http_requests_total');
    expect((await scrape(open, 'GET', '/metrics', { 'Accept-Encoding': 'gzip;q=0' })).headers['content-encoding']).toBeUndefined();
    const head = await scrape(open, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.text).toBe('');
    expect((await scrape(open, 'GET', '/healthz')).status).toBe(404);
    expect((await scrape(open, 'GET', '/v1/session')).status).toBe(404);
    const post = await scrape(open, 'POST');
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });

  test('with PIGEON_METRICS_TOKEN set: 401 without the bearer or with a wrong one, 200 with it', async () => {
    for (const authorization of [undefined, 'Bearer wrong', `Bearer ${TOKEN}x`, `Basic ${TOKEN}`, TOKEN, `Bearer ${TOKEN.slice(0, -1)}`]) {
      const res = await scrape(guarded, 'GET', '/metrics', authorization ? { Authorization: authorization } : {});
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer /);
      expect(res.text).not.toContain('pigeon_');
    }
    const ok = await scrape(guarded, 'GET', '/metrics', { Authorization: `Bearer ${TOKEN}` });
    expect(ok.status).toBe(200);
    expect(ok.text).toContain('pigeon_http_requests_total');
  });

  test('bearerMatches: the scheme is case-insensitive, the token is exact', () => {
    expect(bearerMatches(`bearer ${TOKEN}`, TOKEN)).toBe(true);
    expect(bearerMatches(`Bearer ${TOKEN}`, TOKEN)).toBe(true);
    expect(bearerMatches(`Bearer ${TOKEN.toUpperCase()}`, TOKEN)).toBe(false);
    expect(bearerMatches('Bearer ', TOKEN)).toBe(false);
    expect(bearerMatches(undefined, TOKEN)).toBe(false);
  });
});
