/** The identity provider's stylesheet, served at /idp/static/style.css (a module, so the build carries it). */
export const IDENTITY_STYLESHEET = `/* The identity provider's pages: readable on a phone, contrast above WCAG AA, visible focus. */
:root { color-scheme: light; --ink: #1b1f24; --muted: #4a5360; --accent: #0b57d0; --error: #a50e0e; --line: #c4c9d0; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: #f3f5f8; }
.card { max-width: 26rem; margin: 2rem auto; padding: 1.5rem; background: #fff; border: 1px solid var(--line); border-radius: 8px; }
@media (max-width: 30rem) { .card { margin: 0; border: 0; border-radius: 0; min-height: 100vh; } }
.org { margin: 0 0 .25rem; color: var(--muted); font-weight: 600; }
h1 { margin: 0 0 1rem; font-size: 1.5rem; }
label { display: block; margin: 1rem 0 .25rem; font-weight: 600; }
input[type=text], input[type=password] { width: 100%; padding: .6rem .7rem; font: inherit; border: 1px solid #6b7380; border-radius: 4px; }
button { margin-top: 1.25rem; width: 100%; padding: .7rem; font: inherit; font-weight: 600; color: #fff; background: var(--accent); border: 0; border-radius: 4px; cursor: pointer; }
button.secondary { color: var(--accent); background: #fff; border: 1px solid var(--accent); margin-top: .75rem; }
:focus-visible { outline: 3px solid #f2a900; outline-offset: 2px; }
.error { color: var(--error); font-weight: 600; }
.small { font-size: .9rem; color: var(--muted); }
.secret code { font-size: 1.15rem; letter-spacing: .05em; }
.codes { columns: 2; padding-left: 1.2rem; }
a { color: var(--accent); }
`;
