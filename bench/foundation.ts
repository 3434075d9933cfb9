/**
 * Quick foundation figures on this machine: start-to-ready, POST /oauth2/token (password and refresh grants) and
 * authenticated GET /v1/session with and without the device gate, using autocannon over real HTTPS against the real
 * server process. `npx tsx bench/foundation.ts [seconds]`. The full suite (ratios against a ceiling) is `npm run bench`.
 */
import https from 'node:https';
import autocannon from 'autocannon';
import fs from 'node:fs';
import { startServer } from '../tests/helpers/server';
import { tempDir } from '../tests/helpers/testApp';

const seconds = Number(process.argv[2] ?? 10);

function call(port: number, cert: string, method: string, path: string, headers: Record<string, string>, body?: string) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, method, path, headers, ca: cert, servername: 'localhost' }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: data }));
    });
    req.once('error', reject);
    req.end(body);
  });
}

async function load(name: string, opts: autocannon.Options) {
  const r = await autocannon({ connections: 16, duration: seconds, ...opts });
  const ok = r['2xx'];
  console.log(`${name.padEnd(44)} ${Math.round(r.requests.average).toString().padStart(6)} req/s   p50 ${r.latency.p50} ms   p99 ${r.latency.p99} ms   2xx ${ok}/${r.requests.total}`);
}

async function main() {
  const t0 = Date.now();
  const dataDir = tempDir('pigeon-bench-');
  const s = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_DEMO: 'true', PIGEON_TOKEN_REQUESTS_PER_IP: '1000000', PIGEON_LOGIN_FAILURES_PER_USER: '10000' }, 120_000);
  console.log(`first start with demo seed: ready after ${Date.now() - t0} ms (process-reported readyMs ${s.logs.find((l) => l.msg === 'ready')?.readyMs ?? 'n/a'})`);
  await s.stop().catch(() => undefined);
  const s2 = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_TOKEN_REQUESTS_PER_IP: '1000000', PIGEON_LOGIN_FAILURES_PER_USER: '10000' });
  console.log(`restart on the seeded store: readyMs ${s2.logs.find((l) => l.msg === 'ready')?.readyMs ?? '(log level warn)'}`);
  const url = `https://127.0.0.1:${s2.port}`;
  const form = 'grant_type=password&client_id=pigeon-app&username=alice&password=alice-demo-pass&device_id=bench-device-000000001';
  const token = JSON.parse((await call(s2.port, s2.cert, 'POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form)).body);
  const auth = { authorization: `Bearer ${token.access_token}` };
  const reg = await call(s2.port, s2.cert, 'POST', '/v1/devices', { ...auth, 'x-device-id': 'bench-device-000000001', 'content-type': 'application/json' }, '{}');
  if (reg.status !== 201) throw new Error(`register: ${reg.status} ${reg.body}`);
  // autocannon's TLS client: trust the dev certificate through the ca option of its tls connect.
  const common = { url, servername: 'localhost', tlsOptions: { ca: s2.cert } } as autocannon.Options;
  await load('GET /v1/session (token only)', { ...common, requests: [{ method: 'GET', path: '/v1/session', headers: auth }] });
  await load('GET /v1/session (token + registered device)', { ...common, requests: [{ method: 'GET', path: '/v1/session', headers: { ...auth, 'x-device-id': 'bench-device-000000001' } }] });
  await load('GET /v1/devices (token + device gate)', { ...common, requests: [{ method: 'GET', path: '/v1/devices', headers: { ...auth, 'x-device-id': 'bench-device-000000001' } }] });
  await load('POST /oauth2/token password grant (scrypt)', { ...common, requests: [{ method: 'POST', path: '/oauth2/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.replace('&device_id=bench-device-000000001', '') }] });
  await s2.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
