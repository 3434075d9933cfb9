/**
 * Information protection against the real server process, over real HTTPS and real LMTP, with every protected or
 * signed input made by OpenSSL and everything Pigeon protects checked by OpenSSL (the in-process HTTP test,
 * tests/http/protection.test.ts, covers the rights themselves with Pigeon's own messages):
 * - a partner organisation's protected message (content encrypted for the tenant's key by `openssl cms -encrypt`,
 *   licence signed by the partner's key by `openssl cms -sign`, wrapper assembled here) delivered over LMTP opens
 *   for a device that registered `rightsManagement`, and for nobody else: no response of the other device and no
 *   file of the data directory holds its text; with the partner gone from the protection document it is unreadable;
 * - a protected message Pigeon sends to a partner's address opens with the partner's key in `openssl cms -decrypt`,
 *   and its licence verifies with the tenant's certificate in `openssl cms -verify`;
 * - S/MIME made by `openssl smime` arrives over LMTP with the signature status computed against the trust file
 *   (valid, untrusted, invalid), and encrypted S/MIME is kept byte for byte.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { simpleParser } from 'mailparser';
import { startServer, type RunningServer } from '../helpers/server';
import { tempDir } from '../helpers/testApp';
import { opensslWorkspace, type KeyFiles, type OpensslWorkspace } from '../helpers/openssl';
import { disposeSmimePki, encryptedMessage, opensslVerifies, signedMessage, smimePki, SIGNED_TEXT } from '../helpers/smimePki';
import { openSqliteStore } from '../../server/store/sqlite';
import { createUserAdmin } from '../../server/admin/users';
import { systemClock } from '../../server/clock';

jest.setTimeout(60_000);

const PASSWORDS = { root: 'root-password-17', alice: 'alice-password-17', bob: 'bob-password-17' } as const;
type Username = keyof typeof PASSWORDS;
const ADDRESS: Record<Username, string> = { root: 'root@pigeon.example', alice: 'alice@pigeon.example', bob: 'bob@pigeon.example' };

const PARTNER_DOMAIN = 'partner.example';
const PARTNER_SENDER = `pat@${PARTNER_DOMAIN}`;
/** Words that exist only inside the protected content: finding them anywhere else is a leak. */
const BODY_SECRET = 'PARTNER-PLAINTEXT-7731 merger terms';
const ATTACHMENT_SECRET = 'PARTNER-ATTACHED-9442 price list';
const SENT_SECRET = 'OUTGOING-PLAINTEXT-5150 for the partner';
const SECRET_MARKERS = ['PARTNER-PLAINTEXT-7731', 'PARTNER-ATTACHED-9442'];

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  raw: Buffer;
  /** The body parsed when it is JSON. */
  body: any;
}

type Headers = Record<string, string>;

let server: RunningServer;
let dataDir: string;
let ws: OpensslWorkspace & { dispose(): void };
let partner: KeyFiles;
let admin: Headers;
let aliceRm: Headers;
let alicePlain: Headers;
let bobRm: Headers;
let serial = 0;

function call(method: string, p: string, headers: Headers = {}, body?: string | Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: server.port, method, path: p, headers, ca: server.cert, servername: 'localhost', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const json = /json/.test(String(res.headers['content-type'] ?? '')) && raw.length > 0;
        resolve({ status: res.statusCode!, headers: res.headers, raw, body: json ? JSON.parse(raw.toString('utf8')) : undefined });
      });
    });
    req.once('error', reject);
    req.end(body);
  });
}

const json = (headers: Headers, body: unknown) => ({ headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** A signed-in device of `user` (password grant), registered with or without the rightsManagement capability. */
async function device(user: Username, capable: boolean): Promise<Headers> {
  const deviceId = `e2e-protection-${user}-${capable ? 'rm' : 'plain'}-${++serial}-${crypto.randomBytes(4).toString('hex')}`;
  // The password grant gives an admin the admin scope along with mail.
  const form = `grant_type=password&client_id=pigeon-app&username=${user}&password=${PASSWORDS[user]}&device_id=${deviceId}`;
  const token = await call('POST', '/oauth2/token', { 'content-type': 'application/x-www-form-urlencoded' }, form);
  expect(token.status).toBe(200);
  const headers = { authorization: `Bearer ${token.body.access_token}`, 'x-device-id': deviceId };
  const registration = json(headers, { friendlyName: `${user} e2e`, capabilities: capable ? ['rightsManagement'] : [] });
  expect((await call('POST', '/v1/devices', registration.headers, registration.body)).status).toBe(201);
  return headers;
}

async function folderId(d: Headers, kind: string): Promise<string> {
  const res = await call('GET', '/v1/folders/sync', d);
  expect(res.status).toBe(200);
  return (res.body.created as Array<{ id: string; kind: string }>).find((f) => f.kind === kind)!.id;
}

/** A fresh initial sync of a folder: the page as it came (for leak checks) and the item with this Message-ID. */
async function syncedItem(d: Headers, messageId: string, kind = 'inbox', query = ''): Promise<{ page: Answer; item: any }> {
  const page = await call('GET', `/v1/folders/${await folderId(d, kind)}/items/sync?maxChanges=500${query}`, d);
  expect(page.status).toBe(200);
  const found = (page.body.created as any[]).filter((i) => i.internetMessageId === messageId);
  expect(found).toHaveLength(1);
  return { page, item: found[0] };
}

function lmtpDeliver(to: string[], raw: Buffer, from = PARTNER_SENDER) {
  const transport = nodemailer.createTransport({ lmtp: true, host: '127.0.0.1', port: server.lmtpPort, ignoreTLS: true });
  return transport.sendMail({ envelope: { from, to }, raw }).finally(() => transport.close());
}

const newMessageId = (tag: string) => `<${tag}-${Date.now()}-${crypto.randomBytes(6).toString('hex')}@${PARTNER_DOMAIN}>`;

const base64Lines = (data: Buffer) => (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');

/**
 * The inner RFC 5322 message of the partner's protected mail: a text body and a text attachment, both 7bit so
 * their words would show verbatim in any copy of the plaintext.
 */
function partnerInnerMessage(messageId: string): Buffer {
  return Buffer.from(
    [
      `From: Pat Partner <${PARTNER_SENDER}>`,
      `To: Alice <${ADDRESS.alice}>`,
      'Subject: Partner terms (protected)',
      `Message-ID: ${messageId}`,
      `Date: ${new Date().toUTCString()}`,
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="inner-boundary"',
      '',
      '--inner-boundary',
      'Content-Type: text/plain; charset=us-ascii',
      'Content-Transfer-Encoding: 7bit',
      '',
      `Dear Alice, ${BODY_SECRET}.`,
      '--inner-boundary',
      'Content-Type: text/plain; name="prices.txt"',
      'Content-Disposition: attachment; filename="prices.txt"',
      'Content-Transfer-Encoding: 7bit',
      '',
      ATTACHMENT_SECRET,
      '--inner-boundary--',
      '',
    ].join('\r\n'),
    'latin1',
  );
}

/**
 * The wrapper as the format describes it (written here from the format, not with Pigeon's builder): the inner
 * message's addressing headers (`messageId` replaces its Message-ID when given), X-Pigeon-Protection: v1, and a
 * multipart/mixed of a placeholder, message.p7m and licence.p7s.
 */
function wrapperMessage(inner: Buffer, envelope: Buffer, licence: Buffer, messageId?: string): Buffer {
  const innerHead = inner.toString('latin1').split('\r\n\r\n')[0]!.split('\r\n');
  const copied = innerHead
    .filter((line) => /^(From|To|Subject|Date|Message-ID):/i.test(line))
    .map((line) => (messageId && /^Message-ID:/i.test(line) ? `Message-ID: ${messageId}` : line));
  const boundary = `=_wrapper_${crypto.randomBytes(8).toString('hex')}`;
  const attachment = (type: string, name: string, data: Buffer) =>
    [`Content-Type: ${type}; name="${name}"`, `Content-Disposition: attachment; filename="${name}"`, 'Content-Transfer-Encoding: base64', '', base64Lines(data)].join('\r\n');
  const parts = [
    ['Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: 7bit', '', 'This message is protected. Open it in an app that supports rights management.'].join('\r\n'),
    attachment('application/x-pigeon-protected', 'message.p7m', envelope),
    attachment('application/x-pigeon-licence', 'licence.p7s', licence),
  ];
  const head = [...copied, 'X-Pigeon-Protection: v1', 'MIME-Version: 1.0', `Content-Type: multipart/mixed; boundary="${boundary}"`];
  return Buffer.from(`${head.join('\r\n')}\r\n\r\n${parts.map((p) => `--${boundary}\r\n${p}\r\n`).join('')}--${boundary}--\r\n`, 'latin1');
}

/** The tenant's active protection certificate, as the admin API shows it, written to `tenant.pem`. */
async function tenantCertificateFile(): Promise<string> {
  const keys = await call('GET', '/admin/v1/protection/keys', admin);
  expect(keys.status).toBe(200);
  const active = (keys.body.keys as Array<{ certificate: string; active: boolean }>).filter((k) => k.active);
  expect(active).toHaveLength(1);
  expect(JSON.stringify(keys.body)).not.toMatch(/PRIVATE KEY/);
  return ws.write('tenant.pem', active[0]!.certificate);
}

/** Replaces the partners of the tenant's protection document (the rest of it kept), under If-Match. */
async function setPartners(partners: unknown[]): Promise<void> {
  const current = await call('GET', '/admin/v1/protection', admin);
  expect(current.status).toBe(200);
  const put = json({ ...admin, 'if-match': String(current.headers.etag) }, { ...current.body, partners });
  const res = await call('PUT', '/admin/v1/protection', put.headers, put.body);
  expect(res.status).toBe(200);
  expect(res.body.partners).toHaveLength(partners.length);
}

const partnerEntry = () => ({ id: 'partner-org', name: 'Partner Org', domains: [PARTNER_DOMAIN], certificates: [partner.certificatePem] });

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

/** The base64 payload of one part of a MIME message, by content type (mailparser's reading, not Pigeon's). */
async function partOfType(raw: Buffer, contentType: string): Promise<Buffer> {
  const parsed = await simpleParser(raw);
  const found = parsed.attachments.filter((a) => a.contentType === contentType);
  expect(found).toHaveLength(1);
  return found[0]!.content;
}

beforeAll(async () => {
  ws = opensslWorkspace();
  partner = ws.selfSigned('partner', 'Partner Org protection');
  const pki = smimePki();
  dataDir = tempDir('pigeon-e2e-protection-');
  const store = openSqliteStore(path.join(dataDir, 'pigeon.db'));
  const users = createUserAdmin(store, systemClock);
  await users.addUser({ username: 'root', password: PASSWORDS.root, role: 'admin', email: ADDRESS.root });
  await users.addUser({ username: 'alice', password: PASSWORDS.alice, role: 'user', email: ADDRESS.alice });
  await users.addUser({ username: 'bob', password: PASSWORDS.bob, role: 'user', email: ADDRESS.bob });
  await store.close();
  server = await startServer({ PIGEON_DATA_DIR: dataDir, PIGEON_MAIL_HOSTNAME: 'mx.pigeon.test', PIGEON_SMIME_TRUST_FILE: pki.ca.certFile });
  expect(server.lmtpPort).toEqual(expect.any(Number));
  admin = await device('root', false);
  aliceRm = await device('alice', true);
  alicePlain = await device('alice', false);
  bobRm = await device('bob', true);
  // The tenant's first protection key: rotation makes one when there is none.
  const rotated = await call('POST', '/admin/v1/protection/keys/rotate', admin);
  expect(rotated.status).toBe(201);
  expect(rotated.body.certificate).toMatch(/^-----BEGIN CERTIFICATE-----/);
}, 60_000);

afterAll(async () => {
  await server?.stop();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  ws?.dispose();
  disposeSmimePki();
});

describe('protected content made by OpenSSL, delivered over LMTP', () => {
  let inner: Buffer;
  let envelope: Buffer;
  let signedLicence: Buffer;
  let messageId: string;
  let licence: Record<string, unknown>;

  beforeAll(async () => {
    await setPartners([partnerEntry()]);
    const tenantPem = await tenantCertificateFile();
    messageId = newMessageId('protected');
    inner = partnerInnerMessage(messageId);
    ws.write('inner.eml', inner);
    ws.run([
      'cms', '-encrypt', '-binary', '-outform', 'DER', '-aes256', '-in', 'inner.eml', '-out', 'message.p7m',
      '-recip', tenantPem, '-keyopt', 'rsa_padding_mode:oaep', '-keyopt', 'rsa_oaep_md:sha256', '-keyopt', 'rsa_mgf1_md:sha256',
    ]);
    envelope = ws.read('message.p7m');
    const now = Date.now();
    licence = {
      v: 1,
      issuer: { tenantId: 'partner-org', name: 'Partner Org' },
      owner: PARTNER_SENDER,
      template: { id: 'do-not-forward', name: 'Do Not Forward' },
      rights: ['view', 'reply', 'replyAll'],
      issuedAt: new Date(now - 60_000).toISOString(),
      expiresAt: new Date(now + 24 * 3_600_000).toISOString(),
      contentDigest: crypto.createHash('sha256').update(envelope).digest('base64url'),
      messageId,
    };
    ws.write('licence.json', JSON.stringify(licence));
    ws.run(['cms', '-sign', '-binary', '-nodetach', '-outform', 'DER', '-md', 'sha256', '-signer', partner.certFile, '-inkey', partner.keyFile, '-in', 'licence.json', '-out', 'licence.p7s']);
    signedLicence = ws.read('licence.p7s');
    const info = await lmtpDeliver([ADDRESS.alice], wrapperMessage(inner, envelope, signedLicence));
    expect(info.accepted).toEqual([ADDRESS.alice]);
  });

  test('a device with rightsManagement sees the content, the rights and protection.state readable', async () => {
    const { item } = await syncedItem(aliceRm, messageId);
    expect(item.subject).toBe('Partner terms (protected)');
    expect(item.preview).toContain(BODY_SECRET);
    expect(item.rights).toEqual(['view', 'reply', 'replyAll']);
    expect(item.protection).toMatchObject({
      state: 'readable',
      reason: null,
      owner: PARTNER_SENDER,
      issuer: { tenantId: 'partner-org', name: 'Partner Org' },
      template: { id: 'do-not-forward', name: 'Do Not Forward' },
      expiresAt: licence.expiresAt,
    });
    expect(item.attachments).toEqual([expect.objectContaining({ id: 'protected-0', name: 'prices.txt', size: ATTACHMENT_SECRET.length })]);
    const read = await call('GET', `/v1/items/${item.id}`, aliceRm);
    expect(read.status).toBe(200);
    expect(read.body.body.content).toContain(BODY_SECRET);
    // Do Not Forward grants no export: the attachment is not handed out as a file, even to a capable device.
    const saved = await call('GET', `/v1/items/${item.id}/attachments/protected-0`, aliceRm);
    expect(saved.status).toBe(403);
    expect(saved.body).toMatchObject({ code: 'rightsDenied', right: 'export' });
  });

  test('a device without the capability sees the placeholder; none of its answers, and no file of the data dir, holds the text', async () => {
    const { page, item } = await syncedItem(alicePlain, messageId, 'inbox', '&bodyBytes=4096');
    expect(item.protection).toMatchObject({ state: 'capabilityRequired', owner: PARTNER_SENDER });
    expect(item.rights).toEqual([]);
    expect(item.attachments).toEqual([]);
    expect(item.preview).toMatch(/protected with rights management/);
    const read = await call('GET', `/v1/items/${item.id}`, alicePlain);
    expect(read.status).toBe(200);
    expect(read.body.body.content).toMatch(/protected with rights management/);
    const attachment = await call('GET', `/v1/items/${item.id}/attachments/protected-0`, alicePlain);
    expect(attachment.status).toBe(403);
    expect(attachment.body.code).toBe('rightsDenied');
    const mime = await call('GET', `/v1/items/${item.id}/mime`, alicePlain);
    expect(mime.status).toBe(200);
    // The raw message is the wrapper as delivered: its ciphertext, not the content.
    expect(mime.raw.includes(base64Lines(envelope).split('\r\n')[0]!)).toBe(true);
    for (const answer of [page, read, attachment, mime]) {
      for (const marker of SECRET_MARKERS) expect(answer.raw.toString('latin1')).not.toContain(marker);
    }

    const files = filesUnder(dataDir);
    expect(files.some((f) => path.basename(f) === 'pigeon.db')).toBe(true);
    for (const file of files) {
      const bytes = fs.readFileSync(file);
      for (const marker of SECRET_MARKERS) expect({ file, leaked: bytes.includes(marker) }).toEqual({ file, leaked: false });
    }
    for (const marker of SECRET_MARKERS) expect(JSON.stringify(server.logs) + server.stderr.join('')).not.toContain(marker);
  });

  describe('with the partner removed from the protection document', () => {
    let againId: string;

    beforeAll(async () => {
      await setPartners([]);
      // The same encrypted content and licence in a wrapper of its own (a new Message-ID, or LMTP would call it a
      // duplicate), so the answer cannot come from what the server opened before the change.
      againId = newMessageId('protected-again');
      const info = await lmtpDeliver([ADDRESS.alice], wrapperMessage(inner, envelope, signedLicence, againId));
      expect(info.accepted).toEqual([ADDRESS.alice]);
    });

    test('the same message delivered again is unreadable for the capable device: its issuer is not trusted', async () => {
      const { item } = await syncedItem(aliceRm, againId);
      expect(item.protection).toMatchObject({ state: 'unreadable', owner: PARTNER_SENDER, issuer: { tenantId: 'partner-org' } });
      expect(item.protection.reason).toMatch(/not a trusted certificate/);
      expect(item.rights).toEqual([]);
      expect(item.attachments).toEqual([]);
      const read = await call('GET', `/v1/items/${item.id}`, aliceRm);
      expect(read.status).toBe(200);
      expect(read.body.protection.state).toBe('unreadable');
      for (const text of [JSON.stringify(item), read.raw.toString('latin1')]) for (const marker of SECRET_MARKERS) expect(text).not.toContain(marker);
      expect(server.logs.some((l) => l.msg === 'protected message unreadable' && l.itemId === item.id)).toBe(true);
    });

    test('the copy opened before the change is unreadable too: trust is the question of every opening', async () => {
      const { item } = await syncedItem(aliceRm, messageId);
      expect(item.protection).toMatchObject({ state: 'unreadable' });
      expect(item.protection.reason).toMatch(/not a trusted certificate/);
      for (const marker of SECRET_MARKERS) expect(JSON.stringify(item)).not.toContain(marker);
    });
  });
});

describe('what Pigeon protects, checked by OpenSSL', () => {
  test('a protected message to a local user and a partner address: the partner key opens it, the tenant certificate verifies its licence', async () => {
    await setPartners([partnerEntry()]);
    const tenantPem = await tenantCertificateFile();
    const subject = `Encrypted for the partner ${crypto.randomBytes(4).toString('hex')}`;
    const sendBody = json(aliceRm, {
      to: [{ address: ADDRESS.bob }, { address: PARTNER_SENDER }],
      subject,
      body: { contentType: 'text', content: SENT_SECRET },
      protection: { template: 'encrypt-only' },
    });
    const sent = await call('POST', '/v1/messages/send', sendBody.headers, sendBody.body);
    expect(sent.status).toBe(202);
    expect(sent.body.localRecipients).toEqual([ADDRESS.bob]);
    expect([...sent.body.queuedRecipients, ...sent.body.rejectedRecipients]).toEqual([PARTNER_SENDER]);

    const raw = await call('GET', `/v1/items/${sent.body.id}/mime`, aliceRm);
    expect(raw.status).toBe(200);
    expect(raw.raw.toString('latin1')).not.toContain('OUTGOING-PLAINTEXT-5150');
    ws.write('sent-message.p7m', await partOfType(raw.raw, 'application/x-pigeon-protected'));
    ws.write('sent-licence.p7s', await partOfType(raw.raw, 'application/x-pigeon-licence'));

    // Both recipient entries use RSAES-OAEP (the tenant's own key and the partner's).
    const structure = ws.run(['cms', '-cmsout', '-print', '-inform', 'DER', '-in', 'sent-message.p7m']).toString('utf8');
    expect(structure.match(/algorithm: rsaesOaep/g)).toHaveLength(2);

    const opened = ws.run(['cms', '-decrypt', '-inform', 'DER', '-in', 'sent-message.p7m', '-recip', partner.certFile, '-inkey', partner.keyFile]).toString('latin1');
    expect(opened).toContain(SENT_SECRET);
    expect(opened).toMatch(new RegExp(`^Subject: ${subject}\\r?$`, 'm'));
    // A key it was not encrypted for does not open it.
    const stranger = ws.selfSigned('stranger', 'Stranger');
    expect(ws.attempt(['cms', '-decrypt', '-inform', 'DER', '-in', 'sent-message.p7m', '-recip', stranger.certFile, '-inkey', stranger.keyFile]).status).not.toBe(0);

    const verified = ws.run(['cms', '-verify', '-inform', 'DER', '-in', 'sent-licence.p7s', '-CAfile', tenantPem, '-purpose', 'any']);
    const licence = JSON.parse(verified.toString('utf8'));
    expect(licence).toMatchObject({
      v: 1,
      owner: ADDRESS.alice,
      template: { id: 'encrypt-only', name: 'Encrypt Only' },
      rights: ['view', 'reply', 'replyAll', 'forward', 'extract', 'print', 'export'],
      expiresAt: null,
      contentDigest: crypto.createHash('sha256').update(ws.read('sent-message.p7m')).digest('base64url'),
      messageId: sent.body.internetMessageId,
    });
    // The partner's certificate is not what signed it: verifying against it alone fails.
    expect(ws.attempt(['cms', '-verify', '-inform', 'DER', '-in', 'sent-licence.p7s', '-CAfile', partner.certFile, '-purpose', 'any', '-out', 'unused.json']).status).not.toBe(0);
  });
});

describe('S/MIME made by openssl, over LMTP', () => {
  /** A message openssl made, with a Message-ID and Date in front (openssl writes neither), CRLF throughout. */
  function withId(message: Buffer, tag: string): { raw: Buffer; messageId: string } {
    const messageId = newMessageId(tag);
    return { raw: Buffer.concat([Buffer.from(`Message-ID: ${messageId}\r\nDate: ${new Date().toUTCString()}\r\n`), message]), messageId };
  }

  async function deliveredToBob(raw: Buffer, messageId: string) {
    const info = await lmtpDeliver([ADDRESS.bob], raw, smimePki().alice.email);
    expect(info.accepted).toEqual([ADDRESS.bob]);
    return (await syncedItem(bobRm, messageId)).item;
  }

  test('signed with a certificate of the trusted CA: valid, with the signer\'s address', async () => {
    const pki = smimePki();
    const { raw, messageId } = withId(signedMessage(pki.alice, { endings: 'crlf' }), 'smime-valid');
    expect(opensslVerifies(raw, pki.ca.certFile)).toBe(true);
    const item = await deliveredToBob(raw, messageId);
    expect(item.smime).toMatchObject({ kind: 'signed', signature: { status: 'valid', reason: null, signer: { email: pki.alice.email } } });
  });

  test('signed under a CA nobody trusts: untrusted', async () => {
    const pki = smimePki();
    const { raw, messageId } = withId(signedMessage(pki.mallory, { endings: 'crlf' }), 'smime-untrusted');
    expect(opensslVerifies(raw, pki.otherCa.certFile)).toBe(true);
    const item = await deliveredToBob(raw, messageId);
    expect(item.smime).toMatchObject({ kind: 'signed', signature: { status: 'untrusted', signer: { email: pki.mallory.email } } });
    expect(item.smime.signature.reason).toEqual(expect.any(String));
  });

  test('the body changed after signing: invalid', async () => {
    const pki = smimePki();
    const signed = signedMessage(pki.alice, { endings: 'crlf' }).toString('latin1');
    const firstLine = SIGNED_TEXT.split('\n')[0]!;
    expect(signed).toContain(firstLine);
    const changed = Buffer.from(signed.replace(firstLine, firstLine.replace('Hello', 'Jello')), 'latin1');
    const { raw, messageId } = withId(changed, 'smime-invalid');
    expect(opensslVerifies(raw, pki.ca.certFile)).toBe(false);
    const item = await deliveredToBob(raw, messageId);
    expect(item.smime).toMatchObject({ kind: 'signed', signature: { status: 'invalid' } });
  });

  test('encrypted: reported as encrypted and kept byte for byte after the trace headers', async () => {
    const pki = smimePki();
    const { raw, messageId } = withId(encryptedMessage(pki.bob, { endings: 'crlf' }), 'smime-encrypted');
    const item = await deliveredToBob(raw, messageId);
    expect(item.smime).toEqual({ kind: 'encrypted', signature: null });
    const mime = await call('GET', `/v1/items/${item.id}/mime`, bobRm);
    expect(mime.status).toBe(200);
    const stored = mime.raw;
    const bodyOf = (m: Buffer) => m.subarray(m.indexOf('\r\n\r\n') + 4);
    expect(bodyOf(stored).equals(bodyOf(raw))).toBe(true);
    // Everything before the delivered bytes is Pigeon's trace (Return-Path, Received), and they follow unchanged.
    expect(stored.subarray(stored.length - raw.length).equals(raw)).toBe(true);
    const trace = stored.subarray(0, stored.length - raw.length).toString('latin1');
    expect(trace).toMatch(/^Return-Path: <[^>]*>\r\nReceived: from [^\r\n]+(\r\n\t[^\r\n]+)*\r\n$/);
    // And openssl still opens what Pigeon hands back.
    ws.write('smime-stored.eml', stored);
    const decrypted = ws.run(['smime', '-decrypt', '-in', 'smime-stored.eml', '-recip', pki.bob.certFile, '-inkey', pki.bob.keyFile]).toString('utf8');
    expect(decrypted.replace(/\r\n/g, '\n')).toContain(SIGNED_TEXT);
  });
});
