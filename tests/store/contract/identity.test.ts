/**
 * The store contract, identity: the identity provider's records and TOTP enrolments, the same on every backend.
 */
import type { IdentityRecord } from '../../../server/store/types';
import { MINUTE, NOW, eachBackend, newUser, unique } from './fixtures';

const record = (fields: Partial<IdentityRecord> = {}): IdentityRecord => ({
  model: 'AuthorizationCode',
  id: unique('code'),
  payload: { accountId: 'u1', nested: { list: [1, 'two'] }, text: 'é\u0000x'.replace('\u0000', '') },
  grantId: null,
  userCode: null,
  uid: null,
  expiresAt: NOW + MINUTE,
  consumedAt: null,
  ...fields,
});

eachBackend('identity records', (t) => {
  test('upsert then find answers the record with its JSON payload; a second upsert replaces it', async () => {
    const { store } = t();
    const r = record({ grantId: unique('grant') });
    await store.identityRecords.upsert(r);
    expect(await store.identityRecords.find(r.model, r.id)).toEqual(r);
    expect(await store.identityRecords.find('Session', r.id)).toBeUndefined();
    const replaced = { ...r, payload: { accountId: 'u2' }, expiresAt: NOW + 2 * MINUTE };
    await store.identityRecords.upsert(replaced);
    expect(await store.identityRecords.find(r.model, r.id)).toEqual(replaced);
  });

  test('found by uid and by user code within their model', async () => {
    const { store } = t();
    const session = record({ model: 'Session', uid: unique('uid') });
    const device = record({ model: 'DeviceCode', userCode: unique('CODE') });
    await store.identityRecords.upsert(session);
    await store.identityRecords.upsert(device);
    expect(await store.identityRecords.findByUid('Session', session.uid!)).toEqual(session);
    expect(await store.identityRecords.findByUid('Interaction', session.uid!)).toBeUndefined();
    expect(await store.identityRecords.findByUserCode('DeviceCode', device.userCode!)).toEqual(device);
    expect(await store.identityRecords.findByUserCode('DeviceCode', 'nope')).toBeUndefined();
  });

  test('consume sets consumedAt once; destroy deletes one record', async () => {
    const { store } = t();
    const r = record();
    await store.identityRecords.upsert(r);
    await store.identityRecords.consume(r.model, r.id, NOW + 5);
    await store.identityRecords.consume(r.model, r.id, NOW + 9);
    expect((await store.identityRecords.find(r.model, r.id))?.consumedAt).toBe(NOW + 5);
    await store.identityRecords.destroy(r.model, r.id);
    expect(await store.identityRecords.find(r.model, r.id)).toBeUndefined();
  });

  test('revokeByGrantId deletes every model of that grant and nothing else', async () => {
    const { store } = t();
    const grantId = unique('grant');
    const code = record({ grantId });
    const refresh = record({ model: 'RefreshToken', grantId });
    const other = record({ model: 'RefreshToken', grantId: unique('grant') });
    for (const r of [code, refresh, other]) await store.identityRecords.upsert(r);
    expect(await store.identityRecords.revokeByGrantId(grantId)).toBe(2);
    expect(await store.identityRecords.find(code.model, code.id)).toBeUndefined();
    expect(await store.identityRecords.find(refresh.model, refresh.id)).toBeUndefined();
    expect(await store.identityRecords.find(other.model, other.id)).toEqual(other);
  });

  test('purgeExpired deletes records expired before now, up to the limit; records without expiry stay', async () => {
    const { store } = t();
    const base = NOW + 1000 * MINUTE + Math.floor(Math.random() * 1000) * MINUTE;
    const old = [record({ expiresAt: base - 3 }), record({ expiresAt: base - 2 }), record({ expiresAt: base - 1 })];
    const live = record({ expiresAt: base + MINUTE });
    const forever = record({ expiresAt: null });
    for (const r of [...old, live, forever]) await store.identityRecords.upsert(r);
    let purged = 0;
    for (let i = 0; i < 100; i++) {
      const n = await store.identityRecords.purgeExpired(base, 2);
      expect(n).toBeLessThanOrEqual(2);
      purged += n;
      if (n === 0) break;
    }
    expect(purged).toBeGreaterThanOrEqual(3);
    for (const r of old) expect(await store.identityRecords.find(r.model, r.id)).toBeUndefined();
    expect(await store.identityRecords.find(live.model, live.id)).toEqual(live);
    expect(await store.identityRecords.find(forever.model, forever.id)).toEqual(forever);
  });
});

eachBackend('mfa', (t) => {
  test('enroll, get with the recovery codes left, and re-enrolment replaces the codes', async () => {
    const { store } = t();
    const user = await newUser(store);
    expect(await store.mfa.get(user.id)).toBeUndefined();
    await store.mfa.enroll(user.id, 'v1.sealed', ['h1', 'h2', 'h3'], NOW);
    expect(await store.mfa.get(user.id)).toEqual({ userId: user.id, sealedSecret: 'v1.sealed', enrolledAt: NOW, lastStep: null, recoveryCodesLeft: 3 });
    expect(await store.mfa.useStep(user.id, 100)).toBe(true);
    await store.mfa.enroll(user.id, 'v1.other', ['h9'], NOW + 1);
    expect(await store.mfa.get(user.id)).toEqual({ userId: user.id, sealedSecret: 'v1.other', enrolledAt: NOW + 1, lastStep: null, recoveryCodesLeft: 1 });
    expect(await store.mfa.useRecoveryCode(user.id, 'h1', NOW)).toBe(false);
  });

  test('a time step is good once, and only forward', async () => {
    const { store } = t();
    const user = await newUser(store);
    await store.mfa.enroll(user.id, 's', [], NOW);
    expect(await store.mfa.useStep(user.id, 57_000_000)).toBe(true);
    expect(await store.mfa.useStep(user.id, 57_000_000)).toBe(false);
    expect(await store.mfa.useStep(user.id, 56_999_999)).toBe(false);
    expect(await store.mfa.useStep(user.id, 57_000_001)).toBe(true);
    expect((await store.mfa.get(user.id))?.lastStep).toBe(57_000_001);
    const other = await newUser(store);
    expect(await store.mfa.useStep(other.id, 1)).toBe(false); // not enrolled
  });

  test('a recovery code is good once and only for its user; remove ends the enrolment', async () => {
    const { store } = t();
    const user = await newUser(store);
    const other = await newUser(store);
    await store.mfa.enroll(user.id, 's', ['a', 'b'], NOW);
    expect(await store.mfa.useRecoveryCode(other.id, 'a', NOW)).toBe(false);
    expect(await store.mfa.useRecoveryCode(user.id, 'a', NOW)).toBe(true);
    expect(await store.mfa.useRecoveryCode(user.id, 'a', NOW)).toBe(false);
    expect((await store.mfa.get(user.id))?.recoveryCodesLeft).toBe(1);
    expect(await store.mfa.remove(user.id)).toBe(true);
    expect(await store.mfa.remove(user.id)).toBe(false);
    expect(await store.mfa.get(user.id)).toBeUndefined();
    expect(await store.mfa.useRecoveryCode(user.id, 'b', NOW)).toBe(false);
  });
});
