/**
 * Push over real HTTPS against the real process, with the production timings (events coalesced over 1 s): another
 * device's change reaches an open event stream within 2 s with the exact badge, a ping returns early on a change,
 * a stream outlives the request timeout, and SIGTERM ends streams and pings at once instead of waiting out the
 * shutdown timeout.
 */
import { readEventStream } from '../helpers/eventStream';
import https from 'node:https';
import path from 'node:path';
import { startServer, type RunningServer } from '../helpers/server';
import { hashPassword } from '../../server/identity/passwords';
import { openSqliteStore } from '../../server/store/sqlite';
import { tempDir } from '../helpers/testApp';

let server: RunningServer;
let messageId: string;
let inboxId: string;

/** alice with one unread message in her inbox, made in the store before start-up. */
async function seed(dataDir: string) {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const now = Date.now();
  const tenant = await store.tenants.create('T', now);
  const user = await store.users.create({ tenantId: tenant.id, username: 'alice', email: 'alice@x', displayName: 'Alice', role: 'user', passwordHash: await hashPassword('alice-password-1') }, now);
  await store.mailboxes.create(user.id, now);
  inboxId = (await store.folders.byKind(user.id, 'inbox'))!.id;
  messageId = (await store.items.create({ userId: user.id, folderId: inboxId, type: 'email', receivedAt: now, subject: 'Hello', from: { name: 'B', address: 'b@x' }, preview: 'hi' }, now)).id;
  await store.close();
}

beforeAll(async () => {
  const dataDir = tempDir('pigeon-e2e-push-');
  await seed(dataDir);
  // A short request timeout: a stream must outlive it (it limits receiving the request, not sending the response).
  server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_REQUEST_TIMEOUT: '2s', PIGEON_HEADERS_TIMEOUT: '1s' });
});
afterAll(async () => {
  await server?.stop();
});

function call(method: string, p: string, headers: Record<string, string> = {}, body?: string) {
  return new Promise<{ status: number; body: any; at: number }>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: server.port, method, path: p, headers, ca: server.cert, servername: 'localhost', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : undefined, at: Date.now() }));
    });
    req.once('error', reject);
    req.end(body);
  });
}

async function device(name: string): Promise<Record<string, string>> {
  const deviceId = `e2e-push-${name}-0123456789`;
  const form = `grant_type=password&client_id=pigeon-app&username=alice&password=alice-password-1&device_id=${deviceId}`;
  const token = await call('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
  expect(token.status).toBe(200);
  const headers = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': deviceId };
  expect((await call('POST', '/v1/devices', { ...headers, 'content-type': 'application/json' }, '{"friendlyName":"e2e"}')).status).toBe(201);
  return headers;
}

/** An event stream read as it arrives: `blocks` are the SSE blocks received so far. */
function openStream(headers: Record<string, string>) {
  return readEventStream(server, headers);
}

test('another device\'s change → an event on the open stream within 2 s with the exact badge; a ping returns early', async () => {
  const phone = await device('phone');
  const laptop = await device('laptop');
  const stream = openStream(phone);
  expect(await stream.ready).toBe(200);
  await new Promise((r) => setTimeout(r, 2500)); // past PIGEON_REQUEST_TIMEOUT: the stream must still be open
  const sent = Date.now();
  const patched = await call('PATCH', `/v1/items/${messageId}`, { ...laptop, 'content-type': 'application/json' }, '{"isRead":true}');
  expect(patched.status).toBe(200);
  const e = await stream.event(0);
  expect(e.at - sent).toBeLessThan(2000);
  const data = JSON.parse(/data: (.*)/.exec(e.text)![1]!);
  expect(data).toEqual({ folders: { [inboxId]: { unreadCount: 0 } }, hierarchyChanged: false });

  // The laptop syncs the inbox, then long-polls it; the phone marks the message unread again.
  const sync = await call('GET', `/v1/folders/${inboxId}/items/sync`, laptop);
  expect(sync.status).toBe(200);
  const t0 = Date.now();
  const waiting = call('POST', '/v1/ping', { ...laptop, 'content-type': 'application/json' }, JSON.stringify({ folderIds: [inboxId], heartbeatSeconds: 60 }));
  await new Promise((r) => setTimeout(r, 300));
  expect((await call('PATCH', `/v1/items/${messageId}`, { ...phone, 'content-type': 'application/json' }, '{"isRead":false}')).status).toBe(200);
  const answered = await waiting;
  expect(answered.status).toBe(200);
  expect(answered.body).toEqual({ changed: [inboxId] });
  expect(answered.at - t0).toBeLessThan(3000);
  const badge = await stream.event(1);
  expect(JSON.parse(/data: (.*)/.exec(badge.text)![1]!).folders[inboxId]).toEqual({ unreadCount: 1 });
}, 20_000);

test('SIGTERM ends open streams and waiting pings at once and exits without waiting out the shutdown timeout', async () => {
  const phone = await device('phone2');
  const laptop = await device('laptop2');
  const stream = openStream(phone);
  expect(await stream.ready).toBe(200);
  expect((await call('GET', `/v1/folders/${inboxId}/items/sync`, laptop)).status).toBe(200);
  const waiting = call('POST', '/v1/ping', { ...laptop, 'content-type': 'application/json' }, JSON.stringify({ folderIds: [inboxId], heartbeatSeconds: 1740 }));
  await new Promise((r) => setTimeout(r, 300));
  const killedAt = Date.now();
  server.proc.kill('SIGTERM');
  const ping = await waiting;
  expect(ping.status).toBe(200);
  expect(ping.body).toEqual({ changed: [] });
  expect(ping.at - killedAt).toBeLessThan(2000);
  await stream.ended(2000);
  const exit = await server.exited;
  expect(exit.code).toBe(0);
  expect(exit.at - killedAt).toBeLessThan(5000); // the shutdown timeout is 30 s
  expect(server.logs.find((l) => l.msg === 'stopped')).toMatchObject({ forced: false });
}, 20_000);
