/**
 * Attachment downloads against the real server process over HTTPS: throughput of a whole 20 MiB attachment (a few
 * rounds, median) and the latency of small ranges (4 KiB at random offsets, one keep-alive connection).
 * `npm run bench:attachments [rounds] [ranges]`.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { startServer } from '../tests/helpers/server';
import { tempDir } from '../tests/helpers/testApp';
import { openSqliteStore } from '../server/store/sqlite';
import { createUserAdmin } from '../server/admin/users';
import { systemClock } from '../server/clock';

const MiB = 1024 * 1024;
const SIZE = 20 * MiB;
const rounds = Number(process.argv[2] ?? 5);
const ranges = Number(process.argv[3] ?? 300);
const PASSWORD = 'bench-attachments-password';
const DEVICE = 'bench-attachments-000001';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

async function main() {
  const dataDir = tempDir('pigeon-bench-attachments-');
  const bytes = crypto.randomBytes(SIZE);
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const user = await createUserAdmin(store, systemClock).addUser({ username: 'bench', password: PASSWORD, role: 'user' });
  const inbox = (await store.folders.byKind(user.id, 'inbox'))!;
  const { id: itemId } = await store.items.create(
    {
      userId: user.id, folderId: inbox.id, type: 'email', receivedAt: Date.now(), subject: 'bench',
      attachments: [{ name: 'big.bin', contentType: 'application/octet-stream', isInline: false, contentId: null, content: bytes }],
    },
    Date.now(),
  );
  await store.close();

  const server = await startServer({ PIGEON_DATA_DIR: dataDir });
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: server.cert, servername: 'localhost' });
  const get = (urlPath: string, headers: Record<string, string>, method = 'GET', body?: string) =>
    new Promise<{ status: number; body: Buffer; ms: number }>((resolve, reject) => {
      const t0 = process.hrtime.bigint();
      const req = https.request({ host: '127.0.0.1', port: server.port, method, path: urlPath, headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
      });
      req.once('error', reject);
      req.end(body);
    });

  try {
    const form = `grant_type=password&client_id=pigeon-app&username=bench&password=${PASSWORD}&device_id=${DEVICE}`;
    const token = JSON.parse((await get('/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, 'POST', form)).body.toString());
    const headers = { authorization: `Bearer ${token.access_token}`, 'x-device-id': DEVICE };
    const reg = await get('/v1/devices', { ...headers, 'content-type': 'application/json' }, 'POST', '{}');
    if (reg.status !== 201) throw new Error(`register: ${reg.status}`);
    const url = `/v1/items/${itemId}/attachments/att1`;

    const first = await get(url, headers); // also the warm-up
    if (first.status !== 200 || !first.body.equals(bytes)) throw new Error('the downloaded bytes differ from the stored ones');
    const rates: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const r = await get(url, headers);
      if (r.body.length !== SIZE) throw new Error(`round ${i}: ${r.body.length} bytes`);
      rates.push(SIZE / MiB / (r.ms / 1000));
    }
    console.log(`whole 20 MiB attachment over HTTPS: median ${median(rates).toFixed(0)} MiB/s over ${rounds} rounds (min ${Math.min(...rates).toFixed(0)}, max ${Math.max(...rates).toFixed(0)})`);

    const latencies: number[] = [];
    for (let i = 0; i < ranges; i++) {
      const start = crypto.randomInt(0, SIZE - 4096);
      const r = await get(url, { ...headers, range: `bytes=${start}-${start + 4095}` });
      if (r.status !== 206 || !r.body.equals(bytes.subarray(start, start + 4096))) throw new Error(`range at ${start} is wrong`);
      latencies.push(r.ms);
    }
    console.log(`4 KiB range at a random offset: p50 ${median(latencies).toFixed(2)} ms, p99 ${percentile(latencies, 0.99).toFixed(2)} ms over ${ranges} requests`);
  } finally {
    agent.destroy();
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
