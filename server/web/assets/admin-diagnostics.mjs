// The admin center's incident lookup (GET /admin/v1/diagnostics/{id}): an ID a user reads out (PGN-XXXX-XXXX, any
// case, dashes optional) → the incident, its owner and device, and a link to download its zip (a plain GET the
// session cookie authenticates; the server sends it as an attachment). Each lookup and download is audited, so the
// incident is fetched once per lookup, never polled.
import { html, useEffect, useRef, useState } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';
import { Link, Status, Time } from './ui.mjs';

/** What a person typed → the canonical ID when it reads as one (Crockford base32: O→0, I/L→1), else null. */
export function canonicalIncidentId(typed) {
  const raw = typed.toUpperCase().replace(/[\s-]/g, '').replace(/^PGN/, '').replace(/O/g, '0').replace(/[IL]/g, '1');
  return /^[0-9A-HJKMNP-TV-Z]{8}$/.test(raw) ? `PGN-${raw.slice(0, 4)}-${raw.slice(4)}` : null;
}

const kb = (n) => (n < 1024 ? `${n} bytes` : `${(n / 1024).toFixed(1)} KB`);

function Incident({ incident, navigate }) {
  const bundle = `/admin/v1/diagnostics/${encodeURIComponent(incident.incidentId)}/bundle`;
  return html`<article class="incident" aria-labelledby="incident-title">
    <h2 id="incident-title">Incident <span data-field="incidentId">${incident.incidentId}</span></h2>
    <dl class="fields">
      <div><dt>User</dt><dd>${incident.username ?? html`<span class="muted">deleted user ${incident.userId}</span>`}</dd></div>
      <div><dt>Device ID</dt><dd>${incident.deviceId}</dd></div>
      <div><dt>Device record</dt><dd>${incident.deviceRecordId ? html`<${Link} href=${`/admin/devices/${encodeURIComponent(incident.deviceRecordId)}`} navigate=${navigate}>Open the device</${Link}>` : '—'}</dd></div>
      <div><dt>Uploaded</dt><dd><${Time} value=${incident.createdAt} /></dd></div>
      <div><dt>Kept until</dt><dd><${Time} value=${incident.expiresAt} /></dd></div>
      <div><dt>Size</dt><dd>${kb(incident.size)}</dd></div>
      <div><dt>Files</dt><dd>${incident.entries}</dd></div>
      <div><dt>Secrets redacted</dt><dd>${incident.redactions}</dd></div>
    </dl>
    <p class="actions"><a class="button" href=${bundle} download=${`${incident.incidentId}.zip`}>Download the bundle (${incident.incidentId}.zip, ${kb(incident.size)})</a></p>
    <p class="muted">The zip holds the app's scrubbed logs, the device's record (device.json) and the server's log lines about the device (server.log). Viewing and downloading are recorded in the audit log.</p>
  </article>`;
}

export function DiagnosticsLookup({ id, navigate }) {
  const [typed, setTyped] = useState(id ?? '');
  const [formError, setFormError] = useState('');
  const [state, setState] = useState({ incident: undefined, error: undefined, loading: false });
  const heading = useRef(null);
  useEffect(() => setTyped(id ?? ''), [id]);
  useEffect(() => {
    if (!id) return setState({ incident: undefined, error: undefined, loading: false });
    let alive = true;
    setState({ incident: undefined, error: undefined, loading: true });
    api(`/admin/v1/diagnostics/${encodeURIComponent(id)}`).then(
      (incident) => alive && setState({ incident, error: undefined, loading: false }),
      (error) => alive && setState({ incident: undefined, error, loading: false }),
    );
    return () => {
      alive = false;
    };
  }, [id]);

  const submit = (e) => {
    e.preventDefault();
    const canonical = canonicalIncidentId(typed);
    if (!canonical) return setFormError('An incident ID reads PGN- and two groups of four letters or digits, e.g. PGN-7K4Q-2M9X.');
    setFormError('');
    navigate(`/admin/diagnostics/${canonical}`);
  };
  const notFound = state.error?.status === 404;
  const message = formError || (notFound ? `No incident ${id} in this organization (it may have expired).` : state.error?.message);
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" ref=${heading} tabindex="-1">Diagnostics</h1>
    <p class="lead">Look up the incident ID a user read out from their app's "Send diagnostics".</p>
    <form class="lookup" onSubmit=${submit} novalidate>
      <div class="field">
        <label for="incident-id">Incident ID</label>
        <input id="incident-id" name="incident" value=${typed} onInput=${(e) => setTyped(e.currentTarget.value)} placeholder="PGN-XXXX-XXXX" autocomplete="off" spellcheck="false" aria-describedby="incident-error" aria-invalid=${message ? 'true' : undefined} />
      </div>
      <button type="submit">Look up</button>
    </form>
    <div id="incident-error">${message && html`<${Status} error message=${message} />`}</div>
    ${state.loading && html`<p>Looking up ${id}…</p>`}
    ${state.incident && html`<${Incident} incident=${state.incident} navigate=${navigate} />`}
  </section>`;
}
