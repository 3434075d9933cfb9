/**
 * Access tokens: JWTs signed with Ed25519. Verification pins everything a forger could choose — the algorithm
 * (`EdDSA` only: no `none`, no HMAC confusion), the key, `iss`, `aud`, the header `typ` (`at+jwt`, RFC 9068, so an
 * ID token or other JWT is not accepted), and requires `exp`.
 *
 * Verified tokens are remembered (a bounded map keyed by the exact token text): an app presents the same token on
 * every call for an hour, and the Ed25519 check was the largest single cost of a sync poll (bench, scenario 1). What
 * a cached token skips is only what cannot change for the same bytes — signature, header and the fixed claims; the
 * time checks (`exp`, `iat`, `nbf`) run on every call against the clock, and everything the server can revoke
 * (session version, disabled user, device binding and state) is checked by the callers per request as before.
 */
import crypto from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import type { KeyMaterial } from './keys';
import type { Clock } from '../clock';
import { DEFAULT_REGION, type Role } from '../store/types';

export interface AccessClaims {
  sub: string;
  tid: string;
  did?: string;
  scope: string;
  /** The user's session version at issue time; a password change or "revoke sessions" moves it on. */
  sv: number;
  /** The refresh-token family (sign-in) the token belongs to, so RFC 7009 revocation can find it. */
  sid: string;
  role: Role;
  /**
   * The region whose nodes serve the mailbox (README, "Regions"): set on every token issued since regions; a token
   * without it is judged as the verifying node's region's.
   */
  rgn?: string;
  /**
   * Confirmation (RFC 7800): the key the token is bound to. `jkt` is the RFC 7638 SHA-256 thumbprint of a DPoP key
   * (RFC 9449 §6.1): such a token is honoured only with the `DPoP` scheme and a proof signed by that key, never as a
   * bearer token (server/auth/authenticate.ts). Any other confirmation member binds it to something this API cannot
   * check, so it is refused altogether.
   */
  cnf?: { jkt?: string };
  jti: string;
  iat: number;
  exp: number;
  nbf?: number;
}

export interface AccessTokenOptions {
  keys: KeyMaterial;
  clock: Clock;
  issuer: string;
  audience: string;
  ttlSeconds: number;
  /** The region this node serves (`default` when not given): every token it issues carries it (`rgn`). */
  region?: string;
  /** Verified tokens remembered at most (oldest forgotten first); 0 turns the memory off. */
  verifiedCacheSize?: number;
}

export class InvalidAccessToken extends Error {}

/** Clock skew accepted between the issuer and this server, on `exp` and on `iat` (README, token section). */
export const CLOCK_TOLERANCE_SECONDS = 5;

/** About one hour of distinct tokens of a busy server; each entry is a token's text and its claims (~1 KB). */
export const VERIFIED_CACHE_SIZE = 10_000;

/** The checks that depend on the time, with jose's semantics (whole seconds, the same tolerance). */
function checkTimes(claims: AccessClaims, nowMs: number): void {
  const now = Math.floor(nowMs / 1000);
  if (claims.exp <= now - CLOCK_TOLERANCE_SECONDS) throw new InvalidAccessToken('expired');
  if (claims.nbf !== undefined && claims.nbf > now + CLOCK_TOLERANCE_SECONDS) throw new InvalidAccessToken('invalid');
  // jose checks `exp` with the tolerance but never an `iat` from the future: a token "issued" later than now plus
  // the same tolerance comes from a clock (or a forger) we should not trust.
  if (claims.iat > nowMs / 1000 + CLOCK_TOLERANCE_SECONDS) throw new InvalidAccessToken('issued in the future');
}

/**
 * `cnf`, when present, must be an object, and its `jkt` (when present) a SHA-256 thumbprint in base64url: anything
 * else is refused rather than read loosely, so a malformed binding can never pass for "not bound".
 */
function wellFormedConfirmation(cnf: unknown): boolean {
  if (cnf === undefined) return true;
  if (typeof cnf !== 'object' || cnf === null || Array.isArray(cnf)) return false;
  const { jkt } = cnf as { jkt?: unknown };
  return jkt === undefined || (typeof jkt === 'string' && /^[A-Za-z0-9_-]{43}$/.test(jkt));
}

export function createAccessTokens(opts: AccessTokenOptions) {
  const { keys, clock, issuer, audience, ttlSeconds } = opts;
  const region = opts.region ?? DEFAULT_REGION;
  const capacity = opts.verifiedCacheSize ?? VERIFIED_CACHE_SIZE;
  const verified = new Map<string, Readonly<AccessClaims>>();
  const stats = { hits: 0, misses: 0 };

  function remember(token: string, claims: Readonly<AccessClaims>): void {
    if (capacity <= 0) return;
    // Insertion order is age: past capacity the oldest entry goes (a token in use is simply verified again).
    if (verified.size >= capacity) verified.delete(verified.keys().next().value!);
    verified.set(token, claims);
  }

  return {
    ttlSeconds,
    /** Cache hits and misses so far (tests, metrics). */
    stats: () => ({ ...stats, size: verified.size }),
    /** Mints a token; with `cnf.jkt` it is DPoP-bound (the built-in IdP mints bound tokens with the same claim). */
    async issue(claims: Omit<AccessClaims, 'jti' | 'iat' | 'exp' | 'rgn' | 'cnf'> & { cnf?: { jkt: string } }): Promise<string> {
      const iat = Math.floor(clock.now() / 1000);
      const body: Record<string, unknown> = { tid: claims.tid, scope: claims.scope, sv: claims.sv, sid: claims.sid, role: claims.role, rgn: region };
      if (claims.did) body.did = claims.did;
      if (claims.cnf) body.cnf = { jkt: claims.cnf.jkt };
      return new SignJWT(body)
        .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: keys.kid })
        .setIssuer(issuer)
        .setAudience(audience)
        .setSubject(claims.sub)
        .setJti(crypto.randomUUID())
        .setIssuedAt(iat)
        .setExpirationTime(iat + ttlSeconds)
        .sign(keys.signingKey);
    },
    async verify(token: string): Promise<Readonly<AccessClaims>> {
      const known = verified.get(token);
      if (known) {
        stats.hits++;
        try {
          checkTimes(known, clock.now());
        } catch (err) {
          verified.delete(token);
          throw err;
        }
        return known;
      }
      stats.misses++;
      let claims: Readonly<AccessClaims>;
      try {
        const { payload } = await jwtVerify(token, keys.publicKey, {
          algorithms: ['EdDSA'],
          issuer,
          audience,
          typ: 'at+jwt',
          requiredClaims: ['exp', 'iat', 'sub', 'jti'],
          currentDate: new Date(clock.now()),
          clockTolerance: CLOCK_TOLERANCE_SECONDS,
        });
        if (
          typeof payload.tid !== 'string' ||
          typeof payload.sv !== 'number' ||
          typeof payload.scope !== 'string' ||
          (payload.rgn !== undefined && typeof payload.rgn !== 'string') ||
          !wellFormedConfirmation(payload.cnf)
        ) {
          throw new InvalidAccessToken('missing claims');
        }
        claims = Object.freeze(payload as unknown as AccessClaims);
        checkTimes(claims, clock.now());
      } catch (err) {
        if (err instanceof InvalidAccessToken) throw err;
        if (err instanceof joseErrors.JOSEError || err instanceof TypeError) {
          throw new InvalidAccessToken(err instanceof joseErrors.JWTExpired ? 'expired' : 'invalid');
        }
        throw err;
      }
      remember(token, claims);
      return claims;
    },
  };
}

export type AccessTokens = ReturnType<typeof createAccessTokens>;
