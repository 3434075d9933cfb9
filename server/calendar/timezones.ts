/**
 * Time zones for the calendar: naming (IANA names, Windows names, Outlook's display names) and conversion between
 * wall-clock times and instants, all through Intl (Node carries the full ICU time zone database) and windows-iana.
 *
 * Conversions run thousands of times for one calendar view, and an Intl call costs microseconds, so the offsets of
 * a zone are worked out once per year as a list of transitions and then looked up by binary search. The memos below
 * hold derived, immutable facts about the time zone database (never request state), so sharing them across callers
 * is safe; they are bounded so that a stream of odd zone names cannot grow them without limit.
 */
import { findIana, IANA_ALIAS_MAP, WINDOWS_TO_IANA_MAP } from 'windows-iana';

export interface WallClock {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

/** One change of a zone's UTC offset: from `at` (UTC ms) on, local time is UTC + `offset` ms (before: `before`). */
export interface ZoneTransition {
  at: number;
  before: number;
  offset: number;
}

const SECOND = 1000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
/** Offsets on Earth lie within −12 h and +14 h; a local time's instant is within this of the same fields read as UTC. */
const OFFSET_REACH = 15 * HOUR;
/** How far apart the offset is sampled when a zone-year is built; changes are then pinned down by bisection. Two
 *  changes closer together than this would be missed; the time zone database has none in modern times. */
const SAMPLE_STEP = 4 * DAY;
const MEMO_LIMIT = 4096;

/** Remembers up to MEMO_LIMIT entries; when full it starts over (cheap, and these are pure recomputable facts). */
function boundedSet<K, V>(memo: Map<K, V>, key: K, value: V): V {
  if (memo.size >= MEMO_LIMIT) memo.clear();
  memo.set(key, value);
  return value;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** An Intl formatter giving every wall-clock field of an instant in `zone` (throws RangeError for an unknown zone). */
function formatterFor(zone: string): Intl.DateTimeFormat {
  const known = formatters.get(zone);
  if (known) return known;
  const formatter = new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    hourCycle: 'h23',
    era: 'short',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  });
  return boundedSet(formatters, zone, formatter);
}

/** UTC milliseconds of wall-clock fields read as UTC (years 0–99 too, which Date.UTC would move to the 1900s). */
function fieldsAsUtc(f: WallClock): number {
  if (f.year >= 100) return Date.UTC(f.year, f.month - 1, f.day, f.hour, f.minute, f.second);
  const d = new Date(0);
  d.setUTCFullYear(f.year, f.month - 1, f.day);
  d.setUTCHours(f.hour, f.minute, f.second, 0);
  return d.getTime();
}

/** The zone's offset (ms) at an instant, straight from Intl (slow: used to build the per-year transition lists). */
function intlOffset(zone: string, ms: number): number {
  const whole = Math.floor(ms / SECOND) * SECOND;
  const fields: Record<string, string> = {};
  for (const part of formatterFor(zone).formatToParts(new Date(whole))) fields[part.type] = part.value;
  let year = Number(fields.year);
  if (fields.era === 'BC' || fields.era === 'B') year = 1 - year;
  const local = fieldsAsUtc({
    year,
    month: Number(fields.month),
    day: Number(fields.day),
    hour: Number(fields.hour),
    minute: Number(fields.minute),
    second: Number(fields.second),
  });
  return local - whole;
}

interface ZoneYear {
  /** The (UTC) year's bounds, ms. */
  start: number;
  end: number;
  /** Offset in force at the start of the (UTC) year. */
  initial: number;
  transitions: ZoneTransition[];
}

/** Zone-years by zone, then year. */
const zoneYears = new Map<string, Map<number, ZoneYear>>();
let zoneYearCount = 0;

/** The offset changes of `zone` within the UTC calendar year `year`. */
function zoneYear(zone: string, year: number): ZoneYear {
  let years = zoneYears.get(zone);
  const known = years?.get(year);
  if (known) return known;
  if (zoneYearCount >= MEMO_LIMIT) {
    zoneYears.clear();
    zoneYearCount = 0;
    years = undefined;
  }
  if (!years) zoneYears.set(zone, (years = new Map()));
  const built = buildZoneYear(zone, year);
  years.set(year, built);
  zoneYearCount++;
  return built;
}

function buildZoneYear(zone: string, year: number): ZoneYear {
  const start = fieldsAsUtc({ year, month: 1, day: 1, hour: 0, minute: 0, second: 0 });
  const end = fieldsAsUtc({ year: year + 1, month: 1, day: 1, hour: 0, minute: 0, second: 0 });
  const initial = intlOffset(zone, start);
  const transitions: ZoneTransition[] = [];
  // A change at the very first second of the year belongs to this year (the previous one samples up to the second
  // before it).
  const yearBefore = intlOffset(zone, start - SECOND);
  if (yearBefore !== initial) transitions.push({ at: start, before: yearBefore, offset: initial });
  let lo = start;
  let loOffset = initial;
  for (let probe = Math.min(start + SAMPLE_STEP, end - SECOND); ; probe = Math.min(probe + SAMPLE_STEP, end - SECOND)) {
    // Every change between lo and probe, earliest first (bisection to the second: offsets change on whole seconds).
    while (intlOffset(zone, probe) !== loOffset) {
      let a = lo;
      let b = probe;
      while (b - a > SECOND) {
        const mid = a + Math.floor((b - a) / 2 / SECOND) * SECOND;
        if (intlOffset(zone, mid) === loOffset) a = mid;
        else b = mid;
      }
      const offset = intlOffset(zone, b);
      transitions.push({ at: b, before: loOffset, offset });
      lo = b;
      loOffset = offset;
    }
    lo = probe;
    if (probe >= end - SECOND) break;
  }
  return { start, end, initial, transitions };
}

function utcYearOf(ms: number): number {
  return new Date(ms).getUTCFullYear();
}

/** The zone-year last looked up: a view converts many times of one zone and year in a row. */
let lastLookup: { zone: string; year: ZoneYear } | null = null;

/** The zone's UTC offset (ms) at an instant. */
export function offsetAt(zone: string, ms: number): number {
  if (zone === 'UTC') return 0;
  let year: ZoneYear;
  if (lastLookup && lastLookup.zone === zone && ms >= lastLookup.year.start && ms < lastLookup.year.end) {
    year = lastLookup.year;
  } else {
    year = zoneYear(zone, utcYearOf(ms));
    lastLookup = { zone, year };
  }
  const { initial, transitions } = year;
  let offset = initial;
  // Few transitions per year: a linear scan beats a binary search here.
  for (const t of transitions) {
    if (t.at > ms) break;
    offset = t.offset;
  }
  return offset;
}

/** Every offset change of `zone` with from ≤ at < to, in order. */
export function zoneTransitions(zone: string, from: number, to: number): ZoneTransition[] {
  const out: ZoneTransition[] = [];
  if (zone === 'UTC' || !(to > from)) return out;
  for (let year = utcYearOf(from); year <= utcYearOf(to - 1); year++) {
    for (const t of zoneYear(zone, year).transitions) if (t.at >= from && t.at < to) out.push(t);
  }
  return out;
}

const ianaChecks = new Map<string, boolean>();

/** Whether Intl knows `name` as a time zone (IANA names and their links; not bare UTC offsets such as "+01:00"). */
export function isIanaZone(name: string): boolean {
  if (typeof name !== 'string' || name.length === 0 || name.length > 80) return false;
  if (!/^[A-Za-z]/.test(name) || /\s/.test(name)) return false;
  const known = ianaChecks.get(name);
  if (known !== undefined) return known;
  let ok = true;
  try {
    formatterFor(name);
  } catch {
    ok = false;
  }
  return boundedSet(ianaChecks, name, ok);
}

/** `name` with the spelling Intl gives it ("europe/berlin" → "Europe/Berlin"); links stay links. */
function ianaSpelling(name: string): string {
  const resolved = formatterFor(name).resolvedOptions().timeZone;
  return resolved.toLowerCase() === name.toLowerCase() ? resolved : name;
}

/**
 * Outlook's display names that name no city: the Windows zone behind each. Everything else ("(UTC+01:00) Amsterdam,
 * Berlin, Bern, Rome, Stockholm, Vienna") is matched by its cities against the IANA names.
 */
const DISPLAY_NAMES_WITHOUT_CITIES: Record<string, string> = {
  'coordinated universal time': 'UTC',
  'pacific time (us & canada)': 'Pacific Standard Time',
  'mountain time (us & canada)': 'Mountain Standard Time',
  'central time (us & canada)': 'Central Standard Time',
  'eastern time (us & canada)': 'Eastern Standard Time',
  'atlantic time (canada)': 'Atlantic Standard Time',
  alaska: 'Alaskan Standard Time',
  hawaii: 'Hawaiian Standard Time',
  arizona: 'US Mountain Standard Time',
  'indiana (east)': 'US Eastern Standard Time',
  saskatchewan: 'Canada Central Standard Time',
  newfoundland: 'Newfoundland Standard Time',
  'mid-atlantic - old': 'Mid-Atlantic Standard Time',
  'coordinated universal time-02': 'UTC-02',
  'coordinated universal time-08': 'UTC-08',
  'coordinated universal time-09': 'UTC-09',
  'coordinated universal time-11': 'UTC-11',
  'coordinated universal time+12': 'UTC+12',
  'coordinated universal time+13': 'UTC+13',
};

let cityIndex: Map<string, string[]> | null = null;

/** IANA zones by their last segment, lower-cased with spaces ("new york" → America/New_York), canonical names first. */
function zonesByCity(): Map<string, string[]> {
  if (cityIndex) return cityIndex;
  const index = new Map<string, string[]>();
  const add = (zone: string) => {
    const city = zone.slice(zone.lastIndexOf('/') + 1).replace(/_/g, ' ').toLowerCase();
    const list = index.get(city) ?? [];
    if (!list.includes(zone)) list.push(zone);
    index.set(city, list);
  };
  for (const zone of Intl.supportedValuesOf('timeZone')) add(zone);
  for (const entry of WINDOWS_TO_IANA_MAP) for (const zone of entry.iana) if (isIanaZone(zone)) add(zone);
  // Current spellings ICU lists under their older names (Asia/Kolkata for Asia/Calcutta, …).
  for (const entry of IANA_ALIAS_MAP) for (const zone of entry.alias) if (isIanaZone(zone)) add(zone);
  cityIndex = index;
  return index;
}

/** The zone's standard (smaller) offset in the year of `at`: what Outlook's "(UTC+01:00)" prefix states. */
function standardOffset(zone: string, at: number): number {
  const year = utcYearOf(at);
  const jan = offsetAt(zone, fieldsAsUtc({ year, month: 1, day: 15, hour: 12, minute: 0, second: 0 }));
  const jul = offsetAt(zone, fieldsAsUtc({ year, month: 7, day: 15, hour: 12, minute: 0, second: 0 }));
  return Math.min(jan, jul);
}

/** An Outlook display name ("(UTC+01:00) Amsterdam, Berlin, …", older "(GMT+01.00) …") as an IANA zone, or null. */
function zoneOfDisplayName(tzid: string): string | null {
  const m = /^\((?:UTC|GMT)(?:\s*([+-])(\d{1,2})[:.](\d{2}))?\)\s*(.+)$/i.exec(tzid);
  if (!m) return null;
  const sign = m[1] === '-' ? -1 : 1;
  const stated = m[2] ? sign * (Number(m[2]) * HOUR + Number(m[3]) * 60_000) : 0;
  const places = (m[4] ?? '').trim();
  const windowsName = DISPLAY_NAMES_WITHOUT_CITIES[places.toLowerCase()];
  if (windowsName) {
    const zone = windowsName === 'UTC' ? 'UTC' : findIana(windowsName)[0];
    if (zone && isIanaZone(zone)) return zone;
  }
  const now = Date.now();
  const index = zonesByCity();
  for (const place of places.split(/,|\s+-\s+|\//)) {
    const city = place.replace(/\(.*?\)/g, '').trim().toLowerCase();
    for (const zone of index.get(city) ?? []) {
      if (standardOffset(zone, now) === stated) return zone;
    }
  }
  return null;
}

const ianaNames = new Map<string, string | null>();

/** An IANA zone name for a TZID as clients write it: IANA names as they are (validated with Intl), Windows names
 *  (Outlook: "W. Europe Standard Time", "Pacific Standard Time") through windows-iana, Outlook's "(UTC+01:00)
 *  Amsterdam, Berlin…" display names when you can map them, else null. Also Thunderbird's old prefixed names
 *  ("/mozilla.org/20050126_1/Europe/Berlin"). */
export function ianaZone(tzid: string): string | null {
  if (typeof tzid !== 'string') return null;
  const name = tzid.trim().replace(/^"(.*)"$/, '$1').trim();
  if (!name || name.length > 200) return null;
  const known = ianaNames.get(name);
  if (known !== undefined) return known;
  return boundedSet(ianaNames, name, resolveZoneName(name));
}

function resolveZoneName(name: string): string | null {
  if (isIanaZone(name)) return ianaSpelling(name);
  const windows = findIana(name)[0];
  if (windows && isIanaZone(windows)) return windows;
  if (name.includes('/')) {
    // Vendor-prefixed IANA names: the longest tail that is a zone ("…/America/Argentina/Buenos_Aires").
    const segments = name.split('/').filter(Boolean);
    for (let n = Math.min(3, segments.length); n >= 1; n--) {
      const tail = segments.slice(-n).join('/');
      if (tail !== name && isIanaZone(tail)) return ianaSpelling(tail);
    }
  }
  return zoneOfDisplayName(name);
}

/**
 * UTC instant (ms) of a wall-clock time in an IANA zone; a time skipped by a DST gap moves forward by the gap,
 * an ambiguous one (fall back) takes the earlier instant (RFC 5545 §3.3.5 semantics). Throws RangeError for a zone
 * Intl does not know.
 */
export function zonedToUtc(local: WallClock, zone: string): number {
  const asUtc = fieldsAsUtc(local);
  if (zone === 'UTC') return asUtc;
  // The common case: one offset all around (no change within a day of it), so the reading is unique.
  const before = offsetAt(zone, asUtc - OFFSET_REACH);
  if (before === offsetAt(zone, asUtc + OFFSET_REACH) && before === offsetAt(zone, asUtc - before)) return asUtc - before;
  // The offsets in force anywhere the instant could be, as consecutive periods [from, to).
  const windowStart = asUtc - OFFSET_REACH;
  const windowEnd = asUtc + OFFSET_REACH;
  const periods: Array<{ from: number; to: number; offset: number }> = [];
  let from = -Infinity;
  let offset = offsetAt(zone, windowStart);
  for (const t of zoneTransitions(zone, windowStart, windowEnd)) {
    periods.push({ from, to: t.at, offset });
    from = t.at;
    offset = t.offset;
  }
  periods.push({ from, to: Infinity, offset });

  let earliest = Infinity;
  for (const p of periods) {
    const instant = asUtc - p.offset;
    if (instant >= p.from && instant < p.to && instant < earliest) earliest = instant;
  }
  if (earliest !== Infinity) return earliest;
  // In a gap: read with the offset before it, which lands the same distance past the gap's end.
  for (let i = 0; i + 1 < periods.length; i++) {
    const before = periods[i]!;
    const after = periods[i + 1]!;
    if (asUtc - before.offset >= after.from && asUtc - after.offset < after.from) return asUtc - before.offset;
  }
  return asUtc - periods[0]!.offset;
}

/** Wall-clock fields of an instant in a zone; `weekday` as Date#getUTCDay counts (0 Sunday … 6 Saturday). */
export function utcToZoned(ms: number, zone: string): WallClock & { weekday: number } {
  const d = new Date(ms + offsetAt(zone, ms));
  return {
    year: d.getUTCFullYear(),
    month: d.getUTCMonth() + 1,
    day: d.getUTCDate(),
    hour: d.getUTCHours(),
    minute: d.getUTCMinutes(),
    second: d.getUTCSeconds(),
    weekday: d.getUTCDay(),
  };
}

/** Zones to try first when a calendar's own zone block has to be matched to an IANA name: one per Windows zone
 *  (the names Outlook users pick from), then every other zone, then the fixed-offset Etc/GMT±N ones. */
function candidateZones(): string[] {
  const preferred: string[] = [];
  for (const entry of WINDOWS_TO_IANA_MAP) if (entry.territory === '001') preferred.push(...(entry.iana as readonly string[]).slice(0, 1));
  const fixed: string[] = [];
  for (let h = -14; h <= 12; h++) fixed.push(h === 0 ? 'Etc/GMT' : `Etc/GMT${h < 0 ? '+' : '-'}${Math.abs(h)}`);
  const all = [...preferred, ...Intl.supportedValuesOf('timeZone'), ...fixed];
  return [...new Set(all)].filter(isIanaZone);
}

/**
 * An IANA zone whose offsets equal `offsetOf` (a custom zone's, e.g. from a VTIMEZONE block) at every day of
 * [from, to), or null. Used to give an event planned in a zone we only know by its definition a real zone name.
 */
export function zoneMatching(offsetOf: (ms: number) => number, from: number, to: number): string | null {
  const probes: number[] = [];
  for (let t = from; t < to; t += DAY) probes.push(t);
  if (probes.length === 0) probes.push(from);
  // Two cheap probes first (straight from Intl, no year tables), the full daily comparison for the survivors.
  const quick = [probes[0]!, probes[Math.floor(probes.length / 2)]!];
  const wanted = quick.map(offsetOf);
  for (const zone of candidateZones()) {
    if (!quick.every((t, i) => intlOffset(zone, t) === wanted[i])) continue;
    if (probes.every((t) => offsetAt(zone, t) === offsetOf(t))) return zone;
  }
  return null;
}
