/**
 * Authentication of the device-compliance partner API: an MDM (a "compliance partner") calls Pigeon to set a device's
 * compliance state. Every call is signed with HTTP Message Signatures (RFC 9421) by an asymmetric key the partner
 * registered with Pigeon; there is no shared secret, so nothing Pigeon stores lets anyone sign as the partner.
 *
 * No maintained RFC 9421 library is installed, so this module implements the small subset it needs, following RFC 9421
 * (signatures), RFC 8941 (structured fields: the `Signature-Input`, `Signature` and `Content-Digest` syntax) and
 * RFC 9530 (`Content-Digest`). Anything outside that subset is refused, never guessed at.
 *
 * ## Contract for a partner (what an MDM vendor implements)
 *
 * Registration. A partner has an id, one or more public keys, each with a key id (its `keyid`), and the tenants it may
 * manage. A key is a JWK or a PEM SubjectPublicKeyInfo of one of:
 * - Ed25519, signature algorithm `ed25519` (RFC 9421 §3.3.6);
 * - ECDSA on P-256 with SHA-256, signature algorithm `ecdsa-p256-sha256` (RFC 9421 §3.3.4).
 * Only public keys are registered (a private one is refused). To rotate, register the new key, sign with it, then
 * have the old one removed. Key ids are unique across all partners.
 *
 * Each request carries three fields:
 * 1. `Content-Digest: sha-256=:<base64 of SHA-256 of the body bytes as sent>:` (RFC 9530), also for an empty body
 *    (`sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:`). A `sha-512` member, if also sent, must match too.
 * 2. `Signature-Input`, an RFC 8941 dictionary with one member per signature, for example (one line):
 *      sig1=("@method" "@target-uri" "content-digest" "content-type" "date");created=1767268800;keyid="mdm-key-1";
 *      alg="ed25519";nonce="kR2l0Zs2hBfE1nq3fTQz8A"
 *    The covered components must include `@method`, `@target-uri` and `content-digest`, and also `content-type` and
 *    `date` whenever the request has those fields. Other HTTP fields (lower-case names) and the derived components
 *    `@authority`, `@scheme`, `@path` and `@query` may be covered too; other derived components and component
 *    parameters (`;sf`, `;key`, `;bs`, `;req`, `;tr`) are refused. Signature parameters:
 *    - `created` (required): integer Unix time in seconds; must be within ±`maxSkewSeconds` (default 300) of Pigeon's
 *      clock when the request arrives;
 *    - `keyid` (required): the registered key id;
 *    - `nonce` (required): a string unique per request for that key (at most 256 characters): 128 random bits in
 *      base64url are recommended. A nonce is remembered until its signature could no longer be fresh, and a second
 *      request with it is refused;
 *    - `alg` (optional): if present, it must be the key's algorithm;
 *    - `expires` (optional): integer Unix time after which the request is refused.
 * 3. `Signature`, an RFC 8941 dictionary with a byte sequence under the same label: `sig1=:<base64>:`.
 *
 * Signature base (RFC 9421 §2.5): for each covered component in order, the line `"<name>": <value>`, then the line
 * `"@signature-params": <the Signature-Input member, serialised per RFC 8941 §4.1>`; lines joined by LF, no final LF,
 * ASCII only. Values:
 * - `@method`: the request method as sent (e.g. `POST`);
 * - `@target-uri`: the absolute URI the request is addressed to, `https://<host>[:<port>]<path>[?<query>]`, exactly
 *   as requested (the host as Pigeon publishes it for partners, the path and query byte for byte);
 * - `@authority`: host (and port unless the scheme's default), lower case; `@scheme`: lower case; `@path`: the path
 *   (`/` when empty); `@query`: `?` and the query (`?` alone when there is none);
 * - an HTTP field (`content-digest`, `content-type`, `date`…): its value with surrounding whitespace removed, several
 *   field lines joined by `, `.
 * The signature is over the base's bytes: for `ed25519`, the 64-byte Ed25519 signature (RFC 8032); for
 * `ecdsa-p256-sha256`, ECDSA over SHA-256 of the base, encoded as r‖s, 32 bytes each (not DER).
 *
 * Refusals (`PartnerRequestRefused.reason`): `unsigned` (no `Signature-Input` or `Signature`), `unknown_key`
 * (`keyid` not registered), `bad_signature` (malformed fields, unsupported component or algorithm, `alg` not the key's,
 * or the signature does not verify), `missing_component` (a required component not covered, a covered field absent
 * from the request, or `created`/`keyid`/`nonce` missing), `stale` (`created` outside the window either way, or past
 * `expires`), `digest_mismatch` (the body does not match `Content-Digest`), `replayed` (the nonce was used), and
 * `tenant_not_allowed` (the partner may not manage the tenant the request is about: `assertTenantAllowed`).
 * With several signatures (a proxy may add its own), the first whose `keyid` is registered is the one checked.
 *
 * ## In Pigeon
 * `createPartnerVerifier` checks a request: signature first (so an unauthenticated caller learns nothing else), then
 * time, digest, and last the nonce (only a request that passed every other check uses up its nonce). The caller
 * passes the body's exact bytes and the target URI rebuilt from Pigeon's published origin and the request's path and
 * query as received. The nonce memory is an interface: the in-process one (`createNonceMemory`) is bounded and never
 * evicts a live nonce — when full of live ones it throws `PartnerNonceMemoryFull` (answer 503, retry shortly); with
 * several processes or nodes they must share one for replays across them to be caught.
 */
import crypto from 'node:crypto';

/** The signature algorithms a partner key may use (RFC 9421 §6.2.2 names). */
export const PARTNER_SIGNATURE_ALGORITHMS = ['ed25519', 'ecdsa-p256-sha256'] as const;
export type PartnerSignatureAlgorithm = (typeof PARTNER_SIGNATURE_ALGORITHMS)[number];

/** Components every partner signature covers. */
export const REQUIRED_COMPONENTS = ['@method', '@target-uri', 'content-digest'] as const;
/** Fields a partner signature covers whenever the request has them. */
export const COVERED_WHEN_PRESENT = ['content-type', 'date'] as const;

/** How far `created` may be from our clock, either way (seconds). */
export const DEFAULT_MAX_SKEW_SECONDS = 300;

/** Bounds what one remembered nonce costs. */
export const MAX_NONCE_LENGTH = 256;

/** Nonces remembered at most: 10 minutes of about 160 partner requests a second, some 20 MB at worst. */
export const NONCE_MEMORY_SIZE = 100_000;

export type PartnerRefusalReason =
  | 'unsigned'
  | 'unknown_key'
  | 'bad_signature'
  | 'digest_mismatch'
  | 'stale'
  | 'replayed'
  | 'missing_component'
  | 'tenant_not_allowed';

/** A partner request refused: the reason (stable, for the problem body) and what was wrong (safe to show). */
export class PartnerRequestRefused extends Error {
  constructor(
    readonly reason: PartnerRefusalReason,
    detail: string,
  ) {
    super(detail);
    this.name = 'PartnerRequestRefused';
  }
}

/** The nonce memory is full of live nonces: the request can be neither checked for replay nor remembered. */
export class PartnerNonceMemoryFull extends Error {
  constructor() {
    super('The compliance-partner nonce memory is full.');
    this.name = 'PartnerNonceMemoryFull';
  }
}

/** The partner configuration is unusable (raised when the verifier is built, never per request). */
export class PartnerConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PartnerConfigError';
  }
}

/** A partner's key as configured: a public JWK or a PEM SubjectPublicKeyInfo. */
export interface PartnerKeyConfig {
  /** The `keyid` its signatures name; unique across partners. */
  keyId: string;
  publicKey: crypto.JsonWebKey | string;
}

export interface CompliancePartnerConfig {
  id: string;
  keys: readonly PartnerKeyConfig[];
  /** The tenants this partner may set device compliance for. */
  tenantIds: readonly string[];
}

/**
 * Remembers nonces. `seen` answers true when `key` is remembered and not yet expired (a replay); otherwise it remembers
 * `key` until `expiresAtMs` (epoch milliseconds) and answers false. An implementation that cannot remember throws
 * (the in-process one: `PartnerNonceMemoryFull`) rather than answer false without remembering.
 */
export interface PartnerNonceMemory {
  seen(key: string, expiresAtMs: number): boolean | Promise<boolean>;
}

/** The in-process nonce memory: a map in insertion order, bounded by `capacity`, live entries never evicted. */
export function createNonceMemory(opts: { now: () => number; capacity?: number }): PartnerNonceMemory & { readonly size: number } {
  const { now } = opts;
  const capacity = opts.capacity ?? NONCE_MEMORY_SIZE;
  const remembered = new Map<string, number>(); // key → expiry (ms)
  return {
    get size() {
      return remembered.size;
    },
    seen(key, expiresAtMs) {
      const nowMs = now();
      const known = remembered.get(key);
      if (known !== undefined) {
        if (known > nowMs) return true;
        remembered.delete(key);
      }
      // Entries arrive in about the order they expire (their `created` is about their arrival): drop the expired ones
      // at the front on the way, so the map holds about one window's worth.
      for (const [k, expiry] of remembered) {
        if (expiry > nowMs) break;
        remembered.delete(k);
      }
      if (remembered.size >= capacity) {
        // Out-of-order expiries may hide behind a live entry: sweep them all before giving up.
        for (const [k, expiry] of remembered) if (expiry <= nowMs) remembered.delete(k);
        if (remembered.size >= capacity) throw new PartnerNonceMemoryFull();
      }
      remembered.set(key, expiresAtMs);
      return false;
    },
  };
}

/** Request headers as node gives them (names in any case; a repeated field as an array). */
export type HeaderBag = Readonly<Record<string, string | readonly string[] | number | undefined>>;

/** A request as the verifier sees it. */
export interface PartnerRequest {
  method: string;
  /** The absolute target URI (Pigeon's published origin + the path and query as received). */
  url: string;
  headers: HeaderBag;
  /** The body's exact bytes (empty for none). */
  body: Buffer;
}

/** Who signed an accepted request. */
export interface VerifiedPartner {
  partnerId: string;
  tenantIds: readonly string[];
  keyId: string;
  /** `created`, Unix seconds. */
  created: number;
  nonce: string;
}

// ---------------------------------------------------------------------------------------------------------------------
// Structured fields (RFC 8941): the parts the three fields use.

type BareItem =
  | { type: 'integer'; value: number }
  | { type: 'decimal'; value: number }
  | { type: 'string'; value: string }
  | { type: 'token'; value: string }
  | { type: 'bytes'; value: Buffer }
  | { type: 'boolean'; value: boolean };
/** Ordered; a repeated key keeps its first position and its last value (RFC 8941 §4.2.3.2 "overwrite"). */
type Parameters = Map<string, BareItem>;
interface Item {
  kind: 'item';
  value: BareItem;
  params: Parameters;
}
interface InnerList {
  kind: 'innerList';
  items: Item[];
  params: Parameters;
}
type DictionaryMember = Item | InnerList;

class StructuredFieldError extends Error {}

const DIGIT = /[0-9]/;
const KEY_FIRST = /[a-z*]/;
const KEY_REST = /[a-z0-9_\-.*]/;
const TOKEN_FIRST = /[A-Za-z*]/;
const TOKEN_REST = /[!#$%&'*+\-.^_`|~0-9A-Za-z:/]/;
const BASE64 = /^[A-Za-z0-9+/=]*$/;

/** RFC 8941 §4.2 parsing, for dictionaries. */
class StructuredFieldParser {
  private pos = 0;
  constructor(private readonly input: string) {
    // §4.2: the input is ASCII.
    if (!/^[\x00-\x7f]*$/.test(input)) this.fail('not ASCII');
  }

  private fail(why: string): never {
    throw new StructuredFieldError(`${why} at position ${this.pos}`);
  }
  private done(): boolean {
    return this.pos >= this.input.length;
  }
  private peek(): string {
    return this.input[this.pos] ?? '';
  }
  private skipSP(): void {
    while (this.peek() === ' ') this.pos++;
  }
  private skipOWS(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.pos++;
  }

  /** §4.2 top level, then §4.2.2. */
  dictionary(): Map<string, DictionaryMember> {
    this.skipSP();
    const dict = new Map<string, DictionaryMember>();
    while (!this.done()) {
      const key = this.key();
      let member: DictionaryMember;
      if (this.peek() === '=') {
        this.pos++;
        member = this.peek() === '(' ? this.innerList() : this.item();
      } else {
        member = { kind: 'item', value: { type: 'boolean', value: true }, params: this.parameters() };
      }
      dict.set(key, member);
      this.skipOWS();
      if (this.done()) break;
      if (this.input[this.pos++] !== ',') this.fail('expected ","');
      this.skipOWS();
      if (this.done()) this.fail('trailing ","');
    }
    this.skipSP();
    if (!this.done()) this.fail('unexpected characters');
    return dict;
  }

  /** §4.2.1.2 */
  private innerList(): InnerList {
    this.pos++; // "("
    const items: Item[] = [];
    while (!this.done()) {
      this.skipSP();
      if (this.peek() === ')') {
        this.pos++;
        return { kind: 'innerList', items, params: this.parameters() };
      }
      items.push(this.item());
      if (this.peek() !== ' ' && this.peek() !== ')') this.fail('expected " " or ")" in an inner list');
    }
    return this.fail('unterminated inner list');
  }

  /** §4.2.3 */
  private item(): Item {
    const value = this.bareItem();
    return { kind: 'item', value, params: this.parameters() };
  }

  /** §4.2.3.2 */
  private parameters(): Parameters {
    const params: Parameters = new Map();
    while (this.peek() === ';') {
      this.pos++;
      this.skipSP();
      const key = this.key();
      let value: BareItem = { type: 'boolean', value: true };
      if (this.peek() === '=') {
        this.pos++;
        value = this.bareItem();
      }
      params.set(key, value);
    }
    return params;
  }

  /** §4.2.3.3 */
  private key(): string {
    if (!KEY_FIRST.test(this.peek())) this.fail('expected a key');
    const start = this.pos;
    while (!this.done() && KEY_REST.test(this.peek())) this.pos++;
    return this.input.slice(start, this.pos);
  }

  /** §4.2.3.1 */
  private bareItem(): BareItem {
    const c = this.peek();
    if (c === '-' || DIGIT.test(c)) return this.number();
    if (c === '"') return this.string();
    if (c === ':') return this.bytes();
    if (c === '?') return this.boolean();
    if (TOKEN_FIRST.test(c)) return this.token();
    return this.fail('expected an item');
  }

  /** §4.2.4 */
  private number(): BareItem {
    let decimal = false;
    let sign = 1;
    let digits = '';
    if (this.peek() === '-') {
      this.pos++;
      sign = -1;
    }
    if (!DIGIT.test(this.peek())) this.fail('expected a digit');
    while (!this.done()) {
      const c = this.peek();
      if (DIGIT.test(c)) digits += c;
      else if (!decimal && c === '.') {
        if (digits.length > 12) this.fail('decimal with too many integer digits');
        digits += c;
        decimal = true;
      } else break;
      this.pos++;
      if (!decimal && digits.length > 15) this.fail('integer too long');
      if (decimal && digits.length > 16) this.fail('decimal too long');
    }
    if (!decimal) return { type: 'integer', value: sign * Number(digits) };
    if (digits.endsWith('.') || digits.length - digits.indexOf('.') - 1 > 3) this.fail('bad decimal');
    return { type: 'decimal', value: sign * Number(digits) };
  }

  /** §4.2.5 */
  private string(): BareItem {
    this.pos++; // opening quote
    let out = '';
    while (!this.done()) {
      const c = this.input[this.pos++]!;
      if (c === '\\') {
        const next = this.input[this.pos++];
        if (next !== '"' && next !== '\\') this.fail('bad escape in a string');
        out += next;
      } else if (c === '"') {
        return { type: 'string', value: out };
      } else if (c < ' ' || c > '~') {
        this.fail('control character in a string');
      } else out += c;
    }
    return this.fail('unterminated string');
  }

  /** §4.2.6 */
  private token(): BareItem {
    const start = this.pos;
    this.pos++;
    while (!this.done() && TOKEN_REST.test(this.peek())) this.pos++;
    return { type: 'token', value: this.input.slice(start, this.pos) };
  }

  /** §4.2.7 */
  private bytes(): BareItem {
    this.pos++; // ":"
    const end = this.input.indexOf(':', this.pos);
    if (end < 0) this.fail('unterminated byte sequence');
    const content = this.input.slice(this.pos, end);
    if (!BASE64.test(content)) this.fail('byte sequence is not base64');
    this.pos = end + 1;
    return { type: 'bytes', value: Buffer.from(content, 'base64') };
  }

  /** §4.2.8 */
  private boolean(): BareItem {
    this.pos++; // "?"
    const c = this.input[this.pos++];
    if (c === '1') return { type: 'boolean', value: true };
    if (c === '0') return { type: 'boolean', value: false };
    return this.fail('bad boolean');
  }
}

function parseDictionary(value: string): Map<string, DictionaryMember> {
  return new StructuredFieldParser(value).dictionary();
}

/** RFC 8941 §4.1.3.1 and following. */
function serializeBareItem(item: BareItem): string {
  switch (item.type) {
    case 'integer':
      if (!Number.isInteger(item.value) || Math.abs(item.value) > 999_999_999_999_999) throw new StructuredFieldError('integer out of range');
      return String(item.value);
    case 'decimal': {
      const rounded = Math.abs(item.value).toFixed(3);
      if (rounded.indexOf('.') > 12) throw new StructuredFieldError('decimal out of range');
      const text = rounded.replace(/0+$/, '');
      return `${item.value < 0 ? '-' : ''}${text.endsWith('.') ? `${text}0` : text}`;
    }
    case 'string':
      if (!/^[\x20-\x7e]*$/.test(item.value)) throw new StructuredFieldError('string with a character outside ASCII printable');
      return `"${item.value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
    case 'token':
      return item.value;
    case 'bytes':
      return `:${item.value.toString('base64')}:`;
    case 'boolean':
      return item.value ? '?1' : '?0';
  }
}

function serializeParameters(params: Parameters): string {
  let out = '';
  for (const [key, value] of params) {
    out += `;${key}`;
    if (!(value.type === 'boolean' && value.value)) out += `=${serializeBareItem(value)}`;
  }
  return out;
}

function serializeItem(item: Item): string {
  return serializeBareItem(item.value) + serializeParameters(item.params);
}

function serializeInnerList(list: InnerList): string {
  return `(${list.items.map(serializeItem).join(' ')})${serializeParameters(list.params)}`;
}

// ---------------------------------------------------------------------------------------------------------------------
// The signature base (RFC 9421 §2).

/** Why a base cannot be built: `absent` (a covered field is not in the message) or `invalid` (unsupported or bad). */
class SignatureBaseError extends Error {
  constructor(
    readonly kind: 'absent' | 'invalid',
    message: string,
  ) {
    super(message);
  }
}

/** What the base is computed from. */
export interface SignedMessage {
  method: string;
  url: string;
  headers: HeaderBag;
}

const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const TARGET_URI = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#@]+)([^?#]*)(?:\?([^#]*))?$/;
const DEFAULT_PORTS: Record<string, string> = { http: '80', https: '443' };

/** A header bag keyed by lower-case name, with RFC 9421 §2.1 values (trimmed, field lines joined by ", "). */
function fieldValues(headers: HeaderBag): Map<string, string> {
  const fields = new Map<string, string>();
  for (const [name, raw] of Object.entries(headers)) {
    if (raw === undefined) continue;
    const lines = (Array.isArray(raw) ? raw : [raw]).map((line) => String(line).trim());
    const key = name.toLowerCase();
    const earlier = fields.get(key);
    fields.set(key, earlier === undefined ? lines.join(', ') : [earlier, ...lines].join(', '));
  }
  return fields;
}

/** The target URI's parts as sent (no normalisation beyond what RFC 9421 §2.2 asks of each derived component). */
function targetUriParts(url: string): { scheme: string; authority: string; path: string; query: string | undefined } {
  const match = /^[\x21-\x7e]+$/.test(url) ? TARGET_URI.exec(url) : null;
  const scheme = match?.[1]?.toLowerCase();
  if (!match || (scheme !== 'https' && scheme !== 'http')) {
    throw new TypeError('The request URL must be an absolute http(s) URI without user info or fragment.');
  }
  return { scheme, authority: match[2]!, path: match[3]!, query: match[4] };
}

function componentValue(name: string, message: SignedMessage, fields: Map<string, string>): string {
  if (name.startsWith('@')) {
    const uri = () => targetUriParts(message.url);
    switch (name) {
      case '@method': // §2.2.1
        return message.method;
      case '@target-uri': // §2.2.2
        uri();
        return message.url;
      case '@authority': {
        // §2.2.3: lower case, the scheme's default port left out.
        const { scheme, authority } = uri();
        const lower = authority.toLowerCase();
        const port = `:${DEFAULT_PORTS[scheme]}`;
        return lower.endsWith(port) ? lower.slice(0, -port.length) : lower;
      }
      case '@scheme': // §2.2.4
        return uri().scheme;
      case '@path': // §2.2.6: an empty path is "/".
        return uri().path || '/';
      case '@query': // §2.2.7: "?" alone when there is no query.
        return `?${uri().query ?? ''}`;
      default:
        throw new SignatureBaseError('invalid', `The derived component ${name} is not supported.`);
    }
  }
  if (!FIELD_NAME.test(name)) throw new SignatureBaseError('invalid', `"${name}" is not a lower-case HTTP field name.`);
  const value = fields.get(name);
  if (value === undefined) throw new SignatureBaseError('absent', `The signature covers "${name}", which the request does not have.`);
  return value;
}

const DERIVED_COMPONENTS = new Set(['@method', '@target-uri', '@authority', '@scheme', '@path', '@query']);

/** The covered component names, in order, each one this module can build (else SignatureBaseError `invalid`). */
function coveredComponents(input: InnerList): string[] {
  const names: string[] = [];
  for (const component of input.items) {
    if (component.value.type !== 'string') throw new SignatureBaseError('invalid', 'A covered component is not a string.');
    if (component.params.size > 0) throw new SignatureBaseError('invalid', 'Component parameters are not supported.');
    const name = component.value.value;
    if (name.startsWith('@') ? !DERIVED_COMPONENTS.has(name) : !FIELD_NAME.test(name)) {
      throw new SignatureBaseError('invalid', `"${name}" is not a supported derived component or a lower-case HTTP field name.`);
    }
    if (names.includes(name)) throw new SignatureBaseError('invalid', `"${name}" is covered twice.`);
    names.push(name);
  }
  return names;
}

/** RFC 9421 §2.5: the signature base for one signature's covered components and parameters. */
function buildSignatureBase(message: SignedMessage, input: InnerList): string {
  const fields = fieldValues(message.headers);
  const lines: string[] = [];
  for (const name of coveredComponents(input)) {
    const value = componentValue(name, message, fields);
    if (/[\r\n]/.test(value)) throw new SignatureBaseError('invalid', `The value of "${name}" spans lines.`);
    // The identifier serialised as an RFC 8941 string (no component parameters: refused above).
    lines.push(`${serializeBareItem({ type: 'string', value: name })}: ${value}`);
  }
  let params: string;
  try {
    params = serializeInnerList(input);
  } catch (err) {
    throw new SignatureBaseError('invalid', `The signature parameters cannot be serialised (${(err as Error).message}).`);
  }
  lines.push(`"@signature-params": ${params}`);
  const base = lines.join('\n');
  if (!/^[\x20-\x7e\n]*$/.test(base)) throw new SignatureBaseError('invalid', 'A covered value is not ASCII.');
  return base;
}

/**
 * The signature base RFC 9421 computes for the signature `label` of a `Signature-Input` field value (for
 * troubleshooting a partner's implementation, and for the tests). Throws on a field or component it cannot use.
 */
export function signatureBaseFor(message: SignedMessage, signatureInput: string, label: string): string {
  const member = parseDictionary(signatureInput).get(label);
  if (!member || member.kind !== 'innerList') throw new TypeError(`The Signature-Input has no inner list labelled "${label}".`);
  return buildSignatureBase(message, member);
}

// ---------------------------------------------------------------------------------------------------------------------
// Keys and algorithms.

/** The algorithm a key signs with, or undefined for a key this API does not take. */
function algorithmOf(key: crypto.KeyObject): PartnerSignatureAlgorithm | undefined {
  if (key.asymmetricKeyType === 'ed25519') return 'ed25519';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ecdsa-p256-sha256';
  return undefined;
}

/** JWK members that only a private (or symmetric) key has. */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
/** The JWS `alg` a JWK may declare for each algorithm. */
const JWK_ALGS: Record<PartnerSignatureAlgorithm, readonly string[]> = { ed25519: ['EdDSA', 'Ed25519'], 'ecdsa-p256-sha256': ['ES256'] };

function importPublicKey(where: string, source: crypto.JsonWebKey | string): { key: crypto.KeyObject; alg: PartnerSignatureAlgorithm } {
  let key: crypto.KeyObject;
  if (typeof source === 'string') {
    // createPublicKey would quietly derive the public half of a private key: a private key in the configuration is a
    // mistake to report, not to work around.
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(source)) throw new PartnerConfigError(`${where} is a private key; configure its public key.`);
    try {
      key = crypto.createPublicKey(source);
    } catch {
      throw new PartnerConfigError(`${where} is not a PEM public key.`);
    }
  } else {
    for (const member of PRIVATE_JWK_MEMBERS) {
      if (member in source) throw new PartnerConfigError(`${where} is not a public key (its JWK has "${member}").`);
    }
    try {
      key = crypto.createPublicKey({ key: source, format: 'jwk' });
    } catch {
      throw new PartnerConfigError(`${where} is not a usable public JWK.`);
    }
  }
  const alg = algorithmOf(key);
  if (!alg) throw new PartnerConfigError(`${where} must be an Ed25519 or ECDSA P-256 key.`);
  if (typeof source !== 'string' && source.alg !== undefined && !JWK_ALGS[alg].includes(source.alg as string)) {
    throw new PartnerConfigError(`${where} declares "alg": "${String(source.alg)}", which is not a ${alg} key's.`);
  }
  return { key, alg };
}

function signBytes(alg: PartnerSignatureAlgorithm, data: Buffer, key: crypto.KeyObject): Buffer {
  return alg === 'ed25519' ? crypto.sign(null, data, key) : crypto.sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' });
}

function verifyBytes(alg: PartnerSignatureAlgorithm, data: Buffer, key: crypto.KeyObject, signature: Buffer): boolean {
  // Both algorithms' signatures are exactly 64 bytes (ECDSA as r‖s: RFC 9421 §3.3.4, not DER).
  if (signature.length !== 64) return false;
  try {
    return alg === 'ed25519'
      ? crypto.verify(null, data, key, signature)
      : crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Content-Digest (RFC 9530).

const DIGEST_ALGORITHMS: Record<string, string> = { 'sha-256': 'sha256', 'sha-512': 'sha512' };

/** The `Content-Digest` value for a body: `sha-256=:<base64>:`. */
export function contentDigest(body: Buffer | string): string {
  return `sha-256=:${crypto.createHash('sha256').update(body).digest('base64')}:`;
}

/** Throws `digest_mismatch` unless the field has a sha-256 digest and every digest it names matches the body. */
function checkContentDigest(field: string, body: Buffer): void {
  let digests: Map<string, DictionaryMember>;
  try {
    digests = parseDictionary(field);
  } catch {
    throw new PartnerRequestRefused('digest_mismatch', 'The Content-Digest field cannot be read (RFC 9530).');
  }
  if (!digests.has('sha-256')) throw new PartnerRequestRefused('digest_mismatch', 'The Content-Digest field has no sha-256 digest.');
  for (const [name, member] of digests) {
    const hash = DIGEST_ALGORITHMS[name];
    if (!hash) continue; // RFC 9530 §2: algorithms the recipient does not support are ignored.
    if (member.kind !== 'item' || member.value.type !== 'bytes') {
      throw new PartnerRequestRefused('digest_mismatch', `The Content-Digest ${name} value is not a byte sequence.`);
    }
    const actual = crypto.createHash(hash).update(body).digest();
    if (!actual.equals(member.value.value)) throw new PartnerRequestRefused('digest_mismatch', `The body does not match its Content-Digest (${name}).`);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The verifier.

export interface PartnerVerifierOptions {
  partners: readonly CompliancePartnerConfig[];
  /** Milliseconds since the epoch (the app's clock). */
  now: () => number;
  /** How far `created` may be from `now`, either way; `DEFAULT_MAX_SKEW_SECONDS` when not given. */
  maxSkewSeconds?: number;
  /** Where used nonces are remembered; an in-process memory of `NONCE_MEMORY_SIZE` when not given. */
  nonces?: PartnerNonceMemory;
}

interface RegisteredKey {
  partnerId: string;
  tenantIds: readonly string[];
  keyId: string;
  key: crypto.KeyObject;
  alg: PartnerSignatureAlgorithm;
}

function registerKeys(partners: readonly CompliancePartnerConfig[]): Map<string, RegisteredKey> {
  const keys = new Map<string, RegisteredKey>();
  const partnerIds = new Set<string>();
  for (const partner of partners) {
    if (typeof partner.id !== 'string' || partner.id === '') throw new PartnerConfigError('A compliance partner has no id.');
    if (partnerIds.has(partner.id)) throw new PartnerConfigError(`The compliance partner id "${partner.id}" is used twice.`);
    partnerIds.add(partner.id);
    if (partner.tenantIds.some((t) => typeof t !== 'string' || t === '')) throw new PartnerConfigError(`Partner "${partner.id}" has an empty tenant id.`);
    const tenantIds = Object.freeze([...new Set(partner.tenantIds)]);
    for (const { keyId, publicKey } of partner.keys) {
      if (typeof keyId !== 'string' || keyId === '' || !/^[\x20-\x7e]+$/.test(keyId)) {
        throw new PartnerConfigError(`Partner "${partner.id}" has a key id that is empty or not printable ASCII.`);
      }
      if (keys.has(keyId)) throw new PartnerConfigError(`The key id "${keyId}" is configured twice.`);
      const { key, alg } = importPublicKey(`Key "${keyId}" of partner "${partner.id}"`, publicKey);
      keys.set(keyId, { partnerId: partner.id, tenantIds, keyId, key, alg });
    }
  }
  return keys;
}

function stringParam(params: Parameters, name: string): string | undefined {
  const value = params.get(name);
  if (value === undefined) return undefined;
  if (value.type !== 'string') throw new PartnerRequestRefused('bad_signature', `The signature parameter "${name}" must be a string.`);
  return value.value;
}

function integerParam(params: Parameters, name: string): number | undefined {
  const value = params.get(name);
  if (value === undefined) return undefined;
  if (value.type !== 'integer') throw new PartnerRequestRefused('bad_signature', `The signature parameter "${name}" must be an integer.`);
  return value.value;
}

export function createPartnerVerifier(opts: PartnerVerifierOptions) {
  const { now } = opts;
  const maxSkew = opts.maxSkewSeconds ?? DEFAULT_MAX_SKEW_SECONDS;
  if (!Number.isFinite(maxSkew) || maxSkew <= 0) throw new PartnerConfigError('maxSkewSeconds must be a positive number.');
  const nonces = opts.nonces ?? createNonceMemory({ now });
  const keys = registerKeys(opts.partners);

  /** Checks one request; answers who signed it. Throws PartnerRequestRefused or PartnerNonceMemoryFull. */
  async function verify(request: PartnerRequest): Promise<VerifiedPartner> {
    const fields = fieldValues(request.headers);
    const inputField = fields.get('signature-input');
    const signatureField = fields.get('signature');
    if (!inputField || !signatureField) throw new PartnerRequestRefused('unsigned', 'The request has no HTTP message signature (Signature-Input and Signature).');

    let inputs: Map<string, DictionaryMember>;
    let signatures: Map<string, DictionaryMember>;
    try {
      inputs = parseDictionary(inputField);
      signatures = parseDictionary(signatureField);
    } catch {
      throw new PartnerRequestRefused('bad_signature', 'The Signature-Input or Signature field is not a valid structured field (RFC 8941).');
    }
    if (inputs.size === 0) throw new PartnerRequestRefused('unsigned', 'The Signature-Input field names no signature.');

    // The first signature by a registered key is the partner's; others (a proxy's) are not ours to judge.
    let chosen: { label: string; input: InnerList; key: RegisteredKey } | undefined;
    let anyKeyId = false;
    for (const [label, member] of inputs) {
      if (member.kind !== 'innerList') throw new PartnerRequestRefused('bad_signature', `The Signature-Input member "${label}" is not an inner list.`);
      const keyId = member.params.get('keyid');
      if (keyId === undefined) continue;
      anyKeyId = true;
      const key = keyId.type === 'string' ? keys.get(keyId.value) : undefined;
      if (key) {
        chosen = { label, input: member, key };
        break;
      }
    }
    if (!chosen) {
      if (!anyKeyId) throw new PartnerRequestRefused('missing_component', 'The signature has no "keyid" parameter.');
      throw new PartnerRequestRefused('unknown_key', 'The signature\'s "keyid" is not a key registered for a compliance partner.');
    }
    const { label, input, key } = chosen;

    const signature = signatures.get(label);
    if (!signature || signature.kind !== 'item' || signature.value.type !== 'bytes') {
      throw new PartnerRequestRefused('bad_signature', `The Signature field has no byte sequence labelled "${label}".`);
    }

    const created = integerParam(input.params, 'created');
    const expires = integerParam(input.params, 'expires');
    const nonce = stringParam(input.params, 'nonce');
    const alg = stringParam(input.params, 'alg');
    if (created === undefined) throw new PartnerRequestRefused('missing_component', 'The signature has no "created" parameter.');
    if (nonce === undefined) throw new PartnerRequestRefused('missing_component', 'The signature has no "nonce" parameter.');
    if (nonce.length === 0 || nonce.length > MAX_NONCE_LENGTH) {
      throw new PartnerRequestRefused('bad_signature', `The signature "nonce" must be 1 to ${MAX_NONCE_LENGTH} characters.`);
    }
    if (alg !== undefined && alg !== key.alg) {
      throw new PartnerRequestRefused('bad_signature', `The signature "alg" is "${alg}", but key "${key.keyId}" is a ${key.alg} key.`);
    }

    let covered: Set<string>;
    try {
      covered = new Set(coveredComponents(input));
    } catch (err) {
      if (!(err instanceof SignatureBaseError)) throw err;
      throw new PartnerRequestRefused('bad_signature', err.message);
    }
    for (const name of REQUIRED_COMPONENTS) {
      if (!covered.has(name)) throw new PartnerRequestRefused('missing_component', `The signature must cover "${name}".`);
    }
    for (const name of COVERED_WHEN_PRESENT) {
      if (fields.has(name) && !covered.has(name)) throw new PartnerRequestRefused('missing_component', `The request has "${name}": the signature must cover it.`);
    }

    let base: string;
    try {
      base = buildSignatureBase(request, input);
    } catch (err) {
      if (!(err instanceof SignatureBaseError)) throw err;
      throw new PartnerRequestRefused(err.kind === 'absent' ? 'missing_component' : 'bad_signature', err.message);
    }
    if (!verifyBytes(key.alg, Buffer.from(base, 'latin1'), key.key, signature.value.value)) {
      throw new PartnerRequestRefused('bad_signature', `The signature does not verify with key "${key.keyId}".`);
    }

    // Authenticated from here on: the remaining checks can say precisely what is wrong.
    const nowMs = now();
    if (created * 1000 < nowMs - maxSkew * 1000) throw new PartnerRequestRefused('stale', `The signature was created more than ${maxSkew} s ago.`);
    if (created * 1000 > nowMs + maxSkew * 1000) throw new PartnerRequestRefused('stale', `The signature is created more than ${maxSkew} s in the future.`);
    if (expires !== undefined && expires * 1000 < nowMs) throw new PartnerRequestRefused('stale', 'The signature has expired ("expires").');

    checkContentDigest(fields.get('content-digest')!, request.body);

    // Last, so only a request that passed everything else uses up its nonce. Remembered until `created` leaves the
    // window: no request with this nonce could be accepted after that anyway.
    if (await nonces.seen(JSON.stringify([key.keyId, nonce]), (created + maxSkew) * 1000 + 1)) {
      throw new PartnerRequestRefused('replayed', 'The signature\'s "nonce" has been used before.');
    }
    return { partnerId: key.partnerId, tenantIds: key.tenantIds, keyId: key.keyId, created, nonce };
  }

  return { verify };
}

export type PartnerVerifier = ReturnType<typeof createPartnerVerifier>;

/** Throws `tenant_not_allowed` unless the verified partner may manage `tenantId`. */
export function assertTenantAllowed(partner: Pick<VerifiedPartner, 'partnerId' | 'tenantIds'>, tenantId: string): void {
  if (!partner.tenantIds.includes(tenantId)) {
    throw new PartnerRequestRefused('tenant_not_allowed', `Partner "${partner.partnerId}" may not manage tenant "${tenantId}".`);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The partner's side: signing (for tests, and as executable documentation of the contract).

export interface PartnerSigningOptions {
  method: string;
  /** The absolute URI the request is sent to. */
  url: string;
  /** The request's other fields (`content-type`, `date`…); covered ones are signed as given. */
  headers?: HeaderBag;
  body?: Buffer | string;
  keyId: string;
  /** The partner's private key: a KeyObject, a PEM PKCS#8 / SEC1 key, or a private JWK. */
  privateKey: crypto.KeyObject | string | crypto.JsonWebKey;
  /** Unix seconds; the current time when not given. */
  created?: number;
  /** 128 random bits when not given; null leaves the parameter out (to test a refusal). */
  nonce?: string | null;
  /** The `alg` parameter written: the key's algorithm when not given; null leaves it out. The signature itself is
   *  always made with the key's own algorithm (so a different value here only tests a refusal). */
  alg?: string | null;
  /** The Signature-Input label; `sig1` when not given. */
  label?: string;
  /** The covered components, in order; `REQUIRED_COMPONENTS` plus the `COVERED_WHEN_PRESENT` fields present. */
  components?: readonly string[];
}

export interface SignedPartnerRequest {
  /** The fields to add to the request. */
  headers: { 'content-digest': string; 'signature-input': string; signature: string };
  /** The RFC 9421 signature base that was signed. */
  signatureBase: string;
}

/** Signs a request as a compliance partner does: Content-Digest, then Signature-Input and Signature. */
export function signPartnerRequest(opts: PartnerSigningOptions): SignedPartnerRequest {
  const privateKey =
    opts.privateKey instanceof crypto.KeyObject
      ? opts.privateKey
      : typeof opts.privateKey === 'string'
        ? crypto.createPrivateKey(opts.privateKey)
        : crypto.createPrivateKey({ key: opts.privateKey, format: 'jwk' });
  const keyAlg = algorithmOf(privateKey);
  if (privateKey.type !== 'private' || !keyAlg) throw new TypeError('The signing key must be an Ed25519 or ECDSA P-256 private key.');

  const body = opts.body ?? Buffer.alloc(0);
  const headers: Record<string, string | readonly string[] | number | undefined> = {};
  for (const [name, value] of Object.entries(opts.headers ?? {})) {
    if (name.toLowerCase() !== 'content-digest') headers[name] = value;
  }
  const digest = contentDigest(body);
  headers['content-digest'] = digest;
  const fields = fieldValues(headers);
  const components = opts.components ?? [...REQUIRED_COMPONENTS, ...COVERED_WHEN_PRESENT.filter((name) => fields.has(name))];

  const params: Parameters = new Map();
  params.set('created', { type: 'integer', value: opts.created ?? Math.floor(Date.now() / 1000) });
  params.set('keyid', { type: 'string', value: opts.keyId });
  const alg = opts.alg === undefined ? keyAlg : opts.alg;
  if (alg !== null) params.set('alg', { type: 'string', value: alg });
  const nonce = opts.nonce === undefined ? crypto.randomBytes(16).toString('base64url') : opts.nonce;
  if (nonce !== null) params.set('nonce', { type: 'string', value: nonce });
  const input: InnerList = {
    kind: 'innerList',
    items: components.map((name) => ({ kind: 'item', value: { type: 'string', value: name }, params: new Map() })),
    params,
  };

  let signatureBase: string;
  try {
    signatureBase = buildSignatureBase({ method: opts.method, url: opts.url, headers }, input);
  } catch (err) {
    if (err instanceof SignatureBaseError) throw new TypeError(err.message);
    throw err;
  }
  const label = opts.label ?? 'sig1';
  if (!/^[a-z*][a-z0-9_\-.*]*$/.test(label)) throw new TypeError(`"${label}" is not a structured-field key.`);
  const signature = signBytes(keyAlg, Buffer.from(signatureBase, 'latin1'), privateKey);
  return {
    headers: {
      'content-digest': digest,
      'signature-input': `${label}=${serializeInnerList(input)}`,
      signature: `${label}=${serializeBareItem({ type: 'bytes', value: signature })}`,
    },
    signatureBase,
  };
}
