/**
 * Full-text search documents and queries, built here rather than by PostgreSQL's text parser.
 *
 * The SQLite store searches with FTS5's `unicode61 remove_diacritics 2` tokenizer: a word is a run of letters, digits
 * and private-use characters, case-folded, diacritics removed; everything else separates words (so
 * `alice@example.com` is three words, `don't` two). PostgreSQL's parser has its own ideas (an address or a host name
 * is one token, hyphenated words are kept whole as well as split) and depends on the database's locale, so the
 * store cuts words the unicode61 way itself and hands PostgreSQL the finished `tsvector` and `tsquery` (cast from
 * their text forms, which only parse quoting): a message matches the same words on both backends, whatever the
 * database's locale or text-search configuration. A query is the `simple` configuration's behaviour exactly: every
 * word must match, the last one as a prefix (`'term':*`); a quoted multi-word term is a phrase (`a <-> b`).
 *
 * Ranking is `ts_rank` with field weights in the proportions of SQLite's bm25 weights (subject 10, sender 5,
 * recipients 2, body 1) and length normalisation; bm25 also weighs how rare a word is, which `ts_rank` does not, so
 * the two agree on what is better (a subject match over a body match) more than on exact order.
 */
import type { EmailAddress, NewItem } from '../types';
import { htmlToPlain } from '../../content/text';

/** `ts_rank` weights in PostgreSQL's order {D, C, B, A}: body, recipients, sender, subject. */
export const RANK_WEIGHTS = '{0.1, 0.2, 0.5, 1.0}';

/** The largest lexeme PostgreSQL stores (bytes); a longer word is not indexed (as `to_tsvector` skips it). */
const MAX_LEXEME_BYTES = 2046;
/** Stay well inside a tsvector's 1 MB of lexeme text: words past this budget are not indexed. */
const MAX_DOCUMENT_BYTES = 900_000;
/** PostgreSQL keeps positions up to 16383 and at most 256 per lexeme. */
const MAX_POSITION = 16383;
const MAX_POSITIONS = 256;

/** The words of `text`, as unicode61 with remove_diacritics 2 cuts them. */
export function words(text: string): string[] {
  return text
    .toLowerCase()
    .normalize('NFD')
    .replace(/\p{M}+/gu, '')
    .normalize('NFC')
    .split(/[^\p{L}\p{N}\p{Co}]+/u)
    .filter((w) => w.length > 0);
}

/** A lexeme in tsvector/tsquery text: quoted, quotes and backslashes doubled. */
const quote = (lexeme: string) => `'${lexeme.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;

/** The lexeme that names a document's owner: no word can be it (a word has no `@`). */
const ownerLexeme = (userId: string) => `@${userId}`;

/** The text of the tsvector that indexes `item` (an HTML-only body is indexed as its text). */
export function searchDocument(item: NewItem): string {
  const people = (list: EmailAddress[] | undefined) => (list ?? []).map((a) => `${a.name} ${a.address}`).join(' ');
  const fields: Array<[string, string]> = [
    [item.subject, 'A'],
    [item.from ? `${item.from.name} ${item.from.address}` : '', 'B'],
    [`${people(item.to)} ${people(item.cc)}`, 'C'],
    [item.bodyText ?? htmlToPlain(item.bodyHtml ?? ''), ''],
  ];
  const positions = new Map<string, string[]>();
  let bytes = 0;
  let position = 0;
  for (const [text, weight] of fields) {
    position++; // a gap between fields: a phrase never spans two (SQLite's columns)
    for (const word of words(text)) {
      position = Math.min(position + 1, MAX_POSITION);
      let list = positions.get(word);
      if (!list) {
        const size = Buffer.byteLength(word, 'utf8');
        if (size > MAX_LEXEME_BYTES || bytes + size > MAX_DOCUMENT_BYTES) continue;
        bytes += size;
        positions.set(word, (list = []));
      }
      if (list.length < MAX_POSITIONS) list.push(`${position}${weight}`);
    }
  }
  const parts = [quote(ownerLexeme(item.userId))];
  for (const [word, list] of positions) parts.push(`${quote(word)}:${list.join(',')}`);
  return parts.join(' ');
}

export interface SearchQuery {
  /** Every term must match, and the document must be the owner's: the WHERE clause. */
  match: string;
  /** Any term: what `ts_rank` scores (it ranks an AND by how close the terms are, not by how often they occur). */
  rank: string;
}

/**
 * The tsquery texts for `terms`: each term's words in a phrase, the last word of the last term a prefix. Undefined
 * when a term has no word at all (FTS5 matches nothing for an empty phrase either).
 */
export function searchQuery(userId: string, terms: string[]): SearchQuery | undefined {
  const phrases: string[] = [];
  for (const [i, term] of terms.entries()) {
    const w = words(term);
    if (w.length === 0) return undefined;
    const quoted = w.map(quote);
    if (i === terms.length - 1) quoted[quoted.length - 1] += ':*';
    phrases.push(quoted.length === 1 ? quoted[0]! : `(${quoted.join(' <-> ')})`);
  }
  return { match: `${quote(ownerLexeme(userId))} & ${phrases.join(' & ')}`, rank: phrases.join(' | ') };
}
