/**
 * Multi-factor primitives of the built-in identity provider: TOTP (RFC 6238) enrolment and verification, and
 * recovery codes. Pure logic: the caller persists what these functions return and renders what the user sees.
 *
 * Formats the caller stores:
 * - sealed TOTP secret: `v1.<nonce>.<ciphertext‖tag>`, both parts base64url without padding. AES-256-GCM with a
 *   96-bit random nonce, the version string as additional data, and a key derived from the server secret with
 *   HKDF-SHA256 for this purpose only. A copy of the database alone does not yield the secrets; a changed server
 *   secret makes every sealed secret unreadable (SealedSecretError), so users fall back to recovery codes.
 * - last used time step: the integer `step` a successful verifyTotp returns; pass it back as `lastUsedStep`.
 * - recovery code hash: 64 lowercase hex characters (HMAC-SHA256), one per code; look up by equality.
 */
import crypto from 'node:crypto';
import { generateSync, generateURI, verifySync, ScureBase32Plugin } from 'otplib';

/** What every authenticator app supports (the defaults of the otpauth Key URI format). */
const PERIOD_SECONDS = 30;
const DIGITS = 6;
/** RFC 4226 §4 requires at least 128 bits and recommends 160 (the SHA-1 output size). */
const SECRET_BYTES = 20;
/**
 * Codes of the current step and of one step either side are accepted (RFC 6238 §5.2 "at most one time step" of
 * network delay, plus a phone clock up to ~30 s off): a code is accepted for 90 seconds, from 30 s before its own
 * step begins to 30 s after it ends. Expressed to otplib in seconds: a tolerance of one period on each side of
 * now covers exactly steps current−1 … current+1 wherever now falls within its step.
 */
const WINDOW_STEPS = 1;

const SEAL_VERSION = 'v1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** HKDF `info` strings: each derived key serves one purpose, so it cannot stand in for another use of the secret. */
const SEAL_KEY_INFO = 'pigeon identity mfa: totp secret sealing key v1';
const RECOVERY_KEY_INFO = 'pigeon identity mfa: recovery code hmac key v1';

/**
 * Recovery code alphabet: Crockford's base32 in lower case, without i, l, o and u, so nothing reads as another
 * character (0/o, 1/i/l). 32 symbols = 5 bits each: ten symbols are 50 bits.
 */
const RECOVERY_ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
const RECOVERY_CODE_COUNT = 10;
const RECOVERY_CODE_LENGTH = 10;
const RECOVERY_GROUP = 5;

/** A sealed secret that cannot be opened: another server secret, a damaged value or an unknown format version. */
export class SealedSecretError extends Error {
  override readonly name = 'SealedSecretError';
}

/** A caller's mistake (bad configuration or argument), not a user's: nothing to show the user. */
export class MfaArgumentError extends Error {
  override readonly name = 'MfaArgumentError';
}

export interface MfaOptions {
  /** The server secret (at least 32 bytes); keys for sealing and for recovery codes are derived from it. */
  serverSecret: Buffer;
  /** Shown by authenticator apps above the account (e.g. the site name). No colon (the otpauth label separator). */
  issuerName: string;
  /** Milliseconds since the epoch (the project's Clock.now). */
  now: () => number;
}

export interface TotpEnrollment {
  /** The secret for manual entry (RFC 4648 base32, 32 characters, no padding). Show once; never store. */
  secretBase32: string;
  /** `otpauth://totp/<issuer>:<account>?secret=…&issuer=…` for the QR code; SHA1, 6 digits, 30 s (implied defaults). */
  otpauthUri: string;
  /** What to store: the secret sealed (format in the module comment). */
  sealedSecret: string;
}

export type TotpFailureReason =
  /** Not six digits once spaces are removed. */
  | 'malformed'
  /** No step in the window produced this code. */
  | 'mismatch'
  /** The code is right but for a step at or before the last one used: a replay (or a second use within a step). */
  | 'replayed';

export type TotpVerification = { ok: true; step: number } | { ok: false; reason: TotpFailureReason };

export interface RecoveryCodes {
  /** To show the user once, grouped `xxxxx-xxxxx`. Never store. */
  codes: string[];
  /** To store, in the same order: HMAC-SHA256, lowercase hex. */
  hashes: string[];
}

export interface Mfa {
  newEnrollment(accountName: string): TotpEnrollment;
  /** Seals a base32 secret for storage (what newEnrollment stores; also for importing an existing secret). */
  sealSecret(secretBase32: string): string;
  /**
   * Checks a code against steps current−1 … current+1, refusing any step ≤ lastUsedStep (null: never used). On
   * success the caller must store the returned step as the new lastUsedStep before accepting the sign-in, and
   * store it conditionally (`… SET last_step = :step WHERE last_step IS NULL OR last_step < :step`, accept only if a
   * row changed) so two concurrent requests with the same code cannot both pass.
   * Throws SealedSecretError when the sealed secret cannot be opened.
   */
  verifyTotp(sealedSecret: string, code: string, lastUsedStep: number | null): TotpVerification;
  /** The code of the current step (tests, and checking an enrolment). */
  currentCode(secretBase32: string): string;
  newRecoveryCodes(): RecoveryCodes;
  /**
   * The hash to look up for a code as typed: case, spaces and dashes do not matter, and o/i/l read as 0/1/1.
   * Null when the input cannot be a recovery code (wrong length or characters): refuse without a lookup. A code is
   * single-use: consume it by deleting its row and accept only if a row was deleted (concurrent use).
   */
  recoveryCodeHash(code: string): string | null;
}

const base32 = new ScureBase32Plugin();

export function createMfa(options: MfaOptions): Mfa {
  const { serverSecret, issuerName, now } = options;
  if (!Buffer.isBuffer(serverSecret) || serverSecret.length < 32) {
    throw new MfaArgumentError('serverSecret must be at least 32 bytes');
  }
  requireLabelPart('issuerName', issuerName);

  const sealKey = deriveKey(serverSecret, SEAL_KEY_INFO);
  const recoveryKey = deriveKey(serverSecret, RECOVERY_KEY_INFO);
  const epochSeconds = () => Math.floor(now() / 1000);

  function seal(secret: Uint8Array): string {
    const nonce = crypto.randomBytes(NONCE_BYTES);
    const cipher = crypto.createCipheriv('aes-256-gcm', sealKey, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(SEAL_VERSION));
    const body = Buffer.concat([cipher.update(secret), cipher.final(), cipher.getAuthTag()]);
    return `${SEAL_VERSION}.${nonce.toString('base64url')}.${body.toString('base64url')}`;
  }

  function open(sealed: string): Uint8Array {
    const parts = typeof sealed === 'string' ? sealed.split('.') : [];
    if (parts.length !== 3 || parts[0] !== SEAL_VERSION) {
      throw new SealedSecretError('sealed secret: unknown format');
    }
    const nonce = strictBase64url(parts[1]!);
    const body = strictBase64url(parts[2]!);
    if (!nonce || nonce.length !== NONCE_BYTES || !body || body.length <= TAG_BYTES) {
      throw new SealedSecretError('sealed secret: malformed');
    }
    const decipher = crypto.createDecipheriv('aes-256-gcm', sealKey, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(SEAL_VERSION));
    decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(body.subarray(0, body.length - TAG_BYTES)), decipher.final()]);
    } catch {
      // GCM authentication failed: another server secret, or the value was altered.
      throw new SealedSecretError('sealed secret: cannot be opened');
    }
  }

  function decodeSecret(secretBase32: string): Uint8Array {
    let bytes: Uint8Array;
    try {
      bytes = base32.decode(secretBase32.replace(/\s+/g, '').toUpperCase());
    } catch {
      throw new MfaArgumentError('secret: not base32');
    }
    if (bytes.length < 16) throw new MfaArgumentError('secret: shorter than 128 bits');
    return bytes;
  }

  // The fixed parameters of every TOTP computation; the secret and the time vary.
  const totpParams = { algorithm: 'sha1', digits: DIGITS, period: PERIOD_SECONDS } as const;

  return {
    newEnrollment(accountName) {
      requireLabelPart('accountName', accountName);
      const secret = crypto.randomBytes(SECRET_BYTES);
      const secretBase32 = base32.encode(secret);
      const otpauthUri = generateURI({ ...totpParams, issuer: issuerName, label: accountName, secret: secretBase32 });
      return { secretBase32, otpauthUri, sealedSecret: seal(secret) };
    },

    sealSecret(secretBase32) {
      return seal(decodeSecret(secretBase32));
    },

    verifyTotp(sealedSecret, code, lastUsedStep) {
      if (lastUsedStep !== null && !(Number.isSafeInteger(lastUsedStep) && lastUsedStep >= 0)) {
        throw new MfaArgumentError('lastUsedStep must be null or a non-negative integer');
      }
      const secret = open(sealedSecret);
      // Apps show the code as "123 456"; people paste it with spaces around. Only ASCII digits count.
      const token = typeof code === 'string' && code.length <= 32 ? code.replace(/\s+/g, '') : '';
      if (!/^[0-9]{6}$/.test(token)) return { ok: false, reason: 'malformed' };

      const epoch = epochSeconds();
      const tolerance = WINDOW_STEPS * PERIOD_SECONDS;
      const newestStep = Math.floor(epoch / PERIOD_SECONDS) + WINDOW_STEPS;
      // otplib refuses an afterTimeStep beyond the window (a stored step from a clock that ran ahead): clamped to
      // the newest step of the window, it still refuses every step of the window, which is what it means.
      const afterTimeStep = lastUsedStep === null ? undefined : Math.min(lastUsedStep, newestStep);
      // otplib compares the expected and given codes in constant time.
      const fresh = verifySync({ ...totpParams, secret, token, epoch, epochTolerance: tolerance, afterTimeStep });
      // The functional API's result type covers HOTP too; a TOTP match always carries its time step.
      if (fresh.valid && 'timeStep' in fresh) return { ok: true, step: fresh.timeStep };
      if (afterTimeStep !== undefined) {
        // Tell a replay from a wrong code, for the caller's logs (the user should see the same message for both).
        const any = verifySync({ ...totpParams, secret, token, epoch, epochTolerance: tolerance });
        if (any.valid) return { ok: false, reason: 'replayed' };
      }
      return { ok: false, reason: 'mismatch' };
    },

    currentCode(secretBase32) {
      return generateSync({ ...totpParams, secret: decodeSecret(secretBase32), epoch: epochSeconds() });
    },

    newRecoveryCodes() {
      // Collisions among ten 50-bit codes are all but impossible; a Set makes "distinct" a guarantee all the same.
      const raw = new Set<string>();
      while (raw.size < RECOVERY_CODE_COUNT) raw.add(randomRecoveryCode());
      const codes = [...raw].map((c) => `${c.slice(0, RECOVERY_GROUP)}-${c.slice(RECOVERY_GROUP)}`);
      return { codes, hashes: [...raw].map(hashRecovery) };
    },

    recoveryCodeHash(code) {
      const normalised = normaliseRecoveryCode(code);
      return normalised === null ? null : hashRecovery(normalised);
    },
  };

  /**
   * HMAC under a server key rather than a slow password hash (bcrypt, scrypt, argon2): a slow hash protects
   * low-entropy secrets from guessing, but a recovery code carries 50 random bits, already beyond offline
   * guessing of a fast hash, and the key (absent from the database) makes the stored values useless without the
   * server secret too. It also makes the hash deterministic, so a typed code is found with one indexed lookup
   * rather than a slow comparison against each stored hash.
   */
  function hashRecovery(normalised: string): string {
    return crypto.createHmac('sha256', recoveryKey).update(normalised).digest('hex');
  }
}

function deriveKey(serverSecret: Buffer, info: string): Buffer {
  // No salt: the server secret is already uniformly random key material (RFC 5869 §3.1).
  return Buffer.from(crypto.hkdfSync('sha256', serverSecret, Buffer.alloc(0), info, 32));
}

/** Issuer and account name meet in the otpauth label `issuer:account`, so neither may hold a colon (Key URI format). */
function requireLabelPart(what: string, value: string): void {
  if (typeof value !== 'string' || value.trim() === '' || value.includes(':')) {
    throw new MfaArgumentError(`${what} must be a non-empty string without ':'`);
  }
}

/** Node's base64url decoder skips characters it does not know; a value that does not re-encode identically is damaged. */
function strictBase64url(text: string): Buffer | null {
  const bytes = Buffer.from(text, 'base64url');
  return bytes.toString('base64url') === text ? bytes : null;
}

function randomRecoveryCode(): string {
  let code = '';
  // 32 symbols: crypto.randomInt draws without modulo bias.
  for (let i = 0; i < RECOVERY_CODE_LENGTH; i++) code += RECOVERY_ALPHABET[crypto.randomInt(RECOVERY_ALPHABET.length)];
  return code;
}

function normaliseRecoveryCode(input: string): string | null {
  if (typeof input !== 'string' || input.length > 64) return null;
  const compact = input
    .toLowerCase()
    .replace(/[\s\-\u2010-\u2015\u2212]+/g, '') // spaces, hyphens and the dashes a phone may substitute
    // Crockford's reading of the look-alikes the alphabet leaves out.
    .replace(/o/g, '0')
    .replace(/[il]/g, '1');
  if (compact.length !== RECOVERY_CODE_LENGTH) return null;
  for (const ch of compact) if (!RECOVERY_ALPHABET.includes(ch)) return null;
  return compact;
}
