/**
 * Soak (issue 8, deep tier only: skipped unless SOAK_MINUTES is set). SOAK_MINUTES of mixed sync traffic at over
 * 1,000 requests/s against the real server process over HTTPS: 16 devices (so the production per-device rate limit
 * stays on and is not the bottleneck), each an autocannon instance with 2 connections, each request kind an app
 * makes (incremental item and hierarchy syncs that follow their tokens, item reads, flag changes, search, session,
 * health). Every 10 s the server's RSS (/proc/<pid>/status) and open descriptors (/proc/<pid>/fd) are sampled;
 * after a warm-up, the least-squares slope of RSS must stay under 1 MiB/min and the descriptor count flat.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import autocannon from 'autocannon';
import { devCertificate, ROOT } from '../helpers/server';
import { Client } from '../helpers/crashHarness';
import { cachedMailbox, workingCopy, BENCH_USER } from '../../bench/lib/mailbox';

const MINUTES = Number(process.env.SOAK_MINUTES ?? 0);
const DEVICES = 16;
/** Requests per second each device sends: 16 × 75 = 1,200, under the default per-device limit of 100/s. */
const DEVICE_RATE = 75;
const SAMPLE_MS = 10_000;

/** The real server with its log going to a file: parsing a million request lines here would load the machine. */
async function startLogged(dataDir: string) {
  const { certFile, keyFile, cert } = await devCertificate(dataDir);
  const logFile = path.join(dataDir, 'soak.log');
  const out = fs.openSync(logFile, 'a');
  const proc = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PIGEON_HOST: '127.0.0.1', PIGEON_PORT: '0', PIGEON_LMTP_PORT: '0', PIGEON_METRICS_PORT: '0', PIGEON_DEMO: 'false', PIGEON_PASSWORD_GRANT: 'true', PIGEON_DATA_DIR: dataDir, PIGEON_TLS_CERT: certFile, PIGEON_TLS_KEY: keyFile },
    stdio: ['ignore', out, out],
  });
  fs.closeSync(out);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve));
  for (let waited = 0; ; waited += 50) {
    const line = fs.readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('"msg":"ready"'));
    if (line) return { proc, exited, cert, port: JSON.parse(line).port as number, logFile };
    if (waited > 120_000 || proc.exitCode !== null) throw new Error(`server not ready: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * RSS growth in MiB per minute, robust to garbage-collection spikes: the Theil–Sen estimate (the median of the
 * slopes between every pair of samples).
 */
function slopePerMinute(samples: Array<{ at: number; value: number }>): number {
  const slopes: number[] = [];
  for (let i = 0; i < samples.length; i++) {
    for (let j = i + 1; j < samples.length; j++) slopes.push((samples[j]!.value - samples[i]!.value) / ((samples[j]!.at - samples[i]!.at) / 60_000));
  }
  slopes.sort((a, b) => a - b);
  return slopes[slopes.length >> 1]!;
}

/** One device's traffic: every kind of request an app makes, the syncs following the tokens they are given. */
function deviceRequests(headers: Record<string, string>, inbox: string, ids: string[]): autocannon.Request[] {
  const state = { inbox: '', folders: '', n: 0 };
  const take = (key: 'inbox' | 'folders') => (status: number, body: string) => {
    if (status === 200) state[key] = JSON.parse(body).token;
  };
  const nextId = () => ids[state.n++ % ids.length]!;
  const inboxSync: autocannon.Request = {
    method: 'GET',
    setupRequest: (r) => ({ ...r, path: `/v1/folders/${inbox}/items/sync?maxChanges=100${state.inbox ? `&token=${encodeURIComponent(state.inbox)}` : ''}` }),
    onResponse: take('inbox'),
  };
  const folderSync: autocannon.Request = {
    method: 'GET',
    setupRequest: (r) => ({ ...r, path: `/v1/folders/sync${state.folders ? `?token=${encodeURIComponent(state.folders)}` : ''}` }),
    onResponse: take('folders'),
  };
  const read: autocannon.Request = { method: 'GET', setupRequest: (r) => ({ ...r, path: `/v1/items/${nextId()}` }) };
  const flag: autocannon.Request = {
    method: 'PATCH',
    headers: { ...headers, 'content-type': 'application/json' },
    setupRequest: (r) => ({ ...r, path: `/v1/items/${nextId()}`, body: JSON.stringify({ isFlagged: state.n % 2 === 0 }) }),
  };
  return [
    inboxSync, folderSync, read, inboxSync, { method: 'GET', path: '/v1/session' }, inboxSync, read, folderSync, inboxSync, flag,
    inboxSync, { method: 'GET', path: '/v1/search?q=invoice&limit=10' }, read, inboxSync, folderSync, { method: 'GET', path: '/healthz' }, inboxSync,
    { method: 'GET', path: '/v1/session' }, inboxSync, read,
  ];
}

const maybe = MINUTES > 0 ? test : test.skip;

maybe(`soak: ${MINUTES ? `${MINUTES} min` : 'SOAK_MINUTES'} of mixed sync traffic at ≥ 1,000 requests/s, flat RSS and descriptors`, async () => {
  const { file } = await cachedMailbox(10_000, () => undefined);
  const dataDir = workingCopy(file);
  const server = await startLogged(dataDir);
  const pid = server.proc.pid!;
  try {
    const setup = new Client(server.port, server.cert);
    const devices: Array<{ headers: Record<string, string>; inbox: string; ids: string[] }> = [];
    for (let d = 0; d < DEVICES; d++) {
      const deviceId = `soak-device-${String(d).padStart(8, '0')}`;
      const form = new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username: BENCH_USER.username, password: BENCH_USER.password, device_id: deviceId });
      const token = await setup.request('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form.toString());
      const headers = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': deviceId };
      expect((await setup.request('POST', '/v1/devices', headers, { friendlyName: `soak ${d}` })).status).toBe(201);
      const inbox = (await setup.request('GET', '/v1/folders/sync', headers)).body.created.find((f: { kind: string }) => f.kind === 'inbox').id;
      const page = await setup.request('GET', `/v1/folders/${inbox}/items/sync?maxChanges=100`, headers);
      devices.push({ headers, inbox, ids: page.body.created.map((i: { id: string }) => i.id) });
    }
    setup.close();

    const samples: Array<{ at: number; rss: number; anon: number; fds: number }> = [];
    const t0 = Date.now();
    const sample = () => {
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      const kB = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) / 1024;
      samples.push({ at: Date.now() - t0, rss: kB('VmRSS'), anon: kB('RssAnon'), fds: fs.readdirSync(`/proc/${pid}/fd`).length });
    };
    sample();
    const sampler = setInterval(sample, SAMPLE_MS);
    const statuses: Record<string, number> = {};
    const results = await Promise.all(
      devices.map(
        (d) =>
          new Promise<autocannon.Result>((resolve, reject) => {
            const instance = autocannon(
              {
                url: `https://127.0.0.1:${server.port}`,
                connections: 2,
                overallRate: DEVICE_RATE,
                duration: MINUTES * 60,
                headers: d.headers,
                requests: deviceRequests(d.headers, d.inbox, d.ids),
                // The dev certificate is self-signed; this traffic never leaves loopback.
                tlsOptions: { rejectUnauthorized: false },
              } as autocannon.Options,
              (err, r) => (err ? reject(err) : resolve(r)),
            );
            instance.on('response', (_c, status) => void (statuses[status] = (statuses[status] ?? 0) + 1));
          }),
      ),
    );
    clearInterval(sampler);
    const during = samples.slice();
    sample(); // after the load: connections closed, for the record

    const total = results.reduce((a, r) => a + r.requests.total, 0);
    const seconds = (Date.now() - t0) / 1000;
    const errors = results.reduce((a, r) => a + r.errors + r.timeouts, 0);
    const p99 = Math.max(...results.map((r) => r.latency.p99));
    // Filling bounded caches, JIT and heap sizing make RSS climb and level off over the first minutes; a leak grows
    // with the requests served, as much in the second half of the run as in the first. So the bound applies to the
    // second half (the slope from minute 1 is reported too).
    const rssOf = (from: number) => slopePerMinute(during.filter((s) => s.at >= from).map((s) => ({ at: s.at, value: s.rss })));
    const rssSlope = rssOf((MINUTES * 60_000) / 2);
    const steady = during.filter((s) => s.at >= Math.min(60_000, (MINUTES * 60_000) / 4));
    const fds = steady.map((s) => s.fds);
    const summary =
      `soak: ${MINUTES} min, ${total} requests (${Math.round(total / seconds)}/s), statuses ${JSON.stringify(statuses)}, ${errors} errors, p99 ${p99} ms; ` +
      `RSS ${samples[0]!.rss.toFixed(1)} → ${during.at(-1)!.rss.toFixed(1)} MiB (${samples.at(-1)!.rss.toFixed(1)} after), slope ${rssSlope.toFixed(2)} MiB/min over the second half (${rssOf(60_000).toFixed(2)} from minute 1); ` +
      `fds ${Math.min(...fds)}–${Math.max(...fds)} over ${steady.length} samples (${samples.at(-1)!.fds} after); RSS every ${SAMPLE_MS / 1000} s: ${samples.map((s) => Math.round(s.rss)).join(' ')}; of it anonymous: ${samples.map((s) => Math.round(s.anon)).join(' ')}`;
    console.log(summary);

    expect({ rate: total / seconds >= 1000, summary }).toEqual({ rate: true, summary });
    expect({ statuses: Object.keys(statuses), errors, summary }).toEqual({ statuses: ['200'], errors: 0, summary });
    expect({ rss: rssSlope < 1, summary }).toEqual({ rss: true, summary });
    expect({ fdsFlat: Math.max(...fds) - Math.min(...fds) <= 2, summary }).toEqual({ fdsFlat: true, summary });
  } finally {
    server.proc.kill('SIGTERM');
    await server.exited;
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}, (MINUTES * 60 + 180) * 1000);
