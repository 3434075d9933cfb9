/**
 * Sync figures over real HTTPS on this machine: initial 500-item window, no-change poll (latency and req/s at 16
 * connections), and incremental sync after 100 mixed changes, for mailboxes of N items.
 * `npx tsx bench/sync.ts 10000 1000000`. Large mailboxes are built once with bulk SQL and cached in the temp dir.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { openSqliteStore } from '../server/store/sqlite';
import { hashPassword } from '../server/auth/passwords';
import { startServer } from '../tests/helpers/server';

const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
if (sizes.length === 0) sizes.push(10_000);

async function build(n: number): Promise<string> {
  const dir = path.join(os.tmpdir(), `pigeon-bench-${n}`);
  if (fs.existsSync(path.join(dir, 'ready'))) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  const now = Date.UTC(2026, 0, 1);
  const tenant = store.tenants.create('Bench', now);
  const user = store.users.create({ tenantId: tenant.id, username: 'bench', email: 'b@x', displayName: 'B', role: 'user', passwordHash: await hashPassword('bench-password') }, now);
  store.mailboxes.create(user.id, now);
  const inbox = store.folders.byKind(user.id, 'inbox')!;
  const db = store.db;
  let modseq = store.mailboxes.get(user.id)!.highestModseq;
  const insertItem = db.prepare(
    `INSERT INTO items (id, user_id, folder_id, type, received_at, modseq, placed_modseq, change_key, is_read, subject,
       from_json, to_json, preview, body_size, created_at)
     VALUES (?, ?, ?, 'email', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertChange = db.prepare(
    `INSERT INTO changes (user_id, modseq, at, object_type, object_id, op, folder_id, received_at) VALUES (?, ?, ?, 'item', ?, 'created', ?, ?)`,
  );
  const from = JSON.stringify({ name: 'Sender Name', address: 'sender@example.org' });
  const to = JSON.stringify([{ name: 'Bench', address: 'bench@example.org' }]);
  const preview = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.';
  const chunk = 50_000;
  for (let start = 0; start < n; start += chunk) {
    db.transaction(() => {
      for (let i = start; i < Math.min(n, start + chunk); i++) {
        modseq++;
        const id = `b${String(i).padStart(15, '0')}`;
        const received = now - (n - i) * 60_000;
        insertItem.run(id, user.id, inbox.id, received, modseq, modseq, String(modseq), i % 3 ? 1 : 0, `Message number ${i}`, from, to, preview, 2048, now);
        insertChange.run(user.id, modseq, now, id, inbox.id, received);
      }
    })();
  }
  db.prepare('UPDATE mailboxes SET highest_modseq = ? WHERE user_id = ?').run(modseq, user.id);
  const unread = (db.prepare('SELECT count(*) AS n FROM items WHERE folder_id = ? AND is_read = 0').get(inbox.id) as { n: number }).n;
  db.prepare('UPDATE folders SET total_count = ?, unread_count = ?, modseq = ?, content_modseq = ? WHERE id = ?').run(n, unread, modseq, modseq, inbox.id);
  db.exec('ANALYZE');
  store.close();
  fs.writeFileSync(path.join(dir, 'ready'), '');
  console.log(`built ${n} items in ${Math.round(performance.now() - t0)} ms (${Math.round(fs.statSync(path.join(dir, 'pigeon.db')).size / 1e6)} MB)`);
  return dir;
}

function call(port: number, cert: string, method: string, p: string, headers: Record<string, string>, body?: string) {
  return new Promise<{ status: number; body: string; ms: number }>((resolve, reject) => {
    const t0 = performance.now();
    const req = https.request({ host: '127.0.0.1', port, method, path: p, headers, ca: cert, servername: 'localhost', agent }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: data, ms: performance.now() - t0 }));
    });
    req.once('error', reject);
    req.end(body);
  });
}
const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function measure(n: number) {
  const dataDir = await build(n);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-run-'));
  fs.copyFileSync(path.join(dataDir, 'pigeon.db'), path.join(work, 'pigeon.db'));
  const s = await startServer({ PIGEON_DATA_DIR: work, PIGEON_LOG_LEVEL: 'info', PIGEON_TOKEN_REQUESTS_PER_IP: '100000' }, 300_000);
  try {
    const deviceId = 'bench-device-0000000001';
    const tok = JSON.parse((await call(s.port, s.cert, 'POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, `grant_type=password&client_id=pigeon-app&username=bench&password=bench-password&device_id=${deviceId}`)).body);
    const h = { authorization: `Bearer ${tok.access_token}`, 'x-device-id': deviceId };
    await call(s.port, s.cert, 'POST', '/v1/devices', { ...h, 'content-type': 'application/json' }, '{}');
    const folders = JSON.parse((await call(s.port, s.cert, 'GET', '/v1/folders/sync', h)).body);
    const inbox = folders.created.find((f: { kind: string }) => f.kind === 'inbox');
    const base = `/v1/folders/${inbox.id}/items/sync`;

    const initial: number[] = [];
    let token = '';
    let bytes = 0;
    for (let i = 0; i < 15; i++) {
      const r = await call(s.port, s.cert, 'GET', `${base}?maxChanges=500`, h);
      initial.push(r.ms);
      token = JSON.parse(r.body).token;
      bytes = r.body.length;
    }
    const poll: number[] = [];
    for (let i = 0; i < 200; i++) poll.push((await call(s.port, s.cert, 'GET', `${base}?token=${encodeURIComponent(token)}`, h)).ms);

    // 100 mixed changes: 50 flags on held items, 25 new messages, 25 deletions of held items.
    const held: string[] = JSON.parse((await call(s.port, s.cert, 'GET', `${base}?maxChanges=500`, h)).body).created.map((i: { id: string }) => i.id);
    const incremental: number[] = [];
    const store = openSqliteStore(path.join(work, 'pigeon.db'));
    const user = store.users.byUsername('bench')!;
    for (let round = 0; round < 5; round++) {
      const before = token;
      store.transaction(() => {
        for (let i = 0; i < 50; i++) store.items.update(user.id, held[(round * 50 + i) % held.length]!, { isFlagged: round % 2 === 0 }, Date.now());
        for (let i = 0; i < 25; i++) store.items.create({ userId: user.id, folderId: inbox.id, type: 'email', receivedAt: Date.now() + round * 100 + i, subject: 'new' }, Date.now());
      });
      for (let i = 0; i < 25; i++) {
        const id = held.pop()!;
        if (store.items.byId(user.id, id)) store.items.delete(user.id, id, Date.now());
      }
      let total = 0;
      let more = true;
      let t = before;
      while (more) {
        const r = await call(s.port, s.cert, 'GET', `${base}?maxChanges=512&token=${encodeURIComponent(t)}`, h);
        total += r.ms;
        const page = JSON.parse(r.body);
        more = page.moreAvailable;
        t = page.token;
      }
      token = t;
      incremental.push(total);
    }
    store.close();

    const ac = await autocannon({
      url: `https://127.0.0.1:${s.port}${base}?token=${encodeURIComponent(token)}`,
      connections: 16,
      duration: 10,
      headers: h,
      servername: 'localhost',
      tlsOptions: { ca: s.cert },
    } as autocannon.Options);
    console.log(
      `${String(n).padStart(9)} items | initial 500 window ${median(initial).toFixed(1)} ms (${Math.round(bytes / 1024)} KiB) | ` +
        `no-change poll ${median(poll).toFixed(2)} ms, ${Math.round(ac.requests.average)} req/s @16 (p99 ${ac.latency.p99} ms) | ` +
        `incremental after 100 changes ${median(incremental).toFixed(1)} ms`,
    );
  } finally {
    await s.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

(async () => {
  for (const n of sizes) await measure(n);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
