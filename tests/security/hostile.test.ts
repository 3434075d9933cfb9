/**
 * The hostile-input corpus (issue 8). Every case is generated per operation of schema/openapi.yaml by
 * tests/helpers/specCases.ts, so a newly documented route is covered without touching this file. Each case must
 * answer its 4xx with a problem body (or, on the OAuth endpoints, an RFC 6749 error) that the document describes for
 * the operation, leave every table of the store exactly as it was, and leave /healthz answering 200.
 *
 * The identity provider's own endpoints (`x-pigeon-served-by: identity-provider`: authorization, device flow,
 * introspection, discovery, keys) get the same cases, judged as an OAuth server must answer them (`providerVerdict`):
 * never a 5xx; a method the path lacks is 404 or 405; every other answer is one the document describes for the
 * operation; and a case that is invalid in a way OAuth itself forbids (a parameter given twice, a missing or wrong
 * required parameter, a body that is not a form or is too large) is refused — a 4xx (OAuth error JSON, or the error
 * page of the browser endpoints), or on the authorization endpoint a redirect of the error to the app — and a refusal
 * changes nothing in the store. Junk in a parameter the server does not know may be accepted: RFC 6749 §3.1 says to
 * ignore unrecognized parameters.
 *
 * The compliance partners' operation (`access: partner`, authenticated by an HTTP message signature, not a token)
 * runs here with no partner configured, so no case is signed: each must be 401 `unauthorized`, except what the
 * HTTP layer refuses before any handler (a bad escape in the path, the media type, the size, the content coding),
 * which may be that refusal instead (tests/helpers/specCases.ts `unsigned`). Signed requests, refused and accepted,
 * are tests/e2e/conditional-access.test.ts's; signed bodies with planted members are mass-assignment.test.ts's.
 *
 * Two more parts need a socket:
 * - LMTP, in process over the one delivery path: malformed MIME is answered 250 with an item the API can serve, or
 *   refused with a 5xx; a 100 MB header line is refused with 552 without being held in memory.
 * - The real HTTPS process, for what only Node's own HTTP parser sees: over-long headers and URLs (Node answers 431
 *   with no body; it never sends 414, because the request line counts against the same header limit), raw invalid
 *   UTF-8 in the path, NULs and smuggling-shaped framing (Node answers 400 with no body and closes).
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import v8 from 'node:v8';
import vm from 'node:vm';
import request from 'supertest';
import { buildTestApp, tempDir, type TestContext } from '../helpers/testApp';
import { startServer, type RunningServer } from '../helpers/server';
import { changedTables, snapshot } from '../helpers/storeDiff';
import {
  buildWorld,
  hostileCases,
  idFor,
  ownId,
  partyHeaders,
  providerOperations,
  specOperations,
  type HostileCase,
  type IdKind,
  type Party,
  type SpecOperation,
} from '../helpers/specCases';
import { expectToMatchSpec } from '../helpers/openapi';
import { sendBodyLimit } from '../../server/send/routes';
import { hasDuplicateKey } from '../../server/http/body';
import { startLmtp, type LmtpHandle } from '../../server/lmtp/server';
import { createLogger } from '../../server/logger';
import { openSqliteStore } from '../../server/store/sqlite';
import { createUserAdmin } from '../../server/admin/users';
import { systemClock } from '../../server/clock';

const LIMIT = 64 * 1024; // request and message limits of this app: small, so over-size cases stay cheap
/** The confidential client `pigeon-operator`, so the introspection cases get past client authentication. */
const OPERATOR_SECRET = 'hostile-operator-secret-0123456789abcdef';
const operatorCredentials = { Authorization: `Basic ${Buffer.from(`pigeon-operator:${OPERATOR_SECRET}`).toString('base64')}` };

/** Every operation of the document: Pigeon's own and the identity provider's. */
const allOperations = (): SpecOperation[] => [...specOperations(), ...providerOperations()];
const pathOf = (c: HostileCase) => c.route.slice(c.route.indexOf(' ') + 1);
const providerPaths = () => new Set(providerOperations().map((o) => o.path));

let ctx: TestContext;
let server: http.Server;
let alice: Party;
let root: Party;
const api = () => request(server);

beforeAll(async () => {
  ctx = await buildTestApp({
    deviceRateLimit: 0,
    tokenRequestsPerIp: 1_000_000,
    loginFailuresPerUser: 10_000,
    loginFailuresPerUserGlobal: 10_000,
    maxRequestBytes: LIMIT,
    maxMessageBytes: LIMIT,
    operatorClientSecret: OPERATOR_SECRET,
  });
  server = http.createServer(ctx.app).listen(0, '127.0.0.1');
  const world = await buildWorld(ctx, api, [
    { name: 'alice', role: 'user', tenant: 'A' },
    { name: 'root', role: 'admin', tenant: 'A' },
  ]);
  alice = world.alice!;
  root = world.root!;
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await ctx?.close();
});

// ---------------------------------------------------------------------------------------------------------------
// The corpus

/**
 * How many cases this run sends: `HOSTILE_CASES=all` (the deep tier) sends the whole corpus; the CI tier a fixed
 * selection that still holds every method-path pair and every kind of case at least once.
 */
const HOSTILE_CASES = process.env.HOSTILE_CASES ?? '400';

function selection(all: HostileCase[]): HostileCase[] {
  if (HOSTILE_CASES === 'all') return all;
  const budget = Number(HOSTILE_CASES);
  const kindOf = (c: HostileCase) => c.name.slice(c.route.length + 2);
  const routes = new Set<string>();
  const kinds = new Set<string>();
  const chosen = new Set<HostileCase>();
  for (const c of all) {
    if (routes.has(c.route) && kinds.has(kindOf(c))) continue;
    routes.add(c.route);
    kinds.add(kindOf(c));
    chosen.add(c);
  }
  // Then every n-th of the rest, so the selection is the same on every run.
  const rest = all.filter((c) => !chosen.has(c));
  const step = Math.max(1, Math.ceil(rest.length / Math.max(1, budget - chosen.size)));
  for (let i = 0; i < rest.length && chosen.size < budget; i += step) chosen.add(rest[i]!);
  return all.filter((c) => chosen.has(c));
}

let cases: HostileCase[] | undefined;
function corpus(): HostileCase[] {
  cases ??= hostileCases(
    {
      // Alice's ids, or for the admin-only kinds (rules) root's; root's users, devices and folders are alice's.
      id: (kind: IdKind, slot: string) => (alice.ids[kind].length ? idFor(alice, kind, slot) : ownId(root, kind)),
      email: alice.email,
      username: alice.username,
      password: alice.password,
      // A compliance partner's operation: no partner is configured here, so its cases go unsigned (all 401).
      credentials: (op) =>
        op.key === 'POST /oauth2/introspect' ? operatorCredentials : op.access === 'public' || op.access === 'partner' ? {} : partyHeaders(op.access === 'admin' ? root : alice, op),
      maxBodyBytes: Math.max(LIMIT, sendBodyLimit(LIMIT)),
    },
    allOperations(),
  );
  return cases;
}
let selected: HostileCase[] | undefined;
function toRun(): HostileCase[] {
  selected ??= selection(corpus());
  return selected;
}

/** What a problem (or RFC 6749) body says, or why the response is not one. */
function problemCode(c: HostileCase, res: request.Response): { code?: string; wrong?: string } {
  const type = String(res.headers['content-type'] ?? '');
  if (c.url.startsWith('/oauth2/') && type.startsWith('application/json')) {
    return typeof res.body?.error === 'string' ? { code: res.body.error } : { wrong: 'an OAuth error without `error`' };
  }
  if (!type.startsWith('application/problem+json')) return { wrong: `content-type ${type || '(none)'}` };
  const body = JSON.parse(res.text);
  if (body.status !== res.status) return { wrong: `problem status ${body.status}` };
  if (body.requestId !== res.headers['x-request-id']) return { wrong: 'problem requestId differs from X-Request-Id' };
  if (typeof body.code !== 'string' || body.type !== `urn:pigeon:problem:${body.code}`) return { wrong: `problem code ${body.code} / type ${body.type}` };
  return { code: body.code };
}

const fiveHundreds: string[] = [];

/** Form-body cases that only add junk in a parameter the server does not know (`x`, `p0`…): OAuth ignores those. */
const UNKNOWN_PARAMETER_JUNK = ['a bad percent-escape', 'invalid UTF-8 bytes', 'an escape of invalid UTF-8', '60 parameters'];
/** The verification page only shows a form (with any `user_code` filled in): nothing there to refuse. */
const ONLY_SHOWS_A_PAGE = new Set(['GET /oauth2/device']);
const kindOf = (c: HostileCase) => c.name.slice(c.route.length + 2);

/**
 * Whether the identity provider refused the request: a 4xx, or on the authorization endpoint a redirect of the error
 * to the app (RFC 6749 §4.1.2.1: once the client and redirect URI are known to be right, errors go back to the app).
 */
function refusedByProvider(c: HostileCase, res: request.Response): boolean {
  if (res.status >= 400 && res.status < 500) return true;
  if (res.status !== 303 || pathOf(c) !== '/oauth2/authorize') return false;
  const location = new URL(String(res.headers.location ?? ''), 'http://pigeon.invalid');
  const params = new URLSearchParams(location.search || location.hash.slice(1));
  return location.origin !== 'http://pigeon.invalid' && params.has('error');
}

/** What an OAuth server must answer to a hostile case at one of the identity provider's endpoints (module comment). */
function providerVerdict(c: HostileCase, res: request.Response, changed: string[]): string[] {
  const wrong: string[] = [];
  const said = `${res.status} ${String(res.headers['content-type'] ?? '(no content-type)')}: ${res.text?.slice(0, 160)}`;
  if (kindOf(c) === 'a method the path does not have') {
    if (![404, 405].includes(res.status)) wrong.push(`status ${said}, expected 404 or 405`);
  } else {
    try {
      expectToMatchSpec(res, c.method, pathOf(c));
    } catch (err) {
      wrong.push(`not as documented: ${(err as Error).message.split('\n').slice(1, 3).join(' ')}`);
    }
    const mayAccept = UNKNOWN_PARAMETER_JUNK.includes(kindOf(c)) || ONLY_SHOWS_A_PAGE.has(c.route);
    if (!mayAccept && res.status < 500 && !refusedByProvider(c, res)) wrong.push(`accepted (${said}), but an OAuth server must refuse it`);
  }
  if (refusedByProvider(c, res) && changed.length) wrong.push(`refused, yet changed ${changed.join(', ')}`);
  return wrong;
}

/** Runs one case; returns what was wrong with the answer (nothing when it is right). */
async function run(c: HostileCase): Promise<string[]> {
  const before = snapshot(ctx.store.db);
  let req = api()[c.method as 'get'](c.url).set(c.headers);
  if (c.body !== undefined) req = req.send(c.body as string);
  const res = await req.timeout(15_000);
  const changed = changedTables(before, snapshot(ctx.store.db));
  const wrong: string[] = [];
  if (res.status >= 500) fiveHundreds.push(c.name);
  if (providerPaths().has(pathOf(c))) {
    if (res.status >= 500) wrong.push(`status ${res.status}: ${res.text?.slice(0, 200)}`);
    return [...wrong, ...providerVerdict(c, res, changed)];
  }
  if (!c.expect.includes(res.status)) wrong.push(`status ${res.status}, expected ${c.expect.join('/')}: ${res.text?.slice(0, 200)}`);
  if (res.status >= 400) {
    const { code, wrong: notProblem } = problemCode(c, res);
    if (notProblem) wrong.push(notProblem);
    else if (c.codes && !c.codes.includes(code!)) wrong.push(`code ${code}, expected ${c.codes.join('/')}`);
  }
  if (changed.length) wrong.push(`changed ${changed.join(', ')}`);
  try {
    expectToMatchSpec(res, c.method, c.route.slice(c.route.indexOf(' ') + 1));
  } catch (err) {
    wrong.push(`not as documented: ${(err as Error).message.split('\n').slice(1, 3).join(' ')}`);
  }
  return wrong;
}

describe('the hostile corpus', () => {
  test('covers every path of the document and has at least 200 cases', () => {
    const all = corpus();
    const run = toRun();
    console.log(`hostile corpus: ${all.length} cases over ${new Set(all.map((c) => c.route)).size} method-path pairs (${allOperations().length} operations, ${providerOperations().length} of them the identity provider's); this run sends ${run.length}`);
    expect(new Set(run.map((c) => c.route)).size).toBe(new Set(all.map((c) => c.route)).size);
    expect(run.length).toBeGreaterThanOrEqual(200);
    const covered = new Set(all.map((c) => c.route.slice(c.route.indexOf(' ') + 1)));
    // Operations without parameters or a body (the probes, the discovery documents) are covered by their path's
    // other methods; every operation that takes anything has cases of its own.
    expect(providerOperations().length).toBeGreaterThanOrEqual(5);
    const missing = allOperations()
      .filter((o) => !covered.has(o.path) || ((o.pathParams.length || o.query.length || o.body) && !all.some((c) => c.route === o.key)))
      .map((o) => o.key);
    expect(missing).toEqual([]);
    expect(all.length).toBeGreaterThanOrEqual(200);
    expect(new Set(all.map((c) => c.name)).size).toBe(all.length); // names identify cases in failure lists
  });

  const paths = [...new Set(allOperations().map((o) => o.path))];
  test.each(paths)('%s: every case is its 4xx with a problem body (the provider\'s: what OAuth requires), changes nothing, and /healthz stays up', async (p) => {
    const mine = toRun().filter((c) => c.route.slice(c.route.indexOf(' ') + 1) === p);
    expect(mine.length).toBeGreaterThan(0);
    const failures: Record<string, string[]> = {};
    for (const c of mine) {
      const wrong = await run(c);
      if (wrong.length) failures[c.name] = wrong;
    }
    expect(failures).toEqual({});
    expect((await api().get('/healthz')).status).toBe(200);
  });

  test('the duplicate-member check refuses exactly the objects that name a member twice', () => {
    const twice = ['{"a":1,"a":2}', '{"a":1,"\\u0061":2}', '{"x":{"b":1,"c":{},"b":[]}}', '[{"k":"v"},{"k":1,"k":2}]', '{"a\\"b":1,"a\\"b":2}'];
    const once = ['{"a":{"a":{"a":1}}}', '[{"a":1},{"a":2}]', '{"a":"\\"a\\":1,","b":["a","a"]}', '{"a\\\\":1,"a":2}', '{}', '[]', '"a"', '{"operations":[{"opId":"1","op":"delete"},{"opId":"2","op":"delete"}]}'];
    expect(twice.filter((t) => !hasDuplicateKey(t))).toEqual([]);
    expect(once.filter((t) => hasDuplicateKey(t))).toEqual([]);
    for (const t of [...twice, ...once]) expect(() => JSON.parse(t)).not.toThrow();
  });

  test('no case was answered with a 5xx', () => {
    expect(fiveHundreds).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// LMTP

/** A raw LMTP client: one reply (possibly multi-line) per command, the message sent with dot-stuffing. */
class LmtpClient {
  private buffer = '';
  private wake = () => {};
  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('latin1').on('data', (chunk: string) => {
      this.buffer += chunk;
      this.wake();
    });
  }

  static async open(port: number): Promise<LmtpClient> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const client = new LmtpClient(socket);
    await client.reply();
    return client;
  }

  reply(timeoutMs = 20_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no LMTP reply in ${timeoutMs} ms; buffer: ${this.buffer.slice(0, 200)}`)), timeoutMs);
      const check = () => {
        const end = /^\d{3} .*\r\n/m.exec(this.buffer);
        if (!end) return void (this.wake = check);
        clearTimeout(timer);
        const cut = end.index + end[0].length;
        resolve(this.buffer.slice(0, cut));
        this.buffer = this.buffer.slice(cut);
      };
      check();
    });
  }

  async command(line: string): Promise<string> {
    this.socket.write(`${line}\r\n`);
    return this.reply();
  }

  /** Writes `chunks` (backpressure respected) as the message body and ends it; returns the one reply for one RCPT. */
  async data(chunks: Iterable<Buffer>): Promise<string> {
    const start = await this.command('DATA');
    if (!start.startsWith('354')) return start;
    for (const chunk of chunks) {
      if (!this.socket.write(chunk)) await new Promise((resolve) => this.socket.once('drain', resolve));
    }
    this.socket.write('\r\n.\r\n');
    return this.reply(120_000);
  }

  close(): void {
    this.socket.end('QUIT\r\n');
  }
}

/**
 * The heap and ArrayBuffer memory the process still holds after a collection: what a transfer keeps, without the
 * garbage the collector has not reclaimed yet. Draining 100 MB allocates 100 MB of short-lived 64 KiB socket read
 * buffers whatever the server does with them, and V8 decides when to free them: Node 20 frees dead young
 * ArrayBuffers at about 32 MB, Node 26 at about 64 MB (a loop that only allocates and drops 64 KiB ArrayBuffers
 * peaks at 34 MB and 64 MB of them), so a bound on memory before collection measures the V8 version, not buffering.
 * A young-generation collection (`minor`, about a millisecond) frees them; what survives it is held.
 */
function retainedBytes(kind: 'minor' | 'major'): number {
  collector()({ type: kind });
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}
let gc: ((options: { type: 'minor' | 'major' }) => void) | undefined;
/** V8's gc() without --expose-gc on the command line: a context created while the flag is set has it. */
function collector() {
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc');
    v8.setFlagsFromString('--no-expose-gc');
  }
  return gc!;
}

/** CRLF line ends and dot-stuffing, as an MTA would send the bytes. */
function smtpBytes(raw: Buffer): Buffer {
  const text = raw.toString('latin1').replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
  return Buffer.from(text, 'latin1');
}

describe('malformed MIME over LMTP', () => {
  let lmtp: LmtpHandle;
  beforeAll(async () => {
    const log = createLogger({ logLevel: 'error', logPretty: false }, { write: () => {} });
    lmtp = await startLmtp({ config: { ...ctx.config, lmtpHost: '127.0.0.1', lmtpPort: 0 }, delivery: ctx.built.delivery, clock: ctx.clock, log });
  });
  afterAll(async () => {
    await lmtp?.close(1000);
  });

  async function deliver(raw: Buffer): Promise<string> {
    const client = await LmtpClient.open(lmtp.port);
    try {
      expect(await client.command('LHLO mta.example.org')).toMatch(/^250 /m);
      expect(await client.command('MAIL FROM:<sender@example.org>')).toMatch(/^250 /);
      expect(await client.command(`RCPT TO:<${alice.email}>`)).toMatch(/^250 /);
      return await client.data([smtpBytes(raw)]);
    } finally {
      client.close();
    }
  }

  const head = (extra: string[]) => ['From: <sender@example.org>', `To: <alice@example.com>`, `Message-ID: <${Math.random().toString(36).slice(2)}@example.org>`, ...extra].join('\r\n');
  const MESSAGES: Array<[string, Buffer]> = [
    ['a multipart whose boundary never closes', Buffer.from(`${head(['Subject: open', 'Content-Type: multipart/mixed; boundary="b1"'])}\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\nContent-Type: application/pdf\r\n\r\nJVBERi0`)],
    ['parts under a boundary the header does not name', Buffer.from(`${head(['Subject: other', 'Content-Type: multipart/mixed; boundary="declared"'])}\r\n\r\n--actual\r\nContent-Type: text/plain\r\n\r\nhi\r\n--actual--\r\n`)],
    ['a multipart without a boundary parameter', Buffer.from(`${head(['Subject: none', 'Content-Type: multipart/alternative'])}\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n`)],
    ['multipart nested 300 deep', Buffer.from(`${head(['Subject: deep', 'Content-Type: multipart/mixed; boundary="b0"'])}\r\n\r\n${Array.from({ length: 300 }, (_, i) => `--b${i}\r\nContent-Type: multipart/mixed; boundary="b${i + 1}"\r\n\r\n`).join('')}--b300\r\nContent-Type: text/plain\r\n\r\nbottom\r\n`)],
    ['an unknown charset with 8-bit bytes', Buffer.concat([Buffer.from(`${head(['Subject: charset', 'Content-Type: text/plain; charset="x-no-such-charset"'])}\r\n\r\n`), Buffer.from([0xff, 0xfe, 0x80, 0x41, 0x0d, 0x0a])])],
    ['UTF-16 declared with an odd number of bytes', Buffer.concat([Buffer.from(`${head(['Subject: utf16', 'Content-Type: text/plain; charset=utf-16'])}\r\n\r\n`), Buffer.from([0xd8, 0x00, 0x41])])],
    ['an encoded word in an unknown charset', Buffer.from(`${head(['Subject: =?x-bogus?B?SGVsbG8=?= =?utf-8?Q?broken=ZZ?=', 'Content-Type: text/plain'])}\r\n\r\nbody\r\n`)],
    ['raw invalid UTF-8 in headers', Buffer.concat([Buffer.from(`${head(['Content-Type: text/plain; charset=utf-8'])}\r\nSubject: `), Buffer.from([0xc3, 0x28, 0xa0, 0xa1]), Buffer.from('\r\n\r\nbody\r\n')])],
    ['NULs in a header and the body', Buffer.from(`${head(['Subject: nul\u0000here', 'Content-Type: text/plain'])}\r\n\r\nbefore\u0000after\r\n`, 'latin1')],
    ['a header line without a colon', Buffer.from(`${head(['Subject: colon', 'This line has no colon', 'Content-Type: text/plain'])}\r\n\r\nbody\r\n`)],
    ['broken base64 and an unknown transfer encoding', Buffer.from(`${head(['Subject: b64', 'Content-Type: multipart/mixed; boundary="b"'])}\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64@@@=\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-rot13\r\n\r\nabc\r\n--b--\r\n`)],
    ['an attachment name with a path and a NUL', Buffer.from(`${head(['Subject: name', 'Content-Type: multipart/mixed; boundary="b"'])}\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: text/html; name="../../etc/passwd\u0000.html"\r\nContent-Disposition: attachment; filename="../../../etc/passwd\u0000.html"\r\n\r\n<script>alert(1)</script>\r\n--b--\r\n`, 'latin1')],
    ['a nested message/rfc822 that is cut off', Buffer.from(`${head(['Subject: nested', 'Content-Type: multipart/mixed; boundary="b"'])}\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: x\r\nContent-Type: multipart/mixed; boundary="inner"\r\n\r\n--inner\r\nContent-Type: text/plain\r\n`)],
    ['a 60 KB header line (under the limit)', Buffer.from(`${head(['Subject: long', `X-Long: ${'a'.repeat(60_000)}`, 'Content-Type: text/plain'])}\r\n\r\nbody\r\n`)],
    ['headers only, no blank line', Buffer.from(head(['Subject: only headers']))],
    ['nothing at all', Buffer.alloc(0)],
    ['binary noise', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 256))],
  ];

  const newestItem = () => (ctx.store.db.prepare('SELECT id, user_id AS userId FROM items ORDER BY rowid DESC LIMIT 1').get() as { id: string; userId: string } | undefined)?.id;

  test.each(MESSAGES)('%s: a 5xx reply, or 250 and an item the API serves', async (_label, raw) => {
    const before = newestItem();
    const snap = snapshot(ctx.store.db);
    const reply = await deliver(raw);
    expect(reply).toMatch(/^(250|5\d\d) /);
    const headers = partyHeaders(alice);
    if (reply.startsWith('5')) {
      expect(changedTables(snap, snapshot(ctx.store.db))).toEqual([]);
    } else {
      const id = newestItem();
      expect(id).not.toBe(before);
      const item = await api().get(`/v1/items/${id}`).set(headers);
      expect(item.status).toBe(200);
      expectToMatchSpec(item, 'get', '/v1/items/{itemId}');
      for (const a of item.body.attachments as Array<{ id: string }>) {
        const download = await api().get(`/v1/items/${id}/attachments/${a.id}`).set(headers);
        expect(download.status).toBe(200);
        expect(String(download.headers['content-disposition'])).not.toMatch(/[/\\\u0000]/);
      }
      expect((await api().get(`/v1/items/${id}/mime`).set(headers)).status).toBe(200);
    }
    // The listener still takes new sessions, and the API still answers.
    const again = await LmtpClient.open(lmtp.port);
    expect(await again.command('LHLO mta.example.org')).toMatch(/^250 /m);
    again.close();
    expect((await api().get('/healthz')).status).toBe(200);
  });

  test('a 100 MB header line is refused with 552 without being held in memory; a declared 100 MB SIZE is refused at once', async () => {
    const client = await LmtpClient.open(lmtp.port);
    expect(await client.command('LHLO mta.example.org')).toMatch(/^250[ -]SIZE 65536\r$/m);
    expect(await client.command('MAIL FROM:<sender@example.org> SIZE=104857600')).toMatch(/^552 5\.3\.4 /);
    expect(await client.command('RSET')).toMatch(/^250 /);
    expect(await client.command('MAIL FROM:<sender@example.org>')).toMatch(/^250 /);
    expect(await client.command(`RCPT TO:<${alice.email}>`)).toMatch(/^250 /);

    const snap = snapshot(ctx.store.db);
    const mib = Buffer.alloc(1024 * 1024, 0x61);
    const baseline = retainedBytes('major');
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, retainedBytes('minor') - baseline)), 20);
    function* hundredMegabytes() {
      yield Buffer.from('From: <sender@example.org>\r\nX-Huge: ');
      for (let i = 0; i < 100; i++) yield mib;
      yield Buffer.from('\r\n\r\nbody');
    }
    const reply = await client.data(hundredMegabytes());
    clearInterval(sampler);
    client.close();
    expect(reply).toMatch(/^552 5\.3\.4 /);
    expect(changedTables(snap, snapshot(ctx.store.db))).toEqual([]);
    // Held in memory it would be 100 MB (twice over as a string); drained, a few socket buffers stay at a time.
    expect(peak).toBeLessThan(48 * 1024 * 1024);
    expect((await api().get('/healthz')).status).toBe(200);
  }, 120_000);
});

// ---------------------------------------------------------------------------------------------------------------
// The real HTTPS process: what only a socket shows

describe('over a real HTTPS socket', () => {
  let proc: RunningServer;
  let headers: Record<string, string>;

  beforeAll(async () => {
    const dataDir = tempDir('pigeon-hostile-');
    const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
    await createUserAdmin(store, systemClock).addUser({ username: 'alice', password: 'alice-password-1', role: 'user' });
    await store.close();
    proc = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_LMTP_ENABLED: 'false' });
    const deviceId = 'hostile-socket-device-01';
    const token = JSON.parse(
      (await raw(`POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${form(deviceId).length}\r\nConnection: close\r\n\r\n${form(deviceId)}`)).body,
    ).access_token as string;
    headers = { Authorization: `Bearer ${token}`, 'X-Device-Id': deviceId };
    const register = await raw(`POST /v1/devices HTTP/1.1\r\nHost: localhost\r\n${lines(headers)}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`);
    expect(register.status).toBe(201);
  }, 90_000);
  afterAll(async () => {
    if (proc) {
      const dir = proc.dataDir;
      await proc.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  const form = (deviceId: string) => `grant_type=password&client_id=pigeon-app&username=alice&password=alice-password-1&device_id=${deviceId}`;
  const lines = (h: Record<string, string>) => Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('');

  /** Sends bytes as they are over TLS and reads until the server closes (every request here says Connection: close). */
  function raw(bytes: string | Buffer): Promise<{ status: number; head: string; body: string }> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: proc.port, ca: proc.cert, servername: 'localhost' });
      const chunks: Buffer[] = [];
      const timer = setTimeout(() => socket.destroy(new Error('no answer in 10 s')), 10_000);
      socket.on('secureConnect', () => socket.write(bytes));
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', (err) => (chunks.length ? undefined : reject(err)));
      socket.on('close', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        const [head = '', ...rest] = text.split('\r\n\r\n');
        resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head, body: rest.join('\r\n\r\n') });
      });
    });
  }
  const get = (target: string | Buffer, extra = '') =>
    raw(Buffer.concat([Buffer.from('GET '), Buffer.isBuffer(target) ? target : Buffer.from(target), Buffer.from(` HTTP/1.1\r\nHost: localhost\r\n${lines(headers)}${extra}Connection: close\r\n\r\n`)]));
  const problemCode = (body: string) => (JSON.parse(body) as { code: string }).code;

  test.each([
    // [what, request, status, problem code or null when Node itself answers without a body]
    ['a 20 KB header (Node: 431, no body)', () => get('/v1/session', `X-Padding: ${'p'.repeat(20_000)}\r\n`), 431, null],
    ['a 20 KB URL (Node: 431, not 414: the request line counts against the header limit)', () => get(`/v1/items/${'a'.repeat(20_000)}`), 431, null],
    ['a bad percent-escape in the path', () => get('/v1/items/%E0%A4%A'), 400, 'invalidRequest'],
    ['raw invalid UTF-8 bytes in the path (Node: 400, no body)', () => get(Buffer.concat([Buffer.from('/v1/items/'), Buffer.from([0xff, 0xfe, 0xc3])])), 400, null],
    ['invalid UTF-8 in X-Device-Id', () => raw(Buffer.concat([Buffer.from(`GET /v1/session HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${headers.Authorization}\r\nX-Device-Id: `), Buffer.from([0xff, 0xfe]), Buffer.from('abcdefghijklmnopqr\r\nConnection: close\r\n\r\n')])), 400, 'any'],
    ['a NUL in the request line (Node: 400, no body)', () => raw('GET /v1/session\u0000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'), 400, null],
    ['Content-Length with Transfer-Encoding (Node: 400)', () => raw(`POST /v1/folders HTTP/1.1\r\nHost: localhost\r\n${lines(headers)}Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n`), 400, null],
    ['two different Content-Lengths (Node: 400)', () => raw(`POST /v1/folders HTTP/1.1\r\nHost: localhost\r\n${lines(headers)}Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 30\r\nConnection: close\r\n\r\n{}`), 400, null],
    ['a space before a header colon (Node: 400)', () => raw(`GET /v1/session HTTP/1.1\r\nHost : localhost\r\nConnection: close\r\n\r\n`), 400, null],
    ['a request line that is not HTTP (Node: 400)', () => raw('HELLO THERE\r\n\r\n'), 400, null],
  ] as const)('%s', async (_what, send, status, code) => {
    const res = await send();
    expect(Array.isArray(status) ? status : [status]).toContain(res.status);
    if (code === null) expect(res.body).toBe('');
    else {
      expect(res.head).toMatch(/content-type: application\/problem\+json/i);
      if (code !== 'any') expect(problemCode(res.body)).toBe(code);
    }
    const health = await get('/healthz');
    expect(health.status).toBe(200);
    expect(proc.proc.exitCode).toBeNull();
  });
});
