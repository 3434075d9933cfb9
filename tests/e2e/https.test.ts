/**
 * The real server process over real HTTPS on an ephemeral port, with the generated development certificate and a
 * real SQLite file: TLS policy, a token → session walk, slow-header reaping, start-up config errors and graceful
 * shutdown.
 */
import tls from 'node:tls';
import https from 'node:https';
import { spawnSync } from 'node:child_process';
import { startServer, ROOT, type RunningServer } from '../helpers/server';
import { TLS12_CIPHERS } from '../../server/tls';
import { hashPassword } from '../../server/identity/passwords';
import { openSqliteStore } from '../../server/store/sqlite';
import { tempDir } from '../helpers/testApp';
import path from 'node:path';

let server: RunningServer;

/** Creates alice directly in the store before start-up, so the e2e walk signs in to a real account. */
async function seedAlice(dataDir: string) {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const tenant = await store.tenants.create('T', Date.now());
  const user = await store.users.create(
    { tenantId: tenant.id, username: 'alice', email: 'alice@x', displayName: 'Alice', role: 'user', passwordHash: await hashPassword('alice-password-1') },
    Date.now(),
  );
  await store.mailboxes.create(user.id, Date.now());
  await store.close();
}

beforeAll(async () => {
  const dataDir = tempDir('pigeon-e2e-');
  await seedAlice(dataDir);
  server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_HEADERS_TIMEOUT: '2s' });
});
afterAll(async () => {
  await server?.stop();
});

function handshake(options: tls.ConnectionOptions): Promise<{ protocol: string | null; cipher: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: server.port, ca: server.cert, servername: 'localhost', ...options }, () => {
      const result = { protocol: socket.getProtocol(), cipher: socket.getCipher().name };
      socket.end();
      resolve(result);
    });
    socket.once('error', reject);
  });
}

function httpsRequest(method: string, path: string, headers: Record<string, string> = {}, body?: string) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: server.port, method, path, headers, ca: server.cert, servername: 'localhost', agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

describe('TLS policy', () => {
  test('TLS 1.1 is refused', async () => {
    await expect(
      handshake({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
    ).rejects.toThrow(/protocol version|unsupported protocol|no protocols available|wrong version/i);
  });

  test('TLS 1.2 and 1.3 are accepted with an allowlisted suite', async () => {
    const v12 = await handshake({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    expect(v12.protocol).toBe('TLSv1.2');
    expect(TLS12_CIPHERS).toContain(v12.cipher);
    const v13 = await handshake({ minVersion: 'TLSv1.3' });
    expect(v13.protocol).toBe('TLSv1.3');
  });

  test.each(TLS12_CIPHERS.filter((c) => c.includes('ECDSA')))('TLS 1.2 suite %s is negotiable (EC certificate)', async (cipher) => {
    const r = await handshake({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: cipher });
    expect(r.cipher).toBe(cipher);
  });

  test.each(['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA384', 'AES128-GCM-SHA256', 'AES256-SHA'])(
    'non-allowlisted suite %s is refused',
    async (cipher) => {
      await expect(handshake({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: `${cipher}@SECLEVEL=0` })).rejects.toThrow();
    },
  );

  // Checked under TLS 1.3, where the group is only the key exchange (under 1.2 the P-256 certificate also needs P-256).
  test('key exchange groups: X25519, P-256 and P-384 accepted, P-521 refused', async () => {
    for (const curve of ['X25519', 'prime256v1', 'secp384r1']) {
      await expect(handshake({ minVersion: 'TLSv1.3', ecdhCurve: curve })).resolves.toMatchObject({ protocol: 'TLSv1.3' });
    }
    await expect(handshake({ minVersion: 'TLSv1.3', ecdhCurve: 'secp521r1' })).rejects.toThrow(/handshake failure/);
  });
});

describe('over real HTTPS', () => {
  test('token → session, with HSTS', async () => {
    const form = 'grant_type=password&client_id=pigeon-app&username=alice&password=alice-password-1';
    const token = await httpsRequest('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
    expect(token.status).toBe(200);
    const access = JSON.parse(token.body).access_token;
    const session = await httpsRequest('GET', '/v1/session', { authorization: `Bearer ${access}` });
    expect(session.status).toBe(200);
    expect(JSON.parse(session.body).user.username).toBe('alice');
    expect(session.headers['strict-transport-security']).toBe('max-age=63072000; includeSubDomains');
    // The request log names the user and never the token or password (the line is written as the response closes).
    let line: Record<string, unknown> | undefined;
    for (let i = 0; i < 50 && !line; i++) {
      line = server.logs.find((l) => l.route === '/v1/session');
      if (!line) await new Promise((r) => setTimeout(r, 20));
    }
    expect(line).toMatchObject({ status: 200, user: expect.any(String) });
    expect(JSON.stringify(server.logs)).not.toContain('alice-password-1');
    expect(JSON.stringify(server.logs)).not.toContain(access);
  });

  test('a client that never finishes its headers is disconnected (headersTimeout + sweep)', async () => {
    const started = Date.now();
    const closedAfter = await new Promise<number>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: server.port, ca: server.cert, servername: 'localhost' }, () => {
        socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ');
      });
      socket.on('data', () => undefined);
      socket.once('close', () => resolve(Date.now() - started));
      socket.once('error', () => undefined);
      setTimeout(() => reject(new Error('still open after 10 s')), 10_000).unref();
    });
    // 2 s headersTimeout in this run + the 2 s sweep; the default 10 s + 2 s stays within 15 s.
    expect(closedAfter).toBeLessThan(6_000);
  });
});

describe('start-up', () => {
  test('logs ready with its start time', () => {
    const ready = server.logs.find((l) => l.msg === 'ready');
    expect(ready).toMatchObject({ port: server.port, readyMs: expect.any(Number) });
  });

  test('a bad config value stops start-up naming the key', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, PIGEON_PORT: 'eighty', PIGEON_DATA_DIR: tempDir() },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('PIGEON_PORT');
    const typo = spawnSync(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, PIGEON_PROT: '8443', PIGEON_DATA_DIR: tempDir() },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(typo.status).toBe(2);
    expect(typo.stderr).toContain('PIGEON_PROT: unknown setting');
  });
});

describe('graceful shutdown', () => {
  test('SIGTERM lets slow in-flight requests finish, refuses new ones, and exits 0 soon after', async () => {
    const s = await startServer();
    try {
      // Two requests whose bodies arrive slowly (1.5 s): in flight when SIGTERM lands.
      const BODY = 'grant_type=password&client_id=pigeon-app';
      const slow = () =>
        new Promise<{ status: number; at: number }>((resolve, reject) => {
          const req = https.request(
            { host: '127.0.0.1', port: s.port, method: 'POST', path: '/oauth2/token', ca: s.cert, servername: 'localhost', agent: false,
              headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(BODY.length) } },
            (res) => {
              res.resume();
              res.on('end', () => resolve({ status: res.statusCode!, at: Date.now() }));
            },
          );
          req.once('error', reject);
          req.write(BODY.slice(0, 30));
          setTimeout(() => req.end(BODY.slice(30)), 1_500);
        });
      const inFlight = [slow(), slow()];
      await new Promise((r) => setTimeout(r, 300));
      s.proc.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));
      // New connections are refused while draining.
      await expect(
        new Promise((resolve, reject) => {
          const sock = tls.connect({ host: '127.0.0.1', port: s.port, ca: s.cert, servername: 'localhost' }, () => resolve('connected'));
          sock.once('error', reject);
        }),
      ).rejects.toThrow(/ECONNREFUSED/);
      const results = await Promise.all(inFlight);
      for (const r of results) expect(r.status).toBe(400); // completed normally (the form lacks credentials)
      const exit = await s.exited;
      expect(exit.code).toBe(0);
      const lastDone = Math.max(...results.map((r) => r.at));
      expect(exit.at - lastDone).toBeLessThan(1_000);
      expect(s.logs.some((l) => l.msg === 'stopped' && l.forced === false)).toBe(true);
    } finally {
      await s.stop();
    }
  });
});
