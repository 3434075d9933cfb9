/**
 * S/MIME inspection of messages made by OpenSSL (`openssl smime` and `openssl cms`): signature verdicts against
 * the trust anchors, opaque and detached signing, encrypted mail, and bad input that must never throw.
 */
import crypto from 'node:crypto';
import { createSmimeInspector } from '../../server/protection/smime';
import {
  BASE64_ENTITY,
  disposeSmimePki,
  encryptedMessage,
  opensslFingerprint,
  opensslSerial,
  opensslVerifies,
  signedMessage,
  smimePki,
  type SmimeTestPki,
} from '../helpers/smimePki';

let pki: SmimeTestPki;
let inspector: ReturnType<typeof createSmimeInspector>;

beforeAll(() => {
  pki = smimePki();
  inspector = createSmimeInspector({ trustAnchorsPem: [pki.ca.cert] });
});
afterAll(() => disposeSmimePki());

const now = () => Date.now();
const latin1 = (b: Buffer) => b.toString('latin1');
const bytes = (s: string) => Buffer.from(s, 'latin1');

/** The message with its signature part's body (multipart/signed) replaced by `base64`. */
function withSignatureBody(message: Buffer, base64: string): Buffer {
  const text = latin1(message);
  const boundary = /boundary="([^"]+)"/.exec(text)![1]!;
  const pieces = text.split(`--${boundary}`);
  expect(pieces.length).toBe(4); // preamble, signed part, signature part, epilogue
  const signaturePart = pieces[2]!;
  const blank = /\r?\n\r?\n/.exec(signaturePart)!;
  const newline = signaturePart.includes('\r\n') ? '\r\n' : '\n';
  pieces[2] = `${signaturePart.slice(0, blank.index + blank[0].length)}${base64}${newline}${newline}`;
  return bytes(pieces.join(`--${boundary}`));
}

/** The base64 body of an application/pkcs7-mime message. */
function opaqueBody(message: Buffer): string {
  const text = latin1(message);
  return text.slice(/\r?\n\r?\n/.exec(text)!.index).trim();
}

describe('detached signatures (multipart/signed)', () => {
  test.each(['as-produced', 'crlf', 'lf'] as const)('openssl smime -sign by a trusted signer is valid (%s line endings)', async (endings) => {
    const message = signedMessage(pki.alice, { endings });
    if (endings === 'lf') expect(latin1(message)).not.toContain('\r\n');
    expect(opensslVerifies(message, pki.ca.certFile)).toBe(true); // OpenSSL's own verdict on the same bytes
    const info = await inspector.inspect(message, now());
    expect(info?.kind).toBe('signed');
    expect(info?.signature).toMatchObject({ status: 'valid', reason: null });
    const signer = info!.signature!.signer!;
    expect(signer.email).toBe('alice@pigeon.example');
    expect(signer.fingerprint).toBe(opensslFingerprint(pki.alice.certFile));
    expect(signer.serialNumber).toBe(opensslSerial(pki.alice.certFile));
    expect(signer.subject).toContain('CN=alice');
    expect(signer.issuer).toContain('Pigeon SMIME Test Root CA');
    // openssl writes the signing time of the moment it signed.
    expect(Math.abs(Date.parse(info!.signature!.signedAt!) - Date.now())).toBeLessThan(5 * 60_000);
  });

  test('openssl cms -sign (application/pkcs7-signature) is valid, also with -stream', async () => {
    for (const stream of [false, true]) {
      const message = signedMessage(pki.alice, { tool: 'cms', stream });
      expect(latin1(message)).toContain('protocol="application/pkcs7-signature"');
      expect((await inspector.inspect(message, now()))?.signature?.status).toBe('valid');
    }
  });

  test('the x-pkcs7-signature and pkcs7-signature protocol names are the same thing', async () => {
    const legacy = signedMessage(pki.alice, { tool: 'smime' });
    expect(latin1(legacy)).toContain('protocol="application/x-pkcs7-signature"');
    const renamed = bytes(latin1(legacy).replace('application/x-pkcs7-signature"', 'application/pkcs7-signature"'));
    const modern = signedMessage(pki.alice, { tool: 'cms' });
    const aliased = bytes(latin1(modern).replace('protocol="application/pkcs7-signature"', 'protocol="application/x-pkcs7-signature"'));
    for (const message of [legacy, renamed, aliased]) {
      expect((await inspector.inspect(message, now()))?.signature?.status).toBe('valid');
    }
  });

  test('a signed part with Content-Transfer-Encoding: base64 is verified over its encoded form', async () => {
    const message = signedMessage(pki.alice, { entity: BASE64_ENTITY, endings: 'crlf' });
    expect(latin1(message)).toContain('Content-Transfer-Encoding: base64');
    expect((await inspector.inspect(message, now()))?.signature?.status).toBe('valid');
    // One base64 character changed: the decoded text changes, and so must the verdict.
    const encodedText = Buffer.from('Hello from', 'utf8').toString('base64').slice(0, 12);
    expect(latin1(message)).toContain(encodedText);
    const tampered = bytes(latin1(message).replace(encodedText, `${encodedText.slice(0, 11)}${encodedText[11] === 'A' ? 'B' : 'A'}`));
    expect((await inspector.inspect(tampered, now()))?.signature).toMatchObject({ status: 'invalid', reason: 'the content does not match the signature' });
  });

  test('a byte of the signed text changed after signing is invalid', async () => {
    const message = signedMessage(pki.alice);
    const tampered = bytes(latin1(message).replace('Second line', 'Second lime'));
    expect(tampered.equals(message)).toBe(false);
    expect(opensslVerifies(tampered, pki.ca.certFile)).toBe(false);
    const info = await inspector.inspect(tampered, now());
    expect(info?.kind).toBe('signed');
    expect(info?.signature).toMatchObject({ status: 'invalid', reason: 'the content does not match the signature' });
    expect(info?.signature?.signer?.email).toBe('alice@pigeon.example');
  });

  test('a signer from a CA nobody trusts is untrusted, and trusted once that CA is an anchor', async () => {
    const message = signedMessage(pki.mallory);
    expect(opensslVerifies(message, pki.ca.certFile)).toBe(false);
    expect(opensslVerifies(message, pki.otherCa.certFile)).toBe(true);
    expect((await inspector.inspect(message, now()))?.signature).toMatchObject({
      status: 'untrusted',
      reason: "the signer's certificate does not chain to a trusted authority",
      signer: { email: 'mallory@elsewhere.example' },
    });
    const trustingOther = createSmimeInspector({ trustAnchorsPem: [pki.ca.cert, pki.otherCa.cert] });
    expect((await trustingOther.inspect(message, now()))?.signature?.status).toBe('valid');
  });

  test('a signer whose certificate had expired when signing is untrusted, saying so', async () => {
    const info = await inspector.inspect(signedMessage(pki.expired), now());
    expect(info?.signature).toMatchObject({
      status: 'untrusted',
      reason: 'the certificate had expired when the message was signed',
      signer: { email: 'old@pigeon.example' },
    });
  });

  test('a chain through an intermediate is valid when the message carries the intermediate, untrusted when not', async () => {
    const carried = signedMessage(pki.carol, { extraCertFiles: [pki.intermediate.certFile] });
    expect((await inspector.inspect(carried, now()))?.signature).toMatchObject({ status: 'valid', signer: { email: 'carol@pigeon.example' } });
    const alone = signedMessage(pki.carol);
    expect((await inspector.inspect(alone, now()))?.signature).toMatchObject({
      status: 'untrusted',
      reason: "the signer's certificate does not chain to a trusted authority",
    });
  });

  test('a certificate issued by an end-entity certificate (not a CA) does not chain', async () => {
    const message = signedMessage(pki.forged, { extraCertFiles: [pki.alice.certFile] });
    expect((await inspector.inspect(message, now()))?.signature).toMatchObject({ status: 'untrusted', signer: { email: 'ceo@pigeon.example' } });
  });

  test('certificates in the message that certify each other end the path search instead of looping for ever', async () => {
    const message = signedMessage(pki.looped, { extraCertFiles: pki.looped.loopCertFiles });
    const started = Date.now();
    expect((await inspector.inspect(message, now()))?.signature).toMatchObject({
      status: 'untrusted',
      reason: expect.stringContaining('loop'),
      signer: { email: 'loop@pigeon.example' },
    });
    expect(Date.now() - started).toBeLessThan(5000);
  }, 10_000);

  test('a signer certificate whose key usage does not allow signing is untrusted', async () => {
    expect((await inspector.inspect(signedMessage(pki.bob), now()))?.signature).toMatchObject({
      status: 'untrusted',
      reason: "the signer's certificate does not allow signing (key usage)",
      signer: { email: 'bob@pigeon.example' },
    });
  });

  test('a folded Content-Type header with upper-case names is read the same', async () => {
    const message = latin1(signedMessage(pki.alice, { tool: 'cms', endings: 'crlf' }));
    const folded = message
      .replace('Content-Type: multipart/signed; protocol="application/pkcs7-signature";', 'Content-Type: Multipart/Signed;\r\n\tPROTOCOL="Application/PKCS7-Signature";');
    expect(folded).not.toBe(message);
    expect((await inspector.inspect(bytes(folded), now()))?.signature?.status).toBe('valid');
  });

  test('a signer certificate whose extended key usage is not email is untrusted', async () => {
    expect((await inspector.inspect(signedMessage(pki.clientAuthOnly), now()))?.signature).toMatchObject({
      status: 'untrusted',
      reason: expect.stringContaining('emailProtection'),
    });
  });

  test('a detached signature that carries content of its own is refused (it does not sign the message shown)', async () => {
    const otherContent = signedMessage(pki.alice, { opaque: true, entity: 'Content-Type: text/plain\n\nSomething else entirely.\n' });
    const message = withSignatureBody(signedMessage(pki.alice), opaqueBody(otherContent));
    expect((await inspector.inspect(message, now()))?.signature).toMatchObject({
      status: 'invalid',
      reason: 'the signature part carries content of its own instead of signing the message',
    });
  });

  test('garbage in the signature part is invalid, never a throw', async () => {
    const message = signedMessage(pki.alice);
    const cases = [
      withSignatureBody(message, crypto.randomBytes(600).toString('base64')),
      withSignatureBody(message, 'this is not base64 at all: %%%'),
      withSignatureBody(message, ''),
      // An odd-length BMPString: asn1js throws a RangeError rather than reporting bad BER.
      withSignatureBody(message, Buffer.from('30031e0141', 'hex').toString('base64')),
      bytes(latin1(message).slice(0, Math.floor(message.length * 0.8))), // cut short inside the signature
      bytes(latin1(message).replace(/; boundary="[^"]+"/, '')), // no boundary
    ];
    for (const bad of cases) {
      const info = await inspector.inspect(bad, now());
      expect(info?.kind).toBe('signed');
      expect(info?.signature?.status).toBe('invalid');
      expect(info?.signature?.reason).toEqual(expect.any(String));
    }
  });
});

describe('opaque signatures (application/pkcs7-mime; smime-type=signed-data)', () => {
  test('openssl smime -sign -nodetach is valid, also streamed (indefinite-length BER)', async () => {
    for (const stream of [false, true]) {
      const message = signedMessage(pki.alice, { opaque: true, stream });
      expect(latin1(message)).toMatch(/smime-type=signed-data/);
      const info = await inspector.inspect(message, now());
      expect(info).toMatchObject({ kind: 'signed', signature: { status: 'valid', signer: { email: 'alice@pigeon.example' } } });
    }
  });

  test('the kind comes from the CMS content type when smime-type is missing', async () => {
    const message = bytes(latin1(signedMessage(pki.alice, { opaque: true })).replace(' smime-type=signed-data;', ''));
    expect(latin1(message)).not.toContain('smime-type');
    expect(await inspector.inspect(message, now())).toMatchObject({ kind: 'signed', signature: { status: 'valid' } });
  });

  test('a byte of the encapsulated content changed is invalid', async () => {
    const message = signedMessage(pki.alice, { opaque: true });
    const body = opaqueBody(message);
    const der = Buffer.from(body, 'base64');
    const at = der.indexOf('Second line');
    expect(at).toBeGreaterThan(0);
    der[at + 7] = 'X'.charCodeAt(0);
    const tampered = bytes(latin1(message).replace(body, der.toString('base64').replace(/.{64}/g, '$&\n')));
    expect((await inspector.inspect(tampered, now()))?.signature).toMatchObject({ status: 'invalid', reason: 'the content does not match the signature' });
  });

  test('unreadable signed-data is invalid, never a throw', async () => {
    const message = bytes(latin1(signedMessage(pki.alice, { opaque: true })).replace(/\r?\n\r?\n[\s\S]*$/, '\n\nbm90IGNtcw==\n'));
    expect(await inspector.inspect(message, now())).toMatchObject({ kind: 'signed', signature: { status: 'invalid', signer: null } });
  });

  test('a body asn1js throws on (odd-length BMPString) is not S/MIME we can read, never a throw', async () => {
    const body = Buffer.from('1e0141', 'hex').toString('base64');
    const message = bytes(latin1(signedMessage(pki.alice, { opaque: true })).replace(/\r?\n\r?\n[\s\S]*$/, `\n\n${body}\n`));
    await expect(inspector.inspect(message, now())).resolves.toMatchObject({ kind: 'signed', signature: { status: 'invalid' } });
  });
});

describe('encrypted mail and mail that is not S/MIME', () => {
  test('openssl smime -encrypt (enveloped-data) is encrypted with no signature', async () => {
    const message = encryptedMessage(pki.bob);
    expect(latin1(message)).toMatch(/smime-type=enveloped-data/);
    expect(await inspector.inspect(message, now())).toEqual({ kind: 'encrypted', signature: null });
  });

  test('openssl cms -encrypt with AES-GCM (authEnveloped-data) is encrypted', async () => {
    const message = encryptedMessage(pki.bob, { tool: 'cms' });
    expect(latin1(message)).toMatch(/smime-type=authEnveloped-data/);
    expect(await inspector.inspect(message, now())).toEqual({ kind: 'encrypted', signature: null });
  });

  test('without smime-type, encrypted mail is recognised by its CMS content type (LF and CRLF)', async () => {
    for (const tool of ['smime', 'cms'] as const) {
      for (const endings of ['lf', 'crlf'] as const) {
        const message = bytes(latin1(encryptedMessage(pki.bob, { tool, endings })).replace(/ smime-type=[A-Za-z-]+;/, ''));
        expect(latin1(message)).not.toContain('smime-type');
        expect(await inspector.inspect(message, now())).toEqual({ kind: 'encrypted', signature: null });
      }
    }
  });

  test('a plain message, a multipart/mixed one and a PGP-signed one are not S/MIME', async () => {
    const plain = bytes('From: a@pigeon.example\r\nTo: b@pigeon.example\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nHello\r\n');
    const noContentType = bytes('From: a@pigeon.example\nSubject: hi\n\nHello\n');
    const mixed = bytes(
      'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nHi\r\n--b1--\r\n',
    );
    const pgp = bytes(latin1(signedMessage(pki.alice)).replace('protocol="application/x-pkcs7-signature"', 'protocol="application/pgp-signature"'));
    for (const message of [plain, noContentType, mixed, pgp, Buffer.alloc(0), crypto.randomBytes(300)]) {
      expect(await inspector.inspect(message, now())).toBeUndefined();
    }
  });
});

test('an anchor that is not a certificate is a configuration error at creation', () => {
  expect(() => createSmimeInspector({ trustAnchorsPem: ['not a certificate'] })).toThrow(/trust anchor 1/);
});
