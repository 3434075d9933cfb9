/**
 * S/MIME facts of a stored message: whether it is signed or encrypted, and for signed mail whether the signature
 * holds. Signed and encrypted mail is synced intact; this module only reads it, so that the app can show a
 * signature status the server computed against the tenant's trust anchors.
 *
 * Shapes recognised at the top level of the message (RFC 8551):
 * - multipart/signed with protocol application/pkcs7-signature (or the older x-pkcs7-signature): the first body
 *   part, exactly as transmitted with its headers and line endings made CRLF (§3.1.1), is the signed content; the
 *   second holds a detached CMS SignedData;
 * - application/pkcs7-mime (or x-pkcs7-mime) holding SignedData with the content inside ("opaque" signing), or
 *   EnvelopedData / AuthEnvelopedData (encrypted: the server has no key and reports only that).
 *
 * Verdicts: 'invalid' when the signature does not verify over the content (or cannot be read at all), 'untrusted'
 * when it verifies but the signer's certificate does not lead to a trust anchor, was not valid when the message was
 * signed, or is not meant for email, 'valid' otherwise. The time the certificate must be valid at is the signed
 * signingTime attribute (what mail clients use, so that old mail keeps verifying after the certificate expires),
 * else `now`. A signingTime later than `now` is not believable and is ignored.
 *
 * The MIME structure is split here by hand (only the top-level headers and the two parts of multipart/signed are
 * needed, and the signed bytes must be taken exactly as they were sent, which a parser that normalises does not
 * allow); everything CMS and X.509 is pkijs and asn1js.
 */
import { webcrypto } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { readBer } from './ber';
import { describeCertificate } from './certificates';

export interface SmimeSigner {
  email: string | null;
  subject: string;
  issuer: string;
  serialNumber: string;
  /** SHA-256 of the certificate's DER, lower-case hex. */
  fingerprint: string;
}

export interface SmimeSignature {
  status: 'valid' | 'invalid' | 'untrusted';
  /** Null when no signer certificate could be found. */
  signer: SmimeSigner | null;
  /** The signingTime attribute, ISO 8601. */
  signedAt: string | null;
  /** Why the status is not 'valid', in words; null when valid. */
  reason: string | null;
}

export interface SmimeInfo {
  /** 'encrypted' = application/pkcs7-mime holding enveloped-data or authEnveloped-data. */
  kind: 'signed' | 'encrypted';
  /** For 'signed'; null for 'encrypted' (the server cannot open it). */
  signature: SmimeSignature | null;
}

export interface SmimeInspector {
  /** S/MIME facts of a raw RFC 5322 message, or undefined when its top level is not S/MIME. Never throws for bad
   *  input. `now` (ms) decides certificate validity when the signature has no signingTime. */
  inspect(raw: Buffer, now: number): Promise<SmimeInfo | undefined>;
}

const OID = {
  signedData: '1.2.840.113549.1.7.2',
  envelopedData: '1.2.840.113549.1.7.3',
  authEnvelopedData: '1.2.840.113549.1.9.16.1.23',
  signingTime: '1.2.840.113549.1.9.5',
  extendedKeyUsage: '2.5.29.37',
  keyUsage: '2.5.29.15',
  emailProtection: '1.3.6.1.5.5.7.3.4',
  anyExtendedKeyUsage: '2.5.29.37.0',
} as const;

const SIGNATURE_PROTOCOLS = new Set(['application/pkcs7-signature', 'application/x-pkcs7-signature']);
const MIME_TYPES = new Set(['application/pkcs7-mime', 'application/x-pkcs7-mime']);

/**
 * Work limits for what a sender controls. pkijs builds certificate paths by unbounded recursion: two certificates
 * that certify each other (easy to make with two keys) send it round for ever, so issuer lookups are budgeted.
 */
const LIMITS = { signers: 5, carriedCertificates: 20, issuerLookups: 64 } as const;

/** The path search ran out of its budget (a loop among the message's certificates, or absurd branching). */
class ChainSearchExhausted extends Error {
  override name = 'ChainSearchExhausted';
}

/** SignedDataVerifyError codes (pkijs) that this module words differently. */
const VERIFY_CODE = {
  noCertificates: 2,
  signerNotFound: 3,
  unsupportedAlgorithm: 7,
  missingContent: 8,
  missingContentType: 9,
  missingDigest: 10,
} as const;
/** CertificateChainValidationEngine's code for a certificate of the path outside its validity period. */
const CHAIN_CODE_VALIDITY = 8;

const REASONS = {
  contentMismatch: 'the content does not match the signature',
  badSignature: "the signature does not verify with the signer's certificate",
  unreadable: 'the signature could not be read (it is not CMS signed data)',
  noSigner: 'the signature names no signer',
  signerMissing: "the signer's certificate is not in the message",
  unsupported: 'the signature uses an algorithm the server does not support',
  contentMissing: 'the signed content is missing',
  embeddedContent: 'the signature part carries content of its own instead of signing the message',
  missingAttributes: 'the signature lacks its content-type or message-digest attribute',
  noChain: "the signer's certificate does not chain to a trusted authority",
  chainExpired: "a certificate in the signer's chain was not valid when the message was signed",
  notEmail: "the signer's certificate is not meant for email (its extended key usage lacks emailProtection)",
  noSigning: "the signer's certificate does not allow signing (key usage)",
  malformed: 'the signed message is malformed: it lacks its two parts',
  chainLoops: "the signer's certificate chain could not be built (its certificates loop or are too many)",
} as const;

/**
 * An inspector trusting the given anchors (PEM; a string may hold several certificates). Throws if an anchor
 * cannot be read: that is configuration, not message input.
 */
export function createSmimeInspector(opts: { trustAnchorsPem: string[] }): SmimeInspector {
  const engine = new pkijs.CryptoEngine({ name: 'node', crypto: webcrypto as unknown as pkijs.CryptoEngineParameters['crypto'] });
  const anchors = opts.trustAnchorsPem.flatMap((pem, index) => {
    const blocks = [...pem.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)];
    if (!blocks.length) throw new Error(`S/MIME trust anchor ${index + 1} holds no PEM certificate`);
    return blocks.map((m) => {
      try {
        return pkijs.Certificate.fromBER(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
      } catch (err) {
        throw new Error(`S/MIME trust anchor ${index + 1} is not a readable certificate (${(err as Error).message})`);
      }
    });
  });
  const verifier = { engine, anchors };
  return {
    async inspect(raw, now) {
      const top = splitEntity(raw.toString('latin1'));
      const contentType = parseContentType(top.headers.get('content-type'));
      if (!contentType) return undefined;
      const fromAddresses = addressesIn(top.headers.get('from') ?? '');

      if (contentType.type === 'multipart/signed') {
        if (!SIGNATURE_PROTOCOLS.has((contentType.params.get('protocol') ?? '').toLowerCase())) return undefined;
        const boundary = contentType.params.get('boundary');
        return { kind: 'signed', signature: await guarded(() => inspectDetached(verifier, top.body, boundary, now, fromAddresses)) };
      }
      if (!MIME_TYPES.has(contentType.type)) return undefined;

      const smimeType = (contentType.params.get('smime-type') ?? '').toLowerCase();
      // Encrypted data is not parsed: the label is enough and the server could do nothing more with it.
      if (smimeType === 'enveloped-data' || smimeType === 'authenveloped-data') return { kind: 'encrypted', signature: null };
      if (smimeType === 'certs-only' || smimeType === 'compressed-data') return undefined;

      const der = decodeBody(top.body, top.headers.get('content-transfer-encoding'));
      const contentInfo = readContentInfo(der);
      switch (contentInfo?.contentType) {
        case OID.envelopedData:
        case OID.authEnvelopedData:
          return { kind: 'encrypted', signature: null };
        case OID.signedData:
          return { kind: 'signed', signature: await guarded(() => checkSignedData(verifier, contentInfo, undefined, now, fromAddresses)) };
        case undefined:
          // Declared S/MIME but unreadable: reported as a broken signature, the warning that errs on the safe side.
          return { kind: 'signed', signature: failure(REASONS.unreadable) };
        default:
          return undefined; // CMS of another kind (compressed data, say): neither signed nor encrypted
      }
    },
  };
}

interface Verifier {
  engine: pkijs.ICryptoEngine;
  anchors: pkijs.Certificate[];
}

/** Whatever goes wrong while checking is a signature that could not be verified, never an exception. */
async function guarded(check: () => Promise<SmimeSignature>): Promise<SmimeSignature> {
  try {
    return await check();
  } catch (err) {
    return failure(`the signature could not be checked (${(err as Error)?.message ?? String(err)})`);
  }
}

function failure(reason: string, signer: SmimeSigner | null = null, signedAt: string | null = null): SmimeSignature {
  return { status: 'invalid', signer, signedAt, reason };
}

async function inspectDetached(
  verifier: Verifier,
  body: string,
  boundary: string | undefined,
  now: number,
  fromAddresses: string[],
): Promise<SmimeSignature> {
  const parts = boundary ? multipartBodies(body, boundary) : [];
  if (parts.length < 2) return failure(REASONS.malformed);
  // RFC 8551 §3.1.1: the signature covers the part in canonical form, whatever line endings storage left it with.
  const signedBytes = Buffer.from(parts[0]!.replace(/\r?\n/g, '\r\n'), 'latin1');
  const signaturePart = splitEntity(parts[1]!);
  const contentInfo = readContentInfo(decodeBody(signaturePart.body, signaturePart.headers.get('content-transfer-encoding')));
  if (contentInfo?.contentType !== OID.signedData) return failure(REASONS.unreadable);
  return checkSignedData(verifier, contentInfo, signedBytes, now, fromAddresses);
}

/**
 * The best verdict over the SignedData's signers (one good signature is enough, RFC 5652 §5.6 leaves the choice to
 * the recipient). `detached` is the content of a multipart/signed message; without it the content is inside.
 */
async function checkSignedData(
  verifier: Verifier,
  contentInfo: pkijs.ContentInfo,
  detached: Buffer | undefined,
  now: number,
  fromAddresses: string[],
): Promise<SmimeSignature> {
  let signedData: pkijs.SignedData;
  try {
    signedData = new pkijs.SignedData({ schema: contentInfo.content });
  } catch {
    return failure(REASONS.unreadable);
  }
  if (!signedData.signerInfos.length) return failure(REASONS.noSigner);
  // A detached signature that also carries content would be verified over that content, not over the message.
  if (detached && signedData.encapContentInfo.eContent) return failure(REASONS.embeddedContent);

  const verdicts: SmimeSignature[] = [];
  for (let index = 0; index < Math.min(signedData.signerInfos.length, LIMITS.signers); index++) {
    const verdict = await checkSigner(verifier, signedData, index, detached, now, fromAddresses);
    if (verdict.status === 'valid') return verdict;
    verdicts.push(verdict);
  }
  return verdicts.find((v) => v.status === 'untrusted') ?? verdicts[0]!;
}

async function checkSigner(
  verifier: Verifier,
  signedData: pkijs.SignedData,
  index: number,
  detached: Buffer | undefined,
  now: number,
  fromAddresses: string[],
): Promise<SmimeSignature> {
  const signingTime = signingTimeOf(signedData.signerInfos[index]!);
  const signedAt = signingTime ? signingTime.toISOString() : null;

  // The signature alone first (no chain): pkijs checks the chain before the signature, and the verdicts differ.
  let result: pkijs.SignedDataVerifyResult;
  try {
    result = await signedData.verify(
      { signer: index, data: detached ? toArrayBuffer(detached) : undefined, extendedMode: true, checkChain: false },
      verifier.engine,
    );
  } catch (err) {
    const known = err instanceof pkijs.SignedDataVerifyError ? err : undefined;
    const signer = known?.signerCertificate ? describeSigner(known.signerCertificate, fromAddresses) : null;
    return failure(verifyFailureReason(err), signer, signedAt);
  }
  const signerCertificate = result.signerCertificate;
  if (!signerCertificate) return failure(REASONS.signerMissing, null, signedAt);
  const signer = describeSigner(signerCertificate, fromAddresses);
  if (!result.signatureVerified) return failure(REASONS.badSignature, signer, signedAt);

  const atSigningTime = signingTime !== undefined && signingTime.getTime() <= now;
  const checkDate = atSigningTime ? signingTime : new Date(now);
  const distrust = await certificateProblem(verifier, signedData, signerCertificate, checkDate, atSigningTime);
  if (distrust) return { status: 'untrusted', signer, signedAt, reason: distrust };
  return { status: 'valid', signer, signedAt, reason: null };
}

/** Why the signer's certificate cannot vouch for the signature at `checkDate`, or undefined when it can. */
async function certificateProblem(
  verifier: Verifier,
  signedData: pkijs.SignedData,
  signerCertificate: pkijs.Certificate,
  checkDate: Date,
  atSigningTime: boolean,
): Promise<string | undefined> {
  if (signerCertificate.notAfter.value < checkDate) {
    return atSigningTime ? 'the certificate had expired when the message was signed' : "the signer's certificate has expired";
  }
  if (signerCertificate.notBefore.value > checkDate) {
    return atSigningTime ? 'the certificate was not yet valid when the message was signed' : "the signer's certificate is not valid yet";
  }

  // RFC 8550 §4.4: an EKU, when present, must allow email; a key usage, when present, must allow signing.
  const extensions = signerCertificate.extensions ?? [];
  const eku = extensions.find((e) => e.extnID === OID.extendedKeyUsage)?.parsedValue as pkijs.ExtKeyUsage | undefined;
  if (eku && !eku.keyPurposes.some((p) => p === OID.emailProtection || p === OID.anyExtendedKeyUsage)) return REASONS.notEmail;
  const keyUsage = extensions.find((e) => e.extnID === OID.keyUsage)?.parsedValue as asn1js.BitString | undefined;
  if (keyUsage) {
    const firstByte = keyUsage.valueBlock.valueHexView[0] ?? 0;
    // digitalSignature (bit 0) or nonRepudiation (bit 1), most significant bits first.
    if ((firstByte & 0xc0) === 0) return REASONS.noSigning;
  }

  // The path may use the certificates the message carries (intermediates), but must end at an anchor.
  const signerDer = Buffer.from(signerCertificate.toSchema().toBER());
  const carried = (signedData.certificates ?? [])
    .filter((c): c is pkijs.Certificate => c instanceof pkijs.Certificate && !signerDer.equals(Buffer.from(c.toSchema().toBER())))
    .slice(0, LIMITS.carriedCertificates);
  let lookups = 0;
  const chain = new pkijs.CertificateChainValidationEngine({
    trustedCerts: verifier.anchors,
    certs: [...carried, signerCertificate], // the engine takes the last one as the end entity
    checkDate,
    findIssuer: (certificate, engine, crypto) => {
      if (++lookups > LIMITS.issuerLookups) throw new ChainSearchExhausted('certificate path search budget exhausted');
      return engine.defaultFindIssuer(certificate, engine, crypto);
    },
  });
  // verify() turns exceptions, ours included, into a failed result.
  const result = await chain.verify({}, verifier.engine);
  if (result.result) return undefined;
  if (result.error instanceof ChainSearchExhausted) return REASONS.chainLoops;
  return result.resultCode === CHAIN_CODE_VALIDITY ? REASONS.chainExpired : REASONS.noChain;
}

function verifyFailureReason(err: unknown): string {
  if (!(err instanceof pkijs.SignedDataVerifyError)) return `the signature could not be checked (${(err as Error)?.message ?? String(err)})`;
  const error = err;
  switch (error.code) {
    case VERIFY_CODE.noCertificates:
    case VERIFY_CODE.signerNotFound:
      return REASONS.signerMissing;
    case VERIFY_CODE.unsupportedAlgorithm:
      return REASONS.unsupported;
    case VERIFY_CODE.missingContent:
      return REASONS.contentMissing;
    case VERIFY_CODE.missingContentType:
    case VERIFY_CODE.missingDigest:
      return REASONS.missingAttributes;
    default:
      // pkijs words a digest mismatch only in its message (code 15 is its catch-all).
      if (/digest doesn't match/i.test(error.message ?? '')) return REASONS.contentMismatch;
      return `the signature could not be checked (${error.message})`;
  }
}

function signingTimeOf(signerInfo: pkijs.SignerInfo): Date | undefined {
  const attribute = signerInfo.signedAttrs?.attributes.find((a) => a.type === OID.signingTime);
  const value = attribute?.values[0];
  if (value instanceof asn1js.UTCTime || value instanceof asn1js.GeneralizedTime) {
    const date = value.toDate();
    return Number.isNaN(date.getTime()) ? undefined : date;
  }
  return undefined;
}

/** The signer as the app shows it; of several addresses in the certificate, the one the From header uses. */
function describeSigner(certificate: pkijs.Certificate, fromAddresses: string[]): SmimeSigner {
  const description = describeCertificate(new Uint8Array(certificate.toSchema().toBER()));
  const email = description.emails.find((e) => fromAddresses.includes(e)) ?? description.emails[0] ?? null;
  return {
    email,
    subject: description.subject,
    issuer: description.issuer,
    serialNumber: description.serialNumber,
    fingerprint: description.fingerprint,
  };
}

// ---- CMS and MIME plumbing ----

function readContentInfo(der: Buffer): pkijs.ContentInfo | undefined {
  if (!der.length) return undefined;
  const asn1 = readBer(new Uint8Array(der));
  if (!asn1) return undefined;
  try {
    return new pkijs.ContentInfo({ schema: asn1.result });
  } catch {
    return undefined;
  }
}

function toArrayBuffer(bytes: Buffer): ArrayBuffer {
  return new Uint8Array(bytes).buffer as ArrayBuffer;
}

/** A body's bytes per its Content-Transfer-Encoding (CMS travels base64, or binary on 8-bit-clean paths). */
function decodeBody(body: string, transferEncoding: string | undefined): Buffer {
  const encoding = (transferEncoding ?? '').trim().toLowerCase();
  if (encoding === 'base64') return Buffer.from(body.replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
  return Buffer.from(body, 'latin1');
}

/** Headers (lower-cased names, unfolded; the first of each name) and the body of an entity, on a latin1 string. */
function splitEntity(text: string): { headers: Map<string, string>; body: string } {
  const blank = /\r?\n\r?\n/.exec(text);
  let headerText: string;
  let body: string;
  if (/^\r?\n/.test(text)) {
    // No headers at all (a body part may have none).
    headerText = '';
    body = text.replace(/^\r?\n/, '');
  } else if (blank) {
    headerText = text.slice(0, blank.index);
    body = text.slice(blank.index + blank[0].length);
  } else {
    headerText = text;
    body = '';
  }
  const headers = new Map<string, string>();
  for (const line of headerText.replace(/\r?\n(?=[ \t])/g, '').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (!headers.has(name)) headers.set(name, line.slice(colon + 1).trim());
  }
  return { headers, body };
}

/** `type/subtype; name=value; name="quoted"` → lower-cased type and parameters (names lower-cased). */
function parseContentType(value: string | undefined): { type: string; params: Map<string, string> } | undefined {
  if (!value) return undefined;
  const text = value.replace(/\([^()]*\)/g, ' '); // comments, as some mailers write them
  const segments: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted && ch === '\\' && i + 1 < text.length) {
      current += text[++i];
      continue;
    }
    if (ch === '"') {
      quoted = !quoted;
      continue;
    }
    if (ch === ';' && !quoted) {
      segments.push(current);
      current = '';
      continue;
    }
    current += ch;
  }
  segments.push(current);
  const type = segments[0]!.trim().toLowerCase();
  if (!/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/.test(type)) return undefined;
  const params = new Map<string, string>();
  for (const segment of segments.slice(1)) {
    const eq = segment.indexOf('=');
    if (eq <= 0) continue;
    const name = segment.slice(0, eq).trim().toLowerCase();
    if (!params.has(name)) params.set(name, segment.slice(eq + 1).trim());
  }
  return { type, params };
}

/**
 * The body parts of a multipart body, each exactly as transmitted (RFC 2046 §5.1.1: a delimiter is a line
 * `--boundary`, and the line break before it belongs to the delimiter, not to the part). Works on CRLF and LF text.
 */
function multipartBodies(body: string, boundary: string): string[] {
  const marker = `--${boundary}`;
  const delimiters: Array<{ breakStart: number; next: number; close: boolean }> = [];
  for (let at = body.indexOf(marker); at !== -1; at = body.indexOf(marker, at + 1)) {
    if (at > 0 && body[at - 1] !== '\n') continue;
    let end = at + marker.length;
    const close = body.startsWith('--', end);
    if (close) end += 2;
    while (body[end] === ' ' || body[end] === '\t') end++;
    let next: number;
    if (body.startsWith('\r\n', end)) next = end + 2;
    else if (body[end] === '\n') next = end + 1;
    else if (end >= body.length) next = end;
    else continue; // the boundary string is only the start of a longer line
    const breakStart = at === 0 ? 0 : body[at - 2] === '\r' ? at - 2 : at - 1;
    delimiters.push({ breakStart, next, close });
    if (close) break;
  }
  const parts: string[] = [];
  for (let i = 0; i + 1 < delimiters.length; i++) {
    parts.push(body.slice(delimiters[i]!.next, delimiters[i + 1]!.breakStart));
  }
  // A message cut short of its close delimiter still has its last part (the signature, for multipart/signed).
  const last = delimiters[delimiters.length - 1];
  if (last && !last.close) parts.push(body.slice(last.next));
  return parts;
}

/** Addresses in a header value (lower case), for choosing which of a certificate's addresses to show. */
function addressesIn(value: string): string[] {
  return (value.match(/[^\s<>"',;:()[\]]+@[^\s<>"',;:()[\]]+/g) ?? []).map((a) => a.toLowerCase());
}
