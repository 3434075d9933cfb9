/**
 * The HTML policy: every HTML body the API hands out (`GET /v1/items/{id}` and `body` in sync pages) passes through
 * `sanitizeEmailHtml` first, because apps show it in a web view and the HTML comes from whoever sent the mail.
 *
 * Policy (also in the README, "HTML bodies"):
 * - Nothing that runs or submits: script, style blocks, iframe, object, embed, form and its controls, base, meta
 *   (refresh included), link, svg and math are removed (script, style, svg, math, iframe, noscript, template and
 *   title with their content; the rest keep only their text). Every `on*` event-handler attribute is dropped:
 *   attributes are an allowlist per tag.
 * - URLs: links keep http, https, mailto and tel (and relative ones); javascript:, vbscript:, data: and any other
 *   scheme are removed, however they are spelled (entities, case, control characters). Every link gets
 *   `target="_blank"` and `rel="noopener noreferrer"`.
 * - Images: `cid:` sources stay (they name an attachment's `contentId`), and so do `data:image/…` sources of raster
 *   types (png, jpeg, gif, webp, bmp, avif; never SVG). Remote sources (http, https, `//host`) are blocked by
 *   default: the URL moves to `data-pigeon-remote-src`, so nothing is fetched (no tracking pixel fires) until the
 *   app chooses to copy it back. Every other source is dropped. `srcset` is not allowed.
 * - CSS: `style` attributes survive for a list of presentational properties (colours, fonts, text, spacing,
 *   borders, sizes, tables); a declaration whose value holds `url(`, `image-set(`, `expression(`, `var(`, an
 *   `@`-rule, a backslash escape or a `javascript:` is dropped, as is every other property (`position`,
 *   `behavior`, `-moz-binding`, `content`, ...). `class` and `id` are dropped (they would reach the app's own CSS
 *   and DOM).
 * - Comments (conditional ones too) are removed.
 */
import sanitizeHtml, { type IOptions } from 'sanitize-html';

const RASTER_DATA_IMAGE = /^data:image\/(png|jpe?g|gif|webp|bmp|avif);base64,[a-z0-9+/=\s]*$/i;
const REMOTE = /^\s*(https?:)?\/\//i;

/** A CSS value that cannot fetch, run or escape: no functions that load, no escapes that could spell one. */
const SAFE_CSS_VALUE = /^(?![\s\S]*(url\s*\(|image-set|image\s*\(|cross-fade|element\s*\(|src\s*\(|expression|var\s*\(|@|\\|javascript:|behavior))[\s\S]*$/i;

const STYLE_PROPERTIES = [
  'color', 'background', 'background-color', 'opacity',
  'font', 'font-family', 'font-size', 'font-style', 'font-weight', 'font-variant',
  'text-align', 'text-decoration', 'text-indent', 'text-transform', 'line-height', 'letter-spacing', 'word-spacing',
  'white-space', 'word-break', 'word-wrap', 'overflow-wrap', 'vertical-align', 'direction',
  'margin', 'margin-top', 'margin-right', 'margin-bottom', 'margin-left',
  'padding', 'padding-top', 'padding-right', 'padding-bottom', 'padding-left',
  'border', 'border-top', 'border-right', 'border-bottom', 'border-left', 'border-color', 'border-style',
  'border-width', 'border-radius', 'border-collapse', 'border-spacing',
  'width', 'height', 'max-width', 'min-width', 'max-height', 'min-height',
  'display', 'float', 'clear', 'overflow', 'list-style-type', 'table-layout',
];

const ALLOWED_TAGS = [
  ...sanitizeHtml.defaults.allowedTags,
  'img', 'font', 'center', 'del', 'ins', 'strike', 'big', 'tt', 'details', 'summary',
];

/** Dropped together with their content: code, styling, embedded documents and things no reader should see. */
const DROPPED_WITH_CONTENT = [
  'script', 'style', 'textarea', 'option', 'xmp', // sanitize-html's own list, kept whole
  'noscript', 'template', 'title', 'iframe', 'noembed', 'noframes', 'object', 'embed', 'svg', 'math', 'select',
];

const LAYOUT = ['align', 'valign', 'width', 'height', 'bgcolor', 'dir', 'lang', 'title', 'style'];

const OPTIONS: IOptions = {
  allowedTags: ALLOWED_TAGS,
  nonTextTags: DROPPED_WITH_CONTENT,
  disallowedTagsMode: 'discard',
  allowedAttributes: {
    '*': LAYOUT,
    a: ['href', 'target', 'rel'],
    img: ['src', 'alt', 'data-pigeon-remote-src', 'border'],
    font: ['color', 'face', 'size'],
    table: ['border', 'cellpadding', 'cellspacing'],
    td: ['colspan', 'rowspan', 'nowrap'],
    th: ['colspan', 'rowspan', 'nowrap', 'scope'],
    col: ['span'],
    colgroup: ['span'],
    ol: ['start', 'type', 'reversed'],
    ul: ['type'],
    li: ['value'],
  },
  allowedSchemes: ['http', 'https', 'mailto', 'tel'],
  // An img src is only ever what transformTags left there: cid: or a raster data: image.
  allowedSchemesByTag: { img: ['cid', 'data'] },
  allowedStyles: { '*': Object.fromEntries(STYLE_PROPERTIES.map((p) => [p, [SAFE_CSS_VALUE]])) },
  transformTags: {
    a: (tagName, attribs) => ({ tagName, attribs: { ...attribs, target: '_blank', rel: 'noopener noreferrer' } }),
    img: (tagName, attribs) => {
      const { src, ...rest } = attribs;
      delete rest['data-pigeon-remote-src']; // only ever set here, never taken from the message
      if (src === undefined) return { tagName, attribs: rest };
      if (REMOTE.test(src)) return { tagName, attribs: { ...rest, 'data-pigeon-remote-src': src.trim() } };
      const value = src.trim();
      if (/^cid:/i.test(value) || RASTER_DATA_IMAGE.test(value)) return { tagName, attribs: { ...rest, src: value } };
      return { tagName, attribs: rest };
    },
  },
};

/** The message's HTML under the policy above. Pure: the same input always gives the same output. */
export function sanitizeEmailHtml(html: string): string {
  return sanitizeHtml(html, OPTIONS);
}

/**
 * At most `maxBytes` of UTF-8 of the sanitised HTML, cut on a character boundary and never inside a tag or an
 * entity. Sanitising costs about 4 MB/s, so a long body is sanitised from a prefix of its source (starting at
 * <body>) that grows until it yields enough; the result is deterministic, and safe whatever the cut, because the
 * sanitiser's output is.
 */
export function sanitizedHtmlPrefix(html: string, maxBytes: number): { content: string; truncated: boolean } {
  // Everything the policy keeps of a <head> is stray text, and newsletters put tens of KiB of CSS there.
  const body = html.search(/<body[\s>]/i);
  const from = body > 0 ? body : 0;
  for (let take = Math.max(2 * maxBytes, 4096); ; take *= 2) {
    const whole = from + take >= html.length;
    const source = whole ? html : html.slice(from, html.lastIndexOf('>', from + take) + 1);
    const clean = sanitizeEmailHtml(source);
    if (Buffer.byteLength(clean, 'utf8') > maxBytes) return { content: cutHtml(clean, maxBytes), truncated: true };
    if (whole) return { content: clean, truncated: false };
  }
}

/** The longest start of `html` within `maxBytes` that ends on a character boundary and outside a tag or entity. */
export function cutHtml(html: string, maxBytes: number): string {
  const bytes = Buffer.from(html, 'utf8');
  let end = Math.min(maxBytes, bytes.length);
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--; // 10xxxxxx: inside a character
  let text = bytes.subarray(0, end).toString('utf8');
  const open = text.lastIndexOf('<');
  if (open > text.lastIndexOf('>')) text = text.slice(0, open);
  const amp = text.lastIndexOf('&');
  if (amp >= 0 && !text.slice(amp).includes(';')) text = text.slice(0, amp);
  return text;
}
