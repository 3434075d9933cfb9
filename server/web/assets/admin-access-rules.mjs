// Device access rules and the organisation's default access state (GET/POST /admin/v1/device-access-rules,
// PUT/DELETE /admin/v1/device-access-rules/{id}, GET/PUT /admin/v1/device-access-default).
import { html, useEffect, useRef, useState } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';
import { ConfirmDialog, Status, useAction, usePoll } from './ui.mjs';
import { FormErrors, SelectField, TextField, When, problemOf } from './access-ui.mjs';

const FIELDS = [
  ['deviceModel', 'Device model'],
  ['deviceType', 'Device type'],
  ['deviceOS', 'Operating system'],
  ['clientType', 'Client type'],
  ['userAgent', 'User agent'],
];
const MATCHES = [
  ['exact', 'is'],
  ['prefix', 'starts with'],
];
const STATES = [
  ['allowed', 'Allowed'],
  ['blocked', 'Blocked'],
  ['quarantined', 'Quarantined'],
];
const label = (list, v) => list.find(([k]) => k === v)?.[1] ?? v;

/** How a rule reads in a sentence: "Device model is “Pixel 8”". */
export const ruleText = (r) => `${label(FIELDS, r.field)} ${label(MATCHES, r.match)} “${r.value}”`;

const EMPTY = { field: 'deviceModel', match: 'exact', value: '', accessState: 'blocked', description: '' };

function RuleForm({ editing, onSaved, onCancel }) {
  const [rule, setRule] = useState(editing ?? EMPTY);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const first = useRef(null);
  useEffect(() => {
    setRule(editing ?? EMPTY);
    setError(null);
    if (editing) first.current?.querySelector('select')?.focus();
  }, [editing?.id]);
  const set = (key) => (v) => setRule({ ...rule, [key]: v });
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const body = { field: rule.field, match: rule.match, value: rule.value, accessState: rule.accessState, description: rule.description };
    try {
      const saved = editing
        ? await api(`/admin/v1/device-access-rules/${encodeURIComponent(editing.id)}`, { method: 'PUT', body })
        : await api('/admin/v1/device-access-rules', { method: 'POST', body });
      setRule(EMPTY);
      onSaved(saved, Boolean(editing));
    } catch (err) {
      setError(problemOf(err));
    } finally {
      setBusy(false);
    }
  }
  const errorsId = 'rule-errors';
  return html`<form class="panel" aria-labelledby="rule-form-title" onSubmit=${submit} ref=${first}>
    <h2 id="rule-form-title">${editing ? `Edit the rule ${ruleText(editing)}` : 'Add a rule'}</h2>
    <div class="form-grid">
      <${SelectField} id="rule-field" label="Device field" value=${rule.field} onChange=${set('field')} options=${FIELDS} error=${error} name="field" errorsId=${errorsId} />
      <${SelectField} id="rule-match" label="Match" value=${rule.match} onChange=${set('match')} options=${MATCHES} error=${error} name="match" errorsId=${errorsId} />
      <${TextField} id="rule-value" label="Value" value=${rule.value} onInput=${set('value')} error=${error} name="value" errorsId=${errorsId} required maxlength="200" />
      <${SelectField} id="rule-state" label="Access state" value=${rule.accessState} onChange=${set('accessState')} options=${STATES} error=${error} name="accessState" errorsId=${errorsId} />
      <${TextField} id="rule-description" label="Description (optional)" value=${rule.description} onInput=${set('description')} error=${error} name="description" errorsId=${errorsId} maxlength="500" />
    </div>
    <${FormErrors} id=${errorsId} error=${error} />
    <div class="actions">
      <button type="submit" disabled=${busy}>${editing ? 'Save rule' : 'Add rule'}</button>
      ${editing && html`<button type="button" onClick=${onCancel}>Cancel editing</button>`}
    </div>
  </form>`;
}

function DefaultForm() {
  const [current, loadError, reload] = usePoll(() => api('/admin/v1/device-access-default'), []);
  const [choice, setChoice] = useState(null);
  const [status, setStatus] = useState({ message: '' });
  const [error, setError] = useState(null);
  const value = choice ?? current?.accessState ?? 'allowed';
  async function submit(e) {
    e.preventDefault();
    setError(null);
    try {
      const saved = await api('/admin/v1/device-access-default', { method: 'PUT', body: { accessState: value } });
      setChoice(null);
      setStatus({ message: `The default access state is now ${label(STATES, saved.accessState).toLowerCase()}.` });
      reload();
    } catch (err) {
      setError(problemOf(err));
    }
  }
  return html`<form class="panel" aria-labelledby="default-title" onSubmit=${submit}>
    <h2 id="default-title">Default access</h2>
    <p class="muted">For a device with no individual decision that matches no rule.${current ? ` Now: ${label(STATES, current.accessState).toLowerCase()}.` : ''}</p>
    ${loadError && html`<${Status} error message=${loadError.message} />`}
    <div class="form-row">
      <${SelectField} id="default-state" label="Default access state" value=${value} onChange=${setChoice} options=${STATES} error=${error} name="accessState" errorsId="default-errors" />
      <button type="submit">Save default</button>
    </div>
    <${FormErrors} id="default-errors" error=${error} />
    <${Status} ...${status} />
  </form>`;
}

export function AccessRules() {
  const [data, error, reload] = usePoll(() => api('/admin/v1/device-access-rules'), []);
  const [editing, setEditing] = useState(null);
  const [deleting, setDeleting] = useState(null);
  const { status, setStatus, busy, run } = useAction(reload, () => {
    setDeleting(null);
    // The row (and its Delete button, where focus would go back) is gone: continue from the page's heading.
    setTimeout(() => document.getElementById('page-title')?.focus(), 0);
  });

  const remove = (rule) =>
    run(async () => {
      await api(`/admin/v1/device-access-rules/${encodeURIComponent(rule.id)}`, { method: 'DELETE' });
      if (editing?.id === rule.id) setEditing(null);
      return `Deleted the rule ${ruleText(rule)}.`;
    });

  const rules = data?.rules;
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Access rules</h1>
    <p class="lead">Rules decide the access state of devices that have no individual decision; an exact match beats a prefix match.</p>
    ${error && html`<${Status} error message=${error.message} />`}
    <${Status} ...${status} />
    ${rules === undefined
      ? html`<p>Loading rules…</p>`
      : rules.length === 0
        ? html`<p class="summary">No rules yet.</p>`
        : html`<table class="devices rules">
            <caption class="visually-hidden">Device access rules</caption>
            <thead><tr><th scope="col">Rule</th><th scope="col">Access</th><th scope="col">Description</th><th scope="col">Changed</th><th scope="col">Actions</th></tr></thead>
            <tbody>
              ${rules.map(
                (r) => html`<tr key=${r.id} data-rule=${r.id}>
                  <td data-label="Rule">${ruleText(r)}</td>
                  <td data-label="Access"><span class=${`badge access-${r.accessState}`}>${r.accessState}</span></td>
                  <td data-label="Description">${r.description || html`<span class="muted">—</span>`}</td>
                  <td data-label="Changed"><${When} value=${r.updatedAt} /></td>
                  <td data-label="Actions"><span class="row-actions">
                    <button type="button" aria-label=${`Edit the rule ${ruleText(r)}`} onClick=${() => setEditing(r)}>Edit</button>
                    <button type="button" class="danger" aria-label=${`Delete the rule ${ruleText(r)}`} onClick=${() => setDeleting(r)}>Delete</button>
                  </span></td>
                </tr>`,
              )}
            </tbody>
          </table>`}
    <${RuleForm}
      editing=${editing}
      onCancel=${() => setEditing(null)}
      onSaved=${(saved, edited) => {
        setEditing(null);
        setStatus({ message: `${edited ? 'Saved' : 'Added'} the rule ${ruleText(saved)}: ${saved.accessState}.` });
        reload();
      }}
    />
    <${DefaultForm} />
    ${deleting &&
    html`<${ConfirmDialog} title=${`Delete the rule ${ruleText(deleting)}?`} confirmLabel="Delete rule" busy=${busy} onConfirm=${() => remove(deleting)} onCancel=${() => setDeleting(null)}>
      <p>Devices it decided (<strong>${ruleText(deleting)}</strong> → ${deleting.accessState}) fall back to the other rules or the default from their next request.</p>
    </${ConfirmDialog}>`}
  </section>`;
}
