/**
 * Strict request bodies. express.json() alone silently replaces invalid UTF-8 with U+FFFD and accepts lone
 * surrogates and any nesting depth; here the raw bytes are checked first, so bad input is a 400 and never stored.
 */
import express, { type RequestHandler } from 'express';
import { errors } from '../errors';

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Deepest `[`/`{` nesting outside strings; counted on the text before JSON.parse so a deep body costs nothing. */
export function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > max) max = depth;
    } else if (c === 125 || c === 93) depth--;
  }
  return max;
}

/** `\uD800`-style escapes of unpaired surrogates survive JSON.parse as lone surrogates: find them in the text. */
function hasLoneSurrogateEscape(text: string): boolean {
  const re = /\\u([dD][89abAB][0-9a-fA-F]{2})(\\u([dD][c-fC-F][0-9a-fA-F]{2}))?|\\u[dD][c-fC-F][0-9a-fA-F]{2}/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    // A high surrogate must be followed by a low one; a low one must never stand first.
    if (m[1] === undefined || m[2] === undefined) return true;
  }
  return false;
}

/**
 * Whether some object names a member twice. RFC 8259 leaves the meaning of `{"a":1,"a":2}` to the parser (I-JSON
 * forbids it), so one component could validate the first value while another uses the last: refused instead.
 * Runs on text that may not be JSON at all; JSON.parse reports that afterwards.
 */
export function hasDuplicateKey(text: string): boolean {
  const open: Array<Set<string> | null> = []; // one entry per open bracket: an object's names so far, or null for an array
  let expectName = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      const start = i;
      // Skip to the closing quote: one not preceded by an odd run of backslashes.
      for (;;) {
        i = text.indexOf('"', i + 1);
        if (i < 0) return false;
        let slashes = 0;
        while (text.charCodeAt(i - 1 - slashes) === 92) slashes++;
        if (slashes % 2 === 0) break;
      }
      const names = open[open.length - 1];
      if (expectName && names) {
        let name: string;
        try {
          name = JSON.parse(text.slice(start, i + 1)) as string; // `"a"` and `"\u0061"` are the same name
        } catch {
          return false;
        }
        if (names.has(name)) return true;
        names.add(name);
      }
      expectName = false;
    } else if (c === 123 /* { */) {
      open.push(new Set());
      expectName = true;
    } else if (c === 91 /* [ */) {
      open.push(null);
      expectName = false;
    } else if (c === 125 /* } */ || c === 93 /* ] */) {
      open.pop();
      expectName = false;
    } else if (c === 44 /* , */) {
      expectName = open[open.length - 1] instanceof Set;
    }
  }
  return false;
}

/** Checks the raw bytes; throws a typed 400 so the one error handler answers. */
export function checkJsonText(buf: Buffer, maxDepth: number): void {
  let text: string;
  try {
    text = fatalUtf8.decode(buf);
  } catch {
    throw errors.invalidRequest('The request body is not valid UTF-8.');
  }
  if (hasLoneSurrogateEscape(text)) throw errors.invalidRequest('The request body contains an unpaired surrogate.');
  if (jsonDepth(text) > maxDepth) throw errors.invalidRequest(`The request body is nested deeper than ${maxDepth} levels.`);
  if (hasDuplicateKey(text)) throw errors.invalidRequest('The request body names a member twice in one object.');
}

function hasBody(req: express.Request): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

/**
 * For routes that take JSON: 415 unless the body is `application/json` (or `+json`), then the strict checks.
 * An empty body is allowed and leaves `req.body` as `{}`; the route's validation says what is missing.
 */
export function jsonBody(limitBytes: number, maxDepth: number): RequestHandler[] {
  const parse = express.json({
    limit: limitBytes,
    strict: true,
    type: () => true,
    verify: (_req, _res, buf) => checkJsonText(buf, maxDepth),
  });
  return [
    (req, _res, next) => {
      if (!hasBody(req)) {
        req.body = {};
        return next();
      }
      if (!req.is(['application/json', 'application/*+json'])) throw errors.unsupportedMediaType('application/json');
      const charset = /charset=([^;]+)/i.exec(req.headers['content-type'] ?? '')?.[1]?.trim().toLowerCase();
      if (charset && charset !== 'utf-8' && charset !== 'utf8') throw errors.unsupportedMediaType('UTF-8 encoded');
      next();
    },
    parse,
  ];
}

/** For the OAuth endpoints (RFC 6749): form-encoded bodies, same byte checks. */
export function formBody(limitBytes: number): RequestHandler[] {
  const parse = express.urlencoded({
    limit: limitBytes,
    extended: false,
    parameterLimit: 50,
    type: () => true,
    verify: (req, _res, buf) => {
      // Kept for the identity provider, which reads the token and revocation bodies itself (identity/routes.ts).
      (req as { rawBody?: Buffer }).rawBody = buf;
      let text: string;
      try {
        text = fatalUtf8.decode(buf);
      } catch {
        throw errors.invalidRequest('The request body is not valid UTF-8.');
      }
      // Percent-escapes must decode to valid UTF-8 too (`%FF` would otherwise become U+FFFD silently).
      for (const part of text.split(/[&=]/)) {
        try {
          decodeURIComponent(part.replace(/\+/g, ' '));
        } catch {
          throw errors.invalidRequest('The request body has a percent-escape that is not valid UTF-8.');
        }
      }
    },
  });
  return [
    (req, _res, next) => {
      if (!hasBody(req)) {
        req.body = {};
        return next();
      }
      if (!req.is('application/x-www-form-urlencoded')) {
        throw errors.unsupportedMediaType('application/x-www-form-urlencoded');
      }
      next();
    },
    parse,
  ];
}
