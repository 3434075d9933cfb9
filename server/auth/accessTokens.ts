/**
 * Access tokens: JWTs signed with Ed25519. Verification pins everything a forger could choose — the algorithm
 * (`EdDSA` only: no `none`, no HMAC confusion), the key, `iss`, `aud`, the header `typ` (`at+jwt`, RFC 9068, so an
 * ID token or other JWT is not accepted), and requires `exp`.
 */
import crypto from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import type { KeyMaterial } from './keys';
import type { Clock } from '../clock';
import type { Role } from '../store/types';

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
  jti: string;
  iat: number;
  exp: number;
}

export interface AccessTokenOptions {
  keys: KeyMaterial;
  clock: Clock;
  issuer: string;
  audience: string;
  ttlSeconds: number;
}

export class InvalidAccessToken extends Error {}

/** Clock skew accepted between the issuer and this server, on `exp` and on `iat` (README, token section). */
export const CLOCK_TOLERANCE_SECONDS = 5;

export function createAccessTokens(opts: AccessTokenOptions) {
  const { keys, clock, issuer, audience, ttlSeconds } = opts;
  return {
    ttlSeconds,
    async issue(claims: Omit<AccessClaims, 'jti' | 'iat' | 'exp'>): Promise<string> {
      const iat = Math.floor(clock.now() / 1000);
      const body: Record<string, unknown> = { tid: claims.tid, scope: claims.scope, sv: claims.sv, sid: claims.sid, role: claims.role };
      if (claims.did) body.did = claims.did;
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
    async verify(token: string): Promise<AccessClaims> {
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
        if (typeof payload.tid !== 'string' || typeof payload.sv !== 'number' || typeof payload.scope !== 'string') {
          throw new InvalidAccessToken('missing claims');
        }
        // jose checks `exp` with the tolerance but never an `iat` from the future: a token "issued" later than now
        // plus the same tolerance comes from a clock (or a forger) we should not trust.
        if ((payload.iat as number) > clock.now() / 1000 + CLOCK_TOLERANCE_SECONDS) throw new InvalidAccessToken('issued in the future');
        return payload as unknown as AccessClaims;
      } catch (err) {
        if (err instanceof InvalidAccessToken) throw err;
        if (err instanceof joseErrors.JOSEError || err instanceof TypeError) {
          throw new InvalidAccessToken(err instanceof joseErrors.JWTExpired ? 'expired' : 'invalid');
        }
        throw err;
      }
    },
  };
}

export type AccessTokens = ReturnType<typeof createAccessTokens>;
