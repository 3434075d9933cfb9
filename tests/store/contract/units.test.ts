/**
 * The store contract, transactions and infrastructure: units of work (`run`), the commit and invalidation feeds,
 * health and the change counter, typed failures (full, busy), and durability across a reopen.
 */
import crypto from 'node:crypto';
import { StoreBusy, StoreFull } from '../../../server/store/errors';
import type { Invalidation, Item, NewItem, Step, Store, TxStore } from '../../../server/store/types';
import { openTestStore, STORE_BACKENDS } from '../../helpers/storeBackends';
import {
  DAY,
  LOWEST,
  NOW,
  description,
  eachBackend,
  email,
  expectRefusal,
  highestModseq,
  newMailbox,
  newTenant,
  newUser,
  recordCommits,
  recordInvalidations,
  rejectionOf,
  sorted,
  token,
  unique,
} from './fixtures';

/** A unit's error of its own kind: it must reach the caller of `run` as it was thrown. */
class UnitRefused extends Error {
  constructor(readonly detail: string) {
    super(`refused: ${detail}`);
  }
}

/** A failure as the store's own type says it, with nothing of the backend's codes on it. */
function expectStoreError(err: unknown, type: typeof StoreFull | typeof StoreBusy): void {
  expect(err).toBeInstanceOf(type);
  expect((err as Error).name).toBe(type.name);
  expect((err as { code?: unknown }).code).toBeUndefined();
}

async function eventually(check: () => Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

eachBackend('infrastructure', (t, backend) => {
  test('backend names the backend, ping answers, connectionPragmas lists the open connections', async () => {
    const { store } = t();
    expect(store.backend).toBe(backend);
    await expect(store.ping()).resolves.toBeUndefined();
    const pragmas = await store.connectionPragmas();
    expect(pragmas.length).toBeGreaterThan(0);
  });

  test('dataVersion stays for this store\'s own commits and moves for another store\'s', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const version = await store.dataVersion();
    await store.items.create(email(user.id, inbox.id), NOW);
    await store.users.setPassword(user.id, 'x', NOW);
    expect(await store.dataVersion()).toBe(version);
    const other = await t().openAnother();
    await other.items.create(email(user.id, inbox.id), NOW);
    await eventually(async () => (await store.dataVersion()) !== version, 'dataVersion to move after another store committed');
  });
});

eachBackend('units of work', (t) => {
  test('run commits what the unit wrote and answers what it returned; its steps see its own writes', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const before = await highestModseq(store, user.id);
    const result = await store.run(function* (tx) {
      const created = yield* tx.items.create(email(user.id, inbox.id), NOW);
      const seen = yield* tx.items.byId(user.id, created.id);
      const moved = yield* tx.items.move(user.id, created.id, archive.id, NOW);
      const counts = yield* tx.folders.byId(user.id, archive.id);
      return { created, seen, moved, archiveTotal: counts?.totalCount };
    });
    expect(result.seen).toEqual(result.created);
    expect(result.archiveTotal).toBe(1);
    expect(result.moved.modseq).toBe(before + 2);
    expect(await store.items.byId(user.id, result.created.id)).toEqual(result.moved);
    expect(await highestModseq(store, user.id)).toBe(before + 2);
    // A unit that only reads works too.
    expect(await store.run(function* (tx) {
      return (yield* tx.mailboxes.get(user.id))?.highestModseq;
    })).toBe(before + 2);
  });

  test('helpers are generator functions over tx, called with yield*', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    function* createTwo(tx: TxStore, item: NewItem): Step<string[]> {
      const a = yield* tx.items.create(item, NOW);
      const b = yield* tx.items.create({ ...item, subject: `${item.subject} (2)` }, NOW);
      return [a.id, b.id];
    }
    const ids = await store.run(function* (tx) {
      const made = yield* createTwo(tx, email(user.id, inbox.id));
      return [...made, ...(yield* createTwo(tx, email(user.id, inbox.id)))];
    });
    expect(await store.items.byIds(user.id, ids)).toHaveLength(4);
  });

  test('a unit that throws rolls everything back: nothing visible, nothing announced, the error unchanged', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const device = await store.devices.create(user.id, 'd', description(), NOW);
    const before = { modseq: await highestModseq(store, user.id), inbox: await store.folders.byId(user.id, inbox.id), user: await store.users.byId(user.id), device };
    const commits = recordCommits(store);
    const invalidations = recordInvalidations(store);
    const thrown = new UnitRefused('after writing');
    let createdId: string | undefined;
    try {
      const err = await rejectionOf(
        store.run(function* (tx) {
          createdId = (yield* tx.items.create(email(user.id, inbox.id), NOW)).id;
          yield* tx.folders.create(user.id, { displayName: 'Doomed', parentId: null }, NOW);
          yield* tx.users.setPassword(user.id, 'scrypt$doomed', NOW + 1);
          yield* tx.devices.setAdminDecision(device.id, 'blocked', NOW + 1);
          throw thrown;
        }),
      );
      expect(err).toBe(thrown);
      expect(err).toBeInstanceOf(UnitRefused);
      expect((err as UnitRefused).detail).toBe('after writing');
    } finally {
      commits.stop();
      invalidations.stop();
    }
    expect(createdId).toEqual(expect.any(String));
    expect(await store.items.byId(user.id, createdId!)).toBeUndefined();
    expect(await highestModseq(store, user.id)).toBe(before.modseq);
    expect(await store.folders.byId(user.id, inbox.id)).toEqual(before.inbox);
    expect((await store.folders.listByUser(user.id)).map((f) => f.displayName)).not.toContain('Doomed');
    expect(await store.users.byId(user.id)).toEqual(before.user);
    expect(await store.devices.byId(device.id)).toEqual(before.device);
    expect(commits.changes).toEqual([]);
    expect(invalidations.changes).toEqual([]);
  });

  test('a step that fails rolls back the unit\'s earlier writes, and run rejects with the failure', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const before = await highestModseq(store, user.id);
    let createdId: string | undefined;
    await expectRefusal(
      store.run(function* (tx) {
        createdId = (yield* tx.items.create(email(user.id, inbox.id), NOW)).id;
        yield* tx.items.update(user.id, 'no-such-item', { isRead: true }, NOW);
      }),
    );
    expect(await store.items.byId(user.id, createdId!)).toBeUndefined();
    expect(await highestModseq(store, user.id)).toBe(before);
  });

  test('a unit can decide on what it read: a change key check', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const item = await store.items.create(email(user.id, inbox.id), NOW);
    const flagIfUnchanged = (changeKey: string) =>
      store.run(function* (tx) {
        const current = yield* tx.items.byId(user.id, item.id);
        if (!current || current.changeKey !== changeKey) throw new UnitRefused('changed meanwhile');
        return yield* tx.items.update(user.id, item.id, { isFlagged: !current.isFlagged }, NOW);
      });
    const flagged = await flagIfUnchanged(item.changeKey);
    expect(flagged.isFlagged).toBe(true);
    const err = await rejectionOf(flagIfUnchanged(item.changeKey));
    expect(err).toBeInstanceOf(UnitRefused);
    expect(await store.items.byId(user.id, item.id)).toEqual(flagged);
  });
});

eachBackend('commit feed', (t) => {
  /** `fn`'s result, and what the commit feed announced while it ran (before its promise resolved). */
  const withFeed = async <T>(store: Store, fn: () => Promise<T>) => {
    const commits = recordCommits(store);
    try {
      const result = await fn();
      return { result, changes: commits.changes };
    } finally {
      commits.stop();
    }
  };

  test('an item change is announced once, after the commit, with the modseq and the folders it touched', async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    // The listener reads the item it was told about: it must find it as committed, never as it was before.
    let probe: string | undefined;
    const probes: Array<Promise<Item | undefined>> = [];
    const stop = store.onCommit(() => {
      if (probe) probes.push(store.items.byId(user.id, probe));
    });
    const created = await withFeed(store, () => store.items.create(email(user.id, inbox.id), NOW));
    probe = created.result.id;
    const id = created.result.id;
    const moved = await withFeed(store, () => store.items.move(user.id, id, archive.id, NOW));
    const updated = await withFeed(store, () => store.items.update(user.id, id, { isFlagged: true }, NOW));
    const deleted = await withFeed(store, () => store.items.delete(user.id, id, NOW));
    stop();
    expect(created.changes).toEqual([{ userId: user.id, modseq: created.result.modseq, folderIds: [inbox.id], hierarchyChanged: false }]);
    expect(moved.changes).toHaveLength(1);
    expect(moved.changes[0]).toMatchObject({ userId: user.id, modseq: moved.result.modseq, hierarchyChanged: false });
    expect([...moved.changes[0]!.folderIds].sort()).toEqual([inbox.id, archive.id].sort());
    expect(updated.changes).toEqual([{ userId: user.id, modseq: updated.result.modseq, folderIds: [archive.id], hierarchyChanged: false }]);
    expect(deleted.changes).toEqual([{ userId: user.id, modseq: updated.result.modseq + 1, folderIds: [archive.id], hierarchyChanged: false }]);
    expect(await Promise.all(probes)).toEqual([moved.result, updated.result, undefined]);
  });

  test('folder changes are announced as hierarchy changes; a new mailbox as one change', async () => {
    const { store } = t();
    const user = await newUser(store);
    const made = await withFeed(store, () => store.mailboxes.create(user.id, NOW));
    expect(made.changes).toHaveLength(1);
    expect(made.changes[0]).toMatchObject({ userId: user.id, modseq: made.result.highestModseq, hierarchyChanged: true });
    expect([...made.changes[0]!.folderIds].sort()).toEqual((await store.folders.listByUser(user.id)).map((f) => f.id).sort());
    const folder = await withFeed(store, () => store.folders.create(user.id, { displayName: 'F', parentId: null }, NOW));
    expect(folder.changes).toEqual([{ userId: user.id, modseq: folder.result.modseq, folderIds: [folder.result.id], hierarchyChanged: true }]);
    const renamed = await withFeed(store, () => store.folders.update(user.id, folder.result.id, { displayName: 'G' }, NOW));
    expect(renamed.changes).toEqual([{ userId: user.id, modseq: renamed.result.modseq, folderIds: [folder.result.id], hierarchyChanged: true }]);
    const sub = await store.folders.create(user.id, { displayName: 'Sub', parentId: folder.result.id }, NOW);
    await store.items.create(email(user.id, sub.id), NOW);
    const deleted = await withFeed(store, () => store.folders.delete(user.id, folder.result.id, NOW));
    expect(deleted.changes).toHaveLength(1);
    expect(deleted.changes[0]).toMatchObject({ userId: user.id, modseq: await highestModseq(store, user.id), hierarchyChanged: true });
    expect([...deleted.changes[0]!.folderIds].sort()).toEqual([folder.result.id, sub.id].sort());
  });

  test('a unit announces one change per mailbox it wrote, with its last modseq and every folder', async () => {
    const { store } = t();
    const alice = await newMailbox(store);
    const bob = await newMailbox(store);
    const { result, changes } = await withFeed(store, () =>
      store.run(function* (tx) {
        const a1 = yield* tx.items.create(email(alice.user.id, alice.inbox.id), NOW);
        yield* tx.items.create(email(bob.user.id, bob.inbox.id), NOW);
        yield* tx.items.move(alice.user.id, a1.id, alice.archive.id, NOW);
        yield* tx.items.create(email(alice.user.id, alice.inbox.id), NOW);
        return { alice: yield* tx.mailboxes.get(alice.user.id), bob: yield* tx.mailboxes.get(bob.user.id) };
      }),
    );
    expect(sorted(changes, (c) => c.userId).map((c) => ({ ...c, folderIds: [...c.folderIds].sort() }))).toEqual(
      sorted(
        [
          { userId: alice.user.id, modseq: result.alice!.highestModseq, folderIds: [alice.inbox.id, alice.archive.id].sort(), hierarchyChanged: false },
          { userId: bob.user.id, modseq: result.bob!.highestModseq, folderIds: [bob.inbox.id], hierarchyChanged: false },
        ],
        (c) => c.userId,
      ),
    );
  });

  test('writes outside mailboxes, and changes that change nothing, announce nothing; unsubscribing stops the feed', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    const item = await store.items.create(email(user.id, inbox.id), NOW);
    const quiet = await withFeed(store, async () => {
      await store.users.setPassword(user.id, 'x', NOW);
      await store.devices.create(user.id, unique('d'), description(), NOW);
      await store.idempotency.put(user.id, 'k', { requestHash: 'h', status: 200, body: '{}', createdAt: NOW });
      await store.items.update(user.id, item.id, { isRead: false }, NOW);
      await store.items.move(user.id, item.id, inbox.id, NOW);
    });
    expect(quiet.changes).toEqual([]);
    const commits = recordCommits(store);
    commits.stop();
    await store.items.create(email(user.id, inbox.id), NOW);
    expect(commits.changes).toEqual([]);
  });
});

eachBackend('invalidation feed', (t) => {
  /** The distinct invalidations `fn` announced (before its promise resolved), in a stable order. */
  const announced = async (store: Store, fn: () => Promise<unknown>): Promise<Invalidation[]> => {
    const feed = recordInvalidations(store);
    try {
      await fn();
      return sorted(feed.distinct(), (c) => JSON.stringify(c));
    } finally {
      feed.stop();
    }
  };
  const asSorted = (list: Invalidation[]) => sorted(list, (c) => JSON.stringify(c));

  test('tenant and user writes announce the tenant\'s access or the user', async () => {
    const { store } = t();
    let tenantId = '';
    expect(await announced(store, async () => (tenantId = (await store.tenants.create(unique('T'), NOW)).id))).toEqual([{ kind: 'tenantAccess', tenantId }]);
    let userId = '';
    expect(await announced(store, async () => (userId = (await newUser(store, { tenantId })).id))).toEqual([{ kind: 'user', userId }]);
    expect(await announced(store, () => store.users.setPassword(userId, 'p', NOW))).toEqual([{ kind: 'user', userId }]);
    expect(await announced(store, () => store.users.bumpSessionVersion(userId, NOW))).toEqual([{ kind: 'user', userId }]);
    expect(await announced(store, () => store.users.setDisabled(userId, true, NOW))).toEqual([{ kind: 'user', userId }]);
  });

  test('refresh-token writes announce every sign-in they changed', async () => {
    const { store } = t();
    const user = await newUser(store);
    const a = token(user.id, { deviceId: 'dev' });
    const a2 = token(user.id, { familyId: a.familyId, deviceId: 'dev' });
    const b = token(user.id);
    const c = token(user.id);
    const signIn = (familyId: string): Invalidation => ({ kind: 'signIn', familyId });
    expect(await announced(store, () => store.refreshTokens.insert(a))).toEqual([signIn(a.familyId)]);
    for (const x of [a2, b, c]) await store.refreshTokens.insert(x);
    expect(await announced(store, () => store.refreshTokens.markRotated(a.id, a2.id, NOW))).toEqual([signIn(a.familyId)]);
    expect(await announced(store, () => store.refreshTokens.revokeForDevice(user.id, 'dev', 'gone', NOW))).toEqual([signIn(a.familyId)]);
    expect(await announced(store, () => store.refreshTokens.revokeFamily(b.familyId, 'out', NOW))).toEqual([signIn(b.familyId)]);
    const d = token(user.id);
    await store.refreshTokens.insert(d);
    expect(await announced(store, () => store.refreshTokens.revokeAllForUser(user.id, 'all', NOW))).toEqual(asSorted([signIn(c.familyId), signIn(d.familyId)]));
  });

  test('device writes announce the device', async () => {
    const { store } = t();
    const user = await newUser(store);
    const device: Invalidation = { kind: 'device', userId: user.id, deviceId: 'dev-1' };
    let id = '';
    expect(await announced(store, async () => (id = (await store.devices.create(user.id, 'dev-1', description(), NOW)).id))).toEqual([device]);
    expect(await announced(store, () => store.devices.updateDescription(id, description({ friendlyName: 'x' }), NOW))).toEqual([device]);
    expect(await announced(store, () => store.devices.setAdminDecision(id, 'blocked', NOW))).toEqual([device]);
    expect(await announced(store, () => store.devices.setWipe(id, 'pending', { requestedAt: NOW, requestedBy: 'a' }, NOW))).toEqual([device]);
    expect(await announced(store, () => store.devices.bumpEpoch(id, NOW))).toEqual([device]);
    expect(await announced(store, () => store.devices.touch(id, NOW + 1, NOW + 1))).toEqual([device]);
    expect(await announced(store, () => store.devices.delete(id))).toEqual([device]);
  });

  test('access-rule and default-state writes announce the tenant\'s access', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const access: Invalidation = { kind: 'tenantAccess', tenantId: tenant.id };
    const input = { field: 'deviceModel' as const, match: 'exact' as const, value: 'X', accessState: 'blocked' as const, description: '' };
    let id = '';
    expect(await announced(store, async () => (id = (await store.deviceAccess.createRule(tenant.id, input, NOW)).id))).toEqual([access]);
    expect(await announced(store, () => store.deviceAccess.updateRule(tenant.id, id, { ...input, value: 'Y' }, NOW))).toEqual([access]);
    expect(await announced(store, () => store.deviceAccess.deleteRule(tenant.id, id))).toEqual([access]);
    expect(await announced(store, () => store.deviceAccess.setDefaultState(tenant.id, 'quarantined', NOW))).toEqual([access]);
  });

  test('reads and mailbox writes announce nothing', async () => {
    const { store } = t();
    const { user, inbox } = await newMailbox(store);
    expect(
      await announced(store, async () => {
        await store.users.byId(user.id);
        await store.users.list();
        await store.devices.listByUser(user.id);
        const item = await store.items.create(email(user.id, inbox.id), NOW);
        await store.items.update(user.id, item.id, { isRead: true }, NOW);
        await store.folders.create(user.id, { displayName: 'F', parentId: null }, NOW);
      }),
    ).toEqual([]);
  });

  test('a unit\'s writes are announced once, after its commit', async () => {
    const { store } = t();
    const user = await newUser(store);
    const reads: Array<Promise<unknown>> = [];
    const stop = store.onInvalidate(() => reads.push(store.users.byId(user.id)));
    try {
      const changes = await announced(store, () =>
        store.run(function* (tx) {
          yield* tx.users.setPassword(user.id, 'scrypt$one', NOW);
          yield* tx.users.setPassword(user.id, 'scrypt$two', NOW + 1);
        }),
      );
      expect(changes).toEqual([{ kind: 'user', userId: user.id }]);
    } finally {
      stop();
    }
    // What the listener read is the committed record.
    expect(reads.length).toBeGreaterThan(0);
    for (const read of await Promise.all(reads)) expect(read).toMatchObject({ passwordHash: 'scrypt$two' });
  });
});

describe.each(STORE_BACKENDS)('%s store: failures', (backend) => {
  /** An email big enough to need new space in any store. */
  const bulky = (userId: string, folderId: string): NewItem =>
    email(userId, folderId, {
      bodyText: 'lorem ipsum '.repeat(20_000),
      attachments: [{ name: 'big.bin', contentType: 'application/octet-stream', isInline: false, contentId: null, content: crypto.randomBytes(1 << 20) }],
    });

  test('a full store refuses writes with StoreFull and changes nothing; reads go on; writes resume with space', async () => {
    const t = await openTestStore(backend, { name: 'full' });
    try {
      const { store } = t;
      const { user, inbox } = await newMailbox(store);
      const kept = await store.items.create(email(user.id, inbox.id), NOW);
      const before = { modseq: await highestModseq(store, user.id), inbox: await store.folders.byId(user.id, inbox.id) };
      const commits = recordCommits(store);
      const full = await t.fill();
      try {
        expectStoreError(await rejectionOf(store.items.create(bulky(user.id, inbox.id), NOW)), StoreFull);
        expectStoreError(
          await rejectionOf(
            store.run(function* (tx) {
              yield* tx.items.update(user.id, kept.id, { isFlagged: true }, NOW);
              return yield* tx.items.create(bulky(user.id, inbox.id), NOW);
            }),
          ),
          StoreFull,
        );
        expect(await store.items.byId(user.id, kept.id)).toEqual(kept);
        expect(await highestModseq(store, user.id)).toBe(before.modseq);
        expect(await store.folders.byId(user.id, inbox.id)).toEqual(before.inbox);
        expect(await store.sync.changes(user.id, inbox.id, kept.modseq, LOWEST, 10)).toEqual([]);
        expect(commits.changes).toEqual([]);
      } finally {
        await full.undo();
        commits.stop();
      }
      const written = await store.items.create(bulky(user.id, inbox.id), NOW);
      expect(written.modseq).toBe(before.modseq + 1);
    } finally {
      await t.close();
    }
  });

  test('a lock held elsewhere beyond the store\'s wait gives StoreBusy and changes nothing', async () => {
    const t = await openTestStore(backend, { name: 'busy' });
    try {
      const { store } = t;
      const { user, inbox } = await newMailbox(store);
      const item = await store.items.create(email(user.id, inbox.id), NOW);
      const before = await highestModseq(store, user.id);
      const lock = await t.lockElsewhere(user.id);
      let errors: unknown[];
      try {
        errors = [
          await rejectionOf(lock.store.items.create(email(user.id, inbox.id), NOW)),
          await rejectionOf(
            lock.store.run(function* (tx) {
              const current = yield* tx.items.byId(user.id, item.id);
              return yield* tx.items.update(user.id, item.id, { isFlagged: !current!.isFlagged }, NOW);
            }),
          ),
        ];
      } finally {
        await lock.release();
      }
      for (const err of errors) expectStoreError(err, StoreBusy);
      expect(await highestModseq(store, user.id)).toBe(before);
      expect(await store.items.byId(user.id, item.id)).toEqual(item);
      // With the lock gone, the same write goes through.
      expect((await store.items.update(user.id, item.id, { isFlagged: true }, NOW)).modseq).toBe(before + 1);
    } finally {
      await t.close();
    }
  });
});

describe.each(STORE_BACKENDS)('%s store: reopen', (backend) => {
  /** Everything the store holds about one tenant's user, read through the API. */
  async function snapshot(store: Store, ids: { tenantId: string; userId: string; itemIds: string[]; folderIds: string[]; deviceId: string; tokenId: string; ruleId: string; outboxId: string }) {
    const items = await store.items.byIds(ids.userId, ids.itemIds);
    return {
      tenant: await store.tenants.get(ids.tenantId),
      user: await store.users.byId(ids.userId),
      mailbox: await store.mailboxes.get(ids.userId),
      folders: await store.folders.listByUser(ids.userId),
      hierarchyState: await store.folders.hierarchyState(ids.userId),
      items: sorted(items, (i) => i.id),
      bodies: await Promise.all(ids.itemIds.map((id) => store.items.body(ids.userId, id))),
      attachments: await Promise.all(ids.itemIds.map((id) => store.items.attachments(ids.userId, id))),
      blobs: await Promise.all(
        items.filter((i) => i.mimeBlobId).map(async (i) => store.blobs.read(ids.userId, i.mimeBlobId!, 0, (await store.blobs.size(ids.userId, i.mimeBlobId!)) ?? 0)),
      ),
      history: await Promise.all(ids.folderIds.map((f) => store.sync.changes(ids.userId, f, 0, LOWEST, 1000))),
      device: await store.devices.byId(ids.deviceId),
      token: await store.refreshTokens.byId(ids.tokenId),
      rule: await store.deviceAccess.rule(ids.tenantId, ids.ruleId),
      defaultState: await store.deviceAccess.defaultState(ids.tenantId),
      audit: await store.audit.list(ids.tenantId, { limit: 10 }),
      outbox: await store.outbox.byId(ids.outboxId),
      idempotency: await store.idempotency.get(ids.userId, 'key'),
    };
  }

  test('every acknowledged write is there after the store is closed and opened again', async () => {
    const t = await openTestStore(backend, { name: 'reopen' });
    try {
      const store = t.store;
      const tenant = await newTenant(store);
      const { user, inbox, archive } = await newMailbox(store, { tenantId: tenant.id });
      await store.users.setPassword(user.id, 'scrypt$kept', NOW + 1);
      const folder = await store.folders.create(user.id, { displayName: 'Kept', parentId: null }, NOW);
      const mime = Buffer.from(`Subject: kept\r\n\r\n${unique('body')}`);
      const withParts = await store.items.create(
        email(user.id, inbox.id, { mime, bodyHtml: '<p>kept</p>', attachments: [{ name: 'a.txt', contentType: 'text/plain', isInline: false, contentId: null, content: Buffer.from('attached') }] }),
        NOW,
      );
      const updated = await store.items.create(email(user.id, inbox.id), NOW);
      await store.items.update(user.id, updated.id, { isRead: true, categories: ['kept'] }, NOW);
      const moved = await store.items.create(email(user.id, inbox.id), NOW);
      await store.items.move(user.id, moved.id, folder.id, NOW);
      const deleted = await store.items.create(email(user.id, archive.id), NOW);
      await store.items.delete(user.id, deleted.id, NOW);
      const device = await store.devices.create(user.id, 'dev', description({ capabilities: ['push'] }), NOW);
      await store.devices.setAdminDecision(device.id, 'quarantined', NOW);
      const first = token(user.id);
      const second = token(user.id, { familyId: first.familyId });
      await store.refreshTokens.insert(first);
      await store.refreshTokens.insert(second);
      await store.refreshTokens.markRotated(first.id, second.id, NOW);
      const rule = await store.deviceAccess.createRule(tenant.id, { field: 'clientType', match: 'exact', value: 'x', accessState: 'blocked', description: 'd' }, NOW);
      await store.deviceAccess.setDefaultState(tenant.id, 'quarantined', NOW);
      await store.audit.append({ tenantId: tenant.id, at: NOW, actorId: null, actorName: 'a', action: 'x', targetType: 't', targetId: null, details: { k: [1] } });
      const outbox = await store.outbox.enqueue({ userId: user.id, blobId: withParts.mimeBlobId!, mailFrom: 'a@example.test', recipients: ['b@remote.test'] }, NOW);
      await store.idempotency.put(user.id, 'key', { requestHash: 'h', status: 201, body: '{"ok":true}', createdAt: NOW + DAY });
      const ids = {
        tenantId: tenant.id,
        userId: user.id,
        itemIds: [withParts.id, updated.id, moved.id, deleted.id],
        folderIds: [inbox.id, archive.id, folder.id],
        deviceId: device.id,
        tokenId: first.id,
        ruleId: rule.id,
        outboxId: outbox.id,
      };
      const written = await snapshot(store, ids);
      expect(written.items).toHaveLength(3);
      expect(written.history.flat().length).toBeGreaterThan(3);
      const reopened = await t.reopen();
      expect(await snapshot(reopened, ids)).toEqual(written);
      // And it carries on from where it was.
      const next = await reopened.items.create(email(user.id, inbox.id), NOW);
      expect(next.modseq).toBe(written.mailbox!.highestModseq + 1);
    } finally {
      await t.close();
    }
  });
});
