/**
 * Sending through a relay with the real process: a test SMTP server on loopback stands in for the smarthost. Mail
 * for remote recipients is relayed exactly once with the right envelope and no Bcc header, is retried after the
 * relay's 451, and is not lost when the server dies (kill -9) while the relay is down.
 */
import fs from 'node:fs';
import { type AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerAddress } from 'smtp-server';
import { httpsCall, startServer, type RunningServer } from '../helpers/server';
import { pickPort } from '../helpers/ports';
import { tempDir } from '../helpers/testApp';

const RELAY_USER = 'pigeon-relay';
const RELAY_PASS = 'relay-secret-7f3a9c';
const ALICE = 'alice@demo.pigeon.test';
const BOB = 'bob@demo.pigeon.test';

interface Received {
  from: string;
  to: string[];
  raw: string;
  at: number;
}

/** An SMTP relay on loopback that requires a login, records what it accepts, and refuses the next N messages with 451. */
async function testRelay(port = 0) {
  const received: Received[] = [];
  const refusals: number[] = [];
  const state = { refuseNext: 0 };
  const server = new SMTPServer({
    disabledCommands: ['STARTTLS'],
    allowInsecureAuth: true, // loopback only
    authMethods: ['PLAIN', 'LOGIN'],
    logger: false,
    onAuth(auth, _session, cb) {
      if (auth.username === RELAY_USER && auth.password === RELAY_PASS) cb(null, { user: RELAY_USER });
      else cb(Object.assign(new Error('5.7.8 Authentication failed'), { responseCode: 535 }));
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        if (state.refuseNext > 0) {
          state.refuseNext--;
          refusals.push(Date.now());
          return cb(Object.assign(new Error('4.3.0 Try again later'), { responseCode: 451 }));
        }
        received.push({
          from: (session.envelope.mailFrom as SMTPServerAddress).address,
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
          at: Date.now(),
        });
        cb();
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    received,
    refusals,
    state,
    port: (server.server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A loopback port nothing listens on (taken and released at once). */
const call = httpsCall;

/** Alice on a registered device. */
async function alice(server: RunningServer): Promise<Record<string, string>> {
  const deviceId = 'e2e-send-relay-0123456789';
  const form = `grant_type=password&client_id=pigeon-app&username=alice&password=alice-demo-pass&device_id=${deviceId}`;
  const token = await call(server, 'POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
  expect(token.status).toBe(200);
  const headers = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': deviceId };
  expect([200, 201]).toContain((await call(server, 'POST', '/v1/devices', { ...headers, 'content-type': 'application/json' }, '{}')).status);
  return headers;
}

function send(server: RunningServer, headers: Record<string, string>, message: object) {
  return call(server, 'POST', '/v1/messages/send', { ...headers, 'content-type': 'application/json' }, JSON.stringify(message));
}

async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const env = (relayPort: number) => ({
  PIGEON_DEMO: 'true',
  PIGEON_MAIL_HOSTNAME: 'mail.pigeon.test',
  PIGEON_SMTP_RELAY_URL: `smtp://${RELAY_USER}:${RELAY_PASS}@127.0.0.1:${relayPort}`,
  PIGEON_OUTBOX_RETRY_BASE: '1s',
});
const attempts = (server: RunningServer) => server.logs.filter((l) => l.msg === 'outbox relay attempt');
const expectNoRelayPassword = (server: RunningServer) =>
  expect(JSON.stringify(server.logs) + server.stderr.join('')).not.toContain(RELAY_PASS);

describe('one server and a working relay', () => {
  let relay: Awaited<ReturnType<typeof testRelay>>;
  let server: RunningServer;
  let headers: Record<string, string>;

  beforeAll(async () => {
    relay = await testRelay();
    server = await startServer(env(relay.port), 60_000);
    headers = await alice(server);
  }, 70_000);
  afterAll(async () => {
    await server?.stop();
    await relay?.close();
  });
  beforeEach(() => {
    relay.received.length = 0;
  });

  test('remote recipients are relayed exactly once, with the sender\'s envelope and no Bcc header', async () => {
    const res = await send(server, headers, {
      to: [{ name: 'Zed', address: 'zed@remote.example' }, { address: BOB }],
      bcc: [{ address: 'hidden@remote.example' }],
      subject: 'Through the relay',
      body: { contentType: 'text', content: 'Hello from Pigeon.' },
    });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ localRecipients: [BOB], queuedRecipients: ['zed@remote.example', 'hidden@remote.example'], rejectedRecipients: [] });
    await until('the relay to receive the message', () => relay.received.length > 0);
    await until('the logged relay pass', () => attempts(server).at(-1)?.state === 'sent');
    await sleep(1500); // a second pass (the timer wakes at least 1 s apart) would have sent it again by now
    expect(relay.received).toHaveLength(1);
    const got = relay.received[0]!;
    expect(got.from).toBe(ALICE);
    expect(got.to.sort()).toEqual(['hidden@remote.example', 'zed@remote.example']);
    expect(got.raw).toContain(`Message-ID: ${res.body.internetMessageId}`);
    expect(got.raw).toMatch(/^From: Alice Andersen <alice@demo\.pigeon\.test>\r$/m);
    expect(got.raw).not.toMatch(/^bcc:/im);
    expect(got.raw).not.toContain('hidden@remote.example');
    expect(attempts(server).at(-1)).toMatchObject({ state: 'sent', accepted: 2 });
    expectNoRelayPassword(server);
  });

  test('a 451 from the relay is retried after the retry base, and the message goes once', async () => {
    relay.state.refuseNext = 1;
    const sentAt = Date.now();
    const res = await send(server, headers, { to: [{ address: 'later@remote.example' }], subject: 'Second try', body: { contentType: 'text', content: 'x' } });
    expect(res.status).toBe(202);
    await until('the retried message', () => relay.received.length > 0);
    expect(relay.refusals.length).toBe(1);
    expect(relay.refusals[0]!).toBeGreaterThanOrEqual(sentAt);
    // PIGEON_OUTBOX_RETRY_BASE=1s: the retry waits about a second after the refusal.
    expect(relay.received[0]!.at - relay.refusals[0]!).toBeGreaterThanOrEqual(900);
    expect(relay.received[0]!.raw).toContain(`Message-ID: ${res.body.internetMessageId}`);
    // The relay has the message before the server has logged the pass that sent it: wait for that log line.
    await until('the logged relay pass', () => attempts(server).at(-1)?.state === 'sent');
    expect(attempts(server).slice(-2)).toEqual([
      expect.objectContaining({ state: 'queued', deferred: 1, error: expect.stringContaining('451') }),
      expect.objectContaining({ state: 'sent', accepted: 1 }),
    ]);
    await sleep(1500);
    expect(relay.received).toHaveLength(1);
  });
});

test('queued mail survives kill -9 while the relay is down, and is relayed once after the restart', async () => {
  const dataDir = tempDir('pigeon-e2e-send-');
  const port = await pickPort();
  let first: RunningServer | undefined;
  let second: RunningServer | undefined;
  let relay: Awaited<ReturnType<typeof testRelay>> | undefined;
  try {
    first = await startServer({ ...env(port), PIGEON_DATA_DIR: dataDir }, 60_000);
    const res = await send(first, await alice(first), { to: [{ address: 'patient@remote.example' }], subject: 'Do not lose me', body: { contentType: 'text', content: 'x' } });
    expect(res.status).toBe(202);
    const firstServer = first;
    await until('a failed relay attempt', () => attempts(firstServer).length > 0);
    expect(attempts(first)[0]).toMatchObject({ state: 'queued', deferred: 1 });
    first.proc.kill('SIGKILL');
    await first.exited;

    relay = await testRelay(port);
    second = await startServer({ ...env(port), PIGEON_DATA_DIR: dataDir }, 60_000);
    const live = relay;
    await until('the relayed message after the restart', () => live.received.length > 0);
    await sleep(1500);
    expect(relay.received).toHaveLength(1);
    expect(relay.received[0]).toMatchObject({ from: ALICE, to: ['patient@remote.example'] });
    expect(relay.received[0]!.raw).toContain(`Message-ID: ${res.body.internetMessageId}`);
    expectNoRelayPassword(first);
    expectNoRelayPassword(second);
  } finally {
    await first?.stop();
    await second?.stop();
    await relay?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}, 90_000);
