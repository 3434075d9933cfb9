import crypto from 'node:crypto';
import { createMfa, MfaArgumentError, SealedSecretError, type Mfa } from '../../server/identity/mfa';

/*
 * TOTP is computed here independently (node:crypto HMAC-SHA1, RFC 4226 §5.3 truncation, RFC 6238 time steps) and
 * base32 is decoded by hand, so a misuse of otplib (wrong period, digits, algorithm, secret encoding) fails these
 * tests instead of agreeing with itself.
 */
const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32Decode(text: string): Buffer {
  let bits = '';
  for (const ch of text.replace(/=+$/, '')) {
    const v = B32.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${ch}`);
    bits += v.toString(2).padStart(5, '0');
  }
  const bytes: number[] = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

function base32Encode(bytes: Buffer): string {
  let bits = '';
  for (const b of bytes) bits += b.toString(2).padStart(8, '0');
  let out = '';
  for (let i = 0; i < bits.length; i += 5) out += B32[parseInt(bits.slice(i, i + 5).padEnd(5, '0'), 2)];
  return out;
}

function hotp(secret: Buffer, counter: number, digits: number): string {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const mac = crypto.createHmac('sha1', secret).update(msg).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 10 ** digits).padStart(digits, '0');
}

const codeAtStep = (secret: Buffer, step: number) => hotp(secret, step, 6);

const SERVER_SECRET = crypto.randomBytes(32);

function build(nowMs: () => number, serverSecret = SERVER_SECRET): Mfa {
  return createMfa({ serverSecret, issuerName: 'Pigeon Mail', now: nowMs });
}

describe('reference implementation', () => {
  test('matches the RFC 4226 appendix D HOTP values', () => {
    const secret = Buffer.from('12345678901234567890');
    const expected = ['755224', '287082', '359152', '969429', '338314', '254676', '287922', '162583', '399871', '520489'];
    expect(expected.map((_, i) => hotp(secret, i, 6))).toEqual(expected);
  });
});

describe('TOTP', () => {
  // RFC 6238 appendix B, SHA1 rows (8 digits): time in seconds, expected code.
  const RFC6238_SHA1: Array<[number, string]> = [
    [59, '94287082'],
    [1111111109, '07081804'],
    [1111111111, '14050471'],
    [1234567890, '89005924'],
    [2000000000, '69279037'],
    [20000000000, '65353130'],
  ];
  const rfcSecret = Buffer.from('12345678901234567890');

  test.each(RFC6238_SHA1)('RFC 6238 vector at T=%d passes the verify path (last six digits of %s)', (seconds, eight) => {
    expect(hotp(rfcSecret, Math.floor(seconds / 30), 8)).toBe(eight);
    const mfa = build(() => seconds * 1000);
    const six = eight.slice(-6);
    const sealed = mfa.sealSecret(base32Encode(rfcSecret));
    expect(mfa.currentCode(base32Encode(rfcSecret))).toBe(six);
    expect(mfa.verifyTotp(sealed, six, null)).toEqual({ ok: true, step: Math.floor(seconds / 30) });
    // One digit off is refused.
    const wrong = six.slice(0, 5) + String((Number(six[5]) + 1) % 10);
    expect(mfa.verifyTotp(sealed, wrong, null)).toEqual({ ok: false, reason: 'mismatch' });
  });

  test('currentCode follows the clock, 30 s steps', () => {
    let now = Date.UTC(2026, 0, 1, 12, 0, 0);
    const mfa = build(() => now);
    const { secretBase32 } = mfa.newEnrollment('alice@example.com');
    const secret = base32Decode(secretBase32);
    expect(secret).toHaveLength(20);
    for (let i = 0; i < 5; i++) {
      expect(mfa.currentCode(secretBase32)).toBe(codeAtStep(secret, Math.floor(now / 30000)));
      now += 30000;
    }
  });

  describe('window: steps current−1 … current+1', () => {
    const stepStart = 63_333_333; // a step number (about 2030)
    // At the first and the last millisecond of the current step: the window must not depend on the offset.
    test.each([
      ['start of the step', 0],
      ['end of the step', 29_999],
    ])('%s', (_label, offsetMs) => {
      const now = stepStart * 30000 + offsetMs;
      const mfa = build(() => now);
      const enrollment = mfa.newEnrollment('alice');
      const secret = base32Decode(enrollment.secretBase32);
      const result = (delta: number) => mfa.verifyTotp(enrollment.sealedSecret, codeAtStep(secret, stepStart + delta), null);
      expect(result(-2)).toEqual({ ok: false, reason: 'mismatch' });
      expect(result(-1)).toEqual({ ok: true, step: stepStart - 1 });
      expect(result(0)).toEqual({ ok: true, step: stepStart });
      expect(result(1)).toEqual({ ok: true, step: stepStart + 1 });
      expect(result(2)).toEqual({ ok: false, reason: 'mismatch' });
    });
  });

  test('a used step is refused: replay protection', () => {
    const now = Date.UTC(2026, 5, 1, 8, 30, 10);
    const step = Math.floor(now / 30000);
    const mfa = build(() => now);
    const { secretBase32, sealedSecret } = mfa.newEnrollment('alice');
    const secret = base32Decode(secretBase32);
    const code = codeAtStep(secret, step);

    const first = mfa.verifyTotp(sealedSecret, code, null);
    expect(first).toEqual({ ok: true, step });
    expect(mfa.verifyTotp(sealedSecret, code, step)).toEqual({ ok: false, reason: 'replayed' });
    // An older code of the window, after a newer one was used, is a replay too.
    expect(mfa.verifyTotp(sealedSecret, codeAtStep(secret, step - 1), step)).toEqual({ ok: false, reason: 'replayed' });
    // The next step's code is still good.
    expect(mfa.verifyTotp(sealedSecret, codeAtStep(secret, step + 1), step)).toEqual({ ok: true, step: step + 1 });
    // A wrong code is a mismatch, not a replay.
    const wrong = code === '000000' ? '000001' : '000000';
    expect(mfa.verifyTotp(sealedSecret, wrong, step)).toEqual({ ok: false, reason: 'mismatch' });
    // A stored step ahead of the whole window (the clock went back) refuses every code of the window, without throwing.
    for (const delta of [-1, 0, 1]) {
      expect(mfa.verifyTotp(sealedSecret, codeAtStep(secret, step + delta), step + 5)).toEqual({ ok: false, reason: 'replayed' });
    }
  });

  test('only six digits, spaces ignored', () => {
    const now = Date.UTC(2026, 2, 3, 4, 5, 6);
    const mfa = build(() => now);
    const { secretBase32, sealedSecret } = mfa.newEnrollment('alice');
    const code = codeAtStep(base32Decode(secretBase32), Math.floor(now / 30000));
    expect(mfa.verifyTotp(sealedSecret, ` ${code.slice(0, 3)} ${code.slice(3)}\n`, null)).toMatchObject({ ok: true });
    for (const bad of ['', code.slice(0, 5), `${code}0`, `${code.slice(0, 5)}a`, `-${code.slice(1)}`, '１２３４５６', `${code.slice(0, 3)}-${code.slice(3)}`]) {
      expect(mfa.verifyTotp(sealedSecret, bad, null)).toEqual({ ok: false, reason: 'malformed' });
    }
  });

  test('lastUsedStep must be null or a non-negative integer', () => {
    const mfa = build(() => Date.UTC(2026, 0, 1));
    const { sealedSecret } = mfa.newEnrollment('alice');
    for (const bad of [-1, 1.5, Number.NaN]) {
      expect(() => mfa.verifyTotp(sealedSecret, '123456', bad)).toThrow(MfaArgumentError);
    }
  });
});

describe('sealed secret', () => {
  const now = () => Date.UTC(2026, 0, 1);

  test('format, round trip and fresh nonce', () => {
    const mfa = build(now);
    const { secretBase32, sealedSecret } = mfa.newEnrollment('alice');
    expect(sealedSecret).toMatch(/^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/);
    // 20 bytes of secret + 16 of tag.
    expect(Buffer.from(sealedSecret.split('.')[2]!, 'base64url')).toHaveLength(36);
    const secret = base32Decode(secretBase32);
    expect(sealedSecret).not.toContain(secretBase32);
    expect(sealedSecret).not.toContain(secret.toString('base64url'));
    const code = codeAtStep(secret, Math.floor(now() / 30000));
    expect(mfa.verifyTotp(sealedSecret, code, null)).toMatchObject({ ok: true });
    const again = mfa.sealSecret(secretBase32);
    expect(again).not.toBe(sealedSecret);
    expect(mfa.verifyTotp(again, code, null)).toMatchObject({ ok: true });
  });

  test('a flipped byte anywhere is refused', () => {
    const mfa = build(now);
    const { sealedSecret } = mfa.newEnrollment('alice');
    const [version, nonce, body] = sealedSecret.split('.') as [string, string, string];
    const flip = (part: string, index: number) => {
      const bytes = Buffer.from(part, 'base64url');
      bytes[index]! ^= 0x01;
      return bytes.toString('base64url');
    };
    const tampered = [
      `${version}.${flip(nonce, 0)}.${body}`,
      `${version}.${nonce}.${flip(body, 0)}`, // ciphertext
      `${version}.${nonce}.${flip(body, 35)}`, // tag
      `${version}.${nonce}.${body.slice(0, -2)}`, // truncated
      `v2.${nonce}.${body}`,
      `${version}.${nonce}.${body}!`,
      `${version}.${nonce}`,
      '',
    ];
    for (const value of tampered) {
      expect(() => mfa.verifyTotp(value, '123456', null)).toThrow(SealedSecretError);
    }
  });

  test('another server secret cannot open it', () => {
    const { sealedSecret } = build(now).newEnrollment('alice');
    const other = build(now, crypto.randomBytes(32));
    expect(() => other.verifyTotp(sealedSecret, '123456', null)).toThrow(SealedSecretError);
  });
});

describe('otpauth URI', () => {
  test('parses with the expected parameters', () => {
    const mfa = build(() => Date.UTC(2026, 0, 1));
    const { otpauthUri, secretBase32 } = mfa.newEnrollment('alice+mfa@example.com');
    const url = new URL(otpauthUri);
    expect(url.protocol).toBe('otpauth:');
    expect(url.host).toBe('totp');
    expect(decodeURIComponent(url.pathname)).toBe('/Pigeon Mail:alice+mfa@example.com');
    // Spaces as %20, not "+" (which some apps show literally), in the label and in the issuer parameter.
    expect(otpauthUri).not.toMatch(/Pigeon\+Mail/);
    expect(url.searchParams.get('secret')).toBe(secretBase32);
    expect(url.searchParams.get('issuer')).toBe('Pigeon Mail');
    // SHA1, 6 digits, 30 s: the Key URI format's defaults, written or implied.
    expect(url.searchParams.get('algorithm') ?? 'SHA1').toBe('SHA1');
    expect(url.searchParams.get('digits') ?? '6').toBe('6');
    expect(url.searchParams.get('period') ?? '30').toBe('30');
    expect(secretBase32).toMatch(/^[A-Z2-7]{32}$/);
  });

  test('a colon (the label separator) or an empty name is refused', () => {
    const mfa = build(() => 0);
    expect(() => mfa.newEnrollment('a:b')).toThrow(MfaArgumentError);
    expect(() => mfa.newEnrollment(' ')).toThrow(MfaArgumentError);
    expect(() => createMfa({ serverSecret: SERVER_SECRET, issuerName: 'Pigeon:Mail', now: () => 0 })).toThrow(MfaArgumentError);
    expect(() => createMfa({ serverSecret: Buffer.alloc(16), issuerName: 'Pigeon', now: () => 0 })).toThrow(MfaArgumentError);
  });

  test('secrets differ between enrolments', () => {
    const mfa = build(() => 0);
    const secrets = new Set(Array.from({ length: 20 }, () => mfa.newEnrollment('alice').secretBase32));
    expect(secrets.size).toBe(20);
  });
});

describe('recovery codes', () => {
  test('ten distinct codes in the expected format, with their hashes', () => {
    const mfa = build(() => 0);
    const { codes, hashes } = mfa.newRecoveryCodes();
    expect(codes).toHaveLength(10);
    expect(new Set(codes).size).toBe(10);
    for (const code of codes) expect(code).toMatch(/^[0-9abcdefghjkmnpqrstvwxyz]{5}-[0-9abcdefghjkmnpqrstvwxyz]{5}$/);
    expect(hashes).toHaveLength(10);
    expect(new Set(hashes).size).toBe(10);
    codes.forEach((code, i) => {
      expect(hashes[i]).toMatch(/^[0-9a-f]{64}$/);
      expect(mfa.recoveryCodeHash(code)).toBe(hashes[i]);
    });
    // Stored hashes are not a plain SHA-256 of the code (keyed).
    const plain = crypto.createHash('sha256').update(codes[0]!.replace('-', '')).digest('hex');
    expect(hashes[0]).not.toBe(plain);
  });

  test('the alphabet is used in full (randomness reaches every symbol)', () => {
    const mfa = build(() => 0);
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) for (const code of mfa.newRecoveryCodes().codes) for (const ch of code.replace('-', '')) seen.add(ch);
    expect(seen.size).toBe(32);
  });

  test('input is normalised: case, spaces, dashes, look-alikes', () => {
    const mfa = build(() => 0);
    const { codes, hashes } = mfa.newRecoveryCodes();
    const code = codes[0]!;
    const bare = code.replace('-', '');
    for (const typed of [bare, bare.toUpperCase(), ` ${code} `, `${bare.slice(0, 3)} ${bare.slice(3, 7)} ${bare.slice(7)}`, code.replace('-', '\u2013')]) {
      expect(mfa.recoveryCodeHash(typed)).toBe(hashes[0]);
    }
    // o → 0, i/l → 1 (Crockford).
    const h = mfa.recoveryCodeHash('01234-56789');
    expect(mfa.recoveryCodeHash('OI234-56789')).toBe(h);
    expect(mfa.recoveryCodeHash('ol234 56789')).toBe(h);
  });

  test('a wrong or malformed code does not match', () => {
    const mfa = build(() => 0);
    const { codes, hashes } = mfa.newRecoveryCodes();
    const code = codes[0]!;
    const last = code[code.length - 1]!;
    const changed = code.slice(0, -1) + (last === 'z' ? 'y' : 'z');
    const wrong = mfa.recoveryCodeHash(changed);
    expect(wrong).toMatch(/^[0-9a-f]{64}$/);
    expect(hashes).not.toContain(wrong);
    for (const bad of ['', code.slice(0, -1), `${code}0`, code.replace(/^./, 'u'), code.replace(/^./, '!')]) {
      expect(mfa.recoveryCodeHash(bad)).toBeNull();
    }
  });

  test('hashes depend on the server secret', () => {
    const a = build(() => 0);
    const b = build(() => 0, crypto.randomBytes(32));
    expect(a.recoveryCodeHash('abcde-12345')).not.toBe(b.recoveryCodeHash('abcde-12345'));
  });
});
