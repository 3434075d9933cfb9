/**
 * The OAuth 2.0 grants (RFC 6749): `password` and `refresh_token`, rotation with reuse detection, revocation.
 *
 * Refresh tokens are `prt_<id>.<mac>`: `mac` is an HMAC of the id under the server secret, and only a SHA-256 of the
 * whole token is stored. A forged token is rejected without a lookup, a stolen database yields no usable token, and
 * the server can re-derive a token it issued from its id — which is what lets a retry of the just-rotated token
 * (a response lost on a mobile network) receive the *same* successor instead of tripping reuse detection.
 */
import crypto from 'node:crypto';
import { oauthErrors } from '../errors';
import { newId } from '../ids';
import type { Clock } from '../clock';
import type { AccessService } from '../access/service';
import type { Store, User, RefreshTokenRecord } from '../store/types';
import type { AccessTokens } from '../auth/accessTokens';
import { verifyPassword } from './passwords';

export const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;

export interface TokenResponse {
  wipe?: { scope: 'account' };
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  refresh_token: string;
  refresh_token_expires_in: number;
  scope: string;
}

export interface AuthServiceOptions {
  store: Store;
  clock: Clock;
  accessTokens: AccessTokens;
  serverSecret: Buffer;
  refreshTtlSeconds: number;
  refreshRetryGraceSeconds: number;
  clients: string[];
  passwordGrant: boolean;
  /**
   * Device rules for device-bound grants: a blocked or wiped device gets no tokens (`refuse`), and a device with a
   * pending wipe still gets them but learns of the wipe (`wipe`), even when its access token had expired.
   */
  deviceCheck?: (userId: string, deviceId: string) => Promise<{ wipe?: { scope: 'account' }; refuse?: string }>;
  /** Conditional access at issuance and refresh (server/access/service.ts); refusals become invalid_grant. */
  access?: AccessService;
}

/** Where a token request came from, for conditional access (named locations, the platform). */
export interface GrantRequestContext {
  ip?: string;
  userAgent?: string;
}

function scopesFor(user: User): string[] {
  return user.role === 'admin' ? ['mail', 'admin'] : ['mail'];
}

export function createAuthService(opts: AuthServiceOptions) {
  const { store, clock, accessTokens } = opts;

  const mac = (id: string) => crypto.createHmac('sha256', opts.serverSecret).update(`refresh:${id}`).digest('base64url');
  const tokenFor = (id: string) => `prt_${id}.${mac(id)}`;
  const hash = (token: string) => crypto.createHash('sha256').update(token).digest();

  /** Parses and checks the MAC; undefined for anything this server did not issue. */
  function idOf(token: string): string | undefined {
    const m = /^prt_([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) return undefined;
    const expected = Buffer.from(mac(m[1]!));
    const given = Buffer.from(m[2]!);
    return given.length === expected.length && crypto.timingSafeEqual(given, expected) ? m[1] : undefined;
  }

  function checkClient(clientId: unknown): string {
    if (typeof clientId !== 'string' || clientId === '') throw oauthErrors.invalidRequest('client_id is required');
    if (!opts.clients.includes(clientId)) throw oauthErrors.invalidClient('unknown client_id');
    return clientId;
  }

  function checkDeviceId(deviceId: unknown): string | null {
    if (deviceId === undefined || deviceId === '') return null;
    if (typeof deviceId !== 'string' || !DEVICE_ID_PATTERN.test(deviceId)) {
      throw oauthErrors.invalidRequest('device_id must be 16 to 64 characters of A-Z, a-z, 0-9, _ and -');
    }
    return deviceId;
  }

  function grantedScope(user: User, requested: unknown): string {
    const allowed = scopesFor(user);
    if (requested === undefined || requested === '') return allowed.join(' ');
    if (typeof requested !== 'string') throw oauthErrors.invalidRequest('scope must be a string');
    const wanted = requested.split(' ').filter(Boolean);
    const extra = wanted.filter((s) => !allowed.includes(s));
    if (extra.length) throw oauthErrors.invalidScope(`scope not allowed: ${extra.join(' ')}`);
    return [...new Set(wanted)].join(' ');
  }

  async function checkDevice(user: User, deviceId: string | null, familyId?: string): Promise<{ wipe?: { scope: 'account' } }> {
    if (deviceId === null || !opts.deviceCheck) return {};
    const verdict = await opts.deviceCheck(user.id, deviceId);
    if (verdict.refuse) {
      if (familyId) await store.refreshTokens.revokeFamily(familyId, verdict.refuse, clock.now());
      throw oauthErrors.invalidGrant(verdict.refuse);
    }
    return verdict.wipe ? { wipe: verdict.wipe } : {};
  }

  async function respond(user: User, rec: Pick<RefreshTokenRecord, 'id' | 'familyId' | 'deviceId' | 'scope' | 'expiresAt'>): Promise<TokenResponse> {
    const device = await checkDevice(user, rec.deviceId, rec.familyId);
    const access = await accessTokens.issue({
      sub: user.id,
      tid: user.tenantId,
      did: rec.deviceId ?? undefined,
      scope: rec.scope,
      sv: user.sessionVersion,
      sid: rec.familyId,
      role: user.role,
    });
    return {
      ...device,
      access_token: access,
      token_type: 'Bearer',
      expires_in: accessTokens.ttlSeconds,
      refresh_token: tokenFor(rec.id),
      refresh_token_expires_in: Math.max(0, Math.floor((rec.expiresAt - clock.now()) / 1000)),
      scope: rec.scope,
    };
  }

  /** A new refresh token of the sign-in `familyId`: the record to answer with, and the row to insert. */
  function newRefresh(user: User, familyId: string, clientId: string, deviceId: string | null, scope: string) {
    const now = clock.now();
    const id = newId();
    const rec = { id, familyId, userId: user.id, deviceId, clientId, scope, createdAt: now, expiresAt: now + opts.refreshTtlSeconds * 1000 };
    return { rec, row: { ...rec, tokenHash: hash(tokenFor(id)) } };
  }

  /** Conditional access for a password sign-in or its refresh: anything but `allow` is invalid_grant. */
  async function judge(user: User, clientId: string, deviceId: string | null, familyId: string, kind: 'password' | 'refresh', from: GrantRequestContext): Promise<void> {
    if (!opts.access) return;
    const verdict = await opts.access.evaluateSignIn({ user, clientId, deviceId, ip: from.ip ?? null, authMethods: ['pwd'], kind, sessionId: familyId, userAgent: from.userAgent });
    const { decision } = verdict.evaluation;
    if (decision === 'allow') return;
    throw oauthErrors.invalidGrant(
      decision === 'needs'
        ? 'conditional access requires multi-factor authentication: sign in through the sign-in page'
        : `conditional access: ${opts.access.refusal(verdict.evaluation).message}`,
    );
  }

  return {
    /**
     * The sign-in a password grant proves it already holds: `refresh_token` on the grant, when it is this server's,
     * live (not rotated, revoked or expired), issued to the same client, and belongs to the user named by
     * `username`. Such a device is not held to the per-username throttles (it has shown it is the user's own
     * device, the OWASP "device cookie"), so nobody can lock a user out of the devices they already use. No proof,
     * or a bad one, is simply undefined: the grant is then throttled like any other.
     */
    async provenSignIn(params: Record<string, unknown>): Promise<string | undefined> {
      const { refresh_token: token, username, client_id: clientId } = params;
      if (typeof token !== 'string' || typeof username !== 'string' || typeof clientId !== 'string') return undefined;
      const id = idOf(token);
      const rec = id ? await store.refreshTokens.byHash(hash(token)) : undefined;
      if (!rec || rec.id !== id || rec.clientId !== clientId) return undefined;
      if (rec.revokedAt !== null || rec.rotatedAt !== null || rec.expiresAt <= clock.now()) return undefined;
      const user = await store.users.byUsername(username);
      return user && user.id === rec.userId ? rec.familyId : undefined;
    },

    async passwordGrant(params: Record<string, unknown>, from: GrantRequestContext = {}): Promise<TokenResponse> {
      if (!opts.passwordGrant) throw oauthErrors.unsupportedGrantType('the password grant is disabled');
      const clientId = checkClient(params.client_id);
      const { username, password } = params;
      if (typeof username !== 'string' || username === '' || typeof password !== 'string' || password === '') {
        throw oauthErrors.invalidRequest('username and password are required');
      }
      const deviceId = checkDeviceId(params.device_id);
      const user = await store.users.byUsername(username);
      // Always run the hash check, so unknown users cost as much as wrong passwords (no user enumeration by timing).
      const ok = await verifyPassword(password, user?.passwordHash ?? null);
      if (!user || !ok || user.disabled) {
        if (user && !user.disabled && opts.access) await opts.access.recordFailure(user, { clientId, deviceId, ip: from.ip ?? null, authMethods: ['pwd'] });
        throw oauthErrors.invalidGrant('invalid username or password');
      }
      const scope = grantedScope(user, params.scope);
      const familyId = newId();
      await judge(user, clientId, deviceId, familyId, 'password', from);
      const { rec, row } = newRefresh(user, familyId, clientId, deviceId, scope);
      await store.refreshTokens.insert(row);
      return respond(user, rec);
    },

    async refreshGrant(params: Record<string, unknown>, from: GrantRequestContext = {}): Promise<TokenResponse> {
      const clientId = checkClient(params.client_id);
      const token = params.refresh_token;
      if (typeof token !== 'string' || token === '') throw oauthErrors.invalidRequest('refresh_token is required');
      const deviceId = checkDeviceId(params.device_id);
      const id = idOf(token);
      const now = clock.now();
      const rec = id ? await store.refreshTokens.byHash(hash(token)) : undefined;
      if (!rec || rec.id !== id) throw oauthErrors.invalidGrant('unknown refresh token');
      if (rec.clientId !== clientId) throw oauthErrors.invalidGrant('refresh token was issued to another client');
      if (rec.revokedAt !== null) throw oauthErrors.invalidGrant('refresh token revoked');
      if (rec.expiresAt <= now) throw oauthErrors.invalidGrant('refresh token expired');
      if (deviceId !== null && rec.deviceId !== null && deviceId !== rec.deviceId) {
        throw oauthErrors.invalidGrant('refresh token is bound to another device');
      }
      const user = await store.users.byId(rec.userId);
      if (!user || user.disabled) throw oauthErrors.invalidGrant('account unavailable');

      if (rec.rotatedAt !== null) {
        const successor = rec.replacedBy ? await store.refreshTokens.byId(rec.replacedBy) : undefined;
        const withinGrace = now - rec.rotatedAt <= opts.refreshRetryGraceSeconds * 1000;
        if (withinGrace && successor && successor.rotatedAt === null && successor.revokedAt === null) {
          return respond(user, successor); // the client lost our answer: give it the same successor again
        }
        // A rotated token came back: someone holds a copy. End the whole sign-in (RFC 6819 §5.2.2.3).
        await store.refreshTokens.revokeFamily(rec.familyId, 'reuse detected', now);
        throw oauthErrors.invalidGrant('refresh token reuse detected; sign in again');
      }

      await judge(user, clientId, rec.deviceId ?? deviceId, rec.familyId, 'refresh', from);
      // A device_id on the refresh binds a sign-in that was not yet bound (protocol.md §2); a bound one stays bound.
      const successor = newRefresh(user, rec.familyId, clientId, rec.deviceId ?? deviceId, rec.scope);
      await store.run(function* (tx) {
        yield* tx.refreshTokens.insert(successor.row);
        if (!(yield* tx.refreshTokens.markRotated(rec.id, successor.rec.id, now))) {
          throw oauthErrors.invalidGrant('refresh token already used');
        }
      });
      return respond(user, successor.rec);
    },

    /** RFC 7009: unknown or foreign tokens are not an error (the answer is 200 either way). */
    async revoke(params: Record<string, unknown>, accessSid?: string): Promise<void> {
      checkClient(params.client_id);
      const token = params.token;
      if (typeof token !== 'string' || token === '') throw oauthErrors.invalidRequest('token is required');
      const id = idOf(token);
      if (id) {
        const rec = await store.refreshTokens.byHash(hash(token));
        if (rec && rec.clientId === params.client_id) await store.refreshTokens.revokeFamily(rec.familyId, 'revoked by client', clock.now());
        return;
      }
      // An access token (already verified by the caller): end the sign-in it came from. The JWT itself lives on
      // until its `exp` (at most the access-token lifetime); that is the documented cost of stateless tokens.
      if (accessSid) await store.refreshTokens.revokeFamily(accessSid, 'revoked by client', clock.now());
    },
  };
}

export type AuthService = ReturnType<typeof createAuthService>;
