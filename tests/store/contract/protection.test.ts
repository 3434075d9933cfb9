/**
 * The store contract, information protection: a tenant's protection keys (a rotation retires the others in one
 * transaction and keeps them readable), its protection document (a compare-and-set on its version) and the S/MIME
 * certificates users publish (once per certificate, found by address within the tenant), the same on every backend.
 *
 * The store keeps certificates and keys as opaque text (parsing them is the caller's), so the fixtures are labelled
 * strings, unique per record, which makes any mix-up between records visible.
 */
import crypto from 'node:crypto';
import type { ProtectionKeyRecord, Store, UserCertificate } from '../../../server/store/types';
import { DAY, HOUR, MINUTE, NOW, eachBackend, expectRefusal, newTenant, newUser, unique } from './fixtures';

const pem = (label: string, body: string) => `-----BEGIN ${label}-----\n${Buffer.from(body).toString('base64')}\n-----END ${label}-----\n`;

const protectionKey = (fields: Partial<ProtectionKeyRecord> & Pick<ProtectionKeyRecord, 'tenantId'>): ProtectionKeyRecord => {
  const id = fields.id ?? unique('key');
  return {
    id,
    certificatePem: pem('CERTIFICATE', `certificate of ${id}`),
    sealedPrivateKey: `sealed:${crypto.randomBytes(24).toString('base64url')}`,
    createdAt: NOW,
    retiredAt: null,
    ...fields,
  };
};

const certificate = (fields: Partial<UserCertificate> & Pick<UserCertificate, 'tenantId' | 'userId'>): UserCertificate => {
  const id = fields.id ?? unique('cert');
  return {
    id,
    email: `${unique('someone')}@example.test`,
    certificatePem: pem('CERTIFICATE', `s/mime certificate ${id}`),
    fingerprint: crypto.randomBytes(32).toString('hex'),
    notBefore: NOW - DAY,
    notAfter: NOW + 365 * DAY,
    createdAt: NOW,
    ...fields,
  };
};

/** A user in a tenant of its own (most tests want both ids). */
async function tenantUser(store: Store) {
  const tenant = await newTenant(store);
  const user = await newUser(store, { tenantId: tenant.id });
  return { tenantId: tenant.id, userId: user.id };
}

/** Newest first, equal times by id descending (bytewise, as both backends compare text). */
const newestFirst = <T extends { id: string; createdAt: number }>(list: T[]) =>
  [...list].sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));

const ids = (list: Array<{ id: string }>) => list.map((x) => x.id);

eachBackend('protection keys', (t) => {
  test('a tenant starts with no key; the first rotation adds the active key as given', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    expect(await store.protection.keys(tenantId)).toEqual([]);
    const first = protectionKey({ tenantId });
    await store.protection.rotateKey(first);
    expect(await store.protection.keys(tenantId)).toEqual([first]);
  });

  test('rotation retires every other key at the new key\'s time and keeps them all, newest first', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const k1 = protectionKey({ tenantId, createdAt: NOW });
    const k2 = protectionKey({ tenantId, createdAt: NOW + DAY });
    const k3 = protectionKey({ tenantId, createdAt: NOW + 30 * DAY });
    await store.protection.rotateKey(k1);
    await store.protection.rotateKey(k2);
    expect(await store.protection.keys(tenantId)).toEqual([k2, { ...k1, retiredAt: k2.createdAt }]);
    await store.protection.rotateKey(k3);
    // A retired key keeps its material (it still reads what it protected) and the time it was first retired.
    expect(await store.protection.keys(tenantId)).toEqual([k3, { ...k2, retiredAt: k3.createdAt }, { ...k1, retiredAt: k2.createdAt }]);
  });

  test('a new key is written unretired whatever retiredAt it came with: rotateKey makes it the active key', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const old = protectionKey({ tenantId, createdAt: NOW });
    await store.protection.rotateKey(old);
    const next = protectionKey({ tenantId, createdAt: NOW + MINUTE, retiredAt: NOW + 5 * MINUTE });
    await store.protection.rotateKey(next);
    expect(await store.protection.keys(tenantId)).toEqual([{ ...next, retiredAt: null }, { ...old, retiredAt: next.createdAt }]);
  });

  test('keys of one time are ordered by id, the same on every backend', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    // Upper and lower case: bytewise, every lower-case letter sorts after every upper-case one.
    const suffix = crypto.randomBytes(4).toString('hex');
    const made = ['Key-b', 'key-a', 'KEY-c', 'key-B'].map((prefix) => protectionKey({ tenantId, id: `${prefix}-${suffix}`, createdAt: NOW + HOUR }));
    for (const k of made) await store.protection.rotateKey(k);
    const found = await store.protection.keys(tenantId);
    expect(ids(found)).toEqual(ids(newestFirst(made)));
    expect(ids(found)).toEqual([`key-a-${suffix}`, `key-B-${suffix}`, `Key-b-${suffix}`, `KEY-c-${suffix}`]);
    // The last rotation's key is the one left unretired, wherever the order puts it.
    expect(found.filter((k) => k.retiredAt === null).map((k) => k.id)).toEqual([made[3]!.id]);
  });

  test('tenants have keys of their own: a rotation retires none of another tenant\'s', async () => {
    const { store } = t();
    const a = (await newTenant(store)).id;
    const b = (await newTenant(store)).id;
    const keyA = protectionKey({ tenantId: a });
    const keyB = protectionKey({ tenantId: b, createdAt: NOW + MINUTE });
    await store.protection.rotateKey(keyA);
    await store.protection.rotateKey(keyB);
    expect(await store.protection.keys(a)).toEqual([keyA]);
    expect(await store.protection.keys(b)).toEqual([keyB]);
  });

  test('a rotation whose insert fails retires nothing (one transaction)', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const active = protectionKey({ tenantId, createdAt: NOW });
    await store.protection.rotateKey(active);
    // The same id again: the insert fails after the retirement ran.
    await expectRefusal(store.protection.rotateKey(protectionKey({ tenantId, id: active.id, createdAt: NOW + DAY })));
    expect(await store.protection.keys(tenantId)).toEqual([active]);
  });

  test('a rotation in a unit of work that throws is rolled back whole', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const active = protectionKey({ tenantId, createdAt: NOW });
    await store.protection.rotateKey(active);
    await expect(
      store.run(function* (tx) {
        yield* tx.protection.rotateKey(protectionKey({ tenantId, createdAt: NOW + DAY }));
        expect((yield* tx.protection.keys(tenantId)).map((k) => k.retiredAt)).toEqual([null, NOW + DAY]);
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await store.protection.keys(tenantId)).toEqual([active]);
  });

  test('concurrent rotations all land, and exactly one key is left active', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const made = [1, 2, 3, 4, 5].map((i) => protectionKey({ tenantId, createdAt: NOW + i * MINUTE }));
    await Promise.all(made.map((k) => store.protection.rotateKey(k)));
    const found = await store.protection.keys(tenantId);
    expect(ids(found)).toEqual(ids(newestFirst(made)));
    const active = found.filter((k) => k.retiredAt === null);
    expect(active).toHaveLength(1);
    // Every retired key was retired by a later rotation: at the time of one of the other keys.
    const times = new Set(made.map((k) => k.createdAt));
    for (const k of found.filter((k) => k.retiredAt !== null)) {
      expect(times.has(k.retiredAt!)).toBe(true);
      expect(k.retiredAt).not.toBe(k.createdAt);
    }
  });
});

eachBackend('protection config', (t) => {
  test('version 0 creates the document at version 1; a second create answers undefined and changes nothing', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    expect(await store.protection.config(tenantId)).toBeUndefined();
    const doc = JSON.stringify({ templates: [{ id: 'dnf', rights: ['view', 'reply'] }], labels: [] });
    const created = await store.protection.putConfig(tenantId, doc, 0, NOW);
    expect(created).toEqual({ tenantId, version: 1, doc, updatedAt: NOW });
    expect(await store.protection.config(tenantId)).toEqual(created);
    expect(await store.protection.putConfig(tenantId, '{"other":true}', 0, NOW + 1)).toBeUndefined();
    expect(await store.protection.config(tenantId)).toEqual(created);
  });

  test('the document is answered exactly as stored (key order and spacing kept)', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const doc = '{ "zeta": 1,\n  "labels": [ "Vertraulich – intern", {"b": 2, "a": 1} ] }';
    await store.protection.putConfig(tenantId, doc, 0, NOW);
    expect((await store.protection.config(tenantId))?.doc).toBe(doc);
  });

  test('a change from the current version replaces the document and increases the version; a stale one changes nothing', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const v1 = await store.protection.putConfig(tenantId, '{"n":1}', 0, NOW);
    const v2 = await store.protection.putConfig(tenantId, '{"n":2}', v1!.version, NOW + MINUTE);
    expect(v2).toEqual({ tenantId, version: 2, doc: '{"n":2}', updatedAt: NOW + MINUTE });
    expect(await store.protection.putConfig(tenantId, '{"n":"stale"}', v1!.version, NOW + 2 * MINUTE)).toBeUndefined();
    expect(await store.protection.putConfig(tenantId, '{"n":"future"}', 9, NOW + 2 * MINUTE)).toBeUndefined();
    expect(await store.protection.config(tenantId)).toEqual(v2);
    const v3 = await store.protection.putConfig(tenantId, '{"n":3}', v2!.version, NOW + 3 * MINUTE);
    expect(v3).toEqual({ tenantId, version: 3, doc: '{"n":3}', updatedAt: NOW + 3 * MINUTE });
    expect(await store.protection.config(tenantId)).toEqual(v3);
  });

  test('of concurrent changes from one version exactly one wins', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const base = await store.protection.putConfig(tenantId, '{"n":0}', 0, NOW);
    const answers = await Promise.all([1, 2, 3, 4].map((i) => store.protection.putConfig(tenantId, `{"n":${i}}`, base!.version, NOW + i)));
    const winners = answers.filter((a) => a !== undefined);
    expect(winners).toHaveLength(1);
    expect(winners[0]!.version).toBe(base!.version + 1);
    expect(await store.protection.config(tenantId)).toEqual(winners[0]);
  });

  test('of concurrent first documents exactly one is created', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    const answers = await Promise.all([1, 2, 3].map((i) => store.protection.putConfig(tenantId, `{"first":${i}}`, 0, NOW + i)));
    const winners = answers.filter((a) => a !== undefined);
    expect(winners).toHaveLength(1);
    expect(winners[0]!.version).toBe(1);
    expect(await store.protection.config(tenantId)).toEqual(winners[0]);
  });

  test('tenants have documents of their own, apart from their access documents', async () => {
    const { store } = t();
    const a = (await newTenant(store)).id;
    const b = (await newTenant(store)).id;
    await store.protection.putConfig(a, '{"tenant":"a"}', 0, NOW);
    expect(await store.protection.config(b)).toBeUndefined();
    expect(await store.access.config(a)).toBeUndefined();
    expect((await store.protection.putConfig(b, '{"tenant":"b"}', 0, NOW))?.version).toBe(1);
    expect((await store.protection.config(a))?.doc).toBe('{"tenant":"a"}');
  });

  test('a unit reads the document and changes it in one transaction; a throw rolls it back', async () => {
    const { store } = t();
    const { id: tenantId } = await newTenant(store);
    await store.protection.putConfig(tenantId, '{"n":1}', 0, NOW);
    const next = await store.run(function* (tx) {
      const current = yield* tx.protection.config(tenantId);
      return yield* tx.protection.putConfig(tenantId, '{"n":2}', current!.version, NOW + 1);
    });
    expect(next?.version).toBe(2);
    await expect(
      store.run(function* (tx) {
        yield* tx.protection.putConfig(tenantId, '{"n":3}', 2, NOW + 2);
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await store.protection.config(tenantId)).toEqual(next);
  });
});

eachBackend('user certificates', (t) => {
  test('published certificates are listed per user and found by address, newest first', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const email = `${unique('anna')}@example.test`;
    expect(await store.protection.certificates(userId)).toEqual([]);
    expect(await store.protection.certificatesByEmail(tenantId, email)).toEqual([]);
    const older = certificate({ tenantId, userId, email, createdAt: NOW });
    const newer = certificate({ tenantId, userId, email, createdAt: NOW + DAY, notBefore: NOW, notAfter: NOW + 2 * 365 * DAY });
    const otherAddress = certificate({ tenantId, userId, email: `${unique('alias')}@example.test`, createdAt: NOW + MINUTE });
    for (const c of [newer, older, otherAddress]) expect(await store.protection.addCertificate(c)).toBe(true);
    expect(await store.protection.certificates(userId)).toEqual([newer, otherAddress, older]);
    expect(await store.protection.certificatesByEmail(tenantId, email)).toEqual([newer, older]);
    expect(await store.protection.certificatesByEmail(tenantId, otherAddress.email)).toEqual([otherAddress]);
    expect(await store.protection.certificatesByEmail(tenantId, `x${email}`)).toEqual([]);
  });

  test('certificates of one time are ordered by id, in both lists', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const email = `${unique('ties')}@example.test`;
    const suffix = crypto.randomBytes(4).toString('hex');
    const made = ['cert-b', 'Cert-a', 'cert-A', 'CERT-c'].map((prefix) => certificate({ tenantId, userId, email, id: `${prefix}-${suffix}`, createdAt: NOW }));
    for (const c of made) await store.protection.addCertificate(c);
    expect(ids(await store.protection.certificates(userId))).toEqual(ids(newestFirst(made)));
    expect(ids(await store.protection.certificatesByEmail(tenantId, email))).toEqual(ids(newestFirst(made)));
    expect(ids(newestFirst(made))).toEqual([`cert-b-${suffix}`, `cert-A-${suffix}`, `Cert-a-${suffix}`, `CERT-c-${suffix}`]);
  });

  test('a user publishes a certificate once; another user may publish the same one', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const colleague = (await newUser(store, { tenantId })).id;
    const first = certificate({ tenantId, userId });
    expect(await store.protection.addCertificate(first)).toBe(true);
    // The same fingerprint under another record id and address: refused, and the first record is untouched.
    const again = certificate({ tenantId, userId, fingerprint: first.fingerprint, createdAt: NOW + DAY });
    expect(await store.protection.addCertificate(again)).toBe(false);
    expect(await store.protection.certificates(userId)).toEqual([first]);
    expect(await store.protection.certificatesByEmail(tenantId, again.email)).toEqual([]);
    // A shared mailbox's certificate published by a second user is their own record.
    const shared = certificate({ tenantId, userId: colleague, fingerprint: first.fingerprint, email: first.email, createdAt: NOW + MINUTE });
    expect(await store.protection.addCertificate(shared)).toBe(true);
    expect(await store.protection.certificates(colleague)).toEqual([shared]);
    expect(await store.protection.certificatesByEmail(tenantId, first.email)).toEqual([shared, first]);
  });

  test('of concurrent publications of one certificate by one user exactly one lands', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const fingerprint = crypto.randomBytes(32).toString('hex');
    const attempts = [1, 2, 3, 4].map((i) => certificate({ tenantId, userId, fingerprint, createdAt: NOW + i }));
    const answers = await Promise.all(attempts.map((c) => store.protection.addCertificate(c)));
    expect(answers.filter((a) => a)).toHaveLength(1);
    const stored = await store.protection.certificates(userId);
    expect(stored).toEqual([attempts[answers.indexOf(true)]]);
  });

  test('a fingerprint that is not lower-case SHA-256 hex is refused', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const upper = certificate({ tenantId, userId });
    await expectRefusal(store.protection.addCertificate({ ...upper, fingerprint: upper.fingerprint.toUpperCase() }));
    await expectRefusal(store.protection.addCertificate({ ...upper, id: unique('cert'), fingerprint: upper.fingerprint.slice(2) }));
    expect(await store.protection.certificates(userId)).toEqual([]);
  });

  test('a user withdraws their own certificate only, once', async () => {
    const { store } = t();
    const { tenantId, userId } = await tenantUser(store);
    const colleague = (await newUser(store, { tenantId })).id;
    const mine = certificate({ tenantId, userId });
    const kept = certificate({ tenantId, userId, createdAt: NOW + MINUTE });
    const theirs = certificate({ tenantId, userId: colleague });
    for (const c of [mine, kept, theirs]) await store.protection.addCertificate(c);
    // Another user's certificate id: nothing happens.
    expect(await store.protection.removeCertificate(userId, theirs.id)).toBe(false);
    expect(await store.protection.certificates(colleague)).toEqual([theirs]);
    expect(await store.protection.certificatesByEmail(tenantId, theirs.email)).toEqual([theirs]);
    expect(await store.protection.removeCertificate(userId, unique('cert'))).toBe(false);
    expect(await store.protection.removeCertificate(userId, mine.id)).toBe(true);
    expect(await store.protection.certificates(userId)).toEqual([kept]);
    expect(await store.protection.certificatesByEmail(tenantId, mine.email)).toEqual([]);
    expect(await store.protection.removeCertificate(userId, mine.id)).toBe(false);
    // Withdrawn, the same certificate may be published again.
    expect(await store.protection.addCertificate({ ...mine, id: unique('cert'), createdAt: NOW + DAY })).toBe(true);
  });

  test('the lookup by address stays within the tenant', async () => {
    const { store } = t();
    const a = await tenantUser(store);
    const b = await tenantUser(store);
    const email = `${unique('same')}@example.test`;
    const inA = certificate({ tenantId: a.tenantId, userId: a.userId, email });
    const inB = certificate({ tenantId: b.tenantId, userId: b.userId, email, createdAt: NOW + MINUTE });
    await store.protection.addCertificate(inA);
    await store.protection.addCertificate(inB);
    expect(await store.protection.certificatesByEmail(a.tenantId, email)).toEqual([inA]);
    expect(await store.protection.certificatesByEmail(b.tenantId, email)).toEqual([inB]);
    expect(await store.protection.certificatesByEmail((await newTenant(store)).id, email)).toEqual([]);
  });
});
