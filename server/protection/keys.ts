/**
 * Protection private keys at rest: sealed with a key derived from the server secret, so a copy of the database alone
 * opens no protected message.
 *
 * Format: `v1.<nonce>.<ciphertext‖tag>`, both parts base64url without padding. AES-256-GCM with a 96-bit random
 * nonce, the version string as additional data, and a key derived from the server secret with HKDF-SHA256 and an
 * `info` string used for nothing else (the same construction as the identity provider's sealed TOTP secrets, with
 * its own key). A changed server secret makes every sealed key unreadable (SealedKeyError).
 */
import crypto from 'node:crypto';

const SEAL_VERSION = 'v1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const MIN_SECRET_BYTES = 32;
/** HKDF `info`: this derived key seals protection private keys and can stand in for no other use of the secret. */
const SEAL_KEY_INFO = 'pigeon protection: private key sealing key v1';

/** A sealed key that cannot be opened: another server secret, a damaged value or an unknown format version. */
export class SealedKeyError extends Error {
  override readonly name = 'SealedKeyError';
}

export interface KeySealer {
  seal(privateKeyPem: string): string;
  /** Throws SealedKeyError when the value cannot be opened. */
  open(sealed: string): string;
}

/** base64url without padding, strictly (a value that only decodes leniently was not written by seal()). */
function strictBase64url(text: string): Buffer | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64url');
  return bytes.toString('base64url') === text ? bytes : undefined;
}

export function createKeySealer(serverSecret: Buffer): KeySealer {
  if (!Buffer.isBuffer(serverSecret) || serverSecret.length < MIN_SECRET_BYTES) {
    // A configuration mistake, not a sealed value that fails to open.
    throw new RangeError(`serverSecret must be at least ${MIN_SECRET_BYTES} bytes`);
  }
  const key = Buffer.from(crypto.hkdfSync('sha256', serverSecret, Buffer.alloc(0), SEAL_KEY_INFO, KEY_BYTES));

  return {
    seal(privateKeyPem) {
      if (typeof privateKeyPem !== 'string' || privateKeyPem === '') throw new TypeError('privateKeyPem must be a non-empty string');
      const nonce = crypto.randomBytes(NONCE_BYTES);
      const cipher = crypto.createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
      cipher.setAAD(Buffer.from(SEAL_VERSION));
      const body = Buffer.concat([cipher.update(privateKeyPem, 'utf8'), cipher.final(), cipher.getAuthTag()]);
      return `${SEAL_VERSION}.${nonce.toString('base64url')}.${body.toString('base64url')}`;
    },

    open(sealed) {
      const parts = typeof sealed === 'string' ? sealed.split('.') : [];
      if (parts.length !== 3 || parts[0] !== SEAL_VERSION) throw new SealedKeyError('sealed key: unknown format');
      const nonce = strictBase64url(parts[1]!);
      const body = strictBase64url(parts[2]!);
      if (!nonce || nonce.length !== NONCE_BYTES || !body || body.length <= TAG_BYTES) throw new SealedKeyError('sealed key: malformed');
      const decipher = crypto.createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(SEAL_VERSION));
      decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
      try {
        return Buffer.concat([decipher.update(body.subarray(0, body.length - TAG_BYTES)), decipher.final()]).toString('utf8');
      } catch {
        // GCM authentication failed: another server secret, or the value was altered.
        throw new SealedKeyError('sealed key: cannot be opened');
      }
    },
  };
}
