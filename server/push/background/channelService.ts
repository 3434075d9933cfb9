/**
 * Background push channels as the API sees them (routes.ts): what a registration must be (zod, checked whole so
 * the app learns every problem at once), the registration itself (a refresh of the same address by the same device
 * keeps the channel; past the per-device limit the device's oldest goes), and the view an app gets back.
 *
 * What is refused, and why:
 * - Web Push endpoints that are not https, carry credentials, or name a loopback, private, link-local or otherwise
 *   internal address (unless PIGEON_PUSH_ALLOW_PRIVATE_ENDPOINTS): the server would otherwise POST wherever a
 *   client asks, into its own network (SSRF). Host names are judged as written: a public name that resolves to an
 *   internal address is the network's egress policy to stop.
 * - keys that could not encrypt: p256dh must be an uncompressed point on P-256 (65 bytes), auth 16 bytes (RFC 8291);
 * - tokens of the wrong shape: APNs device tokens are hex (64 to 200 digits), FCM registration tokens 1 to 4096
 *   printable characters;
 * - events the server does not send, and kinds whose gateway is not configured (400 naming `kind`).
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { z } from 'zod';
import { errors } from '../../errors';
import { parse } from '../../http/validate';
import type { Clock } from '../../clock';
import type { DeviceRecord, PushChannelKind, PushChannelRecord, PushEventKind, Store, User } from '../../store/types';
import { PUSH_EVENT_KINDS } from '../../store/types';
import type { PushConfigView } from './gateways';

export const MAX_ENDPOINT_LENGTH = 2048;

const b64url = /^[A-Za-z0-9_-]+={0,2}$/;

/** base64url (padding tolerated) → bytes, or undefined when it is not base64url. */
function fromBase64url(text: string): Buffer | undefined {
  return b64url.test(text) ? Buffer.from(text.replace(/=+$/, ''), 'base64url') : undefined;
}

/** Whether `point` is an uncompressed point on P-256 (0x04 || x || y, and on the curve). */
export function isP256Point(point: Buffer): boolean {
  if (point.length !== 65 || point[0] !== 4) return false;
  try {
    crypto.ECDH.convertKey(point, 'prime256v1', undefined, undefined, 'compressed');
    return true;
  } catch {
    return false;
  }
}

/** Addresses a push endpoint must not name: loopback, private, link-local, shared, multicast, reserved. */
const INTERNAL = new net.BlockList();
for (const [net4, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  INTERNAL.addSubnet(net4, bits, 'ipv4');
}
for (const [net6, bits] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
  ['64:ff9b::', 96],
] as const) {
  INTERNAL.addSubnet(net6, bits, 'ipv6');
}

/** Whether a URL host (as `URL.hostname` gives it) names this machine or an internal network. */
export function isInternalHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.local') || host.endsWith('.internal') || (!host.includes('.') && !net.isIP(host))) return true;
  const family = net.isIP(host);
  if (family === 4) return INTERNAL.check(host, 'ipv4');
  if (family === 6) {
    // An IPv4-mapped address (::ffff:10.0.0.1, which URL writes ::ffff:a00:1) is judged as its IPv4 address.
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
    if (mapped) {
      const n = (parseInt(mapped[1]!, 16) << 16) | parseInt(mapped[2]!, 16);
      return INTERNAL.check([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.'), 'ipv4');
    }
    return INTERNAL.check(host, 'ipv6');
  }
  return false;
}

const eventsSchema = z
  .array(z.enum(PUSH_EVENT_KINDS as unknown as [PushEventKind, ...PushEventKind[]], { error: `must be one of ${PUSH_EVENT_KINDS.join(', ')}` }))
  .min(1, 'must list at least one event (delete the channel to get none)')
  .max(PUSH_EVENT_KINDS.length)
  .refine((list) => new Set(list).size === list.length, 'must not repeat an event')
  .optional();

function webPushSchema(allowPrivate: boolean) {
  return z.strictObject({
    kind: z.literal('webpush'),
    endpoint: z
      .string({ error: 'must be the subscription endpoint URL' })
      .max(MAX_ENDPOINT_LENGTH, `must be at most ${MAX_ENDPOINT_LENGTH} characters`)
      .superRefine((text, ctx) => {
        let url: URL;
        try {
          url = new URL(text);
        } catch {
          ctx.addIssue({ code: 'custom', message: 'must be an https URL' });
          return;
        }
        if (url.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: 'must be an https URL' });
        else if (url.username || url.password) ctx.addIssue({ code: 'custom', message: 'must not carry credentials' });
        else if (url.hash) ctx.addIssue({ code: 'custom', message: 'must not carry a fragment' });
        else if (!allowPrivate && isInternalHost(url.hostname)) ctx.addIssue({ code: 'custom', message: 'must be a public push service (not a loopback, private or internal address)' });
      }),
    keys: z.strictObject({
      p256dh: z
        .string({ error: 'must be base64url' })
        .max(200)
        .refine((s) => {
          const bytes = fromBase64url(s);
          return bytes !== undefined && isP256Point(bytes);
        }, 'must be the base64url of an uncompressed P-256 public key (65 bytes)'),
      auth: z
        .string({ error: 'must be base64url' })
        .max(50)
        .refine((s) => fromBase64url(s)?.length === 16, 'must be the base64url of a 16-byte authentication secret'),
    }),
    /** PushSubscription.toJSON() includes it; accepted and not kept. */
    expirationTime: z.number().nullable().optional(),
    events: eventsSchema,
  });
}

const apnsSchema = z.strictObject({
  kind: z.literal('apns'),
  address: z.string({ error: 'must be the APNs device token' }).regex(/^[0-9a-fA-F]{64,200}$/, 'must be the device token in hex (64 to 200 digits)'),
  keys: z.strictObject(
    {
      topic: z
        .string({ error: "must be the app's bundle id" })
        .max(255, 'must be at most 255 characters')
        .regex(/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/, "must be the app's bundle id (com.example.app)"),
      environment: z.enum(['production', 'sandbox'], { error: 'must be production or sandbox' }).default('production'),
    },
    { error: 'must be {topic, environment}' },
  ),
  events: eventsSchema,
});

const fcmSchema = z.strictObject({
  kind: z.literal('fcm'),
  address: z
    .string({ error: 'must be the FCM registration token' })
    .min(1, 'must not be empty')
    .max(4096, 'must be at most 4096 characters')
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces'),
  keys: z.strictObject({}, { error: 'must be {} (an FCM channel has no keys)' }).optional(),
  events: eventsSchema,
});

export function registrationSchema(allowPrivate: boolean) {
  return z.discriminatedUnion('kind', [webPushSchema(allowPrivate), apnsSchema, fcmSchema], { error: 'must be one of webpush, apns, fcm' });
}

export type Registration = z.infer<ReturnType<typeof registrationSchema>>;

/** What an app sees of a channel: never the Web Push secrets it sent. */
export interface ChannelView {
  id: string;
  kind: PushChannelKind;
  /** Web Push: the endpoint; APNs: the device token; FCM: the registration token. */
  address: string;
  /** APNs: the topic and environment; Web Push and FCM: none shown. */
  keys: Record<string, string>;
  events: PushEventKind[];
  createdAt: string;
  updatedAt: string;
  lastSuccessAt: string | null;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function channelView(c: PushChannelRecord): ChannelView {
  return {
    id: c.id,
    kind: c.kind,
    address: c.address,
    keys: c.kind === 'apns' ? { topic: c.keys.topic ?? '', environment: c.keys.environment ?? 'production' } : {},
    events: [...c.events],
    createdAt: iso(c.createdAt),
    updatedAt: iso(c.updatedAt),
    lastSuccessAt: c.lastSuccessAt === null ? null : iso(c.lastSuccessAt),
  };
}

export interface ChannelServiceDeps {
  store: Store;
  clock: Clock;
  /** What the server can deliver through (a kind without a gateway is refused). */
  config: PushConfigView;
  /** Channels per device: a registration beyond it replaces the device's oldest. */
  maxChannelsPerDevice: number;
  /** PIGEON_PUSH_ALLOW_PRIVATE_ENDPOINTS. */
  allowPrivateEndpoints: boolean;
}

const CONFIGURED: Record<PushChannelKind, keyof PushConfigView> = { webpush: 'webPush', apns: 'apns', fcm: 'fcm' };

export function createChannelService(deps: ChannelServiceDeps) {
  const { store, clock } = deps;
  const schema = registrationSchema(deps.allowPrivateEndpoints);

  return {
    /** Validates a registration body (400 with every problem). */
    parse(body: unknown): Registration {
      return parse(schema, body);
    },

    /**
     * Registers (201) or refreshes (200: the same address, already this device's) a channel of the calling device,
     * recording the app (`clientId`) and the user's session version; the device's oldest channels beyond the limit go.
     */
    async register(user: User, device: DeviceRecord, clientId: string, r: Registration): Promise<{ created: boolean; channel: ChannelView }> {
      if (deps.config[CONFIGURED[r.kind]] === null) {
        throw errors.invalidRequest(`This server cannot deliver through ${r.kind}: its gateway is not configured (GET /v1/push/config says which are).`, [
          { field: 'kind', message: `no ${r.kind} gateway is configured on this server` },
        ]);
      }
      const address = r.kind === 'webpush' ? r.endpoint : r.kind === 'apns' ? r.address.toLowerCase() : r.address;
      const keys: Record<string, string> =
        r.kind === 'webpush' ? { p256dh: r.keys.p256dh.replace(/=+$/, ''), auth: r.keys.auth.replace(/=+$/, '') } : r.kind === 'apns' ? { topic: r.keys.topic, environment: r.keys.environment } : {};
      const events = r.events ?? [...PUSH_EVENT_KINDS];
      const now = clock.now();
      const max = deps.maxChannelsPerDevice;
      const result = await store.run(function* (tx) {
        const before = yield* tx.push.channelsOfDevice(user.id, device.id);
        const channel = yield* tx.push.putChannel(
          { tenantId: user.tenantId, userId: user.id, deviceRecordId: device.id, deviceId: device.deviceId, clientId, sessionVersion: user.sessionVersion, kind: r.kind, address, keys, events },
          now,
        );
        const created = !before.some((c) => c.id === channel.id);
        const others = before.filter((c) => c.id !== channel.id);
        // Oldest first: the ones beyond the limit (counting the new one) go.
        for (const old of others.slice(0, Math.max(0, others.length + 1 - max))) yield* tx.push.deleteChannel(user.id, old.id);
        return { created, channel };
      });
      return { created: result.created, channel: channelView(result.channel) };
    },

    async list(user: User, device: DeviceRecord): Promise<ChannelView[]> {
      return (await store.push.channelsOfDevice(user.id, device.id)).map(channelView);
    },

    /** Deletes a channel of the calling device; another device's or user's is 404, as one that exists nowhere. */
    async remove(user: User, device: DeviceRecord, id: string): Promise<void> {
      const deleted = await store.run(function* (tx) {
        const channel = yield* tx.push.channel(user.id, id);
        if (!channel || channel.deviceRecordId !== device.id) return false;
        return yield* tx.push.deleteChannel(user.id, id);
      });
      if (!deleted) throw errors.notFound('No such push channel.');
    },
  };
}

export type ChannelService = ReturnType<typeof createChannelService>;
