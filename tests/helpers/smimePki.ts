/**
 * A throwaway S/MIME PKI and S/MIME messages, all made by the `openssl` command line, so that the code under test
 * reads signatures and certificates made by a tool nobody here wrote.
 *
 * Certificates are issued with `openssl ca` (the one common tool that takes a validity period in the past). Built
 * on first use into a temporary directory and kept until `disposeSmimePki()` (call it in afterAll); a directory
 * left by a process that is gone is removed by the next build.
 */
import { runOpenssl, sweepAbandonedDirs } from './openssl';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface SmimeIdentity {
  /** The address in the certificate (subjectAltName email), lower case. */
  email: string;
  certFile: string;
  keyFile: string;
  /** PEM certificate. */
  cert: string;
  /** PEM private key. */
  key: string;
}

export interface SmimeCa {
  certFile: string;
  keyFile: string;
  cert: string;
}

export interface SmimeTestPki {
  dir: string;
  /** The trusted root. */
  ca: SmimeCa;
  /** An issuing CA under `ca` (not a trust anchor itself: a chain through it needs it sent along). */
  intermediate: SmimeCa;
  /** A root nobody trusts. */
  otherCa: SmimeCa;
  /** `ca`, RSA, emailProtection, SAN email (mixed case in the certificate), keyEncipherment: signs and receives. */
  alice: SmimeIdentity;
  /** `ca`, RSA, keyEncipherment only, SAN email plus a subject emailAddress: the encryption certificate. */
  bob: SmimeIdentity & { subjectEmail: string };
  /** `intermediate`, EC P-256, digitalSignature and keyAgreement, emailProtection. */
  carol: SmimeIdentity;
  /** `otherCa`, EC, emailProtection. */
  mallory: SmimeIdentity;
  /** `ca`, valid 2020-01-01 to 2021-01-01, emailProtection. */
  expired: SmimeIdentity;
  /** `ca`, extendedKeyUsage clientAuth only. */
  clientAuthOnly: SmimeIdentity;
  /** `ca`, emailProtection, no email address anywhere. */
  noEmail: Omit<SmimeIdentity, 'email'>;
  /** `ca`, keyUsage digitalSignature only (can sign, cannot receive encrypted mail). */
  signOnly: SmimeIdentity;
  /** Issued with alice's key and certificate (an end-entity posing as a CA), naming a victim's address. */
  forged: SmimeIdentity;
  /** Issued by CA "Loop A", whose certificate is signed by "Loop B", whose certificate is signed by "Loop A":
   *  `loopCertFiles` are the two, to send along (a path search that does not stop would go round for ever). */
  looped: SmimeIdentity & { loopCertFiles: string[] };
}

export type LineEndings = 'as-produced' | 'crlf' | 'lf';

export interface SignOptions {
  /** `smime` writes protocol application/x-pkcs7-signature, `cms` application/pkcs7-signature. */
  tool?: 'smime' | 'cms';
  /** Opaque signing (`-nodetach`): application/pkcs7-mime; smime-type=signed-data. */
  opaque?: boolean;
  /** `-stream`: indefinite-length BER, as streaming signers write it. */
  stream?: boolean;
  /** The MIME entity that is signed, headers included (LF line endings; openssl makes them CRLF for signing). */
  entity?: string;
  /** Extra certificates to send in the signature (`-certfile`). */
  extraCertFiles?: string[];
  /** Line endings of the whole message afterwards, as a store or transport may leave them. */
  endings?: LineEndings;
}

export const SIGNED_TEXT = 'Hello from the S/MIME tests.\nSecond line, with an umlaut: \u00fc.\n';
export const DEFAULT_ENTITY = `Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n${SIGNED_TEXT}`;
/** The same text as a base64 body part. */
export const BASE64_ENTITY = `Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n${
  (Buffer.from(SIGNED_TEXT, 'utf8').toString('base64').match(/.{1,76}/g) ?? []).join('\n')}\n`;

const DIR_PREFIX = 'pigeon-smime-';
const PAST_START = '20200101000000Z';
const PAST_END = '20210101000000Z';

let built: SmimeTestPki | undefined;
let counter = 0;

export function smimePki(): SmimeTestPki {
  built ??= buildPki();
  return built;
}

export function disposeSmimePki(): void {
  if (built) fs.rmSync(built.dir, { recursive: true, force: true });
  built = undefined;
}

/** A signed message from `signer` to bob, made by openssl. */
export function signedMessage(signer: SmimeIdentity, options: SignOptions = {}): Buffer {
  const pki = smimePki();
  const id = ++counter;
  const input = path.join(pki.dir, `entity-${id}.txt`);
  const output = path.join(pki.dir, `signed-${id}.eml`);
  fs.writeFileSync(input, options.entity ?? DEFAULT_ENTITY);
  // openssl honours only the last -certfile: the extra certificates go in one file.
  const certFile = path.join(pki.dir, `certs-${id}.pem`);
  if (options.extraCertFiles?.length) fs.writeFileSync(certFile, options.extraCertFiles.map((file) => fs.readFileSync(file, 'utf8')).join(''));
  openssl(
    [
      options.tool ?? 'smime', '-sign', '-in', input, '-out', output, '-signer', signer.certFile, '-inkey', signer.keyFile,
      '-from', signer.email, '-to', pki.bob.email, '-subject', 'S/MIME test',
      ...(options.opaque ? ['-nodetach'] : []),
      ...(options.stream ? ['-stream'] : []),
      ...(options.extraCertFiles?.length ? ['-certfile', certFile] : []),
    ],
    pki.dir,
  );
  return withEndings(fs.readFileSync(output), options.endings ?? 'as-produced');
}

/** A message encrypted to `recipient` (`smime -encrypt` makes enveloped-data; `cms` with a GCM cipher makes
 *  authEnveloped-data). */
export function encryptedMessage(recipient: SmimeIdentity, options: { tool?: 'smime' | 'cms'; cipher?: string; endings?: LineEndings } = {}): Buffer {
  const pki = smimePki();
  const id = ++counter;
  const input = path.join(pki.dir, `entity-${id}.txt`);
  const output = path.join(pki.dir, `encrypted-${id}.eml`);
  fs.writeFileSync(input, DEFAULT_ENTITY);
  const tool = options.tool ?? 'smime';
  const cipher = options.cipher ?? (tool === 'cms' ? '-aes-256-gcm' : '-aes256');
  const recipientArgs = tool === 'cms' ? ['-recip', recipient.certFile] : [recipient.certFile];
  openssl([tool, '-encrypt', cipher, '-in', input, '-out', output, '-from', pki.alice.email, '-to', recipient.email, '-subject', 'Secret', ...recipientArgs], pki.dir);
  return withEndings(fs.readFileSync(output), options.endings ?? 'as-produced');
}

/** Whether `openssl smime -verify` accepts a message's signature with `caFile` as the only trust anchor. */
export function opensslVerifies(message: Buffer, caFile: string): boolean {
  const file = path.join(smimePki().dir, `verify-${++counter}.eml`);
  fs.writeFileSync(file, message);
  const r = spawnSync('openssl', ['smime', '-verify', '-CAfile', caFile, '-purpose', 'smimesign', '-in', file, '-out', os.devNull], { encoding: 'utf8' });
  if (r.error) throw new Error(`the openssl command could not be run (${r.error.message}); the S/MIME tests need it on PATH`);
  return r.status === 0;
}

/** `openssl x509 -fingerprint -sha256` of a certificate file, as lower-case hex without colons. */
export function opensslFingerprint(certFile: string): string {
  const out = openssl(['x509', '-in', certFile, '-noout', '-fingerprint', '-sha256'], path.dirname(certFile));
  return out.slice(out.indexOf('=') + 1).trim().replace(/:/g, '').toLowerCase();
}

/** `openssl x509 -serial` of a certificate file, lower-case hex. */
export function opensslSerial(certFile: string): string {
  const out = openssl(['x509', '-in', certFile, '-noout', '-serial'], path.dirname(certFile));
  return out.slice(out.indexOf('=') + 1).trim().toLowerCase();
}

/** A certificate file's DER, base64 (as `openssl x509 -outform DER` writes it). */
export function opensslDerBase64(certFile: string): string {
  const der = path.join(path.dirname(certFile), `der-${++counter}.cer`);
  openssl(['x509', '-in', certFile, '-outform', 'DER', '-out', der], path.dirname(certFile));
  return fs.readFileSync(der).toString('base64');
}

/** A PKCS#12 of an identity (certificate and private key), base64. */
export function pkcs12Base64(identity: SmimeIdentity): string {
  const file = path.join(smimePki().dir, `p12-${++counter}.p12`);
  openssl(['pkcs12', '-export', '-in', identity.certFile, '-inkey', identity.keyFile, '-out', file, '-passout', 'pass:test'], smimePki().dir);
  return fs.readFileSync(file).toString('base64');
}

/** A private key as DER (PKCS#8), base64: what a user might paste when confusing the two. */
export function privateKeyDerBase64(identity: SmimeIdentity): string {
  const file = path.join(smimePki().dir, `key-${++counter}.der`);
  openssl(['pkcs8', '-topk8', '-nocrypt', '-in', identity.keyFile, '-outform', 'DER', '-out', file], smimePki().dir);
  return fs.readFileSync(file).toString('base64');
}

function withEndings(message: Buffer, endings: LineEndings): Buffer {
  const text = message.toString('latin1');
  if (endings === 'crlf') return Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'latin1');
  if (endings === 'lf') return Buffer.from(text.replace(/\r\n/g, '\n'), 'latin1');
  return message;
}

function buildPki(): SmimeTestPki {
  sweepAbandonedDirs(DIR_PREFIX);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${DIR_PREFIX}${process.pid}-`));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

  const ca = createRootCa(dir, 'root', 'Pigeon SMIME Test Root CA');
  const intermediate = createIntermediateCa(dir, ca, 'Pigeon SMIME Test Issuing CA');
  const otherCa = createRootCa(dir, 'other', 'Untrusted SMIME Root CA');

  const email = 'emailProtection';
  const alice = issue(ca, 'alice', { key: 'rsa', san: 'email:Alice@Pigeon.example', keyUsage: 'digitalSignature, keyEncipherment', eku: email });
  const bob = {
    ...issue(ca, 'bob', {
      key: 'rsa', san: 'email:bob@pigeon.example', keyUsage: 'keyEncipherment', eku: email, subjectEmail: 'Bob.Secure@Pigeon.example',
    }),
    subjectEmail: 'bob.secure@pigeon.example',
  };
  const carol = issue(intermediate, 'carol', { key: 'ec', san: 'email:carol@pigeon.example', keyUsage: 'digitalSignature, keyAgreement', eku: email });
  const mallory = issue(otherCa, 'mallory', { key: 'ec', san: 'email:mallory@elsewhere.example', keyUsage: 'digitalSignature', eku: email });
  const expired = issue(ca, 'expired', {
    key: 'ec', san: 'email:old@pigeon.example', keyUsage: 'digitalSignature, keyAgreement', eku: email, startDate: PAST_START, endDate: PAST_END,
  });
  const clientAuthOnly = issue(ca, 'client', { key: 'ec', san: 'email:client@pigeon.example', keyUsage: 'digitalSignature, keyAgreement', eku: 'clientAuth' });
  const { email: _none, ...noEmail } = issue(ca, 'noemail', { key: 'ec', keyUsage: 'digitalSignature, keyAgreement', eku: email });
  const signOnly = issue(ca, 'signonly', { key: 'ec', san: 'email:signer@pigeon.example', keyUsage: 'digitalSignature', eku: email });
  const aliceAsIssuer = issuerDir(dir, 'alice-as-ca', alice.certFile, alice.keyFile);
  const forged = issue(aliceAsIssuer, 'forged', { key: 'ec', san: 'email:ceo@pigeon.example', keyUsage: 'digitalSignature', eku: email });

  const looped = loopedIdentity(dir);

  return { dir, ca, intermediate, otherCa, alice, bob, carol, mallory, expired, clientAuthOnly, noEmail, signOnly, forged, looped };
}

/**
 * Two CA certificates that certify each other: "Loop A" is signed with B's key and "Loop B" with A's, their names
 * chaining A → B → A. B's key first certifies A under a throwaway self-signed "Loop B" (only its name and key
 * matter), then A's key certifies the real "Loop B". A user certificate issued by A completes the set.
 */
function loopedIdentity(root: string): SmimeIdentity & { loopCertFiles: string[] } {
  const dir = path.join(root, 'loop');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'ext.cnf'), [
    '[ ca ]', 'basicConstraints = critical, CA:TRUE', 'keyUsage = critical, keyCertSign, cRLSign', 'subjectKeyIdentifier = hash', '',
    '[ user ]', 'basicConstraints = CA:FALSE', 'keyUsage = critical, digitalSignature', 'extendedKeyUsage = emailProtection',
    'subjectAltName = email:loop@pigeon.example', '',
  ].join('\n'));
  const sign = (csr: string, caCert: string, caKey: string, section: string, out: string) =>
    openssl(['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-CAcreateserial', '-days', '30', '-extfile', 'ext.cnf', '-extensions', section, '-out', out], dir);
  openssl(['req', '-x509', '-new', ...KEY_ARGS.ec, '-keyout', 'b.key', '-out', 'b0.pem', '-subj', '/CN=Loop B', '-days', '30',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  openssl(['req', '-new', ...KEY_ARGS.ec, '-keyout', 'a.key', '-out', 'a.csr', '-subj', '/CN=Loop A'], dir);
  sign('a.csr', 'b0.pem', 'b.key', 'ca', 'a.pem');
  openssl(['req', '-new', '-key', 'b.key', '-out', 'b.csr', '-subj', '/CN=Loop B'], dir);
  sign('b.csr', 'a.pem', 'a.key', 'ca', 'b.pem');
  openssl(['req', '-new', ...KEY_ARGS.ec, '-keyout', 'user.key', '-out', 'user.csr', '-subj', '/CN=loop'], dir);
  sign('user.csr', 'a.pem', 'a.key', 'user', 'user.pem');
  return {
    email: 'loop@pigeon.example',
    certFile: path.join(dir, 'user.pem'),
    keyFile: path.join(dir, 'user.key'),
    cert: fs.readFileSync(path.join(dir, 'user.pem'), 'utf8'),
    key: fs.readFileSync(path.join(dir, 'user.key'), 'utf8'),
    loopCertFiles: [path.join(dir, 'a.pem'), path.join(dir, 'b.pem')],
  };
}

/** `openssl ca` wants its database files and a policy; -preserveDN keeps the subject as requested. */
const CA_CONFIG = `
[ ca ]
default_ca = ca_default

[ ca_default ]
dir = .
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none

[ policy_any ]
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt = no

[ req_dn ]
CN = unused

[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

const KEY_ARGS = {
  ec: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
  rsa: ['-newkey', 'rsa:2048', '-nodes'],
};

interface Issuer extends SmimeCa {
  dir: string;
}

function issuerDir(root: string, name: string, certFile: string, keyFile: string): Issuer {
  const dir = path.join(root, name);
  fs.mkdirSync(path.join(dir, 'issued'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'ca.cnf'), CA_CONFIG);
  fs.writeFileSync(path.join(dir, 'index.txt'), '');
  return { dir, certFile, keyFile, cert: fs.readFileSync(certFile, 'utf8') };
}

function createRootCa(root: string, name: string, commonName: string): Issuer {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'ca.cnf'), CA_CONFIG);
  openssl(['req', '-config', 'ca.cnf', '-x509', '-new', ...KEY_ARGS.ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', `/CN=${commonName}`,
    '-days', '3650', '-extensions', 'v3_ca'], dir);
  return issuerDir(root, name, path.join(dir, 'ca.pem'), path.join(dir, 'ca.key'));
}

function createIntermediateCa(root: string, parent: Issuer, commonName: string): Issuer {
  const dir = path.join(root, 'intermediate');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'ca.cnf'), CA_CONFIG);
  openssl(['req', '-config', 'ca.cnf', '-new', ...KEY_ARGS.ec, '-keyout', 'ca.key', '-out', 'ca.csr', '-subj', `/CN=${commonName}`], dir);
  openssl(['ca', '-batch', '-config', 'ca.cnf', '-cert', parent.certFile, '-keyfile', parent.keyFile, '-rand_serial', '-notext', '-days', '1825',
    '-extensions', 'v3_ca', '-in', path.join(dir, 'ca.csr'), '-out', path.join(dir, 'ca.pem')], parent.dir);
  return issuerDir(root, 'intermediate', path.join(dir, 'ca.pem'), path.join(dir, 'ca.key'));
}

function issue(
  issuer: Issuer,
  name: string,
  options: { key: 'ec' | 'rsa'; san?: string; keyUsage: string; eku: string; subjectEmail?: string; startDate?: string; endDate?: string },
): SmimeIdentity {
  const dir = issuer.dir;
  const extensions = [
    '[ user ]',
    'basicConstraints = CA:FALSE',
    `keyUsage = critical, ${options.keyUsage}`,
    `extendedKeyUsage = ${options.eku}`,
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid',
    ...(options.san ? [`subjectAltName = ${options.san}`] : []),
  ];
  fs.writeFileSync(path.join(dir, `${name}.ext`), `${extensions.join('\n')}\n`);
  const subject = `/CN=${name}${options.subjectEmail ? `/emailAddress=${options.subjectEmail}` : ''}`;
  openssl(['req', '-config', 'ca.cnf', '-new', ...KEY_ARGS[options.key], '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject], dir);
  const validity = options.startDate && options.endDate ? ['-startdate', options.startDate, '-enddate', options.endDate] : ['-days', '365'];
  openssl(['ca', '-batch', '-config', 'ca.cnf', '-cert', issuer.certFile, '-keyfile', issuer.keyFile, '-rand_serial', '-notext', '-preserveDN',
    '-in', `${name}.csr`, '-out', `${name}.pem`, '-extfile', `${name}.ext`, '-extensions', 'user', ...validity], dir);
  const san = /email:([^,\s]+)/.exec(options.san ?? '');
  return {
    email: san ? san[1]!.toLowerCase() : '',
    certFile: path.join(dir, `${name}.pem`),
    keyFile: path.join(dir, `${name}.key`),
    cert: fs.readFileSync(path.join(dir, `${name}.pem`), 'utf8'),
    key: fs.readFileSync(path.join(dir, `${name}.key`), 'utf8'),
  };
}

const openssl = (args: string[], cwd: string) => runOpenssl(args, cwd, 'S/MIME');
