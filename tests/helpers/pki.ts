/**
 * A throwaway PKI for the certificate sign-in tests, made with the `openssl` command line (its `ca` command is the
 * one common tool that signs with a validity period in the past and keeps the index a CRL is generated from).
 *
 * Two tenant CAs (A and B, each with a CRL), a two-level hierarchy for tenant C, user certificates for the cases the tests need, a self-signed
 * certificate no tenant trusts, an expired CA for the trust-file checks, a PKCS#12 of a user certificate (for
 * browsers), and a trust file naming the two CAs and their CRLs. Built on first use into a temporary directory and
 * kept until `disposeTestPki()` (call it in afterAll: jest's sandboxed `process` does not report its exit, so the
 * exit handler is only a backstop; a directory left by a process that is gone is removed by the next build).
 */
import { runOpenssl, sweepAbandonedDirs } from './openssl';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface PemPair {
  certFile: string;
  keyFile: string;
  cert: string;
  key: string;
}

export interface TestCa extends PemPair {
  tenantId: string;
  subject: string;
  crlFile: string;
  crl: string;
}

export interface TestUser extends PemPair {
  /** The user the certificate names, lower-cased (what identifyClientCertificate should answer). */
  username: string;
}

export interface TestPki {
  dir: string;
  tenantA: TestCa;
  tenantB: TestCa;
  /** Tenant A, subjectAltName email (mixed case in the certificate). */
  emailUser: TestUser;
  /** Tenant A, subjectAltName UPN otherName and a different email (the UPN must win). */
  upnUser: TestUser & { email: string };
  /** Tenant A, valid from 2020-01-01 to 2021-01-01. */
  expiredUser: TestUser;
  /** Tenant A, revoked and listed in tenant A's CRL. */
  revokedUser: TestUser;
  /** Tenant A, no subjectAltName at all. */
  noIdentityUser: TestUser;
  /** Tenant A, extendedKeyUsage serverAuth only (not a client certificate). */
  serverAuthUser: TestUser;
  /** Tenant B, with the same email address as `emailUser`: only the issuing CA tells them apart. */
  tenantBUser: TestUser;
  /** Tenant C: a root CA and an issuing (intermediate) CA under it, each with its CRL. */
  tenantC: { root: TestCa; issuing: TestCa; bundleFile: string };
  /** Issued by tenant C's issuing CA; `chain` is its certificate followed by the issuing CA's (as a client sends it). */
  tenantCUser: TestUser & { chain: string };
  /** Self-signed, naming an address of tenant A; no tenant trusts it. */
  selfSigned: TestUser;
  /** A CA certificate that expired in 2021 (for the trust-file checks). */
  expiredCa: PemPair;
  /** `emailUser` with its key and tenant A's CA, as a browser imports it. */
  pkcs12: { file: string; passphrase: string; pfx: Buffer };
  /** [{ tenant, caFile, crlFiles }] for both tenants, paths relative to `dir`. */
  trustFile: string;
}

const DIR_PREFIX = 'pigeon-pki-';
const PKCS12_PASSPHRASE = 'pigeon-test-pkcs12';
const PAST_START = '20200101000000Z';
const PAST_END = '20210101000000Z';

let built: TestPki | undefined;

/** The PKI, built on first use (about a second of openssl runs) and shared until disposeTestPki(). */
export function testPki(): TestPki {
  built ??= buildPki();
  return built;
}

/** Deletes the PKI's directory; the next testPki() builds a new one. */
export function disposeTestPki(): void {
  if (built) fs.rmSync(built.dir, { recursive: true, force: true });
  built = undefined;
}

function buildPki(): TestPki {
  sweepAbandonedDirs(DIR_PREFIX);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${DIR_PREFIX}${process.pid}-`));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

  const tenantA = createCa(dir, 'tenant-a', 'Pigeon Test Tenant A Root CA');
  const tenantB = createCa(dir, 'tenant-b', 'Pigeon Test Tenant B Root CA');

  const emailUser = issue(tenantA, 'alice', { san: 'email:Alice@Tenant-A.example' }, 'alice@tenant-a.example');
  const upn = 'Bob.Builder@Tenant-A.example';
  const upnUser = {
    ...issue(tenantA, 'bob', { san: `otherName:1.3.6.1.4.1.311.20.2.3;UTF8:${upn}, email:bob.mail@elsewhere.example` }, upn.toLowerCase()),
    email: 'bob.mail@elsewhere.example',
  };
  const expiredUser = issue(tenantA, 'expired', { san: 'email:old@tenant-a.example', startDate: PAST_START, endDate: PAST_END }, 'old@tenant-a.example');
  const revokedUser = issue(tenantA, 'revoked', { san: 'email:gone@tenant-a.example' }, 'gone@tenant-a.example');
  const noIdentityUser = issue(tenantA, 'nobody', {}, '');
  const serverAuthUser = issue(tenantA, 'server', { san: 'email:server@tenant-a.example', extendedKeyUsage: 'serverAuth' }, 'server@tenant-a.example');
  const tenantBUser = issue(tenantB, 'alice-b', { san: 'email:alice@tenant-a.example' }, 'alice@tenant-a.example');
  const cRoot = createCa(dir, 'tenant-c', 'Pigeon Test Tenant C Root CA');
  const cIssuing = createCa(dir, 'tenant-c', 'Pigeon Test Tenant C Issuing CA', cRoot);
  const cUser = issue(cIssuing, 'carol', { san: 'email:Carol@Tenant-C.example' }, 'carol@tenant-c.example');
  const tenantCUser = { ...cUser, chain: cUser.cert + cIssuing.cert };
  const bundleFile = path.join(dir, 'tenant-c-bundle.pem');
  fs.writeFileSync(bundleFile, cRoot.cert + cIssuing.cert);

  openssl(['ca', '-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key', '-revoke', revokedUser.certFile], path.dirname(tenantA.certFile));
  for (const ca of [tenantA, tenantB, cRoot, cIssuing]) {
    openssl(['ca', '-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key', '-gencrl', '-out', 'ca.crl.pem'], path.dirname(ca.certFile));
    ca.crl = fs.readFileSync(ca.crlFile, 'utf8');
  }

  const selfSigned = selfSignedUser(dir);
  const expiredCa = expiredCaCertificate(dir);

  const p12 = path.join(dir, 'alice.p12');
  openssl(
    ['pkcs12', '-export', '-in', emailUser.certFile, '-inkey', emailUser.keyFile, '-certfile', tenantA.certFile, '-name', 'Alice (Pigeon test tenant A)',
      '-out', p12, '-passout', `pass:${PKCS12_PASSPHRASE}`],
    dir,
  );

  const trustFile = path.join(dir, 'trust.json');
  const relative = (file: string) => path.relative(dir, file);
  fs.writeFileSync(
    trustFile,
    JSON.stringify(
      [tenantA, tenantB].map((ca) => ({ tenant: ca.tenantId, caFile: relative(ca.certFile), crlFiles: [relative(ca.crlFile)] })),
      null,
      2,
    ),
  );

  return {
    dir,
    tenantA,
    tenantB,
    emailUser,
    upnUser,
    expiredUser,
    revokedUser,
    noIdentityUser,
    serverAuthUser,
    tenantBUser,
    tenantC: { root: cRoot, issuing: cIssuing, bundleFile },
    tenantCUser,
    selfSigned,
    expiredCa,
    pkcs12: { file: p12, passphrase: PKCS12_PASSPHRASE, pfx: fs.readFileSync(p12) },
    trustFile,
  };
}

/** `openssl ca` needs its database files and a policy; the sections below are what the certificates use. */
const CA_CONFIG = `
[ ca ]
default_ca = ca_default

[ ca_default ]
dir = .
database = $dir/index.txt
new_certs_dir = $dir/issued
crlnumber = $dir/crlnumber
# Not read: certificates get random serials (-rand_serial); openssl ca still wants the setting.
serial = $dir/serial
default_md = sha256
default_crl_days = 30
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
`;

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/** A CA: self-signed, or issued by `parent` (an intermediate) with `openssl ca`. */
function createCa(root: string, tenantId: string, commonName: string, parent?: TestCa): TestCa {
  const dir = path.join(root, parent ? `${tenantId}-issuing` : tenantId);
  fs.mkdirSync(path.join(dir, 'issued'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'ca.cnf'), CA_CONFIG);
  fs.writeFileSync(path.join(dir, 'index.txt'), '');
  fs.writeFileSync(path.join(dir, 'crlnumber'), '01\n');
  if (!parent) {
    openssl(['req', '-config', 'ca.cnf', '-x509', '-new', ...EC_KEY, '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', `/CN=${commonName}`,
      '-days', '3650', '-extensions', 'v3_ca'], dir);
  } else {
    openssl(['req', '-config', 'ca.cnf', '-new', ...EC_KEY, '-keyout', 'ca.key', '-out', 'ca.csr', '-subj', `/CN=${commonName}`], dir);
    openssl(['ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key', '-rand_serial', '-notext', '-days', '1825',
      '-extensions', 'v3_ca', '-in', path.join(dir, 'ca.csr'), '-out', path.join(dir, 'ca.pem')], path.dirname(parent.certFile));
  }
  return {
    tenantId,
    subject: `CN=${commonName}`,
    certFile: path.join(dir, 'ca.pem'),
    keyFile: path.join(dir, 'ca.key'),
    cert: fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8'),
    key: fs.readFileSync(path.join(dir, 'ca.key'), 'utf8'),
    crlFile: path.join(dir, 'ca.crl.pem'),
    crl: '',
  };
}

/** A user certificate signed by `ca` with `openssl ca` (random serial; -startdate/-enddate for a past validity). */
function issue(
  ca: TestCa,
  name: string,
  options: { san?: string; extendedKeyUsage?: string; startDate?: string; endDate?: string },
  username: string,
): TestUser {
  const dir = path.dirname(ca.certFile);
  const extensions = [
    '[ user ]',
    'basicConstraints = CA:FALSE',
    'keyUsage = critical, digitalSignature',
    `extendedKeyUsage = ${options.extendedKeyUsage ?? 'clientAuth'}`,
    'authorityKeyIdentifier = keyid',
    ...(options.san ? [`subjectAltName = ${options.san}`] : []),
  ];
  fs.writeFileSync(path.join(dir, `${name}.ext`), `${extensions.join('\n')}\n`);
  openssl(['req', '-config', 'ca.cnf', '-new', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
  const validity = options.startDate && options.endDate ? ['-startdate', options.startDate, '-enddate', options.endDate] : ['-days', '365'];
  openssl(['ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key', '-rand_serial', '-notext', '-in', `${name}.csr`,
    '-out', `${name}.pem`, '-extfile', `${name}.ext`, '-extensions', 'user', ...validity], dir);
  return pair(dir, name, username);
}

function selfSignedUser(root: string): TestUser {
  const dir = path.join(root, 'self-signed');
  fs.mkdirSync(dir);
  const userSection = ['[ user ]', 'basicConstraints = CA:FALSE', 'keyUsage = critical, digitalSignature', 'extendedKeyUsage = clientAuth',
    'subjectAltName = email:alice@tenant-a.example'];
  fs.writeFileSync(path.join(dir, 'self.cnf'), `${CA_CONFIG}\n${userSection.join('\n')}\n`);
  openssl(['req', '-config', 'self.cnf', '-x509', '-new', ...EC_KEY, '-keyout', 'mallory.key', '-out', 'mallory.pem', '-subj', '/CN=mallory',
    '-days', '365', '-extensions', 'user'], dir);
  return pair(dir, 'mallory', 'alice@tenant-a.example');
}

/** A self-signed CA whose validity ended in 2021 (`openssl ca -selfsign`, since `req -x509` only counts days ahead). */
function expiredCaCertificate(root: string): PemPair {
  const dir = path.join(root, 'expired-ca');
  fs.mkdirSync(path.join(dir, 'issued'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'ca.cnf'), CA_CONFIG);
  fs.writeFileSync(path.join(dir, 'index.txt'), '');
  openssl(['req', '-config', 'ca.cnf', '-new', ...EC_KEY, '-keyout', 'ca.key', '-out', 'ca.csr', '-subj', '/CN=Pigeon Test Expired CA'], dir);
  openssl(['ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'ca.key', '-rand_serial', '-notext', '-in', 'ca.csr', '-out', 'ca.pem',
    '-extensions', 'v3_ca', '-startdate', PAST_START, '-enddate', PAST_END], dir);
  return pair(dir, 'ca', '');
}

function pair(dir: string, name: string, username: string): TestUser {
  const certFile = path.join(dir, `${name}.pem`);
  const keyFile = path.join(dir, `${name}.key`);
  return { certFile, keyFile, cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8'), username };
}

const openssl = (args: string[], cwd: string) => runOpenssl(args, cwd, 'certificate');
