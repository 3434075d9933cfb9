/**
 * Driving the identity provider over real HTTPS without a browser: a `fetch` for openid-client that trusts the
 * test server's certificate, and a small cookie-keeping form client that walks the sign-in pages the way a browser
 * without JavaScript would (the pages are plain forms). Browser tests proper use tests/helpers/browser.ts.
 */
import crypto from 'node:crypto';
import https from 'node:https';

type OpenIdClient = typeof import('openid-client', { with: { 'resolution-mode': 'import' } });
type Configuration = import('openid-client', { with: { 'resolution-mode': 'import' } }).Configuration;

/**
 * An authorization request as the apps make it: PKCE S256, a state, the device id, `openid offline_access mail`.
 * Answers the URL to open and what the token exchange needs.
 */
export async function pkceAuthorization(oidc: OpenIdClient, c: Configuration, params: { redirect_uri: string; device_id: string } & Record<string, string>) {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const url = oidc.buildAuthorizationUrl(c, {
    scope: 'openid offline_access mail',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    ...params,
  });
  return { url, verifier, state };
}

/** A fetch (as openid-client's `customFetch` wants it) over node:https that trusts `ca`, never following redirects. */
export function tlsFetch(ca: string) {
  return async (url: string, options: { method?: string; headers?: Record<string, string> | Headers; body?: unknown; signal?: AbortSignal }): Promise<Response> => {
    const headers = Object.fromEntries(new Headers(options.headers ?? {}).entries());
    const body = options.body === undefined || options.body === null ? undefined : Buffer.from(String(options.body));
    if (body) headers['content-length'] = String(body.length);
    return new Promise((resolve, reject) => {
      const req = https.request(url, { method: options.method ?? 'GET', headers, ca, signal: options.signal }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const h = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (Array.isArray(v)) v.forEach((x) => h.append(k, x));
            else if (v !== undefined) h.set(k, String(v));
          }
          const status = res.statusCode ?? 500;
          resolve(new Response([101, 204, 205, 304].includes(status) ? null : Buffer.concat(chunks), { status, headers: h }));
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  };
}

export interface PageResponse {
  status: number;
  location?: string;
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

/** A cookie-keeping client for the sign-in pages (one "browser"). */
export class FormClient {
  readonly cookies = new Map<string, string>();
  constructor(
    private readonly ca: string,
    private readonly origin: string,
  ) {}

  /**
   * One request with the browser's cookies. `tls` adds options of the connection, e.g. a client certificate
   * (`cert`, `key`) and `agent: false` for a fresh handshake.
   */
  request(method: string, url: string, form?: Record<string, string>, headers: Record<string, string> = {}, tls: https.RequestOptions = {}): Promise<PageResponse> {
    const target = new URL(url, this.origin);
    const body = form ? Buffer.from(new URLSearchParams(form).toString()) : undefined;
    const cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const h: Record<string, string> = { ...(cookie ? { cookie } : {}), ...(body ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(body.length), origin: this.origin } : {}), ...headers };
    return new Promise((resolve, reject) => {
      const req = https.request(target, { ...tls, method, headers: h, ca: this.ca }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          for (const line of res.headers['set-cookie'] ?? []) {
            const [pair] = line.split(';');
            const eq = pair!.indexOf('=');
            const name = pair!.slice(0, eq).trim();
            const value = pair!.slice(eq + 1).trim();
            if (/max-age=0|expires=Thu, 01 Jan 1970/i.test(line) || value === '') this.cookies.delete(name);
            else this.cookies.set(name, value);
          }
          resolve({ status: res.statusCode ?? 0, location: res.headers.location, text: Buffer.concat(chunks).toString('utf8'), headers: res.headers });
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  get(url: string) {
    return this.request('GET', url);
  }

  post(url: string, form: Record<string, string>, headers: Record<string, string> = {}) {
    return this.request('POST', url, form, headers);
  }

  /** Follows redirects on this origin until an answer that is not one, or one that leaves the origin. */
  async follow(first: PageResponse): Promise<PageResponse> {
    let res = first;
    for (let i = 0; i < 10 && res.status >= 300 && res.status < 400 && res.location; i++) {
      const next = new URL(res.location, this.origin);
      if (next.origin !== this.origin) return res;
      res = await this.get(next.toString());
    }
    return res;
  }
}

/** The hidden field `name` of the first form on a page. */
export const hiddenField = (html: string, name: string): string => {
  const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
  if (!m) throw new Error(`no hidden field ${name} on the page:\n${html.slice(0, 2000)}`);
  return m[1]!;
};

/** The form actions of a page, in order. */
export const formActions = (html: string): string[] => [...html.matchAll(/<form method="post" action="([^"]*)"/g)].map((m) => m[1]!.replace(/&amp;/g, '&'));

/** The TOTP code of `secretBase32` at `time` (RFC 6238 with SHA-1, 6 digits, 30 s), computed independently of the server. */
export function totp(secretBase32: string, time = Date.now()): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secretBase32.replace(/[\s=]/g, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g)!.map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(time / 1000 / 30)));
  const mac = crypto.createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1]! & 0xf;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

/** The key shown on the enrolment page (grouped in fours). */
export const enrolmentSecret = (html: string): string => {
  const m = /<p class="secret"><code>([A-Z2-7 ]+)<\/code>/.exec(html);
  if (!m) throw new Error('no key on the enrolment page');
  return m[1]!.replace(/ /g, '');
};
