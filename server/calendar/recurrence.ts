/**
 * Recurrence: the occurrences of an event (EventData) in a time range, expanded by ical.js.
 *
 * The series is expanded in the wall clock of the event's zone (ical.js "floating" times): a weekly 09:00 meeting
 * in Berlin is 09:00 on every date, whatever the offset, and each wall-clock occurrence is then turned into an
 * instant with timezones.ts (a 02:30 in the spring gap becomes 03:30, a time in the autumn overlap the earlier of
 * its two instants). RRULE values stay as the event keeps them; a UNTIL in UTC is moved to the zone's wall clock
 * so ical.js compares like with like.
 *
 * Speed: a calendar view expands every series of a mailbox for the viewed range. Rules whose iteration is a plain
 * step (hourly, daily, weekly, no COUNT and no BY-part but BYDAY/BYMONTHDAY) are advanced to just before the range
 * instead of walking from DTSTART: the ical.js iterator's position is moved by whole steps, which is exactly where
 * its own walk would be (the property test in tests/unit/calendar-recurrence.test.ts holds it to that). Everything
 * else walks from DTSTART (monthly and yearly rules add 12 or 1 steps a year; COUNT ≤ 5000).
 *
 * ical.js can search for ever for a rule that no longer matches anything; every iterator here is guarded (see
 * guardedIterator), so a view always ends.
 */
import ICAL from './icalLib';
import type { EventData, OccurrenceException } from './model';
import { isIanaZone, utcToZoned, zonedToUtc, type WallClock } from './timezones';

type Time = InstanceType<typeof ICAL.Time>;
type Recur = InstanceType<typeof ICAL.Recur>;
type RecurIterator = InstanceType<typeof ICAL.RecurIterator>;
type RecurExpansion = InstanceType<typeof ICAL.RecurExpansion>;

export interface Occurrence {
  /** UTC ISO (timed) or YYYY-MM-DD (all-day), like EventData. */
  start: string;
  end: string;
  /** The original start of this occurrence for a series (null: single event). */
  recurrenceId: string | null;
  /** An OccurrenceException changed it. */
  isException: boolean;
  /** The exception's overrides, else null. */
  subject: string | null;
  location: string | null;
}

/** An RRULE ical.js cannot read, or one Pigeon refuses: the message is for a 400. */
export class RecurrenceError extends Error {
  override name = 'RecurrenceError';
}

const HOUR = 3_600_000;
const DAY = 86_400_000;
const YEAR = 366 * DAY;
const DEFAULT_LIMIT = 5000;
const MAX_COUNT = 5000;
const MAX_INTERVAL = 1000;
/** A local time is at most this far from the same fields read as UTC (offsets are within −12 h … +14 h). */
const OFFSET_REACH = 15 * HOUR;
/** Steps of one expansion before it gives up (a view of decades of an hourly series, say): the view stays bounded. */
const MAX_STEPS = 200_000;
/**
 * ical.js loops without end on rules that can never match again (FREQ=DAILY;INTERVAL=7;BYDAY=TU from a Monday):
 * its iterator tries candidate after candidate inside one next() call (20–80 µs each). This many rejected
 * candidates in a row means the rule has no further occurrence: more than satisfiable rules need (Friday the 13th
 * rejects at most 426 in a row, Mondays that are 29 February with BYMONTH=2 about 800, an hourly rule for the 31st
 * about 1 500) and little enough time for a view (a fraction of a second).
 */
const MAX_REJECTED_CANDIDATES = 5_000;
/** checkRrule tries the rule from sample starts with this smaller budget: a rule that rejects more is refused. */
const TRIAL_REJECTED_CANDIDATES = 2_000;
/** ical.js looks for a yearly rule's first year up to year 20000 (seconds for an impossible rule); the trial gives
 *  it this many years plus two intervals. */
const TRIAL_YEARS = 400;

const RULE_PARTS = new Set([
  'FREQ', 'UNTIL', 'COUNT', 'INTERVAL', 'BYSECOND', 'BYMINUTE', 'BYHOUR', 'BYDAY', 'BYMONTHDAY', 'BYYEARDAY', 'BYWEEKNO',
  'BYMONTH', 'BYSETPOS', 'WKST',
]);
const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** The rule's parts as ical.js keeps them (BYDAY → ['MO', '-1FR'], BYMONTHDAY → [1, -1], …). */
function partsOf(rule: Recur): Record<string, Array<string | number>> {
  return rule.parts as unknown as Record<string, Array<string | number>>;
}

/** Reads and checks an RRULE value; the ICAL.Recur it gives is the caller's to change. */
function readRule(rrule: string): Recur {
  if (typeof rrule !== 'string') throw new RecurrenceError('RRULE must be text');
  // Rule part names and values are case-insensitive (RFC 5545 §3.1); ical.js reads upper case only.
  const text = rrule.trim().toUpperCase();
  if (!text) throw new RecurrenceError('RRULE is empty');
  if (text.length > 2000) throw new RecurrenceError('RRULE is longer than 2000 characters');
  if (/^RRULE:/i.test(text)) throw new RecurrenceError('give the RRULE value without the "RRULE:" prefix');
  const values = new Map<string, string>();
  for (const part of text.split(';')) {
    const m = /^([A-Za-z]+)=([^=]+)$/.exec(part);
    if (!m) throw new RecurrenceError(`RRULE part "${part}" is not NAME=value`);
    const name = m[1]!.toUpperCase();
    if (!RULE_PARTS.has(name)) throw new RecurrenceError(`RRULE part ${name} is not an RFC 5545 rule part`);
    if (values.has(name)) throw new RecurrenceError(`RRULE has ${name} twice`);
    values.set(name, m[2]!);
  }
  if (!values.has('FREQ')) throw new RecurrenceError('RRULE needs FREQ');
  let rule: Recur;
  try {
    rule = ICAL.Recur.fromString(text);
  } catch (err) {
    throw new RecurrenceError(`RRULE "${text}" cannot be read: ${message(err)}`);
  }
  const freq = rule.freq as string;
  if (freq === 'SECONDLY' || freq === 'MINUTELY') throw new RecurrenceError(`FREQ=${freq} is not supported (HOURLY at most)`);
  const whole = (name: string, min: number, max: number) => {
    const raw = values.get(name);
    if (raw === undefined) return;
    if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      throw new RecurrenceError(`RRULE ${name} must be a whole number from ${min} to ${max}`);
    }
  };
  whole('INTERVAL', 1, MAX_INTERVAL);
  whole('COUNT', 1, MAX_COUNT);
  if (values.has('COUNT') && values.has('UNTIL')) throw new RecurrenceError('RRULE cannot have both COUNT and UNTIL');

  const parts = partsOf(rule);
  const numbers = (name: string, min: number, max: number) => {
    for (const v of parts[name] ?? []) {
      const n = Number(v);
      if (!Number.isInteger(n) || n === 0 || n < min || n > max) throw new RecurrenceError(`RRULE ${name} value ${v} is out of range`);
    }
  };
  const atLeastZero = (name: string, max: number) => {
    for (const v of parts[name] ?? []) {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > max) throw new RecurrenceError(`RRULE ${name} value ${v} is out of range`);
    }
  };
  atLeastZero('BYSECOND', 59);
  atLeastZero('BYMINUTE', 59);
  atLeastZero('BYHOUR', 23);
  numbers('BYMONTHDAY', -31, 31);
  numbers('BYYEARDAY', -366, 366);
  numbers('BYWEEKNO', -53, 53);
  numbers('BYMONTH', 1, 12);
  numbers('BYSETPOS', -366, 366);
  const ordinalDays = (parts.BYDAY ?? []).some((d) => /^[+-]?\d/.test(String(d)));
  if (ordinalDays && freq !== 'MONTHLY' && freq !== 'YEARLY') {
    throw new RecurrenceError('RRULE BYDAY with a number (1MO, -1FR) needs FREQ=MONTHLY or FREQ=YEARLY');
  }
  if (ordinalDays && freq === 'YEARLY' && parts.BYWEEKNO) throw new RecurrenceError('RRULE BYDAY with a number cannot go with BYWEEKNO');
  if (parts.BYWEEKNO && freq !== 'YEARLY') throw new RecurrenceError('RRULE BYWEEKNO needs FREQ=YEARLY');
  if (parts.BYYEARDAY && freq !== 'YEARLY') throw new RecurrenceError('RRULE BYYEARDAY needs FREQ=YEARLY');
  if (parts.BYMONTHDAY && freq === 'WEEKLY') throw new RecurrenceError('RRULE BYMONTHDAY cannot go with FREQ=WEEKLY');
  if (parts.BYMONTHDAY) {
    const months = (parts.BYMONTH ?? [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).map(Number);
    const longest = Math.max(...months.map((m) => DAYS_IN_MONTH[m - 1] ?? 31));
    if (parts.BYMONTHDAY.every((d) => Math.abs(Number(d)) > longest)) {
      throw new RecurrenceError('RRULE never occurs: no month it allows has the days BYMONTHDAY asks for');
    }
  }
  return rule;
}

/**
 * An ical.js iterator that ends instead of looping forever: after `budget` candidates in a row fail the rule's
 * filters it reports itself complete. ical.js offers no hook for this, so the guard wraps the two methods of this
 * one iterator object (check_contracting_rules, next); the library itself is untouched.
 */
function guardedIterator(rule: Recur, dtstart: Time, budget = MAX_REJECTED_CANDIDATES): RecurIterator {
  let iterator: RecurIterator;
  try {
    iterator = rule.iterator(dtstart);
  } catch (err) {
    throw new RecurrenceError(`RRULE cannot be expanded: ${message(err)}`);
  }
  const exhausted = new Error('rule exhausted');
  let rejected = 0;
  const check = iterator.check_contracting_rules.bind(iterator);
  iterator.check_contracting_rules = () => {
    const ok = check();
    if (ok) rejected = 0;
    else if (++rejected > budget) throw exhausted;
    return ok;
  };
  const next = iterator.next.bind(iterator);
  iterator.next = (again?: boolean) => {
    try {
      return next(again);
    } catch (err) {
      if (err !== exhausted) throw err;
      iterator.completed = true;
      return null as unknown as Time;
    }
  };
  return iterator;
}

/** Validates an RRULE value (ical.js ICAL.Recur.fromString + sanity: no FREQ=SECONDLY/MINUTELY, COUNT ≤ 5000,
 *  INTERVAL ≤ 1000, RFC 5545's combinations, a rule that can occur at all); throws RecurrenceError with a clear
 *  message. */
export function checkRrule(rrule: string): void {
  const rule = readRule(rrule);
  // Try it without its own end (a past UNTIL would give nothing from the sample starts), with an end far off.
  const trialUntil = `UNTIL=${2026 + TRIAL_YEARS + 2 * (rule.interval || 1)}0101T000000`;
  const open = [
    ...rrule
      .trim()
      .toUpperCase()
      .split(';')
      .filter((p) => !/^(UNTIL|COUNT)=/.test(p)),
    trialUntil,
  ].join(';');
  const trialRule = ICAL.Recur.fromString(open);
  // Seven starts, 5–11 January 2026: each weekday, each at another hour (an hourly rule's BYHOUR may suit only some
  // start hours); the weekdays BYDAY names first, as a rule mostly starts on one of them. A yearly rule does not
  // depend on them: one start.
  const named = new Set((partsOf(rule).BYDAY ?? []).map((d) => String(d).slice(-2)));
  const weekdays = ['MO', 'TU', 'WE', 'TH', 'FR', 'SA', 'SU'];
  const days = [5, 6, 7, 8, 9, 10, 11].sort((a, b) => Number(!named.has(weekdays[a - 5]!)) - Number(!named.has(weekdays[b - 5]!)));
  for (const day of rule.freq === 'YEARLY' ? days.slice(0, 1) : days) {
    const start = ICAL.Time.fromData({ year: 2026, month: 1, day, hour: day - 5, minute: 0, second: 0, isDate: false });
    const iterator = guardedIterator(trialRule, start, TRIAL_REJECTED_CANDIDATES);
    try {
      let found = 0;
      while (found < 2 && iterator.next()) found++;
      if (found === 2) return;
    } catch (err) {
      throw new RecurrenceError(`RRULE cannot be expanded: ${message(err)}`);
    }
  }
  throw new RecurrenceError(`RRULE "${rule.toString()}" never occurs again after its first date`);
}

/** An ical.js floating time (a wall clock with no zone) or date. */
function floating(f: WallClock): Time {
  return ICAL.Time.fromData({ year: f.year, month: f.month, day: f.day, hour: f.hour, minute: f.minute, second: f.second, isDate: false });
}

function dateTime(date: string): Time {
  return ICAL.Time.fromData({ year: Number(date.slice(0, 4)), month: Number(date.slice(5, 7)), day: Number(date.slice(8, 10)), isDate: true });
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

function fieldsOf(t: Time): WallClock {
  return { year: t.year, month: t.month, day: t.day, hour: t.hour, minute: t.minute, second: t.second };
}

/** Days from date a to date b (YYYY-MM-DD). */
function daysBetween(a: string, b: string): number {
  return Math.round((Date.parse(`${b.slice(0, 10)}T00:00:00Z`) - Date.parse(`${a.slice(0, 10)}T00:00:00Z`)) / DAY);
}

function addDays(date: string, days: number): string {
  return new Date(Date.parse(`${date.slice(0, 10)}T00:00:00Z`) + days * DAY).toISOString().slice(0, 10);
}

const isDateValue = (v: string) => /^\d{4}-\d{2}-\d{2}$/.test(v.trim());

/** Everything an expansion needs about one event, worked out once per call. */
interface Series {
  zone: string;
  allDay: boolean;
  /** DTSTART as a floating time (timed) or date (all-day), and its wall clock as wallMs gives it. */
  dtstart: Time;
  dtstartWall: number;
  masterStartMs: number;
  /** Timed: the master's end − start (RFC 5545: the same exact duration for every instance). */
  durationMs: number;
  /** All-day: the master's length in days (at least 1). */
  durationDays: number;
  rule: Recur | null;
  rdates: Time[];
  /** Keys (see keyOf) of the EXDATEs. */
  exdates: Set<string | number>;
  exceptions: Map<string | number, OccurrenceException>;
}

/** The zone an event's times are read in; an unknown name (which validation keeps out) falls back to UTC. */
function zoneOf(data: EventData): string {
  return isIanaZone(data.timeZone) ? data.timeZone : 'UTC';
}

/** The instant an all-day date starts in the event's zone. */
function midnight(date: string, zone: string): number {
  return zonedToUtc({ year: Number(date.slice(0, 4)), month: Number(date.slice(5, 7)), day: Number(date.slice(8, 10)), hour: 0, minute: 0, second: 0 }, zone);
}

/** How occurrence starts, EXDATEs and RECURRENCE-IDs are matched: the instant for timed series, the date for all-day. */
function keyOf(value: string, allDay: boolean): string | number {
  return allDay ? value.trim().slice(0, 10) : Date.parse(value);
}

/** A UNTIL the iterator can compare with floating times: the zone's wall clock for a UTC UNTIL, and the end of
 *  the day for a date UNTIL on a timed series (the whole day is meant). */
function untilInWallClock(rule: Recur, zone: string, allDay: boolean): void {
  const until = rule.until;
  if (!until) return;
  if (until.zone && until.zone.tzid === 'UTC' && !until.isDate) {
    rule.until = floating(utcToZoned(until.toUnixTime() * 1000, zone));
  } else if (until.isDate && !allDay) {
    rule.until = floating({ year: until.year, month: until.month, day: until.day, hour: 23, minute: 59, second: 59 });
  }
}

function seriesOf(data: EventData): Series | null {
  const zone = zoneOf(data);
  const allDay = data.isAllDay;
  const recurrence = data.recurrence;
  if (!recurrence) return null;
  const rrule = recurrence.rrule?.trim() ?? '';
  if (!rrule && recurrence.rdates.length === 0) return null;
  let dtstart: Time;
  let masterStartMs: number;
  let durationMs = 0;
  let durationDays = 1;
  if (allDay) {
    if (!isDateValue(data.start.slice(0, 10))) throw new RecurrenceError(`event start "${data.start}" is not a date`);
    dtstart = dateTime(data.start);
    masterStartMs = midnight(data.start, zone);
    durationDays = Math.max(1, daysBetween(data.start, data.end) || 1);
  } else {
    masterStartMs = Date.parse(data.start);
    if (Number.isNaN(masterStartMs)) throw new RecurrenceError(`event start "${data.start}" is not a time`);
    const end = Date.parse(data.end);
    durationMs = Number.isNaN(end) ? 0 : Math.max(0, end - masterStartMs);
    dtstart = floating(utcToZoned(masterStartMs, zone));
  }
  let rule: Recur | null = null;
  if (rrule) {
    rule = readRule(rrule);
    untilInWallClock(rule, zone, allDay);
  }
  const toTime = (value: string): Time | null => {
    if (allDay) return isDateValue(value.slice(0, 10)) ? dateTime(value) : null;
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? null : floating(utcToZoned(ms, zone));
  };
  const rdates = recurrence.rdates.map(toTime).filter((t): t is Time => t !== null);
  if (!rule) rdates.push(dtstart.clone()); // with RDATEs alone, DTSTART is the first instance
  rdates.sort((a, b) => a.compare(b));
  const exceptions = new Map<string | number, OccurrenceException>();
  for (const ex of data.exceptions ?? []) exceptions.set(keyOf(ex.recurrenceId, allDay), ex);
  return {
    zone,
    allDay,
    dtstart,
    dtstartWall: wallMs(fieldsOf(dtstart)),
    masterStartMs,
    durationMs,
    durationDays,
    rule,
    rdates,
    exdates: new Set(recurrence.exdates.map((x) => keyOf(x, allDay))),
    exceptions,
  };
}

/** An original (rule-generated) occurrence start. */
interface Original {
  startMs: number;
  /** As EventData writes it: UTC ISO or a date. */
  start: string;
  key: string | number;
}

/** The original occurrence at wall clock `fields` (`wall`: the same as wallMs gives), or null when it starts
 *  outside [from, to). */
function originalAt(series: Series, fields: WallClock, wall: number, from: number, to: number): Original | null {
  if (series.allDay) {
    const date = `${pad(fields.year, 4)}-${pad(fields.month)}-${pad(fields.day)}`;
    const startMs = midnight(date, series.zone);
    return startMs < from || startMs >= to ? null : { startMs, start: date, key: date };
  }
  // DTSTART itself keeps the master's instant (it may be the later one of an autumn overlap).
  const startMs = wall === series.dtstartWall ? series.masterStartMs : zonedToUtc(fields, series.zone);
  return startMs < from || startMs >= to ? null : { startMs, start: new Date(startMs).toISOString(), key: startMs };
}

const SKIP_UNITS: Record<string, { days: number; hours: number }> = {
  HOURLY: { days: 0, hours: 1 },
  DAILY: { days: 1, hours: 0 },
  WEEKLY: { days: 7, hours: 0 },
};

/** Whether the rule's iteration is a plain step that can be advanced by whole steps (see the file comment). */
function skippable(rule: Recur): boolean {
  if (rule.count || !(rule.freq in SKIP_UNITS)) return false;
  return Object.keys(partsOf(rule)).every((part) => part === 'BYDAY' || part === 'BYMONTHDAY');
}

/** Wall-clock fields read as UTC: a number that orders and subtracts like the wall clock. */
function wallMs(f: WallClock): number {
  return Date.UTC(f.year, f.month - 1, f.day, f.hour, f.minute, f.second);
}

/** Wall-clock starts of a series' original occurrences, in order (null: no more). */
interface Starts {
  next(): WallClock | null;
}

/**
 * The expansion of the series, positioned so that its next() gives every original occurrence whose wall-clock
 * start is at or after `fromWall` (and perhaps a few before it). With RDATEs it is an ICAL.RecurExpansion merging
 * them with the rule; without, the rule's iterator is read directly (the expansion would only clone each time it
 * passes on, a third of a view's time).
 */
function expansionFrom(series: Series, fromWall: number): Starts {
  let iterator: RecurIterator | null = null;
  let position: Time = series.dtstart.clone();
  if (series.rule) {
    iterator = guardedIterator(series.rule, series.dtstart);
    // The first next() gives the iterator's first occurrence and leaves it pending in `last` (ICAL.RecurExpansion
    // does the same when it starts from a component).
    const first = iterator.next();
    if (first && skippable(series.rule)) {
      const unit = SKIP_UNITS[series.rule.freq as string]!;
      const interval = series.rule.interval || 1;
      const behind = fromWall - wallMs(fieldsOf(first));
      const stepMs = unit.days ? unit.days * interval * DAY : unit.hours * interval * HOUR;
      // Whole steps, one fewer than fit: the position stays before the range (the step after it is computed by
      // the iterator itself, filters included).
      const steps = Math.floor(behind / stepMs) - 1;
      if (steps >= 1) {
        first.adjust(unit.days * interval * steps, unit.hours * interval * steps, 0, 0);
        position = first.clone();
        iterator.next();
      }
    }
  }
  // RDATEs before the position cannot start in the range once the rule has been skipped ahead; without a skip,
  // all of them count, even those before DTSTART (RFC 5545 does not forbid them, and clients write them).
  const ruleDates = series.rdates.filter((t) => t.compare(position) >= 0 || position.compare(series.dtstart) === 0);
  if (iterator && ruleDates.length === 0) {
    const rule = iterator;
    return {
      next() {
        if (rule.completed) return null;
        const pending = fieldsOf(rule.last);
        if (!rule.next()) rule.completed = true;
        return pending;
      },
    };
  }
  // Resuming from state is ICAL.RecurExpansion's documented serialisation path; EXDATEs are applied by the caller
  // (by instant), so the expansion only merges the rule with the RDATEs.
  const expansion: RecurExpansion = new ICAL.RecurExpansion({
    dtstart: series.dtstart,
    last: position,
    ruleIterators: iterator ? [iterator] : [],
    ruleDates,
    ruleDateInc: 0,
    exDates: [],
    exDateInc: 0,
    complete: false,
  } as unknown as ConstructorParameters<typeof ICAL.RecurExpansion>[0]);
  return {
    next() {
      const t = expansion.next();
      return t ? fieldsOf(t) : null;
    },
  };
}

/** Original occurrences (EXDATEs removed) starting in [from, to), in start order, at most `max`; `ended`: the
 *  series has none after these. */
function originalsBetween(series: Series, from: number, to: number, max: number): { originals: Original[]; ended: boolean } {
  const out: Original[] = [];
  const seen = new Set<string | number>();
  // Skip to a wall clock safely before `from`; stop once the wall clock is past anything that can start before `to`.
  const fromWall = from - OFFSET_REACH - DAY;
  const stopWall = to + OFFSET_REACH;
  const expansion = expansionFrom(series, fromWall);
  let ended = false;
  for (let steps = 0; steps < MAX_STEPS && out.length < max; steps++) {
    let fields: WallClock | null;
    try {
      fields = expansion.next();
    } catch (err) {
      throw err instanceof RecurrenceError ? err : new RecurrenceError(`RRULE cannot be expanded: ${message(err)}`);
    }
    if (!fields) {
      ended = true;
      break;
    }
    const wall = wallMs(fields);
    if (wall >= stopWall) break;
    const original = originalAt(series, fields, wall, from, to);
    if (!original || seen.has(original.key) || series.exdates.has(original.key)) continue;
    seen.add(original.key);
    out.push(original);
  }
  return { originals: out.sort((a, b) => a.startMs - b.startMs), ended };
}

function overlaps(start: number, end: number, from: number, to: number): boolean {
  return start < to && (end > from || (end === start && start >= from));
}

/** Start and end instants of a stored start/end pair of the series (times, or dates for all-day). */
function boundsOf(series: Pick<Series, 'allDay' | 'zone'>, start: string, end: string): [number, number] {
  if (series.allDay) {
    const s = midnight(start, series.zone);
    return [s, Math.max(s, midnight(end, series.zone))];
  }
  const s = Date.parse(start);
  const e = Date.parse(end);
  return [s, Number.isNaN(e) ? s : Math.max(s, e)];
}

function occurrenceOfOriginal(series: Series, original: Original): { occurrence: Occurrence; start: number; end: number } {
  if (series.allDay) {
    const end = addDays(original.start, series.durationDays);
    return {
      occurrence: { start: original.start, end, recurrenceId: original.start, isException: false, subject: null, location: null },
      start: original.startMs,
      end: midnight(end, series.zone),
    };
  }
  const end = original.startMs + series.durationMs;
  return {
    occurrence: { start: original.start, end: new Date(end).toISOString(), recurrenceId: original.start, isException: false, subject: null, location: null },
    start: original.startMs,
    end,
  };
}

function occurrenceOfException(series: Series, recurrenceId: string, ex: OccurrenceException): { occurrence: Occurrence; start: number; end: number } {
  const [start, end] = boundsOf(series, ex.start, ex.end);
  return {
    occurrence: { start: ex.start, end: ex.end, recurrenceId, isException: true, subject: ex.subject, location: ex.location },
    start,
    end,
  };
}

type Found = { occurrence: Occurrence; start: number; end: number };

/** The occurrences of a series overlapping [from, to), sorted, and whether the series has no original after `to`. */
function collect(series: Series, from: number, to: number, limit: number): { found: Found[]; ended: boolean } {
  const span = series.allDay ? (series.durationDays + 1) * DAY : series.durationMs;
  const found: Found[] = [];
  const handled = new Set<string | number>();
  const { originals, ended } = originalsBetween(series, from - span, to, limit + series.exceptions.size);
  for (const original of originals) {
    const ex = series.exceptions.get(original.key);
    if (ex) handled.add(original.key);
    if (ex?.isCancelled) continue;
    const candidate = ex ? occurrenceOfException(series, original.start, ex) : occurrenceOfOriginal(series, original);
    if (overlaps(candidate.start, candidate.end, from, to)) found.push(candidate);
  }
  // Exceptions moved into the range from an occurrence outside it; each must still be an occurrence of the series.
  for (const [key, ex] of series.exceptions) {
    if (handled.has(key) || ex.isCancelled) continue;
    const candidate = occurrenceOfException(series, ex.recurrenceId, ex);
    if (!overlaps(candidate.start, candidate.end, from, to)) continue;
    const [originalStart] = boundsOf(series, ex.recurrenceId, ex.recurrenceId);
    if (Number.isNaN(originalStart)) continue;
    const original = originalsBetween(series, originalStart, originalStart + 1, 1).originals[0];
    if (!original || original.key !== key) continue;
    candidate.occurrence.recurrenceId = original.start;
    found.push(candidate);
  }
  found.sort((a, b) => a.start - b.start || a.end - b.end);
  return { found: found.slice(0, limit), ended };
}

/** Occurrences of the event overlapping [from, to) (ms), in start order, at most `limit` (default 5000): the
 *  series is expanded with ICAL.RecurExpansion in the event's zone (wall-clock recurrence: 09:00 Berlin stays
 *  09:00 across DST), EXDATEs removed, RDATEs added, exceptions applied (moved, renamed, cancelled → left out),
 *  duration = end - start of the master (all-day: in days). A non-recurring event yields itself when it overlaps.
 *  Throws RecurrenceError for a rule ical.js cannot expand. */
export function occurrences(data: EventData, from: number, to: number, limit: number = DEFAULT_LIMIT): Occurrence[] {
  if (!(to > from) || !(limit > 0)) return [];
  const series = seriesOf(data);
  if (!series) {
    const [start, end] = boundsOf({ allDay: data.isAllDay, zone: zoneOf(data) }, data.start, data.end);
    if (Number.isNaN(start) || !overlaps(start, end, from, to)) return [];
    return [{ start: data.start, end: data.end, recurrenceId: null, isException: false, subject: null, location: null }];
  }
  return collect(series, from, to, limit).found.map((f) => f.occurrence);
}

/** The next occurrence starting at or after `after` (ms), or null (for reminders). */
export function nextOccurrence(data: EventData, after: number): Occurrence | null {
  const series = seriesOf(data);
  if (!series) {
    const [start] = boundsOf({ allDay: data.isAllDay, zone: zoneOf(data) }, data.start, data.end);
    return start >= after ? occurrences(data, start, start + 1)[0] ?? null : null;
  }
  // Moved exceptions can start after the series' last original: the view goes on to the latest of them.
  let lastException = -Infinity;
  for (const ex of series.exceptions.values()) if (!ex.isCancelled) lastException = Math.max(lastException, boundsOf(series, ex.start, ex.end)[0]);
  const horizon = after + 200 * YEAR;
  let from = after;
  let span = 8 * DAY;
  while (from <= horizon) {
    const to = from + span;
    const { found, ended } = collect(series, from, to, DEFAULT_LIMIT);
    const next = found.find((f) => f.start >= after);
    if (next) return next.occurrence;
    if (ended && lastException < to) return null;
    from = to;
    span = Math.min(span * 4, 50 * YEAR);
  }
  return null;
}
