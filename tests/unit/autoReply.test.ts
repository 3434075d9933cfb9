import { simpleParser } from 'mailparser';
import { autoReplyRefusal, autoReplySubject, autoReplyText, composeAutoReply, type AutoReplyCheck } from '../../server/mailbox/autoReply';
import { DEFAULT_SETTINGS, type AutomaticReplies } from '../../server/mailbox/settings';

const ME = 'alice@demo.pigeon.test';
const addr = (address: string, name = '') => ({ name, address });

/** A message a person sent to the mailbox: answerable unless a test changes something. */
function check(over: Partial<AutoReplyCheck> = {}): AutoReplyCheck {
  return { headers: {}, from: addr('ravi@fieldlab.example', 'Ravi'), to: [addr(ME)], cc: [], mailboxAddress: ME, ...over };
}

describe('autoReplyRefusal (RFC 3834 §2)', () => {
  test('a person writing to the mailbox in To or Cc may be answered', () => {
    expect(autoReplyRefusal(check())).toBeNull();
    expect(autoReplyRefusal(check({ to: [addr('greta@demo.pigeon.test')], cc: [addr('Alice@Demo.Pigeon.Test')] }))).toBeNull();
    // Headers that do not mean "automated" change nothing.
    expect(autoReplyRefusal(check({ headers: { 'auto-submitted': 'no', 'return-path': '<ravi@fieldlab.example>', 'x-auto-response-suppress': 'DR, NDR' } }))).toBeNull();
  });

  test('no sender', () => {
    expect(autoReplyRefusal(check({ from: null }))).toBe('noSender');
    expect(autoReplyRefusal(check({ from: addr('  ') }))).toBe('noSender');
  });

  test.each<Record<string, string>>([
    { 'auto-submitted': 'auto-replied' },
    { 'auto-submitted': 'auto-generated' },
    { 'auto-submitted': 'Auto-Notified; owner-email="x@y.example"' },
    { 'x-autoreply': 'yes' },
    { 'x-autorespond': 'yes' },
    { precedence: 'auto_reply' },
  ])('automatically submitted: %p', (headers) => {
    expect(autoReplyRefusal(check({ headers }))).toBe('autoSubmitted');
  });

  test.each(['bulk', 'list', 'junk', 'Bulk'])('Precedence: %s', (precedence) => {
    expect(autoReplyRefusal(check({ headers: { precedence } }))).toBe('precedence');
  });

  test.each(['list-id', 'list-unsubscribe', 'list-post'])('%s: mailing-list mail', (name) => {
    expect(autoReplyRefusal(check({ headers: { [name]: '<x.lists.example>' } }))).toBe('mailingList');
  });

  test.each(['All', 'OOF', 'AutoReply', 'DR, OOF', 'oof,autoreply'])('X-Auto-Response-Suppress: %s', (value) => {
    expect(autoReplyRefusal(check({ headers: { 'x-auto-response-suppress': value } }))).toBe('suppressed');
  });

  test('Return-Path <> (a bounce or report)', () => {
    expect(autoReplyRefusal(check({ headers: { 'return-path': '<>' } }))).toBe('nullReturnPath');
    expect(autoReplyRefusal(check({ headers: { 'return-path': ' < > ' } }))).toBe('nullReturnPath');
  });

  test('the mailbox itself', () => {
    expect(autoReplyRefusal(check({ from: addr('ALICE@demo.pigeon.test') }))).toBe('fromSelf');
  });

  test.each([
    'MAILER-DAEMON@mx.example',
    'mailer_daemon@mx.example',
    'postmaster@example.org',
    'listserv@lists.example',
    'majordomo@lists.example',
    'owner-eng@lists.example',
    'eng-request@lists.example',
    'eng-owner@lists.example',
    'eng-bounces@lists.example',
    'noreply@acme.example',
    'no-reply@acme.example',
    'do-not-reply@acme.example',
    'donotreply@acme.example',
    'no-reply-aws@amazon.example',
  ])('system sender %s', (address) => {
    expect(autoReplyRefusal(check({ from: addr(address) }))).toBe('systemSender');
  });

  test('a system return path refuses even when From looks personal', () => {
    expect(autoReplyRefusal(check({ headers: { 'return-path': '<eng-bounces+alice=demo.pigeon.test@lists.example>' } }))).toBe('systemSender');
  });

  test('people whose address merely resembles a system one are answered', () => {
    for (const address of ['owner@shop.example', 'requests.team@example.test', 'noreen@example.test', 'postman@example.test']) {
      expect(autoReplyRefusal(check({ from: addr(address) }))).toBeNull();
    }
  });

  test('the mailbox in neither To nor Cc (Bcc, alias, list expansion)', () => {
    expect(autoReplyRefusal(check({ to: [addr('team@demo.pigeon.test')] }))).toBe('notAddressed');
    expect(autoReplyRefusal(check({ to: [] }))).toBe('notAddressed');
  });
});

describe('autoReplyText', () => {
  const replies = (over: Partial<AutomaticReplies> = {}): AutomaticReplies => ({
    ...DEFAULT_SETTINGS.automaticReplies,
    status: 'alwaysEnabled',
    internalReply: 'Out until Monday. Dave covers.',
    externalReply: 'I am out of the office until Monday.',
    ...over,
  });

  test('internal senders get the internal reply, whatever the external audience', () => {
    for (const externalAudience of ['none', 'contactsOnly', 'all'] as const) {
      expect(autoReplyText(replies({ externalAudience }), { internal: true, senderIsContact: false })).toBe('Out until Monday. Dave covers.');
    }
  });

  test('external senders: all → everyone, contactsOnly → contacts only, none → nobody', () => {
    const external = 'I am out of the office until Monday.';
    expect(autoReplyText(replies({ externalAudience: 'all' }), { internal: false, senderIsContact: false })).toBe(external);
    expect(autoReplyText(replies({ externalAudience: 'contactsOnly' }), { internal: false, senderIsContact: true })).toBe(external);
    expect(autoReplyText(replies({ externalAudience: 'contactsOnly' }), { internal: false, senderIsContact: false })).toBeNull();
    expect(autoReplyText(replies({ externalAudience: 'none' }), { internal: false, senderIsContact: true })).toBeNull();
  });

  test('an empty or blank text sends nothing', () => {
    expect(autoReplyText(replies({ internalReply: '' }), { internal: true, senderIsContact: false })).toBeNull();
    expect(autoReplyText(replies({ externalReply: '  \n ' }), { internal: false, senderIsContact: true })).toBeNull();
  });
});

describe('composeAutoReply', () => {
  const base = {
    mailbox: addr(ME, 'Alice Andersen'),
    to: addr('ravi@fieldlab.example', 'Ravi Menon'),
    subject: 'Your talk on offline sync',
    inReplyTo: '<q1@fieldlab.example>',
    references: ['<root@fieldlab.example>'],
    text: 'I am out of the office until Monday.\nFor urgent matters: dave@demo.pigeon.test',
    hostname: 'mail.demo.pigeon.test',
    now: Date.UTC(2025, 11, 23, 9, 30, 0),
  };

  test('a threaded text/plain reply marked as automatic, parsed back', async () => {
    const { raw, internetMessageId } = await composeAutoReply(base);
    const mail = await simpleParser(raw);
    expect(mail.from?.value).toEqual([{ name: 'Alice Andersen', address: ME }]);
    expect(Array.isArray(mail.to) ? null : mail.to?.value).toEqual([{ name: 'Ravi Menon', address: 'ravi@fieldlab.example' }]);
    expect(mail.cc).toBeUndefined();
    expect(mail.subject).toBe('Automatic reply: Your talk on offline sync');
    expect(mail.inReplyTo).toBe('<q1@fieldlab.example>');
    expect(mail.references).toEqual(['<root@fieldlab.example>', '<q1@fieldlab.example>']);
    expect(mail.headers.get('auto-submitted')).toBe('auto-replied');
    expect(mail.headers.get('x-auto-response-suppress')).toBe('All');
    expect(mail.messageId).toBe(internetMessageId);
    expect(internetMessageId).toMatch(/^<[A-Za-z0-9_-]+@mail\.demo\.pigeon\.test>$/);
    expect(mail.date?.getTime()).toBe(base.now);
    expect(mail.html).toBe(false);
    expect(mail.text?.trim()).toBe(base.text);
    expect((mail.headers.get('content-type') as { value: string }).value).toBe('text/plain');
    // The exact header lines, as other responders will read them.
    const head = raw.toString('utf8').split('\r\n\r\n')[0]!;
    expect(head).toMatch(/^Auto-Submitted: auto-replied$/m);
    expect(head).toMatch(/^X-Auto-Response-Suppress: All$/m);
    expect(head).not.toMatch(/^Bcc:/im);
  });

  test('every reply gets a fresh Message-ID', async () => {
    const a = await composeAutoReply(base);
    const b = await composeAutoReply(base);
    expect(a.internetMessageId).not.toBe(b.internetMessageId);
    expect((await simpleParser(b.raw)).messageId).toBe(b.internetMessageId);
  });

  test('the subject prefix is not doubled, and an empty subject still says what it is', async () => {
    const again = await simpleParser((await composeAutoReply({ ...base, subject: 'Automatic reply: Your talk on offline sync' })).raw);
    expect(again.subject).toBe('Automatic reply: Your talk on offline sync');
    expect(autoReplySubject('AUTOMATIC REPLY: hi')).toBe('AUTOMATIC REPLY: hi');
    expect(autoReplySubject('Re: hi')).toBe('Automatic reply: Re: hi');
    expect(autoReplySubject('   ')).toBe('Automatic reply');
  });

  test('References keeps the original id once when the caller already included it; no parent → no In-Reply-To', async () => {
    const dup = await simpleParser((await composeAutoReply({ ...base, references: ['<root@fieldlab.example>', '<q1@fieldlab.example>'] })).raw);
    expect(dup.references).toEqual(['<root@fieldlab.example>', '<q1@fieldlab.example>']);
    const orphan = await simpleParser((await composeAutoReply({ ...base, inReplyTo: null, references: [] })).raw);
    expect(orphan.inReplyTo).toBeUndefined();
    expect(orphan.references).toBeUndefined();
    expect(orphan.headers.get('auto-submitted')).toBe('auto-replied');
  });
});
