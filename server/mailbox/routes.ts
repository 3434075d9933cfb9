/**
 * Mailbox views (README, "Mailbox views"): the mailbox's settings (automatic replies, junk lists, Focused Inbox
 * overrides), Focused/Other and junk actions on a message, and the calling device's view settings, whose change is a
 * soft reset of that device only.
 */
import { z } from 'zod';
import { errors } from '../errors';
import type { Call, Route } from '../http/table';
import { parse } from '../http/validate';
import { mailboxOf } from '../http/mailbox';
import type { DeviceRecord, Store, ViewSettings } from '../store/types';
import type { Clock } from '../clock';
import { AutomaticRepliesInput, JunkInput, senderEntry } from './settings';
import type { ProtectionService } from '../protection/service';
import { readerOf } from '../protection/reader';
import type { ItemView } from '../views';
import type { MailboxService } from './service';

const Classify = z.strictObject({ classification: z.enum(['focused', 'other']), always: z.boolean().optional() });
const ReportJunk = z.strictObject({ verdict: z.enum(['junk', 'notJunk']) });
const ViewSettingsInput = z.strictObject({ focusedInbox: z.boolean(), threaded: z.boolean() });
const OverrideQuery = z.strictObject({ sender: senderEntry });

/** `If-Match: "<version>"` of the settings document; undefined without one. */
function versionOf(header: string | string[] | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = typeof header === 'string' ? /^(?:W\/)?"?(\d{1,15})"?$/.exec(header.trim()) : null;
  if (!m) throw errors.invalidRequest('If-Match must be the settings version ("<n>").', [{ field: 'If-Match', message: 'invalid' }]);
  return Number(m[1]);
}

const etag = (version: number) => `"${version}"`;

export interface MailboxRouteDeps {
  mailbox: MailboxService;
  store: Store;
  clock: Clock;
  /** Told of a device whose view settings changed (push sends its stream `softReset`). */
  onSoftReset?: (device: DeviceRecord) => void;
  /** Protected mail in answers is shown as the calling device may see it (as PATCH and move do). */
  protection?: ProtectionService;
}

export function viewSettingsView(device: DeviceRecord): ViewSettings & { epoch: number } {
  return { focusedInbox: device.viewSettings.focusedInbox, threaded: device.viewSettings.threaded, epoch: device.epoch };
}

export function mailboxRoutes(d: MailboxRouteDeps): Route[] {
  const { protection } = d;
  /** `present` of an answer carrying `item` (http/table.ts: applied after an idempotent answer is kept). */
  const presentItem = protection
    ? async (call: Call, body: unknown) => {
        const answer = body as { item: ItemView };
        return { ...answer, item: await protection.overlay(answer.item, readerOf(call)) };
      }
    : undefined;
  return [
    {
      method: 'GET',
      path: '/v1/mailbox/settings',
      handler: async (call) => {
        const view = await d.mailbox.view(mailboxOf(call));
        const tag = etag(view.version);
        // An app polls its settings cheaply: the same version answers 304 without a body.
        if (call.headers['if-none-match'] === tag) return { status: 304, headers: { ETag: tag } };
        return { headers: { ETag: tag }, body: view };
      },
    },
    {
      method: 'PUT',
      path: '/v1/mailbox/settings/automatic-replies',
      idempotent: true,
      handler: async (call) => {
        const view = await d.mailbox.putAutomaticReplies(mailboxOf(call), parse(AutomaticRepliesInput, call.body), versionOf(call.headers['if-match']));
        return { headers: { ETag: etag(view.version) }, body: view };
      },
    },
    {
      method: 'PUT',
      path: '/v1/mailbox/settings/junk',
      idempotent: true,
      handler: async (call) => {
        const view = await d.mailbox.putJunk(mailboxOf(call), parse(JunkInput, call.body), versionOf(call.headers['if-match']));
        return { headers: { ETag: etag(view.version) }, body: view };
      },
    },
    {
      method: 'DELETE',
      path: '/v1/mailbox/settings/focused-overrides',
      idempotent: true,
      handler: async (call) => {
        const { sender } = parse(OverrideQuery, call.query, 'query');
        const view = await d.mailbox.removeOverride(mailboxOf(call), sender);
        return { headers: { ETag: etag(view.version) }, body: view };
      },
    },
    {
      method: 'POST',
      path: '/v1/items/:itemId/classify',
      idempotent: true,
      present: presentItem,
      handler: async (call) => {
        const body = parse(Classify, call.body);
        return { body: await d.mailbox.classify(mailboxOf(call), call.params.itemId!, { classification: body.classification, always: body.always ?? false }) };
      },
    },
    {
      method: 'POST',
      path: '/v1/items/:itemId/report-junk',
      idempotent: true,
      present: presentItem,
      handler: async (call) => ({ body: await d.mailbox.reportJunk(mailboxOf(call), call.params.itemId!, parse(ReportJunk, call.body).verdict) }),
    },
    {
      method: 'GET',
      path: '/v1/devices/current/view-settings',
      handler: (call) => ({ body: viewSettingsView(call.device) }),
    },
    {
      method: 'PUT',
      path: '/v1/devices/current/view-settings',
      idempotent: true,
      handler: async (call) => {
        const input = parse(ViewSettingsInput, call.body);
        const before = call.device;
        const after = await d.store.devices.setViewSettings(before.id, input, d.clock.now());
        if (!after) throw errors.deviceNotRegistered();
        const softReset = after.epoch !== before.epoch;
        if (softReset) d.onSoftReset?.(after);
        return { body: { ...viewSettingsView(after), softReset } };
      },
    },
  ];
}
