// Small shared pieces: the confirmation dialog, times, state badges, polling and client-side links.
import { html, useEffect, useRef, useState, useCallback } from './vendor/preact-htm.mjs';

/** How often lists refresh themselves (and at once after an action). */
export const POLL_MS = 3000;

/**
 * Calls `load` now, every POLL_MS while the page is visible, and when `reload()` is called; answers
 * [data, error, reload]. A poll never overlaps the one before it.
 */
export function usePoll(load, deps) {
  const [state, setState] = useState({ data: undefined, error: undefined });
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  useEffect(() => {
    let alive = true;
    let timer;
    const run = async () => {
      if (!document.hidden) {
        try {
          const data = await load();
          if (alive) setState({ data, error: undefined });
        } catch (error) {
          if (alive) setState((s) => ({ data: s.data, error }));
        }
      }
      if (alive) timer = setTimeout(run, POLL_MS);
    };
    run();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [...deps, tick]);
  return [state.data, state.error, reload];
}

export function Time({ value }) {
  if (!value) return html`<span class="muted">never</span>`;
  const d = new Date(value);
  return html`<time datetime=${value}>${d.toLocaleString()}</time>`;
}

const WIPE_LABELS = { none: null, pending: 'Wipe pending', acknowledged: 'Wiped (acknowledged)', failed: 'Wipe failed' };

export function StateBadges({ device }) {
  const wipe = WIPE_LABELS[device.wipeState];
  return html`<span class="badges">
    <span class=${`badge access-${device.accessState}`}>${device.accessState}</span>
    ${wipe && html`<span class=${`badge wipe-${device.wipeState}`} data-wipe=${device.wipeState}>${wipe}</span>`}
  </span>`;
}

export const nameOf = (d) => d.friendlyName || d.deviceModel || d.deviceId;

/** A link the page follows without reloading (history API); modified clicks open normally. */
export function Link({ href, navigate, children, ...rest }) {
  const onClick = (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return html`<a href=${href} onClick=${onClick} ...${rest}>${children}</a>`;
}

/**
 * A modal confirmation (the native <dialog>: focus stays inside, Escape cancels). The caller names the device in
 * `title` and `children`; focus goes back where it was when the dialog closes.
 */
export function ConfirmDialog({ title, children, confirmLabel, onConfirm, onCancel, busy }) {
  const ref = useRef(null);
  useEffect(() => {
    const opener = document.activeElement;
    ref.current.showModal();
    return () => opener?.focus?.();
  }, []);
  const cancel = (e) => {
    e.preventDefault();
    onCancel();
  };
  return html`<dialog ref=${ref} class="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-text" onCancel=${cancel}>
    <h2 id="confirm-title">${title}</h2>
    <div id="confirm-text">${children}</div>
    <div class="actions">
      <button type="button" onClick=${onCancel}>Cancel</button>
      <button type="button" class="danger" disabled=${busy} onClick=${onConfirm}>${confirmLabel}</button>
    </div>
  </dialog>`;
}

/** A status line read out by screen readers when it changes (results of actions, errors). */
export function Status({ message, error }) {
  return html`<p class=${error ? 'status error' : 'status'} role=${error ? 'alert' : 'status'}>${message || ''}</p>`;
}

/**
 * A page's action runner, the same for every page: `run(work)` marks the page busy, shows the message `work`
 * resolves with (nothing when it resolves with undefined) or the error it threw (the API's problem detail), then
 * calls `settle` (closing a confirmation, moving focus) and reloads the page's data, whatever happened.
 */
export function useAction(reload, settle) {
  const [status, setStatus] = useState({ message: '' });
  const [busy, setBusy] = useState(false);
  async function run(work) {
    setBusy(true);
    try {
      const message = await work();
      if (message !== undefined) setStatus({ message });
    } catch (err) {
      setStatus({ message: err.message, error: true });
    } finally {
      setBusy(false);
      settle?.();
      reload();
    }
  }
  return { status, setStatus, busy, run };
}
