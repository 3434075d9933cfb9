/**
 * What Pigeon keeps of a calendar event (an item of type `event`: `subject` is the title, `bodyText` the
 * description, `receivedAt` the first start, `data` this record) and of a contact (type `contact`: `subject` is the
 * display name, `data` a ContactData). Times are instants in UTC (ISO 8601 with `Z`) with the IANA zone the event
 * was planned in; an all-day event has dates (`YYYY-MM-DD`, end exclusive). Recurrence is kept as iCalendar text
 * (RRULE, EXDATE, RDATE as RFC 5545 values in the event's zone) and expanded by ical.js, never by hand.
 */

export type AttendeeType = 'required' | 'optional' | 'resource';
/** An attendee's answer, as iCalendar PARTSTAT says it (needsAction: not answered yet). */
export type ResponseStatus = 'needsAction' | 'accepted' | 'tentative' | 'declined' | 'delegated';
export type ShowAs = 'free' | 'tentative' | 'busy' | 'oof' | 'workingElsewhere';

export interface EventPerson {
  name: string;
  address: string;
}

export interface Attendee extends EventPerson {
  type: AttendeeType;
  status: ResponseStatus;
  /** When the attendee answered (ISO), if they have. */
  respondedAt: string | null;
}

export interface Recurrence {
  /** The RRULE value (`FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20270101T000000Z`), interpreted in the event's zone. */
  rrule: string;
  /** Starts removed from the series (the original start of each occurrence, UTC ISO; dates for all-day series). */
  exdates: string[];
  /** Extra starts (UTC ISO; dates for all-day series). */
  rdates: string[];
}

/** One occurrence of a series changed on its own (iCalendar: a VEVENT with RECURRENCE-ID). */
export interface OccurrenceException {
  /** The occurrence's original start (UTC ISO; a date for all-day series): which occurrence this changes. */
  recurrenceId: string;
  start: string;
  end: string;
  subject: string | null;
  location: string | null;
  isCancelled: boolean;
}

export interface EventData {
  /** The iCalendar UID, shared by every copy of a meeting (organiser's and attendees'). */
  uid: string;
  /** iCalendar SEQUENCE: bumped by the organiser on every change attendees must see. */
  sequence: number;
  start: string;
  end: string;
  timeZone: string;
  isAllDay: boolean;
  location: string | null;
  organizer: EventPerson | null;
  attendees: Attendee[];
  /** Minutes before each occurrence's start; null: no reminder. */
  reminderMinutesBeforeStart: number | null;
  recurrence: Recurrence | null;
  exceptions: OccurrenceException[];
  showAs: ShowAs;
  /** The whole event was cancelled (by its organiser). */
  isCancelled: boolean;
  /** The owner's own standing: `organizer`, or their answer as an attendee. */
  responseStatus: 'organizer' | ResponseStatus;
  /** The organiser's last change the owner's copy reflects (iCalendar DTSTAMP of the last iTIP message applied). */
  lastItipStamp: string | null;
}

export type PhoneType = 'mobile' | 'business' | 'home' | 'other';

export interface ContactData {
  /** The vCard UID: stable across exports and imports. */
  uid: string;
  givenName: string | null;
  surname: string | null;
  emailAddresses: EventPerson[];
  phones: Array<{ type: PhoneType; number: string }>;
  company: string | null;
  jobTitle: string | null;
  department: string | null;
  addresses: Array<{ type: 'home' | 'business' | 'other'; street: string; city: string; region: string; postalCode: string; country: string }>;
  birthday: string | null;
}

/** The name a contact's photo attachment has (the item's only attachment named so; fetched on demand). */
export const CONTACT_PHOTO_NAME = 'contact-photo';

/** An event's lookup key in its folder: kept as the item's internetMessageId (never a real Message-ID, which has `<>`). */
export const uidKey = (uid: string) => `uid:${uid}`;
