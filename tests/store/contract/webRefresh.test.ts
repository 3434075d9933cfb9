/**
 * The store contract, web-session refreshes (server/web/sessions.ts), the same on every backend: the first claim of a
 * key holds it and later ones see the holder's row; a lapsed lease (its holder died) or an expired result is taken
 * over; a completed refresh's result (or failure) is read back; signing out makes the results leading to the
 * ended session empty; purge deletes exactly the expired rows; and of claims at once from two stores over the same data
 * (two processes or nodes) exactly one holds the refresh.
 */
import { NOW, eachBackend, unique } from './fixtures';

const LEASE = 10_000;
const REMEMBER = 30_000;
/** Rounds of claims at once from two stores. */
const ROUNDS = 10;

eachBackend('web refresh', (t) => {
  test('the first claim holds the refresh; a second one sees the holder until it completes', async () => {
    const { store } = t();
    const key = unique('key');
    expect(await store.webRefresh.read(key)).toBeUndefined();
    expect(await store.webRefresh.claim(key, NOW, LEASE)).toBe('claimed');
    const held = { key, claimedAt: NOW, result: null, expiresAt: NOW + LEASE };
    expect(await store.webRefresh.claim(key, NOW + 1, LEASE)).toEqual(held);
    expect(await store.webRefresh.read(key)).toEqual(held);

    expect(await store.webRefresh.complete(key, 'sealed-session', unique('successor'), NOW + 100 + REMEMBER)).toBe(true);
    const done = { key, claimedAt: NOW, result: 'sealed-session', expiresAt: NOW + 100 + REMEMBER };
    expect(await store.webRefresh.read(key)).toEqual(done);
    // Remembered: a later request with the old cookie gets the result, not a second refresh.
    expect(await store.webRefresh.claim(key, NOW + 200, LEASE)).toEqual(done);
    expect(await store.webRefresh.complete(unique('absent'), 'x', null, NOW)).toBe(false);
  });

  test('a failed refresh is recorded as an empty result', async () => {
    const { store } = t();
    const key = unique('key');
    expect(await store.webRefresh.claim(key, NOW, LEASE)).toBe('claimed');
    expect(await store.webRefresh.complete(key, '', null, NOW + REMEMBER)).toBe(true);
    expect(await store.webRefresh.claim(key, NOW + 1, LEASE)).toMatchObject({ result: '' });
  });

  test('a lapsed lease is taken over (the holder died), and so is an expired result', async () => {
    const { store } = t();
    const key = unique('key');
    expect(await store.webRefresh.claim(key, NOW, LEASE)).toBe('claimed');
    expect(await store.webRefresh.claim(key, NOW + LEASE - 1, LEASE)).toMatchObject({ claimedAt: NOW });
    expect(await store.webRefresh.claim(key, NOW + LEASE, LEASE)).toBe('claimed');
    expect(await store.webRefresh.read(key)).toEqual({ key, claimedAt: NOW + LEASE, result: null, expiresAt: NOW + 2 * LEASE });

    await store.webRefresh.complete(key, 'sealed', null, NOW + LEASE + REMEMBER);
    expect(await store.webRefresh.claim(key, NOW + LEASE + REMEMBER - 1, LEASE)).toMatchObject({ result: 'sealed' });
    expect(await store.webRefresh.claim(key, NOW + LEASE + REMEMBER, LEASE)).toBe('claimed');
    expect(await store.webRefresh.read(key)).toMatchObject({ result: null, claimedAt: NOW + LEASE + REMEMBER });
  });

  test('signing out empties the result that names the ended session, and only that one', async () => {
    const { store } = t();
    const [ended, kept] = [unique('key'), unique('key')];
    const successor = unique('successor');
    for (const key of [ended, kept]) await store.webRefresh.claim(key, NOW, LEASE);
    await store.webRefresh.complete(ended, 'sealed-ended', successor, NOW + REMEMBER);
    await store.webRefresh.complete(kept, 'sealed-kept', unique('successor'), NOW + REMEMBER);
    expect(await store.webRefresh.forget(successor)).toBe(1);
    expect(await store.webRefresh.read(ended)).toMatchObject({ result: '', expiresAt: NOW + REMEMBER });
    expect(await store.webRefresh.read(kept)).toMatchObject({ result: 'sealed-kept' });
    expect(await store.webRefresh.forget(successor)).toBe(0);
  });

  test('signing out empties every result leading to the ended session: older cookies refreshed into it in turn', async () => {
    const { store } = t();
    // Sessions 1 → 2 → 3 → 4: each row is keyed by the hash of its old refresh token, naming its successor's hash.
    const [one, two, three, four] = [unique('key'), unique('key'), unique('key'), unique('key')];
    const elsewhere = unique('key');
    for (const [key, next] of [[one, two], [two, three], [three, four], [elsewhere, unique('successor')]] as const) {
      await store.webRefresh.claim(key, NOW, LEASE);
      await store.webRefresh.complete(key, `sealed-${next}`, next, NOW + REMEMBER);
    }
    expect(await store.webRefresh.forget(four)).toBe(3);
    for (const key of [one, two, three]) expect(await store.webRefresh.read(key)).toMatchObject({ result: '' });
    expect(await store.webRefresh.read(elsewhere)).toMatchObject({ result: expect.stringMatching(/^sealed-/) });
  });

  test('purge deletes the rows expired at its time, and no other', async () => {
    const { store } = t();
    // Far in the future, so rows of the other tests (all around NOW) are purged too and the count is this test's own.
    const at = NOW + 1e9;
    await store.webRefresh.purge(at);
    const [running, done, fresh] = [unique('key'), unique('key'), unique('key')];
    await store.webRefresh.claim(running, at, LEASE);
    await store.webRefresh.claim(done, at, LEASE);
    await store.webRefresh.complete(done, 'sealed', null, at + REMEMBER);
    await store.webRefresh.claim(fresh, at + REMEMBER, LEASE);
    expect(await store.webRefresh.purge(at + LEASE - 1)).toBe(0);
    expect(await store.webRefresh.purge(at + LEASE)).toBe(1);
    expect(await store.webRefresh.read(running)).toBeUndefined();
    expect(await store.webRefresh.purge(at + REMEMBER)).toBe(1);
    expect(await store.webRefresh.read(done)).toBeUndefined();
    expect(await store.webRefresh.read(fresh)).toMatchObject({ result: null });
  });

  test('of claims at once from two stores over the same data, exactly one holds the refresh', async () => {
    const { store } = t();
    const other = await t().openAnother();
    for (let round = 0; round < ROUNDS; round++) {
      const key = unique('key');
      const answers = await Promise.all([0, 1, 2, 3].map((i) => (i % 2 ? other : store).webRefresh.claim(key, NOW, LEASE)));
      expect(answers.filter((a) => a === 'claimed')).toHaveLength(1);
      for (const a of answers) if (a !== 'claimed') expect(a).toEqual({ key, claimedAt: NOW, result: null, expiresAt: NOW + LEASE });
      // A lapsed lease taken over at once from both: again exactly one.
      const later = await Promise.all([store, other].map((s) => s.webRefresh.claim(key, NOW + LEASE, LEASE)));
      expect(later.filter((a) => a === 'claimed')).toHaveLength(1);
    }
  });
});
