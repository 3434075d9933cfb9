/**
 * Slow clients (issue 8), with the field's tool: slowhttptest (Debian's, installed by .ci/run) opens 50 connections
 * that send their headers (slowloris) or their body (slow POST) a few bytes every 2 s against the real server.
 * Each attack must be cut off within ~15 s (headers: PIGEON_HEADERS_TIMEOUT 10 s plus the 2 s sweep; bodies: the
 * minimum body rate after its 10 s grace), while ordinary requests keep succeeding throughout.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { startServer, type RunningServer } from '../helpers/server';
import { tempDir } from '../helpers/testApp';

const available = spawnSync('slowhttptest', ['-h'], { encoding: 'utf8' }).error === undefined;
const maybe = available || process.env.CI ? describe : describe.skip;
if (!available && !process.env.CI) console.warn('slowhttptest not installed: slow-client checks skipped (apt-get install slowhttptest)');

interface AttackResult {
  endedAtSecond: number;
  allClosed: boolean;
  maxConnected: number;
}

function attack(port: number, mode: '-H' | '-B', dir: string): Promise<AttackResult> {
  const out = path.join(dir, mode === '-H' ? 'headers' : 'body');
  const target = mode === '-H' ? `https://127.0.0.1:${port}/healthz` : `https://127.0.0.1:${port}/oauth2/token`;
  const args = ['-c', '50', mode, '-i', '2', '-r', '50', '-s', '8192', '-t', mode === '-H' ? 'GET' : 'POST', '-u', target, '-x', '10', '-p', '3', '-l', '40', '-g', '-o', out];
  return new Promise((resolve, reject) => {
    const child = spawn('slowhttptest', args, { cwd: dir });
    let text = '';
    child.stdout.on('data', (c: Buffer) => (text += c.toString()));
    child.stderr.on('data', (c: Buffer) => (text += c.toString()));
    child.once('error', reject);
    child.once('exit', () => {
      const plain = text.replace(/\x1b\[[0-9;]*m/g, '');
      const ended = /Test ended on (\d+)(?:st|nd|rd|th) second/.exec(plain);
      const rows = fs
        .readFileSync(`${out}.csv`, 'utf8')
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => l.split(',').map(Number));
      resolve({
        endedAtSecond: ended ? Number(ended[1]) : Infinity,
        allClosed: /No open connections left/.test(plain),
        maxConnected: Math.max(...rows.map((r) => r[3]!)),
      });
    });
  });
}

function healthz(port: number, cert: string): Promise<number> {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/healthz', ca: cert, servername: 'localhost', agent: false, timeout: 3000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

maybe('slow clients are reaped while normal requests keep succeeding', () => {
  let server: RunningServer;
  let dir: string;
  beforeAll(async () => {
    dir = tempDir('pigeon-slow-');
    server = await startServer({ PIGEON_LMTP_ENABLED: 'false' });
  });
  afterAll(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('slowloris headers and slow bodies: all 100 connections cut within 16 s, /healthz always 200', async () => {
    let probing = true;
    const statuses: number[] = [];
    const probe = (async () => {
      while (probing) {
        statuses.push(await healthz(server.port, server.cert));
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    const [headers, body] = await Promise.all([attack(server.port, '-H', dir), attack(server.port, '-B', dir)]);
    probing = false;
    await probe;

    for (const r of [headers, body]) {
      expect(r.maxConnected).toBeGreaterThanOrEqual(40); // the attack really held its connections open
      expect(r.allClosed).toBe(true);
      expect(r.endedAtSecond).toBeLessThanOrEqual(16);
    }
    expect(statuses.length).toBeGreaterThan(10);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
  }, 60_000);
});
