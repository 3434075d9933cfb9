/**
 * S/MIME certificates users publish in the directory, so that senders can encrypt mail to them.
 *
 * What a user pastes is untrusted text: it is checked to be exactly one X.509 certificate (PEM or base64 DER) that
 * can actually serve for S/MIME encryption (RSA or EC key, key usage and extended key usage allowing it, an email
 * address to find it by, in its validity period). Input holding a private key is refused outright with a message
 * saying so: a user who pastes the wrong export must learn that the key must never be uploaded.
 *
 * Parsing is by @peculiar/x509 (and asn1js to see where the certificate's encoding ends); the certificate is not
 * checked against any authority here: whether a sender trusts it is the sender's app's decision.
 */
import crypto from 'node:crypto';
import * as x509 from '@peculiar/x509';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { readBer } from './ber';

/** Input that is not a usable certificate; the message is shown to the user (in a 400) and says what is wrong. */
export class CertificateInputError extends Error {
  override name = 'CertificateInputError';
}

export interface ParsedUserCertificate {
  certificatePem: string;
  /** Lower case, without duplicates: subjectAltName rfc822Name entries, then subject emailAddress attributes. */
  emails: string[];
  subject: string;
  issuer: string;
  /** Lower-case hex, as the certificate encodes it. */
  serialNumber: string;
  /** SHA-256 of the DER encoding, lower-case hex without separators. */
  fingerprint: string;
  notBefore: number;
  notAfter: number;
}

/** The names and digests of a certificate (shared with the S/MIME inspector, which describes signers with them). */
export interface CertificateDescription {
  subject: string;
  issuer: string;
  serialNumber: string;
  fingerprint: string;
  emails: string[];
}

/** Larger than any plausible single user certificate; keeps parsing work bounded. */
const MAX_INPUT_BYTES = 16 * 1024;

const OID_EMAIL_ADDRESS = '1.2.840.113549.1.9.1';
const OID_EMAIL_PROTECTION = '1.3.6.1.5.5.7.3.4';
/** anyExtendedKeyUsage: RFC 8550 §4.4.4 accepts it in place of emailProtection. */
const OID_ANY_EXTENDED_KEY_USAGE = '2.5.29.37.0';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
const PEM_MARKER = /-----(BEGIN|END) [A-Z0-9 ]+-----/;
const PRIVATE_KEY_LABEL = /PRIVATE KEY/;

const PRIVATE_KEY_MESSAGE =
  'this is a private key: never upload a private key. Publish only the certificate (the "-----BEGIN CERTIFICATE-----" part, or a .cer/.crt file)';

/**
 * A certificate a user publishes so senders can encrypt to them: PEM or base64 DER, exactly one certificate, at
 * most 16 KiB, an RSA or EC public key, not expired at `now`, keyUsage (if present) allowing keyEncipherment or
 * keyAgreement, EKU (if present) including emailProtection, at least one email address. Never a private key.
 * Throws CertificateInputError.
 */
export function parseUserCertificate(input: string, now: number): ParsedUserCertificate {
  if (typeof input !== 'string' || !input.trim()) throw new CertificateInputError('no certificate was given');
  if (Buffer.byteLength(input, 'utf8') > MAX_INPUT_BYTES) {
    throw new CertificateInputError(`the certificate is too large (at most ${MAX_INPUT_BYTES / 1024} KiB): give a single certificate`);
  }
  const der = certificateDer(input);
  const certificate = readCertificate(der);

  const keyType = publicKeyType(der);
  if (keyType !== 'rsa' && keyType !== 'ec') {
    throw new CertificateInputError(`the certificate's key is ${keyType ?? 'of an unknown type'}: S/MIME encryption needs an RSA or EC key`);
  }

  const notBefore = certificate.notBefore.getTime();
  const notAfter = certificate.notAfter.getTime();
  if (notAfter <= now) throw new CertificateInputError(`the certificate expired on ${isoDay(notAfter)}`);
  if (notBefore > now) throw new CertificateInputError(`the certificate is not valid until ${isoDay(notBefore)}`);

  const basic = readExtension(() => certificate.getExtension(x509.BasicConstraintsExtension));
  if (basic?.ca) throw new CertificateInputError('this is a certificate authority (CA) certificate, not a personal email certificate');

  const keyUsage = readExtension(() => certificate.getExtension(x509.KeyUsagesExtension));
  if (keyUsage && !(keyUsage.usages & (x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.keyAgreement))) {
    throw new CertificateInputError('the certificate does not allow encryption (its key usage has neither keyEncipherment nor keyAgreement)');
  }
  const extendedKeyUsage = readExtension(() => certificate.getExtension(x509.ExtendedKeyUsageExtension));
  if (extendedKeyUsage && !extendedKeyUsage.usages.some((u) => u === OID_EMAIL_PROTECTION || u === OID_ANY_EXTENDED_KEY_USAGE)) {
    throw new CertificateInputError('the certificate is not for email (its extended key usage does not include emailProtection)');
  }

  let description: CertificateDescription;
  try {
    description = describeCertificate(certificate);
  } catch {
    throw new CertificateInputError("the certificate's names cannot be read");
  }
  if (!description.emails.length) {
    throw new CertificateInputError('the certificate names no email address (neither a subjectAltName email nor a subject emailAddress)');
  }
  return {
    certificatePem: `${certificate.toString('pem')}\n`,
    emails: description.emails,
    subject: description.subject,
    issuer: description.issuer,
    serialNumber: description.serialNumber,
    fingerprint: description.fingerprint,
    notBefore,
    notAfter,
  };
}

/** Subject, issuer, serial, SHA-256 fingerprint and email addresses of a certificate (DER or already parsed). */
export function describeCertificate(certificate: x509.X509Certificate | Uint8Array): CertificateDescription {
  const cert = certificate instanceof x509.X509Certificate ? certificate : new x509.X509Certificate(certificate);
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    serialNumber: cert.serialNumber.toLowerCase(),
    fingerprint: crypto.createHash('sha256').update(new Uint8Array(cert.rawData)).digest('hex'),
    emails: certificateEmails(cert),
  };
}

function certificateEmails(cert: x509.X509Certificate): string[] {
  const emails: string[] = [];
  let alternativeNames: x509.SubjectAlternativeNameExtension | null = null;
  try {
    alternativeNames = cert.getExtension(x509.SubjectAlternativeNameExtension);
  } catch {
    // A name form the library cannot represent (an unusual otherName): the subject may still carry the address.
  }
  for (const name of alternativeNames?.names.items ?? []) if (name.type === 'email') emails.push(name.value);
  emails.push(...cert.subjectName.getField(OID_EMAIL_ADDRESS));
  return [...new Set(emails.map((e) => e.trim().toLowerCase()).filter(Boolean))];
}

/** The DER bytes of the one certificate in `input`, or a CertificateInputError saying what the input is instead. */
function certificateDer(input: string): Uint8Array {
  if (PEM_MARKER.test(input)) {
    const blocks = [...input.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1]!, body: m[2]! }));
    if (blocks.some((b) => PRIVATE_KEY_LABEL.test(b.label))) throw new CertificateInputError(PRIVATE_KEY_MESSAGE);
    if (!blocks.length) throw new CertificateInputError('the PEM text is incomplete (a "-----BEGIN" line without its matching "-----END" line)');
    const other = blocks.find((b) => b.label !== 'CERTIFICATE');
    if (other) throw new CertificateInputError(`the input holds a "${other.label}" block: give exactly one "CERTIFICATE" block`);
    if (blocks.length > 1) throw new CertificateInputError(`the input holds ${blocks.length} certificates: give exactly one (your own)`);
    return decodeBase64(blocks[0]!.body, 'the certificate\'s PEM body is not valid base64');
  }
  return decodeBase64(input, 'this is not a certificate: give a PEM certificate ("-----BEGIN CERTIFICATE-----") or its base64 DER');
}

function decodeBase64(text: string, problem: string): Uint8Array {
  const compact = text.replace(/\s+/g, '');
  if (!compact || !/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 === 1) throw new CertificateInputError(problem);
  return new Uint8Array(Buffer.from(compact, 'base64'));
}

/** Parses exactly one certificate; says so when the bytes are a private key, a PKCS#12 file or anything else. */
function readCertificate(der: Uint8Array): x509.X509Certificate {
  if (isPrivateKey(der)) throw new CertificateInputError(PRIVATE_KEY_MESSAGE);
  const asn1 = readBer(der);
  if (!asn1) throw new CertificateInputError('this is not a certificate (the data is not a DER structure)');
  if (isPkcs12(asn1.result)) {
    throw new CertificateInputError('this is a PKCS#12 (.p12/.pfx) file, which holds your private key: export and publish only the certificate');
  }
  if (asn1.offset !== der.byteLength) {
    throw new CertificateInputError('the input has data after the certificate: give exactly one certificate');
  }
  try {
    return new x509.X509Certificate(der);
  } catch {
    throw new CertificateInputError('this is not a readable X.509 certificate');
  }
}

/** 'rsa', 'ec', 'ed25519'...: node's name for the certificate's public key type. */
function publicKeyType(der: Uint8Array): string | undefined {
  try {
    return new crypto.X509Certificate(der).publicKey.asymmetricKeyType;
  } catch {
    throw new CertificateInputError("the certificate's public key cannot be read");
  }
}

/** PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key in DER: node's own parser decides. */
function isPrivateKey(der: Uint8Array): boolean {
  const key = Buffer.from(der);
  for (const type of ['pkcs8', 'pkcs1', 'sec1'] as const) {
    try {
      crypto.createPrivateKey({ key, format: 'der', type });
      return true;
    } catch {
      // not this encoding
    }
  }
  return false;
}

function isPkcs12(schema: asn1js.AsnType): boolean {
  try {
    new pkijs.PFX({ schema });
    return true;
  } catch {
    return false;
  }
}

/** The extension of that class, or undefined when absent; an extension that is there but unreadable is refused,
 *  since reading it as absent would drop a restriction the issuer put on the key. */
function readExtension<T>(read: () => T | null): T | undefined {
  try {
    return read() ?? undefined;
  } catch {
    throw new CertificateInputError('the certificate has an extension that cannot be read');
  }
}

function isoDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}
