/**
 * Sensitivity labels: Microsoft's msip_labels header (as Exchange Online writes it: folded, several tenants' labels,
 * attributes in either of the orders seen in the wild), the label policy of a send, and content marking.
 */
import MailComposer from 'nodemailer/lib/mail-composer';
import { simpleParser } from 'mailparser';
import { ApiError } from '../../server/errors';
import { compileProtection, parseProtectionDocument, type CompiledProtection, type LabelPolicy } from '../../server/protection/config';
import { applyContentMarking, decideSendLabel, formatMsipLabels, messageLabel, parseMsipLabels, tenantSiteId } from '../../server/protection/labels';

const GENERAL = '6e1f2a3b-4c5d-4e6f-8a7b-9c0d1e2f3a4b';
const CONFIDENTIAL = '7f2a3b4c-5d6e-4f70-9b8c-0d1e2f3a4b5c';
const SECRET = '803b4c5d-6e7f-4081-ac9d-1e2f3a4b5c6d';
const SITE = '91a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6b';
const OTHER_SITE = 'a2b3c4d5-e6f7-4809-8b1c-2d3e4f5a6b7c';

describe('parseMsipLabels', () => {
  // The shape Exchange Online writes: `;` and a fold after each piece, a space left before one fold, and a fold in
  // the middle of the label name.
  const folded =
    `MSIP_Label_${CONFIDENTIAL}_Enabled=true;\r\n` +
    ` MSIP_Label_${CONFIDENTIAL}_SetDate=2026-11-02T10:15:00Z; \r\n` +
    ` MSIP_Label_${CONFIDENTIAL}_Method=Standard;\r\n` +
    ` MSIP_Label_${CONFIDENTIAL}_Name=Confidential Finance\r\n` +
    ` Only;\r\n` +
    ` MSIP_Label_${CONFIDENTIAL}_SiteId=${SITE.toUpperCase()};\r\n` +
    ` MSIP_Label_${CONFIDENTIAL}_ActionId=0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d;\r\n` +
    ` MSIP_Label_${CONFIDENTIAL}_ContentBits=1`;

  test('a folded header as Exchange writes it', () => {
    expect(parseMsipLabels(folded)).toEqual([
      { id: CONFIDENTIAL, name: 'Confidential Finance Only', enabled: true, setDate: '2026-11-02T10:15:00Z', method: 'Standard', siteId: SITE },
    ]);
    // The same header already unfolded (what a header lookup that unfolds gives), or folded with bare LF.
    expect(parseMsipLabels(folded.replace(/\r\n(?=[ \t])/g, ''))).toEqual(parseMsipLabels(folded));
    expect(parseMsipLabels(folded.replace(/\r\n/g, '\n'))).toEqual(parseMsipLabels(folded));
  });

  test('attributes in alphabetical order, without spaces, with an upper-case label GUID', () => {
    const value = [
      `MSIP_Label_${GENERAL.toUpperCase()}_ActionId=1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e`,
      `MSIP_Label_${GENERAL.toUpperCase()}_ContentBits=0`,
      `MSIP_Label_${GENERAL.toUpperCase()}_Enabled=True`,
      `MSIP_Label_${GENERAL.toUpperCase()}_Method=Privileged`,
      `MSIP_Label_${GENERAL.toUpperCase()}_Name=Public-AIP\r\n 2.0`,
      `MSIP_Label_${GENERAL.toUpperCase()}_SetDate=2023-06-12T15:39:27Z`,
      `MSIP_Label_${GENERAL.toUpperCase()}_SiteId=${SITE}`,
    ].join(';');
    expect(parseMsipLabels(value)).toEqual([{ id: GENERAL, name: 'Public-AIP 2.0', enabled: true, setDate: '2023-06-12T15:39:27Z', method: 'Privileged', siteId: SITE }]);
  });

  test('several tenants\' labels, one disabled: all are read, the message label is the first enabled one', () => {
    const value =
      `MSIP_Label_${SECRET}_Enabled=false; MSIP_Label_${SECRET}_Name=Secret; MSIP_Label_${SECRET}_SiteId=${OTHER_SITE};\r\n` +
      ` MSIP_Label_${GENERAL}_Enabled=true; MSIP_Label_${GENERAL}_Name=General; MSIP_Label_${GENERAL}_SiteId=${SITE};\r\n` +
      ` MSIP_Label_${CONFIDENTIAL}_Enabled=true; MSIP_Label_${CONFIDENTIAL}_Name=Confidential`;
    const labels = parseMsipLabels(value);
    expect(labels.map((l) => [l.id, l.enabled, l.name])).toEqual([
      [SECRET, false, 'Secret'],
      [GENERAL, true, 'General'],
      [CONFIDENTIAL, true, 'Confidential'],
    ]);
    expect(labels[2]).toMatchObject({ setDate: null, method: null, siteId: null });
    expect(messageLabel(value)?.id).toBe(GENERAL);
  });

  test('a header whose only label is disabled carries no label', () => {
    const value = `MSIP_Label_${SECRET}_Enabled=false; MSIP_Label_${SECRET}_Name=Secret`;
    expect(parseMsipLabels(value)).toHaveLength(1);
    expect(messageLabel(value)).toBeUndefined();
    expect(messageLabel(undefined)).toBeUndefined();
  });

  test('junk is skipped, never thrown', () => {
    const value = [
      'garbage',
      '=',
      '',
      `MSIP_Label_not-a-guid_Enabled=true`,
      `MSIP_Label_${SECRET}_Name=Orphan`, // no Enabled: not a label
      `msip_label_${GENERAL}_enabled=TRUE`, // a gateway lower-cased it
      `MSIP_Label_${GENERAL}_Name=General=Public`, // `=` belongs to the value
      `MSIP_Label_${GENERAL}_Name=Second name`, // the first one wins
      `MSIP_Label_${GENERAL}_Method=`,
      `MSIP_Label_${CONFIDENTIAL}_Enabled=yes`, // not `true`
      `X-Other=1`,
    ].join('; ');
    expect(parseMsipLabels(value)).toEqual([
      { id: GENERAL, name: 'General=Public', enabled: true, setDate: null, method: null, siteId: null },
      { id: CONFIDENTIAL, name: null, enabled: false, setDate: null, method: null, siteId: null },
    ]);
    for (const nothing of ['', ';;;', 'MSIP_Label_', '\r\n \r\n', 'x'.repeat(100_000)]) expect(parseMsipLabels(nothing)).toEqual([]);
    expect(parseMsipLabels(undefined as unknown as string)).toEqual([]);
    expect(parseMsipLabels(42 as unknown as string)).toEqual([]);
  });
});

describe('formatMsipLabels', () => {
  const opts = { siteId: SITE, setAt: Date.UTC(2026, 10, 2, 10, 15, 0, 678), method: 'Standard' as const, actionId: '0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d', contentBits: 0 };

  test('the fields in Microsoft\'s order, SetDate to the second', () => {
    const value = formatMsipLabels({ id: CONFIDENTIAL.toUpperCase(), name: 'Confidential' }, opts);
    const p = `MSIP_Label_${CONFIDENTIAL}_`;
    expect(value).toBe(
      `${p}Enabled=true; ${p}SetDate=2026-11-02T10:15:00Z; ${p}Method=Standard; ${p}Name=Confidential; ` +
        `${p}SiteId=${SITE}; ${p}ActionId=0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d; ${p}ContentBits=0`,
    );
  });

  test('round trip through parseMsipLabels', () => {
    const value = formatMsipLabels({ id: SECRET, name: 'Highly Confidential - All Staff' }, { ...opts, method: 'Privileged', contentBits: 3 });
    expect(parseMsipLabels(value)).toEqual([
      { id: SECRET, name: 'Highly Confidential - All Staff', enabled: true, setDate: '2026-11-02T10:15:00Z', method: 'Privileged', siteId: SITE },
    ]);
  });

  test('round trip through a real message: nodemailer folds it, mailparser reads it back', async () => {
    const value = formatMsipLabels({ id: SECRET, name: 'Highly Confidential - Project Blue Whale Mergers' }, opts);
    const raw = await new MailComposer({ from: 'a@contoso.example', to: 'b@contoso.example', subject: 's', text: 'body', headers: { msip_labels: value } })
      .compile()
      .build();
    const head = raw.toString('latin1').split('\r\n\r\n')[0]!;
    expect(head).toMatch(/^msip_labels: MSIP_Label_/im);
    expect(head.split('\r\n').every((line) => line.length <= 998)).toBe(true);
    const parsed = await simpleParser(raw);
    const header = parsed.headers.get('msip_labels');
    expect(typeof header).toBe('string');
    expect(messageLabel(header as string)).toEqual(parseMsipLabels(value)[0]);
    // Folded as it sits in the raw header block, it reads the same too.
    const rawValue = /^msip_labels: ([\s\S]*?)\r\n(?![ \t])/im.exec(head + '\r\n')![1]!;
    expect(parseMsipLabels(rawValue)).toEqual(parseMsipLabels(value));
  });

  test('refuses what the header cannot carry', () => {
    expect(() => formatMsipLabels({ id: 'general', name: 'General' }, opts)).toThrow(/label id/);
    expect(() => formatMsipLabels({ id: GENERAL, name: 'A; B' }, opts)).toThrow(/name/);
    expect(() => formatMsipLabels({ id: GENERAL, name: 'A\r\nB' }, opts)).toThrow(/name/);
    expect(() => formatMsipLabels({ id: GENERAL, name: 'General' }, { ...opts, siteId: 'tenant-a' })).toThrow(/site id/);
    expect(() => formatMsipLabels({ id: GENERAL, name: 'General' }, { ...opts, contentBits: 1.5 })).toThrow(/contentBits/);
    expect(() => formatMsipLabels({ id: GENERAL, name: 'General' }, { ...opts, setAt: NaN })).toThrow(/setAt/);
  });
});

describe('tenantSiteId', () => {
  test('a name-based (version 5) UUID of the tenant id', () => {
    // Expected values computed with Python's uuid.uuid5 (an independent implementation) in Pigeon's namespace
    // 23920914-a33c-4778-8434-175684ef34c8.
    expect(tenantSiteId('tenant-a')).toBe('f10d8e98-c27c-50e5-90a4-0166a75f19ca');
    expect(tenantSiteId('default')).toBe('ab9db35b-05ce-5163-81b2-1c47c9deb248');
    expect(tenantSiteId('Zürich AG')).toBe('10503465-7cab-580c-9ac2-0cad9d936a47');
  });

  test('stable, distinct per tenant, and a GUID the header accepts', () => {
    expect(tenantSiteId('t1')).toBe(tenantSiteId('t1'));
    expect(tenantSiteId('t1')).not.toBe(tenantSiteId('T1'));
    expect(tenantSiteId('t1')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const value = formatMsipLabels({ id: GENERAL, name: 'General' }, { siteId: tenantSiteId('t1'), setAt: 0, method: 'Standard', actionId: GENERAL, contentBits: 0 });
    expect(messageLabel(value)?.siteId).toBe(tenantSiteId('t1'));
  });
});

describe('decideSendLabel', () => {
  function catalogue(policy: Partial<LabelPolicy> = {}): CompiledProtection {
    return compileProtection(
      parseProtectionDocument({
        labels: [
          { id: GENERAL, name: 'General', priority: 0, colour: '#00A000' },
          { id: CONFIDENTIAL, name: 'Confidential', priority: 10, colour: '#FFA500' },
          { id: SECRET, name: 'Secret', priority: 20, colour: '#C00000', protectionTemplate: 'do-not-forward' },
        ],
        labelPolicy: policy,
      }),
    );
  }
  const decide = (c: CompiledProtection, input: { requested?: string | null; justification?: string | null; originalLabelId?: string | null }) =>
    decideSendLabel({ policy: c.doc.labelPolicy, catalogue: c, requested: input.requested, justification: input.justification, originalLabelId: input.originalLabelId ?? null });
  const ids = (r: ReturnType<typeof decideSendLabel>) => [r.label?.id ?? null, r.downgradedFrom?.id ?? null];

  function problem(run: () => unknown): ApiError {
    try {
      run();
    } catch (err) {
      expect(err).toBeInstanceOf(ApiError);
      return err as ApiError;
    }
    throw new Error('no error');
  }

  test('the requested label, in any case', () => {
    expect(ids(decide(catalogue(), { requested: SECRET.toUpperCase() }))).toEqual([SECRET, null]);
  });

  test('nothing requested: the default label; none without a default', () => {
    expect(ids(decide(catalogue({ defaultLabel: CONFIDENTIAL }), {}))).toEqual([CONFIDENTIAL, null]);
    expect(ids(decide(catalogue(), {}))).toEqual([null, null]);
    // `null` asks for no label, default or not (labelling is not mandatory here).
    expect(ids(decide(catalogue({ defaultLabel: CONFIDENTIAL }), { requested: null }))).toEqual([null, null]);
  });

  test('nothing requested on a reply: the answered message\'s label is kept, even under a lower default', () => {
    const c = catalogue({ defaultLabel: GENERAL, justifyDowngrade: true });
    expect(ids(decide(c, { originalLabelId: SECRET }))).toEqual([SECRET, null]);
    // Another tenant's label (unknown here) is not kept: the default applies.
    expect(ids(decide(c, { originalLabelId: OTHER_SITE }))).toEqual([GENERAL, null]);
  });

  test('mandatory labelling refuses a send without a label, with reason mandatory', () => {
    const c = catalogue({ mandatory: true });
    for (const requested of [undefined, null]) {
      const err = problem(() => decide(c, { requested }));
      expect([err.status, err.code, err.extra.reason]).toEqual([400, 'labelRequired', 'mandatory']);
    }
    // With a default, nothing requested is fine; asking for none is not.
    const withDefault = catalogue({ mandatory: true, defaultLabel: GENERAL });
    expect(ids(decide(withDefault, {}))).toEqual([GENERAL, null]);
    expect(problem(() => decide(withDefault, { requested: null })).extra.reason).toBe('mandatory');
  });

  test('a lower label than the answered message\'s needs a justification under justifyDowngrade', () => {
    const c = catalogue({ justifyDowngrade: true });
    for (const justification of [undefined, null, '', '   ']) {
      const err = problem(() => decide(c, { requested: GENERAL, originalLabelId: SECRET, justification }));
      expect([err.status, err.code, err.extra.reason]).toEqual([400, 'labelRequired', 'justificationRequired']);
    }
    expect(ids(decide(c, { requested: GENERAL, originalLabelId: SECRET, justification: 'Sharing the public summary' }))).toEqual([GENERAL, SECRET]);
    // Removing the label from a labelled message is a downgrade too.
    expect(problem(() => decide(c, { requested: null, originalLabelId: CONFIDENTIAL })).extra.reason).toBe('justificationRequired');
    expect(ids(decide(c, { requested: null, originalLabelId: CONFIDENTIAL, justification: 'not sensitive' }))).toEqual([null, CONFIDENTIAL]);
  });

  test('a downgrade without justifyDowngrade goes through and is still reported', () => {
    expect(ids(decide(catalogue(), { requested: GENERAL, originalLabelId: SECRET }))).toEqual([GENERAL, SECRET]);
  });

  test('the same label or a higher one is no downgrade', () => {
    const c = catalogue({ justifyDowngrade: true });
    expect(ids(decide(c, { requested: SECRET, originalLabelId: GENERAL }))).toEqual([SECRET, null]);
    expect(ids(decide(c, { requested: CONFIDENTIAL, originalLabelId: CONFIDENTIAL.toUpperCase() }))).toEqual([CONFIDENTIAL, null]);
    // A label the catalogue does not know on the original cannot be compared: no downgrade.
    expect(ids(decide(c, { requested: GENERAL, originalLabelId: OTHER_SITE }))).toEqual([GENERAL, null]);
  });

  test('an unknown label id is a 400 on the field label', () => {
    for (const requested of [OTHER_SITE, 'General', '']) {
      const err = problem(() => decide(catalogue(), { requested }));
      expect([err.status, err.code, err.extra.errors]).toEqual([400, 'invalidRequest', [{ field: 'label', message: 'unknown label' }]]);
    }
  });
});

describe('applyContentMarking', () => {
  test('text: a header line above, a footer line below, in the body\'s own line endings', () => {
    expect(applyContentMarking({ contentType: 'text', content: 'Hello\nBye' }, { header: 'CONFIDENTIAL', footer: 'Internal use only' })).toEqual({
      contentType: 'text',
      content: 'CONFIDENTIAL\n\nHello\nBye\n\nInternal use only\n',
    });
    expect(applyContentMarking({ contentType: 'text', content: 'Hello\r\n' }, { header: null, footer: 'F' }).content).toBe('Hello\r\n\r\nF\r\n');
    expect(applyContentMarking({ contentType: 'text', content: 'Hello' }, { header: 'H', footer: null }).content).toBe('H\n\nHello');
  });

  test('html: escaped paragraphs, inside <body> when the body is a document', () => {
    const marked = applyContentMarking({ contentType: 'html', content: '<div>Hi</div>' }, { header: 'R&D <secret> "A" \'B\'', footer: 'Footer</p><script>x</script>' });
    expect(marked).toEqual({
      contentType: 'html',
      content: '<p>R&amp;D &lt;secret&gt; &quot;A&quot; &#39;B&#39;</p><div>Hi</div><p>Footer&lt;/p&gt;&lt;script&gt;x&lt;/script&gt;</p>',
    });
    const doc = '<html><head><title>t</title></head><BODY class="x"><p>Hi</p></BODY></html>';
    expect(applyContentMarking({ contentType: 'html', content: doc }, { header: 'H', footer: 'F' }).content).toBe(
      '<html><head><title>t</title></head><BODY class="x"><p>H</p><p>Hi</p><p>F</p></BODY></html>',
    );
  });

  test('unchanged without a marking', () => {
    const body = { contentType: 'html' as const, content: '<p>x</p>' };
    expect(applyContentMarking(body, { header: null, footer: null })).toEqual(body);
    expect(applyContentMarking({ contentType: 'text', content: 'x' }, { header: null, footer: null })).toEqual({ contentType: 'text', content: 'x' });
  });
});
