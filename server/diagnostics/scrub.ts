/**
 * Scrubbing an app's logs of secrets before they are stored: a support engineer reading an incident must not be
 * handed a working credential. Secrets are found two ways, and each found value becomes `[REDACTED]`:
 * - by where they stand: the value of an `Authorization`-like header, of a key or parameter whose name says secret
 *   (`password`, `client_secret`, `refresh_token`, `X-Api-Key`, `cookie`, ...) in JSON (also JSON escaped inside a
 *   JSON string, as a logged request body is), in a URL query, a form body or logfmt, and OAuth's `code` parameter;
 * - by their shape, wherever they stand: `Bearer`/`DPoP`/`Basic` credentials, JWTs (access tokens, DPoP proofs, ID
 *   tokens), Pigeon refresh tokens (`prt_<id>.<mac>`, identity/passwordGrant.ts), Pigeon sync tokens
 *   (`p1.<payload>.<mac>`, sync/tokens.ts), three-part base64url strings that look like signed tokens, and private
 *   key PEM blocks.
 * It errs on the side of removing: a value that only looks secret goes too. What it cannot know is an opaque random
 * token standing alone in prose with nothing naming it; apps log tokens through the forms above.
 *
 * The rules are regular expressions without nested quantifiers over the same characters, so a hostile log cannot make
 * them backtrack for long (the input is also capped by the bundle reader).
 */

export const REDACTED = '[REDACTED]';

export interface Scrubbed {
  text: string;
  /** How many values were replaced. */
  redactions: number;
}

/** Names whose value is secret, as the last word of a key (`refreshToken`, `client_secret`, `x-api-key`). */
const SECRET_WORD =
  '(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|subscription[_-]?key|credentials?|code[_-]?verifier|assertion|authorization|cookie|session[_-]?id|signature)';
/** A whole key ending in a secret word: `password`, `client_secret`, `refresh_token`, `X-Api-Key`, `syncToken`. */
const SECRET_KEY = `[A-Za-z0-9_.-]*?${SECRET_WORD}`;
/**
 * HTTP headers whose whole value is a credential: the standard ones, and names that look like headers (`X-...`, or
 * hyphenated) ending in a secret word. A bare `token:` is prose ("invalid token: expired"), not a header.
 */
const SECRET_HEADER = `(?:authorization|proxy-authorization|cookie|set-cookie|dpop|api-?key|x-[A-Za-z0-9-]*?${SECRET_WORD}|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*-${SECRET_WORD})`;
/** A header value: to the end of the line, or of the JSON string it is logged in (a `"` or an escaped `\\n`). */
const HEADER_VALUE = '(?:[^\\r\\n"\\\\]|\\\\(?![nr"\\\\]))+';
/** Base64url / token68 characters (RFC 7235), what bearer credentials are made of. */
const TOKEN_CHARS = 'A-Za-z0-9\\-._~+/';

interface Rule {
  name: string;
  pattern: RegExp;
  /** The replacement for one match, or undefined to keep it (a value not worth counting: null, true, empty). */
  replace: (match: string, ...groups: string[]) => string | undefined;
}

/** Keeps `prefix`, redacts the value after it. */
const keepPrefix = (match: string, prefix: string, value: string) => (isTrivial(value) ? undefined : `${prefix}${REDACTED}`);
/** Keeps `prefix`, redacts a JSON value, keeping it a string. */
const keepPrefixQuoted = (quote: string) => (match: string, prefix: string, value: string) =>
  isTrivial(value) ? undefined : `${prefix}${quote}${REDACTED}${quote}`;

/** Values that hide nothing: redacting them would only make the log harder to read. */
function isTrivial(value: string): boolean {
  const bare = value.replace(/^\\?["']|\\?["']$/g, '');
  return bare === '' || bare === REDACTED || /^(null|true|false|undefined|none)$/i.test(bare);
}

const RULES: readonly Rule[] = [
  {
    // A private key block up to its END line; one cut off (by the end of a log line or file) up to where its
    // characters stop. One pass: the body cannot fail to match, so many BEGIN lines cost linear time, not quadratic.
    name: 'private key PEM block',
    pattern:
      /-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s:,.-]|\\[nr])*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|(?=[^A-Za-z0-9+/=\s:,.\\-])|(?=\\[^nr])|$)/g,
    replace: () => REDACTED,
  },
  {
    name: 'credential header',
    pattern: new RegExp(`((?<![A-Za-z0-9_-])${SECRET_HEADER}[ \\t]*:[ \\t]*)(${HEADER_VALUE})`, 'gi'),
    replace: keepPrefix,
  },
  {
    name: 'secret JSON member',
    pattern: new RegExp(`("${SECRET_KEY}"\\s*:\\s*)(?:"((?:[^"\\\\\\r\\n]|\\\\.)*)"|([^\\s,}\\]"]+))`, 'gi'),
    replace: (match, prefix, quoted, bare) =>
      quoted !== undefined ? keepPrefixQuoted('"')(match, prefix!, quoted) : keepPrefixQuoted('"')(match, prefix!, bare!),
  },
  {
    // JSON logged as a string inside JSON (a request body in an NDJSON line): the quotes are escaped.
    name: 'secret JSON member, escaped',
    pattern: new RegExp(`(\\\\"${SECRET_KEY}\\\\"\\s*:\\s*)(?:\\\\"((?:[^"\\\\]|\\\\\\\\|\\\\[^"\\\\])*)\\\\"|([^\\s,}\\]"\\\\]+))`, 'gi'),
    replace: (match, prefix, quoted, bare) =>
      quoted !== undefined ? keepPrefixQuoted('\\"')(match, prefix!, quoted) : keepPrefixQuoted('\\"')(match, prefix!, bare!),
  },
  {
    // URL queries, form bodies, logfmt: `access_token=...&`, `password="a b"`.
    name: 'secret parameter',
    pattern: new RegExp(`((?<![A-Za-z0-9_.-])${SECRET_KEY}=)("(?:[^"\\\\\\r\\n]|\\\\.)*"|[^&\\s"'<>,;#]+)`, 'gi'),
    replace: keepPrefix,
  },
  {
    // OAuth's authorization code, only as a query or form parameter: `code=1` elsewhere is an exit status.
    name: 'OAuth code parameter',
    pattern: /((?<=[?&])code=)([^&\s"'<>#]+)/g,
    replace: keepPrefix,
  },
  {
    // YAML-like `password: hunter2` in prose (the header rule already took `Authorization: ...`).
    name: 'password in prose',
    pattern: /((?<![A-Za-z0-9_.-])(?:password|passwd|passphrase|client[_-]?secret)[ \t]*:[ \t]*)([^\s"',;]+)/gi,
    replace: keepPrefix,
  },
  {
    // A credential after its scheme, wherever it stands; 16 characters with a digit, so "Bearer token missing" stays.
    name: 'Bearer/DPoP/Basic credential',
    pattern: new RegExp(`((?<![A-Za-z0-9_-])(?:Bearer|DPoP|Basic)\\s+)((?=[${TOKEN_CHARS}]*\\d)[${TOKEN_CHARS}]{16,}=*)`, 'gi'),
    replace: keepPrefix,
  },
  {
    name: 'Pigeon refresh token',
    pattern: /(?<![A-Za-z0-9_-])prt_[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?/g,
    replace: () => REDACTED,
  },
  {
    name: 'Pigeon sync token',
    pattern: /(?<![A-Za-z0-9_.-])p\d+\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g,
    replace: () => REDACTED,
  },
  {
    // A JWS or JWE in compact form: the protected header is JSON, so base64url of `{"` (eyJ).
    name: 'JWT',
    pattern: /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){0,3}/g,
    replace: () => REDACTED,
  },
  {
    // Other signed tokens of three base64url parts (a JWT whose header does not start with `{"`, a macaroon-like
    // token): long parts, with a digit, so dotted names of classes and hosts stay.
    name: 'three-part token',
    pattern: /(?<![A-Za-z0-9_.-])(?=[A-Za-z0-9_.-]*\d)[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}(?![A-Za-z0-9_-])/g,
    replace: () => REDACTED,
  },
];

/** `text` without the secrets it held, and how many were removed. */
export function scrubText(text: string): Scrubbed {
  let redactions = 0;
  let out = text;
  for (const rule of RULES) {
    out = out.replace(rule.pattern, (match: string, ...rest: unknown[]) => {
      // replace() passes the groups, then the offset, the whole string (and named groups): keep the groups.
      const groups = rest.slice(0, groupCount(rule.pattern)) as string[];
      const replacement = rule.replace(match, ...groups);
      if (replacement === undefined) return match;
      redactions++;
      return replacement;
    });
  }
  return { text: out, redactions };
}

const groupCounts = new WeakMap<RegExp, number>();
/** The number of capture groups of `pattern` (what String.replace passes before the offset). */
function groupCount(pattern: RegExp): number {
  let count = groupCounts.get(pattern);
  if (count === undefined) {
    count = new RegExp(`${pattern.source}|`).exec('')!.length - 1;
    groupCounts.set(pattern, count);
  }
  return count;
}

/** Every entry scrubbed, with the total of redactions (what the incident records). */
export function scrubEntries<E extends { name: string; text: string }>(entries: ReadonlyArray<E>): { entries: E[]; redactions: number } {
  let redactions = 0;
  const scrubbed = entries.map((entry) => {
    const result = scrubText(entry.text);
    redactions += result.redactions;
    return { ...entry, text: result.text };
  });
  return { entries: scrubbed, redactions };
}
