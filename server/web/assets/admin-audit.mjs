// The admin center's audit log (GET /admin/v1/audit): the tenant's administrative changes, newest first, paged with
// the server's cursor; it refreshes itself, so an action taken elsewhere shows up without a reload.
import { html } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';
import { Status, Time, usePoll } from './ui.mjs';
import { Pager, useCursors } from './admin-records-ui.mjs';

const PAGE_SIZE = 50;

/** `{userId: "u1", deviceId: "d"}` → `userId: u1, deviceId: d` (nested values as JSON). */
function detailsText(details) {
  const parts = Object.entries(details ?? {}).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return parts.join(', ');
}

export function AuditLog() {
  const pages = useCursors('');
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (pages.cursor) query.set('cursor', pages.cursor);
  const [page, error] = usePoll(() => api(`/admin/v1/audit?${query}`), [query.toString()]);
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Audit log</h1>
    <p class="lead">Every administrative change in this organization, newest first. The log cannot be edited.</p>
    ${error && html`<${Status} error message=${error.message} />`}
    ${page === undefined
      ? html`<p>Loading the audit log…</p>`
      : html`<p class="summary" aria-live="polite">${page.entries.length === 0 ? 'No entries.' : `${page.entries.length} entries on this page`}</p>
          <table class="devices records audit">
            <caption class="visually-hidden">Audit log</caption>
            <thead><tr><th scope="col">Time</th><th scope="col">By</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Details</th></tr></thead>
            <tbody>
              ${page.entries.map(
                (e) => html`<tr key=${e.seq} data-seq=${e.seq} data-action=${e.action}>
                  <td data-label="Time"><${Time} value=${e.at} /></td>
                  <td data-label="By">${e.actorName}</td>
                  <td data-label="Action"><code>${e.action}</code></td>
                  <td data-label="Target">${e.targetType}${e.targetId ? `: ${e.targetId}` : ''}</td>
                  <td data-label="Details" class="details">${detailsText(e.details) || '—'}</td>
                </tr>`,
              )}
            </tbody>
          </table>
          <${Pager} pages=${pages} nextCursor=${page.nextCursor} label="Audit log pages" />`}
  </section>`;
}
