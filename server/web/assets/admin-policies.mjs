// The access configuration's collections, one generic page each: conditional-access policies, app protection
// policies, named locations and groups (GET/POST <api>, GET/PUT/DELETE <api>/{id}). The common fields (id, name and a
// policy's state) are form fields; the rest of the entry is edited as JSON, and the API's validation errors are shown
// next to the form. A conditional-access policy's state is also switched from the list: chosen in its select, saved
// only by that row's Apply button (a select saving on `change` saved every state arrow keys passed through).
import { html, useEffect, useRef, useState } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';
import { ConfirmDialog, Link, Status, usePoll } from './ui.mjs';
import { FormErrors, SelectField, TextField, problemOf } from './access-ui.mjs';

const STATES = [
  ['on', 'On'],
  ['reportOnly', 'Report-only'],
  ['off', 'Off'],
];

/** Each collection: where it lives in the API and the pages, how it is named, and a template for a new one. */
export const COLLECTIONS = {
  policies: {
    api: '/admin/v1/conditional-access/policies',
    listKey: 'policies',
    base: '/admin/conditional-access',
    title: 'Conditional access',
    singular: 'policy',
    lead: 'Policies are evaluated in order at every sign-in: if the assignments match, the outcome applies. Report-only policies are logged but never decide.',
    hasState: true,
    template: {
      assignments: { users: { include: 'all' }, clientApps: { include: 'all' }, locations: { include: ['any'], exclude: ['trusted'] } },
      outcome: { grant: { controls: ['mfa'], operator: 'and' } },
    },
    summary: (p) => (p.outcome?.block ? 'Block' : `Grant with ${(p.outcome?.grant?.controls ?? []).join(p.outcome?.grant?.operator === 'or' ? ' or ' : ' and ')}`),
  },
  appProtectionPolicies: {
    api: '/admin/v1/app-protection-policies',
    listKey: 'appProtectionPolicies',
    base: '/admin/app-protection',
    title: 'App protection',
    singular: 'app protection policy',
    lead: 'How mail apps must guard the account’s data. The first policy that covers an app applies.',
    template: { apps: 'all', pinRequired: true, blockCopyToUnmanagedApps: true, blockSaveAs: true, notificationContent: 'senderOnly', offlineGracePeriodMinutes: 720, offlineWipeAfterDays: 90, checkInIntervalMinutes: 30 },
    summary: (p) => `Apps: ${Array.isArray(p.apps) ? p.apps.join(', ') : p.apps}; PIN ${p.pinRequired ? 'required' : 'not required'}`,
  },
  namedLocations: {
    api: '/admin/v1/named-locations',
    listKey: 'namedLocations',
    base: '/admin/named-locations',
    title: 'Named locations',
    singular: 'named location',
    lead: 'Address ranges that policies include or exclude; trusted ones count as “trusted”.',
    template: { trusted: true, ranges: ['203.0.113.0/24'] },
    summary: (l) => `${l.trusted ? 'Trusted; ' : ''}${l.ranges.length} range${l.ranges.length === 1 ? '' : 's'}`,
  },
  groups: {
    api: '/admin/v1/groups',
    listKey: 'groups',
    base: '/admin/groups',
    title: 'Groups',
    singular: 'group',
    lead: 'Named sets of users (by user id) for policies’ assignments.',
    template: { members: [] },
    summary: (g) => `${g.members.length} member${g.members.length === 1 ? '' : 's'}`,
  },
};

/** The links between the collections' pages and What If. */
export function AccessTabs({ current, navigate }) {
  const tabs = [...Object.entries(COLLECTIONS).map(([k, c]) => [k, c.base, c.title]), ['whatIf', '/admin/what-if', 'What If']];
  return html`<nav class="tabs" aria-label="Access configuration">
    <ul>
      ${tabs.map(([k, href, label]) => html`<li><${Link} href=${href} navigate=${navigate} aria-current=${k === current ? 'page' : undefined}>${label}</${Link}></li>`)}
    </ul>
  </nav>`;
}

const itemHref = (c, id) => `${c.base}/${encodeURIComponent(id)}`;

export function CollectionList({ kind, navigate }) {
  const c = COLLECTIONS[kind];
  const [data, error, reload] = usePoll(() => api(c.api), [kind]);
  const [status, setStatus] = useState({ message: '' });
  // The state chosen in each row's select but not applied yet, by id (kept across the list's polls).
  const [chosen, setChosen] = useState({});
  const [saving, setSaving] = useState(null);
  const items = data?.[c.listKey];
  const choose = (id, state) => setChosen((all) => ({ ...all, [id]: state }));
  // A choice the saved list now shows (applied here, or made elsewhere) is no longer pending.
  useEffect(() => {
    if (!items) return;
    setChosen((all) => {
      const pending = Object.entries(all).filter(([id, state]) => items.find((i) => i.id === id)?.state !== state);
      return pending.length === Object.keys(all).length ? all : Object.fromEntries(pending);
    });
  }, [data]);

  async function applyState(item, state) {
    setSaving(item.id);
    try {
      await api(`${c.api}/${encodeURIComponent(item.id)}`, { method: 'PUT', body: { ...item, state } });
      setStatus({ message: `${item.name} is now ${STATES.find(([k]) => k === state)[1].toLowerCase()}.` });
    } catch (err) {
      setStatus({ message: `${item.name}: ${err.message}`, error: true });
    } finally {
      setSaving(null);
      reload();
    }
  }

  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">${c.title}</h1>
    <${AccessTabs} current=${kind} navigate=${navigate} />
    <p class="lead">${c.lead}</p>
    <div class="actions"><${Link} class="button" href=${`${c.base}/new`} navigate=${navigate}>New ${c.singular}</${Link}></div>
    ${error && html`<${Status} error message=${error.message} />`}
    <${Status} ...${status} />
    ${c.hasState && items?.length > 0 && html`<p id="state-hint" class="hint">Choose a policy’s state, then Apply it; nothing is saved before.</p>`}
    ${items === undefined
      ? html`<p>Loading…</p>`
      : items.length === 0
        ? html`<p class="summary">None yet.</p>`
        : html`<table class="devices">
            <caption class="visually-hidden">${c.title}</caption>
            <thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Summary</th>${c.hasState && html`<th scope="col">State</th>`}</tr></thead>
            <tbody>
              ${items.map(
                (item) => html`<tr key=${item.id} data-item=${item.id}>
                  <td data-label="Name"><${Link} href=${itemHref(c, item.id)} navigate=${navigate}>${item.name}</${Link}></td>
                  <td data-label="ID"><code>${item.id}</code></td>
                  <td data-label="Summary">${c.summary(item)}</td>
                  ${c.hasState && html`<td data-label="State"><${StateChoice} item=${item} value=${chosen[item.id] ?? item.state} busy=${saving === item.id} onChoose=${choose} onApply=${applyState} /></td>`}
                </tr>`,
              )}
            </tbody>
          </table>`}
  </section>`;
}

/**
 * A policy's state in the list: the select only chooses (no request, whatever keys or events move it); Apply saves
 * the choice, and is enabled only while the choice differs from the saved state.
 */
function StateChoice({ item, value, busy, onChoose, onApply }) {
  const id = `state-${item.id}`;
  const changed = value !== item.state;
  const pick = (e) => onChoose(item.id, e.currentTarget.value);
  return html`<div class="row-actions">
    <label class="visually-hidden" for=${id}>State of ${item.name}</label>
    <select id=${id} class="compact" value=${value} onChange=${pick} onInput=${pick}>
      ${STATES.map(([v, l]) => html`<option value=${v} selected=${v === value}>${l}</option>`)}
    </select>
    <button type="button" aria-label=${`Apply the state of ${item.name}`} aria-describedby="state-hint" disabled=${!changed || busy} onClick=${() => onApply(item, value)}>Apply</button>
  </div>`;
}

/** The entry without its common fields, as the JSON editor shows it. */
function restOf(item) {
  const { id, name, state, ...rest } = item;
  return JSON.stringify(rest, null, 2);
}

/** One entry: view and edit it (or create one when `id` is null), switch its state, delete it. */
export function CollectionItem({ kind, id, navigate }) {
  const c = COLLECTIONS[kind];
  const creating = id === null;
  const [loaded, setLoaded] = useState(creating ? { id: '', name: '', state: 'reportOnly', ...c.template } : undefined);
  const [loadError, setLoadError] = useState(null);
  const [form, setForm] = useState(null);
  const [error, setError] = useState(null);
  const [status, setStatus] = useState({ message: '' });
  const [busy, setBusy] = useState(false);
  const [deleting, setDeleting] = useState(false);
  const heading = useRef(null);

  useEffect(() => {
    heading.current?.focus();
    if (creating) return;
    api(`${c.api}/${encodeURIComponent(id)}`).then(setLoaded, setLoadError);
  }, [kind, id]);
  useEffect(() => {
    if (loaded) setForm({ id: loaded.id, name: loaded.name, state: loaded.state ?? 'on', json: restOf(loaded) });
  }, [loaded]);

  const back = html`<p><${Link} href=${c.base} navigate=${navigate}>← ${c.title}</${Link}></p>`;
  if (loadError) {
    return html`<section>${back}<h1 ref=${heading} tabindex="-1">${loadError.status === 404 ? `No such ${c.singular}` : c.title}</h1><${Status} error message=${loadError.message} /></section>`;
  }
  if (!form) return html`<section>${back}<h1 ref=${heading} tabindex="-1">${c.title}</h1><p>Loading…</p></section>`;

  async function save(e) {
    e.preventDefault();
    setError(null);
    let rest;
    try {
      rest = JSON.parse(form.json);
      if (!rest || typeof rest !== 'object' || Array.isArray(rest)) throw new Error('The document must be a JSON object.');
    } catch (err) {
      return setError({ message: `The document is not valid JSON: ${err.message}`, fields: [] });
    }
    const body = { ...rest, id: form.id, name: form.name, ...(c.hasState ? { state: form.state } : {}) };
    setBusy(true);
    try {
      const saved = creating
        ? await api(c.api, { method: 'POST', body })
        : await api(`${c.api}/${encodeURIComponent(id)}`, { method: 'PUT', body });
      if (creating) return navigate(itemHref(c, saved.id));
      setLoaded(saved);
      setStatus({ message: `Saved ${saved.name}.` });
    } catch (err) {
      setError(problemOf(err));
    } finally {
      setBusy(false);
    }
  }

  async function remove() {
    setBusy(true);
    try {
      await api(`${c.api}/${encodeURIComponent(id)}`, { method: 'DELETE' });
      navigate(c.base);
    } catch (err) {
      setStatus({ message: err.message, error: true });
      setBusy(false);
      setDeleting(false);
    }
  }

  const errorsId = 'item-errors';
  const set = (key) => (v) => setForm({ ...form, [key]: v });
  const title = creating ? `New ${c.singular}` : loaded.name;
  return html`<section aria-labelledby="page-title">
    ${back}
    <h1 id="page-title" ref=${heading} tabindex="-1">${title}</h1>
    <${Status} ...${status} />
    <form class="panel" aria-labelledby="page-title" onSubmit=${save}>
      <div class="form-grid">
        <${TextField} id="item-id" label="ID" value=${form.id} onInput=${set('id')} error=${error} name="id" errorsId=${errorsId} required readonly=${!creating} hint=${creating ? 'Chosen by you; it cannot change later.' : undefined} />
        <${TextField} id="item-name" label="Name" value=${form.name} onInput=${set('name')} error=${error} name="name" errorsId=${errorsId} required />
        ${c.hasState && html`<${SelectField} id="item-state" label="State" value=${form.state} onChange=${set('state')} options=${STATES} error=${error} name="state" errorsId=${errorsId} />`}
      </div>
      <div class="field">
        <label for="item-json">The rest of the ${c.singular} (JSON)</label>
        <textarea id="item-json" class="json" rows="14" spellcheck="false" value=${form.json} onInput=${(e) => set('json')(e.currentTarget.value)} aria-describedby=${errorsId}></textarea>
      </div>
      <${FormErrors} id=${errorsId} error=${error} />
      <div class="actions">
        <button type="submit" disabled=${busy}>${creating ? `Create ${c.singular}` : 'Save changes'}</button>
        ${!creating && html`<button type="button" class="danger" disabled=${busy} onClick=${() => setDeleting(true)}>Delete</button>`}
      </div>
    </form>
    ${deleting &&
    html`<${ConfirmDialog} title=${`Delete ${loaded.name}?`} confirmLabel=${`Delete ${loaded.name}`} busy=${busy} onConfirm=${remove} onCancel=${() => setDeleting(false)}>
      <p>The ${c.singular} <strong>${loaded.name}</strong> (<code>${loaded.id}</code>) is deleted and no longer applies.</p>
    </${ConfirmDialog}>`}
  </section>`;
}
