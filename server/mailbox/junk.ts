/**
 * The junk verdict of a sender against the user's safe and blocked lists (settings `junk`). Delivery files `blocked`
 * mail in Junk Email, and `safe` mail is never treated as junk; `none` leaves the decision to the other rules.
 *
 * An entry is an address (`ann@example.com`) or a domain (`example.com`, which also covers `mail.example.com`). When
 * entries of both lists match, the most specific match decides: an address beats any domain, and a longer domain
 * beats a shorter one (`partner.example.com` safe, `example.com` blocked → a `partner.example.com` sender is safe).
 * When the two lists match equally specifically (the same address or domain on both, which the settings API does not
 * produce but an older document might), safe wins: wrongly junking a wanted message costs the user more than seeing
 * one unwanted message, and "not junk" is the user's most recent kind of correction.
 */
import type { JunkSettings } from './settings';

export type JunkVerdict = 'safe' | 'blocked' | 'none';

/** The form senders and list entries are compared in: trimmed and lower-cased. */
export function senderKey(address: string): string {
  return address.trim().toLowerCase();
}

/** How specifically `entry` matches `sender`: 0 = not at all, a domain's label count, or Infinity for the address. */
function matchStrength(entry: string, sender: string, domain: string): number {
  const e = senderKey(entry).replace(/^@/, '').replace(/\.$/, '');
  if (e === '') return 0;
  if (e.includes('@')) return e === sender ? Number.POSITIVE_INFINITY : 0;
  if (domain === e || domain.endsWith(`.${e}`)) return e.split('.').length;
  return 0;
}

function strongest(entries: readonly string[], sender: string, domain: string): number {
  let best = 0;
  for (const entry of entries) best = Math.max(best, matchStrength(entry, sender, domain));
  return best;
}

export function junkVerdict(junk: JunkSettings, fromAddress: string | null): JunkVerdict {
  if (fromAddress === null) return 'none';
  const key = senderKey(fromAddress);
  const at = key.lastIndexOf('@');
  if (at <= 0 || at === key.length - 1) return 'none';
  // A fully qualified domain's trailing dot (`example.com.`) names the same domain.
  const domain = key.slice(at + 1).replace(/\.$/, '');
  const sender = `${key.slice(0, at)}@${domain}`;
  const safe = strongest(junk.safeSenders, sender, domain);
  const blocked = strongest(junk.blockedSenders, sender, domain);
  if (safe === 0 && blocked === 0) return 'none';
  return safe >= blocked ? 'safe' : 'blocked';
}
