/**
 * Certificates users publish for S/MIME encryption: certificates made by OpenSSL parse to what OpenSSL says of them,
 * and everything that is not exactly one usable certificate is a CertificateInputError with a message for the user.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CertificateInputError, parseUserCertificate } from '../../server/protection/certificates';
import {
  disposeSmimePki,
  opensslDerBase64,
  opensslFingerprint,
  opensslSerial,
  pkcs12Base64,
  privateKeyDerBase64,
  smimePki,
  type SmimeTestPki,
} from '../helpers/smimePki';

let pki: SmimeTestPki;

beforeAll(() => {
  pki = smimePki();
});
afterAll(() => disposeSmimePki());

const now = () => Date.now();

/** BER that makes asn1js.fromBER throw instead of answering offset -1. */
const ASN1JS_THROWERS = ['1e0141', '1c0141', '30031e0141'];

/** `openssl x509 -noout -<field>` of a certificate file: the date as ms. */
function opensslDate(certFile: string, field: 'startdate' | 'enddate'): number {
  const out = spawnSync('openssl', ['x509', '-in', certFile, '-noout', `-${field}`], { encoding: 'utf8' }).stdout;
  const ms = Date.parse(out.slice(out.indexOf('=') + 1).trim());
  expect(Number.isNaN(ms)).toBe(false);
  return ms;
}

function refusal(input: string, at = now()): CertificateInputError {
  try {
    parseUserCertificate(input, at);
  } catch (err) {
    expect(err).toBeInstanceOf(CertificateInputError);
    expect((err as Error).message.length).toBeGreaterThan(10);
    return err as CertificateInputError;
  }
  throw new Error('the input was accepted');
}

describe('certificates that can be published', () => {
  test('an RSA S/MIME certificate parses to what openssl says of it', () => {
    const parsed = parseUserCertificate(pki.alice.cert, now());
    expect(parsed.emails).toEqual(['alice@pigeon.example']); // Alice@Pigeon.example in the certificate
    expect(parsed.fingerprint).toBe(opensslFingerprint(pki.alice.certFile));
    expect(parsed.serialNumber).toBe(opensslSerial(pki.alice.certFile));
    expect(parsed.notBefore).toBe(opensslDate(pki.alice.certFile, 'startdate'));
    expect(parsed.notAfter).toBe(opensslDate(pki.alice.certFile, 'enddate'));
    expect(parsed.subject).toContain('CN=alice');
    expect(parsed.issuer).toContain('Pigeon SMIME Test Root CA');
  });

  test('the PEM it returns is the same certificate (openssl reads it back to the same fingerprint)', () => {
    const parsed = parseUserCertificate(pki.alice.cert, now());
    const file = path.join(pki.dir, 'returned.pem');
    fs.writeFileSync(file, parsed.certificatePem);
    expect(parsed.certificatePem).toMatch(/^-----BEGIN CERTIFICATE-----\r?\n/);
    expect(opensslFingerprint(file)).toBe(parsed.fingerprint);
  });

  test('emails come from the subjectAltName and the subject emailAddress, lower-cased', () => {
    const parsed = parseUserCertificate(pki.bob.cert, now());
    expect(parsed.emails).toEqual([pki.bob.email, pki.bob.subjectEmail]);
  });

  test('an EC certificate with keyAgreement parses, as base64 DER too, and with text around the PEM', () => {
    const fromPem = parseUserCertificate(pki.carol.cert, now());
    expect(fromPem.emails).toEqual(['carol@pigeon.example']);
    const der = opensslDerBase64(pki.carol.certFile);
    expect(parseUserCertificate(der, now()).fingerprint).toBe(fromPem.fingerprint);
    expect(parseUserCertificate(der.replace(/.{64}/g, '$&\n'), now()).fingerprint).toBe(fromPem.fingerprint);
    const exported = `Bag Attributes\n    friendlyName: carol\nsubject=CN = carol\n${pki.carol.cert}\n`;
    expect(parseUserCertificate(exported, now()).fingerprint).toBe(opensslFingerprint(pki.carol.certFile));
  });
});

describe('input that is refused, saying why', () => {
  test('an expired certificate, and one not valid yet', () => {
    expect(refusal(pki.expired.cert).message).toMatch(/expired on 2021-01-01/);
    const parsed = parseUserCertificate(pki.alice.cert, now());
    expect(refusal(pki.alice.cert, parsed.notAfter + 1000).message).toMatch(/expired/);
    expect(refusal(pki.alice.cert, parsed.notBefore - 86_400_000).message).toMatch(/not valid until/);
  });

  test('a certificate without an email address', () => {
    expect(refusal(pki.noEmail.cert).message).toMatch(/no email address/);
  });

  test('a certificate whose extended key usage is not email', () => {
    expect(refusal(pki.clientAuthOnly.cert).message).toMatch(/emailProtection/);
  });

  test('a certificate whose key usage does not allow encryption', () => {
    expect(refusal(pki.signOnly.cert).message).toMatch(/keyEncipherment|keyAgreement/);
  });

  test('a CA certificate', () => {
    expect(refusal(pki.ca.cert).message).toMatch(/certificate authority/);
  });

  test('two certificates, as PEM and as concatenated DER', () => {
    expect(refusal(pki.alice.cert + pki.bob.cert).message).toMatch(/2 certificates/);
    const der = Buffer.concat([Buffer.from(opensslDerBase64(pki.alice.certFile), 'base64'), Buffer.from(opensslDerBase64(pki.bob.certFile), 'base64')]);
    expect(refusal(der.toString('base64')).message).toMatch(/exactly one/);
  });

  test('a private key in any form, alone or next to the certificate', () => {
    for (const input of [pki.alice.key, pki.alice.cert + pki.alice.key, pki.alice.key + pki.alice.cert, privateKeyDerBase64(pki.alice), pki.carol.key]) {
      expect(refusal(input).message).toMatch(/private key/);
    }
    expect(refusal(pkcs12Base64(pki.alice)).message).toMatch(/PKCS#12/);
  });

  test('garbage', () => {
    const inputs = [
      '',
      '   ',
      'hello, this is my certificate',
      crypto.randomBytes(400).toString('base64'),
      '-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n',
      `-----BEGIN CERTIFICATE-----\n${crypto.randomBytes(300).toString('base64')}\n-----END CERTIFICATE-----\n`,
      pki.alice.cert.replace('-----END CERTIFICATE-----', ''),
      // A BMPString of odd length and a UniversalString of 1 byte: asn1js throws a RangeError for these rather
      // than reporting bad BER (random input above finds them about once in a few thousand runs).
      ...ASN1JS_THROWERS.map((hex) => Buffer.from(hex, 'hex').toString('base64')),
    ];
    for (const input of inputs) refusal(input);
  });

  test('input over 16 KiB, even when it holds one good certificate', () => {
    const padded = `${'# padding\n'.repeat(1700)}${pki.alice.cert}`;
    expect(Buffer.byteLength(padded)).toBeGreaterThan(16 * 1024);
    expect(refusal(padded).message).toMatch(/too large/);
  });
});
