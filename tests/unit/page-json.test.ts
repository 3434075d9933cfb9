/**
 * The item-sync route sends `pageJson(page)` instead of `res.json(page)` (so a page's entries are serialised once,
 * bench scenario 2). It must be exactly JSON.stringify of the page: same members, same order, same escaping.
 */
import { pageJson, type ItemSyncPage } from '../../server/sync/itemSync';

const page = (over: Partial<ItemSyncPage> = {}): ItemSyncPage => ({
  token: 'p1.eyJrIjoiaSJ9.abc-_',
  moreAvailable: true,
  hierarchyState: '12.10',
  window: { size: 500, max: 1000, itemsInFolder: 10_000, hasOlder: true },
  created: [
    { id: 'a1', subject: 'quotes " and \\ backslash, \u2028 line separator, emoji 🐦, nul \u0000', to: [{ name: 'B', address: 'b@x' }], sentAt: null },
  ],
  updated: [{ id: 'a2', isRead: false, categories: ['x'] }],
  removed: [{ id: 'a3', reason: 'evicted' }],
  ...over,
});

test('equals JSON.stringify(page), member order and escaping included', () => {
  for (const p of [page(), page({ created: [], updated: [], removed: [], moreAvailable: false }), page({ window: { size: 0, max: null, itemsInFolder: 3, hasOlder: false } })]) {
    expect(pageJson(p)).toBe(JSON.stringify(p));
  }
});
