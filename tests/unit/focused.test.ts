import fs from 'node:fs';
import path from 'node:path';
import { mboxMessages } from '../../server/content/mbox';
import { parseMessage, type ParsedMessage } from '../../server/content/mime';
import { classifyFocused, type FocusedSignals } from '../../server/mailbox/focused';

const ME = 'alice@demo.pigeon.test';
const person = (address: string, name = '') => ({ name, address });

/** A plain message from a stranger addressed to the mailbox: Focused as `person` unless a test changes something. */
function signals(over: Partial<FocusedSignals> = {}): FocusedSignals {
  return {
    from: person('ravi@fieldlab.example', 'Ravi'),
    headers: {},
    subject: 'A question',
    mailboxAddress: ME,
    to: [person(ME)],
    cc: [],
    senderIsColleague: false,
    senderIsContact: false,
    userWroteToSender: false,
    ...over,
  };
}

describe('classifyFocused: the rules in order', () => {
  test('a stranger writing to the mailbox in To is focused (person)', () => {
    expect(classifyFocused(signals())).toEqual({ classification: 'focused', reason: 'person' });
    // The address comparison ignores case and surrounding space.
    expect(classifyFocused(signals({ to: [person(' Alice@Demo.Pigeon.Test ')] })).reason).toBe('person');
  });

  test('Cc only, or not named at all (Bcc, undisclosed recipients, an alias), from a stranger is other (indirect)', () => {
    expect(classifyFocused(signals({ to: [person('greta@demo.pigeon.test')], cc: [person(ME)] }))).toEqual({ classification: 'other', reason: 'indirect' });
    expect(classifyFocused(signals({ to: [] }))).toEqual({ classification: 'other', reason: 'indirect' });
  });

  test('an override wins over every other signal, both ways', () => {
    const bulk = signals({ from: person('noreply@shop.example'), headers: { precedence: 'bulk', 'list-id': '<x.example>' }, override: 'focused' });
    expect(classifyFocused(bulk)).toEqual({ classification: 'focused', reason: 'override' });
    const colleague = signals({ senderIsColleague: true, override: 'other' });
    expect(classifyFocused(colleague)).toEqual({ classification: 'other', reason: 'override' });
  });

  test('colleague, contact and correspondent are focused even in Cc only or without the mailbox named', () => {
    const indirect = { to: [person('team@demo.pigeon.test')], cc: [] };
    expect(classifyFocused(signals({ ...indirect, senderIsColleague: true }))).toEqual({ classification: 'focused', reason: 'colleague' });
    expect(classifyFocused(signals({ ...indirect, senderIsContact: true }))).toEqual({ classification: 'focused', reason: 'contact' });
    expect(classifyFocused(signals({ ...indirect, userWroteToSender: true }))).toEqual({ classification: 'focused', reason: 'correspondent' });
    // The strongest relation names the reason.
    expect(classifyFocused(signals({ senderIsColleague: true, senderIsContact: true, userWroteToSender: true })).reason).toBe('colleague');
  });

  test('mail from the mailbox itself is focused (self)', () => {
    expect(classifyFocused(signals({ from: person('ALICE@demo.pigeon.test'), to: [person('carol@partner.test')] }))).toEqual({
      classification: 'focused',
      reason: 'self',
    });
  });

  test.each([
    ['Auto-Submitted: auto-replied', { 'auto-submitted': 'auto-replied' }],
    ['Auto-Submitted: auto-generated with parameters', { 'auto-submitted': 'Auto-Generated; owner-email="x@y.example"' }],
    ['X-Autoreply', { 'x-autoreply': 'yes' }],
    ['X-Autorespond', { 'x-autorespond': 'Out of office' }],
    ['Precedence: auto_reply', { precedence: 'auto_reply' }],
    ['Return-Path: <>', { 'return-path': '<>' }],
  ])('%s is other (automated), even from a colleague', (_name, headers) => {
    expect(classifyFocused(signals({ headers, senderIsColleague: true }))).toEqual({ classification: 'other', reason: 'automated' });
  });

  test('Auto-Submitted: no is a person\'s message', () => {
    expect(classifyFocused(signals({ headers: { 'auto-submitted': 'no' } })).reason).toBe('person');
    expect(classifyFocused(signals({ headers: { 'return-path': '<ravi@fieldlab.example>' } })).reason).toBe('person');
  });

  test.each([
    ['Precedence: bulk', { precedence: 'bulk' }],
    ['Precedence: junk', { precedence: 'Junk' }],
    ['Feedback-ID', { 'feedback-id': 'campaign-1:acme:esp' }],
    ['X-Campaign', { 'x-campaign': 'winter-sale' }],
  ])('%s is other (bulk), even from a contact', (_name, headers) => {
    expect(classifyFocused(signals({ headers, senderIsContact: true }))).toEqual({ classification: 'other', reason: 'bulk' });
  });

  test.each([
    'noreply@acme.example',
    'no-reply@receipts.ride.example',
    'No_Reply@x.example',
    'do-not-reply@bank.example',
    'donotreply@bank.example',
    'notifications@codehub.example',
    'notifications+abc123@codehub.example',
    'noreply-billing@acme.example',
    'alerts@monitor.example',
    'newsletter@weeklybyte.example',
    'news@vendor.example',
    'marketing@northwind.example',
    'MAILER-DAEMON@mx.example',
    'postmaster@mx.example',
    'bounces-4711@esp.example',
  ])('sender %s is other (notification), even when the user wrote to it', (address) => {
    expect(classifyFocused(signals({ from: person(address), userWroteToSender: true }))).toEqual({ classification: 'other', reason: 'notification' });
  });

  test('a person whose name merely contains a machine word is not a notification', () => {
    for (const address of ['newsom@example.test', 'alerta.maria@example.test', 'infoman@example.test', 'hrishikesh@example.test']) {
      expect(classifyFocused(signals({ from: person(address) })).reason).toBe('person');
    }
  });

  test.each([
    ['List-Id', { 'list-id': 'Engineering <eng.lists.example>' }],
    ['List-Post', { 'list-post': '<mailto:eng@lists.example>' }],
    ['List-Unsubscribe', { 'list-unsubscribe': '<https://x.example/u>' }],
    ['Precedence: list', { precedence: 'list' }],
  ])('%s from an unknown sender is other (list); from a colleague it stays focused', (_name, headers) => {
    expect(classifyFocused(signals({ headers }))).toEqual({ classification: 'other', reason: 'list' });
    expect(classifyFocused(signals({ headers, senderIsColleague: true }))).toEqual({ classification: 'focused', reason: 'colleague' });
  });

  test.each(['info@shop.example', 'billing@acme-cloud.example', 'support@vendor.example', 'bookings@travel.example', 'helpdesk@demo.pigeon.test', 'hr@demo.pigeon.test', 'events@vendor.example'])(
    'role account %s is other (role) unless the user knows it',
    (address) => {
      expect(classifyFocused(signals({ from: person(address) }))).toEqual({ classification: 'other', reason: 'role' });
      // A conversation with billing@ that the user started is a conversation.
      expect(classifyFocused(signals({ from: person(address), userWroteToSender: true }))).toEqual({ classification: 'focused', reason: 'correspondent' });
    },
  );

  test('no From at all: only the addressing decides', () => {
    expect(classifyFocused(signals({ from: null })).reason).toBe('person');
    expect(classifyFocused(signals({ from: null, to: [] })).reason).toBe('indirect');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The labelled corpus

const ROOT = path.resolve(__dirname, '../..');

interface MailboxContext {
  owner: string;
  tenant: string | null;
  contacts: string | null;
  sent: string[];
}
interface LabelledMessage {
  file?: string;
  index?: number;
  messageId: string | null;
  from: string;
  subject: string;
  label: 'focused' | 'other';
  kind: string;
}
interface LabelSource {
  files: string;
  mailbox: MailboxContext;
  messages: LabelledMessage[];
}

const read = (rel: string): Buffer => fs.readFileSync(path.join(ROOT, rel));
const lower = (s: string): string => s.trim().toLowerCase();

/** What delivery knows about senders of this mailbox: the tenant's users, the owner's contacts, whom the owner wrote to. */
async function mailboxKnowledge(ctx: MailboxContext) {
  const colleagues = new Set<string>();
  if (ctx.tenant) for (const u of JSON.parse(read(ctx.tenant).toString('utf8')).users as { email: string }[]) colleagues.add(lower(u.email));
  const contacts = new Set<string>();
  if (ctx.contacts) {
    for (const c of JSON.parse(read(ctx.contacts).toString('utf8')) as { emailAddresses: { address: string }[] }[]) {
      for (const e of c.emailAddresses) contacts.add(lower(e.address));
    }
  }
  const wroteTo = new Set<string>();
  for (const file of ctx.sent) {
    for (const raw of mboxMessages(read(file))) {
      const sent = await parseMessage(raw);
      if (!sent.from || lower(sent.from.address) !== lower(ctx.owner)) continue; // the owner's own messages only
      for (const a of [...sent.to, ...sent.cc]) wroteTo.add(lower(a.address));
    }
  }
  return { colleagues, contacts, wroteTo };
}

function signalsOf(p: ParsedMessage, ctx: MailboxContext, known: Awaited<ReturnType<typeof mailboxKnowledge>>): FocusedSignals {
  const sender = p.from ? lower(p.from.address) : '';
  return {
    from: p.from,
    headers: p.headers,
    subject: p.subject,
    mailboxAddress: ctx.owner,
    to: p.to,
    cc: p.cc,
    senderIsColleague: known.colleagues.has(sender),
    senderIsContact: known.contacts.has(sender),
    userWroteToSender: known.wroteTo.has(sender),
  };
}

describe('Focused Inbox against the hand-labelled corpus (fixtures/focused/labels.json)', () => {
  test('agreement with the labels is at least 90%', async () => {
    const doc = JSON.parse(read('fixtures/focused/labels.json').toString('utf8')) as { sources: LabelSource[] };
    const matrix = { focused: { focused: 0, other: 0 }, other: { focused: 0, other: 0 } }; // [label][classified]
    const perSource: string[] = [];
    const misses: string[] = [];
    const reasons: Record<string, number> = {};
    let n = 0;
    let agree = 0;

    for (const source of doc.sources) {
      const known = await mailboxKnowledge(source.mailbox);
      let raws: Buffer[];
      if (source.files.endsWith('*.eml')) {
        const dir = path.dirname(source.files);
        const onDisk = fs.readdirSync(path.join(ROOT, dir)).filter((f) => f.endsWith('.eml')).sort();
        // Every .eml of the folder is labelled, and only those.
        expect(source.messages.map((m) => m.file).sort()).toEqual(onDisk);
        raws = source.messages.map((m) => read(path.join(dir, m.file!)));
      } else {
        const all = mboxMessages(read(source.files));
        // Every message of the file is labelled exactly once, in file order.
        expect(source.messages.map((m) => m.index)).toEqual(all.map((_, i) => i));
        raws = all;
      }
      let sourceAgree = 0;
      for (const [i, label] of source.messages.entries()) {
        const parsed = await parseMessage(raws[i]!);
        // The label belongs to this very message.
        expect([parsed.internetMessageId, lower(parsed.from?.address ?? '')]).toEqual([label.messageId, label.from]);
        const decision = classifyFocused(signalsOf(parsed, source.mailbox, known));
        matrix[label.label][decision.classification]++;
        reasons[`${decision.classification}/${decision.reason}`] = (reasons[`${decision.classification}/${decision.reason}`] ?? 0) + 1;
        n++;
        if (decision.classification === label.label) {
          agree++;
          sourceAgree++;
        } else {
          misses.push(`${label.label} → ${decision.classification} (${decision.reason}): ${label.from} [${label.kind}]`);
        }
      }
      perSource.push(`  ${source.files}: ${sourceAgree}/${source.messages.length} (${((100 * sourceAgree) / source.messages.length).toFixed(1)}%)`);
    }

    const agreement = agree / n;
    const distinctMisses = [...new Set(misses)].map((m) => `  ${misses.filter((x) => x === m).length}× ${m}`);
    console.log(
      [
        `Focused Inbox agreement: n=${n}, agree=${agree} (${(100 * agreement).toFixed(1)}%)`,
        'confusion matrix (rows: label, columns: classified)',
        `               focused  other`,
        `  focused  ${String(matrix.focused.focused).padStart(9)} ${String(matrix.focused.other).padStart(6)}`,
        `  other    ${String(matrix.other.focused).padStart(9)} ${String(matrix.other.other).padStart(6)}`,
        'per source:',
        ...perSource,
        `reasons: ${JSON.stringify(reasons)}`,
        'disagreements:',
        ...distinctMisses,
      ].join('\n'),
    );
    // Both classes are present in the corpus and both are mostly recognised: a classifier answering one class
    // everywhere cannot pass.
    expect(matrix.focused.focused).toBeGreaterThan(0.9 * (matrix.focused.focused + matrix.focused.other));
    expect(matrix.other.other).toBeGreaterThan(0.8 * (matrix.other.focused + matrix.other.other));
    expect(agreement).toBeGreaterThanOrEqual(0.9);
  });
});
