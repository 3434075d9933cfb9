/**
 * Full-text search over a whole mailbox (protocol.md §7), beyond what any device holds. The store does the matching
 * and ranking (FTS5, bm25); this turns a typed query into words and each hit into the item as sync sends it, plus
 * whether a synced device already holds that item — an app can open those from its own copy and fetch the rest.
 */
import { errors } from '../errors';
import type { Folder, Item, SortKey, Step, Store } from '../store/types';
import { DEFAULT_WINDOW } from '../sync/itemSync';
import { compareKeys } from '../sync/tokens';
import { itemView, type ItemView } from '../views';

export const MAX_QUERY_WORDS = 16;
export const DEFAULT_SEARCH_LIMIT = 25;
export const MAX_SEARCH_LIMIT = 100;

/** Runs of letters and digits (with their combining marks), the units FTS5's unicode61 tokenizer indexes. */
const WORD = /[\p{L}\p{N}\p{M}]+/gu;
const HAS_LETTER_OR_DIGIT = /[\p{L}\p{N}]/u;

/**
 * The words of a query as typed: punctuation and spaces separate words and are otherwise ignored, so `"bob@x.org"`
 * searches for `bob`, `x` and `org`, and nothing a user types can become FTS syntax. A run of combining marks alone
 * is no word.
 */
export function searchWords(q: string): string[] {
  return (q.normalize('NFC').match(WORD) ?? []).filter((w) => HAS_LETTER_OR_DIGIT.test(w));
}

export interface SearchResult {
  item: ItemView;
  /** Relevance, higher is better (bm25, with subject over sender over recipients over body). */
  score: number;
  /** The item is inside its folder's default window, so every synced device already holds it. */
  inWindow: boolean;
}

const UNWINDOWED = new Set<Folder['kind']>(['calendar', 'contacts']);

export function createSearchService(deps: { store: Store }) {
  const { store } = deps;

  return async function search(userId: string, query: { q: string; folderId?: string; limit?: number }): Promise<SearchResult[]> {
    const words = searchWords(query.q);
    if (words.length === 0) {
      throw errors.invalidRequest('The query has no words to search for.', [{ field: 'q', message: 'needs at least one letter or digit' }]);
    }
    if (words.length > MAX_QUERY_WORDS) {
      throw errors.invalidRequest(`A query has at most ${MAX_QUERY_WORDS} words.`, [{ field: 'q', message: `more than ${MAX_QUERY_WORDS} words` }]);
    }
    // One unit of work: the hits, the items and the window boundaries come from the same snapshot.
    return store.run(function* (tx) {
      if (query.folderId !== undefined && !(yield* tx.folders.byId(userId, query.folderId))) {
        throw errors.folderNotFound();
      }
      const hits = yield* tx.search.query(userId, words, { folderId: query.folderId, limit: query.limit ?? DEFAULT_SEARCH_LIMIT });
      const items = new Map((yield* tx.items.byIds(userId, hits.map((h) => h.itemId))).map((i) => [i.id, i]));
      const folders = new Map<string, Folder | undefined>();
      const boundaries = new Map<string, SortKey | undefined>();

      function* inWindow(item: Item): Step<boolean> {
        if (!folders.has(item.folderId)) folders.set(item.folderId, yield* tx.folders.byId(userId, item.folderId));
        const folder = folders.get(item.folderId);
        if (!folder || UNWINDOWED.has(folder.kind)) return true;
        if (!boundaries.has(folder.id)) boundaries.set(folder.id, yield* tx.sync.boundary(userId, folder.id, DEFAULT_WINDOW));
        const boundary = boundaries.get(folder.id);
        // No boundary: the folder has fewer items than a window, so a device holds all of them.
        return boundary === undefined || compareKeys({ receivedAt: item.receivedAt, id: item.id }, boundary) >= 0;
      }

      const results: SearchResult[] = [];
      for (const hit of hits) {
        const item = items.get(hit.itemId);
        if (item) results.push({ item: itemView(item), score: hit.score, inWindow: yield* inWindow(item) });
      }
      return results;
    });
  };
}

export type SearchService = ReturnType<typeof createSearchService>;
