import { junkVerdict, senderKey } from '../../server/mailbox/junk';
import type { JunkSettings } from '../../server/mailbox/settings';

const lists = (safeSenders: string[], blockedSenders: string[]): JunkSettings => ({ safeSenders, blockedSenders });

describe('senderKey', () => {
  test('trims and lower-cases', () => {
    expect(senderKey('  Ann@Example.COM \t')).toBe('ann@example.com');
  });
});

describe('junkVerdict', () => {
  test('no lists, no sender, or no match: none', () => {
    expect(junkVerdict(lists([], []), 'ann@example.com')).toBe('none');
    expect(junkVerdict(lists(['example.com'], ['spam.example']), null)).toBe('none');
    expect(junkVerdict(lists(['example.com'], ['spam.example']), 'ann@other.example')).toBe('none');
    // A sender without a usable address matches nothing.
    expect(junkVerdict(lists(['example.com'], ['example.com']), 'not-an-address')).toBe('none');
  });

  test('an address entry matches that address only, whatever the case of either side', () => {
    expect(junkVerdict(lists([], ['spammer@example.com']), 'Spammer@Example.com')).toBe('blocked');
    expect(junkVerdict(lists([], ['spammer@example.com']), 'ann@example.com')).toBe('none');
    expect(junkVerdict(lists(['Friend@Example.com'], []), 'friend@example.com ')).toBe('safe');
  });

  test('a domain entry matches the domain and its subdomains, not look-alikes', () => {
    const junk = lists([], ['spam.example']);
    expect(junkVerdict(junk, 'a@spam.example')).toBe('blocked');
    expect(junkVerdict(junk, 'a@mail.spam.example')).toBe('blocked');
    expect(junkVerdict(junk, 'a@deep.mail.spam.example')).toBe('blocked');
    expect(junkVerdict(junk, 'a@notspam.example')).toBe('none');
    expect(junkVerdict(junk, 'a@spam.example.org')).toBe('none');
    // A domain entry written with a leading @, and a sender domain with a trailing dot, still match.
    expect(junkVerdict(lists(['@partner.example'], []), 'b@partner.example.')).toBe('safe');
  });

  test('an address entry beats a domain entry, both ways', () => {
    expect(junkVerdict(lists(['example.com'], ['spammer@example.com']), 'spammer@example.com')).toBe('blocked');
    expect(junkVerdict(lists(['example.com'], ['spammer@example.com']), 'ann@example.com')).toBe('safe');
    expect(junkVerdict(lists(['friend@spam.example'], ['spam.example']), 'friend@spam.example')).toBe('safe');
    expect(junkVerdict(lists(['friend@spam.example'], ['spam.example']), 'other@spam.example')).toBe('blocked');
  });

  test('between domains, the more specific one decides', () => {
    const junk = lists(['partner.example.com'], ['example.com']);
    expect(junkVerdict(junk, 'a@partner.example.com')).toBe('safe');
    expect(junkVerdict(junk, 'a@mx.partner.example.com')).toBe('safe');
    expect(junkVerdict(junk, 'a@example.com')).toBe('blocked');
    expect(junkVerdict(lists(['example.com'], ['ads.example.com']), 'a@ads.example.com')).toBe('blocked');
  });

  test('the same level on both lists: safe wins', () => {
    expect(junkVerdict(lists(['x@example.com'], ['x@example.com']), 'x@example.com')).toBe('safe');
    expect(junkVerdict(lists(['example.com'], ['example.com']), 'x@example.com')).toBe('safe');
  });
});
