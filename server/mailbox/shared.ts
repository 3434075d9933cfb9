/**
 * Shared mailboxes (README, "Shared mailboxes"): a mailbox with an address and folders of its own but no sign-in of
 * its own, whose members read it with full access and send from it as it (send-as) or on its behalf
 * (send-on-behalf). Admins create them and manage their members (`/admin/v1/shared-mailboxes`, audited); a member
 * lists theirs with `GET /v1/mailboxes` and works in one with `X-Mailbox` (http/mailbox.ts).
 *
 * The mailbox is a user row that nobody can sign in as: no password, and a username no sign-in can produce (it
 * starts with `#`, which usernames never do), so neither the built-in identity provider nor an external issuer maps
 * a person to it.
 */
import { z } from 'zod';
import { ApiError, errors } from '../errors';
import type { Clock } from '../clock';
import type { Route } from '../http/table';
import { parse, text } from '../http/validate';
import type { Actor, DeviceService } from '../devices/service';
import type { AdminService } from '../admin/service';
import type { SharedMailbox, SharedMailboxMember, Store, User } from '../store/types';
import type { DeviceSignals } from '../devices/signals';

const address = z.string().trim().max(254).pipe(z.email());
const CreateShared = z.strictObject({ email: address, displayName: text(256).pipe(z.string().trim().min(1)) });
const Rights = z
  .strictObject({ fullAccess: z.boolean(), sendAs: z.boolean().optional(), sendOnBehalf: z.boolean().optional() })
  .refine((r) => r.fullAccess || (!r.sendAs && !r.sendOnBehalf), 'sending from a shared mailbox needs fullAccess');

const sharedNotFound = () => new ApiError(404, 'notFound', 'No such shared mailbox in your organization.');

function memberView(member: SharedMailboxMember, user: User | undefined) {
  return {
    userId: member.memberId,
    email: user?.email ?? null,
    displayName: user?.displayName ?? null,
    fullAccess: member.fullAccess,
    sendAs: member.sendAs,
    sendOnBehalf: member.sendOnBehalf,
  };
}

export function createSharedMailboxes(deps: { store: Store; clock: Clock; audit: DeviceService['audit']; signals?: Pick<DeviceSignals, 'recheck'> }) {
  const { store, clock, audit } = deps;
  // A member's rights changed: their live push channels (in every worker) check their membership now, so a removed
  // member's stream of the shared mailbox ends at once, not at its next heartbeat.
  const recheckMember = (tenantId: string, memberId: string) => deps.signals?.recheck({ tenantId, userId: memberId });

  async function ownShared(actor: Actor, mailboxId: string): Promise<SharedMailbox> {
    const shared = await store.sharedMailboxes.get(mailboxId);
    if (!shared || shared.user.tenantId !== actor.tenantId) throw sharedNotFound();
    return shared;
  }

  async function view(shared: SharedMailbox) {
    const members = await store.sharedMailboxes.members(shared.user.id);
    const users = await Promise.all(members.map((m) => store.users.byId(m.memberId)));
    return {
      id: shared.user.id,
      email: shared.user.email,
      displayName: shared.user.displayName,
      createdAt: new Date(shared.createdAt).toISOString(),
      members: members.map((m, i) => memberView(m, users[i])),
    };
  }

  return {
    view,
    async list(actor: Actor) {
      return Promise.all((await store.sharedMailboxes.list(actor.tenantId)).map(view));
    },
    async get(actor: Actor, mailboxId: string) {
      return view(await ownShared(actor, mailboxId));
    },

    async create(actor: Actor, input: z.infer<typeof CreateShared>) {
      const now = clock.now();
      if ((await store.users.byEmail(input.email)).length) {
        throw errors.invalidRequest('A mailbox with this address already exists.', [{ field: 'email', message: 'taken' }]);
      }
      const shared = await store.run(function* (tx) {
        const user = yield* tx.users.create(
          { tenantId: actor.tenantId, username: `#shared:${input.email.toLowerCase()}`, email: input.email, displayName: input.displayName, role: 'user', passwordHash: null },
          now,
        );
        yield* tx.mailboxes.create(user.id, now);
        const created = yield* tx.sharedMailboxes.create(user.id, now);
        yield* audit(tx, actor, now, 'sharedMailbox.create', 'user', user.id, { email: input.email, displayName: input.displayName });
        return created;
      });
      return view(shared);
    },

    async putMember(actor: Actor, mailboxId: string, memberId: string, rights: z.infer<typeof Rights>) {
      const shared = await ownShared(actor, mailboxId);
      const member = await store.users.byId(memberId);
      if (!member || member.tenantId !== actor.tenantId) throw errors.notFound('No such user in your organization.');
      if (await store.sharedMailboxes.get(memberId)) throw errors.invalidRequest('A shared mailbox cannot be a member.', [{ field: 'userId', message: 'shared mailbox' }]);
      const now = clock.now();
      await store.run(function* (tx) {
        const before = yield* tx.sharedMailboxes.member(mailboxId, memberId);
        yield* tx.sharedMailboxes.putMember({
          mailboxId,
          memberId,
          fullAccess: rights.fullAccess,
          sendAs: rights.sendAs ?? false,
          sendOnBehalf: rights.sendOnBehalf ?? false,
          createdAt: before?.createdAt ?? now,
          updatedAt: now,
        });
        yield* audit(tx, actor, now, before ? 'sharedMailbox.member.update' : 'sharedMailbox.member.add', 'user', mailboxId, { memberId, ...rights });
      });
      if (!rights.fullAccess) recheckMember(actor.tenantId, memberId);
      return view(shared);
    },

    async removeMember(actor: Actor, mailboxId: string, memberId: string) {
      const shared = await ownShared(actor, mailboxId);
      const now = clock.now();
      await store.run(function* (tx) {
        if (!(yield* tx.sharedMailboxes.removeMember(mailboxId, memberId))) throw errors.notFound('This user is not a member of the shared mailbox.');
        yield* audit(tx, actor, now, 'sharedMailbox.member.remove', 'user', mailboxId, { memberId });
      });
      recheckMember(actor.tenantId, memberId);
      return view(shared);
    },

    /** The caller's own mailbox and the shared mailboxes they are a full-access member of. */
    async ofUser(user: User) {
      const shared = (await store.sharedMailboxes.ofMember(user.id)).filter((s) => s.rights.fullAccess);
      return [
        { id: user.id, email: user.email, displayName: user.displayName, shared: false, fullAccess: true, sendAs: true, sendOnBehalf: false },
        ...shared.map((s) => ({
          id: s.mailbox.user.id,
          email: s.mailbox.user.email,
          displayName: s.mailbox.user.displayName,
          shared: true,
          fullAccess: s.rights.fullAccess,
          sendAs: s.rights.sendAs,
          sendOnBehalf: s.rights.sendOnBehalf,
        })),
      ];
    },
  };
}

export type SharedMailboxes = ReturnType<typeof createSharedMailboxes>;

export function sharedMailboxRoutes(d: { shared: SharedMailboxes; admin: AdminService }): Route[] {
  return [
    {
      method: 'GET',
      path: '/v1/mailboxes',
      handler: async (call) => ({ body: { mailboxes: await d.shared.ofUser(call.auth.user) } }),
    },
    {
      method: 'GET',
      path: '/admin/v1/shared-mailboxes',
      handler: async (call) => ({ body: { sharedMailboxes: await d.shared.list(await d.admin.actor(call.auth)) } }),
    },
    {
      method: 'POST',
      path: '/admin/v1/shared-mailboxes',
      idempotent: true,
      handler: async (call) => ({ status: 201, body: await d.shared.create(await d.admin.actor(call.auth), parse(CreateShared, call.body)) }),
    },
    {
      method: 'GET',
      path: '/admin/v1/shared-mailboxes/:mailboxId',
      handler: async (call) => ({ body: await d.shared.get(await d.admin.actor(call.auth), call.params.mailboxId!) }),
    },
    {
      method: 'PUT',
      path: '/admin/v1/shared-mailboxes/:mailboxId/members/:userId',
      idempotent: true,
      handler: async (call) => ({
        body: await d.shared.putMember(await d.admin.actor(call.auth), call.params.mailboxId!, call.params.userId!, parse(Rights, call.body)),
      }),
    },
    {
      method: 'DELETE',
      path: '/admin/v1/shared-mailboxes/:mailboxId/members/:userId',
      idempotent: true,
      handler: async (call) => ({ body: await d.shared.removeMember(await d.admin.actor(call.auth), call.params.mailboxId!, call.params.userId!) }),
    },
  ];
}
