// The tenant's users (/admin/v1/users…): search and paging, create, and one user's page with disable / enable,
// reset password (a generated one is shown once), revoke sessions and reset MFA, each confirmed by name. The
// admin's own account is marked, and the actions the API refuses on it are not offered (they say why instead).
import { html, useEffect, useRef, useState } from './vendor/preact-htm.mjs';
import { api, whoAmI } from './api.mjs';
import { ConfirmDialog, Link, Status, Time, useAction, usePoll } from './ui.mjs';
import { CursorPager, FormErrors, SelectField, TextField, problemOf, useDebounced } from './access-ui.mjs';

const PAGE_SIZE = 25;
const userHref = (id) => `/admin/users/${encodeURIComponent(id)}`;
const nameOfUser = (u) => u.displayName || u.username;
/** Whether `u` is the signed-in administrator, by the id GET /web/session gave. */
const isMe = (u) => u.id === whoAmI()?.user.id;
/** What the API refuses on one's own account (admin/userManagement.ts): another administrator must do them. */
const NOT_ON_SELF = new Set(['disable', 'reset-password', 'revoke-sessions', 'reset-mfa']);

export function UserList({ navigate }) {
  const [q, setQ] = useState('');
  const [cursors, setCursors] = useState([]);
  const settled = useDebounced(q.trim());
  useEffect(() => setCursors([]), [settled]);
  const cursor = cursors[cursors.length - 1];
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (settled) query.set('q', settled);
  if (cursor) query.set('cursor', cursor);
  const [page, error] = usePoll(() => api(`/admin/v1/users?${query}`), [query.toString()]);
  const first = cursors.length * PAGE_SIZE;

  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Users</h1>
    <div class="actions"><${Link} class="button" href="/admin/users/new" navigate=${navigate}>New user</${Link}></div>
    <form class="filters" role="search" aria-label="Find users" onSubmit=${(e) => e.preventDefault()}>
      <div class="field">
        <label for="users-q">Search users</label>
        <input id="users-q" type="search" value=${q} onInput=${(e) => setQ(e.currentTarget.value)} />
      </div>
    </form>
    ${error && html`<${Status} error message=${error.message} />`}
    ${page === undefined
      ? html`<p>Loading users…</p>`
      : html`<p class="summary" aria-live="polite">${page.total === 0 ? 'No users match.' : `Showing ${first + 1}–${first + page.users.length} of ${page.total} users`}</p>
          <table class="devices users">
            <caption class="visually-hidden">Users</caption>
            <thead><tr><th scope="col">Name</th><th scope="col">Username</th><th scope="col">Email</th><th scope="col">Role</th><th scope="col">Status</th></tr></thead>
            <tbody>
              ${page.users.map(
                (u) => html`<tr key=${u.id} data-user=${u.id}>
                  <td data-label="Name"><${Link} href=${userHref(u.id)} navigate=${navigate}>${nameOfUser(u)}</${Link}>${isMe(u) && html` <span class="muted">(you)</span>`}</td>
                  <td data-label="Username">${u.username}</td>
                  <td data-label="Email">${u.email}</td>
                  <td data-label="Role">${u.role}</td>
                  <td data-label="Status">${u.disabled ? html`<span class="badge access-blocked">disabled</span>` : html`<span class="badge access-allowed">enabled</span>`}</td>
                </tr>`,
              )}
            </tbody>
          </table>
          <${CursorPager} cursors=${cursors} setCursors=${setCursors} nextCursor=${page.nextCursor} />`}
  </section>`;
}

export function NewUser({ navigate }) {
  const [form, setForm] = useState({ username: '', displayName: '', email: '', role: 'user', password: '' });
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const heading = useRef(null);
  useEffect(() => heading.current?.focus(), []);
  const set = (key) => (v) => setForm({ ...form, [key]: v });
  async function submit(e) {
    e.preventDefault();
    setError(null);
    setBusy(true);
    const body = { username: form.username.trim(), role: form.role };
    for (const key of ['displayName', 'email']) if (form[key].trim()) body[key] = form[key].trim();
    if (form.password) body.password = form.password;
    try {
      const user = await api('/admin/v1/users', { method: 'POST', body });
      navigate(userHref(user.id));
    } catch (err) {
      setError(problemOf(err));
      setBusy(false);
    }
  }
  const errorsId = 'user-errors';
  return html`<section aria-labelledby="page-title">
    <p><${Link} href="/admin/users" navigate=${navigate}>← All users</${Link}></p>
    <h1 id="page-title" ref=${heading} tabindex="-1">New user</h1>
    <form class="panel" aria-labelledby="page-title" onSubmit=${submit}>
      <div class="form-grid">
        <${TextField} id="nu-username" label="Username" value=${form.username} onInput=${set('username')} error=${error} name="username" errorsId=${errorsId} required autocomplete="off" hint="Letters, digits and . _ @ + -" />
        <${TextField} id="nu-display" label="Display name (optional)" value=${form.displayName} onInput=${set('displayName')} error=${error} name="displayName" errorsId=${errorsId} />
        <${TextField} id="nu-email" label="Email (optional)" type="email" value=${form.email} onInput=${set('email')} error=${error} name="email" errorsId=${errorsId} />
        <${SelectField} id="nu-role" label="Role" value=${form.role} onChange=${set('role')} options=${[['user', 'User'], ['admin', 'Administrator']]} error=${error} name="role" errorsId=${errorsId} />
        <${TextField} id="nu-password" label="Initial password (optional)" type="password" value=${form.password} onInput=${set('password')} error=${error} name="password" errorsId=${errorsId} autocomplete="new-password" hint="8 characters or more; left empty, reset it later to get one." />
      </div>
      <${FormErrors} id=${errorsId} error=${error} />
      <div class="actions"><button type="submit" disabled=${busy}>Create user</button></div>
    </form>
  </section>`;
}

/** The actions on a user: how each is confirmed and what it reports. */
const ACTIONS = {
  disable: {
    label: 'Disable',
    title: (n) => `Disable ${n}?`,
    text: (n) => `${n} can no longer sign in, and every session of theirs ends now (enabling the account again does not bring them back).`,
    done: (n) => `${n} is disabled.`,
  },
  enable: { label: 'Enable', title: (n) => `Enable ${n}?`, text: (n) => `${n} may sign in again.`, done: (n) => `${n} is enabled.` },
  'reset-password': {
    label: 'Reset password',
    title: (n) => `Reset the password of ${n}?`,
    text: (n) => `A new password is generated and shown once. Every session of ${n} ends.`,
    done: (n, r) => `The password of ${n} is reset; ${r.revokedSessions} session${r.revokedSessions === 1 ? '' : 's'} ended.`,
  },
  'revoke-sessions': {
    label: 'Revoke sessions',
    title: (n) => `Sign ${n} out everywhere?`,
    text: (n) => `Every session of ${n} ends now; their apps must sign in again.`,
    done: (n, r) => `${r.revokedSessions} session${r.revokedSessions === 1 ? '' : 's'} of ${n} ended.`,
  },
  'reset-mfa': {
    label: 'Reset two-step verification',
    title: (n) => `Reset two-step verification of ${n}?`,
    text: (n) => `The authenticator app and recovery codes of ${n} are removed; their next sign-in sets it up again where it is required.`,
    done: (n, r) => (r.removed ? `The two-step verification of ${n} is removed.` : `${n} had no two-step verification.`),
  },
};

export function UserDetail({ id, navigate }) {
  const [user, error, reload] = usePoll(() => api(`/admin/v1/users/${encodeURIComponent(id)}`), [id]);
  const [confirming, setConfirming] = useState(null);
  const [password, setPassword] = useState(null);
  const { status, busy, run: act } = useAction(reload, () => setConfirming(null));
  const heading = useRef(null);
  useEffect(() => heading.current?.focus(), [id]);

  const run = (action) =>
    act(async () => {
      setPassword(null);
      const result = await api(`/admin/v1/users/${encodeURIComponent(id)}/${action}`, { method: 'POST', ...(action === 'reset-password' ? { body: {} } : {}) });
      if (result?.password) setPassword(result.password);
      return ACTIONS[action].done(nameOfUser(user), result);
    });

  const back = html`<p><${Link} href="/admin/users" navigate=${navigate}>← All users</${Link}></p>`;
  if (error?.status === 404) return html`<section>${back}<h1 ref=${heading} tabindex="-1">User not found</h1></section>`;
  if (!user) return html`<section>${back}<h1 ref=${heading} tabindex="-1">User</h1><p>Loading…</p></section>`;
  const name = nameOfUser(user);
  const actions = [user.disabled ? 'enable' : 'disable', 'reset-password', 'revoke-sessions', ...(user.mfa?.enrolled ? ['reset-mfa'] : [])];
  const me = isMe(user);
  // On one's own account the refused actions stay visible but inert (aria-disabled keeps them focusable, so a
  // keyboard or screen-reader user reaches them and hears the reason through aria-describedby).
  const button = (a) =>
    me && NOT_ON_SELF.has(a)
      ? html`<button type="button" aria-disabled="true" aria-describedby="self-note" data-action=${a}>${ACTIONS[a].label}</button>`
      : html`<button type="button" class=${a === 'enable' ? '' : 'danger'} disabled=${busy} data-action=${a} onClick=${() => setConfirming(a)}>${ACTIONS[a].label}</button>`;
  const fields = [
    ['Username', user.username],
    ['Email', user.email],
    ['Role', user.role],
    ['Status', html`<span data-field="status">${user.disabled ? 'disabled' : 'enabled'}</span>`],
    ['Password', user.hasPassword ? 'set' : 'none yet'],
    ['Two-step verification', user.mfa?.enrolled ? html`on since <${Time} value=${user.mfa.enrolledAt} /> (${user.mfa.recoveryCodesLeft} recovery codes left)` : 'off'],
    ['Created', html`<${Time} value=${user.createdAt} />`],
    ['Changed', html`<${Time} value=${user.updatedAt} />`],
  ];
  const action = confirming && ACTIONS[confirming];
  return html`<section aria-labelledby="page-title">
    ${back}
    <h1 id="page-title" ref=${heading} tabindex="-1">${name}</h1>
    <div class="actions" role="group" aria-label="Actions">
      ${actions.map(button)}
    </div>
    ${me && html`<p id="self-note" class="hint">This is your own account. You cannot disable it, reset its password, revoke its sessions or reset its two-step verification here; another administrator can.</p>`}
    <${Status} ...${status} />
    ${password &&
    html`<div class="one-time panel" role="region" aria-labelledby="otp-title">
      <h2 id="otp-title">New password of ${name}</h2>
      <p><code class="secret" data-field="password">${password}</code></p>
      <p>Give it to ${name} now: it is shown only this once and cannot be read again.</p>
      <button type="button" onClick=${() => setPassword(null)}>Done, hide it</button>
    </div>`}
    <dl class="fields">${fields.map(([label, value]) => html`<div><dt>${label}</dt><dd>${value ?? '—'}</dd></div>`)}</dl>
    ${action &&
    html`<${ConfirmDialog} title=${action.title(name)} confirmLabel=${`${action.label}: ${name}`} busy=${busy} onConfirm=${() => run(confirming)} onCancel=${() => setConfirming(null)}>
      <p>${action.text(name)}</p>
    </${ConfirmDialog}>`}
  </section>`;
}
