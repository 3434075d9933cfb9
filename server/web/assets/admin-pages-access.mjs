// Admin center pages of this area (access and users), registered in app.mjs (see PAGES there for the entry shape):
// device access rules and the default, the access configuration (conditional-access and app protection policies,
// named locations, groups), What If, and users.
import { html } from './vendor/preact-htm.mjs';
import { AccessRules } from './admin-access-rules.mjs';
import { COLLECTIONS, CollectionItem, CollectionList } from './admin-policies.mjs';
import { WhatIf } from './admin-what-if.mjs';
import { NewUser, UserDetail, UserList } from './admin-users.mjs';

const NAV = { policies: 'Conditional access', appProtectionPolicies: 'App protection' };

/** Each collection's list, its "new" page and one entry's page; the two kinds of policy are in the main navigation. */
const collectionPages = Object.entries(COLLECTIONS).flatMap(([kind, c]) => {
  const base = c.base.replace(/\//g, '\\/');
  return [
    {
      path: new RegExp(`^${base}\\/?$`),
      ...(NAV[kind] ? { nav: { href: c.base, label: NAV[kind] } } : {}),
      title: c.title,
      render: (_m, navigate) => html`<${CollectionList} key=${kind} kind=${kind} navigate=${navigate} />`,
    },
    { path: new RegExp(`^${base}\\/new$`), title: `New ${c.singular}`, render: (_m, navigate) => html`<${CollectionItem} key=${`${kind}-new`} kind=${kind} id=${null} navigate=${navigate} />` },
    {
      path: new RegExp(`^${base}\\/([^/]+)$`),
      title: c.title,
      render: (m, navigate) => html`<${CollectionItem} key=${`${kind}-${m[1]}`} kind=${kind} id=${decodeURIComponent(m[1])} navigate=${navigate} />`,
    },
  ];
});

export const ACCESS_PAGES = [
  { path: /^\/admin\/access-rules\/?$/, nav: { href: '/admin/access-rules', label: 'Access rules' }, title: 'Access rules', render: () => html`<${AccessRules} />` },
  ...collectionPages,
  { path: /^\/admin\/what-if\/?$/, nav: { href: '/admin/what-if', label: 'What If' }, title: 'What If', render: (_m, navigate) => html`<${WhatIf} navigate=${navigate} />` },
  { path: /^\/admin\/users\/?$/, nav: { href: '/admin/users', label: 'Users' }, title: 'Users', render: (_m, navigate) => html`<${UserList} navigate=${navigate} />` },
  { path: /^\/admin\/users\/new$/, title: 'New user', render: (_m, navigate) => html`<${NewUser} navigate=${navigate} />` },
  { path: /^\/admin\/users\/([^/]+)$/, title: 'User', render: (m, navigate) => html`<${UserDetail} key=${m[1]} id=${decodeURIComponent(m[1])} navigate=${navigate} />` },
];
