/**
 * What an app sends to create or change an event (`POST /v1/calendar/events`, `PUT /v1/calendar/events/{id}`),
 * checked here: a clear 400 for anything Pigeon would store wrong. Times are instants (ISO 8601 with a zone offset
 * or `Z`) for timed events and dates (`YYYY-MM-DD`, end exclusive) for all-day ones; the zone is an IANA name.
 */
import { z } from 'zod';
import { multilineText, text } from '../http/validate';
import { isIanaZone } from './timezones';
import { checkRrule, RecurrenceError } from './recurrence';

const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** A time or date an occurrence is named by (its original start). */
export const isTime = (s: string) => (DATE.test(s) || /^\d{4}-\d{2}-\d{2}T/.test(s)) && !Number.isNaN(Date.parse(s));
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/;

const address = z.string().max(254).regex(/^[^\s@<>()",;:]+@[^\s@<>()",;:]+$/, 'must be an email address');
const Attendee = z.strictObject({
  name: text(256).optional(),
  address,
  type: z.enum(['required', 'optional', 'resource']).default('required'),
});
const Recurrence = z.strictObject({
  rrule: z.string().min(1).max(1000),
  exdates: z.array(z.string().max(40)).max(1000).default([]),
  rdates: z.array(z.string().max(40)).max(1000).default([]),
});

export const EventInput = z
  .strictObject({
    subject: text(255).default(''),
    body: multilineText(64 * 1024).nullable().optional(),
    start: z.string().max(40),
    end: z.string().max(40),
    timeZone: z.string().max(64).refine(isIanaZone, 'must be an IANA time zone such as Europe/Berlin'),
    isAllDay: z.boolean().default(false),
    location: text(255).nullable().optional(),
    attendees: z.array(Attendee).max(500).default([]),
    reminderMinutesBeforeStart: z.number().int().min(0).max(4 * 7 * 24 * 60).nullable().default(15),
    recurrence: Recurrence.nullable().default(null),
    showAs: z.enum(['free', 'tentative', 'busy', 'oof', 'workingElsewhere']).default('busy'),
    folderId: z.string().min(1).max(64).optional(),
  })
  .superRefine((v, ctx) => {
    const shape = v.isAllDay ? DATE : INSTANT;
    const what = v.isAllDay ? 'a date (YYYY-MM-DD) for an all-day event' : 'an ISO 8601 instant with Z or an offset';
    for (const field of ['start', 'end'] as const) {
      if (!shape.test(v[field]) || Number.isNaN(Date.parse(v[field]))) ctx.addIssue({ code: 'custom', path: [field], message: `must be ${what}` });
    }
    if (shape.test(v.start) && shape.test(v.end) && Date.parse(v.end) <= Date.parse(v.start)) {
      ctx.addIssue({ code: 'custom', path: ['end'], message: 'must be after start' });
    }
    if (v.recurrence) {
      try {
        checkRrule(v.recurrence.rrule);
      } catch (err) {
        if (!(err instanceof RecurrenceError)) throw err;
        ctx.addIssue({ code: 'custom', path: ['recurrence', 'rrule'], message: err.message });
      }
      for (const key of ['exdates', 'rdates'] as const) {
        v.recurrence[key].forEach((d, i) => {
          if (!shape.test(d) || Number.isNaN(Date.parse(d))) ctx.addIssue({ code: 'custom', path: ['recurrence', key, i], message: `must be ${what}` });
        });
      }
    }
    const seen = new Set<string>();
    v.attendees.forEach((a, i) => {
      const key = a.address.toLowerCase();
      if (seen.has(key)) ctx.addIssue({ code: 'custom', path: ['attendees', i, 'address'], message: 'listed twice' });
      seen.add(key);
    });
  });
export type EventInput = z.infer<typeof EventInput>;

/** An instant as the model keeps it (UTC ISO with `Z`), or the date of an all-day event. */
export function normaliseTime(value: string, isAllDay: boolean): string {
  return isAllDay ? value : new Date(Date.parse(value)).toISOString();
}

export const Respond = z.strictObject({
  response: z.enum(['accepted', 'tentative', 'declined']),
  comment: text(2000).optional(),
  sendResponse: z.boolean().default(true),
  /** One occurrence of a series (its original start), else the whole event. */
  occurrence: z.string().max(40).refine(isTime, 'must be an ISO 8601 time or date').optional(),
});
export type Respond = z.infer<typeof Respond>;

export const DeclineCounter = z.strictObject({ attendee: address, reason: text(2000).pipe(z.string().trim().min(1, 'must not be empty')) });
