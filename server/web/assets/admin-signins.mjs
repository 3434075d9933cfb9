// The admin center's sign-in log (GET /admin/v1/sign-ins): the tenant's sign-ins, refreshes, refused sign-ins and
// failed passwords, newest first, with filters (user, decision, app, device, since) and the server's cursor paging.
// Each row opens to its risk signals and how every conditional-access policy judged it (report-only ones included).
import { html, useEffect, useState } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';
import { Status, Time, usePoll } from './ui.mjs';
import { Pager, useCursors, useDebounced, useUsernames, userIdByName } from './admin-records-ui.mjs';

const PAGE_SIZE = 50;
const DECISIONS = [
  ['', 'Any'],
  ['allow', 'Allowed'],
  ['block', 'Blocked'],
  ['needs', 'Needed more (MFA)'],
  ['failure', 'Wrong password'],
];
const KINDS = { interactive: 'Interactive', refresh: 'Refresh', password: 'Password grant', failure: 'Failed password' };

function Filters({ filters, setFilters }) {
  const set = (key) => (e) => setFilters({ ...filters, [key]: e.currentTarget.value });
  const text = (key, label, hint) => html`<div class="field">
    <label for=${`s-${key}`}>${label}</label>
    <input id=${`s-${key}`} value=${filters[key]} onInput=${set(key)} autocomplete="off" aria-describedby=${hint ? `s-${key}-hint` : undefined} />
    ${hint && html`<span id=${`s-${key}-hint`} class="hint">${hint}</span>`}
  </div>`;
  return html`<form class="filters" role="search" aria-label="Filter sign-ins" onSubmit=${(e) => e.preventDefault()}>
    ${text('user', 'User', 'Exact username')}
    <div class="field">
      <label for="s-decision">Decision</label>
      <select id="s-decision" value=${filters.decision} onChange=${set('decision')}>
        ${DECISIONS.map(([v, l]) => html`<option value=${v}>${l}</option>`)}
      </select>
    </div>
    ${text('clientId', 'App (client ID)')} ${text('deviceId', 'Device ID')}
    <div class="field">
      <label for="s-since">Since</label>
      <input id="s-since" type="datetime-local" value=${filters.since} onInput=${set('since')} />
    </div>
  </form>`;
}

function Decision({ entry }) {
  return html`<span class=${`badge decision-${entry.decision}`}>${entry.decision}</span>`;
}

function Details({ entry }) {
  return html`<details class="more">
    <summary>Details<span class="visually-hidden"> of the sign-in at ${new Date(entry.at).toLocaleString()}</span></summary>
    <dl class="fields compact">
      <div><dt>Entry</dt><dd>${entry.id}</dd></div>
      <div><dt>Session</dt><dd>${entry.sessionId ?? '—'}</dd></div>
      <div><dt>Methods</dt><dd>${(entry.authMethods ?? []).join(', ') || '—'}</dd></div>
      <div><dt>Risk signals</dt><dd>${(entry.riskSignals ?? []).map((s) => `${s.signal} (${s.weight})`).join(', ') || 'none'}</dd></div>
      ${entry.reason && html`<div><dt>Reason</dt><dd>${entry.reason}</dd></div>`}
    </dl>
    ${entry.policyResults.length
      ? html`<ul class="policies">
          ${entry.policyResults.map(
            (r) => html`<li><code>${r.policyId}</code> (${r.state}): ${r.result}${r.notAppliedBecause ? ` — ${r.notAppliedBecause}` : ''}${r.unmetControls?.length ? ` — unmet: ${r.unmetControls.join(', ')}` : ''}</li>`,
          )}
        </ul>`
      : html`<p class="muted">No conditional-access policy judged it.</p>`}
  </details>`;
}

export function SignInLog() {
  const [filters, setFilters] = useState({ user: '', decision: '', clientId: '', deviceId: '', since: '' });
  const settled = useDebounced(filters);
  const pages = useCursors(JSON.stringify(settled));
  // The user filter is a username; the API filters by id, so it is looked up first (none: nothing to show).
  const [userId, setUserId] = useState({ name: '', id: undefined });
  useEffect(() => {
    let alive = true;
    const name = settled.user.trim();
    if (!name) setUserId({ name, id: undefined });
    else userIdByName(name).then((id) => alive && setUserId({ name, id }), () => alive && setUserId({ name, id: null }));
    return () => {
      alive = false;
    };
  }, [settled.user]);

  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const unknownUser = settled.user.trim() !== '' && userId.name === settled.user.trim() && userId.id === null;
  const userPending = settled.user.trim() !== userId.name;
  if (userId.id) query.set('userId', userId.id);
  for (const key of ['decision', 'clientId', 'deviceId']) if (settled[key].trim()) query.set(key, settled[key].trim());
  const since = settled.since ? new Date(settled.since).getTime() : NaN;
  if (Number.isFinite(since) && since >= 0) query.set('since', String(since));
  if (pages.cursor) query.set('cursor', pages.cursor);
  const skip = unknownUser || userPending;
  const [page, error] = usePoll(() => (skip ? Promise.resolve({ signIns: [] }) : api(`/admin/v1/sign-ins?${query}`)), [query.toString(), skip]);
  const names = useUsernames(page?.signIns.map((e) => e.userId) ?? []);

  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Sign-ins</h1>
    <p class="lead">Sign-ins, refreshes, refused sign-ins and failed passwords of the last 30 days, newest first.</p>
    <${Filters} filters=${filters} setFilters=${setFilters} />
    ${unknownUser && html`<${Status} error message=${`No user named ${settled.user.trim()} in this organization.`} />`}
    ${error && html`<${Status} error message=${error.message} />`}
    ${page === undefined
      ? html`<p>Loading sign-ins…</p>`
      : html`<p class="summary" aria-live="polite">${page.signIns.length === 0 ? 'No sign-ins match.' : `${page.signIns.length} sign-ins on this page`}</p>
          <table class="devices records signins">
            <caption class="visually-hidden">Sign-in log</caption>
            <thead><tr><th scope="col">Time</th><th scope="col">User</th><th scope="col">Kind</th><th scope="col">App</th><th scope="col">Device</th><th scope="col">Address</th><th scope="col">Risk</th><th scope="col">Decision</th></tr></thead>
            <tbody>
              ${page.signIns.map(
                (e) => html`<tr key=${e.id} data-signin=${e.id}>
                  <td data-label="Time"><${Time} value=${e.at} /></td>
                  <td data-label="User">${names[e.userId] ?? e.userId}</td>
                  <td data-label="Kind">${KINDS[e.kind] ?? e.kind}</td>
                  <td data-label="App">${e.clientId ?? '—'}</td>
                  <td data-label="Device">${e.deviceId ?? '—'}</td>
                  <td data-label="Address">${e.ip ?? '—'}</td>
                  <td data-label="Risk">${e.riskLevel} (${e.riskScore})</td>
                  <td data-label="Decision"><${Decision} entry=${e} /><${Details} entry=${e} /></td>
                </tr>`,
              )}
            </tbody>
          </table>
          <${Pager} pages=${pages} nextCursor=${page.next} label="Sign-in log pages" />`}
  </section>`;
}
