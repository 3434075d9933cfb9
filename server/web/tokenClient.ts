/**
 * The web client's calls to the identity provider's token and revocation endpoints, made in process: the request is
 * handed to the provider (IdentityProvider.handle) with the browser's own socket (its address for the sign-in log
 * and conditional access, and TLS), and the answer is captured instead of sent. No network call to ourselves, so no
 * trust in our own certificate or proxy is needed, and the provider judges it exactly as any client's request.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import type { IdentityProvider } from '../identity/provider';
import { WEB_CLIENT_ID, webClientSecret } from './client';
import type { TokenBudget } from './tokenBudget';

/** Just enough of a ServerResponse for Koa (which oidc-provider runs on) to write one small answer into. */
class CapturedResponse extends EventEmitter {
  statusCode = 200;
  statusMessage = '';
  headersSent = false;
  writableEnded = false;
  finished = false;
  private readonly headers = new Map<string, number | string | string[]>();
  private readonly chunks: Buffer[] = [];
  constructor(private readonly done: (status: number, body: string) => void) {
    super();
  }
  setHeader(name: string, value: number | string | string[]) {
    this.headers.set(name.toLowerCase(), value);
    return this;
  }
  getHeader(name: string) {
    return this.headers.get(name.toLowerCase());
  }
  getHeaders() {
    return Object.fromEntries(this.headers);
  }
  getHeaderNames() {
    return [...this.headers.keys()];
  }
  hasHeader(name: string) {
    return this.headers.has(name.toLowerCase());
  }
  removeHeader(name: string) {
    this.headers.delete(name.toLowerCase());
  }
  writeHead(status: number) {
    this.statusCode = status;
    return this;
  }
  write(chunk: string | Buffer) {
    this.chunks.push(Buffer.from(chunk));
    return true;
  }
  end(chunk?: string | Buffer) {
    if (chunk !== undefined && chunk !== null) this.write(chunk);
    this.headersSent = this.writableEnded = this.finished = true;
    this.done(this.statusCode, Buffer.concat(this.chunks).toString('utf8'));
    this.emit('finish');
    return this;
  }
}

export interface TokenAnswer {
  status: number;
  body: Record<string, unknown>;
  /** A 429: the seconds until the address's token budget allows another call. */
  retryAfter?: number;
}

export type ProviderPoster = (via: IncomingMessage, path: string, form: Record<string, string>) => Promise<TokenAnswer>;

/**
 * Posts a form as the web client (its id and derived secret added) to one of the provider's endpoints. Each call is
 * counted against `budget`, the token endpoint's per-address limit, as the same call made directly would be: an
 * exchange or refresh over the limit is answered 429 here without reaching the provider. A revocation is counted
 * but never refused: signing out must always end the sign-in, and each one needed a counted exchange to exist.
 */
export function providerPoster(idp: Pick<IdentityProvider, 'handle'>, serverSecret: Buffer, budget?: TokenBudget): ProviderPoster {
  const secret = webClientSecret(serverSecret);
  return async (via, path, form) => {
    const wait = budget ? await budget.spend(via) : 0;
    if (wait > 0 && path === '/oauth2/token') {
      return { status: 429, body: { error: 'rate_limited', error_description: `Too many token requests from this address; retry after ${wait} s.` }, retryAfter: wait };
    }
    return post(via, path, form);
  };

  function post(via: IncomingMessage, path: string, form: Record<string, string>): Promise<TokenAnswer> {
    return new Promise((resolve, reject) => {
      const raw = Buffer.from(new URLSearchParams({ ...form, client_id: WEB_CLIENT_ID, client_secret: secret }).toString());
      const headers = {
        host: via.headers.host ?? '',
        'content-type': 'application/x-www-form-urlencoded',
        'content-length': String(raw.length),
        accept: 'application/json',
        ...(via.headers['user-agent'] ? { 'user-agent': via.headers['user-agent'] } : {}),
        ...(via.headers['x-forwarded-for'] ? { 'x-forwarded-for': via.headers['x-forwarded-for'] } : {}),
        ...(via.headers['x-forwarded-proto'] ? { 'x-forwarded-proto': via.headers['x-forwarded-proto'] } : {}),
      };
      const req = Object.assign(Readable.from([raw]), {
        headers,
        rawHeaders: Object.entries(headers).flat(),
        method: 'POST',
        url: path,
        httpVersion: '1.1',
        httpVersionMajor: 1,
        httpVersionMinor: 1,
        socket: via.socket,
        connection: via.socket,
      });
      const res = new CapturedResponse((status, text) => {
        try {
          resolve({ status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} });
        } catch (err) {
          reject(err);
        }
      });
      try {
        idp.handle(req as unknown as IncomingMessage, res as never);
      } catch (err) {
        reject(err);
      }
    });
  }
}
