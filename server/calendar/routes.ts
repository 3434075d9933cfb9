/**
 * The calendar API (README, "Calendar and contacts"): events created, changed, deleted and answered; the calendar
 * view of occurrences in a time range; the iCalendar feed. Reading events is item sync's (calendar folders have no
 * window); validation is here, the rules in ./service.ts.
 */
import { Readable } from 'node:stream';
import { z } from 'zod';
import { ApiError, errors } from '../errors';
import type { Call, Route } from '../http/table';
import { parse } from '../http/validate';
import { DeclineCounter, EventInput, isTime, Respond } from './input';
import type { CalendarService } from './service';
import { mailboxOf } from '../http/mailbox';

const MAX_BATCH = 100;

const ViewQuery = z.strictObject({
  start: z.string().max(40).refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 time'),
  end: z.string().max(40).refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 time'),
  folderId: z.string().min(1).max(64).optional(),
});
const FeedQuery = z.strictObject({ folderId: z.string().min(1).max(64).optional() });
const DeleteQuery = z.strictObject({ occurrence: z.string().min(1).max(40).refine(isTime, 'must be an ISO 8601 time or date').optional() });

const BatchOperation = z.discriminatedUnion('op', [
  z.strictObject({ opId: z.string().min(1).max(64), op: z.literal('create'), event: z.unknown() }),
  z.strictObject({ opId: z.string().min(1).max(64), op: z.literal('update'), id: z.string().min(1).max(64), ifMatch: z.string().max(64).optional(), event: z.unknown() }),
  z.strictObject({ opId: z.string().min(1).max(64), op: z.literal('delete'), id: z.string().min(1).max(64), occurrence: z.string().max(40).refine(isTime, 'must be an ISO 8601 time or date').optional() }),
]);
const Batch = z.strictObject({ operations: z.array(z.unknown()).min(1).max(MAX_BATCH) });

/** `If-Match: "<changeKey>"` (or bare), as PATCH /v1/items takes it. */
function ifMatchOf(call: Call): string | undefined {
  const header = call.headers['if-match'];
  if (header === undefined) return undefined;
  if (typeof header !== 'string' || header.length > 64) throw errors.invalidRequest('If-Match must be one change key.');
  return header.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

export function calendarRoutes(calendar: CalendarService): Route[] {
  return [
    {
      method: 'POST',
      path: '/v1/calendar/events',
      idempotent: true,
      handler: async (call) => ({ status: 201, body: await calendar.create(mailboxOf(call), parse(EventInput, call.body)) }),
    },
    {
      method: 'PUT',
      path: '/v1/calendar/events/:itemId',
      idempotent: true,
      handler: async (call) => ({ body: await calendar.update(mailboxOf(call), call.params.itemId!, parse(EventInput, call.body), ifMatchOf(call)) }),
    },
    {
      method: 'DELETE',
      path: '/v1/calendar/events/:itemId',
      idempotent: true,
      handler: async (call) => ({ body: await calendar.remove(mailboxOf(call), call.params.itemId!, parse(DeleteQuery, call.query, 'query')) }),
    },
    {
      method: 'POST',
      path: '/v1/calendar/events/:itemId/respond',
      idempotent: true,
      handler: async (call) => ({ body: await calendar.respond(mailboxOf(call), call.params.itemId!, parse(Respond, call.body)) }),
    },
    {
      method: 'POST',
      path: '/v1/calendar/events/:itemId/decline-counter',
      idempotent: true,
      handler: async (call) => {
        const { attendee, reason } = parse(DeclineCounter, call.body);
        return { body: await calendar.declineCounter(mailboxOf(call), call.params.itemId!, attendee, reason) };
      },
    },
    {
      method: 'POST',
      path: '/v1/calendar/batch',
      idempotent: true,
      // Operations run in order, each on its own (an event's invitations go out as it is saved); each answers for
      // itself, as POST /v1/batch does.
      handler: async (call) => {
        const { operations } = parse(Batch, call.body);
        const results: Array<Record<string, unknown>> = [];
        for (const [index, raw] of operations.entries()) {
          const opId = typeof (raw as { opId?: unknown } | null)?.opId === 'string' ? (raw as { opId: string }).opId : `#${index}`;
          try {
            const op = parse(BatchOperation, raw, `operation ${opId}`);
            const userId = mailboxOf(call);
            if (op.op === 'create') results.push({ opId, status: 201, ...(await calendar.create(userId, parse(EventInput, op.event, `operation ${opId} event`))) });
            else if (op.op === 'update') results.push({ opId, status: 200, ...(await calendar.update(userId, op.id, parse(EventInput, op.event, `operation ${opId} event`), op.ifMatch)) });
            else results.push({ opId, status: 200, ...(await calendar.remove(userId, op.id, { occurrence: op.occurrence })) });
          } catch (err) {
            if (!(err instanceof ApiError)) throw err;
            results.push({ opId, status: err.status, problem: { code: err.code, title: err.title, status: err.status, detail: err.message, ...err.extra } });
          }
        }
        return { body: { results } };
      },
    },
    {
      method: 'GET',
      path: '/v1/calendar/view',
      handler: async (call) => {
        const q = parse(ViewQuery, call.query, 'query');
        return { body: { occurrences: await calendar.view(mailboxOf(call), Date.parse(q.start), Date.parse(q.end), q.folderId) } };
      },
    },
    {
      method: 'GET',
      path: '/v1/calendar/feed.ics',
      handler: async (call) => {
        const { folderId } = parse(FeedQuery, call.query, 'query');
        const text = await calendar.feed(mailboxOf(call), folderId);
        const bytes = Buffer.from(text, 'utf8');
        return {
          headers: {
            'Content-Type': 'text/calendar; charset=utf-8',
            'Content-Length': String(bytes.length),
            'Content-Disposition': 'attachment; filename="calendar.ics"',
            'Cache-Control': 'private, no-cache',
          },
          stream: Readable.from([bytes]),
        };
      },
    },
  ];
}
