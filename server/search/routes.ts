/** `GET /v1/search` (protocol.md §7): validation here, the rules in ./service. */
import { Router } from 'express';
import { z } from 'zod';
import { route } from '../http/routes';
import { parse } from '../http/validate';
import { MAX_SEARCH_LIMIT, type SearchService } from './service';

// Strict: a misspelt parameter (`folder=`, `max=`) is a 400, not a silently wider search.
const SearchQuery = z.strictObject({
  q: z.string().min(1).max(256),
  folderId: z.string().min(1).max(64).optional(),
  limit: z.coerce.number().int().min(1).max(MAX_SEARCH_LIMIT).optional(),
});

export function searchRoutes(search: SearchService): Router {
  const router = Router();
  route(router, '/v1/search', {
    get: (req, res) => {
      const query = parse(SearchQuery, req.query, 'query');
      res.json({ results: search(req.auth!.userId, query) });
    },
  });
  return router;
}
