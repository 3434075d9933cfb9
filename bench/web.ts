/**
 * The admin center's device list with 10,000 devices (`npm run bench:web`): page weight and time to interactive, as
 * issue 21's closing note asks.
 *
 * The real server process (server/main.ts through tsx, as the other benches run it) on a SQLite file seeded through
 * the store in one transaction: one tenant, an administrator, 2,500 users with 4 devices each (10,000), each with a
 * different last sync. An administrator signs in through the identity pages in Debian's Chromium (playwright-core,
 * tests/helpers/browser.ts), then /admin/devices is loaded LOADS times with a cold cache (a new browser context each
 * time: empty HTTP cache, new TLS connection, only the session cookie carried over) and LOADS times with a warm one
 * (the same context and connection; the assets are revalidated with their ETags, `Cache-Control: no-cache`).
 *
 * - Bytes: from the DevTools protocol's Network events of every request the load made up to interactive: wire bytes
 *   (`loadingFinished.encodedDataLength`: headers and the compressed body) and uncompressed body bytes (the sum of
 *   `dataReceived.dataLength`); by kind: document, scripts, stylesheet, API calls (/web/session, /admin/v1/...).
 * - Time to interactive: navigation start → the first page of rows (25) in the table and the search box in the
 *   document, taken in the page by a MutationObserver added through the DevTools protocol (so the page's CSP does
 *   not apply to it), then the next task (a setTimeout 0 that runs only once the main thread is free, so a key press
 *   would be handled). Median, min and max of the loads. After the measured loads one search is typed and timed
 *   (key press → the server's filtered page shown) to check the box really works.
 *
 * Prints a table and writes figures `web.deviceList.*` into bench/results.json (replacing older ones).
 * LOADS (default 5) sets the loads per cache state; DEVICES (default 10000) the inventory size.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BrowserContext, CDPSession, Page } from 'playwright-core';
import { openSqliteStore } from '../server/store/sqlite';
import { hashPassword } from '../server/identity/passwords';
import { ROOT } from '../tests/helpers/server';
import { pickPort } from '../tests/helpers/ports';
import { totp } from '../tests/helpers/oidcClient';
import { launchBrowser } from '../tests/helpers/browser';
import { startPigeon, type Pigeon } from './lib/pigeon';
import { describeMachine } from './lib/machine';
import type { Figure } from './lib/figure';

const LOADS = Number(process.env.LOADS ?? 5);
const DEVICES = Number(process.env.DEVICES ?? 10_000);
const PER_USER = 4;
const PAGE_ROWS = 25;
const PASSWORD = 'correct horse battery';
const PAGE = '/admin/devices';

const log = (msg: string) => console.error(`[bench:web] ${msg}`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** One tenant, its administrator (ada) and DEVICES devices over DEVICES / 4 users, in one transaction. */
async function seed(dataDir: string): Promise<void> {
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const now = Date.now();
  const passwordHash = await hashPassword(PASSWORD);
  const models = ['iPhone15,2', 'iPhone16,1', 'Pixel 8', 'SM-S911B', 'iPad7,5'];
  const t0 = performance.now();
  await store.run(function* (tx) {
    const tenant = yield* tx.tenants.create('Contoso', now);
    const ada = yield* tx.users.create({ tenantId: tenant.id, username: 'ada', email: 'ada@contoso.example', displayName: 'Ada', role: 'admin', passwordHash }, now);
    yield* tx.mailboxes.create(ada.id, now);
    for (let u = 0; u < DEVICES / PER_USER; u++) {
      const user = yield* tx.users.create({ tenantId: tenant.id, username: `user${String(u).padStart(5, '0')}`, email: `user${u}@contoso.example`, displayName: `User ${u}`, role: 'user', passwordHash: null }, now);
      for (let d = 0; d < PER_USER; d++) {
        const n = u * PER_USER + d;
        const model = models[n % models.length]!;
        const device = yield* tx.devices.create(user.id, `dev-${String(n).padStart(6, '0')}-0123456789`, {
          friendlyName: `Phone ${String(n).padStart(5, '0')}`, deviceType: 'phone', deviceModel: model, deviceOS: model.startsWith('i') ? 'iOS 18.1' : 'Android 15',
          clientType: 'PigeonMail', clientVersion: '2.1', userAgent: 'PigeonMail/2.1', capabilities: [],
        }, now - 86_400_000);
        const last = now - ((n * 7919) % 86_400) * 1000; // scattered over the last day
        yield* tx.devices.touch(device.id, last, last);
      }
    }
  });
  await store.close();
  log(`seeded ${DEVICES} devices in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/** Signs in through the identity pages (the administrator enrols in two-step verification, as on first sign-in). */
async function signIn(page: Page, issuer: string): Promise<void> {
  const h1 = (name: string) => page.getByRole('heading', { level: 1, name, exact: true }).waitFor();
  await page.goto(`${issuer}${PAGE}`);
  await h1('Sign in');
  await page.getByLabel('Username').fill('ada');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await h1('Set up two-step verification');
  const secret = ((await page.locator('.secret code').textContent()) ?? '').replace(/ /g, '');
  await page.getByLabel('Code from the app').fill(totp(secret));
  await page.getByRole('button', { name: 'Turn on two-step sign-in', exact: true }).click();
  await h1('Save your recovery codes');
  await page.getByRole('button', { name: 'I have saved them — continue', exact: true }).click();
  await h1('Allow access');
  await page.getByRole('button', { name: 'Allow', exact: true }).click();
  await page.waitForURL((u) => u.pathname === PAGE, { timeout: 15_000 });
  await h1('Devices');
}

/** Runs in every document before its scripts: marks when the first page of rows and the search box are there. */
const TTI_PROBE = `(() => {
  if (location.pathname !== ${JSON.stringify(PAGE)}) return;
  const ready = () => document.querySelectorAll('table.devices tbody tr').length >= ${PAGE_ROWS} && document.getElementById('f-q') !== null;
  const observer = new MutationObserver(() => {
    if (!ready()) return;
    observer.disconnect();
    window.__rowsAt = performance.now();
    setTimeout(() => { window.__interactiveAt = performance.now(); }, 0);
  });
  observer.observe(document, { childList: true, subtree: true });
})();`;

type Kind = 'document' | 'scripts' | 'stylesheet' | 'api' | 'other';
interface Req {
  kind: Kind;
  url: string;
  status?: number;
  encoding?: string;
  wire: number;
  body: number;
  done: boolean;
}

/** The Network events of one page, per request. */
function recordNetwork(cdp: CDPSession) {
  let reqs = new Map<string, Req>();
  const kindOf = (url: string, type: string): Kind => {
    const p = new URL(url).pathname;
    if (type === 'Document') return 'document';
    if (p.endsWith('.mjs') || type === 'Script') return 'scripts';
    if (p.endsWith('.css') || type === 'Stylesheet') return 'stylesheet';
    if (p.startsWith('/admin/v1/') || p.startsWith('/web/session') || p.startsWith('/account/v1/')) return 'api';
    return 'other';
  };
  cdp.on('Network.requestWillBeSent', (e) => {
    if (!e.request.url.startsWith('http')) return;
    reqs.set(e.requestId, { kind: kindOf(e.request.url, e.type ?? ''), url: e.request.url, wire: 0, body: 0, done: false });
  });
  cdp.on('Network.responseReceived', (e) => {
    const r = reqs.get(e.requestId);
    if (!r) return;
    r.status = e.response.status;
    const headers = Object.fromEntries(Object.entries(e.response.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
    r.encoding = headers['content-encoding'];
  });
  cdp.on('Network.dataReceived', (e) => {
    const r = reqs.get(e.requestId);
    if (r) r.body += e.dataLength;
  });
  cdp.on('Network.loadingFinished', (e) => {
    const r = reqs.get(e.requestId);
    if (!r) return;
    r.wire = e.encodedDataLength;
    r.done = true;
  });
  return {
    reset: () => (reqs = new Map()),
    all: () => [...reqs.values()],
  };
}

interface Load {
  tti: number;
  rowsAt: number;
  domContentLoaded: number;
  apiMs: number;
  requests: Req[];
}

async function measureLoad(page: Page, net: ReturnType<typeof recordNetwork>, issuer: string): Promise<Load> {
  net.reset();
  await page.goto(`${issuer}${PAGE}`);
  const deadline = Date.now() + 30_000;
  let tti: number | undefined;
  while ((tti = (await page.evaluate('window.__interactiveAt')) as number | undefined) === undefined) {
    if (Date.now() > deadline) throw new Error(`the device list did not show ${PAGE_ROWS} rows in 30 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
  // Let the requests made up to interactive finish reporting (the next poll of the list is 3 s away).
  const settle = Date.now() + 2000;
  while (net.all().some((r) => !r.done) && Date.now() < settle) await new Promise((r) => setTimeout(r, 20));
  const timing = (await page.evaluate(`(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const api = performance.getEntriesByType('resource').filter((e) => e.name.includes('/admin/v1/devices?'))[0];
    return { rowsAt: window.__rowsAt, dcl: nav ? nav.domContentLoadedEventEnd : NaN, apiMs: api ? api.responseEnd - api.requestStart : NaN };
  })()`)) as { rowsAt: number; dcl: number; apiMs: number };
  return { tti, rowsAt: timing.rowsAt, domContentLoaded: timing.dcl, apiMs: timing.apiMs, requests: net.all().filter((r) => r.done) };
}

const KINDS: Kind[] = ['document', 'scripts', 'stylesheet', 'api', 'other'];
const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`;
const ms = (n: number) => `${n.toFixed(0)} ms`;
const sum = (rs: Req[], f: (r: Req) => number) => rs.reduce((a, r) => a + f(r), 0);

async function main() {
  const startedAt = new Date();
  const loadBefore = os.loadavg();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-web-'));
  let pigeon: Pigeon | undefined;
  const browser = await launchBrowser();
  try {
    await seed(dataDir);
    const port = await pickPort();
    const issuer = `https://127.0.0.1:${port}`;
    pigeon = await startPigeon(dataDir, { env: { PIGEON_PORT: String(port), PIGEON_ISSUER: issuer, PIGEON_PASSWORD_GRANT: 'false' } });
    log(`server ready on ${issuer} in ${pigeon.readyMs.toFixed(0)} ms (workers: ${process.env.PIGEON_WORKERS ?? 'default, one per core'})`);

    const signInContext = await browser.newContext({ ignoreHTTPSErrors: true });
    await signIn(await signInContext.newPage(), issuer);
    const storageState = await signInContext.storageState();
    await signInContext.close();
    log('signed in as ada (with two-step verification)');

    const open = async (context: BrowserContext) => {
      await context.addInitScript({ content: TTI_PROBE });
      const page = await context.newPage();
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      return { page, net: recordNetwork(cdp) };
    };

    // Cold: a fresh context per load (empty cache, new connection), the session cookie only.
    const cold: Load[] = [];
    for (let i = 0; i < LOADS; i++) {
      const context = await browser.newContext({ ignoreHTTPSErrors: true, storageState });
      const { page, net } = await open(context);
      cold.push(await measureLoad(page, net, issuer));
      await context.close();
    }
    // Warm: one context, one load to fill the cache, then the measured loads.
    const context = await browser.newContext({ ignoreHTTPSErrors: true, storageState });
    const { page, net } = await open(context);
    await measureLoad(page, net, issuer);
    const warm: Load[] = [];
    for (let i = 0; i < LOADS; i++) warm.push(await measureLoad(page, net, issuer));

    // The search box works: a name typed → the server's filtered page shown.
    const wanted = `Phone ${String(DEVICES - 3).padStart(5, '0')}`;
    const t0 = performance.now();
    await page.getByLabel('Search by name').fill(wanted);
    const searchDeadline = Date.now() + 15_000;
    for (;;) {
      const texts = await page.locator('table.devices tbody tr').allTextContents();
      if (texts.length === 1 && texts[0]!.includes(wanted)) break;
      if (Date.now() > searchDeadline) throw new Error(`searching ${wanted} did not show one row`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const searchMs = performance.now() - t0; // includes the page's 300 ms pause after typing
    await context.close();

    // ---- report ----
    const cs = (loads: Load[], f: (l: Load) => number) => loads.map(f);
    const ttiCold = cs(cold, (l) => l.tti);
    const ttiWarm = cs(warm, (l) => l.tti);
    const wire = (l: Load) => sum(l.requests, (r) => r.wire);
    // Bodies the page decoded, whether they came over the network or (a 304) from the cache; and over the network only.
    const body = (l: Load) => sum(l.requests, (r) => r.body);
    const bodyFetched = (l: Load) => sum(l.requests, (r) => (r.status === 304 ? 0 : r.body));
    const lines: Array<[string, string, string]> = [
      ['time to interactive, median (min–max)', `${ms(median(ttiCold))} (${ms(Math.min(...ttiCold))}–${ms(Math.max(...ttiCold))})`, `${ms(median(ttiWarm))} (${ms(Math.min(...ttiWarm))}–${ms(Math.max(...ttiWarm))})`],
      ['first page of rows in the DOM, median', ms(median(cs(cold, (l) => l.rowsAt))), ms(median(cs(warm, (l) => l.rowsAt)))],
      ['DOMContentLoaded, median', ms(median(cs(cold, (l) => l.domContentLoaded))), ms(median(cs(warm, (l) => l.domContentLoaded)))],
      ['GET /admin/v1/devices?limit=25 (request → response end), median', ms(median(cs(cold, (l) => l.apiMs))), ms(median(cs(warm, (l) => l.apiMs)))],
      ['requests up to interactive', String(median(cs(cold, (l) => l.requests.length))), String(median(cs(warm, (l) => l.requests.length)))],
      ['bytes transferred (wire: headers + compressed bodies), median', kb(median(cs(cold, wire))), kb(median(cs(warm, wire)))],
      ['bytes uncompressed (bodies sent, decoded), median', kb(median(cs(cold, bodyFetched))), kb(median(cs(warm, bodyFetched)))],
      ['page weight (every body the page used, decoded, cache included), median', kb(median(cs(cold, body))), kb(median(cs(warm, body)))],
    ];
    console.log(`\nAdmin center device list, ${DEVICES.toLocaleString('en')} devices: ${LOADS} loads each, headless Chromium on the same machine as the server (HTTPS, SQLite)`);
    console.log('| | cold cache | warm cache |\n|---|---|---|');
    for (const [k, a, b] of lines) console.log(`| ${k} | ${a} | ${b} |`);

    // Breakdown of the cold load with the median TTI.
    const sample = [...cold].sort((a, b) => a.tti - b.tti)[Math.floor(cold.length / 2)]!;
    console.log('\nCold load by kind (the median load):');
    console.log('| kind | requests | transferred | uncompressed | content-encoding |\n|---|---|---|---|---|');
    for (const kind of KINDS) {
      const rs = sample.requests.filter((r) => r.kind === kind);
      if (!rs.length) continue;
      const enc = [...new Set(rs.map((r) => r.encoding ?? 'identity'))].join(', ');
      console.log(`| ${kind} | ${rs.length} | ${kb(sum(rs, (r) => r.wire))} | ${kb(sum(rs, (r) => r.body))} | ${enc} |`);
    }
    console.log(`| total | ${sample.requests.length} | ${kb(wire(sample))} | ${kb(body(sample))} | |`);
    console.log('\nRequests of that load:');
    for (const r of sample.requests) console.log(`  ${r.status ?? '?'} ${new URL(r.url).pathname}${new URL(r.url).search} ${kb(r.wire)} wire, ${kb(r.body)} body${r.encoding ? ` (${r.encoding})` : ''}`);
    const warmSample = warm[0]!;
    console.log('\nA warm load\'s requests:');
    for (const r of warmSample.requests) console.log(`  ${r.status ?? '?'} ${new URL(r.url).pathname}${new URL(r.url).search} ${kb(r.wire)} wire${r.status === 304 ? ` (body ${kb(r.body)} from the cache)` : `, ${kb(r.body)} body`}`);
    console.log(`\nsearch "${wanted}" typed → one row shown: ${ms(searchMs)} (of which 300 ms is the page's pause after typing)`);
    console.log(`load average before / after: ${loadBefore.map((x) => x.toFixed(2)).join(' ')} / ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (${os.cpus().length} cores)`);

    const notes = { devices: DEVICES, loads: LOADS, loadAverage: Number(loadBefore[0]!.toFixed(2)) };
    const summary = (xs: number[]) => ({ median: median(xs), rounds: xs });
    const figures: Figure[] = [
      { id: 'web.deviceList.tti.cold', scenario: 8, label: `admin device list (${DEVICES} devices), time to interactive, cold cache`, unit: 'ms', better: 'lower', pigeon: summary(ttiCold),
        notes: { ...notes, transferredBytes: median(cs(cold, wire)), uncompressedBytes: median(cs(cold, bodyFetched)), pageWeightBytes: median(cs(cold, body)), requests: median(cs(cold, (l) => l.requests.length)) } },
      { id: 'web.deviceList.tti.warm', scenario: 8, label: `admin device list (${DEVICES} devices), time to interactive, warm cache`, unit: 'ms', better: 'lower', pigeon: summary(ttiWarm),
        notes: { ...notes, transferredBytes: median(cs(warm, wire)), uncompressedBytes: median(cs(warm, bodyFetched)), pageWeightBytes: median(cs(warm, body)), requests: median(cs(warm, (l) => l.requests.length)) } },
      { id: 'web.deviceList.api', scenario: 8, label: `GET /admin/v1/devices?limit=25 of ${DEVICES} devices, as the page sees it`, unit: 'ms', better: 'lower', pigeon: summary(cs(cold, (l) => l.apiMs)), notes },
      { id: 'web.deviceList.search', scenario: 8, label: 'admin device list: a search typed → the filtered page shown (300 ms debounce included)', unit: 'ms', better: 'lower', pigeon: summary([searchMs]), notes },
    ];
    const file = path.join(ROOT, 'bench', 'results.json');
    const results = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { figures?: Figure[]; webBench?: unknown }) : { figures: [] };
    results.figures = [...(results.figures ?? []).filter((f) => !f.id.startsWith('web.')), ...figures];
    results.webBench = {
      startedAt: startedAt.toISOString(),
      command: 'npm run bench:web',
      machine: describeMachine(),
      coldLoadByKind: Object.fromEntries(KINDS.map((k) => [k, { requests: sample.requests.filter((r) => r.kind === k).length, transferredBytes: sum(sample.requests.filter((r) => r.kind === k), (r) => r.wire), uncompressedBytes: sum(sample.requests.filter((r) => r.kind === k), (r) => r.body) }])),
    };
    fs.writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
    log(`figures written to ${path.relative(process.cwd(), file)}`);
  } finally {
    await browser.close();
    await pigeon?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
