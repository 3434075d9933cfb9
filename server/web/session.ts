/**
 * The web pages' session: a sealed cookie `__Host-pigeon-web` (Secure, HttpOnly, SameSite=Strict, Path=/), a JWE
 * (`dir` + `A256GCM`) under a key derived from the server secret, so any node opens it and nothing is stored
 * server-side. It holds the tokens the server got for the browser (backend-for-frontend: the page's script never
 * sees them), who the user is and the CSRF token the page must echo on unsafe calls.
 *
 * The sign-in in progress (PKCE verifier, state, where to return) rides in a second sealed cookie for ten minutes.
 */
import crypto from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Response } from 'express';
import { CompactEncrypt, compactDecrypt } from 'jose';

export const SESSION_COOKIE = '__Host-pigeon-web';
export const LOGIN_COOKIE = '__Host-pigeon-web-login';
/** Ten minutes to finish the sign-in pages. */
export const LOGIN_TTL_MS = 10 * 60_000;

export interface WebSession {
  accessToken: string;
  refreshToken: string;
  /** ms since the epoch: the access token's expiry. */
  expiresAt: number;
  /** The refresh token's expiry, which is also the cookie's. */
  refreshExpiresAt: number;
  userId: string;
  role: string;
  csrf: string;
}

export interface LoginState {
  verifier: string;
  state: string;
  returnTo: string;
  expiresAt: number;
}

export interface Sealer {
  seal(value: object): Promise<string>;
  open<T>(jwe: string): Promise<T | undefined>;
}

/** A purpose-bound key: the session cookie can never be opened with (or mistaken for) any other derived key. */
export function createSealer(serverSecret: Buffer): Sealer {
  const key = new Uint8Array(crypto.hkdfSync('sha256', serverSecret, Buffer.alloc(0), 'pigeon web: session cookie v1', 32));
  return {
    seal: (value) => new CompactEncrypt(Buffer.from(JSON.stringify(value))).setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).encrypt(key),
    async open<T>(jwe: string) {
      try {
        const { plaintext } = await compactDecrypt(jwe, key, { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] });
        return JSON.parse(Buffer.from(plaintext).toString('utf8')) as T;
      } catch {
        return undefined; // tampered, from another secret, or not ours: as good as no cookie
      }
    },
  };
}

/** One cookie's value from the Cookie header (no cookie library: two names, both ours, base64url-safe values). */
export function cookieValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const header = headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Sets a `__Host-` cookie: the prefix makes the browser insist on Secure, Path=/ and no Domain. Strict for the
 * session (no cross-site request ever carries it); Lax for the short sign-in cookie, which must survive the identity
 * provider's redirect back should the provider ever live on another site.
 */
export function setCookie(res: Response, name: string, value: string, o: { maxAgeMs: number; sameSite: 'Strict' | 'Lax' }): void {
  const attributes = `Path=/; Secure; HttpOnly; SameSite=${o.sameSite}; Max-Age=${Math.max(0, Math.floor(o.maxAgeMs / 1000))}`;
  res.append('Set-Cookie', `${name}=${value}; ${attributes}`);
}

export function clearCookie(res: Response, name: string, sameSite: 'Strict' | 'Lax' = 'Strict'): void {
  setCookie(res, name, '', { maxAgeMs: 0, sameSite });
}

export const randomToken = (bytes = 32) => crypto.randomBytes(bytes).toString('base64url');
