/**
 * What conditional access costs (`npm run bench:access`), through the real service over a real SQLite file and the
 * hot cache, as the server wires them:
 *   - per token issuance: `evaluateSignIn` (risk from the sign-in history, the evaluation, the sign-in log row);
 *   - per request: `checkCall` on a tenant without policies (every deployment that does not use them) and on one
 *     with 50 policies and an app protection policy (session facts, compliance and app standing from the cache);
 *   - one evaluation alone (the compiled policies).
 * Medians and p99 of several thousand calls, printed as a table.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { openSqliteStore } from '../server/store/sqlite';
import { withHotCache } from '../server/store/cached';
import { ManualClock } from '../server/clock';
import { DeviceSignals } from '../server/devices/signals';
import { createAccessService } from '../server/access/service';
import type { AuthContext } from '../server/auth/authenticate';
import type { Policy } from '../server/access/policies';

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]!;
const us = (ms: number) => `${(ms * 1000).toFixed(1)} µs`;

async function time(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}

function policies(n: number): Policy[] {
  const out: Policy[] = [];
  for (let i = 0; i < n; i++) {
    out.push({
      id: `p${i}`,
      name: `policy ${i}`,
      state: i % 5 === 0 ? 'reportOnly' : 'on',
      assignments: {
        users: i % 3 === 0 ? { include: 'all', exclude: { groups: ['break-glass'] } } : { include: { groups: [`g${i % 7}`] } },
        clientApps: i % 4 === 0 ? { include: ['other-app'] } : { include: 'all' },
        platforms: { include: i % 2 ? ['ios', 'android'] : 'all' },
        locations: { include: ['any'], exclude: ['office'] },
      },
      outcome: i % 11 === 0 ? { block: true } : { grant: { controls: ['mfa', 'compliantDevice'], operator: 'or' } },
    } as Policy);
  }
  // The block policies apply to another app only, so the measured calls are allowed through every policy.
  return out.map((p) => ('block' in p.outcome ? { ...p, assignments: { ...p.assignments, clientApps: { include: ['other-app'] } } } : p));
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-access-'));
  const raw = openSqliteStore(path.join(dir, 'pigeon.db'));
  const store = withHotCache(raw);
  const clock = new ManualClock(Date.now());
  const log = pino({ level: 'silent' });
  const access = createAccessService({ store, clock, log, signals: new DeviceSignals(), complianceGraceMs: 0 });
  const rows: Array<[string, number[]]> = [];

  const plain = await store.tenants.create('plain', clock.now());
  const busy = await store.tenants.create('busy', clock.now());
  const mk = async (tenantId: string, name: string) => {
    const user = await store.users.create({ tenantId, username: name, email: `${name}@x`, displayName: name, role: 'user', passwordHash: null }, clock.now());
    await store.mailboxes.create(user.id, clock.now());
    const device = await store.devices.create(user.id, 'bench-device-0123456789', { friendlyName: null, deviceType: 'phone', deviceModel: null, deviceOS: 'iOS 18.1', clientType: 'app', clientVersion: '5.0.0', userAgent: null, capabilities: [] }, clock.now());
    return { user, device };
  };
  const a = await mk(plain.id, 'plain-user');
  const b = await mk(busy.id, 'busy-user');
  const doc = {
    policies: policies(50),
    namedLocations: [{ id: 'office', name: 'Office', trusted: true, ranges: ['198.51.100.0/24'] }],
    groups: Array.from({ length: 7 }, (_, i) => ({ id: `g${i}`, name: `group ${i}`, members: [b.user.id] })),
    approvedClientApps: ['pigeon-app'],
    appProtectionPolicies: [],
  };
  await store.access.putConfig(busy.id, JSON.stringify(doc), 0, clock.now());
  await store.access.setCompliance({ tenantId: busy.id, userId: b.user.id, deviceId: b.device.deviceId, state: 'compliant', reasons: [], expiresAt: null, partner: 'bench', noncompliantSince: null, updatedAt: clock.now() });

  const N = 5000;
  // Token issuance: a sign-in (risk from history) that is logged.
  for (const [label, who] of [
    ['issuance, no policies', a],
    ['issuance, 50 policies', b],
  ] as const) {
    rows.push([
      label,
      await time(N / 5, (i) =>
        access.evaluateSignIn({ user: who.user, clientId: 'pigeon-app', deviceId: who.device.deviceId, ip: `203.0.113.${i % 250}`, authMethods: ['pwd', 'otp', 'mfa'], kind: 'interactive', sessionId: `sess-${label.length}-${i}` }),
      ),
    ]);
  }
  const authOf = (who: typeof a, sessionId: string): AuthContext => ({ user: who.user, userId: who.user.id, tenantId: who.user.tenantId, role: 'user', scopes: ['mail'], deviceId: who.device.deviceId, sessionId, expiresAt: clock.now() + 3600_000 });
  const authA = authOf(a, 'sess-21-0');
  const authB = authOf(b, 'sess-21-1');
  for (const [label, auth, who] of [
    ['per request, no policies', authA, a],
    ['per request, 50 policies', authB, b],
  ] as const) {
    rows.push([label, await time(N, () => (store.hotCache.beginRequest(), access.checkCall({ auth, device: who.device, method: 'GET', path: '/folders/sync', ip: '203.0.113.9' })))]);
  }
  const cfg = await access.configOf(busy.id);
  const ctx = { userId: b.user.id, groups: cfg.groupsOf(b.user.id), clientApp: 'pigeon-app', approvedClientApp: true, platform: 'ios' as const, ip: '203.0.113.9', risk: 'none' as const, satisfied: { mfa: true, compliantDevice: true, appProtectionPolicy: false } };
  rows.push(['one evaluation, 50 policies', await time(N, async () => cfg.evaluator.evaluate(ctx))]);

  console.log('| what | median | p99 |');
  console.log('|---|---|---|');
  for (const [label, xs] of rows) console.log(`| ${label} | ${us(quantile(xs, 0.5))} | ${us(quantile(xs, 0.99))} |`);
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

void main();
