import crypto from 'node:crypto';
import {
  CmsError,
  createProtectionKey,
  decryptWith,
  encryptFor,
  signContent,
  signedContentUnverified,
  verifySignedContent,
  type KeyMaterial,
} from '../../server/protection/cms';
import { createKeySealer, SealedKeyError } from '../../server/protection/keys';
import { opensslWorkspace, type KeyFiles } from '../helpers/openssl';

/*
 * Interoperability is judged by openssl, not by our own code agreeing with itself: openssl makes the inputs
 * (keys, certificates, EnvelopedData, SignedData) our readers must accept, and checks what our writers produce.
 */

const ws = opensslWorkspace();
const DAY_MS = 24 * 60 * 60 * 1000;

let ours: KeyMaterial; // made by createProtectionKey: the tenant's current key
let oursRetired: KeyMaterial; // another of ours: a key that was rotated out
let oursCreatedAt: number;
let alice: KeyFiles; // made by `openssl req -x509`
let bob: KeyFiles;

/** Random bytes with CR, LF and NUL among them: any text-mode translation on the way would show. */
const binaryContent = Buffer.concat([Buffer.from('Subject: hi\r\n\r\nline one\nline two\r\n\0'), crypto.randomBytes(3000)]);

beforeAll(async () => {
  oursCreatedAt = Date.now();
  [ours, oursRetired] = await Promise.all([
    createProtectionKey({ tenantName: 'Acme, Inc. + Ünïcode', now: oursCreatedAt, validityYears: 3 }),
    createProtectionKey({ tenantName: 'Acme', now: oursCreatedAt - 400 * DAY_MS }),
  ]);
  alice = ws.selfSigned('alice', 'OpenSSL signer Alice');
  bob = ws.selfSigned('bob', 'OpenSSL signer Bob');
  ws.write('ours.crt', ours.certificatePem);
  ws.write('ours.key', ours.privateKeyPem);
  ws.write('retired.crt', oursRetired.certificatePem);
  ws.write('retired.key', oursRetired.privateKeyPem);
});

afterAll(() => ws.dispose());

const aliceKey = (): KeyMaterial => ({ certificatePem: alice.certificatePem, privateKeyPem: alice.privateKeyPem });

/** Rejects with a CmsError (and nothing else), whose message matches `message` when given. */
async function expectCmsError(promise: Promise<unknown>, message?: RegExp): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CmsError);
  if (message) expect((err as Error).message).toMatch(message);
}

function expectCmsErrorSync(work: () => unknown, message?: RegExp): void {
  let err: unknown;
  try {
    work();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(CmsError);
  if (message) expect((err as Error).message).toMatch(message);
}

function flipped(der: Buffer, index: number): Buffer {
  const copy = Buffer.from(der);
  copy[index] = copy[index]! ^ 0x01;
  return copy;
}

/** The base64 of a PEM's one block: compares certificates whatever the line length or final newline. */
const pemBody = (pem: string) => pem.replace(/-----[^-]+-----|\s+/g, '');

/** `openssl cms -cmsout -print` of DER CMS data. */
function cmsPrint(name: string, der: Buffer): string {
  ws.write(name, der);
  return ws.run(['cms', '-cmsout', '-print', '-inform', 'DER', '-in', name]).toString('utf8');
}

describe('createProtectionKey (checked by openssl)', () => {
  it('makes an RSA-2048 self-signed certificate with the profile', () => {
    const text = ws.run(['x509', '-in', 'ours.crt', '-noout', '-text']).toString('utf8');
    expect(text).toMatch(/Public-Key: \(2048 bit\)/);
    expect(text).toMatch(/Exponent: 65537 \(0x10001\)/);
    expect(text).toMatch(/Signature Algorithm: sha256WithRSAEncryption/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment\s/);
    expect(text).toMatch(/X509v3 Subject Key Identifier:\s+([0-9A-F]{2}:){19}[0-9A-F]{2}/);

    const fields = ws.run(['x509', '-in', 'ours.crt', '-noout', '-subject', '-issuer', '-nameopt', 'multiline,utf8,-esc_msb']).toString('utf8');
    // The tenant name's comma and plus sign are part of the value, not RDN syntax; issuer = subject (self-signed).
    expect(fields.match(/commonName\s+= (.*)/g)).toEqual([
      'commonName                = Pigeon protection: Acme, Inc. + Ünïcode',
      'commonName                = Pigeon protection: Acme, Inc. + Ünïcode',
    ]);
    // Signed by its own key: openssl checks the signature of a self-signed certificate with -check_ss_sig.
    ws.run(['verify', '-check_ss_sig', '-partial_chain', '-CAfile', 'ours.crt', 'ours.crt']);
  });

  it('is valid from a day before `now` to `validityYears` after it', () => {
    const dates = ws.run(['x509', '-in', 'ours.crt', '-noout', '-startdate', '-enddate']).toString('utf8');
    const notBefore = Date.parse(/notBefore=(.*)/.exec(dates)![1]!);
    const notAfter = Date.parse(/notAfter=(.*)/.exec(dates)![1]!);
    const start = Math.floor(oursCreatedAt / 1000) * 1000;
    expect(notBefore).toBe(start - DAY_MS);
    const expectedEnd = new Date(start);
    expectedEnd.setUTCFullYear(expectedEnd.getUTCFullYear() + 3);
    expect(notAfter).toBe(expectedEnd.getTime());
  });

  it('pairs the PKCS#8 private key with the certificate, and gives each key its own serial', () => {
    expect(ours.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\r?\n/);
    const fromKey = ws.run(['pkey', '-in', 'ours.key', '-pubout']).toString('utf8');
    const fromCert = ws.run(['x509', '-in', 'ours.crt', '-noout', '-pubkey']).toString('utf8');
    expect(fromKey).toBe(fromCert);
    const serial = (f: string) => ws.run(['x509', '-in', f, '-noout', '-serial']).toString('utf8').trim();
    expect(serial('ours.crt')).toMatch(/^serial=[0-9A-F]{32}$/);
    expect(serial('ours.crt')).not.toBe(serial('retired.crt'));
  });
});

describe('encryptFor (opened by openssl)', () => {
  it('makes DER EnvelopedData that `openssl cms -decrypt` opens with the key from createProtectionKey', async () => {
    const der = await encryptFor(binaryContent, [ours.certificatePem]);
    ws.write('env.der', der);
    const opened = ws.run(['cms', '-decrypt', '-binary', '-inform', 'DER', '-in', 'env.der', '-recip', 'ours.crt', '-inkey', 'ours.key']);
    expect(opened.equals(binaryContent)).toBe(true);
    // The other key cannot: openssl agrees that it is not a recipient.
    expect(ws.attempt(['cms', '-decrypt', '-binary', '-inform', 'DER', '-in', 'env.der', '-recip', 'retired.crt', '-inkey', 'retired.key']).status).not.toBe(0);
  });

  it('uses the profile: AES-256-CBC, RSAES-OAEP SHA-256 with MGF1-SHA-256, issuerAndSerialNumber, in DER', async () => {
    const der = await encryptFor(binaryContent, [ours.certificatePem]); // over 1 KiB: pkijs would split it (BER)
    const printed = cmsPrint('profile.der', der);
    expect(printed).toMatch(/contentType: pkcs7-envelopedData/);
    expect(printed).toMatch(/d\.envelopedData:\s+version: 0\b/);
    expect(printed).toMatch(/d\.ktri:\s+version: 0\s+d\.issuerAndSerialNumber:/);
    expect(printed).toMatch(/algorithm: rsaesOaep \(1\.2\.840\.113549\.1\.1\.7\)/);
    expect(printed).toMatch(/OBJECT\s+:sha256[\s\S]*OBJECT\s+:mgf1[\s\S]*OBJECT\s+:sha256/);
    expect(printed).toMatch(/algorithm: aes-256-cbc \(2\.16\.840\.1\.101\.3\.4\.1\.42\)/);
    // DER, not just BER: openssl's own re-encoding is byte-for-byte the same.
    const reencoded = ws.run(['cms', '-cmsout', '-inform', 'DER', '-in', 'profile.der', '-outform', 'DER']);
    expect(reencoded.equals(der)).toBe(true);
  });

  it('encrypts for several certificates: either key opens it (key rotation: the old key still reads)', async () => {
    const der = await encryptFor(binaryContent, [ours.certificatePem, oursRetired.certificatePem]);
    ws.write('two.der', der);
    for (const name of ['ours', 'retired']) {
      const opened = ws.run(['cms', '-decrypt', '-binary', '-inform', 'DER', '-in', 'two.der', '-recip', `${name}.crt`, '-inkey', `${name}.key`]);
      expect(opened.equals(binaryContent)).toBe(true);
    }
    expect((await decryptWith(der, [ours])).equals(binaryContent)).toBe(true);
    expect((await decryptWith(der, [oursRetired])).equals(binaryContent)).toBe(true);
    expect((await decryptWith(der, [aliceKey(), oursRetired])).equals(binaryContent)).toBe(true);
  });

  it('refuses an empty recipient list or a certificate that is not one', async () => {
    await expectCmsError(encryptFor(binaryContent, []));
    await expectCmsError(encryptFor(binaryContent, ['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n']));
    await expectCmsError(encryptFor(binaryContent, [ours.privateKeyPem]));
  });
});

describe('decryptWith (opening what openssl made)', () => {
  /** `options` may hold -keyopt pairs: openssl applies them to the recipient named before them, so they go last. */
  const opensslEncrypt = (name: string, recip: string, options: string[]) => {
    ws.write(`${name}.in`, binaryContent);
    ws.run(['cms', '-encrypt', '-binary', '-outform', 'DER', '-in', `${name}.in`, '-out', `${name}.der`, '-recip', recip, ...options]);
    return ws.read(`${name}.der`);
  };
  const oaepSha256 = ['-keyopt', 'rsa_padding_mode:oaep', '-keyopt', 'rsa_oaep_md:sha256', '-keyopt', 'rsa_mgf1_md:sha256'];

  it('opens AES-256 with RSAES-OAEP SHA-256 for our key', async () => {
    const der = opensslEncrypt('o256', 'ours.crt', ['-aes256', ...oaepSha256]);
    expect((await decryptWith(der, [ours])).equals(binaryContent)).toBe(true);
  });

  it("opens openssl's default OAEP (SHA-1), other AES key sizes and a subjectKeyIdentifier recipient", async () => {
    const sha1 = opensslEncrypt('o1', 'ours.crt', ['-aes256', '-keyopt', 'rsa_padding_mode:oaep']);
    expect((await decryptWith(sha1, [ours])).equals(binaryContent)).toBe(true);
    const aes128 = opensslEncrypt('o128', 'ours.crt', ['-aes128', ...oaepSha256]);
    expect((await decryptWith(aes128, [ours])).equals(binaryContent)).toBe(true);
    const byKeyId = opensslEncrypt('okid', 'ours.crt', ['-aes256', '-keyid', ...oaepSha256]);
    expect(cmsPrint('okid.print', byKeyId)).toMatch(/d\.subjectKeyIdentifier:/);
    expect((await decryptWith(byKeyId, [oursRetired, ours])).equals(binaryContent)).toBe(true);
  });

  it('opens with a key and certificate made by openssl (PKCS#8 from `openssl req`)', async () => {
    const der = opensslEncrypt('alice', alice.certFile, ['-aes256', ...oaepSha256]);
    expect((await decryptWith(der, [aliceKey()])).equals(binaryContent)).toBe(true);
  });

  it("refuses PKCS#1 v1.5 key transport (openssl's default) with a reason", async () => {
    const der = opensslEncrypt('v15', 'ours.crt', ['-aes256']);
    expect(cmsPrint('v15.print', der)).toMatch(/algorithm: rsaEncryption/);
    await expectCmsError(decryptWith(der, [ours]), /PKCS1-v1_5 is refused/);
  });

  it('refuses OAEP whose MGF1 hash differs from its hash (WebCrypto cannot do it) with a reason', async () => {
    const der = opensslEncrypt('mixed', 'ours.crt', ['-aes256', '-keyopt', 'rsa_padding_mode:oaep', '-keyopt', 'rsa_oaep_md:sha256', '-keyopt', 'rsa_mgf1_md:sha1']);
    await expectCmsError(decryptWith(der, [ours]), /MGF1/);
  });
});

describe('decryptWith refuses with CmsError, never another error', () => {
  let der: Buffer;
  /** 32 bytes: a multiple of the block size, so the last block is all padding (sixteen 0x10 bytes). */
  const content = Buffer.from('0123456789abcdef0123456789ABCDEF');
  beforeAll(async () => {
    der = await encryptFor(content, [ours.certificatePem]);
  });

  it('opens the untouched data (the cases below start from working input)', async () => {
    expect((await decryptWith(der, [ours])).equals(content)).toBe(true);
  });

  it('a flipped ciphertext byte that breaks the padding', async () => {
    // The ciphertext ends the DER. Flipping a bit of the second-to-last block flips the same bit of the last
    // plaintext block: its final byte becomes 0x11, which is no valid padding.
    const lastByteOfPenultimateBlock = der.length - 16 - 1;
    await expectCmsError(decryptWith(flipped(der, lastByteOfPenultimateBlock), [ours]));
  });

  it('a flipped byte in the encrypted content key', async () => {
    const encryptedKeyHeader = der.indexOf(Buffer.from([0x04, 0x82, 0x01, 0x00])); // OCTET STRING of 256 bytes
    expect(encryptedKeyHeader).toBeGreaterThan(0);
    await expectCmsError(decryptWith(flipped(der, encryptedKeyHeader + 4 + 100), [ours]));
  });

  it('truncated, extended, empty, random and wrong-type input', async () => {
    await expectCmsError(decryptWith(der.subarray(0, der.length - 10), [ours]));
    await expectCmsError(decryptWith(der.subarray(0, 40), [ours]));
    await expectCmsError(decryptWith(Buffer.concat([der, Buffer.from([0])]), [ours]), /trailing/);
    await expectCmsError(decryptWith(Buffer.alloc(0), [ours]));
    await expectCmsError(decryptWith(crypto.randomBytes(600), [ours]));
    // An odd-length BMPString, on which asn1js throws a RangeError rather than reporting bad BER.
    await expectCmsError(decryptWith(Buffer.from('30031e0141', 'hex'), [ours]), /not valid BER/);
    await expectCmsError(decryptWith(await signContent(content, ours, Date.now()), [ours]), /content type/);
  });

  it('only keys it was not encrypted for, or a certificate paired with the wrong private key', async () => {
    await expectCmsError(decryptWith(der, [oursRetired, aliceKey()]), /none of the given keys/);
    await expectCmsError(decryptWith(der, []), /none of the given keys/);
    await expectCmsError(decryptWith(der, [{ certificatePem: ours.certificatePem, privateKeyPem: oursRetired.privateKeyPem }]));
    await expectCmsError(decryptWith(der, [{ certificatePem: ours.certificatePem, privateKeyPem: 'not a key' }]));
  });

  it('any single flipped byte or truncation either opens (CBC has no integrity) or fails with CmsError', async () => {
    for (let i = 0; i < der.length; i += Math.ceil(der.length / 60)) {
      await decryptWith(flipped(der, i), [ours]).catch((e: unknown) => expect(e).toBeInstanceOf(CmsError));
      await expectCmsError(decryptWith(der.subarray(0, i), [ours]));
    }
  });
});

describe('signContent (verified by openssl)', () => {
  it('makes SignedData that `openssl cms -verify -CAfile <signer cert>` verifies, with the signer certificate included', async () => {
    const der = await signContent(binaryContent, ours, Date.now());
    ws.write('signed.der', der);
    const verified = ws.run(['cms', '-verify', '-binary', '-inform', 'DER', '-in', 'signed.der', '-CAfile', 'ours.crt', '-certsout', 'signed-certs.pem']);
    expect(verified.equals(binaryContent)).toBe(true);
    expect(pemBody(ws.read('signed-certs.pem').toString('utf8'))).toBe(pemBody(ours.certificatePem));
    // The check can fail: trusting another certificate, openssl refuses it.
    expect(ws.attempt(['cms', '-verify', '-binary', '-inform', 'DER', '-in', 'signed.der', '-CAfile', alice.certFile]).status).not.toBe(0);
  });

  it('uses the profile: SHA-256, signed contentType, signingTime (`now`) and messageDigest, in DER', async () => {
    const now = Date.UTC(2030, 0, 2, 3, 4, 5, 678);
    const der = await signContent(Buffer.from('profile'), ours, now);
    const printed = cmsPrint('signed-profile.der', der);
    expect(printed).toMatch(/eContentType: pkcs7-data/);
    expect(printed).toMatch(/digestAlgorithm:\s+algorithm: sha256/);
    expect(printed).toMatch(/d\.issuerAndSerialNumber:/);
    expect(printed).toMatch(/object: contentType[\s\S]*OBJECT:pkcs7-data/);
    expect(printed).toMatch(/object: signingTime[\s\S]*UTCTIME:Jan  2 03:04:05 2030 GMT/);
    expect(printed).toMatch(/object: messageDigest/);
    const reencoded = ws.run(['cms', '-cmsout', '-inform', 'DER', '-in', 'signed-profile.der', '-outform', 'DER']);
    expect(reencoded.equals(der)).toBe(true);
  });
});

describe('verifySignedContent', () => {
  const opensslSign = (name: string, signer: { certFile: string; keyFile: string }, options: string[] = ['-nodetach']) => {
    ws.write(`${name}.in`, binaryContent);
    ws.run(['cms', '-sign', '-binary', '-outform', 'DER', '-md', 'sha256', '-in', `${name}.in`, '-out', `${name}.der`, '-signer', signer.certFile, '-inkey', signer.keyFile, ...options]);
    return ws.read(`${name}.der`);
  };

  it('accepts what `openssl cms -sign` makes when that signer is trusted, and names it', async () => {
    const der = opensslSign('s-alice', alice);
    const result = await verifySignedContent(der, [bob.certificatePem, alice.certificatePem]);
    expect(result.content.equals(binaryContent)).toBe(true);
    expect(result.signerCertificatePem).toBe(alice.certificatePem);
  });

  it('refuses the same data when only another certificate is trusted', async () => {
    const der = opensslSign('s-alice2', alice);
    await expectCmsError(verifySignedContent(der, [bob.certificatePem]), /not a trusted certificate/);
    await expectCmsError(verifySignedContent(der, []), /not a trusted certificate/);
  });

  it('accepts a subjectKeyIdentifier signer and a signer certificate left out of the message', async () => {
    const byKeyId = opensslSign('s-keyid', alice, ['-nodetach', '-keyid']);
    expect((await verifySignedContent(byKeyId, [alice.certificatePem])).content.equals(binaryContent)).toBe(true);
    const noCerts = opensslSign('s-nocerts', alice, ['-nodetach', '-nocerts']);
    expect((await verifySignedContent(noCerts, [alice.certificatePem])).content.equals(binaryContent)).toBe(true);
  });

  it('accepts our own signatures, with a retired key among the trusted ones', async () => {
    const der = await signContent(binaryContent, oursRetired, Date.now());
    const result = await verifySignedContent(der, [ours.certificatePem, oursRetired.certificatePem]);
    expect(result.content.equals(binaryContent)).toBe(true);
    expect(result.signerCertificatePem).toBe(oursRetired.certificatePem);
  });

  it('pins the certificate: an impostor with the same issuer and serial, signing with its own key, is refused', async () => {
    const serial = ws.run(['x509', '-in', alice.certFile, '-noout', '-serial']).toString('utf8').trim().replace('serial=', '');
    ws.run(['req', '-x509', '-newkey', 'rsa:2048', '-noenc', '-keyout', ws.file('impostor.key'), '-out', ws.file('impostor.crt'), '-days', '30', '-subj', '/CN=OpenSSL signer Alice', '-set_serial', `0x${serial}`]);
    const der = opensslSign('s-impostor', { certFile: ws.file('impostor.crt'), keyFile: ws.file('impostor.key') });
    await expectCmsError(verifySignedContent(der, [alice.certificatePem]), /signature/);
  });

  it('refuses tampered content, a tampered signature, SHA-1, detached content and garbage', async () => {
    const der = await signContent(binaryContent, ours, Date.now());
    await expect(verifySignedContent(der, [ours.certificatePem])).resolves.toBeDefined();
    const contentAt = der.indexOf(binaryContent);
    expect(contentAt).toBeGreaterThan(0);
    await expectCmsError(verifySignedContent(flipped(der, contentAt + 1000), [ours.certificatePem]), /digest/i);
    // No unsigned attributes: the signature value is the last thing in the DER.
    await expectCmsError(verifySignedContent(flipped(der, der.length - 7), [ours.certificatePem]), /signature/);
    const sha1 = opensslSign('s-sha1', alice, ['-nodetach', '-md', 'sha1']);
    await expectCmsError(verifySignedContent(sha1, [alice.certificatePem]), /not accepted/);
    const detached = opensslSign('s-detached', alice, []);
    await expectCmsError(verifySignedContent(detached, [alice.certificatePem]), /detached/);
    await expectCmsError(verifySignedContent(der.subarray(0, der.length - 1), [ours.certificatePem]));
    await expectCmsError(verifySignedContent(crypto.randomBytes(500), [ours.certificatePem]));
    await expectCmsError(verifySignedContent(await encryptFor(binaryContent, [ours.certificatePem]), [ours.certificatePem]), /content type/);
  });

  it('any single flipped byte or truncation is refused with CmsError, or leaves the signature intact', async () => {
    const der = await signContent(Buffer.from('{"short":"licence"}'), ours, Date.now());
    // The embedded certificate is not what is verified (the pinned one is): a flip there may pass.
    for (let i = 0; i < der.length; i += 13) {
      const outcome = await verifySignedContent(flipped(der, i), [ours.certificatePem]).then(
        (r) => r,
        (e: unknown) => e,
      );
      if (!(outcome instanceof CmsError)) {
        expect(outcome).toEqual({ content: Buffer.from('{"short":"licence"}'), signerCertificatePem: ours.certificatePem });
      }
      await expectCmsError(verifySignedContent(der.subarray(0, i), [ours.certificatePem]));
    }
  });
});

describe('signedContentUnverified', () => {
  it('reads the content of ours and of openssl, trusted or not', async () => {
    const der = await signContent(binaryContent, ours, Date.now());
    expect(signedContentUnverified(der).equals(binaryContent)).toBe(true);
    ws.write('u.in', binaryContent);
    ws.run(['cms', '-sign', '-binary', '-nodetach', '-outform', 'DER', '-md', 'sha256', '-in', 'u.in', '-out', 'u.der', '-signer', bob.certFile, '-inkey', bob.keyFile]);
    expect(signedContentUnverified(ws.read('u.der')).equals(binaryContent)).toBe(true);
  });

  it('throws CmsError for garbage, EnvelopedData and truncation', async () => {
    const der = await signContent(binaryContent, ours, Date.now());
    expectCmsErrorSync(() => signedContentUnverified(crypto.randomBytes(64)));
    expectCmsErrorSync(() => signedContentUnverified(Buffer.alloc(0)));
    expectCmsErrorSync(() => signedContentUnverified(der.subarray(0, 100)));
    const enveloped = await encryptFor(binaryContent, [ours.certificatePem]);
    expectCmsErrorSync(() => signedContentUnverified(enveloped), /content type/);
  });
});

describe('createKeySealer', () => {
  const secret = crypto.randomBytes(32);
  const pem = crypto.generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

  it('seals to `v1.<nonce>.<ciphertext‖tag>` and opens it again', () => {
    const sealer = createKeySealer(secret);
    const sealed = sealer.seal(pem);
    expect(sealed).toMatch(/^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/);
    expect(sealed).not.toContain(pem.split('\n')[1]);
    expect(sealer.seal(pem)).not.toBe(sealed); // a fresh nonce every time
    expect(sealer.open(sealed)).toBe(pem);
    expect(createKeySealer(Buffer.from(secret)).open(sealed)).toBe(pem); // a new sealer from the same secret
  });

  it('follows the documented construction (HKDF-SHA256 key, AES-256-GCM, the version as additional data)', () => {
    const sealed = createKeySealer(secret).seal(pem);
    const [, nonce, body] = sealed.split('.') as [string, string, string];
    const bytes = Buffer.from(body, 'base64url');
    const key = Buffer.from(crypto.hkdfSync('sha256', secret, Buffer.alloc(0), 'pigeon protection: private key sealing key v1', 32));
    const decipher = crypto.createDecipheriv('aes-256-gcm', key, Buffer.from(nonce, 'base64url'));
    decipher.setAAD(Buffer.from('v1'));
    decipher.setAuthTag(bytes.subarray(bytes.length - 16));
    expect(Buffer.concat([decipher.update(bytes.subarray(0, bytes.length - 16)), decipher.final()]).toString('utf8')).toBe(pem);
  });

  it('refuses another secret and any damaged value with SealedKeyError', () => {
    const sealed = createKeySealer(secret).seal(pem);
    const [version, nonce, body] = sealed.split('.') as [string, string, string];
    const otherChar = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
    const damaged = [
      otherChar(sealed, sealed.length - 5), // the tag
      `${version}.${nonce}.${otherChar(body, 3)}`, // the ciphertext
      `${version}.${otherChar(nonce, 2)}.${body}`, // the nonce
      `v2.${nonce}.${body}`,
      `${version}.${nonce}`,
      `${version}.${nonce}.${body}.x`,
      `${version}.${nonce}.${body}=`,
      `${version}.${nonce}.${body.slice(0, 10)}`,
      '',
      'v1..',
    ];
    const sealer = createKeySealer(secret);
    for (const value of damaged) expect(() => sealer.open(value)).toThrow(SealedKeyError);
    expect(() => createKeySealer(crypto.randomBytes(32)).open(sealed)).toThrow(SealedKeyError);
    expect(() => sealer.open(undefined as unknown as string)).toThrow(SealedKeyError);
  });

  it('refuses a server secret shorter than 32 bytes', () => {
    expect(() => createKeySealer(Buffer.alloc(16))).toThrow(RangeError);
  });
});
