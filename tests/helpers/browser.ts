/**
 * Browser tests: Debian's Chromium driven by playwright-core (no browser is ever downloaded), with a page wrapper that
 * records Content-Security-Policy violations, accepts the server's self-signed development certificate, saves
 * screenshots and runs axe-core.
 *
 * One browser per test file (starting Chromium costs about half a second of a core), one context per test:
 *
 *   const browser = useBrowser();               // beforeAll launches, afterAll closes, afterEach closes the contexts
 *   test('sign-in page', async () => {
 *     const page = await browser.newPage();      // a fresh context: no cookies or storage from other tests
 *     await page.goto(`${baseUrl}/signin`);
 *     await page.expectAccessible();            // axe: no serious or critical violation
 *     await page.screenshot('signin');          // tests/artifacts/<test file>/signin.png
 *     await page.expectNoCspViolations();
 *   });
 *
 * A missing Chromium is a failure with a message saying how to install it, never a skipped test.
 */
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type ConsoleMessage, type Page, type Response } from 'playwright-core';

/** Where Debian's package puts Chromium; PIGEON_CHROMIUM names another Chromium (or Chrome) executable. */
export const DEFAULT_CHROMIUM = '/usr/bin/chromium';

export function chromiumExecutable(): string {
  return process.env.PIGEON_CHROMIUM || DEFAULT_CHROMIUM;
}

export function noChromiumMessage(executable: string): string {
  return (
    `Chromium is not installed at ${executable}, so the browser tests cannot run. Install Debian's package ` +
    '(`apt-get install chromium`; .ci/run installs it when it is missing), or set PIGEON_CHROMIUM to the path of a ' +
    'Chromium or Chrome executable. playwright-core drives that browser; it never downloads one.'
  );
}

/**
 * Chromium's switches on top of playwright-core's own (which already include a headless mode, no sandbox, and turn
 * off most background networking, component updates and field trials). The machine that runs the tests has no
 * outside network, so everything that would reach out on its own is off too: it would only add time-outs and noise.
 */
export const CHROMIUM_ARGS: readonly string[] = [
  '--headless',
  '--no-sandbox', // the tests run as root in a container, where Chromium's sandbox cannot start
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-domain-reliability',
  '--disable-client-side-phishing-detection',
  '--no-pings',
];

/**
 * Launches headless Chromium. Its profile (user data dir) is a fresh temporary directory that playwright-core makes
 * for every launch and deletes when the browser closes (playwright-core refuses a `--user-data-dir` switch in launch():
 * a profile of our choosing is launchPersistentContext's, which allows only one context per browser).
 */
export async function launchBrowser(options: { args?: string[] } = {}): Promise<Browser> {
  const executablePath = chromiumExecutable();
  try {
    fs.accessSync(executablePath, fs.constants.X_OK);
  } catch {
    throw new Error(noChromiumMessage(executablePath));
  }
  try {
    return await chromium.launch({ executablePath, args: [...CHROMIUM_ARGS, ...(options.args ?? [])] });
  } catch (err) {
    throw new Error(`Chromium at ${executablePath} did not start: ${(err as Error).message}`);
  }
}

/**
 * The browser's profile directory, read from chrome://version (Chromium reports its command line over the DevTools
 * protocol only with --enable-automation, which would also change how pages see the browser).
 */
export async function browserUserDataDir(browser: Browser): Promise<string> {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto('chrome://version');
    const profile = (await page.textContent('#profile_path'))?.trim();
    if (!profile) throw new Error('chrome://version shows no profile path');
    return path.dirname(profile); // the profile is <user data dir>/Default
  } finally {
    await context.close();
  }
}

/** One CSP violation the page reported (a `securitypolicyviolation` event). */
export interface CspViolation {
  documentURI: string;
  violatedDirective: string;
  effectiveDirective: string;
  blockedURI: string;
  sourceFile: string;
  lineNumber: number;
  disposition: string;
  sample: string;
}

/** One accessibility problem axe found, with the CSS selectors of the elements at fault. */
export interface AxeViolation {
  id: string;
  impact: string;
  help: string;
  helpUrl: string;
  targets: string[];
}

/** Impacts that fail a page: axe's `minor` and `moderate` findings are advice, not failures. */
export const FAILING_IMPACTS: readonly string[] = ['serious', 'critical'];

/** The folder every screenshot goes to, one sub-folder per test file (gitignored). */
export const ARTIFACTS_DIR = path.resolve(__dirname, '..', 'artifacts');

const CSP_BINDING = '__pigeonReportCspViolation';
const CSP_PENDING = '__pigeonCspReportsPending';

/**
 * Runs in every document before its own scripts (through the DevTools protocol, so the page's CSP does not apply to
 * it). It sends each violation to the test through the binding and counts the reports not yet delivered, so a check
 * can wait for them. A string, not a function: the project's type check has no DOM library.
 */
const CSP_RECORDER = `(() => {
  let pending = 0;
  Object.defineProperty(window, ${JSON.stringify(CSP_PENDING)}, { get: () => pending, configurable: true });
  document.addEventListener('securitypolicyviolation', (e) => {
    pending++;
    Promise.resolve()
      .then(() => window[${JSON.stringify(CSP_BINDING)}]({
        documentURI: e.documentURI, violatedDirective: e.violatedDirective, effectiveDirective: e.effectiveDirective,
        blockedURI: e.blockedURI, sourceFile: e.sourceFile, lineNumber: e.lineNumber, disposition: e.disposition,
        sample: e.sample,
      }))
      .catch(() => {})
      .finally(() => { pending--; });
  }, true);
})();`;

/** axe-core's source, read once per test file and only when a test asks for an accessibility check. */
let axeSource: string | undefined;
function axeCoreSource(): string {
  axeSource ??= (require('axe-core') as { source: string }).source;
  return axeSource;
}

export interface TestPageOptions {
  /** The test file, for the screenshots' folder. */
  testFile: string;
  /** More options for the context (ignoreHTTPSErrors is always on). */
  context?: BrowserContextOptions;
}

/** A page in a context of its own, with the checks browser tests share. */
export interface TestPage {
  page: Page;
  context: BrowserContext;
  goto(url: string): Promise<Response | null>;
  /** Every CSP violation so far, from `securitypolicyviolation` events (in any document the context showed). */
  cspViolations: CspViolation[];
  /** Chromium's own console reports of CSP violations (see isCspConsoleMessage), a second net beside the events. */
  cspConsoleMessages: string[];
  /** Waits for reports still on their way, then fails listing every violation recorded so far, if any. */
  expectNoCspViolations(): Promise<void>;
  /** Saves a full-page PNG at tests/artifacts/<test file>/<name>.png (overwriting); answers its path. */
  screenshot(name: string): Promise<string>;
  /** Runs axe-core on the current document; answers the serious and critical violations. */
  checkAccessibility(): Promise<AxeViolation[]>;
  /** Fails listing the serious and critical violations (id, impact, help and elements), if any. */
  expectAccessible(): Promise<void>;
  close(): Promise<void>;
}

/** `tests/e2e/signin.test.ts` → `signin`: the screenshots' folder name. */
export function artifactFolderName(testFile: string): string {
  return path.basename(testFile).replace(/\.test\.[cm]?[jt]sx?$/, '').replace(/\.[cm]?[jt]sx?$/, '');
}

/**
 * Whether a console message is Chromium reporting a CSP violation: older versions say "Refused to execute inline
 * script because it violates …", current ones "Executing inline script violates the following Content Security Policy
 * directive …" (and "Loading the image …", "Sending form data to …", …).
 */
export function isCspConsoleMessage(text: string): boolean {
  return text.startsWith('Refused to') || / violates the following Content Security Policy directive/.test(text);
}

export function formatCspViolations(events: CspViolation[], consoleMessages: string[]): string {
  const lines = events.map(
    (v) =>
      `- ${v.effectiveDirective || v.violatedDirective} blocked ${v.blockedURI || '(nothing named)'} in ${v.documentURI}` +
      `${v.sourceFile ? ` (${v.sourceFile}:${v.lineNumber})` : ''}${v.sample ? `: ${JSON.stringify(v.sample)}` : ''} [${v.disposition}]`,
  );
  lines.push(...consoleMessages.map((m) => `- console: ${m}`));
  return lines.join('\n');
}

export function formatAxeViolations(violations: AxeViolation[]): string {
  return violations.map((v) => `- ${v.id} (${v.impact}): ${v.help} ${v.helpUrl}\n    at ${v.targets.join(', ')}`).join('\n');
}

/** A new context (accepting self-signed certificates) with one page, recording CSP violations from the start. */
export async function openTestPage(browser: Browser, options: TestPageOptions): Promise<TestPage> {
  // The tests run the real HTTPS server with a generated development certificate no browser trusts.
  const context = await browser.newContext({ ...options.context, ignoreHTTPSErrors: true });
  const cspViolations: CspViolation[] = [];
  const cspConsoleMessages: string[] = [];
  try {
    await context.exposeBinding(CSP_BINDING, (_source, violation: CspViolation) => {
      cspViolations.push(violation);
    });
    await context.addInitScript({ content: CSP_RECORDER });
    context.on('console', (message: ConsoleMessage) => {
      if (isCspConsoleMessage(message.text())) cspConsoleMessages.push(message.text());
    });
  } catch (err) {
    await context.close();
    throw err;
  }
  const page = await context.newPage();

  /** Lets violation events already queued in the page fire, then waits until their reports have reached us. */
  async function settleCspReports(): Promise<void> {
    if (page.isClosed()) return;
    try {
      // One round trip: a macrotask first (violation events are queued as tasks), then poll the count in the page
      // (waitForFunction polls on animation frames, a quarter of a second each in headless Chromium).
      await page.evaluate(`new Promise((resolve) => {
        const deadline = Date.now() + 5000;
        const check = () => (window[${JSON.stringify(CSP_PENDING)}] > 0 && Date.now() < deadline ? setTimeout(check, 5) : resolve());
        setTimeout(check, 0);
      })`);
    } catch {
      // The document went away meanwhile (a navigation): what it reported is in, what it had not is lost with it.
    }
  }

  async function checkAccessibility(): Promise<AxeViolation[]> {
    // page.evaluate runs through the DevTools protocol in the page's own world, which the page's CSP does not
    // govern, so axe runs under `script-src 'self'` where a <script> tag carrying it would be refused.
    const loaded = await page.evaluate('typeof window.axe === "object" && typeof window.axe.run === "function"');
    if (!loaded) await page.evaluate(`${axeCoreSource()}\n;undefined`);
    const found = (await page.evaluate(`window.axe.run(document, { resultTypes: ['violations'] }).then((r) =>
      r.violations.map((v) => ({ id: v.id, impact: v.impact || '', help: v.help, helpUrl: v.helpUrl,
        targets: v.nodes.map((n) => n.target.map(String).join(' ')) })))`)) as AxeViolation[];
    return found.filter((v) => FAILING_IMPACTS.includes(v.impact));
  }

  return {
    page,
    context,
    cspViolations,
    cspConsoleMessages,
    goto: (url) => page.goto(url),
    async expectNoCspViolations() {
      await settleCspReports();
      if (cspViolations.length || cspConsoleMessages.length) {
        throw new Error(`Content-Security-Policy violations:\n${formatCspViolations(cspViolations, cspConsoleMessages)}`);
      }
    },
    async screenshot(name) {
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new Error(`screenshot name ${JSON.stringify(name)}: letters, digits, . _ - only`);
      const dir = path.join(ARTIFACTS_DIR, artifactFolderName(options.testFile));
      fs.mkdirSync(dir, { recursive: true });
      const file = path.join(dir, `${name}.png`);
      await page.screenshot({ path: file, fullPage: true, type: 'png' });
      return file;
    },
    checkAccessibility,
    async expectAccessible() {
      const violations = await checkAccessibility();
      if (violations.length) throw new Error(`accessibility violations on ${page.url()}:\n${formatAxeViolations(violations)}`);
    },
    close: () => context.close(),
  };
}

export interface BrowserFixture {
  /** The file's browser (launched in beforeAll). */
  readonly browser: Browser;
  /** A page in a new context, closed after the current test. */
  newPage(options?: { context?: BrowserContextOptions }): Promise<TestPage>;
}

/**
 * Registers the hooks of a browser test file: one browser for the file (beforeAll/afterAll), and every context a test
 * opened closed after it (afterEach). `testFile` defaults to the file jest is running.
 */
export function useBrowser(testFile?: string): BrowserFixture {
  let browser: Browser | undefined;
  let file = testFile;
  const open: TestPage[] = [];

  beforeAll(async () => {
    file ??= expect.getState().testPath ?? 'unknown.test.ts';
    browser = await launchBrowser();
  });
  afterEach(async () => {
    const pages = open.splice(0);
    await Promise.all(pages.map((p) => p.close().catch(() => undefined)));
  });
  afterAll(async () => {
    await browser?.close();
    browser = undefined;
  });

  return {
    get browser() {
      if (!browser) throw new Error('the browser is not running: use it inside tests or hooks of the file that called useBrowser()');
      return browser;
    },
    async newPage(options = {}) {
      if (!browser) throw new Error('the browser is not running: use it inside tests or hooks of the file that called useBrowser()');
      const page = await openTestPage(browser, { testFile: file ?? 'unknown.test.ts', context: options.context });
      open.push(page);
      return page;
    },
  };
}
