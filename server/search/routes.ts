/** `GET /v1/search` (protocol.md §7): validation here, the rules in ./service. */
import { z } from 'zod';
import type { Route } from '../http/table';
import { parse } from '../http/validate';
import { MAX_SEARCH_LIMIT, type SearchService } from './service';

// Strict: a misspelt parameter (`folder=`, `max=`) is a 400, not a silently wider search.
const SearchQuery = z.strictObject({
  q: z.string().min(1).max(256),
  folderId: z.string().min(1).max(64).optional(),
  limit: z.coerce.number().int().min(1).max(MAX_SEARCH_LIMIT).optional(),
});

export function searchRoutes(search: SearchService): Route[] {
  return [
    {
      method: 'GET',
      path: '/v1/search',
      handler: async (call) => ({ body: { results: await search(call.auth.userId, parse(SearchQuery, call.query, 'query')) } }),
    },
  ];
}
