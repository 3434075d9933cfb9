/**
 * The store contract, diagnostics incidents (issue 20), the same on every backend: an incident is created with its
 * zip blob in one unit and keeps the blob; it is found by id in its own tenant only; a user's incidents list newest
 * first (only theirs, at most `limit`); the retention purge deletes what has expired — a batch at a time — and
 * releases the blobs, and keeps what has not expired.
 */
import crypto from 'node:crypto';
import type { DiagnosticIncident, Store, User } from '../../../server/store/types';
import { newIncidentId } from '../../../server/diagnostics/incidentId';
import { DAY, MINUTE, NOW, eachBackend, expectBytes, newMailbox, newUser } from './fixtures';

/** Stores `zip` as the user's blob and an incident holding it, in one unit, as the upload does. */
async function createIncident(store: Store, user: User, fields: Partial<DiagnosticIncident> = {}, zip = crypto.randomBytes(300)): Promise<DiagnosticIncident> {
  return store.run(function* (tx) {
    const blobId = yield* tx.blobs.put(user.id, zip, NOW);
    return yield* tx.diagnostics.create({
      id: newIncidentId(),
      tenantId: user.tenantId,
      userId: user.id,
      deviceRecordId: null,
      deviceId: 'device-0123456789abcdef',
      blobId,
      size: zip.length,
      entries: 3,
      redactions: 2,
      createdAt: NOW,
      expiresAt: NOW + 30 * DAY,
      ...fields,
    });
  });
}

eachBackend('diagnostics', (t) => {
  test('an incident is created with its blob, read back whole, and keeps the blob', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const zip = crypto.randomBytes(5000);
    const created = await createIncident(store, user, { deviceRecordId: 'record-1', entries: 4, redactions: 7 }, zip);
    expect(created.id).toMatch(/^PGN-[0-9A-Z]{4}-[0-9A-Z]{4}$/);
    const read = await store.diagnostics.byId(user.tenantId, created.id);
    expect(read).toEqual(created);
    expect(read).toMatchObject({ userId: user.id, tenantId: user.tenantId, deviceRecordId: 'record-1', entries: 4, redactions: 7, size: 5000 });
    expect(await store.blobs.size(user.id, created.blobId)).toBe(5000);
    expectBytes(await store.blobs.read(user.id, created.blobId, 0, 5000), zip);
  });

  test('an incident is found in its own tenant only', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const other = await newUser(store);
    const created = await createIncident(store, user);
    expect(await store.diagnostics.byId(other.tenantId, created.id)).toBeUndefined();
    expect(await store.diagnostics.byId(user.tenantId, 'PGN-0000-0000')).toBeUndefined();
    expect((await store.diagnostics.byId(user.tenantId, created.id))?.id).toBe(created.id);
  });

  test("a user's incidents list newest first, only theirs, at most limit", async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const { user: neighbour } = await newMailbox(store, { tenantId: user.tenantId });
    const made: DiagnosticIncident[] = [];
    for (let i = 0; i < 4; i++) made.push(await createIncident(store, user, { createdAt: NOW + i * MINUTE }));
    await createIncident(store, neighbour, { createdAt: NOW + 10 * MINUTE });
    const listed = await store.diagnostics.listByUser(user.id, 10);
    expect(listed.map((i) => i.id)).toEqual(made.map((i) => i.id).reverse());
    expect((await store.diagnostics.listByUser(user.id, 2)).map((i) => i.id)).toEqual([made[3]!.id, made[2]!.id]);
    expect(await store.diagnostics.listByUser(neighbour.id, 10)).toHaveLength(1);
  });

  test('the purge deletes expired incidents a batch at a time, releases their blobs, and keeps the rest', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const expired = [
      await createIncident(store, user, { expiresAt: NOW + DAY }),
      await createIncident(store, user, { expiresAt: NOW + DAY + 1 }),
      await createIncident(store, user, { expiresAt: NOW + 2 * DAY }),
    ];
    const kept = await createIncident(store, user, { expiresAt: NOW + 5 * DAY });
    // Another incident holding the same bytes keeps them: blobs are shared by content and counted.
    const shared = crypto.randomBytes(200);
    const sharedExpired = await createIncident(store, user, { expiresAt: NOW + DAY }, shared);
    const sharedKept = await createIncident(store, user, { expiresAt: NOW + 9 * DAY }, shared);
    expect(sharedKept.blobId).toBe(sharedExpired.blobId);

    const now = NOW + 3 * DAY;
    expect(await store.diagnostics.purgeExpired(now, 2)).toBe(2);
    let purged = 2;
    for (let n = -1; n !== 0; purged += n) n = await store.diagnostics.purgeExpired(now, 2);
    expect(purged).toBe(4);
    for (const gone of [...expired, sharedExpired]) expect(await store.diagnostics.byId(user.tenantId, gone.id)).toBeUndefined();
    for (const gone of expired) expect(await store.blobs.size(user.id, gone.blobId)).toBeUndefined();
    expect(await store.diagnostics.byId(user.tenantId, kept.id)).toEqual(kept);
    expect(await store.blobs.size(user.id, kept.blobId)).toBe(kept.size);
    expect(await store.blobs.size(user.id, sharedKept.blobId)).toBe(200);
    expect(await store.diagnostics.purgeExpired(now, 10)).toBe(0);
  });
});
