// Admin center pages of this area, registered in app.mjs (see PAGES there for the entry shape): the records —
// sign-in log, audit log, diagnostics incidents by ID, and the tenant with its regions.
import { html } from './vendor/preact-htm.mjs';
import { SignInLog } from './admin-signins.mjs';
import { AuditLog } from './admin-audit.mjs';
import { DiagnosticsLookup } from './admin-diagnostics.mjs';
import { TenantPage } from './admin-tenant.mjs';

export const RECORD_PAGES = [
  { path: /^\/admin\/sign-ins\/?$/, nav: { href: '/admin/sign-ins', label: 'Sign-ins' }, title: 'Sign-ins', render: () => html`<${SignInLog} />` },
  { path: /^\/admin\/audit\/?$/, nav: { href: '/admin/audit', label: 'Audit log' }, title: 'Audit log', render: () => html`<${AuditLog} />` },
  {
    path: /^\/admin\/diagnostics(?:\/([^/]+))?\/?$/,
    nav: { href: '/admin/diagnostics', label: 'Diagnostics' },
    title: 'Diagnostics',
    render: (match, navigate) => html`<${DiagnosticsLookup} id=${match[1] ? decodeURIComponent(match[1]) : undefined} navigate=${navigate} />`,
  },
  { path: /^\/admin\/tenant\/?$/, nav: { href: '/admin/tenant', label: 'Organization' }, title: 'Organization', render: () => html`<${TenantPage} />` },
];
