/**
 * Incident IDs: what a user reads aloud to support, or types from a screenshot, so they are short
 * (`PGN-7K4Q-2M9X`), case-insensitive, and drawn from Crockford's base32 alphabet, which leaves out I, L, O and U:
 * no letter can be mistaken for a digit, and no accidental words. 40 random bits (8 symbols) make a collision
 * between two incidents of one deployment negligible (about one in a million after 1.5 million incidents); the store
 * still has the last word (a unique key: the lead retries on a clash).
 */
import crypto from 'node:crypto';

/** Crockford's base32: the digits, then the upper-case letters without I, L, O and U. */
export const CROCKFORD_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const INCIDENT_PREFIX = 'PGN';
const SYMBOLS = 8; // 8 × 5 bits = 40 bits
const CANONICAL = /^PGN-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/;

const format = (symbols: string): string => `${INCIDENT_PREFIX}-${symbols.slice(0, 4)}-${symbols.slice(4)}`;

/** A fresh incident ID, `PGN-XXXX-XXXX`, from 40 bits of the CSPRNG. */
export function newIncidentId(): string {
  const bytes = crypto.randomBytes(5);
  // 40 bits as one integer (exact in a double), then 8 groups of 5 bits, most significant first.
  let value = 0;
  for (const byte of bytes) value = value * 256 + byte;
  let symbols = '';
  for (let i = SYMBOLS - 1; i >= 0; i--) symbols += CROCKFORD_ALPHABET[Math.floor(value / 32 ** i) % 32];
  return format(symbols);
}

/** Whether `id` is already in canonical form (what the store holds and the API answers with). */
export const isCanonicalIncidentId = (id: string): boolean => CANONICAL.test(id);

/**
 * The canonical form of an incident ID as a person may have typed or said it: any case, spaces or dashes anywhere or
 * none, with or without the `PGN` prefix, and Crockford's decoding of look-alikes (O → 0, I and L → 1). Anything
 * else (a U, a wrong length, other characters) is `undefined`: the caller answers "no such incident" without a query.
 */
export function parseIncidentId(text: string): string | undefined {
  if (typeof text !== 'string' || text.length > 64) return undefined;
  let compact = text.toUpperCase().replace(/[\s\-_.]+/g, '');
  if (compact.length === SYMBOLS + INCIDENT_PREFIX.length && compact.startsWith(INCIDENT_PREFIX)) {
    compact = compact.slice(INCIDENT_PREFIX.length);
  }
  if (compact.length !== SYMBOLS) return undefined;
  const symbols = compact.replace(/O/g, '0').replace(/[IL]/g, '1');
  for (const symbol of symbols) if (!CROCKFORD_ALPHABET.includes(symbol)) return undefined;
  return format(symbols);
}
