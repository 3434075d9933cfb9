/**
 * `POST /v1/messages/send` (protocol.md §6): validation here, the rules in service.ts. The JSON body limit of this
 * route is its own: attachments travel base64-encoded (4/3 of their size), so it is the message limit plus that
 * overhead plus room for the rest of the request.
 */
import { z } from 'zod';
import type { Route } from '../http/table';
import { parse, text } from '../http/validate';
import type { SendService } from './service';
import { readerOf } from '../protection/reader';
import { mailboxOf, sendingIdentity } from '../http/mailbox';

export const MAX_RECIPIENTS = 500;
export const MAX_ATTACHMENTS = 250;

/**
 * An RFC 5322 addr-spec in its common form: a dot-atom local part (no quoted strings) and a host name (no address
 * literals); 254 characters at most (RFC 5321 paths).
 */
const address = z
  .string()
  .max(254)
  .regex(
    /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/,
    'must be an email address (local-part@domain)',
  );
const Recipient = z.strictObject({ name: text(256).optional(), address });
const recipients = z.array(Recipient).max(MAX_RECIPIENTS).default([]);
const token = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const Attachment = z.strictObject({
  name: text(255).pipe(z.string().trim().min(1, 'must not be empty')),
  contentType: z.string().max(255).regex(new RegExp(`^${token}/${token}$`), 'must be a media type such as image/png'),
  contentBase64: z.base64('must be base64'),
  isInline: z.boolean().default(false),
  contentId: z
    .string()
    .max(200)
    .regex(/^[\x21-\x3b\x3d\x3f-\x7e]+$/, 'must be visible ASCII without < or >')
    .optional(),
});

const SendRequest = z
  .strictObject({
    to: recipients,
    cc: recipients,
    bcc: recipients,
    subject: text(998).default(''),
    body: z.strictObject({
      contentType: z.enum(['text', 'html']),
      content: z.string().refine((s) => !s.includes('\u0000'), 'must not contain NUL'),
    }),
    attachments: z.array(Attachment).max(MAX_ATTACHMENTS).default([]),
    importance: z.enum(['low', 'normal', 'high']).default('normal'),
    inReplyTo: z.string().min(1).max(64).optional(),
    attachItems: z.array(z.string().min(1).max(64)).max(20).optional(),
    protection: z.strictObject({ template: z.string().min(1).max(64) }).optional(),
    label: z.string().min(1).max(64).nullable().optional(),
    labelJustification: text(1000).pipe(z.string().trim().min(1, 'must not be empty')).optional(),
  })
  .superRefine((v, ctx) => {
    const total = v.to.length + v.cc.length + v.bcc.length;
    if (total === 0) ctx.addIssue({ code: 'custom', path: ['to'], message: 'give at least one recipient in to, cc or bcc' });
    if (total > MAX_RECIPIENTS) ctx.addIssue({ code: 'custom', path: ['to'], message: `at most ${MAX_RECIPIENTS} recipients in all` });
  });

export interface SendRouteDeps {
  send: SendService;
  maxMessageBytes: number;
}

/** The largest JSON body of a send: the message limit in base64, plus 64 KiB for everything else. */
export function sendBodyLimit(maxMessageBytes: number): number {
  return Math.ceil((maxMessageBytes * 4) / 3) + 64 * 1024;
}

export function sendRoutes(d: SendRouteDeps): Route[] {
  return [
    {
      method: 'POST',
      path: '/v1/messages/send',
      bodyLimit: sendBodyLimit(d.maxMessageBytes),
      idempotent: true,
      handler: async (call) => {
        const body = parse(SendRequest, call.body);
        const identity = sendingIdentity(call);
        const result = await d.send.send(mailboxOf(call), {
          ...body,
          ...(identity.onBehalfOf ? { onBehalfOf: identity.onBehalfOf } : {}),
          attachments: body.attachments.map((a) => ({
            name: a.name,
            contentType: a.contentType.toLowerCase(),
            content: Buffer.from(a.contentBase64, 'base64'),
            isInline: a.isInline,
            contentId: a.contentId ?? null,
          })),
        }, readerOf(call));
        return { status: 202, body: result };
      },
    },
    {
      // A message the app built itself (an S/MIME signed or encrypted message): sent and kept exactly as given.
      method: 'POST',
      path: '/v1/messages/send-mime',
      body: { raw: 'message/rfc822' },
      bodyLimit: d.maxMessageBytes,
      idempotent: true,
      handler: async (call) => {
        const identity = sendingIdentity(call);
        return { status: 202, body: await d.send.sendMime(mailboxOf(call), call.body as Buffer, { onBehalfOf: identity.onBehalfOf?.address }) };
      },
    },
  ];
}
