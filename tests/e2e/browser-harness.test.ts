/**
 * The browser-test harness (tests/helpers/browser.ts) against a small HTTPS server of its own, with a self-signed
 * certificate and the strict CSP the sign-in page will have: pages load, a form posts, screenshots are PNGs, axe finds
 * a serious problem on a bad page and none on a good one (while the page forbids inline script), and an inline script
 * is reported as a CSP violation, so a test that expects none can fail.
 */
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import selfsigned from 'selfsigned';
import { ARTIFACTS_DIR, artifactFolderName, browserUserDataDir, isCspConsoleMessage, launchBrowser, noChromiumMessage, useBrowser } from '../helpers/browser';

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; form-action 'self'";

const page = (title: string, body: string) =>
  `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>${title}</title><link rel="stylesheet" href="/style.css"><script src="/app.js" defer></script></head>
<body><main><h1>${title}</h1>
${body}
</main></body>
</html>`;

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const PAGES: Record<string, string> = {
  '/': page(
    'Sign in',
    `<form method="post" action="/submit">
  <label for="name">Your name</label>
  <input id="name" name="name" type="text" autocomplete="name">
  <button type="submit">Continue</button>
</form>`,
  ),
  // An input nobody can name (axe: `label`, critical) and a button without a name (`button-name`, critical); nothing
  // the CSP refuses, so the page's only problems are axe's.
  '/bad': page('Bad page', `<form method="post" action="/submit"><input name="name" type="text"><button type="submit"></button></form>`),
  // The page forbids inline script: this one must be refused and reported.
  '/inline': page('Inline script', `<p id="flag">untouched</p><script>document.getElementById('flag').textContent = 'ran';</script>`),
};

let server: https.Server;
let baseUrl: string;

beforeAll(async () => {
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] }],
  });
  server = https.createServer({ key: pems.private, cert: pems.cert }, (req, res) => {
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const send = (status: number, type: string, body: string | Buffer) => {
      res.writeHead(status, { 'Content-Type': type, 'Content-Security-Policy': CSP, 'Cache-Control': 'no-store' });
      res.end(body);
    };
    if (req.method === 'POST' && url.pathname === '/submit') {
      let form = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => (form += chunk));
      req.on('end', () => {
        const name = new URLSearchParams(form).get('name') ?? '';
        send(200, 'text/html; charset=utf-8', page('Welcome', `<p id="greeting">Hello, ${escapeHtml(name)}!</p>`));
      });
      return;
    }
    if (req.method !== 'GET') return send(405, 'text/plain', 'method not allowed');
    if (url.pathname === '/app.js') return send(200, 'text/javascript', "document.documentElement.dataset.script = 'ran';");
    if (url.pathname === '/style.css') return send(200, 'text/css', 'body { font-family: sans-serif; margin: 2rem; }');
    const html = PAGES[url.pathname];
    if (html) return send(200, 'text/html; charset=utf-8', html);
    send(404, 'text/plain', 'not found');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
});

const browser = useBrowser();

test('a page loads over HTTPS with a self-signed certificate, runs its own script under the CSP, and a form posts', async () => {
  const p = await browser.newPage();
  const response = await p.goto(`${baseUrl}/`);
  expect(response?.status()).toBe(200);
  expect(response?.headers()['content-security-policy']).toBe(CSP);
  await expect(p.page.title()).resolves.toBe('Sign in');
  // script-src 'self' allows the page's own file: the harness must not have broken or bypassed the CSP.
  // (The script is deferred, so it has run by the load event goto waits for.)
  await expect(p.page.evaluate('document.documentElement.dataset.script')).resolves.toBe('ran');

  await p.page.fill('#name', 'Ada <Lovelace>');
  await Promise.all([p.page.waitForURL(`${baseUrl}/submit`), p.page.click('button[type=submit]')]);
  await expect(p.page.textContent('#greeting')).resolves.toBe('Hello, Ada <Lovelace>!');
  await p.expectNoCspViolations();
  expect(p.cspViolations).toEqual([]);
  expect(p.cspConsoleMessages).toEqual([]);
});

test('screenshot() writes a PNG under tests/artifacts/<test file>/', async () => {
  const p = await browser.newPage();
  await p.goto(`${baseUrl}/`);
  const expected = path.join(ARTIFACTS_DIR, 'browser-harness', 'sign-in.png');
  fs.rmSync(expected, { force: true });

  const file = await p.screenshot('sign-in');
  expect(file).toBe(expected);
  const png = fs.readFileSync(file);
  expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  // IHDR: width and height, big-endian, right after the signature and the chunk's length and type.
  expect(png.subarray(12, 16).toString('latin1')).toBe('IHDR');
  expect(png.readUInt32BE(16)).toBeGreaterThan(100);
  expect(png.readUInt32BE(20)).toBeGreaterThan(100);
  await expect(p.screenshot('../escape')).rejects.toThrow(/screenshot name/);
});

test('axe reports serious and critical problems on a bad page and none on the good one, under script-src self', async () => {
  const p = await browser.newPage();
  await p.goto(`${baseUrl}/bad`);
  const found = await p.checkAccessibility();
  expect(found.map((v) => v.id).sort()).toEqual(['button-name', 'label']);
  expect(found.find((v) => v.id === 'label')).toMatchObject({ impact: 'critical', targets: ['input'] });
  await expect(p.expectAccessible()).rejects.toThrow(/- label \(critical\): .+\n\s+at input$/m);

  await p.goto(`${baseUrl}/`);
  await expect(p.checkAccessibility()).resolves.toEqual([]);
  await p.expectAccessible();
  // Running axe is not itself a CSP violation, on either page.
  await p.expectNoCspViolations();
});

test('an inline script is refused and reported, so expectNoCspViolations fails', async () => {
  const p = await browser.newPage();
  await p.goto(`${baseUrl}/inline`);
  await expect(p.page.textContent('#flag')).resolves.toBe('untouched');

  await expect(p.expectNoCspViolations()).rejects.toThrow(/script-src-elem blocked inline/);
  expect(p.cspViolations).toEqual([
    expect.objectContaining({ effectiveDirective: 'script-src-elem', blockedURI: 'inline', disposition: 'enforce', documentURI: `${baseUrl}/inline` }),
  ]);
  expect(p.cspConsoleMessages).toEqual([expect.stringMatching(/inline script/)]);
});

test('a violation in a document the page has since left still counts', async () => {
  const p = await browser.newPage();
  await p.goto(`${baseUrl}/inline`);
  await p.goto(`${baseUrl}/`);
  await expect(p.expectNoCspViolations()).rejects.toThrow(/script-src-elem blocked inline in .+\/inline/);
});

test('each test gets a context of its own', async () => {
  const a = await browser.newPage();
  const b = await browser.newPage();
  expect(a.context).not.toBe(b.context);
  await a.goto(`${baseUrl}/`);
  await a.context.addCookies([{ name: 'seen', value: '1', url: baseUrl }]);
  expect(await b.context.cookies(baseUrl)).toEqual([]);
});

test("the browser's profile is a fresh temporary directory, removed when it closes", async () => {
  const own = await launchBrowser();
  let dir: string;
  try {
    dir = await browserUserDataDir(own);
    expect(fs.existsSync(dir)).toBe(true);
  } finally {
    await own.close();
  }
  expect(fs.existsSync(dir)).toBe(false);
});

test('a missing Chromium is a failure that says how to install it', async () => {
  const saved = process.env.PIGEON_CHROMIUM;
  process.env.PIGEON_CHROMIUM = path.join(ARTIFACTS_DIR, 'no-such-chromium');
  try {
    await expect(launchBrowser()).rejects.toThrow(noChromiumMessage(process.env.PIGEON_CHROMIUM));
    await expect(launchBrowser()).rejects.toThrow(/apt-get install chromium/);
  } finally {
    if (saved === undefined) delete process.env.PIGEON_CHROMIUM;
    else process.env.PIGEON_CHROMIUM = saved;
  }
});

test('screenshots go to a folder named after the test file', () => {
  expect(artifactFolderName('/x/tests/e2e/signin-page.test.ts')).toBe('signin-page');
  expect(artifactFolderName('helpers.ts')).toBe('helpers');
});

test("Chromium's console reports of CSP violations are recognised in both wordings, and nothing else is", () => {
  expect(isCspConsoleMessage("Refused to execute inline script because it violates the following Content Security Policy directive: \"script-src 'self'\".")).toBe(true);
  expect(isCspConsoleMessage("Loading the image 'https://x/a.png' violates the following Content Security Policy directive: \"default-src 'none'\".")).toBe(true);
  expect(isCspConsoleMessage('Failed to load resource: the server responded with a status of 404 (Not Found)')).toBe(false);
});
