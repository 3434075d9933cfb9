/**
 * Signing in to the web pages (admin center, My devices) in a real browser through the identity pages, as
 * tests/e2e/web-devices.test.ts does: username and password, then two-step verification enrolment (or "Not now"),
 * then consent, landing back on the page the sign-in started from.
 */
import { totp } from './oidcClient';
import type { TestPage } from './browser';

/** Waits for the page's level-1 heading and for the document (its stylesheet and scripts) to have loaded. */
export async function waitForHeading(p: TestPage, name: string): Promise<void> {
  await p.page.getByRole('heading', { level: 1, name, exact: true }).waitFor();
  await p.page.waitForLoadState('load');
}

/**
 * Opens `issuer + start`, which sends the browser to sign in, and signs in as `username`; the user enrols in two-step
 * verification with a code from the shown secret when `enrolMfa`, else declines it. Answers once back on `start`.
 */
export async function webSignIn(p: TestPage, o: { issuer: string; start: string; username: string; password: string; enrolMfa: boolean }): Promise<void> {
  await p.goto(`${o.issuer}${o.start}`);
  expect(new URL(p.page.url()).pathname).toMatch(/^\/interaction\/[^/]+$/);
  await waitForHeading(p, 'Sign in');
  await p.page.getByLabel('Username').fill(o.username);
  await p.page.getByLabel('Password').fill(o.password);
  await p.page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await waitForHeading(p, 'Set up two-step verification');
  if (o.enrolMfa) {
    const secret = ((await p.page.locator('.secret code').textContent()) ?? '').replace(/ /g, '');
    await p.page.getByLabel('Code from the app').fill(totp(secret));
    await p.page.getByRole('button', { name: 'Turn on two-step sign-in', exact: true }).click();
    await waitForHeading(p, 'Save your recovery codes');
    await p.page.getByRole('button', { name: 'I have saved them — continue', exact: true }).click();
  } else {
    await p.page.getByRole('button', { name: 'Not now', exact: true }).click();
  }
  await waitForHeading(p, 'Allow access');
  await p.page.getByRole('button', { name: 'Allow', exact: true }).click();
  await p.page.waitForURL((u) => u.pathname === o.start, { timeout: 10_000 }).catch(async (err) => {
    throw new Error(`the sign-in did not land on ${o.start} but on ${p.page.url()}: ${(await p.page.locator('main').textContent().catch(() => '')) ?? ''}; ${err}; CSP: ${JSON.stringify(p.cspViolations)} ${p.cspConsoleMessages}`);
  });
}
