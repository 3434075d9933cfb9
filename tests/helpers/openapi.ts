/**
 * Contract checks against schema/openapi.yaml: `expectToMatchSpec(res, method, pathTemplate)` asserts that a real
 * response is one the document describes — the status is listed for the operation, the media type is listed for
 * that status, the body validates against its schema, and every required response header is present and valid.
 *
 * The document is loaded once per process and added to Ajv (JSON Schema 2020-12) whole, under an $id; each
 * response schema is then compiled by JSON pointer into the document, so `$ref`s between schemas resolve exactly
 * as an OpenAPI 3.1 tool would resolve them.
 *
 * Responses the document describes globally rather than per operation (see the spec's introduction):
 * - a path that is not in the document answers 404 (`components/responses/NotFound`); under `/v1/` and `/admin/`,
 *   where the token, device and role are checked before routing, also 401 (`Unauthorized`) or 403 (`Forbidden`),
 *   and under `/v1/` 400 (`BadRequest`) for a malformed `X-Device-Id`;
 * - a documented path called with a method it does not list answers 405 (`components/responses/MethodNotAllowed`)
 *   with an `Allow` header naming exactly the documented methods (plus HEAD for GET).
 */
import { AssertionError } from 'node:assert';
import fs from 'node:fs';
import path from 'node:path';
import type supertest from 'supertest';
import YAML from 'yaml';
import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import addFormats from 'ajv-formats';

export const SPEC_FILE = path.resolve(__dirname, '../../schema/openapi.yaml');
const SPEC_ID = 'https://pigeon.invalid/schema/openapi.yaml';

/** Path prefixes whose every path, documented or not, checks the token (401) and device or role (403) first. */
export const GUARDED_PREFIXES = ['/v1/', '/admin/'];
/** Path prefixes whose every path, documented or not, checks `X-Device-Id` first (400 when it is malformed). */
export const DEVICE_GATED_PREFIXES = ['/v1/'];

/** The operation keys of an OpenAPI Path Item. */
export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

// The document is a free-form JSON tree here; a narrow type would only be cast away again.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

interface Loaded {
  doc: Json;
  ajv: Ajv2020;
  validators: Map<string, ValidateFunction>;
}

let loaded: Loaded | undefined;

/** The parsed document (loaded and compiled once per process). */
export function loadSpec(): Json {
  return load().doc;
}

function load(): Loaded {
  if (loaded) return loaded;
  const doc = YAML.parse(fs.readFileSync(SPEC_FILE, 'utf8'));
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema(doc, SPEC_ID);
  loaded = { doc, ajv, validators: new Map() };
  return loaded;
}

/** RFC 6901 escaping of one pointer token. */
export function escapePointerToken(token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** Builds a JSON pointer ("/a/b~1c") from raw tokens. */
export function pointer(...tokens: string[]): string {
  return tokens.map((t) => '/' + escapePointerToken(t)).join('');
}

/** The value at a local JSON pointer ("/a/b"), or undefined. */
export function resolvePointer(doc: Json, ptr: string): Json {
  if (ptr === '') return doc;
  let node = doc;
  for (const raw of ptr.slice(1).split('/')) {
    const token = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || !Object.prototype.hasOwnProperty.call(node, token)) return undefined;
    node = node[token];
  }
  return node;
}

/** Follows `$ref`s of a non-schema object (Response, Header, Parameter) to the object itself and its pointer. */
function deref(doc: Json, ptr: string): { node: Json; ptr: string } {
  const seen = new Set<string>();
  let node = resolvePointer(doc, ptr);
  while (node && typeof node === 'object' && typeof node.$ref === 'string') {
    const ref: string = node.$ref;
    if (!ref.startsWith('#')) throw new Error(`external $ref ${ref} at ${ptr} is not supported`);
    if (seen.has(ref)) throw new Error(`$ref cycle at ${ref}`);
    seen.add(ref);
    ptr = decodeURIComponent(ref.slice(1));
    node = resolvePointer(doc, ptr);
    if (node === undefined) throw new Error(`unresolved $ref ${ref}`);
  }
  return { node, ptr };
}

/** A validator for the schema at a pointer into the document, compiled on first use. */
function validatorAt(ptr: string): ValidateFunction {
  const { ajv, validators } = load();
  let v = validators.get(ptr);
  if (!v) {
    const uri = `${SPEC_ID}#${ptr.split('/').map(encodeURIComponent).join('/')}`;
    v = ajv.getSchema(uri);
    if (!v) throw new Error(`no schema at ${ptr}`);
    validators.set(ptr, v);
  }
  return v;
}

/** Validates a value against the schema at a pointer; returns the errors (empty when valid). */
export function validateAt(ptr: string, value: unknown): ErrorObject[] {
  const v = validatorAt(ptr);
  return v(value) ? [] : [...(v.errors ?? [])];
}

/** Every operation the document describes. */
export function specOperations(): Array<{ method: string; path: string }> {
  const doc = loadSpec();
  const out: Array<{ method: string; path: string }> = [];
  for (const [p, item] of Object.entries<Json>(doc.paths ?? {})) {
    for (const method of HTTP_METHODS) if (item?.[method]) out.push({ method, path: p });
  }
  return out;
}

/** Media type essence: lower case, without parameters. */
function essence(contentType: string | undefined): string | undefined {
  return contentType?.split(';')[0]?.trim().toLowerCase() || undefined;
}

function mediaMatches(range: string, type: string): boolean {
  const r = range.toLowerCase();
  if (r === type || r === '*/*') return true;
  return r.endsWith('/*') && type.startsWith(r.slice(0, -1));
}

function fail(res: supertest.Response, where: string, problems: string[]): never {
  const body = typeof res.text === 'string' ? res.text : JSON.stringify(res.body);
  throw new AssertionError({
    message:
      `${where}: response does not match schema/openapi.yaml\n` +
      problems.map((p) => `  - ${p}`).join('\n') +
      `\n  status ${res.status}, content-type ${res.headers['content-type'] ?? '(none)'}` +
      `\n  body: ${(body ?? '').slice(0, 600)}`,
  });
}

function formatErrors(prefix: string, errors: ErrorObject[]): string[] {
  return errors.map((e) => `${prefix}${e.instancePath || '/'} ${e.message ?? e.keyword} ${JSON.stringify(e.params)}`);
}

/** A count of responses checked in this process, for reporting. */
export const checked = { responses: 0 };

/**
 * Asserts that `res` is a response the document allows for `method pathTemplate` (e.g. `get`, `/v1/items/{id}`).
 * Throws an AssertionError listing every mismatch.
 */
export function expectToMatchSpec(res: supertest.Response, method: string, pathTemplate: string): void {
  const doc = loadSpec();
  const m = method.toLowerCase();
  const where = `${m.toUpperCase()} ${pathTemplate} → ${res.status}`;
  const pathItem = doc.paths?.[pathTemplate];
  // HEAD is implied by GET (same status and headers, no body) unless the document lists it on its own.
  const operation = pathItem?.[m] ?? (m === 'head' ? pathItem?.get : undefined);
  const operationMethod = pathItem?.[m] ? m : 'get';

  let responsePtr: string;
  const problems: string[] = [];
  if (operation) {
    const responses = operation.responses ?? {};
    const key = [String(res.status), `${String(res.status)[0]}XX`, 'default'].find((k) => responses[k] !== undefined);
    if (!key) fail(res, where, [`status ${res.status} is not documented (documented: ${Object.keys(responses).join(', ')})`]);
    responsePtr = pointer('paths', pathTemplate, operationMethod, 'responses', key);
  } else if (pathItem) {
    if (res.status !== 405) fail(res, where, [`${m.toUpperCase()} is not an operation of ${pathTemplate}; only 405 is documented for it`]);
    responsePtr = pointer('components', 'responses', 'MethodNotAllowed');
    const documented = HTTP_METHODS.filter((x) => pathItem[x]).map((x) => x.toUpperCase());
    if (documented.includes('GET') && !documented.includes('HEAD')) documented.push('HEAD');
    const allow = String(res.headers.allow ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    if ([...allow].sort().join(',') !== [...documented].sort().join(',')) {
      problems.push(`Allow is "${allow.join(', ')}" but the documented methods are ${documented.join(', ')}`);
    }
  } else if (res.status === 404) {
    responsePtr = pointer('components', 'responses', 'NotFound');
  } else if (res.status === 401 && GUARDED_PREFIXES.some((p) => pathTemplate.startsWith(p))) {
    responsePtr = pointer('components', 'responses', 'Unauthorized');
  } else if (res.status === 403 && GUARDED_PREFIXES.some((p) => pathTemplate.startsWith(p))) {
    responsePtr = pointer('components', 'responses', 'Forbidden');
  } else if (res.status === 400 && DEVICE_GATED_PREFIXES.some((p) => pathTemplate.startsWith(p))) {
    responsePtr = pointer('components', 'responses', 'BadRequest');
  } else {
    fail(res, where, [
      `${pathTemplate} is not a documented path (an undocumented path may only answer 404, or 401/403 under ` +
        `${GUARDED_PREFIXES.join(' and ')}, or 400 under ${DEVICE_GATED_PREFIXES.join(' and ')})`,
    ]);
  }

  const { node: response, ptr: resolvedPtr } = deref(doc, responsePtr);
  if (!response || typeof response !== 'object') fail(res, where, [`no Response object at ${responsePtr}`]);

  // Headers: every required one present, every present documented one valid.
  for (const name of Object.keys(response.headers ?? {})) {
    const { node: header, ptr: headerPtr } = deref(doc, `${resolvedPtr}${pointer('headers', name)}`);
    const value = res.headers[name.toLowerCase()];
    if (value === undefined) {
      if (header?.required) problems.push(`required header ${name} is missing`);
      continue;
    }
    if (header?.schema) {
      const text = Array.isArray(value) ? value.join(', ') : String(value);
      problems.push(...formatErrors(`header ${name}`, validateAt(`${headerPtr}/schema`, text)));
    }
  }

  // Body: the media type must be documented for this status, and JSON bodies must validate.
  const content = response.content as Record<string, Json> | undefined;
  const type = essence(res.headers['content-type']);
  const isHead = m === 'head';
  if (!content || Object.keys(content).length === 0) {
    const hasBody = (typeof res.text === 'string' && res.text.length > 0) || type !== undefined;
    if (hasBody && !isHead) problems.push(`the response has a body (${type ?? 'no content-type'}) but none is documented`);
  } else if (!type) {
    if (!isHead) problems.push(`no Content-Type; documented: ${Object.keys(content).join(', ')}`);
  } else {
    const media = Object.keys(content).find((k) => k.toLowerCase() === type) ?? Object.keys(content).find((k) => mediaMatches(k, type));
    if (!media) {
      problems.push(`media type ${type} is not documented for this status (documented: ${Object.keys(content).join(', ')})`);
    } else if (!isHead && content[media]?.schema !== undefined) {
      const schemaPtr = `${resolvedPtr}${pointer('content', media, 'schema')}`;
      const isJson = type === 'application/json' || type.endsWith('+json');
      let value: unknown;
      let readable = true;
      if (isJson) {
        try {
          value = typeof res.text === 'string' ? JSON.parse(res.text) : res.body;
        } catch (err) {
          problems.push(`the body is not valid JSON: ${(err as Error).message}`);
          readable = false;
        }
      } else if (typeof res.text === 'string') {
        value = res.text;
      } else if (Buffer.isBuffer(res.body)) {
        value = res.body.toString('utf8');
      } else {
        readable = false; // a binary body the client did not buffer: the media type check above is all we can do
      }
      if (readable) problems.push(...formatErrors('body', validateAt(schemaPtr, value)));
      if (isJson && readable && (type === 'application/problem+json')) {
        const requestId = res.headers['x-request-id'];
        const body = value as { requestId?: unknown } | null;
        if (body && typeof body === 'object' && body.requestId !== requestId) {
          problems.push(`problem requestId ${JSON.stringify(body.requestId)} differs from X-Request-Id ${JSON.stringify(requestId)}`);
        }
      }
    }
  }

  if (problems.length) fail(res, where, problems);
  checked.responses++;
}
