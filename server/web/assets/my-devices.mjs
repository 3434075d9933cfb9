// "My devices": the signed-in user's own devices with their last sync; wipe a lost phone, remove an old one
// (/account/v1/devices, which answers only for the caller's devices).
import { html, useState } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';
import { ConfirmDialog, StateBadges, Status, Time, useAction, usePoll } from './ui.mjs';

export function MyDevices() {
  const [list, error, reload] = usePoll(() => api('/account/v1/devices'), []);
  const [confirming, setConfirming] = useState(null); // { device, action }
  const { status, busy, run: act } = useAction(reload, () => setConfirming(null));

  const run = ({ device, action }) =>
    act(async () => {
      const path = `/account/v1/devices/${encodeURIComponent(device.id)}`;
      // The wipe repeats the device's name: the server refuses a confirmation meant for another device.
      if (action === 'wipe') await api(`${path}/wipe`, { method: 'POST', body: { confirm: device.name } });
      else await api(path, { method: 'DELETE' });
      return action === 'wipe' ? `${device.name} will be wiped the next time it connects.` : `${device.name} was removed.`;
    });

  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">My devices</h1>
    <p class="lead">The phones and apps signed in to your mailbox. Wipe one you have lost; remove one you no longer use.</p>
    <${Status} ...${status} />
    ${error && html`<${Status} error message=${error.message} />`}
    ${list === undefined
      ? html`<p>Loading…</p>`
      : list.devices.length === 0
        ? html`<p>No devices are signed in.</p>`
        : html`<ul class="cards">
            ${list.devices.map(
              (d) => html`<li key=${d.id} class="card" data-device=${d.id}>
                <h2>${d.name}</h2>
                <${StateBadges} device=${d} />
                <dl class="fields compact">
                  <div><dt>Model</dt><dd>${[d.deviceModel, d.deviceOS].filter(Boolean).join(' · ') || '—'}</dd></div>
                  <div><dt>App</dt><dd>${[d.clientType, d.clientVersion].filter(Boolean).join(' ') || '—'}</dd></div>
                  <div><dt>Last sync</dt><dd><${Time} value=${d.lastSuccessSyncTime ?? d.lastSyncAttemptTime} /></dd></div>
                </dl>
                <div class="actions">
                  ${d.wipeState === 'none' && html`<button type="button" class="danger" aria-label=${`Wipe ${d.name}`} onClick=${() => setConfirming({ device: d, action: 'wipe' })}>Wipe</button>`}
                  ${d.wipeState === 'none' && html`<button type="button" aria-label=${`Remove ${d.name}`} onClick=${() => setConfirming({ device: d, action: 'remove' })}>Remove</button>`}
                </div>
              </li>`,
            )}
          </ul>`}
    ${confirming &&
    html`<${ConfirmDialog}
      title=${`${confirming.action === 'wipe' ? 'Wipe' : 'Remove'} ${confirming.device.name}?`}
      confirmLabel=${`${confirming.action === 'wipe' ? 'Wipe' : 'Remove'} ${confirming.device.name}`}
      busy=${busy}
      onConfirm=${() => run(confirming)}
      onCancel=${() => setConfirming(null)}
    >
      ${confirming.action === 'wipe'
        ? html`<p>The mail app on <strong>${confirming.device.name}</strong> erases your mail, calendar and contacts the next time it connects. Use this for a lost or stolen device. This cannot be undone.</p>`
        : html`<p><strong>${confirming.device.name}</strong> is signed out and stops syncing.</p>`}
    </${ConfirmDialog}>`}
  </section>`;
}
