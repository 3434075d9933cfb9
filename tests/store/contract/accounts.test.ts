/**
 * The store contract, accounts: tenants, users and refresh tokens, the same on every backend, through the public
 * `Store` API only. server/store/sqlite is the specification of what each method means.
 */
import { DAY, NOW, eachBackend, expectRefusal, newTenant, newUser, token, unique } from './fixtures';

eachBackend('tenants', (t) => {
  test('create answers the tenant and get reads it back; an unknown id is undefined', async () => {
    const { store } = t();
    const name = unique('Acme');
    const tenant = await store.tenants.create(name, NOW + 5);
    expect(tenant).toEqual({ id: expect.any(String), name, region: 'default', createdAt: NOW + 5 });
    expect(await store.tenants.get(tenant.id)).toEqual(tenant);
    const other = await store.tenants.create(unique('Other'), NOW);
    expect(other.id).not.toBe(tenant.id);
    expect(await store.tenants.get('no-such-tenant')).toBeUndefined();
  });

  test('a tenant keeps the region it was created in; list reads every tenant; setRegion relabels one', async () => {
    const { store } = t();
    const eu = await store.tenants.create(unique('Eu'), NOW, 'eu');
    expect(eu.region).toBe('eu');
    expect(await store.tenants.get(eu.id)).toEqual(eu);
    const us = await store.tenants.create(unique('Us'), NOW + 1, 'us-east-2');
    const listed = await store.tenants.list();
    expect(listed).toEqual(expect.arrayContaining([eu, us]));
    expect(listed.findIndex((x) => x.id === eu.id)).toBeLessThan(listed.findIndex((x) => x.id === us.id));
    expect(await store.tenants.setRegion(eu.id, 'eu-west')).toBe(true);
    expect(await store.tenants.get(eu.id)).toEqual({ ...eu, region: 'eu-west' });
    expect(await store.tenants.setRegion('no-such-tenant', 'eu')).toBe(false);
  });

  test('setRegion announces the tenant, after the commit', async () => {
    const { store } = t();
    const tenant = await store.tenants.create(unique('Moving'), NOW);
    const seen: unknown[] = [];
    const off = store.onInvalidate((changes) => seen.push(...changes));
    try {
      await store.tenants.setRegion(tenant.id, 'eu');
    } finally {
      off();
    }
    expect(seen).toContainEqual({ kind: 'tenantAccess', tenantId: tenant.id });
  });
});

eachBackend('users', (t) => {
  test('create answers the whole user, with version 0 and enabled, and byId reads the same', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const username = unique('alice');
    const user = await store.users.create(
      { tenantId: tenant.id, username, email: `${username}@example.test`, displayName: 'Alice Ä', role: 'admin', passwordHash: 'scrypt$x' },
      NOW + 7,
    );
    expect(user).toEqual({
      id: expect.any(String),
      tenantId: tenant.id,
      username,
      email: `${username}@example.test`,
      displayName: 'Alice Ä',
      role: 'admin',
      passwordHash: 'scrypt$x',
      sessionVersion: 0,
      disabled: false,
      createdAt: NOW + 7,
      updatedAt: NOW + 7,
    });
    expect(await store.users.byId(user.id)).toEqual(user);
    expect(await store.users.byId('no-such-user')).toBeUndefined();
  });

  test('a user of an unknown tenant is refused', async () => {
    const { store } = t();
    const count = await store.users.count();
    await expectRefusal(newUser(store, { tenantId: 'no-such-tenant' }));
    expect(await store.users.count()).toBe(count);
  });

  test('byUsername ignores case; a second user with the same name in another case is refused', async () => {
    const { store } = t();
    const username = unique('bob');
    const user = await newUser(store, { username });
    expect(await store.users.byUsername(username.toUpperCase())).toEqual(user);
    expect(await store.users.byUsername(`${username}x`)).toBeUndefined();
    const count = await store.users.count();
    await expectRefusal(newUser(store, { username: username.toUpperCase() }));
    expect(await store.users.count()).toBe(count);
  });

  test('byEmail finds every user with the address in any case, oldest first, and nobody else', async () => {
    const { store } = t();
    const address = `${unique('shared')}@example.test`;
    const later = await newUser(store, { email: address.toUpperCase() }, NOW + 2);
    const earlier = await newUser(store, { email: address }, NOW + 1);
    await newUser(store, { email: `x${address}` });
    expect((await store.users.byEmail(address)).map((u) => u.id)).toEqual([earlier.id, later.id]);
    expect(await store.users.byEmail(`none-${address}`)).toEqual([]);
  });

  test('list is ordered by username and count agrees with it', async () => {
    const { store } = t();
    const tag = unique('l');
    const made = [];
    for (const first of ['zed', 'abe', 'mia']) made.push(await newUser(store, { username: `${first}-${tag}` }));
    const listed = (await store.users.list()).filter((u) => u.username.endsWith(tag));
    expect(listed.map((u) => u.username)).toEqual([`abe-${tag}`, `mia-${tag}`, `zed-${tag}`]);
    expect(listed).toEqual(expect.arrayContaining(made));
    expect(await store.users.count()).toBe((await store.users.list()).length);
  });

  test('setPassword, bumpSessionVersion and setDisabled change their field and updatedAt only', async () => {
    const { store } = t();
    const user = await newUser(store);
    await store.users.setPassword(user.id, 'scrypt$new', NOW + 10);
    expect(await store.users.byId(user.id)).toEqual({ ...user, passwordHash: 'scrypt$new', updatedAt: NOW + 10 });
    await store.users.bumpSessionVersion(user.id, NOW + 20);
    await store.users.bumpSessionVersion(user.id, NOW + 21);
    expect(await store.users.byId(user.id)).toEqual({ ...user, passwordHash: 'scrypt$new', sessionVersion: 2, updatedAt: NOW + 21 });
    await store.users.setDisabled(user.id, true, NOW + 30);
    expect(await store.users.byId(user.id)).toMatchObject({ disabled: true, updatedAt: NOW + 30, sessionVersion: 2 });
    await store.users.setDisabled(user.id, false, NOW + 31);
    expect(await store.users.byId(user.id)).toMatchObject({ disabled: false, updatedAt: NOW + 31 });
  });
});

eachBackend('refresh tokens', (t) => {
  test('insert stores the token; byHash and byId read it', async () => {
    const { store } = t();
    const user = await newUser(store);
    const fresh = token(user.id, { deviceId: 'device-1' });
    await store.refreshTokens.insert(fresh);
    const stored = { ...fresh, rotatedAt: null, replacedBy: null, revokedAt: null, revokedReason: null };
    expect(await store.refreshTokens.byHash(Buffer.from(fresh.tokenHash))).toEqual(stored);
    expect(await store.refreshTokens.byId(fresh.id)).toEqual(stored);
    expect(await store.refreshTokens.byHash(Buffer.alloc(32, 7))).toBeUndefined();
    expect(await store.refreshTokens.byId('no-such-token')).toBeUndefined();
  });

  test('markRotated succeeds once, and never on a revoked token', async () => {
    const { store } = t();
    const user = await newUser(store);
    const first = token(user.id);
    const second = token(user.id, { familyId: first.familyId });
    await store.refreshTokens.insert(first);
    await store.refreshTokens.insert(second);
    expect(await store.refreshTokens.markRotated(first.id, second.id, NOW + 1)).toBe(true);
    expect(await store.refreshTokens.markRotated(first.id, 'another', NOW + 2)).toBe(false);
    expect(await store.refreshTokens.byId(first.id)).toMatchObject({ rotatedAt: NOW + 1, replacedBy: second.id, revokedAt: null });
    await store.refreshTokens.revokeFamily(first.familyId, 'test', NOW + 3);
    expect(await store.refreshTokens.markRotated(second.id, 'another', NOW + 4)).toBe(false);
    expect(await store.refreshTokens.byId(second.id)).toMatchObject({ rotatedAt: null, replacedBy: null });
  });

  test('head is the sign-in\'s current token; liveHead also requires it unexpired; both end with the sign-in', async () => {
    const { store } = t();
    const user = await newUser(store);
    const first = token(user.id, { expiresAt: NOW + DAY });
    const second = token(user.id, { familyId: first.familyId, deviceId: 'device-h', expiresAt: NOW + 2 * DAY });
    await store.refreshTokens.insert(first);
    expect(await store.refreshTokens.head(user.id, first.familyId)).toEqual({ deviceId: null, expiresAt: NOW + DAY });
    await store.refreshTokens.insert(second);
    await store.refreshTokens.markRotated(first.id, second.id, NOW + 1);
    const head = { deviceId: 'device-h', expiresAt: NOW + 2 * DAY };
    expect(await store.refreshTokens.head(user.id, first.familyId)).toEqual(head);
    expect(await store.refreshTokens.liveHead(user.id, first.familyId, NOW + 2 * DAY - 1)).toEqual(head);
    expect(await store.refreshTokens.liveHead(user.id, first.familyId, NOW + 2 * DAY)).toBeUndefined();
    expect(await store.refreshTokens.head(user.id, first.familyId)).toEqual(head); // head ignores the clock
    expect(await store.refreshTokens.head(user.id, 'no-such-family')).toBeUndefined();
    await store.refreshTokens.revokeFamily(first.familyId, 'signed out', NOW + 2);
    expect(await store.refreshTokens.head(user.id, first.familyId)).toBeUndefined();
    expect(await store.refreshTokens.liveHead(user.id, first.familyId, NOW)).toBeUndefined();
  });

  test('extend moves a live sign-in\'s expiry forward only, announces it, and leaves ended sign-ins alone', async () => {
    const { store } = t();
    const user = await newUser(store);
    const live = token(user.id, { expiresAt: NOW + DAY });
    const ended = token(user.id, { expiresAt: NOW + DAY });
    await store.refreshTokens.insert(live);
    await store.refreshTokens.insert(ended);
    await store.refreshTokens.revokeFamily(ended.familyId, 'signed out', NOW);
    const seen: unknown[] = [];
    const off = store.onInvalidate((changes) => seen.push(...changes));
    try {
      expect(await store.refreshTokens.extend(live.familyId, NOW + 3 * DAY)).toBe(true);
    } finally {
      off();
    }
    expect(seen).toContainEqual({ kind: 'signIn', familyId: live.familyId });
    expect(await store.refreshTokens.liveHead(user.id, live.familyId, NOW + 2 * DAY)).toEqual({ deviceId: null, expiresAt: NOW + 3 * DAY });
    expect(await store.refreshTokens.extend(live.familyId, NOW + 2 * DAY)).toBe(false); // never backwards
    expect((await store.refreshTokens.head(user.id, live.familyId))?.expiresAt).toBe(NOW + 3 * DAY);
    expect(await store.refreshTokens.extend(ended.familyId, NOW + 9 * DAY)).toBe(false);
    expect(await store.refreshTokens.head(user.id, ended.familyId)).toBeUndefined();
  });

  test('revokeFamily revokes the live tokens of one sign-in and answers how many', async () => {
    const { store } = t();
    const user = await newUser(store);
    const a1 = token(user.id);
    const a2 = token(user.id, { familyId: a1.familyId });
    const b = token(user.id);
    for (const x of [a1, a2, b]) await store.refreshTokens.insert(x);
    expect(await store.refreshTokens.revokeFamily(a1.familyId, 'reuse', NOW + 5)).toBe(2);
    expect(await store.refreshTokens.revokeFamily(a1.familyId, 'again', NOW + 6)).toBe(0);
    for (const x of [a1, a2]) {
      expect(await store.refreshTokens.byId(x.id)).toMatchObject({ revokedAt: NOW + 5, revokedReason: 'reuse' });
    }
    expect(await store.refreshTokens.byId(b.id)).toMatchObject({ revokedAt: null, revokedReason: null });
  });

  test('revokeAllForUser revokes every live token of the user, and no one else\'s', async () => {
    const { store } = t();
    const user = await newUser(store);
    const other = await newUser(store);
    const mine = [token(user.id), token(user.id), token(user.id)];
    const theirs = token(other.id);
    for (const x of [...mine, theirs]) await store.refreshTokens.insert(x);
    await store.refreshTokens.revokeFamily(mine[0]!.familyId, 'earlier', NOW + 1);
    expect(await store.refreshTokens.revokeAllForUser(user.id, 'password changed', NOW + 2)).toBe(2);
    expect(await store.refreshTokens.byId(mine[0]!.id)).toMatchObject({ revokedAt: NOW + 1, revokedReason: 'earlier' });
    for (const x of mine.slice(1)) expect(await store.refreshTokens.byId(x.id)).toMatchObject({ revokedAt: NOW + 2, revokedReason: 'password changed' });
    expect(await store.refreshTokens.byId(theirs.id)).toMatchObject({ revokedAt: null });
    expect(await store.refreshTokens.revokeAllForUser(user.id, 'again', NOW + 3)).toBe(0);
  });

  test('revokeForDevice revokes whole sign-ins that were ever bound to the device, for that user only', async () => {
    const { store } = t();
    const user = await newUser(store);
    const other = await newUser(store);
    // A sign-in that started unbound and was bound to the device on its first refresh.
    const unbound = token(user.id, { deviceId: null });
    const bound = token(user.id, { familyId: unbound.familyId, deviceId: 'device-a' });
    const elsewhere = token(user.id, { deviceId: 'device-b' });
    const sameDeviceIdOtherUser = token(other.id, { deviceId: 'device-a' });
    for (const x of [unbound, bound, elsewhere, sameDeviceIdOtherUser]) await store.refreshTokens.insert(x);
    await store.refreshTokens.markRotated(unbound.id, bound.id, NOW + 1);
    expect(await store.refreshTokens.revokeForDevice(user.id, 'device-a', 'device removed', NOW + 2)).toBe(2);
    for (const x of [unbound, bound]) expect(await store.refreshTokens.byId(x.id)).toMatchObject({ revokedAt: NOW + 2, revokedReason: 'device removed' });
    for (const x of [elsewhere, sameDeviceIdOtherUser]) expect(await store.refreshTokens.byId(x.id)).toMatchObject({ revokedAt: null });
    expect(await store.refreshTokens.revokeForDevice(user.id, 'device-a', 'again', NOW + 3)).toBe(0);
  });
});
