/**
 * Certificate-based sign-in primitives (server/identity/clientCert.ts) against a real HTTPS listener: OpenSSL
 * verifies the client certificates made by tests/helpers/pki.ts during the handshake, and the handler answers what
 * identifyClientCertificate made of them.
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import selfsigned from 'selfsigned';
import {
  buildClientCertTrust,
  certificateListenerOptions,
  ClientCertTrustError,
  identifyClientCertificate,
  loadClientCertTrust,
  splitSubjectAltName,
  staleCrls,
  usernameFromSubjectAltName,
  type ClientCertIdentity,
  type ClientCertTrust,
} from '../../server/identity/clientCert';
import { TLS_PROFILE } from '../../server/tls';
import { disposeTestPki, testPki, type PemPair, type TestPki } from '../helpers/pki';

let pki: TestPki;
let serverTls: { cert: string; key: string };
let scratch: string;

beforeAll(async () => {
  pki = testPki();
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }] }],
  });
  serverTls = { cert: pems.cert, key: pems.private };
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-client-cert-test-'));
});

afterAll(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
  disposeTestPki();
});

type ClientCredentials = { cert: string; key: string } | { pfx: Buffer; passphrase: string } | undefined;

interface Listener {
  signIn(credentials: ClientCredentials): Promise<ClientCertIdentity>;
  close(): Promise<void>;
}

/** An HTTPS listener with the project's TLS profile plus the certificate options; every request answers its identity. */
async function listen(trust: ClientCertTrust, maxVersion: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.3'): Promise<Listener> {
  const server = https.createServer({ ...TLS_PROFILE, maxVersion, ...serverTls, ...certificateListenerOptions(trust) }, (req, res) => {
    const identity = identifyClientCertificate(req.socket as TLSSocket, trust);
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(identity));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    signIn: (credentials) =>
      new Promise((resolve, reject) => {
        const request = https.request(
          // agent: false: a fresh TLS connection (and certificate) per request, no pooled or resumed session.
          { host: '127.0.0.1', port, servername: 'localhost', ca: serverTls.cert, agent: false, path: '/', ...credentials },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (body += chunk));
            res.on('end', () => resolve(JSON.parse(body) as ClientCertIdentity));
          },
        );
        request.on('error', reject);
        request.end();
      }),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const presenting = (user: PemPair) => ({ cert: user.cert, key: user.key });
const fingerprintOf = (user: PemPair) => new X509Certificate(user.cert).fingerprint256;

/** A trust file in the scratch directory; answers its path. */
function writeTrust(name: string, entries: unknown): string {
  const file = path.join(scratch, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(entries));
  return file;
}

const entryA = () => ({ tenant: 'tenant-a', caFile: pki.tenantA.certFile, crlFiles: [pki.tenantA.crlFile] });
const entryB = () => ({ tenant: 'tenant-b', caFile: pki.tenantB.certFile, crlFiles: [pki.tenantB.crlFile] });

describe.each(['TLSv1.3', 'TLSv1.2'] as const)('sign-in over %s with both tenants and their CRLs', (maxVersion) => {
  let listener: Listener;
  beforeAll(async () => {
    listener = await listen(loadClientCertTrust(pki.trustFile), maxVersion);
  });
  afterAll(() => listener.close());

  test('an email subjectAltName signs in its lower-cased address in the issuing CA’s tenant', async () => {
    const id = await listener.signIn(presenting(pki.emailUser));
    expect(id).toMatchObject({ ok: true, tenantId: 'tenant-a', username: 'alice@tenant-a.example', usernameFrom: 'email' });
    if (!id.ok) throw new Error('unreachable');
    const cert = new X509Certificate(pki.emailUser.cert);
    expect(id.certificate).toEqual({
      subject: 'CN=alice',
      issuer: pki.tenantA.subject,
      serial: cert.serialNumber,
      fingerprint256: cert.fingerprint256,
      validTo: new Date(cert.validTo).toISOString(),
    });
  });

  test('a UPN otherName wins over the email entry of the same certificate', async () => {
    const id = await listener.signIn(presenting(pki.upnUser));
    expect(id).toMatchObject({ ok: true, tenantId: 'tenant-a', username: 'bob.builder@tenant-a.example', usernameFrom: 'upn' });
    expect(pki.upnUser.username).toBe('bob.builder@tenant-a.example');
  });

  test('tenant B’s certificate signs in to tenant B, even naming an address of tenant A', async () => {
    const id = await listener.signIn(presenting(pki.tenantBUser));
    expect(id).toMatchObject({ ok: true, tenantId: 'tenant-b', username: 'alice@tenant-a.example' });
    if (!id.ok) throw new Error('unreachable');
    expect(id.certificate.fingerprint256).toBe(fingerprintOf(pki.tenantBUser));
    expect(id.certificate.issuer).toBe(pki.tenantB.subject);
  });

  test('a revoked certificate (on its CA’s CRL) is refused as revoked', async () => {
    const id = await listener.signIn(presenting(pki.revokedUser));
    expect(id).toMatchObject({ ok: false, reason: 'revoked', verifyError: 'CERT_REVOKED' });
    if (id.ok) throw new Error('unreachable');
    expect(id.message).toMatch(/revoked/);
    expect(id.certificate?.fingerprint256).toBe(fingerprintOf(pki.revokedUser));
  });

  test('an expired certificate is refused as expired', async () => {
    const id = await listener.signIn(presenting(pki.expiredUser));
    expect(id).toMatchObject({ ok: false, reason: 'expired', verifyError: 'CERT_HAS_EXPIRED' });
    if (id.ok) throw new Error('unreachable');
    expect(id.message).toContain('2021-01-01');
  });

  test('a self-signed certificate is refused as from an unknown CA, not as a revocation problem', async () => {
    // OpenSSL's last error here is UNABLE_TO_GET_CRL (no CRL for an issuer it does not know); the page must not
    // tell the user that revocation cannot be checked.
    const id = await listener.signIn(presenting(pki.selfSigned));
    expect(id).toMatchObject({ ok: false, reason: 'unknown-ca' });
  });

  test('no certificate is refused as none presented', async () => {
    const id = await listener.signIn(undefined);
    expect(id).toMatchObject({ ok: false, reason: 'none-presented' });
    if (id.ok) throw new Error('unreachable');
    expect(id.certificate).toBeUndefined();
  });

  test('a certificate without a UPN or email is refused as naming no one', async () => {
    expect(await listener.signIn(presenting(pki.noIdentityUser))).toMatchObject({ ok: false, reason: 'no-identity' });
  });

  test('a server-authentication-only certificate is refused as the wrong purpose', async () => {
    expect(await listener.signIn(presenting(pki.serverAuthUser))).toMatchObject({
      ok: false,
      reason: 'wrong-purpose',
      verifyError: 'INVALID_PURPOSE',
    });
  });

  test('a tenant CA’s own certificate (with its key) is not a user certificate', async () => {
    expect(await listener.signIn(presenting(pki.tenantA))).toMatchObject({ ok: false, reason: 'wrong-purpose' });
  });

  test('the PKCS#12 bundle signs in its user', async () => {
    const id = await listener.signIn({ pfx: pki.pkcs12.pfx, passphrase: pki.pkcs12.passphrase });
    expect(id).toMatchObject({ ok: true, tenantId: 'tenant-a', username: pki.emailUser.username });
    if (!id.ok) throw new Error('unreachable');
    expect(id.certificate.fingerprint256).toBe(fingerprintOf(pki.emailUser));
  });
});

describe('which tenants a listener trusts', () => {
  test('a listener trusting tenant A only refuses tenant B’s certificate as from an unknown CA', async () => {
    const trust = loadClientCertTrust(writeTrust('a-only', [entryA()]));
    const listener = await listen(trust);
    try {
      expect(await listener.signIn(presenting(pki.tenantBUser))).toMatchObject({ ok: false, reason: 'unknown-ca' });
      expect(await listener.signIn(presenting(pki.emailUser))).toMatchObject({ ok: true, tenantId: 'tenant-a' });
    } finally {
      await listener.close();
    }
  });

  test('with no CRLs configured OpenSSL does not check revocation: the revoked certificate signs in', async () => {
    // The counterpart of the `revoked` case above: it is the `crl` listener option that turns revocation on.
    const trust = loadClientCertTrust(
      writeTrust('no-crls', [
        { tenant: 'tenant-a', caFile: pki.tenantA.certFile },
        { tenant: 'tenant-b', caFile: pki.tenantB.certFile },
      ]),
    );
    expect(certificateListenerOptions(trust)).not.toHaveProperty('crl');
    const listener = await listen(trust);
    try {
      expect(await listener.signIn(presenting(pki.revokedUser))).toMatchObject({ ok: true, username: pki.revokedUser.username });
    } finally {
      await listener.close();
    }
  });

  test('OpenSSL checks CRLs for the whole listener: a CA without a CRL gets its certificates refused', async () => {
    // Why the trust loader insists on a CRL for every CA once there is one: built by hand past that check.
    const full = loadClientCertTrust(pki.trustFile);
    const trust: ClientCertTrust = { ...full, crls: full.crls.filter((crl) => crl.tenantId === 'tenant-a') };
    const listener = await listen(trust);
    try {
      expect(await listener.signIn(presenting(pki.tenantBUser))).toMatchObject({
        ok: false,
        reason: 'revocation-unknown',
        verifyError: 'UNABLE_TO_GET_CRL',
      });
      expect(await listener.signIn(presenting(pki.emailUser))).toMatchObject({ ok: true, tenantId: 'tenant-a' });
    } finally {
      await listener.close();
    }
  });
});

describe('a tenant with an issuing CA under its root', () => {
  const rootOnly = (crlFiles: string[] = []) => ({ tenant: 'tenant-c', caFile: pki.tenantC.root.certFile, crlFiles });

  test('root and issuing CA in the caFile, each with its CRL: the user signs in to that tenant', async () => {
    const trust = loadClientCertTrust(
      writeTrust('c-bundle', [entryA(), { tenant: 'tenant-c', caFile: pki.tenantC.bundleFile, crlFiles: [pki.tenantC.root.crlFile, pki.tenantC.issuing.crlFile] }]),
    );
    expect(trust.cas.map((ca) => ca.certificate.subject)).toEqual([pki.tenantA.subject, pki.tenantC.root.subject, pki.tenantC.issuing.subject]);
    const listener = await listen(trust);
    try {
      for (const cert of [pki.tenantCUser.cert, pki.tenantCUser.chain]) {
        const id = await listener.signIn({ cert, key: pki.tenantCUser.key });
        expect(id).toMatchObject({ ok: true, tenantId: 'tenant-c', username: 'carol@tenant-c.example' });
        if (!id.ok) throw new Error('unreachable');
        expect(id.certificate.issuer).toBe(pki.tenantC.issuing.subject);
      }
    } finally {
      await listener.close();
    }
  });

  test('OpenSSL checks revocation of every CA in the chain too: without the root’s CRL the issuing CA’s users are refused', async () => {
    // X509_V_FLAG_CRL_CHECK_ALL, which Node sets with the `crl` option: the issuing CA's own certificate needs the
    // root's CRL. Built by hand past the loader, which asks for both.
    const full = loadClientCertTrust(
      writeTrust('c-bundle-2', [{ tenant: 'tenant-c', caFile: pki.tenantC.bundleFile, crlFiles: [pki.tenantC.root.crlFile, pki.tenantC.issuing.crlFile] }]),
    );
    const trust: ClientCertTrust = { ...full, crls: full.crls.filter((crl) => crl.issuer.certificate.subject === pki.tenantC.issuing.subject) };
    expect(trust.crls).toHaveLength(1);
    const listener = await listen(trust);
    try {
      expect(await listener.signIn(presenting(pki.tenantCUser))).toMatchObject({ ok: false, reason: 'revocation-unknown', verifyError: 'UNABLE_TO_GET_CRL' });
    } finally {
      await listener.close();
    }
  });

  test('root only: a user of the unlisted issuing CA is refused as from an unknown CA, even sending that CA', async () => {
    // OpenSSL accepts the chain (the root is trusted); the tenant is found only from a listed CA that signed the
    // user's certificate, never from what the client sends.
    const trust = loadClientCertTrust(writeTrust('c-root', [{ tenant: 'tenant-a', caFile: pki.tenantA.certFile }, rootOnly()]));
    const listener = await listen(trust);
    try {
      for (const cert of [pki.tenantCUser.chain, pki.tenantCUser.cert]) {
        const id = await listener.signIn({ cert, key: pki.tenantCUser.key });
        expect(id).toMatchObject({ ok: false, reason: 'unknown-ca' });
        if (id.ok) throw new Error('unreachable');
        expect(id.detail).toContain('CN=Pigeon Test Tenant C Issuing CA');
      }
    } finally {
      await listener.close();
    }
  });

  test('an issuing CA without its root is refused at load', () => {
    const file = writeTrust('c-issuing-only', [{ tenant: 'tenant-c', caFile: pki.tenantC.issuing.certFile }]);
    expect(() => loadClientCertTrust(file)).toThrow(/intermediate CA CN=Pigeon Test Tenant C Issuing CA needs its issuer \(CN=Pigeon Test Tenant C Root CA\)/);
  });

  test('an issuing CA trusted by another tenant than its root is refused at load', () => {
    const file = writeTrust('c-split', [rootOnly(), { tenant: 'tenant-d', caFile: pki.tenantC.issuing.certFile }]);
    expect(() => loadClientCertTrust(file)).toThrow(/tenant "tenant-d".*is issued by tenant "tenant-c"'s CA/);
  });
});

describe('the trust file', () => {
  test('loads both tenants, resolving paths against the file’s directory', () => {
    const trust = loadClientCertTrust(pki.trustFile);
    expect(trust.tenants).toEqual(['tenant-a', 'tenant-b']);
    expect(trust.cas.map((ca) => [ca.tenantId, ca.certificate.subject])).toEqual([
      ['tenant-a', pki.tenantA.subject],
      ['tenant-b', pki.tenantB.subject],
    ]);
    expect(trust.crls.map((crl) => [crl.tenantId, crl.file, crl.issuer.tenantId])).toEqual([
      ['tenant-a', pki.tenantA.crlFile, 'tenant-a'],
      ['tenant-b', pki.tenantB.crlFile, 'tenant-b'],
    ]);
    const options = certificateListenerOptions(trust);
    expect(options).toEqual({
      requestCert: true,
      rejectUnauthorized: false,
      ca: [pki.tenantA.cert, pki.tenantB.cert],
      crl: [pki.tenantA.crl, pki.tenantB.crl],
    });
  });

  test('reports CRLs about to go stale (OpenSSL refuses their CA’s certificates once nextUpdate has passed)', () => {
    const trust = loadClientCertTrust(pki.trustFile);
    const next = trust.crls[0]!.nextUpdate!;
    // openssl ca -gencrl with default_crl_days = 30
    expect(next.getTime() - trust.crls[0]!.thisUpdate.getTime()).toBe(30 * 86400_000);
    expect(staleCrls(trust)).toEqual([]);
    expect(staleCrls(trust, new Date(next.getTime() + 1000)).map((crl) => crl.tenantId)).toEqual(['tenant-a', 'tenant-b']);
  });

  test.each<[string, () => unknown, RegExp]>([
    ['not an array', () => ({ tenant: 'tenant-a' }), /expected array/i],
    ['empty', () => [], /at least one tenant/],
    ['an entry without a tenant', () => [{ caFile: pki.tenantA.certFile }], /entry 1 tenant: /],
    ['an unknown key', () => [{ ...entryA(), crl: 'x' }], /entry 1.*crl/],
    ['a missing CA file', () => [{ tenant: 'tenant-a', caFile: path.join(scratch, 'missing.pem') }], /tenant "tenant-a".*missing\.pem: file not found/],
    ['a CA file holding no certificate', () => [{ tenant: 'tenant-a', caFile: pki.tenantA.keyFile }], /holds no PEM certificate/],
    ['a user certificate as CA', () => [{ tenant: 'tenant-a', caFile: pki.emailUser.certFile }], /CN=alice\) is not a CA certificate/],
    ['an expired CA', () => [{ tenant: 'old', caFile: pki.expiredCa.certFile }], /CN=Pigeon Test Expired CA\) expired on 2021-01-01/],
    ['a tenant listed twice', () => [entryA(), { ...entryB(), tenant: 'tenant-a' }], /entry 2.*listed twice/],
    ['one CA trusted by two tenants', () => [entryA(), { ...entryA(), tenant: 'tenant-c' }], /also trusted by tenant "tenant-a"/],
    ['a CRL of another tenant’s CA', () => [{ ...entryA(), crlFiles: [pki.tenantB.crlFile] }], /tenant "tenant-a".*not issued by any CA in this tenant/],
    ['a certificate as CRL file', () => [{ ...entryA(), crlFiles: [pki.tenantA.certFile] }], /holds no PEM CRL/],
    ['a CRL for one tenant only', () => [entryA(), { tenant: 'tenant-b', caFile: pki.tenantB.certFile }], /once any tenant lists a CRL.*tenant "tenant-b"/],
  ])('refuses %s, saying why', (_name, entries, message) => {
    const file = writeTrust('bad', entries());
    expect(() => loadClientCertTrust(file)).toThrow(ClientCertTrustError);
    expect(() => loadClientCertTrust(file)).toThrow(message);
  });

  test('refuses a missing or malformed trust file', () => {
    expect(() => loadClientCertTrust(path.join(scratch, 'nope.json'))).toThrow(/nope\.json: file not found/);
    const broken = path.join(scratch, 'broken.json');
    fs.writeFileSync(broken, '[{');
    expect(() => loadClientCertTrust(broken)).toThrow(/broken\.json: not JSON/);
  });

  test('refuses a CRL past its nextUpdate', () => {
    const later = new Date(Date.now() + 40 * 86400_000);
    expect(() => buildClientCertTrust([entryA()], { baseDir: scratch, now: later })).toThrow(/ca\.crl\.pem expired on .*publish a fresh CRL/);
    // Without the CRL the same CAs are fine on that date.
    expect(buildClientCertTrust([{ tenant: 'tenant-a', caFile: pki.tenantA.certFile }], { baseDir: scratch, now: later }).cas).toHaveLength(1);
  });
});

describe('usernameFromSubjectAltName', () => {
  test.each<[string | undefined, ReturnType<typeof usernameFromSubjectAltName>]>([
    ['email:Carol@Example.org', { ok: true, username: 'carol@example.org', from: 'email' }],
    ['DNS:host.example, othername:UPN:Dave@Corp.example, email:dave@mail.example', { ok: true, username: 'dave@corp.example', from: 'upn' }],
    // What Node 20 prints for a UTF8 UPN holding a comma (a JSON string, the quote before the otherName's prefix)
    // and for an IA5 one (which it does not decode).
    ['othername:"UPN:O\\u002cBrien@corp.example", email:x@y.example', { ok: true, username: 'o,brien@corp.example', from: 'upn' }],
    ['othername:<unsupported>, email:x@y.example', { ok: true, username: 'x@y.example', from: 'email' }],
    ['email:"we\\"ird@x.example"', { ok: true, username: 'we"ird@x.example', from: 'email' }],
    ['email:A@x.example, email:a@X.example', { ok: true, username: 'a@x.example', from: 'email' }],
    ['email:a@x.example, email:b@x.example', { ok: false, reason: 'ambiguous-identity' }],
    ['othername:UPN:a@x.example, othername:UPN:b@x.example', { ok: false, reason: 'ambiguous-identity' }],
    ['othername:<unsupported>, DNS:a.example', { ok: false, reason: 'no-identity' }],
    ['email:not-an-address', { ok: false, reason: 'no-identity' }],
    ['email:"tab\\tinside@x.example"', { ok: false, reason: 'no-identity' }],
    [undefined, { ok: false, reason: 'no-identity' }],
  ])('%s', (san, expected) => {
    expect(usernameFromSubjectAltName(san)).toEqual(expected);
  });

  test('splitSubjectAltName keeps quoted commas inside their entry', () => {
    expect(splitSubjectAltName('DNS:a.example, email:"x, y@z.example", IP Address:127.0.0.1')).toEqual([
      { type: 'dns', value: 'a.example' },
      { type: 'email', value: 'x, y@z.example' },
      { type: 'ip address', value: '127.0.0.1' },
    ]);
  });
});
