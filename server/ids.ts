import crypto from 'node:crypto';

/**
 * Opaque record ids: 16 url-safe characters from 96 random bits. Random rather than sequential so that ids
 * leak nothing about other users' data and cannot be guessed (isolation is still enforced by every query).
 *
 * An id never starts with `-` or `_`: operators paste ids into the admin CLI (`--tenant <id>`), where an argument
 * starting with a dash reads as an option. One draw in 32 is drawn again, which costs well under a bit.
 */
export function newId(): string {
  for (;;) {
    const id = crypto.randomBytes(12).toString('base64url');
    if (id[0] !== '-' && id[0] !== '_') return id;
  }
}
