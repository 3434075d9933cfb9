/**
 * The store contract, access: the tenant's access configuration (a compare-and-set on its version), device
 * compliance, app protection state, the sign-in log and administrators' word on user risk, the same on every backend.
 */
import crypto from 'node:crypto';
import type { AppProtectionState, DeviceCompliance, SignInLogEntry, Store } from '../../../server/store/types';
import { DAY, MINUTE, NOW, eachBackend, newTenant, newUser, unique } from './fixtures';

const compliance = (fields: Partial<DeviceCompliance> & Pick<DeviceCompliance, 'tenantId' | 'userId'>): DeviceCompliance => ({
  deviceId: unique('device'),
  state: 'compliant',
  reasons: [],
  expiresAt: null,
  partner: 'mdm-a',
  noncompliantSince: null,
  updatedAt: NOW,
  ...fields,
});

const appState = (fields: Partial<AppProtectionState> & Pick<AppProtectionState, 'tenantId' | 'userId'>): AppProtectionState => ({
  deviceId: unique('device'),
  policyId: 'corp-mobile',
  policyEtag: '"e1"',
  appVersion: '4.2.0',
  osVersion: '17.1',
  lastCheckInAt: NOW,
  pinFailures: 0,
  violations: [],
  selectiveWipe: 'none',
  selectiveWipeReason: null,
  selectiveWipeRequestedAt: null,
  selectiveWipeAcknowledgedAt: null,
  updatedAt: NOW,
  ...fields,
});

const signIn = (fields: Partial<SignInLogEntry> & Pick<SignInLogEntry, 'tenantId' | 'userId'>): SignInLogEntry => ({
  id: unique('signin'),
  at: NOW,
  kind: 'interactive',
  clientId: 'pigeon-app',
  deviceId: null,
  ip: '192.0.2.1',
  sessionId: null,
  authMethods: ['pwd'],
  riskLevel: 'none',
  riskScore: 0,
  riskSignals: [],
  policyResults: [],
  decision: 'allow',
  reason: null,
  ...fields,
});

/** A user in a tenant of its own (most tests want both ids). */
async function tenantUser(store: Store) {
  const tenant = await newTenant(store);
  const user = await newUser(store, { tenantId: tenant.id });
  return { tenantId: tenant.id, userId: user.id };
}

const sortedStrings = (list: string[]) => [...list].sort();

eachBackend('access config', (t) => {
  test('version 0 creates the document at version 1; a second create answers undefined and changes nothing', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    expect(await store.access.config(tenantId)).toBeUndefined();
    const doc = JSON.stringify({ policies: [], groups: [{ id: 'sales', name: 'Sales', members: ['u1'] }] });
    const created = await store.access.putConfig(tenantId, doc, 0, NOW);
    expect(created).toEqual({ tenantId, version: 1, doc, updatedAt: NOW });
    expect(await store.access.config(tenantId)).toEqual(created);
    expect(await store.access.putConfig(tenantId, '{"other":true}', 0, NOW + 1)).toBeUndefined();
    expect(await store.access.config(tenantId)).toEqual(created);
  });

  test('the document is answered exactly as stored (key order and spacing kept)', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const doc = '{ "zeta": 1,\n  "alpha": [ "é", {"b": 2, "a": 1} ] }';
    await store.access.putConfig(tenantId, doc, 0, NOW);
    expect((await store.access.config(tenantId))?.doc).toBe(doc);
  });

  test('a change from the current version replaces the document and increases the version; a stale one changes nothing', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const v1 = await store.access.putConfig(tenantId, '{"n":1}', 0, NOW);
    const v2 = await store.access.putConfig(tenantId, '{"n":2}', v1!.version, NOW + MINUTE);
    expect(v2).toEqual({ tenantId, version: 2, doc: '{"n":2}', updatedAt: NOW + MINUTE });
    // Someone else read version 1 and writes now: refused, and the document stays at version 2.
    expect(await store.access.putConfig(tenantId, '{"n":"stale"}', v1!.version, NOW + 2 * MINUTE)).toBeUndefined();
    expect(await store.access.putConfig(tenantId, '{"n":"future"}', 7, NOW + 2 * MINUTE)).toBeUndefined();
    expect(await store.access.config(tenantId)).toEqual(v2);
    let version = v2!.version;
    for (let i = 3; i <= 6; i++) {
      const next = await store.access.putConfig(tenantId, `{"n":${i}}`, version, NOW + i * MINUTE);
      expect(next?.version).toBeGreaterThan(version);
      version = next!.version;
    }
    expect(await store.access.config(tenantId)).toEqual({ tenantId, version, doc: '{"n":6}', updatedAt: NOW + 6 * MINUTE });
  });

  test('of concurrent changes from one version exactly one wins', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const base = await store.access.putConfig(tenantId, '{"n":0}', 0, NOW);
    const answers = await Promise.all([1, 2, 3, 4].map((i) => store.access.putConfig(tenantId, `{"n":${i}}`, base!.version, NOW + i)));
    const winners = answers.filter((a) => a !== undefined);
    expect(winners).toHaveLength(1);
    expect(await store.access.config(tenantId)).toEqual(winners[0]);
  });

  test('tenants have documents of their own', async () => {
    const { store } = t();
    const a = (await newTenant(store)).id;
    const b = (await newTenant(store)).id;
    await store.access.putConfig(a, '{"tenant":"a"}', 0, NOW);
    expect(await store.access.config(b)).toBeUndefined();
    expect((await store.access.putConfig(b, '{"tenant":"b"}', 0, NOW))?.version).toBe(1);
    expect((await store.access.config(a))?.doc).toBe('{"tenant":"a"}');
  });
});

eachBackend('device compliance', (t) => {
  test('set then read answers the record; a second set replaces it whole', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const first = compliance({ tenantId, userId, reasons: [], expiresAt: NOW + DAY });
    expect(await store.access.compliance(tenantId, userId, first.deviceId)).toBeUndefined();
    await store.access.setCompliance(first);
    expect(await store.access.compliance(tenantId, userId, first.deviceId)).toEqual(first);
    const second: DeviceCompliance = {
      ...first,
      state: 'noncompliant',
      reasons: ['osOutdated', 'encryptionOff'],
      expiresAt: null,
      partner: 'mdm-b',
      noncompliantSince: NOW + MINUTE,
      updatedAt: NOW + MINUTE,
    };
    await store.access.setCompliance(second);
    expect(await store.access.compliance(tenantId, userId, first.deviceId)).toEqual(second);
    const third: DeviceCompliance = { ...second, state: 'unknown', reasons: [], noncompliantSince: null, updatedAt: NOW + 2 * MINUTE };
    await store.access.setCompliance(third);
    expect(await store.access.compliance(tenantId, userId, first.deviceId)).toEqual(third);
  });

  test('records of other devices, users and tenants are their own', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const other = await tenantUser(store);
    const deviceId = unique('device');
    const mine = compliance({ tenantId, userId, deviceId, state: 'noncompliant', reasons: ['jailbroken'], noncompliantSince: NOW });
    const sameDeviceOtherUser = compliance({ tenantId, userId: (await newUser(store, { tenantId })).id, deviceId, state: 'compliant' });
    const sameIdsOtherTenant = compliance({ tenantId: other.tenantId, userId, deviceId, state: 'unknown', partner: 'mdm-c' });
    for (const c of [mine, sameDeviceOtherUser, sameIdsOtherTenant]) await store.access.setCompliance(c);
    expect(await store.access.compliance(tenantId, userId, deviceId)).toEqual(mine);
    expect(await store.access.compliance(tenantId, sameDeviceOtherUser.userId, deviceId)).toEqual(sameDeviceOtherUser);
    expect(await store.access.compliance(other.tenantId, userId, deviceId)).toEqual(sameIdsOtherTenant);
    expect(await store.access.compliance(tenantId, userId, unique('device'))).toBeUndefined();
    expect(await store.access.compliance(other.tenantId, other.userId, deviceId)).toBeUndefined();
  });
});

eachBackend('app protection state', (t) => {
  test('put then read answers the state; a second put replaces it whole', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const first = appState({ tenantId, userId, violations: ['jailbroken', 'debuggerAttached'], pinFailures: 2 });
    expect(await store.access.appState(tenantId, userId, first.deviceId)).toBeUndefined();
    await store.access.putAppState(first);
    expect(await store.access.appState(tenantId, userId, first.deviceId)).toEqual(first);
    const wiped: AppProtectionState = {
      ...first,
      policyId: null,
      policyEtag: null,
      appVersion: null,
      osVersion: null,
      lastCheckInAt: null,
      pinFailures: 10,
      violations: [],
      selectiveWipe: 'pending',
      selectiveWipeReason: 'pinFailures',
      selectiveWipeRequestedAt: NOW + 1,
      selectiveWipeAcknowledgedAt: null,
      updatedAt: NOW + 1,
    };
    await store.access.putAppState(wiped);
    expect(await store.access.appState(tenantId, userId, first.deviceId)).toEqual(wiped);
    const acknowledged: AppProtectionState = { ...wiped, selectiveWipe: 'acknowledged', selectiveWipeAcknowledgedAt: NOW + 2, updatedAt: NOW + 2 };
    await store.access.putAppState(acknowledged);
    expect(await store.access.appState(tenantId, userId, first.deviceId)).toEqual(acknowledged);
    // Another tenant's state with the same user and device ids is another record.
    const other = (await newTenant(store)).id;
    expect(await store.access.appState(other, userId, first.deviceId)).toBeUndefined();
  });

  test('staleAppStates: the tenant\'s states checked in before `before` without a wipe, oldest first, up to the limit', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const secondUser = (await newUser(store, { tenantId })).id;
    const before = NOW + 10 * DAY;
    const stale = [
      appState({ tenantId, userId, lastCheckInAt: before - 3 * DAY }),
      appState({ tenantId, userId: secondUser, lastCheckInAt: before - 2 * DAY }),
      appState({ tenantId, userId, lastCheckInAt: before - 1 }),
    ];
    const notStale = [
      appState({ tenantId, userId, lastCheckInAt: before }), // exactly at `before`: not older
      appState({ tenantId, userId, lastCheckInAt: before + MINUTE }),
      appState({ tenantId, userId, lastCheckInAt: before - 5 * DAY, selectiveWipe: 'pending', selectiveWipeRequestedAt: NOW }),
      appState({ tenantId, userId, lastCheckInAt: before - 5 * DAY, selectiveWipe: 'acknowledged', selectiveWipeAcknowledgedAt: NOW }),
      appState({ tenantId: (await newTenant(store)).id, userId, lastCheckInAt: before - 5 * DAY }), // another tenant
    ];
    // Written in shuffled order, so the answer's order is the store's.
    for (const s of [stale[1]!, notStale[0]!, stale[2]!, notStale[2]!, stale[0]!, notStale[1]!, notStale[3]!, notStale[4]!]) {
      await store.access.putAppState(s);
    }
    expect(await store.access.staleAppStates(tenantId, before, 10)).toEqual(stale);
    expect(await store.access.staleAppStates(tenantId, before, 2)).toEqual(stale.slice(0, 2));
    expect(await store.access.staleAppStates(tenantId, before - 2 * DAY, 10)).toEqual(stale.slice(0, 1));
    // Once a wipe is requested the state leaves the sweep.
    await store.access.putAppState({ ...stale[0]!, selectiveWipe: 'pending', selectiveWipeRequestedAt: before });
    expect(await store.access.staleAppStates(tenantId, before, 10)).toEqual(stale.slice(1));
  });
});

eachBackend('sign-in log', (t) => {
  test('an entry is answered as logged, with its risk signals and policy results', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const entry = signIn({
      tenantId,
      userId,
      kind: 'refresh',
      deviceId: 'dev-1',
      ip: '2001:db8::1',
      sessionId: unique('grant'),
      authMethods: ['pwd', 'otp', 'mfa'],
      riskLevel: 'medium',
      riskScore: 40,
      riskSignals: [{ signal: 'newDevice', weight: 20 }, { signal: 'newNetwork', weight: 20 }],
      policyResults: [{ policyId: 'require-mfa', state: 'on', applies: true, outcome: { needs: ['mfa'] } }, { policyId: 'x', applies: false }],
      decision: 'needs',
      reason: 'Multi-factor authentication is required.',
    });
    await store.access.logSignIn(entry);
    expect(await store.access.signIns({ tenantId, limit: 10 })).toEqual([entry]);
  });

  test('signIns filters by user, decision, client, device and since, within the tenant; newest first', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const otherUser = (await newUser(store, { tenantId })).id;
    const other = await tenantUser(store);
    const entries = [
      signIn({ tenantId, userId, at: NOW + 1, decision: 'allow', clientId: 'mail', deviceId: 'd1' }),
      signIn({ tenantId, userId, at: NOW + 2, decision: 'block', clientId: 'mail', deviceId: 'd2' }),
      signIn({ tenantId, userId: otherUser, at: NOW + 3, decision: 'allow', clientId: 'calendar', deviceId: 'd1' }),
      signIn({ tenantId, userId, at: NOW + 4, decision: 'failure', kind: 'failure', clientId: null, deviceId: null }),
      signIn({ tenantId, userId: otherUser, at: NOW + 5, decision: 'needs', clientId: 'mail', deviceId: 'd3' }),
      signIn({ tenantId: other.tenantId, userId: other.userId, at: NOW + 6, decision: 'allow', clientId: 'mail', deviceId: 'd1' }),
    ];
    for (const e of [entries[3]!, entries[0]!, entries[5]!, entries[2]!, entries[4]!, entries[1]!]) await store.access.logSignIn(e);
    const newestFirst = (list: SignInLogEntry[]) => [...list].sort((a, b) => b.at - a.at);
    const mine = entries.filter((e) => e.tenantId === tenantId);
    const ids = (list: SignInLogEntry[]) => list.map((e) => e.id);

    expect(await store.access.signIns({ tenantId, limit: 100 })).toEqual(newestFirst(mine));
    expect(ids(await store.access.signIns({ tenantId, userId, limit: 100 }))).toEqual(ids(newestFirst(mine.filter((e) => e.userId === userId))));
    expect(ids(await store.access.signIns({ tenantId, decision: 'allow', limit: 100 }))).toEqual(ids([entries[2]!, entries[0]!]));
    expect(ids(await store.access.signIns({ tenantId, clientId: 'mail', limit: 100 }))).toEqual(ids([entries[4]!, entries[1]!, entries[0]!]));
    expect(ids(await store.access.signIns({ tenantId, deviceId: 'd1', limit: 100 }))).toEqual(ids([entries[2]!, entries[0]!]));
    expect(ids(await store.access.signIns({ tenantId, since: NOW + 3, limit: 100 }))).toEqual(ids([entries[4]!, entries[3]!, entries[2]!]));
    expect(ids(await store.access.signIns({ tenantId, userId, decision: 'block', clientId: 'mail', deviceId: 'd2', since: NOW, limit: 100 }))).toEqual(
      ids([entries[1]!]),
    );
    expect(await store.access.signIns({ tenantId, userId: other.userId, limit: 100 })).toEqual([]);
    expect(ids(await store.access.signIns({ tenantId, limit: 2 }))).toEqual(ids([entries[4]!, entries[3]!]));
    expect(ids(await store.access.signIns({ tenantId: other.tenantId, limit: 100 }))).toEqual(ids([entries[5]!]));
  });

  test('paging with the `before` cursor visits every entry once, in order, even when many share one time', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    // 50 entries over 4 distinct times (most times shared by a dozen entries), ids in random order.
    const logged: SignInLogEntry[] = [];
    for (let i = 0; i < 50; i++) {
      const e = signIn({ tenantId, userId, id: crypto.randomBytes(6).toString('hex'), at: NOW + (i % 4) * MINUTE });
      logged.push(e);
      await store.access.logSignIn(e);
    }
    const expected = [...logged].sort((a, b) => b.at - a.at || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)).map((e) => e.id);
    for (const filter of [{}, { userId }, { since: NOW + MINUTE }]) {
      const seen: string[] = [];
      let before: { at: number; id: string } | undefined;
      for (let pages = 0; pages < 20; pages++) {
        const page = await store.access.signIns({ tenantId, ...filter, before, limit: 7 });
        expect(page.length).toBeLessThanOrEqual(7);
        seen.push(...page.map((e) => e.id));
        if (page.length < 7) break;
        const last = page[page.length - 1]!;
        before = { at: last.at, id: last.id };
      }
      const want = 'since' in filter ? expected.filter((id) => logged.find((e) => e.id === id)!.at >= NOW + MINUTE) : expected;
      expect(seen).toEqual(want);
    }
  });

  test('signInOfSession answers the newest entry of the session', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const sessionId = unique('grant');
    const started = signIn({ tenantId, userId, sessionId, at: NOW, kind: 'interactive' });
    const renewed = signIn({ tenantId, userId, sessionId, at: NOW + 2 * MINUTE, kind: 'refresh', riskLevel: 'low', riskScore: 15 });
    const middle = signIn({ tenantId, userId, sessionId, at: NOW + MINUTE, kind: 'refresh' });
    const otherSession = signIn({ tenantId, userId, sessionId: unique('grant'), at: NOW + 3 * MINUTE });
    for (const e of [started, renewed, middle, otherSession]) await store.access.logSignIn(e);
    expect(await store.access.signInOfSession(sessionId)).toEqual(renewed);
    expect(await store.access.signInOfSession(unique('grant'))).toBeUndefined();
  });

  test('signInHistory: the distinct devices, clients and addresses of allowed sign-ins since `since`', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const otherUser = (await newUser(store, { tenantId })).id;
    const since = NOW + DAY;
    for (const e of [
      signIn({ tenantId, userId, at: since, deviceId: 'd1', clientId: 'mail', ip: '192.0.2.1' }),
      signIn({ tenantId, userId, at: since + 1, deviceId: 'd1', clientId: 'mail', ip: '192.0.2.1' }),
      signIn({ tenantId, userId, at: since + 2, deviceId: 'd2', clientId: 'calendar', ip: '198.51.100.7' }),
      signIn({ tenantId, userId, at: since + 3, deviceId: null, clientId: null, ip: null }),
      // Not allowed, too old, or another user's: not history.
      signIn({ tenantId, userId, at: since + 4, deviceId: 'blocked-dev', clientId: 'blocked-app', ip: '203.0.113.9', decision: 'block' }),
      signIn({ tenantId, userId, at: since + 5, deviceId: 'needs-dev', clientId: 'needs-app', ip: '203.0.113.10', decision: 'needs' }),
      signIn({ tenantId, userId, at: since + 6, deviceId: 'fail-dev', clientId: 'fail-app', ip: '203.0.113.11', decision: 'failure', kind: 'failure' }),
      signIn({ tenantId, userId, at: since - 1, deviceId: 'old-dev', clientId: 'old-app', ip: '203.0.113.12' }),
      signIn({ tenantId, userId: otherUser, at: since + 7, deviceId: 'their-dev', clientId: 'their-app', ip: '203.0.113.13' }),
    ]) {
      await store.access.logSignIn(e);
    }
    const history = await store.access.signInHistory(userId, since);
    expect({ deviceIds: sortedStrings(history.deviceIds), clientIds: sortedStrings(history.clientIds), ips: sortedStrings(history.ips) }).toEqual({
      deviceIds: ['d1', 'd2'],
      clientIds: ['calendar', 'mail'],
      ips: ['192.0.2.1', '198.51.100.7'],
    });
    expect(await store.access.signInHistory(unique('nobody'), 0)).toEqual({ deviceIds: [], clientIds: [], ips: [] });
  });

  test('failuresSince counts the user\'s failure entries since `since`', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const otherUser = (await newUser(store, { tenantId })).id;
    const since = NOW + 2 * DAY;
    const failure = (at: number, user = userId) => signIn({ tenantId, userId: user, at, decision: 'failure', kind: 'failure' });
    for (const e of [
      failure(since),
      failure(since + MINUTE),
      failure(since + 2 * MINUTE),
      failure(since - 1), // too old
      failure(since + MINUTE, otherUser),
      signIn({ tenantId, userId, at: since + 3 * MINUTE, decision: 'block' }),
      signIn({ tenantId, userId, at: since + 3 * MINUTE, decision: 'allow' }),
      signIn({ tenantId, userId, at: since + 3 * MINUTE, decision: 'needs' }),
    ]) {
      await store.access.logSignIn(e);
    }
    expect(await store.access.failuresSince(userId, since)).toBe(3);
    expect(await store.access.failuresSince(userId, since + MINUTE)).toBe(2);
    expect(await store.access.failuresSince(userId, since - 1)).toBe(4);
    expect(await store.access.failuresSince(otherUser, since)).toBe(1);
    expect(await store.access.failuresSince(userId, since + DAY)).toBe(0);
  });

  test('purgeSignIns deletes entries older than `before`, at most `limit` a call', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    // Far before every other test's entries, so they are out of reach of this purge.
    const base = NOW - 400 * DAY;
    const old = [1, 2, 3, 4, 5].map((i) => signIn({ tenantId, userId, at: base - i * MINUTE }));
    const kept = [signIn({ tenantId, userId, at: base }), signIn({ tenantId, userId, at: base + MINUTE })];
    for (const e of [...old, ...kept]) await store.access.logSignIn(e);
    expect(await store.access.purgeSignIns(base, 2)).toBe(2);
    expect(await store.access.purgeSignIns(base, 2)).toBe(2);
    expect(await store.access.purgeSignIns(base, 2)).toBe(1);
    expect(await store.access.purgeSignIns(base, 2)).toBe(0);
    const left = await store.access.signIns({ tenantId, limit: 100 });
    expect(left.map((e) => e.id)).toEqual([kept[1]!.id, kept[0]!.id]);
  });
});

eachBackend('user risk', (t) => {
  test('set then read answers the word; a second set replaces it; users are their own', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const otherUser = (await newUser(store, { tenantId })).id;
    expect(await store.access.userRisk(userId)).toBeUndefined();
    const confirmed = { userId, state: 'confirmed' as const, at: NOW, by: 'admin-1' };
    await store.access.setUserRisk(confirmed);
    expect(await store.access.userRisk(userId)).toEqual(confirmed);
    const dismissed = { userId, state: 'dismissed' as const, at: NOW + MINUTE, by: 'admin-2' };
    await store.access.setUserRisk(dismissed);
    expect(await store.access.userRisk(userId)).toEqual(dismissed);
    expect(await store.access.userRisk(otherUser)).toBeUndefined();
  });
});

eachBackend('access in a unit of work', (t) => {
  test('a unit reads the configuration and changes it in one transaction; a throw rolls its writes back', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    await store.access.putConfig(tenantId, '{"n":1}', 0, NOW);
    const next = await store.run(function* (tx) {
      const current = yield* tx.access.config(tenantId);
      return yield* tx.access.putConfig(tenantId, '{"n":2}', current!.version, NOW + 1);
    });
    expect(next?.version).toBe(2);
    await expect(
      store.run(function* (tx) {
        yield* tx.access.putConfig(tenantId, '{"n":3}', 2, NOW + 2);
        yield* tx.access.setUserRisk({ userId, state: 'confirmed', at: NOW, by: 'admin' });
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await store.access.config(tenantId)).toEqual(next);
    expect(await store.access.userRisk(userId)).toBeUndefined();
  });
});
