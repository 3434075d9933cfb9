// What If (POST /admin/v1/conditional-access/what-if): describe a sign-in, see what conditional access would decide,
// which policies applied and why the others did not. Nothing is logged and nothing changes.
import { html, useState } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';
import { usePoll } from './ui.mjs';
import { AccessTabs } from './admin-policies.mjs';
import { FormErrors, SelectField, TextField, problemOf } from './access-ui.mjs';

const PLATFORMS = ['ios', 'android', 'windows', 'macos', 'linux', 'web', 'other'].map((p) => [p, p]);
const TRI = [
  ['', 'As found now'],
  ['true', 'Yes'],
  ['false', 'No'],
];
const RISKS = [['', 'As found now'], ...['none', 'low', 'medium', 'high'].map((r) => [r, r])];

const DECISIONS = {
  allow: 'Allowed',
  block: 'Blocked',
  needs: 'Allowed after more sign-in steps',
};
const CONTROLS = { mfa: 'two-step verification (mfa)', approvedClientApp: 'an approved client app', compliantDevice: 'a compliant device', appProtectionPolicy: 'an app protection policy' };
const controlsText = (list) => list.map((c) => CONTROLS[c] ?? c).join(', ');
const WHY_NOT = {
  policyOff: 'the policy is off',
  userNotIncluded: 'the user is not included',
  userExcluded: 'the user is excluded',
  clientAppNotIncluded: 'the app is not included',
  clientAppExcluded: 'the app is excluded',
  platformNotIncluded: 'the platform is not included',
  platformExcluded: 'the platform is excluded',
  locationNotIncluded: 'the location is not included',
  locationExcluded: 'the location is excluded',
  signInRiskNotIncluded: 'the sign-in risk is not included',
};

function Result({ result }) {
  const applied = result.results.filter((r) => r.applied);
  return html`<section class="panel" aria-labelledby="what-if-result" data-decision=${result.decision}>
    <h2 id="what-if-result" tabindex="-1">Decision: ${DECISIONS[result.decision] ?? result.decision}</h2>
    ${result.decision === 'needs' && html`<p>The user must complete ${controlsText(result.missingControls)} in the sign-in.</p>`}
    ${result.blockReasons.length > 0 &&
    html`<ul class="reasons">
      ${result.blockReasons.map(
        (b) => html`<li><code>${b.policyId}</code>: ${b.reason === 'blockPolicy' ? 'blocks the sign-in' : `needs ${controlsText(b.unmetControls)}, which only another device or app can meet`}</li>`,
      )}
    </ul>`}
    <p class="muted">${applied.length} of ${result.results.length} policies applied. The user’s groups: ${result.groups.length ? result.groups.join(', ') : 'none'}. The app is ${result.approvedClientApp ? '' : 'not '}an approved client app.</p>
    ${result.results.length > 0 &&
    html`<table class="devices">
      <caption class="visually-hidden">Every policy’s result</caption>
      <thead><tr><th scope="col">Policy</th><th scope="col">State</th><th scope="col">Applied</th><th scope="col">Result</th><th scope="col">Why</th></tr></thead>
      <tbody>
        ${result.results.map(
          (r) => html`<tr key=${r.policyId} data-policy=${r.policyId}>
            <td data-label="Policy"><code>${r.policyId}</code></td>
            <td data-label="State">${r.state}</td>
            <td data-label="Applied">${r.applied ? 'Yes' : 'No'}</td>
            <td data-label="Result">${r.result}</td>
            <td data-label="Why">${r.applied ? (r.unmetControls?.length ? `unmet: ${r.unmetControls.join(', ')}` : 'assignments match') : WHY_NOT[r.notAppliedBecause] ?? r.notAppliedBecause ?? ''}</td>
          </tr>`,
        )}
      </tbody>
    </table>`}
  </section>`;
}

export function WhatIf({ navigate }) {
  const [users] = usePoll(() => api('/admin/v1/users?limit=500'), []);
  const [form, setForm] = useState({ userId: '', clientId: 'pigeon-app', platform: 'ios', ip: '198.51.100.23', deviceId: '', mfa: '', compliantDevice: '', risk: '' });
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (key) => (v) => setForm({ ...form, [key]: v });
  const userId = form.userId || users?.users[0]?.id || '';

  async function submit(e) {
    e.preventDefault();
    setError(null);
    setBusy(true);
    const body = { userId, clientId: form.clientId.trim(), platform: form.platform, ip: form.ip.trim() };
    if (form.deviceId.trim()) body.deviceId = form.deviceId.trim();
    if (form.mfa) body.mfa = form.mfa === 'true';
    if (form.compliantDevice) body.compliantDevice = form.compliantDevice === 'true';
    if (form.risk) body.risk = form.risk;
    try {
      setResult(await api('/admin/v1/conditional-access/what-if', { method: 'POST', body }));
      setTimeout(() => document.getElementById('what-if-result')?.focus(), 0);
    } catch (err) {
      setResult(null);
      setError(problemOf(err));
    } finally {
      setBusy(false);
    }
  }

  const errorsId = 'what-if-errors';
  const userOptions = (users?.users ?? []).map((u) => [u.id, `${u.displayName} (${u.username})`]);
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">What If</h1>
    <${AccessTabs} current="whatIf" navigate=${navigate} />
    <p class="lead">What conditional access would decide for a sign-in, with the same evaluation as real sign-ins. Nothing is logged and nothing changes.</p>
    <form class="panel" aria-label="The sign-in" onSubmit=${submit}>
      <div class="form-grid">
        <${SelectField} id="wi-user" label="User" value=${userId} onChange=${set('userId')} options=${userOptions} error=${error} name="userId" errorsId=${errorsId} />
        <${TextField} id="wi-client" label="Client app (client id)" value=${form.clientId} onInput=${set('clientId')} error=${error} name="clientId" errorsId=${errorsId} required />
        <${SelectField} id="wi-platform" label="Platform" value=${form.platform} onChange=${set('platform')} options=${PLATFORMS} error=${error} name="platform" errorsId=${errorsId} />
        <${TextField} id="wi-ip" label="IP address" value=${form.ip} onInput=${set('ip')} error=${error} name="ip" errorsId=${errorsId} required />
        <${SelectField} id="wi-mfa" label="Two-step verification done" value=${form.mfa} onChange=${set('mfa')} options=${TRI} error=${error} name="mfa" errorsId=${errorsId} />
        <${SelectField} id="wi-compliant" label="Compliant device" value=${form.compliantDevice} onChange=${set('compliantDevice')} options=${TRI} error=${error} name="compliantDevice" errorsId=${errorsId} />
        <${SelectField} id="wi-risk" label="Sign-in risk" value=${form.risk} onChange=${set('risk')} options=${RISKS} error=${error} name="risk" errorsId=${errorsId} />
        <${TextField} id="wi-device" label="Device ID (optional)" value=${form.deviceId} onInput=${set('deviceId')} error=${error} name="deviceId" errorsId=${errorsId} />
      </div>
      <${FormErrors} id=${errorsId} error=${error} />
      <div class="actions"><button type="submit" disabled=${busy || !userId}>Run What If</button></div>
    </form>
    ${result && html`<${Result} result=${result} />`}
  </section>`;
}
