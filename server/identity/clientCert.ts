/**
 * Certificate-based sign-in: a user signs in with a client certificate issued by a certificate authority (CA) that
 * their tenant trusts.
 *
 * The work is split between OpenSSL and this module. OpenSSL verifies the certificate during the TLS handshake
 * (chain, signatures, validity dates, key usage and, with CRLs configured, revocation) and reports its verdict as
 * `socket.authorized` / `socket.authorizationError`; the listener does not reject a failed certificate
 * (`rejectUnauthorized: false`), so the sign-in page can say why it was refused instead of the browser showing a
 * handshake error. This module then decides which tenant's CA issued the certificate (by signature, never by name:
 * a certificate from tenant A's CA must never sign in a user of tenant B) and which user it names.
 *
 * Trust file (JSON; relative paths are relative to the file's own directory):
 *
 *   [
 *     { "tenant": "acme", "caFile": "acme-ca.pem", "crlFiles": ["acme-ca.crl.pem"] },
 *     { "tenant": "globex", "caFile": "globex-root-and-issuing.pem", "crlFiles": ["root.crl", "issuing.crl"] }
 *   ]
 *
 * `caFile` holds one or more PEM CA certificates; `crlFiles` (optional) PEM CRLs issued by those CAs. The CA that
 * issues the users' certificates must itself be listed, with the CAs above it up to the root: the tenant is found
 * from the CA that signed the user's certificate, never from intermediates the client sends (which are the
 * client's to choose; and on a server socket Node drops a sent intermediate from getPeerCertificate(true) once
 * getPeerX509Certificate() has been called, seen on Node 20 and reported for later versions as nodejs/node#65579).
 *
 * CRLs and OpenSSL: the `crl` listener option makes Node add each CRL to the listener's certificate store and turn
 * on X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL for that whole store, so OpenSSL checks revocation of every
 * certificate of every client chain (CERT_REVOKED when listed) and refuses any certificate whose issuer has no CRL
 * in the store (UNABLE_TO_GET_CRL), whichever tenant it belongs to. That is why, once any tenant lists a CRL, every
 * trusted CA needs one (checked when the trust file is loaded), and why a CRL past its nextUpdate makes OpenSSL
 * refuse all of its CA's certificates (CRL_HAS_EXPIRED): the file is refused at load, and `staleCrls` lets a timer
 * warn before that happens. CRLs are read when the listener's TLS context is built; to take a new CRL in, load the
 * trust again and call `server.setSecureContext({ ...tlsOptions, ...certificateListenerOptions(trust) })`.
 *
 * Identity: the user is named by the certificate's subjectAltName. A Microsoft UPN otherName (OID
 * 1.3.6.1.4.1.311.20.2.3) wins over an `email:` entry when both are present: the UPN is the name the issuing
 * directory assigns for signing in, while the email entry is a mail address that may be an alias or shared.
 * The name is lower-cased; the caller looks it up among the users of the returned tenant only.
 */
import crypto, { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { TLSSocket, TlsOptions } from 'node:tls';
import { z } from 'zod';

/** A trust file that cannot be used; the message names the file, the entry and the problem. */
export class ClientCertTrustError extends Error {
  override name = 'ClientCertTrustError';
}

export interface TrustedCa {
  tenantId: string;
  certificate: X509Certificate;
  pem: string;
  /** The file it was read from (for messages). */
  file: string;
}

export interface TrustedCrl {
  tenantId: string;
  /** The tenant CA that signed it. */
  issuer: TrustedCa;
  pem: string;
  file: string;
  thisUpdate: Date;
  /** After this OpenSSL refuses every certificate of `issuer` (CRL_HAS_EXPIRED). Absent in a CRL without one. */
  nextUpdate: Date | undefined;
}

export interface ClientCertTrust {
  tenants: readonly string[];
  cas: readonly TrustedCa[];
  crls: readonly TrustedCrl[];
}

const trustFileSchema = z
  .array(
    z.strictObject({
      tenant: z.string().trim().min(1, 'must be a tenant id'),
      caFile: z.string().min(1, 'must name a PEM file of CA certificates'),
      crlFiles: z.array(z.string().min(1, 'must name a PEM CRL file')).default([]),
    }),
  )
  .min(1, 'must list at least one tenant');

export type TrustFileEntry = z.input<typeof trustFileSchema>[number];

/** Reads and checks the trust file (see the module comment for its format). Throws ClientCertTrustError. */
export function loadClientCertTrust(trustFile: string, options: { now?: Date } = {}): ClientCertTrust {
  let text: string;
  try {
    text = fs.readFileSync(trustFile, 'utf8');
  } catch (err) {
    throw new ClientCertTrustError(`client certificate trust file ${trustFile}: ${readProblem(err)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ClientCertTrustError(`client certificate trust file ${trustFile}: not JSON (${(err as Error).message})`);
  }
  return buildClientCertTrust(json, { baseDir: path.dirname(path.resolve(trustFile)), source: trustFile, now: options.now });
}

/** The checks of loadClientCertTrust on already-parsed JSON; relative file names are resolved against `baseDir`. */
export function buildClientCertTrust(
  json: unknown,
  options: { baseDir: string; source?: string; now?: Date },
): ClientCertTrust {
  const source = options.source ?? 'client certificate trust';
  const now = options.now ?? new Date();
  const fail: (where: string, problem: string) => never = (where, problem) => {
    throw new ClientCertTrustError(`${source}: ${where}: ${problem}`);
  };

  const parsed = trustFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? issue.path.map((p) => (typeof p === 'number' ? `entry ${p + 1}` : p)).join(' ') : 'the file';
    fail(where, issue.message);
  }
  const entries = parsed.data;

  const cas: TrustedCa[] = [];
  const crlSources: Array<{ tenantId: string; file: string; pem: string; where: string }> = [];
  const seenTenants = new Set<string>();
  entries.forEach((entry, index) => {
    const where = `entry ${index + 1} (tenant "${entry.tenant}")`;
    if (seenTenants.has(entry.tenant)) fail(where, 'the tenant is listed twice: put all its CA certificates in one caFile');
    seenTenants.add(entry.tenant);

    const caFile = path.resolve(options.baseDir, entry.caFile);
    const blocks = pemBlocks(readText(caFile, where, 'caFile', fail), 'CERTIFICATE');
    if (!blocks.length) fail(where, `caFile ${entry.caFile} holds no PEM certificate`);
    blocks.forEach((pem, i) => {
      const which = blocks.length > 1 ? `certificate ${i + 1} of caFile ${entry.caFile}` : `caFile ${entry.caFile}`;
      let certificate: X509Certificate;
      try {
        certificate = new X509Certificate(pem);
      } catch (err) {
        return fail(where, `${which} is not a readable certificate (${(err as Error).message})`);
      }
      if (!certificate.ca) fail(where, `${which} (${certificate.subject.replace(/\n/g, ', ')}) is not a CA certificate (basicConstraints CA:TRUE is missing)`);
      if (Date.parse(certificate.validTo) <= now.getTime()) fail(where, `${which} (${certificate.subject.replace(/\n/g, ', ')}) expired on ${isoDate(certificate.validTo)}`);
      if (Date.parse(certificate.validFrom) > now.getTime()) fail(where, `${which} is not valid until ${isoDate(certificate.validFrom)}`);
      cas.push({ tenantId: entry.tenant, certificate, pem, file: caFile });
    });
    for (const name of entry.crlFiles) {
      const file = path.resolve(options.baseDir, name);
      const crls = pemBlocks(readText(file, where, 'crlFile', fail), 'X509 CRL');
      if (!crls.length) fail(where, `crlFile ${name} holds no PEM CRL ("-----BEGIN X509 CRL-----")`);
      for (const pem of crls) crlSources.push({ tenantId: entry.tenant, file: name, pem, where });
    }
  });

  checkHierarchies(cas, fail);

  const crls: TrustedCrl[] = crlSources.map(({ tenantId, file, pem, where }) => {
    let info: CrlInfo;
    try {
      info = readCrl(pemToDer(pem));
    } catch (err) {
      return fail(where, `crlFile ${file} is not a readable CRL (${(err as Error).message})`);
    }
    const issuer = cas.find((ca) => ca.tenantId === tenantId && crlIssuedBy(info, ca.certificate));
    if (!issuer) fail(where, `crlFile ${file} was not issued by any CA in this tenant's caFile`);
    if (info.nextUpdate && info.nextUpdate.getTime() <= now.getTime()) {
      fail(where, `crlFile ${file} expired on ${info.nextUpdate.toISOString()} (its nextUpdate): publish a fresh CRL`);
    }
    return { tenantId, issuer, pem, file: path.resolve(options.baseDir, file), thisUpdate: info.thisUpdate, nextUpdate: info.nextUpdate };
  });

  // See the module comment: OpenSSL's CRL check is all-or-nothing for the listener.
  if (crls.length) {
    const without = cas.filter((ca) => !crls.some((crl) => crl.issuer === ca));
    if (without.length) {
      const list = without.map((ca) => `tenant "${ca.tenantId}" CA ${ca.certificate.subject.replace(/\n/g, ', ')}`).join('; ');
      fail(
        'crlFiles',
        `once any tenant lists a CRL, OpenSSL checks revocation of every client certificate and refuses those whose CA has no CRL: add a CRL for ${list}`,
      );
    }
  }

  return { tenants: entries.map((e) => e.tenant), cas, crls };
}

/**
 * The trust rules that keep tenant attribution unambiguous: a CA certificate belongs to one tenant only, and an
 * intermediate CA's issuer is in the same tenant's caFile (Node's default store needs the root to complete the
 * chain, and a chain that crossed tenants would let one tenant's CA vouch for another's users).
 */
function checkHierarchies(cas: TrustedCa[], fail: (where: string, problem: string) => never): void {
  for (const [i, ca] of cas.entries()) {
    const spki = spkiOf(ca.certificate);
    const twin = cas.find((other, j) => j < i && other.tenantId !== ca.tenantId && spkiOf(other.certificate).equals(spki));
    if (twin) fail(`tenant "${ca.tenantId}"`, `CA ${ca.certificate.subject.replace(/\n/g, ', ')} (or its key) is also trusted by tenant "${twin.tenantId}": a CA can belong to one tenant only`);
    if (issuedBy(ca.certificate, ca.certificate)) continue; // a root
    const issuer = cas.find((other) => other !== ca && issuedBy(ca.certificate, other.certificate));
    if (!issuer) {
      fail(`tenant "${ca.tenantId}"`, `intermediate CA ${ca.certificate.subject.replace(/\n/g, ', ')} needs its issuer (${ca.certificate.issuer.replace(/\n/g, ', ')}) in the same caFile`);
    } else if (issuer.tenantId !== ca.tenantId) {
      fail(`tenant "${ca.tenantId}"`, `intermediate CA ${ca.certificate.subject.replace(/\n/g, ', ')} is issued by tenant "${issuer.tenantId}"'s CA`);
    }
  }
}

/** CRLs whose nextUpdate falls before `before` (default: now): once it has passed, their CA's users cannot sign in. */
export function staleCrls(trust: ClientCertTrust, before: Date = new Date()): TrustedCrl[] {
  return trust.crls.filter((crl) => crl.nextUpdate !== undefined && crl.nextUpdate.getTime() <= before.getTime());
}

export type ClientCertListenerOptions = Required<Pick<TlsOptions, 'requestCert' | 'rejectUnauthorized' | 'ca'>> & Pick<TlsOptions, 'crl'>;

/**
 * The options to add to `https.createServer` / `tls.createServer` for a listener that asks for client
 * certificates. Browsers prompt for a certificate on every connection to such a listener, so it should be a
 * listener of its own (the certificate sign-in page), not the API's.
 */
export function certificateListenerOptions(trust: ClientCertTrust): ClientCertListenerOptions {
  return {
    requestCert: true,
    // The page explains a refusal; a failed handshake would only show the browser's error page.
    rejectUnauthorized: false,
    // Only the tenants' CAs: Node's default public roots must not vouch for client certificates.
    ca: trust.cas.map((ca) => ca.pem),
    ...(trust.crls.length ? { crl: trust.crls.map((crl) => crl.pem) } : {}),
  };
}

export type ClientCertRefusal =
  | 'none-presented'
  | 'unknown-ca'
  | 'revoked'
  | 'expired'
  | 'not-yet-valid'
  | 'revocation-unknown'
  | 'wrong-purpose'
  | 'no-identity'
  | 'ambiguous-identity'
  | 'invalid';

export interface ClientCertificateSummary {
  subject: string;
  issuer: string;
  serial: string;
  fingerprint256: string;
  /** ISO 8601. */
  validTo: string;
}

export type ClientCertIdentity =
  | {
      ok: true;
      tenantId: string;
      /** Lower-cased UPN or email from the subjectAltName. */
      username: string;
      usernameFrom: 'upn' | 'email';
      certificate: ClientCertificateSummary;
    }
  | {
      ok: false;
      reason: ClientCertRefusal;
      /** A sentence for the sign-in page. */
      message: string;
      /** OpenSSL's verification error, when it made the decision (for logs). */
      verifyError?: string;
      /** For the operator's log, not the page: what exactly did not match. */
      detail?: string;
      certificate?: ClientCertificateSummary;
    };

/** OpenSSL verification errors (as Node names them) grouped into the refusals the page explains. */
const VERIFY_ERRORS: Record<string, ClientCertRefusal> = {
  CERT_REVOKED: 'revoked',
  CERT_HAS_EXPIRED: 'expired',
  CERT_NOT_YET_VALID: 'not-yet-valid',
  UNABLE_TO_GET_CRL: 'revocation-unknown',
  UNABLE_TO_GET_CRL_ISSUER: 'revocation-unknown',
  CRL_HAS_EXPIRED: 'revocation-unknown',
  CRL_NOT_YET_VALID: 'revocation-unknown',
  CRL_SIGNATURE_FAILURE: 'revocation-unknown',
  UNABLE_TO_DECRYPT_CRL_SIGNATURE: 'revocation-unknown',
  ERROR_IN_CRL_LAST_UPDATE_FIELD: 'revocation-unknown',
  ERROR_IN_CRL_NEXT_UPDATE_FIELD: 'revocation-unknown',
  DIFFERENT_CRL_SCOPE: 'revocation-unknown',
  UNHANDLED_CRITICAL_CRL_EXTENSION: 'revocation-unknown',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'unknown-ca',
  SELF_SIGNED_CERT_IN_CHAIN: 'unknown-ca',
  UNABLE_TO_GET_ISSUER_CERT: 'unknown-ca',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unknown-ca',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unknown-ca',
  CERT_UNTRUSTED: 'unknown-ca',
  CERT_REJECTED: 'unknown-ca',
  INVALID_PURPOSE: 'wrong-purpose',
};

const MESSAGES: Record<ClientCertRefusal, (c?: ClientCertificateSummary) => string> = {
  'none-presented': () => 'No certificate was presented. Choose a certificate when your browser asks for one, or sign in another way.',
  'unknown-ca': () => 'This certificate was not issued by a certificate authority that any organisation here trusts.',
  revoked: () => 'This certificate has been revoked by the authority that issued it.',
  expired: (c) => `This certificate has expired${c ? ` (on ${c.validTo.slice(0, 10)})` : ''}.`,
  'not-yet-valid': () => 'This certificate is not valid yet.',
  'revocation-unknown': () => 'Whether this certificate has been revoked cannot be checked at the moment, so it cannot be used to sign in.',
  'wrong-purpose': () => 'This certificate is not meant for signing in (it is not a client authentication certificate).',
  'no-identity': () => 'This certificate does not name a user (it has neither a UPN nor an email address).',
  'ambiguous-identity': () => 'This certificate names more than one user, so it cannot be used to sign in.',
  invalid: () => 'This certificate could not be verified.',
};

/**
 * Who the client certificate on this TLS connection signs in as. Call it from a request on a listener built with
 * `certificateListenerOptions(trust)`, with the same trust. The identity belongs to the connection (keep-alive
 * requests share it), so bind the result to the sign-in transaction, not to the socket.
 */
export function identifyClientCertificate(socket: TLSSocket, trust: ClientCertTrust): ClientCertIdentity {
  const leaf = socket.getPeerX509Certificate();
  if (!leaf) return refuse('none-presented');
  const certificate = summarise(leaf);

  // Attribution comes first and by signature: OpenSSL reports only its last error, and with CRL checking on an
  // untrusted self-signed certificate comes out as UNABLE_TO_GET_CRL, which would read as "cannot check revocation".
  // The first listed CA whose key signed the certificate decides; the load-time checks keep one key in one tenant.
  const issuer = trust.cas.find((ca) => issuedBy(leaf, ca.certificate));
  if (!issuer) {
    return refuse('unknown-ca', { certificate, detail: `issuer ${certificate.issuer} is not a CA listed in the trust file (list issuing CAs, not only roots)` });
  }

  if (!socket.authorized) {
    const verifyError = verifyErrorCode(socket.authorizationError);
    const reason = Object.hasOwn(VERIFY_ERRORS, verifyError) ? VERIFY_ERRORS[verifyError]! : 'invalid';
    return refuse(reason, { certificate, verifyError });
  }
  // A CA certificate verifies against itself; it is not a user's certificate even when its key is at hand.
  if (leaf.ca) return refuse('wrong-purpose', { certificate });

  const name = usernameFromSubjectAltName(leaf.subjectAltName);
  if (!name.ok) return refuse(name.reason, { certificate });
  return { ok: true, tenantId: issuer.tenantId, username: name.username, usernameFrom: name.from, certificate };
}

function refuse(
  reason: ClientCertRefusal,
  extra: { certificate?: ClientCertificateSummary; verifyError?: string; detail?: string } = {},
): ClientCertIdentity {
  const message = MESSAGES[reason](extra.certificate);
  return { ok: false, reason, message, ...extra };
}

/** Node types authorizationError as an Error; on a server socket it is the OpenSSL code as a string. */
function verifyErrorCode(error: unknown): string {
  if (typeof error === 'string') return error;
  if (error && typeof error === 'object' && 'code' in error && typeof error.code === 'string') return error.code;
  return String(error ?? 'UNKNOWN');
}

function summarise(cert: X509Certificate): ClientCertificateSummary {
  return {
    subject: cert.subject.replace(/\n/g, ', '),
    issuer: cert.issuer.replace(/\n/g, ', '),
    serial: cert.serialNumber,
    fingerprint256: cert.fingerprint256,
    validTo: isoDate(cert.validTo),
  };
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false; // a key type this OpenSSL cannot verify with
  }
}

const spkiOf = (cert: X509Certificate): Buffer => cert.publicKey.export({ type: 'spki', format: 'der' });

const UPN_PREFIX = 'UPN:';

/**
 * The user a subjectAltName (as Node's X509Certificate.subjectAltName prints it) names: the UPN otherName, else the
 * email entry, lower-cased. Two different UPNs (or, without a UPN, two different emails) are ambiguous.
 */
export function usernameFromSubjectAltName(
  subjectAltName: string | undefined,
): { ok: true; username: string; from: 'upn' | 'email' } | { ok: false; reason: 'no-identity' | 'ambiguous-identity' } {
  const entries = splitSubjectAltName(subjectAltName ?? '');
  const upns: string[] = [];
  const emails: string[] = [];
  for (const { type, value } of entries) {
    // Node prints a UPN otherName as `othername:UPN:<name>` (OpenSSL's GENERAL_NAME_print format).
    if (type === 'othername' && value.startsWith(UPN_PREFIX)) upns.push(value.slice(UPN_PREFIX.length));
    if (type === 'email') emails.push(value);
  }
  for (const [from, names] of [['upn', upns], ['email', emails]] as const) {
    const usable = [...new Set(names.map((n) => n.trim().toLowerCase()))].filter(isPlausibleUsername);
    if (usable.length > 1) return { ok: false, reason: 'ambiguous-identity' };
    if (usable.length === 1) return { ok: true, username: usable[0]!, from };
  }
  return { ok: false, reason: 'no-identity' };
}

/** user@domain with nothing unprintable or blank in it (the SAN is attacker-chosen text until a CA vouched). */
function isPlausibleUsername(name: string): boolean {
  return name.length <= 320 && /^[^\s@\u0000-\u001f\u007f]+@[^\s@\u0000-\u001f\u007f]+$/.test(name);
}

/**
 * Splits Node's subjectAltName text (`type:value, type:value`) into entries. Node prints a value that holds a
 * comma, a quote, a backslash or an unprintable character as a JSON string literal, starting with the quote
 * (`email:"a,b@x"`, and for an otherName with the quote before its prefix: `othername:"UPN:a,b@x"`); other values
 * are printed as they are and hold no comma.
 */
export function splitSubjectAltName(subjectAltName: string): Array<{ type: string; value: string }> {
  const entries: Array<{ type: string; value: string }> = [];
  let i = 0;
  while (i < subjectAltName.length) {
    const colon = subjectAltName.indexOf(':', i);
    if (colon < 0) break;
    const type = subjectAltName.slice(i, colon).trim().toLowerCase();
    let value: string;
    let end: number;
    if (subjectAltName[colon + 1] === '"') {
      end = closingQuote(subjectAltName, colon + 1);
      if (end < 0) break; // malformed: stop rather than guess
      value = JSON.parse(subjectAltName.slice(colon + 1, end + 1)) as string;
      end += 1;
    } else {
      const comma = subjectAltName.indexOf(', ', colon + 1);
      end = comma < 0 ? subjectAltName.length : comma;
      value = subjectAltName.slice(colon + 1, end);
    }
    entries.push({ type, value });
    i = end;
    if (subjectAltName.startsWith(', ', i)) i += 2;
    else if (i < subjectAltName.length) break;
  }
  return entries;
}

function closingQuote(text: string, open: number): number {
  for (let j = open + 1; j < text.length; j++) {
    if (text[j] === '\\') j++;
    else if (text[j] === '"') return j;
  }
  return -1;
}

// ---- files and PEM ----

function readText(file: string, where: string, what: string, fail: (where: string, problem: string) => never): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    return fail(where, `${what} ${file}: ${readProblem(err)}`);
  }
}

function readProblem(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'file not found';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory, not a file';
  return (err as Error).message;
}

function pemBlocks(text: string, label: string): string[] {
  const re = new RegExp(`-----BEGIN ${label}-----\\r?\\n[\\s\\S]*?-----END ${label}-----`, 'g');
  return (text.match(re) ?? []).map((block) => `${block}\n`);
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(BEGIN|END)[^-]*-----/g, '').replace(/\s+/g, ''), 'base64');
}

function isoDate(opensslDate: string): string {
  const ms = Date.parse(opensslDate);
  return Number.isNaN(ms) ? opensslDate : new Date(ms).toISOString();
}

// ---- CRLs (node:crypto reads certificates but not CRLs; the few fields checked at load are read here) ----

interface CrlInfo {
  issuer: Buffer;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  signedPart: Buffer;
  signatureAlgorithm: string;
  signature: Buffer;
}

interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset of the contents. */
  contents: number;
  end: number;
}

function readTlv(der: Buffer, at: number, limit = der.length): Tlv {
  if (at + 2 > limit) throw new Error('truncated DER');
  const tag = der[at]!;
  let length = der[at + 1]!;
  let contents = at + 2;
  if (length & 0x80) {
    const bytes = length & 0x7f;
    if (bytes < 1 || bytes > 4 || contents + bytes > limit) throw new Error('bad DER length');
    length = 0;
    for (let i = 0; i < bytes; i++) length = length * 256 + der[contents + i]!;
    contents += bytes;
  }
  const end = contents + length;
  if (end > limit) throw new Error('truncated DER');
  return { tag, start: at, contents, end };
}

function childrenOf(der: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = parent.contents; at < parent.end; ) {
    const child = readTlv(der, at, parent.end);
    out.push(child);
    at = child.end;
  }
  return out;
}

const SEQUENCE = 0x30;
const INTEGER = 0x02;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;

/** RFC 5280 §5.1: CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }. */
function readCrl(der: Buffer): CrlInfo {
  const outer = readTlv(der, 0);
  if (outer.tag !== SEQUENCE) throw new Error('not a DER SEQUENCE');
  const [tbs, algorithm, signature] = childrenOf(der, outer);
  if (!tbs || !algorithm || !signature || tbs.tag !== SEQUENCE) throw new Error('not a CertificateList');
  const fields = childrenOf(der, tbs);
  let i = fields[0]?.tag === INTEGER ? 1 : 0; // version, present in v2 CRLs
  i++; // signature AlgorithmIdentifier (repeated outside)
  const issuer = fields[i++];
  const thisUpdate = fields[i++];
  const next = fields[i];
  if (!issuer || issuer.tag !== SEQUENCE || !thisUpdate) throw new Error('not a CertificateList');
  const algorithmOid = childrenOf(der, algorithm)[0];
  if (!algorithmOid) throw new Error('no signature algorithm');
  return {
    issuer: der.subarray(issuer.start, issuer.end),
    thisUpdate: readTime(der, thisUpdate),
    nextUpdate: next && (next.tag === UTC_TIME || next.tag === GENERALIZED_TIME) ? readTime(der, next) : undefined,
    signedPart: der.subarray(tbs.start, tbs.end),
    signatureAlgorithm: readOid(der.subarray(algorithmOid.contents, algorithmOid.end)),
    // BIT STRING: a leading byte counts the unused bits (0 for signatures).
    signature: der.subarray(signature.contents + 1, signature.end),
  };
}

/** The DER subject Name of a certificate (RFC 5280 §4.1: the 6th field of tbsCertificate when a version is given). */
function subjectOf(cert: X509Certificate): Buffer {
  const der = cert.raw;
  const tbs = childrenOf(der, readTlv(der, 0))[0]!;
  const fields = childrenOf(der, tbs);
  const first = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] EXPLICIT version
  const subject = fields[first + 4]!; // serialNumber, signature, issuer, validity, subject
  return der.subarray(subject.start, subject.end);
}

function readTime(der: Buffer, tlv: Tlv): Date {
  const text = der.toString('latin1', tlv.contents, tlv.end);
  const m = (tlv.tag === UTC_TIME ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/ : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/).exec(text);
  if (!m) throw new Error(`unsupported time ${JSON.stringify(text)}`);
  let year = Number(m[1]);
  if (tlv.tag === UTC_TIME) year += year < 50 ? 2000 : 1900; // RFC 5280 §4.1.2.5.1
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

function readOid(bytes: Buffer): string {
  const parts: number[] = [];
  let value = 0;
  for (const byte of bytes) {
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      if (!parts.length) parts.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
      else parts.push(value);
      value = 0;
    }
  }
  return parts.join('.');
}

/** Signature algorithms a CA signs CRLs with, as node:crypto's verify() takes them (undefined: the key decides). */
const CRL_SIGNATURE_DIGESTS: Record<string, string | null> = {
  '1.2.840.10045.4.3.2': 'sha256', // ecdsa-with-SHA256
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.2.840.113549.1.1.11': 'sha256', // sha256WithRSAEncryption
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.3.101.112': null, // Ed25519
  '1.3.101.113': null, // Ed448
};

/**
 * Whether `ca` issued the CRL: same issuer name (the match OpenSSL makes) and, for the common algorithms, a
 * signature that verifies with the CA's key. Other algorithms (RSA-PSS, say) are matched by name here and their
 * signature is checked by OpenSSL at sign-in (CRL_SIGNATURE_FAILURE).
 */
function crlIssuedBy(crl: CrlInfo, ca: X509Certificate): boolean {
  if (!crl.issuer.equals(subjectOf(ca))) return false;
  const digest = CRL_SIGNATURE_DIGESTS[crl.signatureAlgorithm];
  if (digest === undefined) return true;
  try {
    return crypto.verify(digest, crl.signedPart, ca.publicKey, crl.signature);
  } catch {
    return false;
  }
}
