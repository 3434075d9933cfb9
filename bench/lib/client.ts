/** What an app does before it syncs: sign in bound to a device, register it, find the inbox; and paging a sync. */
import { expectStatus, json, type Target } from './http';

export interface SignedIn {
  deviceId: string;
  accessToken: string;
  refreshToken: string;
  /** Authorization and X-Device-Id: what every /v1 call of this device carries. */
  headers: Record<string, string>;
  inboxId: string;
  /** `/v1/folders/<inbox>/items/sync` */
  inboxSync: string;
}

export const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

export async function signIn(target: Target, user: { username: string; password: string }, deviceId: string): Promise<SignedIn> {
  const form = new URLSearchParams({ grant_type: 'password', client_id: 'pigeon-app', username: user.username, password: user.password, device_id: deviceId });
  const token = json<{ access_token: string; refresh_token: string }>(
    await expectStatus(target, { method: 'POST', path: '/oauth2/token', headers: FORM, body: form.toString() }, 200),
  );
  const headers = { authorization: `Bearer ${token.access_token}`, 'x-device-id': deviceId };
  await expectStatus(target, { method: 'POST', path: '/v1/devices', headers: { ...headers, 'content-type': 'application/json' }, body: '{"friendlyName":"bench"}' }, [200, 201]);
  const folders = json<{ created: Array<{ id: string; kind: string }> }>(await expectStatus(target, { method: 'GET', path: '/v1/folders/sync', headers }, 200));
  const inboxId = folders.created.find((f) => f.kind === 'inbox')!.id;
  return { deviceId, accessToken: token.access_token, refreshToken: token.refresh_token, headers, inboxId, inboxSync: `/v1/folders/${inboxId}/items/sync` };
}

export interface SyncPage {
  token: string;
  moreAvailable: boolean;
  created: Array<{ id: string }>;
  updated: Array<{ id: string }>;
  removed: Array<{ id: string; reason: string }>;
}

export const syncPath = (s: SignedIn, q: { token?: string; maxChanges?: number; loadMore?: boolean }) => {
  const params = new URLSearchParams();
  if (q.token) params.set('token', q.token);
  if (q.maxChanges) params.set('maxChanges', String(q.maxChanges));
  if (q.loadMore) params.set('loadMore', '1');
  return `${s.inboxSync}?${params.toString()}`;
};

/** Applies pages until the server has nothing more; the final token and the ids held. */
export async function syncToEnd(target: Target, s: SignedIn, from?: string): Promise<{ token: string; held: Set<string> }> {
  const held = new Set<string>();
  let token = from;
  for (;;) {
    const page = json<SyncPage>(await expectStatus(target, { method: 'GET', path: syncPath(s, { token, maxChanges: 512 }), headers: s.headers }, 200));
    for (const r of page.removed) held.delete(r.id);
    for (const c of page.created) held.add(c.id);
    token = page.token;
    if (!page.moreAvailable) return { token, held };
  }
}
