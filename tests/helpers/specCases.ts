/**
 * Security cases derived from schema/openapi.yaml, so a newly documented route is covered without anyone
 * remembering to add it:
 * - `specOperations()` — every operation Pigeon's own routes answer, with its path, query and header parameters and
 *   request body schema; `providerOperations()` — the same for the operations the built-in identity provider answers
 *   itself (marked `x-pigeon-served-by: identity-provider`). Those are oidc-provider's handlers, not Pigeon's: they
 *   take no mailbox ids (nothing for the id table) and follow OAuth's rules (unknown parameters are ignored, errors
 *   are RFC 6749 JSON or a page), so only the hostile corpus, which is told what an OAuth server must answer, takes
 *   them (`hostileCases(c, ops)`);
 * - the id table — which parameter or body member of which operation carries which kind of id. It is the one thing
 *   the document cannot say; `unclassifiedSlots()` names every parameter or id-like member it does not classify
 *   (tests/security/bola.test.ts fails on any), so a future id-taking route cannot silently escape the isolation
 *   property;
 * - `validBody()` — a request body each operation accepts, with its ids taken from a resolver (so a test can swap
 *   exactly one of them for a foreign one);
 * - `hostileCases()` — the hostile-input corpus, per operation;
 * - `shapedValue()` — fast-check arbitraries for values shaped like a schema but often wrong;
 * - `buildWorld()` — the fixtures the cases run against: users in two tenants, each with a registered device,
 *   folders, mail with attachments, sync tokens (hierarchy, item and conversation), a published S/MIME certificate,
 *   a meeting it organises (with an attendee outside the server), a contact, a diagnostics incident and a shared
 *   mailbox it is the one member of, and an administrator per tenant with an access rule, a shared mailbox without members and one
 *   (inert) entry of each kind in its tenant's access configuration;
 * - `testCompliancePartner()` — a compliance partner of the test's own, to sign requests to the partner API (whose
 *   operations are `access: 'partner'`: no token reaches them).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import fc from 'fast-check';
import { HTTP_METHODS, loadSpec, pointer, resolvePointer } from './openapi';
import { opensslWorkspace } from './openssl';
import type { TestContext } from './testApp';
import { signPartnerRequest } from '../../server/access/compliancePartner';
import { createSharedMailboxes } from '../../server/mailbox/shared';

// The document is a free-form JSON tree here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

// ---------------------------------------------------------------------------------------------------------------
// Operations

export interface QueryParam {
  name: string;
  required: boolean;
  schema: Json;
}

export interface SpecOperation {
  /** `POST /v1/items/{itemId}/move` */
  key: string;
  method: string;
  path: string;
  /**
   * `public`: no token; `user`: a user's token (and a registered device under /v1/); `admin`: an admin's token;
   * `partner`: no token but an HTTP message signature of a configured compliance partner (the security scheme names
   * the `Signature` header), so no user's or administrator's credentials reach it. The identity provider's
   * operations are `public` here (it authenticates clients, not bearer tokens).
   */
  access: 'public' | 'user' | 'admin' | 'partner';
  /** Who answers: Pigeon's route table (also when absent), or the identity provider itself (`x-pigeon-served-by`). */
  servedBy?: 'pigeon' | 'identity-provider';
  pathParams: string[];
  query: QueryParam[];
  headers: string[];
  /** The shared parameters (`#/components/parameters/<name>`) it takes, by name: which kind of `If-Match`, say. */
  parameterRefs?: string[];
  body?: { mediaType: string; schemaPtr: string; schema: Json };
}

const deref = (doc: Json, node: Json): Json => {
  while (node && typeof node.$ref === 'string') node = resolvePointer(doc, decodeURIComponent(node.$ref.slice(1)));
  return node;
};

/** A schema with its `$ref`s followed at the top level (nested ones stay). */
export function resolveSchema(schema: Json): Json {
  const doc = loadSpec();
  let s = schema;
  // A $ref with siblings (`{$ref, maxLength}`) narrows the target: merge them.
  while (s && typeof s.$ref === 'string') {
    const { $ref, ...rest } = s;
    s = { ...resolvePointer(doc, decodeURIComponent(($ref as string).slice(1))), ...rest };
  }
  return s;
}

let operationsCache: SpecOperation[] | undefined;

/** Whether every way the security requirement allows is a request signature (a scheme on the `Signature` header). */
function signedOnly(doc: Json, security: Json): boolean {
  if (!Array.isArray(security) || security.length === 0) return false;
  const schemes = security.flatMap((requirement: Json) => Object.keys(requirement));
  return schemes.length > 0 && schemes.every((name: string) => {
    const scheme = doc.components?.securitySchemes?.[name];
    return scheme?.type === 'apiKey' && scheme.in === 'header' && String(scheme.name).toLowerCase() === 'signature';
  });
}

/** The operations Pigeon's own routes answer (the identity provider's are `providerOperations()`). */
export function specOperations(): SpecOperation[] {
  return allOperations().filter((o) => o.servedBy !== 'identity-provider');
}

/** The operations the built-in identity provider answers itself (`x-pigeon-served-by: identity-provider`). */
export function providerOperations(): SpecOperation[] {
  return allOperations().filter((o) => o.servedBy === 'identity-provider');
}

function allOperations(): SpecOperation[] {
  if (operationsCache) return operationsCache;
  const doc = loadSpec();
  const out: SpecOperation[] = [];
  for (const [path, item] of Object.entries<Json>(doc.paths)) {
    for (const method of HTTP_METHODS) {
      const op = item[method];
      if (!op) continue;
      const rawParams: Json[] = [...(item.parameters ?? []), ...(op.parameters ?? [])];
      const params = rawParams.map((p: Json) => deref(doc, p));
      const security = op.security ?? doc.security;
      let body: SpecOperation['body'];
      if (op.requestBody) {
        const rb = deref(doc, op.requestBody);
        const [mediaType] = Object.keys(rb.content);
        // Pointer to the schema inside the document, so Ajv resolves its $refs like any OpenAPI tool.
        const rbPtr = op.requestBody.$ref ? decodeURIComponent(op.requestBody.$ref.slice(1)) : pointer('paths', path, method, 'requestBody');
        body = { mediaType: mediaType!, schemaPtr: `${rbPtr}${pointer('content', mediaType!, 'schema')}`, schema: rb.content[mediaType!].schema };
      }
      const servedBy = op['x-pigeon-served-by'] === 'identity-provider' ? 'identity-provider' : 'pigeon';
      out.push({
        key: `${method.toUpperCase()} ${path}`,
        method,
        path,
        access:
          servedBy === 'identity-provider' || (Array.isArray(security) && security.length === 0)
            ? 'public'
            : signedOnly(doc, security)
              ? 'partner'
              : path.startsWith('/admin/')
                ? 'admin'
                : 'user',
        servedBy,
        pathParams: params.filter((p: Json) => p.in === 'path').map((p: Json) => p.name),
        query: params.filter((p: Json) => p.in === 'query').map((p: Json) => ({ name: p.name, required: !!p.required, schema: resolveSchema(p.schema) })),
        headers: params.filter((p: Json) => p.in === 'header').map((p: Json) => p.name),
        parameterRefs: rawParams.filter((p: Json) => typeof p.$ref === 'string').map((p: Json) => (p.$ref as string).slice((p.$ref as string).lastIndexOf('/') + 1)),
        body,
      });
    }
  }
  operationsCache = out;
  return out;
}

/** Operations that answer with a stream that stays open (never sent by the generic cases with valid credentials). */
export const STREAMING = new Set(['GET /v1/events']);

// ---------------------------------------------------------------------------------------------------------------
// The id table

export type IdKind =
  | 'folder'
  | 'item'
  /** the app-chosen `X-Device-Id` string */
  | 'deviceId'
  /** the server's device record id (the admin API's) */
  | 'deviceRecord'
  | 'rule'
  /**
   * a user id (the admin inventory filter also takes a username). On `/v1/people` it names a person of the caller's
   * tenant's directory: colleagues are visible there on purpose, another tenant's users are not.
   */
  | 'user'
  | 'folderSyncToken'
  | 'itemSyncToken'
  /**
   * Entries of a tenant's access configuration (one document per tenant). Their ids are chosen by the
   * administrator, so two tenants may both have a group `sales`, each its own: the property checked is that an id
   * only another tenant's document holds answers like an id no document holds. The world gives each
   * administrator's entries ids no other tenant uses.
   */
  | 'accessPolicy'
  | 'namedLocation'
  | 'group'
  | 'appProtectionPolicy'
  /** An S/MIME certificate a user published (`/v1/me/certificates`): the user's own, like a folder. */
  | 'certificateId'
  /**
   * Calendar and contacts (issue 18). Events and contacts are items, but the calendar and contacts operations
   * answer 404 for an item of another type: each slot needs the caller's own event or contact (a mail item would
   * make every request of the caller a 404 before it reached what the case is about, such as a stale If-Match).
   * Their ids are also among the party's `item` ids, so the generic item operations meet them too.
   */
  | 'event'
  | 'contact'
  /** A calendar folder (events are created in, viewed and exported from one): the user's own, like a folder. */
  | 'calendarFolder'
  /** A contacts folder (contacts are created in, imported into and exported from one). */
  | 'contactsFolder'
  /**
   * Mailbox views (issue 19). A conversation id: derived from the Message-IDs of the thread, so it names a thread
   * of the caller's own mailbox; another user's conversation is 404 conversationNotFound, as one that exists nowhere.
   */
  | 'conversation'
  | 'conversationSyncToken'
  /**
   * A shared mailbox, by id or address: in `X-Mailbox` (a user's: the one it is the member of), or an
   * administrator's tenant's (`/admin/v1/shared-mailboxes/{mailboxId}`). A shared mailbox the caller is not a
   * member of, or of another tenant, is answered exactly as one that exists nowhere.
   */
  | 'sharedMailbox'
  /**
   * A diagnostics incident (issue 20), `PGN-XXXX-XXXX`: a user's own (`/v1/diagnostics/{incidentId}`: another user's,
   * even of the same tenant, is 404 exactly as one that exists nowhere), or an administrator's tenant's.
   */
  | 'incident'
  /**
   * A background push channel (issue 20) the calling device registered (`/v1/push/channels/{channelId}`): another
   * device's or user's is 404, exactly as one that exists nowhere.
   */
  | 'pushChannel';

/** A parameter or member that names nothing another user could own; `value` is what to send when it is required. */
export interface NotAnId {
  notAnId: string;
  value?: string;
}
export type Slot = IdKind | NotAnId;

/**
 * Per operation: `path:<name>`, `query:<name>`, `header:<name>` and `body:<dotted path>` (`*` for array items).
 * Only the id-taking ones appear here; see NOT_ID_* below for the rest.
 */
export const ID_SLOTS: Record<string, Record<string, Slot>> = {
  'DELETE /v1/devices/{deviceId}': { 'path:deviceId': 'deviceId' },
  // My devices (issue 21, server/web/accountRoutes.ts): the caller's own device records; another user's is 404.
  'POST /account/v1/devices/{id}/wipe': { 'path:id': 'deviceRecord' },
  'DELETE /account/v1/devices/{id}': { 'path:id': 'deviceRecord' },
  'GET /v1/folders/sync': { 'query:token': 'folderSyncToken' },
  'POST /v1/folders': { 'body:parentId': 'folder' },
  'PATCH /v1/folders/{folderId}': { 'path:folderId': 'folder', 'body:parentId': 'folder' },
  'DELETE /v1/folders/{folderId}': { 'path:folderId': 'folder' },
  'GET /v1/folders/{folderId}/items/sync': { 'path:folderId': 'folder', 'query:token': 'itemSyncToken' },
  'GET /v1/items/{itemId}': { 'path:itemId': 'item' },
  'PATCH /v1/items/{itemId}': { 'path:itemId': 'item' },
  'DELETE /v1/items/{itemId}': { 'path:itemId': 'item' },
  'POST /v1/items/{itemId}/move': { 'path:itemId': 'item', 'body:destinationFolderId': 'folder' },
  'GET /v1/items/{itemId}/attachments/{attachmentId}': {
    'path:itemId': 'item',
    // Attachment ids number an item's parts (att1, att2..., or protected-0... of a protected message): the item id
    // in the path is what names the owner.
    'path:attachmentId': { notAnId: 'a part number within the item of the path', value: 'att1' },
  },
  'GET /v1/items/{itemId}/mime': { 'path:itemId': 'item' },
  'POST /v1/batch': { 'body:operations.*.id': 'item', 'body:operations.*.destinationFolderId': 'folder' },
  // attachItems attach the sender's own messages: another user's is 404 itemNotFound, as one that exists nowhere.
  'POST /v1/messages/send': { 'body:inReplyTo': 'item', 'body:attachItems.*': 'item' },
  'POST /v1/ping': { 'body:folderIds.*': 'folder' },
  'GET /v1/search': { 'query:folderId': 'folder' },
  // Information protection (issue 17).
  'DELETE /v1/me/certificates/{certificateId}': { 'path:certificateId': 'certificateId' },
  'GET /v1/directory/certificates': {
    // The directory is the tenant's on purpose: a colleague's address finds their published certificates (what a
    // sender encrypts to), another tenant's address finds nothing. The tenant filter stays, whatever it names.
    'query:address': { notAnId: "an address looked up in the caller's own tenant's directory", value: 'sec-nobody@example.com' },
  },
  'GET /admin/v1/devices': {
    'query:user': 'user',
    // Issue 21: the inventory's paging. A cursor is a position in the caller's own tenant's list (the tenant
    // filter stays, whatever it names); the sort is one of the fixed keys.
    'query:cursor': { notAnId: "a position in the caller's own tenant's inventory (sort key and record id): the tenant filter stays" },
    'query:sort': { notAnId: 'one of the fixed sort keys' },
  },
  // Issue 21: users, tenant and regions of the admin API (server/admin/usersRoutes.ts). Another tenant's user is
  // 404 notFound, as one that exists nowhere.
  'GET /admin/v1/users': { 'query:cursor': { notAnId: "a position (a username) in the caller's own tenant's user list: the tenant filter stays" } },
  'GET /admin/v1/users/{id}': { 'path:id': 'user' },
  'POST /admin/v1/users/{id}/disable': { 'path:id': 'user' },
  'POST /admin/v1/users/{id}/enable': { 'path:id': 'user' },
  'POST /admin/v1/users/{id}/reset-password': { 'path:id': 'user' },
  'POST /admin/v1/users/{id}/revoke-sessions': { 'path:id': 'user' },
  'POST /admin/v1/users/{id}/reset-mfa': { 'path:id': 'user' },
  'GET /admin/v1/audit': { 'query:cursor': { notAnId: "a position (a seq) in the caller's own tenant's audit log: the tenant filter stays" } },
  'GET /admin/v1/devices/{id}': { 'path:id': 'deviceRecord' },
  'DELETE /admin/v1/devices/{id}': { 'path:id': 'deviceRecord' },
  'POST /admin/v1/devices/{id}/{action}': {
    'path:id': 'deviceRecord',
    'path:action': { notAnId: 'one of the fixed device actions', value: 'allow' },
  },
  'GET /admin/v1/device-access-rules/{id}': { 'path:id': 'rule' },
  'PUT /admin/v1/device-access-rules/{id}': { 'path:id': 'rule' },
  'DELETE /admin/v1/device-access-rules/{id}': { 'path:id': 'rule' },
  'POST /admin/v1/users/{id}/messages': { 'path:id': 'user', 'query:folderId': 'folder' },
  // Conditional access (issue 16): the entries of the admin's tenant's access configuration, by kind.
  'POST /admin/v1/conditional-access/policies': { 'body:id': { notAnId: 'the id the administrator gives a new entry of its own document' } },
  'GET /admin/v1/conditional-access/policies/{id}': { 'path:id': 'accessPolicy' },
  'PUT /admin/v1/conditional-access/policies/{id}': { 'path:id': 'accessPolicy', 'body:id': { notAnId: "may only repeat the path's id (400 otherwise); the valid body leaves it out" } },
  'DELETE /admin/v1/conditional-access/policies/{id}': { 'path:id': 'accessPolicy' },
  'POST /admin/v1/named-locations': { 'body:id': { notAnId: 'the id the administrator gives a new entry of its own document' } },
  'GET /admin/v1/named-locations/{id}': { 'path:id': 'namedLocation' },
  'PUT /admin/v1/named-locations/{id}': { 'path:id': 'namedLocation', 'body:id': { notAnId: "may only repeat the path's id (400 otherwise); the valid body leaves it out" } },
  'DELETE /admin/v1/named-locations/{id}': { 'path:id': 'namedLocation' },
  'POST /admin/v1/groups': { 'body:id': { notAnId: 'the id the administrator gives a new entry of its own document' } },
  'GET /admin/v1/groups/{id}': { 'path:id': 'group' },
  'PUT /admin/v1/groups/{id}': { 'path:id': 'group', 'body:id': { notAnId: "may only repeat the path's id (400 otherwise); the valid body leaves it out" } },
  'DELETE /admin/v1/groups/{id}': { 'path:id': 'group' },
  'POST /admin/v1/app-protection-policies': { 'body:id': { notAnId: 'the id the administrator gives a new entry of its own document' } },
  'GET /admin/v1/app-protection-policies/{id}': { 'path:id': 'appProtectionPolicy' },
  'PUT /admin/v1/app-protection-policies/{id}': { 'path:id': 'appProtectionPolicy', 'body:id': { notAnId: "may only repeat the path's id (400 otherwise); the valid body leaves it out" } },
  'DELETE /admin/v1/app-protection-policies/{id}': { 'path:id': 'appProtectionPolicy' },
  'POST /admin/v1/conditional-access/what-if': {
    // Another tenant's user is 400 invalidRequest, as for a user that does not exist (tests/security/bola.test.ts).
    'body:userId': 'user',
    'body:clientId': { notAnId: "an OAuth client (registered apps are the server's, not a tenant's)" },
    'body:deviceId': { notAnId: "an app's device id, looked up together with userId (device ids are per user): it names nothing of its own" },
  },
  'GET /admin/v1/sign-ins': {
    // Filters of the admin's own tenant's log: another tenant's user or device filters down to nothing.
    'query:userId': 'user',
    'query:deviceId': 'deviceId',
    'query:clientId': { notAnId: "an OAuth client (registered apps are the server's, not a tenant's)" },
    'query:cursor': { notAnId: "a position (`<at>.<entry id>`) in the caller's own tenant's log: the tenant filter stays, whatever entry it names" },
  },
  'POST /admin/v1/users/{id}/risk': { 'path:id': 'user' },
  // Calendar and contacts (issue 18).
  'POST /v1/calendar/events': { 'body:folderId': 'calendarFolder' },
  'PUT /v1/calendar/events/{itemId}': {
    'path:itemId': 'event',
    'body:folderId': { notAnId: 'ignored by a replacement (an event moves with POST /v1/items/{itemId}/move); the valid body leaves it out' },
  },
  'DELETE /v1/calendar/events/{itemId}': { 'path:itemId': 'event' },
  'POST /v1/calendar/events/{itemId}/respond': { 'path:itemId': 'event' },
  'POST /v1/calendar/events/{itemId}/decline-counter': { 'path:itemId': 'event' },
  // The batch answers per operation (200, the operation's 404), as POST /v1/batch does. `event.folderId` is read by
  // a `create` only; the valid body is one `update`, which carries it and (as PUT does) ignores it.
  'POST /v1/calendar/batch': { 'body:operations.*.id': 'event', 'body:operations.*.event.folderId': 'calendarFolder' },
  'GET /v1/calendar/view': { 'query:folderId': 'calendarFolder' },
  'GET /v1/calendar/feed.ics': { 'query:folderId': 'calendarFolder' },
  'POST /v1/contacts': { 'body:folderId': 'contactsFolder' },
  'POST /v1/contacts/import': { 'query:folderId': 'contactsFolder' },
  'GET /v1/contacts/export.vcf': { 'query:folderId': 'contactsFolder' },
  'PUT /v1/contacts/{itemId}': {
    'path:itemId': 'contact',
    'body:folderId': { notAnId: "may only repeat the contact's own folder, which it is compared with and never looked up (400 otherwise); the valid body leaves it out" },
  },
  'PUT /v1/contacts/{itemId}/photo': { 'path:itemId': 'contact' },
  'DELETE /v1/contacts/{itemId}/photo': { 'path:itemId': 'contact' },
  // The directory (issue 18): a person of the caller's tenant. Another tenant's user is 404, as one that exists
  // nowhere; a colleague is visible on purpose (see IdKind `user`).
  'GET /v1/people/{userId}': { 'path:userId': 'user' },
  'GET /v1/people/{userId}/organization': { 'path:userId': 'user' },
  'GET /admin/v1/users/{userId}/directory': { 'path:userId': 'user' },
  // A manager of another tenant is 400 invalidRequest naming managerId, as one that exists nowhere.
  'PUT /admin/v1/users/{userId}/directory': { 'path:userId': 'user', 'body:managerId': 'user' },
  // The protection document is the administrator's tenant's, replaced whole: its ids name its own entries.
  'PUT /admin/v1/protection': {
    'body:templates.*.id': { notAnId: "the id the administrator gives a template of its tenant's own document" },
    'body:labels.*.id': { notAnId: "the GUID the administrator gives a label of its tenant's own catalogue" },
    'body:partners.*.id': { notAnId: "the id the administrator gives a partner of its tenant's own document" },
    'body:deliveryRules.*.id': { notAnId: "the id the administrator gives a delivery rule of its tenant's own document" },
    'body:deliveryRules.*.when.labelIds': { notAnId: 'labels of the same document (a reference to none is 400)' },
  },
  // Mailbox views (issue 19).
  'GET /v1/folders/{folderId}/conversations/sync': { 'path:folderId': 'folder', 'query:token': 'conversationSyncToken' },
  // The held ids are compared with the folder's window, never looked up elsewhere: one of another user's item is
  // answered `removed: deleted`, exactly as an id that exists nowhere (tests/security/bola.test.ts ANSWERED_AS_ABSENT).
  'POST /v1/folders/{folderId}/items/resync': { 'path:folderId': 'folder', 'body:held.*.id': 'item' },
  'POST /v1/conversations/{conversationId}/actions': { 'path:conversationId': 'conversation', 'body:folderId': 'folder', 'body:destinationFolderId': 'folder' },
  'POST /v1/items/{itemId}/classify': { 'path:itemId': 'item' },
  'POST /v1/items/{itemId}/report-junk': { 'path:itemId': 'item' },
  'DELETE /v1/mailbox/settings/focused-overrides': {
    'query:sender': { notAnId: "a sender address in the caller's own mailbox settings (none there: 404)", value: 'sec-nobody@example.com' },
  },
  'GET /admin/v1/shared-mailboxes/{mailboxId}': { 'path:mailboxId': 'sharedMailbox' },
  'PUT /admin/v1/shared-mailboxes/{mailboxId}/members/{userId}': { 'path:mailboxId': 'sharedMailbox', 'path:userId': 'user' },
  'DELETE /admin/v1/shared-mailboxes/{mailboxId}/members/{userId}': { 'path:mailboxId': 'sharedMailbox', 'path:userId': 'user' },
  // No user's or administrator's token reaches it (tests/security/hostile.test.ts: unsigned is 401 whatever else the
  // request holds). Which tenants' devices a signed request may reach is the partner's configured tenants (403
  // otherwise), proven with real signatures by tests/e2e/conditional-access.test.ts.
  // Diagnostics (issue 20).
  'GET /v1/diagnostics/{incidentId}': { 'path:incidentId': 'incident' },
  'GET /admin/v1/diagnostics/{incidentId}': { 'path:incidentId': 'incident' },
  'GET /admin/v1/diagnostics/{incidentId}/bundle': { 'path:incidentId': 'incident' },
  // Background push (issue 20): a channel of the calling device.
  'DELETE /v1/push/channels/{channelId}': { 'path:channelId': 'pushChannel' },
  'PUT /compliance/v1/devices/{deviceId}': {
    'path:deviceId': { notAnId: "a device of a user of the statement's tenant, which the partner must manage", value: 'sec-partner-device-000001' },
    'body:tenantId': { notAnId: "the tenant the statement is about, checked against the partner's configured tenants" },
  },
};

/** Every `/v1` operation takes the calling device's id in this header. */
export const DEVICE_HEADER = 'X-Device-Id';
/**
 * The operations that act on mailbox data take a shared mailbox in this header (kind `sharedMailbox`; the
 * document's *Shared mailboxes*); every other operation refuses it.
 */
export const MAILBOX_HEADER = 'X-Mailbox';

/** Query parameters that are not ids, by name (any operation). */
export const NOT_ID_QUERY = new Set(['maxChanges', 'loadMore', 'bodyBytes', 'bodyType', 'permanent', 'inline', 'q', 'limit', 'clientType', 'deviceModel', 'accessState', 'before', 'decision', 'since', 'start', 'end', 'occurrence']);

/** Header parameters whose name ends in "id" but that name nothing another user owns. */
export const NOT_ID_HEADERS: Record<string, string> = {
  'X-Request-Id': "the caller's own correlation id, echoed back",
  'Last-Event-ID': "a change counter of the watched mailbox (the caller's own, or the shared one X-Mailbox names)",
};

/** Body members that look like ids but are not resource ids, by dotted path (any operation). */
export const NOT_ID_BODY: Record<string, string> = {
  'operations.*.opId': 'chosen by the app to make a batch operation idempotent',
  'attachments.*.contentId': 'the MIME Content-ID the sender gives an inline image',
  client_id: 'the OAuth client, not a user resource',
  clientIds: 'OAuth clients (the approved-client-apps list), not user or tenant resources',
  device_id: "binds the caller's own sign-in to its device id (device ids are per user)",
  refresh_token: "the caller's own credential",
  token: "the caller's own credential (revocation)",
  token_type_hint: 'an enum',
};

const ID_LIKE = /(^id$|Id$|Ids$|_id$|^inReplyTo$|token)/;

/** Every member path of a schema (`a.b`, `list.*.c`), through $ref, allOf/oneOf/anyOf and array items. */
export function memberPaths(schema: Json, prefix = '', depth = 0): string[] {
  const s = resolveSchema(schema);
  if (!s || typeof s !== 'object' || depth > 8) return [];
  const out: string[] = [];
  for (const branch of [...(s.allOf ?? []), ...(s.oneOf ?? []), ...(s.anyOf ?? [])]) out.push(...memberPaths(branch, prefix, depth + 1));
  for (const [name, sub] of Object.entries<Json>(s.properties ?? {})) {
    const p = prefix ? `${prefix}.${name}` : name;
    out.push(p, ...memberPaths(sub, p, depth + 1));
  }
  if (s.items) out.push(...memberPaths(s.items, prefix ? `${prefix}.*` : '*', depth + 1).concat(prefix ? [`${prefix}.*`] : []));
  return [...new Set(out)];
}

/** The id-like slots of an operation the table does not classify (empty when it is complete). */
export function unclassifiedSlots(op: SpecOperation): string[] {
  const known = ID_SLOTS[op.key] ?? {};
  const missing: string[] = [];
  for (const p of op.pathParams) if (!known[`path:${p}`]) missing.push(`path:${p}`);
  for (const q of op.query) if (!known[`query:${q.name}`] && !NOT_ID_QUERY.has(q.name)) missing.push(`query:${q.name}`);
  for (const h of op.headers) {
    if (/id$/i.test(h) && h !== DEVICE_HEADER && !NOT_ID_HEADERS[h] && !known[`header:${h}`]) missing.push(`header:${h}`);
  }
  if (op.body) {
    for (const m of memberPaths(op.body.schema).filter((x) => !x.endsWith('.*'))) {
      const last = m.split('.').filter((x) => x !== '*').pop() ?? m;
      const idLike = ID_LIKE.test(last);
      // An array of ids is classified by its items (`folderIds.*`).
      if (idLike && !known[`body:${m}`] && !known[`body:${m}.*`] && !NOT_ID_BODY[m]) missing.push(`body:${m}`);
    }
  }
  return missing;
}

/** Table entries that name an operation or slot the document no longer has (a stale table hides nothing, but lies). */
export function staleSlots(): string[] {
  const ops = new Map(specOperations().map((o) => [o.key, o]));
  const stale: string[] = [];
  for (const [key, slots] of Object.entries(ID_SLOTS)) {
    const op = ops.get(key);
    if (!op) {
      stale.push(key);
      continue;
    }
    const members = op.body ? memberPaths(op.body.schema) : [];
    for (const slot of Object.keys(slots)) {
      const [where, name] = [slot.slice(0, slot.indexOf(':')), slot.slice(slot.indexOf(':') + 1)];
      const present =
        where === 'path' ? op.pathParams.includes(name) : where === 'query' ? op.query.some((q) => q.name === name) : where === 'header' ? op.headers.includes(name) : members.includes(name);
      if (!present) stale.push(`${key} ${slot}`);
    }
  }
  return stale;
}

/** Every (operation, id slot) pair: the placements of the isolation property. */
export function idPlacements(): Array<{ op: SpecOperation; slot: string; kind: IdKind }> {
  const out: Array<{ op: SpecOperation; slot: string; kind: IdKind }> = [];
  for (const op of specOperations()) {
    for (const [slot, kind] of Object.entries(ID_SLOTS[op.key] ?? {})) if (typeof kind === 'string') out.push({ op, slot, kind });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Requests built from an operation

/** Gives the id of a kind for a slot; a test swaps one slot's answer for a foreign id. */
export type IdResolver = (kind: IdKind, slot: string) => string;

export function fillPath(op: SpecOperation, id: IdResolver, override: Record<string, string> = {}): string {
  return op.path.replace(/\{([^}]+)\}/g, (_m, name: string) => {
    if (override[name] !== undefined) return override[name]!;
    const slot = ID_SLOTS[op.key]?.[`path:${name}`];
    if (!slot) throw new Error(`${op.key}: path parameter ${name} is not in the id table`);
    return encodeURIComponent(typeof slot === 'string' ? id(slot, `path:${name}`) : slot.value ?? 'x');
  });
}

/** Values for required query parameters that are not ids (the authorization request's: a valid one of `pigeon-app`). */
const REQUIRED_QUERY_VALUES: Record<string, string> = {
  q: 'quarterly',
  client_id: 'pigeon-app',
  response_type: 'code',
  redirect_uri: 'http://127.0.0.1/callback',
  code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
  code_challenge_method: 'S256',
  // The calendar view's range: January 2027, which holds the world's meeting (WORLD_MEETING).
  start: '2027-01-01T00:00:00Z',
  end: '2027-02-01T00:00:00Z',
};

/** The query an operation needs to succeed: its required parameters (ids from the resolver; a non-id's `value`). */
export function baseQuery(op: SpecOperation, id: IdResolver): Record<string, string> {
  const out: Record<string, string> = {};
  for (const q of op.query.filter((x) => x.required)) {
    const slot = ID_SLOTS[op.key]?.[`query:${q.name}`];
    const value = typeof slot === 'string' ? id(slot, `query:${q.name}`) : (slot?.value ?? REQUIRED_QUERY_VALUES[q.name]);
    if (value === undefined) throw new Error(`${op.key}: no value for the required query parameter ${q.name}`);
    out[q.name] = value;
  }
  return out;
}

export function queryString(q: Record<string, string>): string {
  const s = new URLSearchParams(q).toString();
  return s ? `?${s}` : '';
}

let serial = 0;
/** A value unique within the process (folder names, opIds), so a valid body never collides with an earlier one. */
export const unique = (prefix: string) => `${prefix}-${process.pid}-${++serial}`;

/** A small message with one attachment, as an MTA, the admin import or an app's own MIME would hand it over. */
export function rawMessage(opts: { id: string; to: string; subject: string; text?: string; from?: string }): Buffer {
  const pdf = Buffer.from(`%PDF-1.4 ${opts.subject}\n`).toString('base64');
  return Buffer.from(
    [
      `From: Sender <${opts.from ?? 'sender@example.org'}>`,
      `To: <${opts.to}>`,
      `Subject: ${opts.subject}`,
      'Date: Tue, 04 Mar 2025 10:00:00 +0000',
      `Message-ID: <${opts.id}>`,
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b1"',
      '',
      '--b1',
      'Content-Type: text/plain; charset=utf-8',
      '',
      opts.text ?? `The quarterly figures for ${opts.to}.`,
      '--b1',
      'Content-Type: application/pdf; name="figures.pdf"',
      'Content-Disposition: attachment; filename="figures.pdf"',
      'Content-Transfer-Encoding: base64',
      '',
      pdf,
      '--b1--',
      '',
    ].join('\r\n'),
  );
}

export interface BodyContext {
  id: IdResolver;
  /** The caller's email address (a send goes to oneself, so it never leaves the server). */
  email: string;
  username: string;
  password: string;
  /** The caller's tenant, which a compliance statement names; absent: a tenant no partner manages. */
  tenantId?: string;
}

/**
 * Entries of the access configuration that govern nothing: a policy that is `off` and names no real user, an app
 * protection policy for an app nobody signs in with. A valid body that lands changes what the document holds, never
 * how the world's users are judged (they keep syncing for the rest of the suite).
 */
const INERT_CONDITIONAL_ACCESS_POLICY = () => ({
  name: 'Security suite policy',
  state: 'off',
  assignments: { users: { include: { users: ['sec-nobody'] } }, locations: { include: ['any'] } },
  outcome: { grant: { controls: ['mfa'], operator: 'and' } },
});
/**
 * A protection document that changes no send, delivery or read: a template and a label nobody is made to use (no
 * default label, labelling not mandatory) and a delivery rule for an address no user has.
 */
const INERT_PROTECTION_DOCUMENT = () => ({
  templates: [{ id: unique('sec-template'), name: unique('Security suite template'), description: 'Used by nobody.', rights: ['view', 'reply'], expiry: { days: 7 } }],
  labels: [{ id: crypto.randomUUID(), name: unique('Security suite label'), priority: 1, colour: '#336699', tooltip: 'Used by nobody.' }],
  labelPolicy: { defaultLabel: null, mandatory: false, justifyDowngrade: false },
  partners: [],
  deliveryRules: [{ id: unique('sec-rule'), template: 'encrypt-only', when: { recipientAddresses: ['sec-nobody@example.invalid'] } }],
});
/**
 * A meeting's attendee outside the server: with no relay, the invitation bounces back to the organiser at once, so
 * the world's meetings reach no other party of the world (a leak scan would find them in the wrong mailbox).
 */
const OUTSIDE_ATTENDEE = 'sec-guest@example.invalid';
/**
 * The meeting every user of the world organises (`furnishUser`), in January 2027 (the calendar view's range). A
 * valid replacement gives it again: the same time, place and attendee change nothing significant, so it mails
 * nothing and the attendee keeps its place (a decline-counter can name it).
 */
const WORLD_MEETING = () => ({
  subject: 'Quarterly review',
  body: 'The figures first, then the plan.',
  start: '2027-01-12T09:00:00+01:00',
  end: '2027-01-12T10:00:00+01:00',
  timeZone: 'Europe/Berlin',
  location: 'Room Orion',
  attendees: [{ name: 'Security suite guest', address: OUTSIDE_ATTENDEE }],
  reminderMinutesBeforeStart: 15,
});
/** An event of the caller's own (no attendees, so creating it mails nothing): a short weekly series. */
const PERSONAL_SERIES = () => ({
  subject: 'Physiotherapy',
  start: '2027-01-20T10:00:00+01:00',
  end: '2027-01-20T10:30:00+01:00',
  timeZone: 'Europe/Berlin',
  reminderMinutesBeforeStart: 60,
  recurrence: { rrule: 'FREQ=WEEKLY;COUNT=4', exdates: ['2027-01-27T09:00:00Z'], rdates: [] },
  showAs: 'oof',
});
/** A contact with every field (its addresses outside the server). */
const CONTACT = () => ({
  displayName: 'Dana Auditor',
  givenName: 'Dana',
  surname: 'Auditor',
  emailAddresses: [{ address: 'sec-dana@example.invalid' }],
  phones: [{ type: 'mobile', number: '+1 555 0100' }],
  company: 'Example Audit',
  jobTitle: 'Auditor',
  department: 'Security',
  addresses: [{ type: 'business', street: '1 Main Street', city: 'Springfield', postalCode: '12345', country: 'US' }],
  birthday: '--04-01',
  notes: 'Met at the conference.\nAsk about the audit.',
});
/** One vCard 4.0 card, with a UID of its own (so each import adds a contact rather than updating the last one). */
const VCARD = () =>
  Buffer.from(
    ['BEGIN:VCARD', 'VERSION:4.0', `UID:urn:uuid:${crypto.randomUUID()}`, 'FN:Erin Imported', 'N:Imported;Erin;;;', 'EMAIL;TYPE=work:sec-erin@example.invalid', 'TEL;TYPE=cell:+1 555 0101', 'END:VCARD', ''].join('\r\n'),
  );
/** A small diagnostics bundle: one gzip'd log (`POST /v1/diagnostics`). */
const DIAGNOSTICS_BUNDLE = (text = 'Security suite diagnostics') => zlib.gzipSync(`${new Date(0).toISOString()} INFO ${text}\n`);
/**
 * A Web Push subscription as a browser hands it over (PushSubscription.toJSON()): a unique endpoint at a public push
 * service (nothing is sent there: the security suites never start background push's loops) and a fresh P-256 key.
 */
const WEB_PUSH_SUBSCRIPTION = () => {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  return {
    kind: 'webpush',
    endpoint: `https://push.example.net/wpush/${unique('sec-subscription')}`,
    keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: crypto.randomBytes(16).toString('base64url') },
  };
};
/** A 1×1 PNG: a contact photo (the server tells the type by the bytes). */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==', 'base64');

const INERT_NAMED_LOCATION = () => ({ name: 'Security suite network', trusted: false, ranges: ['192.0.2.0/24', '2001:db8:5ec::/48'] });
const INERT_GROUP = () => ({ name: 'Security suite group', members: ['sec-nobody'] });
const INERT_APP_PROTECTION_POLICY = () => ({
  name: 'Security suite app policy',
  apps: ['sec-unused-app'],
  pinRequired: true,
  minAppVersion: '1.0',
  blockCopyToUnmanagedApps: true,
  blockSaveAs: false,
  notificationContent: 'senderOnly',
  offlineGracePeriodMinutes: 720,
  offlineWipeAfterDays: 90,
  maxPinAttempts: 10,
  checkInIntervalMinutes: 30,
});

/**
 * A body each operation accepts (given ids it can see). Form bodies are objects (sent form-encoded); the raw
 * message import is a Buffer. A body operation missing here fails `validBody` loudly.
 */
const VALID_BODIES: Record<string, (c: BodyContext) => unknown> = {
  'POST /oauth2/token': (c) => ({ grant_type: 'password', client_id: 'pigeon-app', username: c.username, password: c.password }),
  'POST /oauth2/revoke': () => ({ token: 'not-a-token-of-anyone', client_id: 'pigeon-app' }),
  'POST /oauth2/device_authorization': () => ({ client_id: 'pigeon-cli', scope: 'offline_access mail', device_id: 'sec-cli-device-000001' }),
  'POST /oauth2/device': () => ({ xsrf: 'not-the-xsrf-of-any-page', user_code: 'BCDF-GHJK' }),
  'POST /oauth2/introspect': () => ({ token: 'not-a-token-of-anyone' }),
  'POST /v1/devices': () => ({ friendlyName: 'Security suite phone' }),
  // The wipe confirmation repeats the device's name: the suite's devices register under the name above.
  'POST /account/v1/devices/{id}/wipe': () => ({ confirm: 'Security suite phone' }),
  'POST /v1/devices/current/wipe-ack': () => ({ status: 'ok' }),
  'POST /v1/folders': (c) => ({ displayName: unique('Folder'), parentId: c.id('folder', 'body:parentId') }),
  'PATCH /v1/folders/{folderId}': (c) => ({ displayName: unique('Renamed'), parentId: c.id('folder', 'body:parentId') }),
  'PATCH /v1/items/{itemId}': () => ({ isFlagged: true, categories: ['Blue category'] }),
  'POST /v1/items/{itemId}/move': (c) => ({ destinationFolderId: c.id('folder', 'body:destinationFolderId') }),
  'POST /v1/batch': (c) => ({
    operations: [{ opId: unique('op'), op: 'move', id: c.id('item', 'body:operations.*.id'), destinationFolderId: c.id('folder', 'body:operations.*.destinationFolderId') }],
  }),
  'POST /v1/messages/send': (c) => ({
    to: [{ address: c.email }],
    subject: 'Re: quarterly',
    body: { contentType: 'text', content: 'Thanks.' },
    inReplyTo: c.id('item', 'body:inReplyTo'),
    attachItems: [c.id('item', 'body:attachItems.*')],
  }),
  // The app's own MIME: from and to the caller (anything else From is 403), so it never leaves the server.
  'POST /v1/messages/send-mime': (c) => rawMessage({ id: `${unique('own-mime')}@example.org`, to: c.email, from: c.email, subject: 'Signed quarterly' }),
  // A certificate of the caller's own address that it has not published yet (the world published another one).
  'POST /v1/me/certificates': (c) => ({ certificate: userCertificate(c.email) }),
  'PUT /admin/v1/protection': () => INERT_PROTECTION_DOCUMENT(),
  'POST /v1/ping': (c) => ({ folderIds: [c.id('folder', 'body:folderIds.*')], heartbeatSeconds: 60 }),
  'POST /admin/v1/device-access-rules': () => ({ field: 'deviceModel', match: 'exact', value: unique('NoSuchModel'), accessState: 'allowed' }),
  'PUT /admin/v1/device-access-rules/{id}': () => ({ field: 'deviceModel', match: 'prefix', value: unique('NoSuchModel'), accessState: 'allowed' }),
  'PUT /admin/v1/device-access-default': () => ({ accessState: 'allowed' }),
  'POST /admin/v1/users/{id}/messages': (c) => rawMessage({ id: `${unique('import')}@example.org`, to: c.email, subject: 'Imported quarterly' }),
  // A Web Push subscription of the calling device (its endpoint unique, so each registers a channel of its own).
  'POST /v1/push/channels': () => WEB_PUSH_SUBSCRIPTION(),
  'POST /v1/policy/check-in': () => ({ appVersion: '4.2.1', osVersion: '17.4', policyEtag: null, pinSet: true, pinFailures: 0, violations: [] }),
  // A PUT leaves `id` out: it is the path's.
  'POST /admin/v1/conditional-access/policies': () => ({ id: unique('sec-policy'), ...INERT_CONDITIONAL_ACCESS_POLICY() }),
  'PUT /admin/v1/conditional-access/policies/{id}': () => INERT_CONDITIONAL_ACCESS_POLICY(),
  'POST /admin/v1/named-locations': () => ({ id: unique('sec-location'), ...INERT_NAMED_LOCATION() }),
  'PUT /admin/v1/named-locations/{id}': () => INERT_NAMED_LOCATION(),
  'POST /admin/v1/groups': () => ({ id: unique('sec-group'), ...INERT_GROUP() }),
  'PUT /admin/v1/groups/{id}': () => INERT_GROUP(),
  'POST /admin/v1/app-protection-policies': () => ({ id: unique('sec-app-policy'), ...INERT_APP_PROTECTION_POLICY() }),
  'PUT /admin/v1/app-protection-policies/{id}': () => INERT_APP_PROTECTION_POLICY(),
  'PUT /admin/v1/approved-client-apps': () => ({ clientIds: ['sec-unused-app'] }),
  'POST /admin/v1/conditional-access/what-if': (c) => ({ userId: c.id('user', 'body:userId'), clientId: 'pigeon-app', platform: 'ios', ip: '198.51.100.23', mfa: false }),
  // `dismiss`: of the two actions, the one that never makes a user's sign-ins riskier.
  'POST /admin/v1/users/{id}/risk': () => ({ action: 'dismiss' }),
  'PUT /compliance/v1/devices/{deviceId}': (c) => ({ tenantId: c.tenantId ?? 'sec-unmanaged-tenant', user: c.email, state: 'compliant', reasons: [] }),
  // Calendar and contacts (issue 18).
  'POST /v1/calendar/events': (c) => ({ ...PERSONAL_SERIES(), folderId: c.id('calendarFolder', 'body:folderId') }),
  'PUT /v1/calendar/events/{itemId}': () => WORLD_MEETING(),
  // The world's event is the caller's own meeting: answering it is the documented 400 (there is nobody to answer).
  'POST /v1/calendar/events/{itemId}/respond': () => ({ response: 'tentative', comment: 'Probably; I will confirm.' }),
  'POST /v1/calendar/events/{itemId}/decline-counter': () => ({ attendee: OUTSIDE_ATTENDEE, reason: 'The room is only free at the original time.' }),
  'POST /v1/calendar/batch': (c) => ({
    operations: [{ opId: unique('cal-op'), op: 'update', id: c.id('event', 'body:operations.*.id'), event: { ...WORLD_MEETING(), folderId: c.id('calendarFolder', 'body:operations.*.event.folderId') } }],
  }),
  'POST /v1/contacts': (c) => ({ ...CONTACT(), folderId: c.id('contactsFolder', 'body:folderId') }),
  'POST /v1/contacts/import': () => VCARD(),
  'PUT /v1/contacts/{itemId}': () => CONTACT(),
  'PUT /v1/contacts/{itemId}/photo': () => PNG,
  // The manager is the resolver's user, which for an administrator is also the path's: the documented 400 (a user
  // cannot be their own manager). A slot that names a user the tenant does not have is 400 too.
  'PUT /admin/v1/users/{userId}/directory': (c) => ({ title: 'Security suite title', department: 'Security', office: 'Room 1', phone: '+1 555 0102', managerId: c.id('user', 'body:managerId') }),
  // The caller's own line (an administrator is a user of its tenant), with no manager.
  'POST /admin/v1/directory/import': (c) => Buffer.from(`username,title,department,office,phone,mobile,manager\r\n${c.username},Security suite title,Security,Room 1,+1 555 0102,,\r\n`),
  // Mailbox views (issue 19). The view settings are the defaults: a valid request is no soft reset.
  'PUT /v1/devices/current/view-settings': () => ({ focusedInbox: true, threaded: false }),
  'PUT /v1/mailbox/settings/automatic-replies': () => ({
    status: 'scheduled',
    scheduledStart: '2027-07-01T09:00:00+02:00',
    scheduledEnd: '2027-07-15T18:00:00+02:00',
    internalReply: 'Away until 15 July.',
    externalReply: 'Away until 15 July; I will answer when I am back.',
    externalAudience: 'contactsOnly',
  }),
  'PUT /v1/mailbox/settings/junk': () => ({ safeSenders: ['sec-partner.example'], blockedSenders: ['sec-offers@spam.example.invalid'] }),
  'POST /v1/items/{itemId}/classify': () => ({ classification: 'focused', always: false }),
  // `notJunk`: the world's mail stays in the Inbox (its sender goes on the safe list).
  'POST /v1/items/{itemId}/report-junk': () => ({ verdict: 'notJunk' }),
  'POST /v1/folders/{folderId}/items/resync': (c) => ({ held: [{ id: c.id('item', 'body:held.*.id') }], bodyBytes: 64 }),
  // The world's first conversation is in the Inbox (the resolver's folder), and moves to the caller's own folder.
  'POST /v1/conversations/{conversationId}/actions': (c) => ({
    action: 'move',
    folderId: c.id('folder', 'body:folderId'),
    destinationFolderId: c.id('folder', 'body:destinationFolderId'),
  }),
  'POST /admin/v1/shared-mailboxes': () => ({ email: `${unique('sec-desk')}@shared.example`, displayName: 'Security suite desk' }),
  'PUT /admin/v1/shared-mailboxes/{mailboxId}/members/{userId}': () => ({ fullAccess: true }),
  // Diagnostics (issue 20): raw gzip bytes.
  'POST /v1/diagnostics': () => DIAGNOSTICS_BUNDLE(),
  // Issue 21: users of the admin API. A new user of its own (unique name). A password reset: the server refuses it
  // (400) for the administrator's own account, and the suites never get it through for another party (bola sends
  // only foreign or absent ids, mass-assignment only bodies with an undocumented member, fuzz's administrator is
  // alone in its tenant, so its `user` id is its own).
  'POST /admin/v1/users': () => ({ username: unique('sec-user'), displayName: 'Security suite user', role: 'user', password: 'security-suite-initial-pw' }),
  'POST /admin/v1/users/{id}/reset-password': () => ({ password: 'security-suite-reset-pw' }),
};

export function validBody(op: SpecOperation, c: BodyContext): unknown {
  if (!op.body) return undefined;
  const make = VALID_BODIES[op.key];
  if (!make) throw new Error(`${op.key} takes a ${op.body.mediaType} body but tests/helpers/specCases.ts has no valid body for it`);
  return make(c);
}

/** Operations that wait (a long poll): a valid request with real ids would hold the test for the heartbeat. */
export const WAITS = new Set(['POST /v1/ping']);

// ---------------------------------------------------------------------------------------------------------------
// The hostile corpus

export interface HostileCase {
  /** The operation key (or `<METHOD> <path>` of a method the path lacks). */
  route: string;
  name: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  /** Acceptable statuses (all 4xx). */
  expect: number[];
  /** Acceptable problem codes; absent: any code that matches the status. */
  codes?: string[];
}

export interface CaseContext extends BodyContext {
  /** Headers that authenticate as the operation requires (a user's device, or an admin). */
  credentials(op: SpecOperation): Record<string, string>;
  /** The largest request body any route accepts: a body this size plus one KiB is over every limit. */
  maxBodyBytes: number;
}

const NOT_FOUND = ['itemNotFound', 'folderNotFound', 'conversationNotFound', 'notFound'];

/** Path segments that must name nothing (all answer 404 after decoding). */
const GARBAGE_IDS: Array<[string, string]> = [
  ['path traversal', '..%2F..%2F..%2Fetc%2Fpasswd'],
  ['dot segments', '%2E%2E'],
  ['SQL-looking', encodeURIComponent("1' OR '1'='1' --")],
  ['SQL union', encodeURIComponent('x UNION SELECT password_hash FROM users')],
  ['a NUL', 'a%00b'],
  ['5,000 characters', 'a'.repeat(5000)],
  ['a wildcard', '%2A'],
  ['non-ASCII', encodeURIComponent('ü€😀')],
];
/** Path segments whose percent-escapes are not UTF-8: 400. */
const BAD_PERCENT: Array<[string, string]> = [
  ['a truncated escape', '%E0%A4%A'],
  ['a non-hex escape', '%ZZ'],
  ['an overlong encoding', '%C0%AF'],
  ['a lone continuation byte', '%80'],
  ['a lone surrogate (CESU bytes)', '%ED%A0%80'],
];

/** Values that break a query parameter's schema. */
function badQueryValues(schema: Json): Array<[string, string]> {
  const s = resolveSchema(schema);
  const out: Array<[string, string]> = [];
  if (s.type === 'integer' || s.type === 'number') {
    out.push(['text', 'abc'], ['1e309', '1e309'], ['a fraction', '1.5'], ['20 digits', '99999999999999999999'], ['-Infinity', '-Infinity']);
    if (typeof s.minimum === 'number') out.push(['below the minimum', String(s.minimum - 1)]);
    if (typeof s.maximum === 'number') out.push(['above the maximum', String(s.maximum + 1)]);
  }
  if (Array.isArray(s.enum)) out.push(['not in the enum', 'nope'], ['a bad percent-escape', '%ZZ'], ['a NUL', '1\u0000']);
  if (s.type === 'string' && typeof s.maxLength === 'number') out.push(['over maxLength', 'x'.repeat(s.maxLength + 1)]);
  if (s.type === 'string' && s.minLength === 1 && !s.enum) out.push(['empty', '']);
  return out;
}

/** A wrong-typed stand-in for a schema's value. */
function wrongType(schema: Json): unknown {
  const s = resolveSchema(schema);
  const types: string[] = Array.isArray(s.type) ? s.type : s.type ? [s.type] : s.enum ? [typeof s.enum[0]] : s.const !== undefined ? [typeof s.const] : [];
  if (!types.includes('object')) return { nested: true };
  return [1, 2];
}

function contentTypeOf(op: SpecOperation): string {
  return op.body?.mediaType ?? 'application/json';
}

function encodeBody(op: SpecOperation, body: unknown): string | Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (contentTypeOf(op) === 'application/x-www-form-urlencoded') return new URLSearchParams(body as Record<string, string>).toString();
  return JSON.stringify(body);
}

/**
 * The corpus: for each operation, bad credentials, other methods, garbage ids in every path parameter, values that
 * break every query parameter, malformed or wrong bodies, wrong content types and encodings, and bad headers.
 * Every case is invalid in exactly one way, so its expected answer is that one 4xx.
 */
export function hostileCases(c: CaseContext, ops: SpecOperation[] = specOperations()): HostileCase[] {
  const cases: HostileCase[] = [];
  const add = (op: SpecOperation, name: string, x: CaseSpec) => {
    const body = op.body ? validBody(op, c) : undefined;
    const { layer, ...given } = x;
    const request: HostileCase = {
      route: op.key,
      name: `${op.key}: ${name}`,
      method: op.method,
      url: fillPath(op, c.id) + queryString(baseQuery(op, c.id)),
      headers: { ...c.credentials(op), ...(op.body ? { 'Content-Type': contentTypeOf(op) } : {}) },
      body: body === undefined ? undefined : encodeBody(op, body),
      ...given,
    };
    cases.push(op.access === 'partner' ? unsigned(request, layer) : request);
  };

  // Methods a path does not have: 405 with the path's own credentials.
  const byPath = new Map<string, SpecOperation[]>();
  for (const op of ops) byPath.set(op.path, [...(byPath.get(op.path) ?? []), op]);
  for (const [path, pathOps] of byPath) {
    for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
      if (pathOps.some((o) => o.method === method)) continue;
      const op = pathOps[0]!;
      cases.push({
        route: `${method.toUpperCase()} ${path}`,
        name: `${method.toUpperCase()} ${path}: a method the path does not have`,
        method,
        url: fillPath(op, c.id),
        headers: c.credentials(op),
        expect: [405],
        codes: ['methodNotAllowed'],
      });
    }
  }

  for (const op of ops) {
    const streaming = STREAMING.has(op.key);
    if (op.access === 'partner') {
      const json: Record<string, string> = op.body ? { 'Content-Type': contentTypeOf(op) } : {};
      add(op, 'no signature', { headers: json, expect: [401], codes: ['unauthorized'] });
      add(op, "a user's bearer token instead of a signature", { headers: { ...json, ...c.credentials({ ...op, access: 'user' }) }, expect: [401], codes: ['unauthorized'] });
      add(op, 'a signature by a key no partner has', { headers: { ...json, ...strangerSignature(op, c) }, expect: [401], codes: ['unauthorized'] });
      add(op, 'a signature that is not one', {
        headers: { ...json, 'Content-Digest': 'sha-256=:AAAA:', 'Signature-Input': 'sig1=("@method");keyid="x"', Signature: 'sig1=:AAAA:' },
        expect: [401],
        codes: ['unauthorized'],
      });
    } else if (op.access !== 'public') {
      add(op, 'no token', { headers: op.body ? { 'Content-Type': contentTypeOf(op) } : {}, expect: [401], codes: ['unauthorized'] });
      add(op, 'a token that is not a JWT', { headers: { ...c.credentials(op), Authorization: 'Bearer not.a.jwt' }, expect: [401], codes: ['unauthorized'] });
      add(op, 'an 8 KiB bearer token', { headers: { ...c.credentials(op), Authorization: `Bearer ${'A'.repeat(8192)}` }, expect: [401], codes: ['unauthorized'] });
    }
    if (op.headers.includes(DEVICE_HEADER)) {
      add(op, 'X-Device-Id with a path', { headers: { ...c.credentials(op), [DEVICE_HEADER]: '../../device-0123456789' }, expect: [400], codes: ['invalidRequest'] });
      add(op, 'X-Device-Id of 65 characters', { headers: { ...c.credentials(op), [DEVICE_HEADER]: 'd'.repeat(65) }, expect: [400], codes: ['invalidRequest'] });
    }
    if (streaming) continue; // the remaining cases need the operation to run, and a stream would stay open

    for (const param of op.pathParams) {
      for (const [label, value] of GARBAGE_IDS) {
        add(op, `${label} as ${param}`, { url: fillPath(op, c.id, { [param]: value }) + queryString(baseQuery(op, c.id)), expect: [404], codes: NOT_FOUND });
      }
      for (const [label, value] of BAD_PERCENT) {
        add(op, `${label} in ${param}`, { url: fillPath(op, c.id, { [param]: value }) + queryString(baseQuery(op, c.id)), expect: [400], codes: ['invalidRequest'], layer: 'http' });
      }
    }

    for (const q of op.query) {
      const slot = ID_SLOTS[op.key]?.[`query:${q.name}`];
      // The operation's other required parameters stay valid; this one is given only as the case says.
      const others = new URLSearchParams(baseQuery(op, c.id));
      others.delete(q.name);
      const withQuery = (raw: string) => `${fillPath(op, c.id)}?${[others.toString(), raw].filter(Boolean).join('&')}`;
      for (const [label, value] of badQueryValues(q.schema)) {
        add(op, `query ${q.name} ${label}`, { url: withQuery(`${q.name}=${value === '%ZZ' ? value : encodeURIComponent(value)}`), expect: [400], codes: ['invalidRequest'] });
      }
      // The app's "simple" query parser makes a repeated parameter an array (and `a[b]=c` a parameter named `a[b]`).
      add(op, `query ${q.name} given twice`, { url: withQuery(`${q.name}=1&${q.name}=2`), expect: [400], codes: ['invalidRequest'] });
      if (slot === 'folder' || slot === 'calendarFolder' || slot === 'contactsFolder') add(op, `query ${q.name} naming no folder`, { url: withQuery(`${q.name}=${encodeURIComponent("' OR 1=1 --")}`), expect: [404], codes: ['folderNotFound'] });
      if (slot === 'folderSyncToken' || slot === 'itemSyncToken' || slot === 'conversationSyncToken') {
        add(op, `query ${q.name} forged`, { url: withQuery(`${q.name}=${'A'.repeat(40)}`), expect: [400], codes: ['invalidToken'] });
        add(op, `query ${q.name} over 2 KiB`, { url: withQuery(`${q.name}=${'A'.repeat(3000)}`), expect: [400], codes: ['invalidRequest', 'invalidToken'] });
      }
    }
    for (const q of op.query.filter((x) => x.required)) {
      const rest = { ...baseQuery(op, c.id) };
      delete rest[q.name];
      add(op, `required query ${q.name} missing`, { url: fillPath(op, c.id) + queryString(rest), expect: [400], codes: ['invalidRequest'] });
    }

    if (op.body) bodyCases(op, c, add);
    if (op.headers.includes('Idempotency-Key')) {
      add(op, 'an Idempotency-Key of 201 characters', { headers: { ...c.credentials(op), 'Content-Type': contentTypeOf(op), 'Idempotency-Key': 'k'.repeat(201) }, expect: [400], codes: ['invalidRequest'] });
      add(op, 'an Idempotency-Key with a space', { headers: { ...c.credentials(op), 'Content-Type': contentTypeOf(op), 'Idempotency-Key': 'a key' }, expect: [400], codes: ['invalidRequest'] });
    }
    if (op.headers.includes('If-Match')) {
      add(op, 'an If-Match of 100 characters', { headers: { ...c.credentials(op), 'Content-Type': contentTypeOf(op), 'If-Match': `"${'x'.repeat(100)}"` }, expect: [400], codes: ['invalidRequest'] });
      // A versioned document's tag is its version (`"<n>"`): one it is not at. An item's is its change key.
      const versioned = op.parameterRefs?.some((r) => r === 'AccessConfigIfMatch' || r === 'ProtectionIfMatch' || r === 'MailboxSettingsIfMatch');
      const stale = versioned ? '"999999999"' : '"stale-change-key"';
      add(op, 'an If-Match that is stale', { headers: { ...c.credentials(op), 'Content-Type': contentTypeOf(op), 'If-Match': stale }, expect: [412], codes: ['conflict'] });
    }
    if (op.headers.includes('Range')) {
      add(op, 'a range beyond the end', { headers: { ...c.credentials(op), Range: 'bytes=99999999-' }, expect: [416], codes: ['rangeNotSatisfiable'] });
      add(op, 'a range of 20-digit numbers', { headers: { ...c.credentials(op), Range: 'bytes=99999999999999999999-99999999999999999999' }, expect: [416], codes: ['rangeNotSatisfiable'] });
    }
    // X-Mailbox: the mailbox operations resolve it before they run; every other operation refuses it.
    const withMailbox = (value: string) => ({ ...c.credentials(op), ...(op.body ? { 'Content-Type': contentTypeOf(op) } : {}), [MAILBOX_HEADER]: value });
    if (op.headers.includes(MAILBOX_HEADER)) {
      add(op, 'X-Mailbox naming no mailbox', { headers: withMailbox('sec-no-such-mailbox@example.com'), expect: [404], codes: ['mailboxNotFound'] });
      add(op, 'X-Mailbox of 321 characters', { headers: withMailbox('m'.repeat(321)), expect: [400], codes: ['invalidRequest'] });
      add(op, 'X-Mailbox with a control character', { headers: withMailbox('sec-shared\tmailbox@example.com'), expect: [400], codes: ['invalidRequest'] });
    } else if (op.access === 'user' || op.access === 'admin') {
      add(op, 'X-Mailbox on an operation that takes none', { headers: withMailbox(c.email), expect: [400], codes: ['invalidRequest'] });
    }
  }
  return cases;
}

/** What a case expects; `layer: 'http'` when the HTTP layer refuses it before any handler runs (see `unsigned`). */
type CaseSpec = Partial<HostileCase> & { expect: number[]; layer?: 'http' };

/**
 * A case sent to a compliance partner's operation without a valid signature (no partner is configured where the
 * corpus runs, so none is valid there): 401 `unauthorized`, whatever else is wrong with it, since the signature is
 * checked before anything the request says is read. Only what the HTTP layer refuses before any handler (bad
 * escapes in the path, the media type, the size, the content coding) may instead be refused as the generic case
 * says.
 */
function unsigned(request: HostileCase, layer: 'http' | undefined): HostileCase {
  if (layer === 'http') return { ...request, expect: [...new Set([...request.expect, 401])], codes: request.codes && [...request.codes, 'unauthorized'] };
  // A body over the operation's own limit (16 KiB, far below the corpus's over-size bodies) is refused as it arrives.
  if (request.body !== undefined && Buffer.byteLength(request.body) > PARTNER_BODY_LIMIT) return { ...request, expect: [401, 413], codes: ['unauthorized', 'payloadTooLarge'] };
  return { ...request, expect: [401], codes: ['unauthorized'] };
}
/** The compliance API's body limit, as its operation documents it. */
const PARTNER_BODY_LIMIT = 16 * 1024;

/** A well-formed signature of the operation's valid request, by a key that no partner has. */
function strangerSignature(op: SpecOperation, c: CaseContext): Record<string, string> {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  const body = op.body ? encodeBody(op, validBody(op, c)) : undefined;
  const headers = op.body ? { 'content-type': contentTypeOf(op) } : {};
  const signed = signPartnerRequest({ method: op.method.toUpperCase(), url: `https://pigeon.invalid${fillPath(op, c.id)}`, headers, body, keyId: 'sec-stranger-key', privateKey });
  return { 'Content-Digest': signed.headers['content-digest'], 'Signature-Input': signed.headers['signature-input'], Signature: signed.headers.signature };
}

/** Operations with a body limit of their own, above `limits.maxRequestBytes`, as their descriptions document it. */
const OWN_BODY_LIMITS: Record<string, number> = {
  'POST /v1/contacts/import': 5 * 1024 * 1024,
  'PUT /v1/contacts/{itemId}/photo': 1024 * 1024,
  'POST /v1/folders/{folderId}/items/resync': 512 * 1024,
  'POST /v1/diagnostics': 10 * 1024 * 1024,
};

/** Bodies that are broken as bytes, as JSON, or against the schema; wrong media types and encodings; over-size. */
function bodyCases(op: SpecOperation, c: CaseContext, add: (op: SpecOperation, name: string, x: CaseSpec) => void): void {
  const type = contentTypeOf(op);
  const valid = validBody(op, c);
  const headers = (extra: Record<string, string> = {}) => ({ ...c.credentials(op), 'Content-Type': type, ...extra });
  const bad = (name: string, body: string | Buffer, expect = [400], codes = ['invalidRequest'], extra: Record<string, string> = {}) =>
    add(op, name, { headers: headers(extra), body, expect, codes });
  /** Refused by the HTTP layer (body size, media type, content coding) before the route's handler. */
  const transport = (name: string, body: string | Buffer, expect: number[], codes: string[], extra: Record<string, string> = {}) =>
    add(op, name, { headers: headers(extra), body, expect, codes, layer: 'http' });
  const oversize = Buffer.alloc(Math.max(c.maxBodyBytes, OWN_BODY_LIMITS[op.key] ?? 0) + 1024, 0x61);

  if (type === 'application/json') {
    const text = JSON.stringify(valid);
    const obj = valid as Record<string, unknown>;
    const firstKey = Object.keys(obj)[0]!;
    bad('an unterminated object', '{');
    bad('a member without a value', '{"a":}');
    bad('a trailing comma', text.replace(/}$/, ',}'));
    bad('single quotes', text.replace(/"/g, "'"));
    bad('NaN', `{"${firstKey}":NaN}`);
    bad('the valid body cut in half', text.slice(0, Math.ceil(text.length / 2)));
    bad('two bodies in a row', text + text);
    bad('a raw control character', text.replace(/}$/, ',"x":"a\u0001b"}'));
    bad('invalid UTF-8 bytes', Buffer.concat([Buffer.from(`{"${firstKey}":"`), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]));
    bad('an overlong UTF-8 slash', Buffer.concat([Buffer.from(`{"${firstKey}":"`), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]));
    bad('a lone surrogate escape', `{"${firstKey}":"\\ud800"}`);
    bad('a surrogate encoded as UTF-8 bytes', Buffer.concat([Buffer.from(`{"${firstKey}":"`), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]));
    bad('a duplicate member', text.replace(/^\{/, `{${JSON.stringify(firstKey)}:${JSON.stringify(obj[firstKey])},`));
    bad('a duplicate member spelt with an escape', text.replace(/^\{/, `{"\\u00${firstKey.charCodeAt(0).toString(16)}${firstKey.slice(1)}":${JSON.stringify(obj[firstKey])},`));
    bad('nesting 10,000 deep', '['.repeat(10_000) + ']'.repeat(10_000));
    bad('nesting 33 deep in a member', `{"${firstKey}":${'['.repeat(33)}${']'.repeat(33)}}`);
    for (const scalar of ['1', '"text"', 'null', 'true', '[]', `[${text}]`]) bad(`${scalar.slice(0, 12)} instead of an object`, scalar);
    bad('a 400-digit number', `{"${firstKey}":${'9'.repeat(400)}}`);
    bad('1e400', `{"${firstKey}":1e400}`);
    bad('__proto__ smuggling', text.replace(/^\{/, '{"__proto__":{"isAdmin":true},'));
    bad('constructor.prototype smuggling', text.replace(/^\{/, '{"constructor":{"prototype":{"isAdmin":true}},'));
    bad('an unknown member', text.replace(/^\{/, '{"unexpectedMember":1,'));
    const schema = resolveSchema(op.body!.schema);
    if ((schema.required?.length ?? 0) > 0 || schema.minProperties > 0) bad('an empty object', '{}');
    for (const [name, propSchema] of Object.entries<Json>(schema.properties ?? {})) {
      bad(`${name} of the wrong type`, JSON.stringify({ ...obj, [name]: wrongType(propSchema) }));
      const s = resolveSchema(propSchema);
      if (s.type === 'string' || (Array.isArray(s.type) && s.type.includes('string'))) {
        bad(`${name} with a NUL`, JSON.stringify({ ...obj, [name]: `a\u0000b` }), [400, 404], ['invalidRequest', ...NOT_FOUND]);
        if (typeof s.maxLength === 'number') bad(`${name} over maxLength`, JSON.stringify({ ...obj, [name]: 'x'.repeat(s.maxLength + 1) }));
      }
    }
    transport('over the size limit', Buffer.concat([Buffer.from('{"x":"'), oversize, Buffer.from('"}')]), [413], ['payloadTooLarge']);
    transport('text/plain', text, [415], ['unsupportedMediaType'], { 'Content-Type': 'text/plain' });
    transport('form-encoded', 'a=1', [415], ['unsupportedMediaType'], { 'Content-Type': 'application/x-www-form-urlencoded' });
    transport('multipart', '--x\r\n\r\n{}\r\n--x--', [415], ['unsupportedMediaType'], { 'Content-Type': 'multipart/form-data; boundary=x' });
    transport('application/xml', '<a/>', [415], ['unsupportedMediaType'], { 'Content-Type': 'application/xml' });
    transport('JSON in Latin-1', text, [415], ['unsupportedMediaType'], { 'Content-Type': 'application/json; charset=iso-8859-1' });
    transport('JSON in UTF-16', Buffer.from(text, 'utf16le'), [415], ['unsupportedMediaType'], { 'Content-Type': 'application/json; charset=utf-16' });
    transport('a gzip body that is not gzip', text, [400], ['invalidRequest'], { 'Content-Encoding': 'gzip' });
    transport('an unknown Content-Encoding', text, [415], ['unsupportedMediaType'], { 'Content-Encoding': 'compress-9000' });
  } else if (type === 'application/x-www-form-urlencoded') {
    const form = new URLSearchParams(valid as Record<string, string>).toString();
    // The OAuth endpoints answer RFC 6749 errors (`error`), or problem+json for what the HTTP layer refuses.
    bad('a bad percent-escape', `${form}&x=%ZZ`);
    bad('invalid UTF-8 bytes', Buffer.concat([Buffer.from(`${form}&x=`), Buffer.from([0xff, 0xfe])]));
    bad('an escape of invalid UTF-8', `${form}&x=%FF%FE`);
    bad('60 parameters', `${form}&${Array.from({ length: 60 }, (_, i) => `p${i}=1`).join('&')}`);
    transport('over the size limit', Buffer.concat([Buffer.from(`${form}&x=`), oversize]), [413], ['payloadTooLarge']);
    transport('JSON', JSON.stringify(valid), [415], ['unsupportedMediaType'], { 'Content-Type': 'application/json' });
    bad('every parameter given twice', `${form}&${form}`, [400], ['invalidRequest', 'invalid_request', 'unsupported_grant_type']);
    bad('no parameters', '', [400], ['invalidRequest', 'invalid_request', 'unsupported_grant_type']);
  } else {
    // Raw bytes (a message, a vCard or CSV file, an image): the wrong media type, nothing at all, or over the limit.
    transport('text/plain', valid as Buffer, [415], ['unsupportedMediaType'], { 'Content-Type': 'text/plain' });
    transport('no Content-Type', valid as Buffer, [415], ['unsupportedMediaType'], { 'Content-Type': '' });
    bad('an empty message', Buffer.alloc(0));
    transport('over the size limit', oversize, [413], ['payloadTooLarge']);
    transport('a gzip body that is not gzip', valid as Buffer, [400], ['invalidRequest'], { 'Content-Encoding': 'gzip' });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Bodies for fast-check

/**
 * An arbitrary for values shaped like a JSON schema: mostly the right types (enums, lengths and ranges around their
 * limits, ids from `pool`), sometimes a wrong type, a missing required member or an extra one.
 */
export function shapedValue(schema: Json, pool: string[], depth = 0): fc.Arbitrary<unknown> {
  const s = resolveSchema(schema);
  const wrong = fc.oneof(fc.constant(null), fc.integer(), fc.string({ maxLength: 8 }), fc.boolean(), fc.constant([]), fc.constant({}));
  if (!s || depth > 5) return wrong;
  const branches = [...(s.oneOf ?? []), ...(s.anyOf ?? [])];
  if (branches.length) return fc.oneof(...branches.map((b: Json) => shapedValue(b, pool, depth + 1)));
  if (s.const !== undefined) return fc.oneof({ weight: 5, arbitrary: fc.constant(s.const) }, { weight: 1, arbitrary: wrong });
  if (Array.isArray(s.enum)) return fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...s.enum) }, { weight: 1, arbitrary: wrong });
  const types: string[] = Array.isArray(s.type) ? s.type : [s.type ?? 'object'];
  const arbs: fc.Arbitrary<unknown>[] = [];
  for (const t of types) {
    if (t === 'null') arbs.push(fc.constant(null));
    if (t === 'boolean') arbs.push(fc.boolean());
    if (t === 'integer' || t === 'number') {
      const min = typeof s.minimum === 'number' ? s.minimum : -1000;
      const max = typeof s.maximum === 'number' ? s.maximum : 1000;
      arbs.push(fc.integer({ min: min - 2, max: Math.min(max + 2, min + 5000) }), fc.constantFrom(min, max, min - 1, max + 1, 0.5, -0, 1e308));
    }
    if (t === 'string') {
      const maxLength = typeof s.maxLength === 'number' ? s.maxLength : 40;
      arbs.push(
        fc.string({ maxLength: Math.min(maxLength + 2, 80) }),
        fc.constantFrom(...(pool.length ? pool : ['x'])),
        fc.string({ unit: 'binary', maxLength: 12 }),
        fc.emailAddress(),
        fc.constantFrom('', ' ', 'x'.repeat(maxLength + 1), 'a\u0000b', '\ud800', 'Ünïcödé 😀'),
      );
    }
    if (t === 'array') {
      const maxItems = Math.min(typeof s.maxItems === 'number' ? s.maxItems : 4, 4);
      arbs.push(fc.array(shapedValue(s.items ?? {}, pool, depth + 1), { maxLength: maxItems }));
    }
    if (t === 'object') {
      const props = Object.entries<Json>(s.properties ?? {});
      const shape = Object.fromEntries(props.map(([name, sub]) => [name, shapedValue(sub, pool, depth + 1)]));
      const required: string[] = s.required ?? [];
      arbs.push(
        fc
          .tuple(
            fc.record(shape, { requiredKeys: required.filter((r) => r in shape) }),
            fc.option(fc.dictionary(fc.string({ minLength: 1, maxLength: 10 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 2 }), { freq: 8 }),
          )
          .map(([known, extra]) => ({ ...(extra ?? {}), ...known })),
        fc.record(shape, { requiredKeys: [] }),
      );
    }
  }
  return fc.oneof({ weight: 6, arbitrary: fc.oneof(...(arbs.length ? arbs : [wrong])) }, { weight: 1, arbitrary: wrong });
}

// ---------------------------------------------------------------------------------------------------------------
// The world the cases run against

export interface Party {
  name: string;
  role: 'user' | 'admin';
  userId: string;
  tenantId: string;
  username: string;
  email: string;
  password: string;
  /** An access token with no device binding. */
  token: string;
  /** Users only: the registered device and the token bound to it. */
  device?: { deviceId: string; recordId: string; token: string };
  /** The ids this party may use, by kind; an administrator's are those of its tenant. */
  ids: Record<IdKind, string[]>;
  /** Every string that identifies this party's data, for leak scans (never the shared tenant id). */
  fingerprints: string[];
}

export interface PartyPlan {
  name: string;
  role: 'user' | 'admin';
  tenant: 'A' | 'B';
}

type Agent = () => {
  get(url: string): Json;
  post(url: string): Json;
};

/** Bearer and device headers for an operation as this party (a user's device under /v1, the plain token elsewhere). */
export function partyHeaders(p: Party, op?: SpecOperation): Record<string, string> {
  if (p.device && (!op || op.path.startsWith('/v1/'))) return { Authorization: `Bearer ${p.device.token}`, [DEVICE_HEADER]: p.device.deviceId };
  return { Authorization: `Bearer ${p.token}` };
}

/** Slots that take a folder the caller may change: its own mail folder, not the Inbox (well-known folders are protected). */
const OWN_FOLDER_SLOTS = new Set(['path:folderId', 'body:destinationFolderId', 'body:operations.*.destinationFolderId']);

/** The id a party would use in a slot: its first of the kind, except its own folder where a folder is changed or a target. */
export function idFor(p: Party, kind: IdKind, slot: string): string {
  if (kind === 'folder' && OWN_FOLDER_SLOTS.has(slot) && p.role === 'user') return p.ids.folder[1]!;
  return ownId(p, kind);
}

/** The first id of a kind the party holds (throws when it has none: a world too small for the case). */
export function ownId(p: Party, kind: IdKind): string {
  const id = p.ids[kind][0];
  if (id === undefined) throw new Error(`${p.name} holds no ${kind}`);
  return id;
}

const emptyIds = (): Record<IdKind, string[]> => ({
  folder: [],
  item: [],
  deviceId: [],
  deviceRecord: [],
  rule: [],
  user: [],
  folderSyncToken: [],
  itemSyncToken: [],
  accessPolicy: [],
  namedLocation: [],
  group: [],
  appProtectionPolicy: [],
  certificateId: [],
  event: [],
  contact: [],
  calendarFolder: [],
  contactsFolder: [],
  conversation: [],
  conversationSyncToken: [],
  sharedMailbox: [],
  incident: [],
  pushChannel: [],
});

async function token(api: Agent, form: Record<string, string>): Promise<string> {
  const res = await api().post('/oauth2/token').type('form').send({ grant_type: 'password', client_id: 'pigeon-app', ...form });
  if (res.status !== 200) throw new Error(`sign-in of ${form.username} failed: ${res.status} ${res.text}`);
  return res.body.access_token as string;
}

async function expectStatus(pending: Promise<Json>, status: number, what: string): Promise<Json> {
  const res = await pending;
  if (res.status !== status) throw new Error(`${what}: ${res.status} ${res.text}`);
  return res.body;
}

/**
 * Users (and per tenant an administrator) as `plan` says. Each user: a registered device, a folder with a child,
 * two messages with an attachment (`att1`) in the Inbox and one in the folder (all through the delivery path), and a
 * folder-sync and an Inbox item-sync token. Each administrator: an access rule; its ids are its tenant's users'.
 */
export async function buildWorld(ctx: TestContext, api: Agent, plan: PartyPlan[]): Promise<Record<string, Party>> {
  const tenants: Record<string, string | undefined> = {};
  const parties: Record<string, Party> = {};
  for (const { name, role, tenant } of plan) {
    const password = `${name}-password-1`;
    ctx.secrets.add(password);
    tenants[tenant] ??= tenant === 'A' ? undefined : (await ctx.store.tenants.create(`Tenant ${tenant}`, ctx.clock.now())).id;
    const user = await ctx.users.addUser({ username: name, password, role, email: `${name}@example.com`, tenantId: tenants[tenant] });
    tenants[tenant] = user.tenantId;
    const p: Party = { name, role, userId: user.id, tenantId: user.tenantId, username: name, email: `${name}@example.com`, password, token: await token(api, { username: name, password }), ids: emptyIds(), fingerprints: [] };
    parties[name] = p;
    if (role === 'user') await furnishUser(ctx, api, p);
  }
  const shared = await furnishSharedMailboxes(ctx, Object.values(parties));
  for (const admin of Object.values(parties).filter((p) => p.role === 'admin')) {
    const auth = { Authorization: `Bearer ${admin.token}` };
    const rule = await expectStatus(
      api().post('/admin/v1/device-access-rules').set(auth).send({ field: 'deviceModel', match: 'exact', value: `Model of ${admin.name}`, accessState: 'allowed' }),
      201,
      'creating a rule',
    );
    admin.ids.rule.push(rule.id);
    for (const u of Object.values(parties).filter((x) => x.role === 'user' && x.tenantId === admin.tenantId)) {
      admin.ids.user.push(u.userId);
      admin.ids.deviceRecord.push(...u.ids.deviceRecord);
      admin.ids.deviceId.push(...u.ids.deviceId);
      admin.ids.folder.push(...u.ids.folder); // the first is the first user's Inbox: the import target of ids.user[0]
      admin.ids.incident.push(...u.ids.incident);
    }
    // The administrator is a user of its tenant too (last, so ids.user[0] stays a user with a mailbox): a tenant of
    // an administrator alone still has a user to evaluate or to judge the risk of.
    admin.ids.user.push(admin.userId);
    // Its own desk first (a valid membership change then touches no user's shared mailbox), then its users'.
    admin.ids.sharedMailbox.push(...shared.filter((m) => m.tenantId === admin.tenantId).sort((a, b) => Number(b.owner === admin.name) - Number(a.owner === admin.name)).map((m) => m.id));
    const entries = await furnishAccessConfig(api, admin);
    admin.fingerprints.push(admin.userId, admin.email, rule.id, ...entries);
  }
  return parties;
}

/**
 * A shared mailbox per party, made by the server's own shared-mailbox service (as `POST /admin/v1/shared-mailboxes`
 * makes them; a world need not have an administrator in every tenant): for a user, `team.<name>@shared.example`, of
 * which it is the one member (full access and send-as), so another user naming it in `X-Mailbox` is a non-member;
 * for an administrator, `desk.<name>@shared.example`, without members. The addresses contain no party's address or
 * another party's mailbox's address, so a leak scan that finds one found that mailbox.
 */
async function furnishSharedMailboxes(ctx: TestContext, parties: Party[]): Promise<Array<{ id: string; tenantId: string; owner: string }>> {
  const service = createSharedMailboxes({ store: ctx.store, clock: ctx.clock, audit: ctx.built.devices.audit });
  const made: Array<{ id: string; tenantId: string; owner: string }> = [];
  for (const p of parties) {
    const actor = { id: null, name: 'security suite', tenantId: p.tenantId };
    const kind = p.role === 'user' ? 'team' : 'desk';
    const mailbox = await service.create(actor, { email: `${kind}.${p.name}@shared.example`, displayName: `${kind} of ${p.name}` });
    if (p.role === 'user') {
      await service.putMember(actor, mailbox.id, p.userId, { fullAccess: true, sendAs: true });
      p.ids.sharedMailbox.push(mailbox.id, mailbox.email); // X-Mailbox takes either
    }
    p.fingerprints.push(mailbox.id, mailbox.email);
    made.push({ id: mailbox.id, tenantId: p.tenantId, owner: p.name });
  }
  return made;
}

/**
 * One entry of each kind in the administrator's tenant's access configuration, each inert (see the INERT_*
 * bodies), with ids that name the administrator (`group-of-root`): no other tenant's document holds them, and none
 * is part of another (`root` is part of `broot`, but `group-of-root` is not part of `group-of-broot`), so a leak
 * scan that finds one found that entry.
 */
async function furnishAccessConfig(api: Agent, admin: Party): Promise<string[]> {
  const auth = { Authorization: `Bearer ${admin.token}` };
  const create = async (collection: string, kind: IdKind, body: Record<string, unknown>) => {
    const made = await expectStatus(api().post(collection).set(auth).send(body), 201, `creating ${collection} ${String(body.id)}`);
    admin.ids[kind].push(made.id);
    return made.id as string;
  };
  return [
    await create('/admin/v1/conditional-access/policies', 'accessPolicy', { id: `conditional-access-of-${admin.name}`, ...INERT_CONDITIONAL_ACCESS_POLICY() }),
    await create('/admin/v1/named-locations', 'namedLocation', { id: `location-of-${admin.name}`, ...INERT_NAMED_LOCATION() }),
    await create('/admin/v1/groups', 'group', { id: `group-of-${admin.name}`, ...INERT_GROUP() }),
    await create('/admin/v1/app-protection-policies', 'appProtectionPolicy', { id: `app-protection-of-${admin.name}`, ...INERT_APP_PROTECTION_POLICY() }),
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// A compliance partner

export interface TestPartner {
  /** The partners file to start the app with (`compliancePartnersFile`). */
  file: string;
  /**
   * The fields of a request to `url` (absolute: the server's issuer and the path) with these body bytes, signed:
   * `Content-Type` (covered, as the partner API requires of a field the request has), `Content-Digest`,
   * `Signature-Input` and `Signature`.
   */
  sign(method: string, url: string, body: string | Buffer, nowMs: number, contentType?: string): Record<string, string>;
}

/**
 * A compliance partner of its own (an Ed25519 key, written into a partners file in `dir`) that manages `tenantIds`,
 * so a test can send signed requests to the compliance API. The tenants of a test world are created after the app
 * starts, when the file has been read: a partner for the world names a tenant that does not exist, and its
 * statements are refused (403) after the signature, the device id and the body were checked.
 */
export function testCompliancePartner(dir: string, tenantIds: string[]): TestPartner {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
  const file = path.join(dir, 'compliance-partners.json');
  const keyId = 'sec-partner-key';
  fs.writeFileSync(file, JSON.stringify([{ id: 'sec-partner', tenantIds, keys: [{ keyId, publicKey: publicKey.export({ format: 'pem', type: 'spki' }) }] }]));
  return {
    file,
    sign(method, url, body, nowMs, contentType = 'application/json') {
      const headers = { 'content-type': contentType };
      const signed = signPartnerRequest({ method: method.toUpperCase(), url, headers, body, keyId, privateKey, created: Math.floor(nowMs / 1000) });
      return { 'Content-Type': contentType, 'Content-Digest': signed.headers['content-digest'], 'Signature-Input': signed.headers['signature-input'], Signature: signed.headers.signature };
    },
  };
}

async function furnishUser(ctx: TestContext, api: Agent, p: Party): Promise<void> {
  const deviceId = `sec-${p.name}-phone-000001`;
  const bound = await token(api, { username: p.username, password: p.password, device_id: deviceId });
  const headers = { Authorization: `Bearer ${bound}`, [DEVICE_HEADER]: deviceId };
  const device = await expectStatus(api().post('/v1/devices').set(headers).send({ friendlyName: `${p.name}'s phone` }), 201, 'registering');
  p.device = { deviceId, recordId: device.id, token: bound };

  const folder = await expectStatus(api().post('/v1/folders').set(headers).send({ displayName: `Projects of ${p.name}` }), 201, 'creating a folder');
  const child = await expectStatus(api().post('/v1/folders').set(headers).send({ displayName: 'Child', parentId: folder.id }), 201, 'creating a child folder');
  const folders = await expectStatus(api().get('/v1/folders/sync').set(headers), 200, 'folder sync');
  const inbox = (folders.created as Array<{ id: string; kind: string }>).find((f) => f.kind === 'inbox')!.id;

  const itemIds: string[] = [];
  const messageIds: string[] = [];
  for (const [n, folderId] of [[1, inbox], [2, inbox], [3, folder.id]] as const) {
    const messageId = `${p.name}-message-${n}@example.org`;
    const prepared = await ctx.built.delivery.prepare(rawMessage({ id: messageId, to: p.email, subject: `Quarterly figures ${n} for ${p.name}` }));
    const [stored] = await ctx.built.delivery.deliver(prepared, [{ userId: p.userId, folderId }], { duplicates: 'import' });
    itemIds.push(stored!.itemId);
    messageIds.push(messageId);
  }
  const items = await expectStatus(api().get(`/v1/folders/${inbox}/items/sync`).set(headers), 200, 'item sync');

  p.ids.folder.push(inbox, folder.id, child.id, ...(folders.created as Array<{ id: string }>).map((f) => f.id).filter((id) => ![inbox, folder.id, child.id].includes(id)));
  p.ids.item.push(...itemIds);
  p.ids.deviceId.push(deviceId);
  p.ids.deviceRecord.push(device.id);
  p.ids.user.push(p.userId);
  p.ids.folderSyncToken.push(folders.token);
  p.ids.itemSyncToken.push(items.token);
  const stored = new Map((await ctx.store.items.byIds(p.userId, itemIds)).map((i) => [i.id, i.conversationId]));
  const conversations = itemIds.map((id) => stored.get(id)).filter((c): c is string => typeof c === 'string');
  // In message order: the first is message 1's, in the Inbox (a conversation action's valid body acts on it there).
  p.ids.conversation.push(...conversations);
  const threads = await expectStatus(api().get(`/v1/folders/${inbox}/conversations/sync`).set(headers), 200, 'conversation sync');
  p.ids.conversationSyncToken.push(threads.token);
  const certificate = await expectStatus(api().post('/v1/me/certificates').set(headers).send({ certificate: userCertificate(p.email, ctx.clock.now()) }), 201, 'publishing a certificate');
  p.ids.certificateId.push(certificate.id);
  // A diagnostics incident (one of the device's five uploads an hour).
  const incident = await expectStatus(
    api().post('/v1/diagnostics').set(headers).set('Content-Type', 'application/gzip').send(DIAGNOSTICS_BUNDLE(`world of ${p.name}`)),
    201,
    'uploading diagnostics',
  );
  p.ids.incident.push(incident.incidentId);
  p.fingerprints.push(incident.incidentId);
  // A background push channel of the device (issue 20).
  const channel = await expectStatus(api().post('/v1/push/channels').set(headers).send(WEB_PUSH_SUBSCRIPTION()), 201, 'registering a push channel');
  p.ids.pushChannel.push(channel.id);
  p.fingerprints.push(channel.id, channel.address);
  p.fingerprints.push(p.userId, p.email, deviceId, device.id, ...p.ids.folder, ...itemIds, ...conversations, ...messageIds, certificate.id, certificate.fingerprint);

  // A meeting the user organises (its invitation bounces back at once: see OUTSIDE_ATTENDEE) and a contact.
  const kinds = folders.created as Array<{ id: string; kind: string }>;
  const calendar = kinds.find((f) => f.kind === 'calendar')!.id;
  const contacts = kinds.find((f) => f.kind === 'contacts')!.id;
  const meeting = await expectStatus(api().post('/v1/calendar/events').set(headers).send({ ...WORLD_MEETING(), folderId: calendar }), 201, 'creating a meeting');
  const contact = await expectStatus(api().post('/v1/contacts').set(headers).send({ ...CONTACT(), folderId: contacts }), 201, 'creating a contact');
  p.ids.event.push(meeting.item.id);
  p.ids.contact.push(contact.id);
  p.ids.item.push(meeting.item.id, contact.id);
  p.ids.calendarFolder.push(calendar);
  p.ids.contactsFolder.push(contacts);
  p.fingerprints.push(meeting.item.id, meeting.item.uid, contact.id, contact.uid);
}

/**
 * A personal S/MIME certificate for `email` that `POST /v1/me/certificates` accepts, new at every call (so it was
 * never published before), made by OpenSSL: EC P-256 (quick to make), keyAgreement, emailProtection, the address
 * in subjectAltName, self-signed (the directory checks that a certificate can serve, not who issued it). It is
 * made with `openssl ca -selfsign` because only `ca` takes a start date in the past: the test app's clock was set
 * when the app was built, before this certificate exists, and a certificate not valid yet is refused. Valid from a
 * day before `now` to 30 days after it.
 */
export function userCertificate(email: string, now = Date.now()): string {
  const ws = opensslWorkspace();
  const utc = (ms: number) => new Date(ms).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z'; // YYMMDDHHMMSSZ
  const day = 86_400_000;
  try {
    ws.write('index.txt', '');
    ws.write('serial', `${crypto.randomBytes(8).toString('hex')}\n`);
    ws.write(
      'ca.cnf',
      [
        '[ca]',
        'default_ca = suite',
        '[suite]',
        `dir = ${ws.dir}`,
        'database = $dir/index.txt',
        'new_certs_dir = $dir',
        'serial = $dir/serial',
        'default_md = sha256',
        'policy = policy_any',
        'email_in_dn = no',
        'copy_extensions = none',
        'x509_extensions = ext',
        '[policy_any]',
        'commonName = supplied',
        '[ext]',
        'basicConstraints = critical, CA:FALSE',
        'keyUsage = critical, digitalSignature, keyAgreement',
        'extendedKeyUsage = emailProtection',
        `subjectAltName = email:${email}`,
        '',
      ].join('\n'),
    );
    // An empty configuration: the subject is given, and no default extension may slip in.
    ws.write('req.cnf', '');
    ws.run(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-noenc', '-keyout', ws.file('user.key'), '-subj', '/CN=Security suite user', '-config', ws.file('req.cnf'), '-out', ws.file('user.csr')]);
    ws.run(['ca', '-batch', '-config', ws.file('ca.cnf'), '-selfsign', '-keyfile', ws.file('user.key'), '-in', ws.file('user.csr'), '-startdate', utc(now - day), '-enddate', utc(now + 30 * day), '-notext', '-out', ws.file('user.crt')]);
    return ws.read('user.crt').toString('utf8');
  } finally {
    ws.dispose();
  }
}
