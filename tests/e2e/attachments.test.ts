/**
 * A 20 MiB attachment downloaded from the real server process over HTTPS: the bytes arrive intact, and while the
 * client stalls the server's resident memory has grown by far less than the attachment (the download streams from
 * the store a chunk at a time, as fast as the client takes it). A range from the middle arrives intact too. The message is put into the store file before the server
 * starts, through the store itself.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { startServer, type RunningServer } from '../helpers/server';
import { tempDir } from '../helpers/testApp';
import { openSqliteStore } from '../../server/store/sqlite';
import { createUserAdmin } from '../../server/admin/users';
import { systemClock } from '../../server/clock';

const MiB = 1024 * 1024;
const SIZE = 20 * MiB;
const PASSWORD = 'attachments-e2e-password';
const DEVICE = 'e2e-attachments-0123456789';

let server: RunningServer;
let dataDir: string;
let itemId: string;
let attachment: Buffer;
let headers: Record<string, string>;

beforeAll(async () => {
  dataDir = tempDir('pigeon-e2e-attachments-');
  attachment = crypto.randomBytes(SIZE);
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  try {
    const user = await createUserAdmin(store, systemClock).addUser({ username: 'carol', password: PASSWORD, role: 'user' });
    const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
    itemId = (await store.items.create(
      {
        userId: user.id, folderId: inbox.id, type: 'email', receivedAt: Date.now(), subject: 'Big file',
        attachments: [{ name: 'big.bin', contentType: 'application/octet-stream', isInline: false, contentId: null, content: attachment }],
      },
      Date.now(),
    )).id;
  } finally {
    await store.close();
  }
  server = await startServer({ PIGEON_DATA_DIR: dataDir }, 60_000);
  const form = `grant_type=password&client_id=pigeon-app&username=carol&password=${PASSWORD}&device_id=${DEVICE}`;
  const token = JSON.parse((await call('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form)).body.toString());
  headers = { authorization: `Bearer ${token.access_token}`, 'x-device-id': DEVICE };
  expect((await call('POST', '/v1/devices', { ...headers, 'content-type': 'application/json' }, '{}')).status).toBe(201);
}, 90_000);

afterAll(async () => {
  await server?.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

function call(method: string, urlPath: string, extra: Record<string, string> = {}, body?: string) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }>((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: server.port, method, path: urlPath, headers: extra, ca: server.cert, servername: 'localhost' },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

/** The server process's resident set in bytes, from /proc (Linux). */
function rssOf(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

const sha256 = (bytes: Buffer) => crypto.createHash('sha256').update(bytes).digest('hex');

test('a 20 MiB attachment streams over HTTPS: intact bytes; the server reads only as far as the client takes', async () => {
  const url = `/v1/items/${itemId}/attachments/att1`;
  // Warm the path (TLS, JIT, statement cache) so the baseline is the steady state, not start-up.
  expect((await call('GET', url, { ...headers, range: 'bytes=0-1023' })).status).toBe(206);
  const pid = server.proc.pid!;
  const baseline = rssOf(pid);

  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, rssOf(pid))), 10);
  const hash = crypto.createHash('sha256');
  let received = 0;
  let stalledGrowth = NaN;
  const started = process.hrtime.bigint();
  const status = await new Promise<number>((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port: server.port, path: url, headers, ca: server.cert, servername: 'localhost' }, (res) => {
        // The client takes nothing for a while first: a streaming server waits, a buffering one reads it all.
        res.pause();
        setTimeout(() => {
          stalledGrowth = peak - baseline;
          res.resume();
        }, 500);
        res.on('data', (c: Buffer) => {
          hash.update(c); // hashed as it arrives: this process keeps no copy either
          received += c.length;
        });
        res.on('end', () => resolve(res.statusCode!));
        res.on('error', reject);
      })
      .once('error', reject);
  });
  clearInterval(sampler);
  peak = Math.max(peak, rssOf(pid));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;

  expect(status).toBe(200);
  expect(received).toBe(SIZE);
  expect(hash.digest('hex')).toBe(sha256(attachment));
  const growth = peak - baseline;
  console.log(
    `20 MiB over HTTPS in ${seconds.toFixed(2)} s (after a 0.5 s stall); server RSS ${(baseline / MiB).toFixed(1)} MiB, ` +
      `+${(stalledGrowth / MiB).toFixed(1)} MiB while the client stalled, +${(growth / MiB).toFixed(1)} MiB at the peak`,
  );
  // While the client takes nothing, a streaming server holds at most a chunk and the socket's buffers; one that
  // read the blob first holds all 20 MiB (and a copy). RSS also moves with the allocator and the collector: it grew
  // 3.6–5.0 MiB in eight runs and once 10.0 MiB, so the bound sits between that noise and the 20 MiB it must catch.
  expect(stalledGrowth).toBeLessThan(15 * MiB);
  // Each 256 KiB chunk the store returns is a fresh Buffer that lives until V8 next collects, so a full-speed
  // download leaves up to its size in uncollected garbage (it plateaus: repeated downloads reuse that memory). A
  // server that read the whole blob first would hold it and a concatenated copy: twice the size.
  expect(growth).toBeLessThan(1.5 * SIZE);
}, 60_000);

test('a range from the middle of the 20 MiB arrives intact', async () => {
  const first = 10 * MiB - 12_345;
  const last = first + 3 * MiB;
  const res = await call('GET', `/v1/items/${itemId}/attachments/att1`, { ...headers, range: `bytes=${first}-${last}` });
  expect(res.status).toBe(206);
  expect(res.headers['content-range']).toBe(`bytes ${first}-${last}/${SIZE}`);
  expect(res.body.length).toBe(last - first + 1);
  expect(sha256(res.body)).toBe(sha256(attachment.subarray(first, last + 1)));
}, 30_000);
