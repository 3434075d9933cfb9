/**
 * Content on demand over HTTP (protocol §7): the full item with its sanitised body, attachment downloads with
 * ranges and validators, the raw message, the HTML policy, and bodies in sync pages. Messages enter through the one
 * delivery path from MIME written here; a few odd cases (a bogus media type, a large attachment) go straight to the
 * store.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { buildTestApp, signIn, type TestContext } from '../helpers/testApp';
import { expectToMatchSpec } from '../helpers/openapi';
import { cutHtml, sanitizeEmailHtml, sanitizedHtmlPrefix } from '../../server/content/sanitize';
import { READ_BYTES } from '../../server/content/download';

let ctx: TestContext;
const PW = 'password-for-content-tests';
let alice: Record<string, string>;
let bob: Record<string, string>;

const ITEM = '/v1/items/{itemId}';
const ATTACHMENT = '/v1/items/{itemId}/attachments/{attachmentId}';
const MIME = '/v1/items/{itemId}/mime';

// ---------------------------------------------------------------------------------------------------------------
// MIME written by hand

interface Part {
  name: string;
  type: string;
  content: Buffer;
  cid?: string;
}

const b64 = (bytes: Buffer) => bytes.toString('base64').replace(/.{76}/g, '$&\r\n');
const encodedWord = (s: string) => `=?UTF-8?B?${Buffer.from(s, 'utf8').toString('base64')}?=`;

function message(opts: { subject: string; text?: string; html?: string; attachments?: Part[]; id: string }): Buffer {
  const lines = [
    'From: Sender <sender@example.org>',
    'To: Alice <alice@example.org>',
    `Subject: ${encodedWord(opts.subject)}`,
    'Date: Tue, 04 Mar 2025 10:00:00 +0000',
    `Message-ID: <${opts.id}@example.org>`,
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="outer"',
    '',
    '--outer',
    'Content-Type: multipart/alternative; boundary="alt"',
    '',
  ];
  if (opts.text !== undefined) {
    lines.push('--alt', 'Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: base64', '', b64(Buffer.from(opts.text)));
  }
  if (opts.html !== undefined) {
    lines.push('--alt', 'Content-Type: text/html; charset=utf-8', 'Content-Transfer-Encoding: base64', '', b64(Buffer.from(opts.html)));
  }
  lines.push('--alt--');
  for (const a of opts.attachments ?? []) {
    const encodedName = encodeURIComponent(a.name).replace(/'/g, '%27');
    lines.push(
      '--outer',
      `Content-Type: ${a.type}`,
      `Content-Disposition: ${a.cid ? 'inline' : 'attachment'}; filename*=UTF-8''${encodedName}`,
      ...(a.cid ? [`Content-ID: <${a.cid}>`] : []),
      'Content-Transfer-Encoding: base64',
      '',
      b64(a.content),
    );
  }
  lines.push('--outer--', '');
  return Buffer.from(lines.join('\r\n'));
}

async function deliver(userId: string, raw: Buffer): Promise<string> {
  const prepared = await ctx.built.delivery.prepare(raw);
  const [result] = await ctx.built.delivery.deliver(prepared, [{ userId }], { duplicates: 'import' });
  return result!.itemId;
}

// ---------------------------------------------------------------------------------------------------------------
// Fixtures

const HOSTILE_HTML = [
  '<html><head><title>Hidden title</title><style>body{background:url(https://t.example/css.png)}</style>',
  '<meta http-equiv="refresh" content="0;url=https://evil.example/"><base href="https://evil.example/"></head><body>',
  '<p style="color:red;background:url(https://t.example/bg.png);position:fixed">Grüße aus Köln</p>',
  '<img src=x onerror=alert(1)>',
  '<img src="https://t.example/pixel.gif" width="1" height="1">',
  '<img src="cid:logo@pigeon" alt="logo">',
  '<a href="javascript:alert(2)">click</a> <a href="https://ok.example/">fine</a>',
  '<svg><script>alert(3)</script></svg><iframe src="https://evil.example/"></iframe>',
  '<form action="https://evil.example/"><input name="password"></form>',
  '</body></html>',
].join('');

const BIG = crypto.randomBytes(READ_BYTES + 50_000); // crosses a chunk boundary
const PDF_NAME = 'Résumé 日本.pdf';
const PDF = Buffer.from('%PDF-1.4 not really a pdf\n');
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
const EVIL_HTML = Buffer.from(`<script>alert(document.cookie)</script>${'<p>compressible</p>'.repeat(400)}`); // > 1 KiB: gzip would apply

let mainId: string; // alice: hostile HTML, text, four attachments
let htmlOnlyId: string;
let textOnlyId: string;
let bobItemId: string;
let aliceId: string;
let mainRaw: Buffer;
const atts: Record<string, string> = {};

beforeAll(async () => {
  ctx = await buildTestApp();
  await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
  await ctx.users.addUser({ username: 'bob', password: PW, role: 'user' });
  alice = await device('alice', 'content-alice-device-01');
  bob = await device('bob', 'content-bob-device-0001');
  aliceId = (await ctx.store.users.byUsername('alice'))!.id;
  const bobId = (await ctx.store.users.byUsername('bob'))!.id;

  mainRaw = message({
    id: 'main',
    subject: 'Quarterly report: Q1/Q2 "final"',
    text: 'Plain text version',
    html: HOSTILE_HTML,
    attachments: [
      { name: 'random.bin', type: 'application/octet-stream', content: BIG },
      { name: PDF_NAME, type: 'application/pdf', content: PDF },
      { name: 'logo.png', type: 'image/png', content: PNG, cid: 'logo@pigeon' },
      { name: 'evil.html', type: 'text/html', content: EVIL_HTML },
    ],
  });
  mainId = await deliver(aliceId, mainRaw);
  for (const a of (await ctx.store.items.byId(aliceId, mainId))!.attachments) atts[a.name] = a.id;
  htmlOnlyId = await deliver(aliceId, message({ id: 'html-only', subject: 'HTML only', html: `<p>Tom &amp; Jerry</p><p>${'€'.repeat(200)}</p>` }));
  textOnlyId = await deliver(aliceId, message({ id: 'text-only', subject: 'Text only', text: `Bonjour ${'é'.repeat(300)}` }));
  bobItemId = await deliver(bobId, message({ id: 'bob', subject: 'For Bob', text: 'secret', attachments: [{ name: 'b.txt', type: 'text/plain', content: Buffer.from('bob only') }] }));
});
afterAll(() => ctx.close());

async function device(username: string, deviceId: string) {
  const t = await signIn(ctx, username, PW, { device_id: deviceId });
  const h = { Authorization: `Bearer ${t.access_token}`, 'X-Device-Id': deviceId };
  expect([200, 201]).toContain((await request(ctx.app).post('/v1/devices').set(h).send({})).status);
  return h;
}

/** Collects the body as bytes whatever the media type (supertest would otherwise parse or drop it). */
const bytes = (res: request.Response, cb: (err: Error | null, body: Buffer) => void) => {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => cb(null, Buffer.concat(chunks)));
};
const download = (path: string, headers: Record<string, string> = {}) =>
  request(ctx.app).get(path).set(alice).set(headers).buffer(true).parse(bytes);
const attachmentPath = (name: string, itemId = mainId) => `/v1/items/${itemId}/attachments/${atts[name] ?? name}`;

// ---------------------------------------------------------------------------------------------------------------

describe('GET /v1/items/{itemId}', () => {
  test('the item as sync sends it, plus the whole sanitised HTML body; ETag is the change key', async () => {
    const res = await request(ctx.app).get(`/v1/items/${mainId}`).set(alice);
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'get', ITEM);
    const item = (await ctx.store.items.byId(aliceId, mainId))!;
    expect(res.headers.etag).toBe(`"${item.changeKey}"`);
    expect(res.headers['cache-control']).toBe('private, no-cache');

    const page = await request(ctx.app).get(`/v1/folders/${item.folderId}/items/sync?maxChanges=512`).set(alice);
    const fromSync = page.body.created.find((c: { id: string }) => c.id === mainId);
    const { body, ...rest } = res.body;
    expect(rest).toEqual(fromSync);
    expect(body.contentType).toBe('html');
    expect(body.truncated).toBe(false);
    expect(body.content).toContain('Grüße aus Köln');
    expect(body.content).toContain('data-pigeon-remote-src="https://t.example/pixel.gif"');
    expect(body.content).toContain('src="cid:logo@pigeon"');
    expect(body.content).not.toMatch(/<script|onerror|javascript:|<iframe|<form|<input|<meta|<base|<style|<svg|url\(|Hidden title/i);
    expect(res.body.attachments.map((a: { name: string }) => a.name)).toEqual(['random.bin', PDF_NAME, 'logo.png', 'evil.html']);
  });

  test('bodyType: text of an HTML-only message is derived text; html of a text-only message is its text', async () => {
    const text = await request(ctx.app).get(`/v1/items/${htmlOnlyId}?bodyType=text`).set(alice);
    expectToMatchSpec(text, 'get', ITEM);
    expect(text.body.body.contentType).toBe('text');
    expect(text.body.body.content).toContain('Tom & Jerry');
    expect(text.body.body.content).not.toContain('<p>');

    const html = await request(ctx.app).get(`/v1/items/${htmlOnlyId}`).set(alice);
    expect(html.body.body).toMatchObject({ contentType: 'html', truncated: false });
    expect(html.body.body.content).toContain('<p>Tom &amp; Jerry</p>');

    const plain = await request(ctx.app).get(`/v1/items/${textOnlyId}?bodyType=html`).set(alice);
    expect(plain.body.body).toEqual({ contentType: 'text', content: `Bonjour ${'é'.repeat(300)}`, truncated: false });
    const both = await request(ctx.app).get(`/v1/items/${mainId}?bodyType=text`).set(alice);
    expect(both.body.body.content).toBe('Plain text version');
  });

  test('If-None-Match with the change key is 304; a change moves the ETag on', async () => {
    const first = await request(ctx.app).get(`/v1/items/${textOnlyId}`).set(alice);
    const again = await request(ctx.app).get(`/v1/items/${textOnlyId}`).set(alice).set('If-None-Match', first.headers.etag!);
    expect(again.status).toBe(304);
    expect(again.text ?? '').toBe('');
    expectToMatchSpec(again, 'get', ITEM);
    expect((await request(ctx.app).get(`/v1/items/${textOnlyId}`).set(alice).set('If-None-Match', `W/${first.headers.etag}`)).status).toBe(304);

    await request(ctx.app).patch(`/v1/items/${textOnlyId}`).set(alice).set('If-Match', first.headers.etag!).send({ isFlagged: true }).expect(200);
    const changed = await request(ctx.app).get(`/v1/items/${textOnlyId}`).set(alice).set('If-None-Match', first.headers.etag!);
    expect(changed.status).toBe(200);
    expect(changed.headers.etag).not.toBe(first.headers.etag);
    expect(changed.body.isFlagged).toBe(true);
  });

  test('another user\'s item and an unknown id are 404 itemNotFound; a bad bodyType is 400', async () => {
    for (const path of [`/v1/items/${bobItemId}`, '/v1/items/no-such-item']) {
      const res = await request(ctx.app).get(path).set(alice);
      expect(res.status).toBe(404);
      expect(res.body.code).toBe('itemNotFound');
      expect(res.text).not.toContain('secret');
      expectToMatchSpec(res, 'get', ITEM);
    }
    const bad = await request(ctx.app).get(`/v1/items/${mainId}?bodyType=rtf`).set(alice);
    expect(bad.status).toBe(400);
    expect(bad.body.errors[0].field).toBe('bodyType');
    expectToMatchSpec(bad, 'get', ITEM);
    // Bob still reads his own item.
    expect((await request(ctx.app).get(`/v1/items/${bobItemId}`).set(bob)).body.body.content).toBe('secret');
  });
});

describe('the HTML policy', () => {
  const clean = sanitizeEmailHtml;

  test('scripts, event handlers and script-carrying elements go', () => {
    expect(clean('<img src=x onerror=alert(1)>')).toBe('<img />');
    expect(clean('<p onclick="alert(1)" onmouseover=x>t</p>')).toBe('<p>t</p>');
    expect(clean('<svg><script>alert(1)</script><text>svg text</text></svg>after')).toBe('after');
    expect(clean('<script>alert(1)</script><noscript><img src="https://t/p"></noscript>x')).toBe('x');
    expect(clean('<iframe src="https://evil/"></iframe><object data="x"></object><embed src="y">z')).toBe('z');
    expect(clean('<math><mi xlink:href="javascript:alert(1)">m</mi></math>')).toBe('');
  });

  test('forms, base and meta (refresh) go; their text stays', () => {
    expect(clean('<form action="https://evil/"><input name="pw"><button>Go</button></form>')).toBe('Go');
    expect(clean('<base href="https://evil/">b')).toBe('b');
    expect(clean('<meta http-equiv="refresh" content="0;url=https://evil/">m')).toBe('m');
  });

  test('javascript:, vbscript: and data: links lose their href however they are spelled; links open safely', () => {
    for (const href of ['javascript:alert(1)', ' JaVaScRiPt:alert(1)', 'java&#x09;script:alert(1)', 'vbscript:msgbox(1)', 'data:text/html,<script>alert(1)</script>']) {
      expect(clean(`<a href="${href}">x</a>`)).toBe('<a target="_blank" rel="noopener noreferrer">x</a>');
    }
    expect(clean('<a href="https://ok.example/?a=1&b=2" target="_self" rel="opener">ok</a>')).toBe(
      '<a href="https://ok.example/?a=1&amp;b=2" target="_blank" rel="noopener noreferrer">ok</a>',
    );
    expect(clean('<a href="mailto:a@example.org">m</a>')).toContain('href="mailto:a@example.org"');
  });

  test('remote images are blocked into data-pigeon-remote-src; cid: and raster data: images stay; SVG data does not', () => {
    expect(clean('<img src="https://t.example/p.gif" width="1" height="1">')).toBe(
      '<img width="1" height="1" data-pigeon-remote-src="https://t.example/p.gif" />',
    );
    expect(clean('<img src="//t.example/p.gif">')).toBe('<img data-pigeon-remote-src="//t.example/p.gif" />');
    expect(clean('<img src="cid:logo@x">')).toBe('<img src="cid:logo@x" />');
    expect(clean('<img src="data:image/png;base64,iVBORw0KGgo=">')).toBe('<img src="data:image/png;base64,iVBORw0KGgo=" />');
    expect(clean('<img src="data:image/svg+xml;base64,PHN2Zz4=">')).toBe('<img />');
    expect(clean('<img src="javascript:alert(1)">')).toBe('<img />');
    // The message cannot smuggle its own "remote" attribute past the blocker.
    expect(clean('<img data-pigeon-remote-src="javascript:alert(1)">')).toBe('<img />');
    expect(clean('<img srcset="https://t.example/a.png 1x">')).toBe('<img />');
  });

  test('CSS: style blocks go; style attributes keep presentational properties without url(, expression( or escapes', () => {
    expect(clean('<style>p{color:red}</style><p>x</p>')).toBe('<p>x</p>');
    expect(
      clean('<p style="color:red;background:url(https://t/x);width:10px;position:fixed;background-color:\\75rl(x);font-family:expression(alert(1));behavior:url(x.htc)">p</p>'),
    ).toBe('<p style="color:red;width:10px">p</p>');
    expect(clean('<p style="background-image:image-set(&quot;https://t/x.png&quot; 1x)">p</p>')).toBe('<p>p</p>');
    expect(clean('<table background="https://t/bg.png"><tr><td bgcolor="#fff">t</td></tr></table>')).toBe(
      '<table><tr><td bgcolor="#fff">t</td></tr></table>',
    );
    expect(clean('<div class="app-header" id="root">d</div>')).toBe('<div>d</div>');
    expect(clean('<!--[if mso]><p>outlook only</p><![endif]-->c')).toBe('c');
  });

  test('a cut never splits a character, a tag or an entity', () => {
    expect(cutHtml('<p>ab<b>cd</b></p>', 7)).toBe('<p>ab');
    expect(cutHtml('<p>a &amp; b</p>', 8)).toBe('<p>a ');
    expect(cutHtml('€€€', 7)).toBe('€€');
    expect(cutHtml('😀😀', 5)).toBe('😀');
  });

  test('a long body is sanitised from a prefix, with the same result as cutting the whole', () => {
    const html = `<html><head><style>${'p{color:red}'.repeat(4000)}</style></head><body>${'<p>Grüße, €uro</p>'.repeat(20_000)}</body></html>`;
    const cut = sanitizedHtmlPrefix(html, 5000);
    expect(cut.truncated).toBe(true);
    expect(cut.content).toBe(cutHtml(sanitizeEmailHtml(html), 5000));
    expect(Buffer.byteLength(cut.content)).toBeLessThanOrEqual(5000);
    expect(sanitizedHtmlPrefix('<p>short</p>', 5000)).toEqual({ content: '<p>short</p>', truncated: false });
  });
});

describe('GET /v1/items/{itemId}/attachments/{attachmentId}', () => {
  test('the whole attachment: bytes, type, length, RFC 6266 name, nosniff, strong ETag, no-transform', async () => {
    const res = await download(attachmentPath('random.bin'));
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'get', ATTACHMENT);
    expect(Buffer.compare(res.body, BIG)).toBe(0);
    expect(res.headers['content-type']).toBe('application/octet-stream');
    expect(res.headers['content-length']).toBe(String(BIG.length));
    expect(res.headers.etag).toBe(`"${crypto.createHash('sha256').update(BIG).digest('hex')}"`);
    expect(res.headers['accept-ranges']).toBe('bytes');
    expect(res.headers['cache-control']).toBe('private, max-age=86400, no-transform');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-disposition']).toBe('attachment; filename=random.bin');

    const pdf = await download(attachmentPath(PDF_NAME));
    expect(pdf.body.toString()).toBe(PDF.toString());
    expect(pdf.headers['content-type']).toBe('application/pdf');
    expect(pdf.headers['content-disposition']).toBe(
      `attachment; filename="Resume __.pdf"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.pdf`,
    );
  });

  test('an HTML attachment is never shown in place, even when asked; a raster image may be', async () => {
    const html = await download(`${attachmentPath('evil.html')}?inline=1`, { 'Accept-Encoding': 'gzip' });
    expect(html.headers['content-type']).toBe('text/html');
    expect(html.headers['content-disposition']).toBe('attachment; filename=evil.html');
    expect(html.headers['content-encoding']).toBeUndefined();
    expect(html.headers['content-security-policy']).toContain("default-src 'none'");
    expect(html.body.toString()).toBe(EVIL_HTML.toString());

    const png = await download(`${attachmentPath('logo.png')}?inline=1`);
    expect(png.headers['content-disposition']).toBe('inline; filename=logo.png');
    expect(Buffer.compare(png.body, PNG)).toBe(0);
    expect((await download(attachmentPath('logo.png'))).headers['content-disposition']).toMatch(/^attachment;/);

    const bad = await request(ctx.app).get(`${attachmentPath('logo.png')}?inline=yes`).set(alice);
    expect(bad.status).toBe(400);
    expectToMatchSpec(bad, 'get', ATTACHMENT);
  });

  test('a media type that is not a plain type/subtype is served as application/octet-stream', async () => {
    const folder = (await ctx.store.folders.byKind(aliceId, 'inbox'))!;
    const odd = await ctx.store.items.create(
      {
        userId: aliceId, folderId: folder.id, type: 'email', receivedAt: ctx.clock.now(), subject: 'odd',
        attachments: [
          { name: 'a', contentType: 'text/html\r\nX-Injected: 1', isInline: false, contentId: null, content: Buffer.from('a') },
          { name: '../../etc/passwd\u0007', contentType: 'image/svg+xml', isInline: false, contentId: null, content: Buffer.from('<svg/>') },
        ],
      },
      ctx.clock.now(),
    );
    const first = await download(`/v1/items/${odd.id}/attachments/att1`);
    expect(first.headers['content-type']).toBe('application/octet-stream');
    expect(first.headers['x-injected']).toBeUndefined();
    const second = await download(`/v1/items/${odd.id}/attachments/att2?inline=1`);
    expect(second.headers['content-type']).toBe('image/svg+xml');
    expect(second.headers['content-disposition']).toBe('attachment; filename=_.._etc_passwd_');
  });

  test('one range: the first byte, the middle across a chunk boundary, a suffix, an open end', async () => {
    const cases: Array<[string, number, number]> = [
      ['bytes=0-0', 0, 0],
      [`bytes=${READ_BYTES - 10}-${READ_BYTES + 9}`, READ_BYTES - 10, READ_BYTES + 9],
      ['bytes=-500', BIG.length - 500, BIG.length - 1],
      ['bytes=100-', 100, BIG.length - 1],
      [`bytes=${BIG.length - 5}-${BIG.length + 100}`, BIG.length - 5, BIG.length - 1],
    ];
    for (const [range, first, last] of cases) {
      const res = await download(attachmentPath('random.bin'), { Range: range });
      expect({ range, status: res.status }).toEqual({ range, status: 206 });
      expectToMatchSpec(res, 'get', ATTACHMENT);
      expect(res.headers['content-range']).toBe(`bytes ${first}-${last}/${BIG.length}`);
      expect(res.headers['content-length']).toBe(String(last - first + 1));
      expect(Buffer.compare(res.body, BIG.subarray(first, last + 1))).toBe(0);
    }
  });

  test('several ranges and malformed Range headers get the whole body; beyond the end is 416', async () => {
    for (const range of ['bytes=0-0,10-20', 'bytes=abc', 'items=0-5', 'bytes=5-2', 'bytes=']) {
      const res = await download(attachmentPath('random.bin'), { Range: range });
      expect({ range, status: res.status }).toEqual({ range, status: 200 });
      expect(res.body.length).toBe(BIG.length);
    }
    for (const range of [`bytes=${BIG.length}-`, 'bytes=-0', `bytes=${BIG.length + 10}-${BIG.length + 20}`]) {
      const res = await request(ctx.app).get(attachmentPath('random.bin')).set(alice).set('Range', range);
      expect({ range, status: res.status }).toEqual({ range, status: 416 });
      expectToMatchSpec(res, 'get', ATTACHMENT);
      expect(res.headers['content-range']).toBe(`bytes */${BIG.length}`);
      expect(res.body.code).toBe('rangeNotSatisfiable');
    }
  });

  test('If-None-Match → 304 without a body; If-Range with another tag → the whole 200', async () => {
    const etag = (await download(attachmentPath(PDF_NAME))).headers.etag!;
    const cached = await download(attachmentPath(PDF_NAME), { 'If-None-Match': `"other", ${etag}` });
    expect(cached.status).toBe(304);
    expect(cached.body.length).toBe(0);
    expect(cached.headers.etag).toBe(etag);
    expectToMatchSpec(cached, 'get', ATTACHMENT);
    expect((await download(attachmentPath(PDF_NAME), { 'If-None-Match': '"other"' })).status).toBe(200);

    const same = await download(attachmentPath(PDF_NAME), { Range: 'bytes=0-3', 'If-Range': etag });
    expect(same.status).toBe(206);
    expect(same.body.toString()).toBe('%PDF');
    for (const ifRange of ['"stale"', `W/${etag}`, 'Tue, 04 Mar 2025 10:00:00 GMT']) {
      const stale = await download(attachmentPath(PDF_NAME), { Range: 'bytes=0-3', 'If-Range': ifRange });
      expect({ ifRange, status: stale.status }).toEqual({ ifRange, status: 200 });
      expect(stale.body.toString()).toBe(PDF.toString());
    }
  });

  test('HEAD answers the headers without the bytes, ranges included', async () => {
    const head = await request(ctx.app).head(attachmentPath('random.bin')).set(alice);
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(BIG.length));
    expect(head.headers.etag).toMatch(/^"[0-9a-f]{64}"$/);
    expectToMatchSpec(head, 'head', ATTACHMENT);
    const range = await request(ctx.app).head(attachmentPath('random.bin')).set(alice).set('Range', 'bytes=10-19');
    expect(range.status).toBe(206);
    expect(range.headers['content-length']).toBe('10');
  });

  test('another user\'s item is 404 itemNotFound; an attachment the item lacks is 404 notFound', async () => {
    const foreign = await request(ctx.app).get(`/v1/items/${bobItemId}/attachments/att1`).set(alice);
    expect(foreign.status).toBe(404);
    expect(foreign.body.code).toBe('itemNotFound');
    expect(foreign.text).not.toContain('bob only');
    expectToMatchSpec(foreign, 'get', ATTACHMENT);
    const missing = await request(ctx.app).get(`/v1/items/${textOnlyId}/attachments/att1`).set(alice);
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ code: 'notFound', detail: 'No such attachment.' });
    expectToMatchSpec(missing, 'get', ATTACHMENT);
    expect((await request(ctx.app).get(`/v1/items/${bobItemId}/attachments/att1`).set(bob)).text).toBe('bob only');
  });

  test('a client that stops reading holds the server back; one that leaves stops the reads', async () => {
    const folder = (await ctx.store.folders.byKind(aliceId, 'inbox'))!;
    const chunks = 64;
    const large = await ctx.store.items.create(
      {
        userId: aliceId, folderId: folder.id, type: 'email', receivedAt: ctx.clock.now(), subject: 'large',
        attachments: [{ name: 'large.bin', contentType: 'application/octet-stream', isInline: false, contentId: null, content: crypto.randomBytes(chunks * READ_BYTES) }],
      },
      ctx.clock.now(),
    );
    const blobId = (await ctx.store.items.attachments(aliceId, large.id))[0]!.blobId;
    let reads = 0;
    const read = ctx.store.blobs.read;
    ctx.store.blobs.read = (userId, id, start, end) => {
      if (id === blobId) reads++;
      return read(userId, id, start, end);
    };
    const server = http.createServer(ctx.app).listen(0, '127.0.0.1');
    try {
      await new Promise((resolve) => server.once('listening', resolve));
      const { port } = server.address() as AddressInfo;
      const req = http.get({ port, host: '127.0.0.1', path: `/v1/items/${large.id}/attachments/att1`, headers: alice });
      const res = await new Promise<http.IncomingMessage>((resolve) => req.once('response', resolve));
      expect(res.statusCode).toBe(200);
      res.pause(); // a reader that stalls: only socket buffers' worth may be read ahead
      await new Promise((resolve) => setTimeout(resolve, 300));
      const whileStalled = reads;
      expect(whileStalled).toBeLessThan(chunks / 2);
      req.destroy(); // the reader leaves
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(reads).toBeLessThanOrEqual(whileStalled + 1);
      expect(reads).toBeLessThan(chunks);
      // The server is fine and serves the next download whole.
      const next = await download(attachmentPath(PDF_NAME));
      expect(next.body.toString()).toBe(PDF.toString());
    } finally {
      ctx.store.blobs.read = read;
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('GET /v1/items/{itemId}/mime', () => {
  test('the raw message as message/rfc822, named after its subject; ranges work the same', async () => {
    const res = await download(`/v1/items/${mainId}/mime`);
    expect(res.status).toBe(200);
    expectToMatchSpec(res, 'get', MIME);
    expect(Buffer.compare(res.body, mainRaw)).toBe(0);
    expect(res.headers['content-type']).toBe('message/rfc822');
    expect(res.headers['content-disposition']).toBe('attachment; filename="Quarterly report_ Q1_Q2 _final_.eml"');
    const head = await download(`/v1/items/${mainId}/mime`, { Range: 'bytes=0-4' });
    expect(head.status).toBe(206);
    expect(head.body.toString()).toBe('From:');
  });

  test('an event has no raw message (404 notFound); another user\'s item is 404 itemNotFound', async () => {
    const calendar = (await ctx.store.folders.byKind(aliceId, 'calendar'))!;
    const event = await ctx.store.items.create({ userId: aliceId, folderId: calendar.id, type: 'event', receivedAt: ctx.clock.now(), subject: 'Meeting' }, ctx.clock.now());
    const none = await request(ctx.app).get(`/v1/items/${event.id}/mime`).set(alice);
    expect(none.status).toBe(404);
    expect(none.body.code).toBe('notFound');
    expectToMatchSpec(none, 'get', MIME);
    const foreign = await request(ctx.app).get(`/v1/items/${bobItemId}/mime`).set(alice);
    expect(foreign.body.code).toBe('itemNotFound');
    expect(foreign.text).not.toContain('For Bob');
  });
});

describe('bodies in sync pages', () => {
  async function syncPage(bodyBytes: number) {
    const inbox = (await ctx.store.folders.byKind(aliceId, 'inbox'))!;
    const res = await request(ctx.app).get(`/v1/folders/${inbox.id}/items/sync?maxChanges=512&bodyBytes=${bodyBytes}`).set(alice);
    expect(res.status).toBe(200);
    return { res, byId: new Map<string, { body?: { contentType: string; content: string; truncated: boolean } }>(res.body.created.map((c: { id: string }) => [c.id, c])) };
  }

  test('cut after sanitising, on a character boundary, with truncated set', async () => {
    // "<p>Tom &amp; Jerry</p><p>" is 25 bytes; each € is 3: 40 bytes leave room for 5 of them, not 6.
    const { byId } = await syncPage(40);
    const html = byId.get(htmlOnlyId)!.body!;
    expect(html).toEqual({ contentType: 'html', content: `<p>Tom &amp; Jerry</p><p>${'€'.repeat(5)}`, truncated: true });
    const text = byId.get(textOnlyId)!.body!;
    expect(text.contentType).toBe('text');
    expect(text.truncated).toBe(true);
    expect(text.content).toBe(`Bonjour ${'é'.repeat(16)}`); // 8 + 16 × 2 = 40 bytes
    const main = byId.get(mainId)!.body!;
    expect(Buffer.byteLength(main.content)).toBeLessThanOrEqual(40);
    expect(main.content).not.toMatch(/<style|url\(|Hidden title/);
    for (const item of byId.values()) if (item.body) expect(item.body.content).not.toContain('\uFFFD');
  });

  test('a large budget gives the same body as GET /v1/items/{itemId}; attachment bytes never travel', async () => {
    const { res, byId } = await syncPage(65536);
    const full = await request(ctx.app).get(`/v1/items/${mainId}`).set(alice);
    expect(byId.get(mainId)!.body).toEqual(full.body.body);
    expect(byId.get(mainId)!.body!.truncated).toBe(false);
    const page = res.text;
    expect(page).not.toContain(BIG.subarray(0, 48).toString('base64'));
    expect(page).not.toContain(PDF.toString('base64').slice(0, 16));
    expect(page).not.toContain('%PDF');
    expect(page.length).toBeLessThan(BIG.length);
    for (const a of res.body.created.flatMap((c: { attachments?: object[] }) => c.attachments ?? [])) {
      expect(Object.keys(a).sort()).toEqual(['contentId', 'contentType', 'id', 'isInline', 'name', 'size']);
    }
  });
});
