import { computeConversationId, makePreview, normalizeSubject, parseMessage } from '../../server/content/mime';
import { mboxEntry, mboxMessages } from '../../server/content/mbox';

/** Hand-written messages: lines joined with CRLF, as on the wire. */
const msg = (...lines: string[]): Buffer => Buffer.from(lines.join('\r\n'), 'utf8');

describe('parseMessage', () => {
  test('decodes RFC 2047 subjects and display names (B and Q, UTF-8 and Latin-1, split words)', async () => {
    const p = await parseMessage(
      msg(
        'From: =?ISO-8859-1?Q?J=FCrgen_M=FCller?= <juergen@beispiel.example>',
        'To: =?UTF-8?B?5bGx55SwIOWkqumDjg==?= <taro@sakura.example>, "Zoë" <zoe@example.test>',
        'Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_=F0=9F=8E=89_?=',
        ' =?UTF-8?B?5Lya6K2w44Gu6K2w5LqL6Yyy?=',
        'Date: Wed, 31 Dec 2025 11:00:00 +0100',
        'Message-ID: <a1@beispiel.example>',
        '',
        'Hallo',
        '',
      ),
    );
    expect(p.subject).toBe('Grüße 🎉 会議の議事録');
    expect(p.from).toEqual({ name: 'Jürgen Müller', address: 'juergen@beispiel.example' });
    expect(p.to).toEqual([
      { name: '山田 太郎', address: 'taro@sakura.example' },
      { name: 'Zoë', address: 'zoe@example.test' },
    ]);
    expect(p.sentAt).toBe(Date.UTC(2025, 11, 31, 10, 0, 0));
    expect(p.internetMessageId).toBe('<a1@beispiel.example>');
    expect(p.bodyText?.trim()).toBe('Hallo');
    expect(p.bodyHtml).toBeNull();
  });

  test('multipart/alternative keeps both bodies; the preview comes from the text part', async () => {
    const p = await parseMessage(
      msg(
        'From: a@example.test',
        'To: b@example.test',
        'Subject: alt',
        'MIME-Version: 1.0',
        'Content-Type: multipart/alternative; boundary="XX"',
        '',
        '--XX',
        'Content-Type: text/plain; charset=utf-8',
        'Content-Transfer-Encoding: quoted-printable',
        '',
        'Plain   text=0Awith =C3=BCmlaut',
        '--XX',
        'Content-Type: text/html; charset=utf-8',
        '',
        '<p>HTML <b>body</b></p>',
        '--XX--',
        '',
      ),
    );
    expect(p.bodyText).toContain('Plain   text\nwith ümlaut');
    expect(p.bodyHtml).toContain('<p>HTML <b>body</b></p>');
    expect(p.preview).toBe('Plain text with ümlaut');
    expect(p.attachments).toEqual([]);
  });

  test('an HTML-only message has no text body and a preview stripped of tags, styles and entities', async () => {
    const p = await parseMessage(
      msg(
        'From: a@example.test',
        'Subject: html only',
        'Content-Type: text/html; charset=utf-8',
        '',
        '<html><head><style>p { color: red }</style></head><body><p>Fish &amp; chips</p><div>caf&eacute;&#233; &#x263A;</div></body></html>',
        '',
      ),
    );
    expect(p.bodyText).toBeNull();
    expect(p.bodyHtml).toContain('<p>Fish &amp; chips</p>');
    // &eacute; is not one of the entities decoded: it stays readable as-is rather than turning into garbage.
    expect(p.preview).toBe('Fish & chips caf&eacute;é ☺');
  });

  test('attachments: a real one and an inline image with a Content-ID (cid: links kept)', async () => {
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
    const pdf = Buffer.from('%PDF-1.4\n%%EOF\n');
    const p = await parseMessage(
      msg(
        'From: Sender <s@example.test>',
        'To: r@example.test',
        'Subject: files',
        'MIME-Version: 1.0',
        'Content-Type: multipart/mixed; boundary="M"',
        '',
        '--M',
        'Content-Type: multipart/related; boundary="R"',
        '',
        '--R',
        'Content-Type: text/html; charset=utf-8',
        '',
        '<p><img src="cid:logo@example.test"></p>',
        '--R',
        'Content-Type: image/png; name=logo.png',
        'Content-ID: <logo@example.test>',
        'Content-Disposition: inline; filename=logo.png',
        'Content-Transfer-Encoding: base64',
        '',
        png.toString('base64'),
        '--R--',
        '--M',
        'Content-Type: application/pdf',
        'Content-Disposition: attachment; filename*=UTF-8\'\'Rechnung%20M%C3%A4rz.pdf',
        'Content-Transfer-Encoding: base64',
        '',
        pdf.toString('base64'),
        '--M',
        'Content-Type: application/octet-stream',
        'Content-Transfer-Encoding: base64',
        '',
        Buffer.from('xyz').toString('base64'),
        '--M--',
        '',
      ),
    );
    expect(p.bodyHtml).toContain('src="cid:logo@example.test"');
    expect(p.attachments).toHaveLength(3);
    const [logo, invoice, unnamed] = p.attachments;
    expect(logo).toMatchObject({ name: 'logo.png', contentType: 'image/png', isInline: true, contentId: 'logo@example.test' });
    expect(logo!.content.equals(png)).toBe(true);
    expect(invoice).toMatchObject({ name: 'Rechnung März.pdf', contentType: 'application/pdf', isInline: false, contentId: null });
    expect(invoice!.content.equals(pdf)).toBe(true);
    expect(unnamed).toMatchObject({ name: 'attachment', isInline: false, contentId: null });
    expect(unnamed!.content.toString()).toBe('xyz');
  });

  test('a message with almost no headers parses to empty values, and an unreadable Date is null (not "now")', async () => {
    const p = await parseMessage(msg('X-Other: 1', 'Date: not a date', '', 'just a body', ''));
    expect(p).toMatchObject({
      subject: '',
      from: null,
      to: [],
      cc: [],
      replyTo: [],
      sentAt: null,
      internetMessageId: null,
      references: [],
      inReplyTo: null,
      importance: 'normal',
      bodyHtml: null,
      preview: 'just a body',
    });
  });

  test('group addresses are flattened and empty groups contribute nothing', async () => {
    const p = await parseMessage(
      msg(
        'From: a@example.test',
        'To: Team: x@example.test, "Why" <y@example.test>;, z@example.test',
        'Cc: undisclosed-recipients:;',
        'Reply-To: Help <help@example.test>',
        '',
        'x',
      ),
    );
    expect(p.to.map((a) => a.address)).toEqual(['x@example.test', 'y@example.test', 'z@example.test']);
    expect(p.cc).toEqual([]);
    expect(p.replyTo).toEqual([{ name: 'Help', address: 'help@example.test' }]);
  });

  test.each([
    [['Importance: high'], 'high'],
    [['Importance: Low'], 'low'],
    [['X-Priority: 1 (Highest)'], 'high'],
    [['X-Priority: 5'], 'low'],
    [['X-Priority: 3 (Normal)'], 'normal'],
    [['X-Priority: 1', 'Importance: low'], 'low'],
    [[], 'normal'],
  ])('importance from %j is %s', async (headers, expected) => {
    const p = await parseMessage(msg('From: a@example.test', ...headers, '', 'x'));
    expect(p.importance).toBe(expected);
  });

  test('references and in-reply-to are lists of <ids>', async () => {
    const p = await parseMessage(
      msg(
        'Message-ID: <c@x.test>',
        'In-Reply-To: <b@x.test> (comment) <z@x.test>',
        'References: <a@x.test>',
        ' <b@x.test>',
        '',
        'x',
      ),
    );
    expect(p.references).toEqual(['<a@x.test>', '<b@x.test>']);
    expect(p.inReplyTo).toBe('<b@x.test>');
  });

  test('the preview collapses whitespace, stops at 256 units and never splits a surrogate pair', () => {
    expect(makePreview('  a \n\t b  ')).toBe('a b');
    const long = 'x'.repeat(255) + '😀' + 'tail';
    const preview = makePreview(long);
    expect(preview).toBe('x'.repeat(255));
    expect(makePreview('y'.repeat(300))).toHaveLength(256);
  });
});

describe('computeConversationId', () => {
  const root = msg('Message-ID: <root@x.test>', 'Subject: Plan', '', 'x');
  const reply = msg('Message-ID: <r2@x.test>', 'In-Reply-To: <r1@x.test>', 'References: <root@x.test> <r1@x.test>', 'Subject: Re: Plan', '', 'x');
  const shallow = msg('Message-ID: <r1@x.test>', 'In-Reply-To: <root@x.test>', 'Subject: AW: Plan', '', 'x');
  const other = msg('Message-ID: <other@x.test>', 'Subject: Plan', '', 'x');

  test('a reply (References or only In-Reply-To) shares its root’s id; an unrelated message with the same subject does not', async () => {
    const [a, b, c, d] = await Promise.all([root, reply, shallow, other].map((m) => parseMessage(m)));
    const id = computeConversationId(a!);
    expect(id).toMatch(/^[0-9a-f]{24}$/);
    expect(computeConversationId(b!)).toBe(id);
    expect(computeConversationId(c!)).toBe(id);
    expect(computeConversationId(d!)).not.toBe(id);
  });

  test('without any Message-ID the normalised subject decides', async () => {
    const [a, b, c] = await Promise.all(
      ['Subject: Re: AW: Fwd:  Hello   World', 'Subject: hello world', 'Subject: Hello there'].map((h) => parseMessage(msg(h, '', 'x'))),
    );
    expect(computeConversationId(a!)).toBe(computeConversationId(b!));
    expect(computeConversationId(a!)).not.toBe(computeConversationId(c!));
  });

  test('normalizeSubject strips repeated reply/forward prefixes in several languages', () => {
    expect(normalizeSubject('RE: re: AW: WG: Fwd: FW:  Budget  2026 ')).toBe('budget 2026');
    expect(normalizeSubject('RE : TR : Réunion')).toBe('réunion');
    expect(normalizeSubject('Re[2]: Status')).toBe('status');
    expect(normalizeSubject('Regarding: Status')).toBe('regarding: status');
  });
});

describe('mbox (mboxrd)', () => {
  const file = Buffer.from(
    [
      'From alice@example.test Thu Jan  1 00:00:00 2026',
      'Subject: one',
      '',
      '>From the top',
      '>>From twice quoted',
      '> From is not quoting',
      '',
      'From bob@example.test Thu Jan  1 00:01:00 2026',
      'Subject: two',
      '',
      'last line',
      '',
      '',
    ].join('\n'),
    'latin1',
  );

  test('splits on From_ lines, un-quotes one ">" and returns CRLF messages without the separator blank line', () => {
    const [one, two, ...rest] = mboxMessages(file);
    expect(rest).toHaveLength(0);
    expect(one!.toString('latin1')).toBe('Subject: one\r\n\r\nFrom the top\r\n>From twice quoted\r\n> From is not quoting\r\n');
    expect(two!.toString('latin1')).toBe('Subject: two\r\n\r\nlast line\r\n');
  });

  test('mboxEntry and mboxMessages round-trip bytes, including 8-bit bytes and a trailing empty line', () => {
    const a = Buffer.concat([Buffer.from('Subject: x\r\n\r\nFrom here\r\n>From there\r\n'), Buffer.from([0xc3, 0xbc, 0x0d, 0x0a, 0x0d, 0x0a])]);
    const b = Buffer.from('Subject: y\r\n\r\nbody\r\n');
    const date = new Date(Date.UTC(2026, 0, 1));
    const box = Buffer.concat([mboxEntry(a, 'a@x.test', date), mboxEntry(b, 'b@x.test', date)]);
    expect(box.toString('latin1')).toContain('\n>From here\n>>From there\n');
    expect(box.toString('latin1').startsWith('From a@x.test Thu Jan  1 00:00:00 2026\n')).toBe(true);
    const out = mboxMessages(box);
    expect(out).toHaveLength(2);
    expect(out[0]!.equals(a)).toBe(true);
    expect(out[1]!.equals(b)).toBe(true);
  });

  test('refuses a file that is not an mbox, accepts an empty one', () => {
    expect(() => mboxMessages(Buffer.from('Subject: hi\n\nbody\n'))).toThrow(/not an mbox/);
    expect(mboxMessages(Buffer.alloc(0))).toEqual([]);
  });
});
