// Shared pieces of the admin center's record pages (sign-in log, audit log): forward-only server cursors turned into
// Previous/Next, and usernames for the user ids the logs carry.
import { html, useEffect, useState } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';

/**
 * The cursors of the pages before this one (the server's cursors only go forward): [cursor, pageIndex, next(c),
 * previous(), reset()]. The list goes back to its first page when `resetKey` changes (a filter).
 */
export function useCursors(resetKey) {
  const [stack, setStack] = useState([]);
  useEffect(() => setStack([]), [resetKey]);
  return {
    cursor: stack[stack.length - 1],
    index: stack.length,
    next: (c) => setStack([...stack, c]),
    previous: () => setStack(stack.slice(0, -1)),
  };
}

export function Pager({ pages, nextCursor, label }) {
  return html`<nav class="pager" aria-label=${label}>
    <button type="button" disabled=${pages.index === 0} onClick=${() => pages.previous()}>Previous</button>
    <span class="muted">Page ${pages.index + 1}</span>
    <button type="button" disabled=${!nextCursor} onClick=${() => pages.next(nextCursor)}>Next</button>
  </nav>`;
}

/** user id → username (or the id when the user is gone), fetched once per id for the life of the page. */
const names = new Map();
function usernameOf(id) {
  if (!names.has(id)) {
    names.set(
      id,
      api(`/admin/v1/users/${encodeURIComponent(id)}`).then(
        (u) => u.username,
        () => id,
      ),
    );
  }
  return names.get(id);
}

/** The usernames of `ids` as a map, filled in as they arrive. */
export function useUsernames(ids) {
  const [known, setKnown] = useState({});
  const key = [...new Set(ids)].sort().join(',');
  useEffect(() => {
    let alive = true;
    const wanted = key ? key.split(',') : [];
    Promise.all(wanted.map(async (id) => [id, await usernameOf(id)])).then((pairs) => {
      if (alive) setKnown((k) => ({ ...k, ...Object.fromEntries(pairs) }));
    });
    return () => {
      alive = false;
    };
  }, [key]);
  return known;
}

/** A username typed in a filter → that user's id (null when there is no such user of the tenant). */
export async function userIdByName(username) {
  const wanted = username.trim().toLowerCase();
  const { users } = await api(`/admin/v1/users?${new URLSearchParams({ q: wanted, limit: '50' })}`);
  return users.find((u) => u.username.toLowerCase() === wanted)?.id ?? null;
}

/** Text filters wait for a pause in typing, so each key press is not a request. */
export function useDebounced(value, ms = 300) {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(t);
  }, [JSON.stringify(value)]);
  return settled;
}
