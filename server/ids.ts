import crypto from 'node:crypto';

/**
 * Opaque record ids: 16 url-safe characters from 96 random bits. Random rather than sequential so that ids
 * leak nothing about other users' data and cannot be guessed (isolation is still enforced by every query).
 */
export function newId(): string {
  return crypto.randomBytes(12).toString('base64url');
}
