// The pages' entry: reads the session, then shows the admin center (under /admin/) or "My devices"
// (/account/devices). Client-side routes use the history API; the server serves the same shell for each.
import { html, render, useEffect, useState } from './vendor/preact-htm.mjs';
import { loadSession, signOut } from './api.mjs';
import { Link } from './ui.mjs';
import { DeviceDetail, DeviceInventory } from './admin-devices.mjs';
import { MyDevices } from './my-devices.mjs';
import { ACCESS_PAGES } from './admin-pages-access.mjs';
import { RECORD_PAGES } from './admin-pages-records.mjs';

function usePath() {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const onPop = () => setPath(location.pathname);
    addEventListener('popstate', onPop);
    return () => removeEventListener('popstate', onPop);
  }, []);
  const navigate = (to) => {
    history.pushState(null, '', to);
    setPath(to);
  };
  return [path, navigate];
}

/**
 * The admin center's other pages, each `{ path: RegExp, nav?: {href, label}, title, render(match, navigate) }`, kept
 * in one registry per area so areas are added without touching this file.
 */
const PAGES = [...ACCESS_PAGES, ...RECORD_PAGES];

/** The admin center's pages by path; the device list is the home page. */
function adminPage(path, navigate) {
  const detail = /^\/admin\/devices\/([^/]+)$/.exec(path);
  if (detail) return { title: 'Device', body: html`<${DeviceDetail} id=${decodeURIComponent(detail[1])} navigate=${navigate} />` };
  for (const page of PAGES) {
    const match = page.path.exec(path);
    if (match) return { title: page.title, body: page.render(match, navigate) };
  }
  return { title: 'Devices', body: html`<${DeviceInventory} navigate=${navigate} />` };
}

function App({ session }) {
  const [path, navigate] = usePath();
  const admin = path === '/admin' || path.startsWith('/admin/');
  const page = admin ? adminPage(path, navigate) : { title: 'My devices', body: html`<${MyDevices} />` };
  useEffect(() => {
    document.title = `${page.title} · ${admin ? 'Pigeon admin center' : 'Pigeon'}`;
  }, [page.title, admin]);
  const nav = [
    ...(admin ? [{ href: '/admin/devices', label: 'Devices', current: path === '/admin' || path === '/admin/' || path.startsWith('/admin/devices') }] : []),
    ...(admin ? PAGES.filter((p) => p.nav).map((p) => ({ href: p.nav.href, label: p.nav.label, current: path.startsWith(p.nav.href) })) : []),
    { href: '/account/devices', label: 'My devices', current: !admin },
    ...(!admin && session.role === 'admin' ? [{ href: '/admin/', label: 'Admin center' }] : []),
  ];
  return html`<a class="skip" href="#main">Skip to content</a>
    <header class="top">
      <p class="brand">${admin ? 'Pigeon admin center' : 'Pigeon'}${session.tenant?.name ? html` <span class="tenant">· ${session.tenant.name}</span>` : ''}</p>
      <nav aria-label="Main">
        <ul>
          ${nav.map(
            (n) => html`<li>${admin && n.href.startsWith('/admin') ? html`<${Link} href=${n.href} navigate=${navigate} aria-current=${n.current ? 'page' : undefined}>${n.label}</${Link}>` : html`<a href=${n.href} aria-current=${n.current ? 'page' : undefined}>${n.label}</a>`}</li>`,
          )}
        </ul>
      </nav>
      <div class="who">
        <span>${session.user.displayName || session.user.username}</span>
        <button type="button" onClick=${signOut}>Sign out</button>
      </div>
    </header>
    <main id="main">${page.body}</main>`;
}

async function start() {
  const root = document.getElementById('app');
  try {
    const session = await loadSession();
    root.textContent = '';
    render(html`<${App} session=${session} />`, root);
  } catch (err) {
    if (err.status !== 401) root.querySelector('main').textContent = `The page could not start: ${err.message}`;
  }
}

start();
