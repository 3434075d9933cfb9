/**
 * oidc-provider's storage adapter over the Store: every record the provider keeps (browser sessions, interactions,
 * authorization and device codes, grants, refresh tokens) is a row of `identityRecords`, so a code issued by one
 * worker or node is redeemed on another, and nothing is lost on a restart.
 *
 * The adapter is also where the provider's grants meet Pigeon's sign-ins (README, "Sign-in"): every grant has a
 * sign-in record (a refresh-token family whose id is the grant id, written when the grant is made, see
 * interactions.ts), which is what the mailbox API checks on every call and what a device block, a wipe, a password
 * change or "revoke sessions" ends. So:
 * - a grant whose sign-in has ended is not found: its refresh tokens and codes stop working at once;
 * - when the provider revokes a grant (refresh-token reuse, RFC 7009 revocation), the sign-in ends with it, and so do
 *   the access tokens already issued under it;
 * - each refresh slides the sign-in's expiry and the grant's with it (rotating refresh tokens of a fixed lifetime,
 *   90 days by default, counted from the last use).
 */
import type { Adapter, AdapterPayload } from './oidc';
import type { Clock } from '../clock';
import type { IdentityRecord, Store } from '../store/types';

export interface AdapterHooks {
  /** The provider revoked a grant (reuse detected, revocation, grant revoked): end its sign-in. */
  grantRevoked(grantId: string): Promise<void>;
  /** Whether the grant's sign-in is still live (not revoked or expired). */
  signInLive(accountId: string, grantId: string): Promise<boolean>;
  /** A refresh token of the grant was issued, valid until `expiresAt`: slide the sign-in. */
  refreshed(grantId: string, expiresAt: number): Promise<void>;
}

const seconds = (ms: number) => Math.floor(ms / 1000);

/** The adapter class oidc-provider instantiates once per model name. */
export function storeAdapter(store: Store, clock: Clock, hooks: AdapterHooks): new (model: string) => Adapter {
  const live = async (model: string, rec: IdentityRecord | undefined): Promise<AdapterPayload | undefined> => {
    if (!rec || (rec.expiresAt !== null && rec.expiresAt <= clock.now())) return undefined;
    const payload = { ...rec.payload } as AdapterPayload;
    if (rec.consumedAt !== null) payload.consumed = seconds(rec.consumedAt);
    // A grant (and what hangs off it) lives only as long as its sign-in.
    const grantId = model === 'Grant' ? rec.id : rec.grantId;
    const accountId = payload.accountId;
    if (grantId && typeof accountId === 'string' && !(await hooks.signInLive(accountId, grantId))) return undefined;
    return payload;
  };

  return class StoreAdapter implements Adapter {
    constructor(private readonly model: string) {}

    async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
      const expiresAt = expiresIn ? clock.now() + expiresIn * 1000 : null;
      await store.identityRecords.upsert({
        model: this.model,
        id,
        payload: payload as Record<string, unknown>,
        grantId: typeof payload.grantId === 'string' ? payload.grantId : null,
        userCode: typeof payload.userCode === 'string' ? payload.userCode : null,
        uid: typeof payload.uid === 'string' ? payload.uid : null,
        expiresAt,
        consumedAt: null,
      });
      if (this.model === 'RefreshToken' && typeof payload.grantId === 'string' && expiresAt !== null) {
        await this.slideGrant(payload.grantId, expiresAt);
        await hooks.refreshed(payload.grantId, expiresAt);
      }
    }

    /** The grant lives as long as its newest refresh token (the provider reads the grant on every refresh). */
    private async slideGrant(grantId: string, expiresAt: number): Promise<void> {
      await store.run(function* (tx) {
        const grant = yield* tx.identityRecords.find('Grant', grantId);
        if (!grant || grant.expiresAt === null || grant.expiresAt >= expiresAt) return;
        yield* tx.identityRecords.upsert({ ...grant, expiresAt, payload: { ...grant.payload, exp: seconds(expiresAt) } });
      });
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      return live(this.model, await store.identityRecords.find(this.model, id));
    }

    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      return live(this.model, await store.identityRecords.findByUid(this.model, uid));
    }

    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      return live(this.model, await store.identityRecords.findByUserCode(this.model, userCode));
    }

    async consume(id: string): Promise<void> {
      await store.identityRecords.consume(this.model, id, clock.now());
    }

    async destroy(id: string): Promise<void> {
      await store.identityRecords.destroy(this.model, id);
      if (this.model === 'Grant') await hooks.grantRevoked(id);
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      await store.identityRecords.revokeByGrantId(grantId);
      await hooks.grantRevoked(grantId);
    }
  };
}
