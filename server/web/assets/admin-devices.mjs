// The admin center's device inventory (Get-MobileDevice): search, filters, sorting and paging done by the server
// (GET /admin/v1/devices?limit&cursor&sort&q&…), a detail view with every field, and the actions.
import { html, useEffect, useRef, useState } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';
import { ConfirmDialog, Link, StateBadges, Status, Time, nameOf, useAction, usePoll } from './ui.mjs';

const PAGE_SIZE = 25;
const COLUMNS = [
  { key: 'friendlyName', label: 'Device' },
  { key: 'user', label: 'User' },
  { key: 'deviceModel', label: 'Model' },
  { key: 'clientType', label: 'Client' },
  { key: 'lastSyncTime', label: 'Last sync' },
  { key: 'accessState', label: 'Access' },
];

/** Text filters wait for a pause in typing, so each key press is not a request. */
function useDebounced(value, ms = 300) {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(t);
  }, [value]);
  return settled;
}

function Filters({ filters, setFilters }) {
  const field = (key, label, type = 'text') => html`<div class="field">
    <label for=${`f-${key}`}>${label}</label>
    <input id=${`f-${key}`} type=${type} value=${filters[key]} onInput=${(e) => setFilters({ ...filters, [key]: e.currentTarget.value })} />
  </div>`;
  return html`<form class="filters" role="search" aria-label="Find devices" onSubmit=${(e) => e.preventDefault()}>
    ${field('q', 'Search by name', 'search')}
    <div class="field">
      <label for="f-accessState">Access state</label>
      <select id="f-accessState" value=${filters.accessState} onChange=${(e) => setFilters({ ...filters, accessState: e.currentTarget.value })}>
        <option value="">Any</option><option value="allowed">Allowed</option><option value="blocked">Blocked</option><option value="quarantined">Quarantined</option>
      </select>
    </div>
    ${field('clientType', 'Client type')} ${field('deviceModel', 'Model')} ${field('user', 'User')}
  </form>`;
}

function SortHeader({ column, sort, setSort }) {
  const active = sort.replace(/^-/, '') === column.key;
  const descending = sort.startsWith('-');
  const next = active && !descending ? `-${column.key}` : column.key;
  return html`<th scope="col" aria-sort=${active ? (descending ? 'descending' : 'ascending') : 'none'}>
    <button type="button" class="sort" onClick=${() => setSort(next)}>${column.label}<span aria-hidden="true">${active ? (descending ? ' ▼' : ' ▲') : ''}</span></button>
  </th>`;
}

export function DeviceInventory({ navigate }) {
  const [filters, setFilters] = useState({ q: '', accessState: '', clientType: '', deviceModel: '', user: '' });
  const [sort, setSort] = useState('-lastSyncTime');
  // Cursors of the pages before this one, so Previous works with the server's forward-only cursors.
  const [cursors, setCursors] = useState([]);
  const settled = useDebounced(filters);
  const cursor = cursors[cursors.length - 1];
  useEffect(() => setCursors([]), [settled, sort]);

  const query = new URLSearchParams({ limit: String(PAGE_SIZE), sort });
  for (const [k, v] of Object.entries(settled)) if (v.trim()) query.set(k, v.trim());
  if (cursor) query.set('cursor', cursor);
  const [page, error] = usePoll(() => api(`/admin/v1/devices?${query}`), [query.toString()]);

  const first = cursors.length * PAGE_SIZE;
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Devices</h1>
    <${Filters} filters=${filters} setFilters=${setFilters} />
    ${error && html`<${Status} error message=${error.message} />`}
    ${page === undefined
      ? html`<p>Loading devices…</p>`
      : html`<p class="summary" aria-live="polite">${page.total === 0 ? 'No devices match.' : `Showing ${first + 1}–${first + page.devices.length} of ${page.total} devices`}</p>
          <table class="devices">
            <caption class="visually-hidden">Mobile devices</caption>
            <thead><tr>${COLUMNS.map((c) => html`<${SortHeader} column=${c} sort=${sort} setSort=${setSort} />`)}<th scope="col">Wipe</th></tr></thead>
            <tbody>
              ${page.devices.map(
                (d) => html`<tr key=${d.id} data-device=${d.id}>
                  <td data-label="Device"><${Link} href=${`/admin/devices/${encodeURIComponent(d.id)}`} navigate=${navigate}>${nameOf(d)}</${Link}></td>
                  <td data-label="User">${d.username ?? ''}</td>
                  <td data-label="Model">${d.deviceModel ?? ''}</td>
                  <td data-label="Client">${d.clientType ?? ''}</td>
                  <td data-label="Last sync"><${Time} value=${d.lastSuccessSyncTime ?? d.lastSyncAttemptTime} /></td>
                  <td data-label="Access"><span class=${`badge access-${d.accessState}`}>${d.accessState}</span></td>
                  <td data-label="Wipe">${d.wipeState === 'none' ? '—' : d.wipeState}</td>
                </tr>`,
              )}
            </tbody>
          </table>
          <nav class="pager" aria-label="Pages">
            <button type="button" disabled=${cursors.length === 0} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous</button>
            <button type="button" disabled=${!page.nextCursor} onClick=${() => setCursors([...cursors, page.nextCursor])}>Next</button>
          </nav>`}
  </section>`;
}

const FIELDS = [
  ['Friendly name', (d) => d.friendlyName],
  ['Device ID', (d) => d.deviceId],
  ['User', (d) => d.username ?? d.userId],
  ['Device type', (d) => d.deviceType],
  ['Model', (d) => d.deviceModel],
  ['Operating system', (d) => d.deviceOS],
  ['Client type', (d) => d.clientType],
  ['Client version', (d) => d.clientVersion],
  ['User agent', (d) => d.userAgent],
  ['First sync', (d) => html`<${Time} value=${d.firstSyncTime} />`],
  ['Last sync attempt', (d) => html`<${Time} value=${d.lastSyncAttemptTime} />`],
  ['Last successful sync', (d) => html`<${Time} value=${d.lastSuccessSyncTime} />`],
  ['Access state', (d) => d.accessState],
  ['Access reason', (d) => d.accessStateReason],
  ['Wipe state', (d) => html`<span data-field="wipeState">${d.wipeState}</span>`],
  ['Wipe requested', (d) => html`<${Time} value=${d.wipeRequestedAt} />`],
  ['Wipe acknowledged', (d) => html`<${Time} value=${d.wipeAcknowledgedAt} />`],
  ['Compliance', (d) => d.compliance?.state],
  ['Capabilities', (d) => (d.capabilities ?? []).join(', ')],
];

/** Which actions a device's state allows, with how each is confirmed. */
function actionsFor(d) {
  const list = [];
  if (d.accessState !== 'allowed') list.push({ action: d.accessState === 'quarantined' ? 'release' : 'allow', label: d.accessState === 'quarantined' ? 'Release from quarantine' : 'Allow' });
  if (d.accessState !== 'blocked') list.push({ action: 'block', label: 'Block' });
  if (d.wipeState === 'none') list.push({ action: 'wipe', label: 'Wipe', confirm: true });
  if (d.wipeState !== 'pending') list.push({ action: 'remove', label: 'Remove', confirm: true });
  return list;
}

export function DeviceDetail({ id, navigate }) {
  const [device, error, reload] = usePoll(() => api(`/admin/v1/devices/${encodeURIComponent(id)}`), [id]);
  const [confirming, setConfirming] = useState(null);
  const { status, busy, run: act } = useAction(reload, () => setConfirming(null));
  const heading = useRef(null);
  useEffect(() => heading.current?.focus(), [id]);

  const run = (action) =>
    act(async () => {
      const name = nameOf(device);
      if (action === 'remove') {
        await api(`/admin/v1/devices/${encodeURIComponent(id)}`, { method: 'DELETE' });
        navigate('/admin/devices');
        return undefined;
      }
      await api(`/admin/v1/devices/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
      return action === 'wipe' ? `A wipe of ${name} is pending until the device connects.` : `${name}: ${action} done.`;
    });

  const back = html`<p><${Link} href="/admin/devices" navigate=${navigate}>← All devices</${Link}></p>`;
  if (error?.status === 404) return html`<section>${back}<h1 ref=${heading} tabindex="-1">Device not found</h1></section>`;
  if (!device) return html`<section>${back}<h1 ref=${heading} tabindex="-1">Device</h1><p>Loading…</p></section>`;
  const name = nameOf(device);
  return html`<section aria-labelledby="page-title">
    ${back}
    <h1 id="page-title" ref=${heading} tabindex="-1">${name}</h1>
    <${StateBadges} device=${device} />
    <div class="actions" role="group" aria-label="Actions">
      ${actionsFor(device).map(
        (a) => html`<button type="button" class=${a.confirm ? 'danger' : ''} disabled=${busy} onClick=${() => (a.confirm ? setConfirming(a.action) : run(a.action))}>${a.label}</button>`,
      )}
    </div>
    <${Status} ...${status} />
    <dl class="fields">${FIELDS.map(([label, get]) => html`<div><dt>${label}</dt><dd>${get(device) ?? '—'}</dd></div>`)}</dl>
    ${confirming === 'wipe' &&
    html`<${ConfirmDialog} title=${`Wipe ${name}?`} confirmLabel=${`Wipe ${name}`} busy=${busy} onConfirm=${() => run('wipe')} onCancel=${() => setConfirming(null)}>
      <p>The mail app on <strong>${name}</strong>${device.username ? ` (${device.username})` : ''} erases its Pigeon data the next time it connects. This cannot be undone.</p>
    </${ConfirmDialog}>`}
    ${confirming === 'remove' &&
    html`<${ConfirmDialog} title=${`Remove ${name}?`} confirmLabel=${`Remove ${name}`} busy=${busy} onConfirm=${() => run('remove')} onCancel=${() => setConfirming(null)}>
      <p><strong>${name}</strong> is signed out and must register again to sync.</p>
    </${ConfirmDialog}>`}
  </section>`;
}
