/**
 * Password hashes: scrypt from node:crypto (memory-hard, no native dependency), stored as a self-describing string
 * `scrypt$N$r$p$salt$hash` so parameters can be raised later without invalidating old hashes.
 */
import crypto from 'node:crypto';
import { promisify } from 'node:util';

const scrypt = promisify(crypto.scrypt) as (
  password: string | Buffer,
  salt: Buffer,
  keylen: number,
  options: crypto.ScryptOptions,
) => Promise<Buffer>;

const DEFAULTS = { N: 16384, r: 8, p: 1, keyLength: 32 };

export async function hashPassword(password: string, params = DEFAULTS): Promise<string> {
  const salt = crypto.randomBytes(16);
  const hash = await scrypt(password.normalize('NFC'), salt, params.keyLength, {
    N: params.N,
    r: params.r,
    p: params.p,
    maxmem: 64 * 1024 * 1024,
  });
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64'), hash.toString('base64')].join('$');
}

/**
 * Checked when the user is unknown (or has no password): it costs as much as a real hash, so a wrong username takes
 * as long as a wrong password and response times do not reveal which accounts exist. No password matches it.
 */
const DECOY_HASH = `scrypt$16384$8$1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}`;

export async function verifyPassword(password: string, stored: string | null): Promise<boolean> {
  const target = stored ?? DECOY_HASH;
  const parts = target.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, saltB64, hashB64] = parts;
  const expected = Buffer.from(hashB64!, 'base64');
  const actual = await scrypt(password.normalize('NFC'), Buffer.from(saltB64!, 'base64'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: 64 * 1024 * 1024,
  });
  return crypto.timingSafeEqual(actual, expected) && stored !== null;
}

/** Dev and demo passwords must still be of a sane size; real policy belongs to the identity provider. */
export function passwordProblem(password: string): string | undefined {
  // Characters as people (and JSON Schema's minLength) count them: code points, not UTF-16 units — an emoji is one.
  const length = [...password].length;
  if (length < 8) return 'must be at least 8 characters';
  if (length > 1024) return 'must be at most 1024 characters';
  return undefined;
}
