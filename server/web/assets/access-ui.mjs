// Form pieces of the access and users pages: labelled fields, the API's field errors (problem+json `errors`) shown
// next to the form, and a text value that waits for a pause in typing.
import { html, useEffect, useState } from './vendor/preact-htm.mjs';

/** A text value that settles after a pause in typing, so each key press is not a request. */
export function useDebounced(value, ms = 300) {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(t);
  }, [value]);
  return settled;
}

/** The message of an ApiError (or any error) and its field errors, for `FormErrors`. */
export function problemOf(err) {
  return { message: err.message, fields: Array.isArray(err.problem?.errors) ? err.problem.errors : [] };
}

/**
 * A form's error: the problem's detail and each field at fault, read out when it appears. `id` lets the form's
 * controls point at it with aria-describedby.
 */
export function FormErrors({ id, error }) {
  if (!error) return html`<div id=${id}></div>`;
  return html`<div id=${id} class="form-errors" role="alert">
    <p>${error.message}</p>
    ${error.fields.length > 0 &&
    html`<ul>
      ${error.fields.map((f) => html`<li><code>${f.field}</code>: ${f.message}</li>`)}
    </ul>`}
  </div>`;
}

/** Whether the problem names this field (exactly, or a member of it). */
export const faults = (error, name) => Boolean(error?.fields.some((f) => f.field === name || f.field.startsWith(`${name}.`)));

/** A labelled input; `error` marks it invalid when the problem names `name`. */
export function TextField({ id, label, value, onInput, error, name, errorsId, hint, ...rest }) {
  const invalid = name && faults(error, name);
  const described = [hint && `${id}-hint`, invalid && errorsId].filter(Boolean).join(' ') || undefined;
  return html`<div class="field">
    <label for=${id}>${label}</label>
    <input id=${id} value=${value} onInput=${(e) => onInput(e.currentTarget.value)} aria-invalid=${invalid ? 'true' : undefined} aria-describedby=${described} ...${rest} />
    ${hint && html`<small id=${`${id}-hint`} class="hint">${hint}</small>`}
  </div>`;
}

/** A labelled select of `[value, label]` options. */
export function SelectField({ id, label, value, onChange, options, error, name, errorsId }) {
  const invalid = name && faults(error, name);
  return html`<div class="field">
    <label for=${id}>${label}</label>
    <select id=${id} value=${value} onChange=${(e) => onChange(e.currentTarget.value)} aria-invalid=${invalid ? 'true' : undefined} aria-describedby=${invalid ? errorsId : undefined}>
      ${options.map(([v, l]) => html`<option value=${v} selected=${v === value}>${l}</option>`)}
    </select>
  </div>`;
}

/** Previous / Next over the server's forward-only cursors: `cursors` are those of the pages before this one. */
export function CursorPager({ cursors, setCursors, nextCursor }) {
  return html`<nav class="pager" aria-label="Pages">
    <button type="button" disabled=${cursors.length === 0} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous</button>
    <button type="button" disabled=${!nextCursor} onClick=${() => setCursors([...cursors, nextCursor])}>Next</button>
  </nav>`;
}

/** Milliseconds since the epoch (access rules) or an ISO time, as a local time. */
export function When({ value }) {
  if (value === undefined || value === null) return html`<span class="muted">—</span>`;
  const d = new Date(value);
  return html`<time datetime=${d.toISOString()}>${d.toLocaleString()}</time>`;
}
