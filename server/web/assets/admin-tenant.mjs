// The admin center's tenant and regions, read-only (GET /admin/v1/tenant, GET /admin/v1/regions): moving a tenant to
// another region is the CLI's export and import, so no action is offered here.
import { html } from './vendor/preact-htm.mjs';
import { api } from './api.mjs';
import { Status, Time, usePoll } from './ui.mjs';

export function TenantPage() {
  const [data, error] = usePoll(async () => {
    const [tenant, regions] = await Promise.all([api('/admin/v1/tenant'), api('/admin/v1/regions')]);
    return { tenant, regions };
  }, []);
  return html`<section aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Organization</h1>
    ${error && html`<${Status} error message=${error.message} />`}
    ${data === undefined
      ? html`<p>Loading…</p>`
      : html`<dl class="fields" data-section="tenant">
            <div><dt>Name</dt><dd data-field="tenantName">${data.tenant.name}</dd></div>
            <div><dt>Tenant ID</dt><dd>${data.tenant.id}</dd></div>
            <div><dt>Region</dt><dd data-field="tenantRegion">${data.tenant.region}</dd></div>
            <div><dt>Created</dt><dd><${Time} value=${data.tenant.createdAt} /></dd></div>
          </dl>
          <h2>Regions</h2>
          <p class="lead">The regions this server knows of. Moving the organization to another region is done with the command line (<code>npm run admin -- tenant export</code> and <code>tenant import</code>).</p>
          <table class="devices records regions">
            <caption class="visually-hidden">Regions</caption>
            <thead><tr><th scope="col">Region</th><th scope="col">Address</th><th scope="col">This organization's</th><th scope="col">This server's</th></tr></thead>
            <tbody>
              ${data.regions.regions.map(
                (r) => html`<tr key=${r.name} data-region=${r.name}>
                  <td data-label="Region">${r.name}</td>
                  <td data-label="Address">${r.baseUrl ?? '—'}</td>
                  <td data-label="This organization's">${r.tenant ? 'Yes' : 'No'}</td>
                  <td data-label="This server's">${r.node ? 'Yes' : 'No'}</td>
                </tr>`,
              )}
            </tbody>
          </table>`}
  </section>`;
}
