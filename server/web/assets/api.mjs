// The pages' one way to the server: same-origin fetch with the session cookie (never a token in the page), the CSRF
// token on every unsafe call, problem+json errors as ApiError, and a lapsed session sent back to sign in.
let csrfToken = '';

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `The server answered ${status}.`);
    this.status = status;
    this.problem = problem;
  }
}

export const signIn = () => location.assign(`/web/login?returnTo=${encodeURIComponent(location.pathname)}`);

export async function api(path, { method = 'GET', body } = {}) {
  const headers = { accept: 'application/json' };
  if (method !== 'GET') headers['x-csrf-token'] = csrfToken;
  if (body !== undefined) headers['content-type'] = 'application/json';
  // no-cache: the browser revalidates with the list's ETag, so an unchanged poll is a 304 without a body.
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin', cache: 'no-cache' });
  if (res.status === 401) {
    signIn();
    throw new ApiError(401, { detail: 'Signing in again…' });
  }
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => ({})));
  return res.status === 204 ? null : res.json();
}

let signedIn = null;

/** The session as the page may know it: who, which role, and the CSRF token (kept in this module only). */
export async function loadSession() {
  const session = await api('/web/session');
  csrfToken = session.csrfToken;
  signedIn = { user: session.user, role: session.role, tenant: session.tenant };
  return signedIn;
}

/** Who is signed in, as GET /web/session said (null before it answered): pages compare record ids with it. */
export const whoAmI = () => signedIn;

export async function signOut() {
  await api('/web/logout', { method: 'POST' }).catch(() => undefined);
  location.assign('/web/signed-out');
}
