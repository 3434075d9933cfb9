/**
 * Whose mailbox a call works on (README, "Shared mailboxes"): the caller's own, or — with `X-Mailbox: <address or
 * id>` — a shared mailbox the caller is a full-access member of. Routes that act on mailbox data declare
 * `mailbox: true`; the table resolves the mailbox before their handler runs (membership is read on every call, so a
 * change takes effect on the next one), and the handler reads it with `mailboxOf(call)`, never `call.auth.userId`.
 *
 * A shared mailbox the caller is not a member of is answered exactly as one that does not exist (404
 * `mailboxNotFound`): the answer never tells a non-member that the mailbox is there.
 */
import { errors } from '../errors';
import type { AuthContext } from '../auth/authenticate';
import type { SharedMailboxRights, Store, User } from '../store/types';
import type { Call, Route } from './table';

export const MAILBOX_HEADER = 'x-mailbox';

export interface MailboxAccess {
  /** The mailbox's user id (the caller's own, or the shared mailbox's). */
  userId: string;
  user: User;
  /** A shared mailbox, with the caller's rights on it; null for the caller's own mailbox. */
  shared: SharedMailboxRights | null;
}

export type MailboxResolver = (auth: AuthContext, named: string) => Promise<MailboxAccess>;

/** The resolver the table uses: a shared mailbox by id or address, checked against the caller's membership. */
export function createMailboxResolver(store: Store): MailboxResolver {
  return async (auth, named) => {
    const own = auth.user;
    if (named === own.id || named.toLowerCase() === own.email.toLowerCase()) return { userId: own.id, user: own, shared: null };
    const candidates = named.includes('@') ? await store.users.byEmail(named) : [await store.users.byId(named)].filter((u): u is User => u !== undefined);
    for (const user of candidates) {
      if (user.tenantId !== auth.tenantId) continue;
      // A membership row exists only for a shared mailbox (it references one, and goes with it).
      const membership = await store.sharedMailboxes.member(user.id, own.id);
      if (!membership?.fullAccess) continue;
      return { userId: user.id, user, shared: { fullAccess: membership.fullAccess, sendAs: membership.sendAs, sendOnBehalf: membership.sendOnBehalf } };
    }
    throw errors.mailboxNotFound();
  };
}

const resolved = new WeakMap<Call, MailboxAccess>();

/** The value of `X-Mailbox`, validated; undefined when the request has none. */
function namedMailbox(call: Call): string | undefined {
  const value = call.headers[MAILBOX_HEADER];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '' || value.length > 320 || /[\x00-\x1F\x7F]/.test(value)) {
    throw errors.invalidRequest('X-Mailbox must be one mailbox address or id.', [{ field: 'X-Mailbox', message: 'invalid' }]);
  }
  return value.trim();
}

/**
 * Run by the table (and the fast lane) before a route's handler: resolves the mailbox of a `mailbox` route, and
 * refuses `X-Mailbox` on a route that does not act on a mailbox (an app must not believe it acted on the shared
 * mailbox when it did not).
 */
export async function enterMailbox(call: Call, route: Pick<Route, 'mailbox'>, resolver: MailboxResolver | undefined): Promise<void> {
  const named = namedMailbox(call);
  if (named === undefined) return;
  if (!route.mailbox || !resolver) {
    throw errors.invalidRequest('This operation does not act on a mailbox: send it without X-Mailbox.', [{ field: 'X-Mailbox', message: 'not accepted here' }]);
  }
  resolved.set(call, await resolver(call.auth, named));
}

/** The mailbox's user id: the shared mailbox named by X-Mailbox, else the caller's own. */
export const mailboxOf = (call: Call): string => resolved.get(call)?.userId ?? call.auth.userId;

/** The mailbox and the caller's rights on it. */
export const mailboxAccessOf = (call: Call): MailboxAccess => resolved.get(call) ?? { userId: call.auth.userId, user: call.auth.user, shared: null };

/** The `Sender` a message sent from a shared mailbox carries: none with send-as, the member with send-on-behalf. */
export function sendingIdentity(call: Call): { onBehalfOf?: { name: string; address: string } } {
  const access = mailboxAccessOf(call);
  if (!access.shared) return {};
  if (access.shared.sendAs) return {};
  if (access.shared.sendOnBehalf) return { onBehalfOf: { name: call.auth.user.displayName, address: call.auth.user.email } };
  throw errors.forbidden('You may read this shared mailbox but not send from it (you have neither send-as nor send-on-behalf).');
}

/** A change that may send mail as the mailbox (meeting invitations): in a shared mailbox, only with send-as. */
export function requireSendAs(call: Call): void {
  const access = mailboxAccessOf(call);
  if (access.shared && !access.shared.sendAs) {
    throw errors.forbidden('Changing this shared calendar sends mail as the mailbox: that needs send-as.');
  }
}
