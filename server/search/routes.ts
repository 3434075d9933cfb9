/** `GET /v1/search` (protocol.md §7): validation here, the rules in ./service. */
import { z } from 'zod';
import type { Route } from '../http/table';
import { parse } from '../http/validate';
import { MAX_SEARCH_LIMIT, type SearchService } from './service';
import type { ProtectionService } from '../protection/service';
import { readerOf } from '../protection/reader';
import { mailboxOf } from '../http/mailbox';

// Strict: a misspelt parameter (`folder=`, `max=`) is a 400, not a silently wider search.
const SearchQuery = z.strictObject({
  q: z.string().min(1).max(256),
  folderId: z.string().min(1).max(64).optional(),
  limit: z.coerce.number().int().min(1).max(MAX_SEARCH_LIMIT).optional(),
});

/** `protection`: protected results are opened for devices that may read them (their text is never indexed). */
export function searchRoutes(search: SearchService, protection?: ProtectionService): Route[] {
  return [
    {
      method: 'GET',
      path: '/v1/search',
      handler: async (call) => {
        const results = await search(mailboxOf(call), parse(SearchQuery, call.query, 'query'));
        if (protection) {
          const views = await protection.overlayViews(results.map((r) => r.item), readerOf(call));
          results.forEach((r, i) => (r.item = views[i]!));
        }
        return { body: { results } };
      },
    },
  ];
}
