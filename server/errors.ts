/**
 * Typed errors. Every failure a client can see is one of these: it carries its HTTP status and the stable
 * `code` of protocol.md §9. Services throw them; `http/problem.ts` is the one place that turns them into
 * RFC 9457 problem+json (or, for the OAuth endpoints, RFC 6749 §5.2 error bodies).
 */

export type ErrorCode =
  | 'invalidRequest'
  | 'invalidToken'
  | 'unauthorized'
  | 'deviceNotRegistered'
  | 'deviceBlocked'
  | 'deviceQuarantined'
  | 'deviceWiped'
  | 'wipeRequested'
  | 'deviceLimitReached'
  | 'accessBlocked'
  | 'appUpgradeRequired'
  | 'selectiveWipeRequested'
  | 'forbidden'
  | 'notFound'
  | 'folderNotFound'
  | 'itemNotFound'
  | 'conversationNotFound'
  | 'mailboxNotFound'
  | 'methodNotAllowed'
  | 'wrongRegion'
  | 'folderProtected'
  | 'wipePending'
  | 'resyncRequired'
  | 'conflict'
  | 'payloadTooLarge'
  | 'unsupportedMediaType'
  | 'rangeNotSatisfiable'
  | 'rateLimited'
  | 'internal'
  | 'unavailable'
  | 'insufficientStorage'
  | 'rightsDenied'
  | 'labelRequired';

export interface FieldError {
  field: string;
  message: string;
}

const TITLES: Record<ErrorCode, string> = {
  invalidRequest: 'Invalid request',
  invalidToken: 'Invalid sync token',
  unauthorized: 'Unauthorized',
  deviceNotRegistered: 'Device not registered',
  deviceBlocked: 'Device blocked',
  deviceQuarantined: 'Device quarantined',
  deviceWiped: 'Device wiped',
  wipeRequested: 'Wipe requested',
  deviceLimitReached: 'Device limit reached',
  accessBlocked: 'Access blocked by conditional access',
  appUpgradeRequired: 'App upgrade required',
  selectiveWipeRequested: 'Selective wipe requested',
  forbidden: 'Forbidden',
  notFound: 'Not found',
  folderNotFound: 'Folder not found',
  itemNotFound: 'Item not found',
  conversationNotFound: 'Conversation not found',
  mailboxNotFound: 'Mailbox not found',
  methodNotAllowed: 'Method not allowed',
  wrongRegion: 'Misdirected request',
  folderProtected: 'Folder protected',
  wipePending: 'Wipe pending',
  resyncRequired: 'Resync required',
  conflict: 'Conflict',
  payloadTooLarge: 'Payload too large',
  unsupportedMediaType: 'Unsupported media type',
  rangeNotSatisfiable: 'Range not satisfiable',
  rateLimited: 'Too many requests',
  internal: 'Internal error',
  unavailable: 'Service unavailable',
  insufficientStorage: 'Insufficient storage',
  rightsDenied: 'Rights denied',
  labelRequired: 'Sensitivity label required',
};

/** An error the client is meant to see, rendered as problem+json. */
export class ApiError extends Error {
  readonly title: string;
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    detail: string,
    /** Extra members of the problem body (e.g. `errors`, `reason`, `wipe`). */
    readonly extra: Record<string, unknown> = {},
    /** Response headers the error implies (e.g. `Retry-After`, `Allow`, `WWW-Authenticate`). */
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
    this.name = 'ApiError';
    this.title = TITLES[code];
  }
}

/**
 * Text as an `error_description` may carry it (RFC 6750 §3: printable ASCII without `"` or `\`): double quotes
 * become single ones, anything else outside the set is dropped.
 */
function errorDescription(text: string): string {
  return text.replace(/"/g, "'").replace(/[^\x20-\x21\x23-\x5b\x5d-\x7e]/g, '');
}

/** Named constructors, so call sites read as the protocol does and statuses never drift from codes. */
export const errors = {
  invalidRequest: (detail: string, fieldErrors?: FieldError[]) =>
    new ApiError(400, 'invalidRequest', detail, fieldErrors ? { errors: fieldErrors } : {}),
  invalidToken: (detail = 'The sync token is not valid for this request.') =>
    new ApiError(400, 'invalidToken', detail),
  unauthorized: (detail = 'A valid access token is required.', bearerError = 'invalid_token') =>
    new ApiError(401, 'unauthorized', detail, {}, {
      'WWW-Authenticate': bearerError
        ? `Bearer realm="pigeon", error="${bearerError}"`
        : 'Bearer realm="pigeon"',
    }),
  /**
   * A request with the `DPoP` scheme (RFC 9449 §7.1) that fails: `invalid_dpop_proof` for the proof, `invalid_token`
   * for the access token. The challenge names the scheme, the reason and the proof algorithms the server accepts; the
   * body carries the same error code as `error`.
   */
  dpopUnauthorized: (detail: string, dpopError: 'invalid_dpop_proof' | 'invalid_token', algs: readonly string[]) =>
    new ApiError(401, 'unauthorized', detail, { error: dpopError }, {
      'WWW-Authenticate': `DPoP error="${dpopError}", error_description="${errorDescription(detail)}", algs="${algs.join(' ')}"`,
    }),
  /**
   * A DPoP-bound access token presented as a bearer token (RFC 9449 §7.2): refused with today's Bearer challenge,
   * and a DPoP challenge beside it that tells the client which scheme the token needs.
   */
  dpopBoundAsBearer: (algs: readonly string[]) =>
    new ApiError(401, 'unauthorized', 'The access token is bound to a DPoP key: send it as "DPoP <token>" with a DPoP proof.', { error: 'invalid_token' }, {
      'WWW-Authenticate': `Bearer realm="pigeon", error="invalid_token", DPoP algs="${algs.join(' ')}"`,
    }),
  forbidden: (detail = 'You are not allowed to do this.') => new ApiError(403, 'forbidden', detail),
  notFound: (detail = 'No such resource.') => new ApiError(404, 'notFound', detail),
  folderNotFound: (detail = 'No such folder.') => new ApiError(404, 'folderNotFound', detail),
  itemNotFound: (detail = 'No such item.') => new ApiError(404, 'itemNotFound', detail),
  conversationNotFound: (detail = 'No such conversation.') => new ApiError(404, 'conversationNotFound', detail),
  mailboxNotFound: (detail = 'No such mailbox, or you are not one of its members.') => new ApiError(404, 'mailboxNotFound', detail),
  deviceNotRegistered: () =>
    new ApiError(403, 'deviceNotRegistered', 'This device is not registered for this user; POST /v1/devices first.'),
  wipeRequested: (wipe: { scope: 'account' }) =>
    new ApiError(403, 'wipeRequested', 'An administrator has requested that this account be removed from the device.', { wipe }),
  deviceWiped: (detail = 'This device has been wiped; an administrator must remove it before it can sync again.') =>
    new ApiError(403, 'deviceWiped', detail),
  deviceBlocked: (accessStateReason: string) =>
    new ApiError(403, 'deviceBlocked', 'This device is blocked.', { accessStateReason }),
  deviceQuarantined: (accessStateReason: string) =>
    new ApiError(403, 'deviceQuarantined', 'This device is quarantined until an administrator approves it.', { accessStateReason }),
  deviceLimitReached: (max: number) =>
    new ApiError(403, 'deviceLimitReached', `A user may register at most ${max} devices; remove one first.`),
  /**
   * Conditional access refuses the call (server/access/): the controls not met (or `block`), the policies that
   * decided, and whether signing in again interactively can fix it (only multi-factor authentication is missing).
   */
  accessBlocked: (detail: string, extra: { controls: string[]; policies: string[]; interactionRequired: boolean }) =>
    new ApiError(403, 'accessBlocked', detail, extra),
  appUpgradeRequired: (minimumVersion: string, currentVersion: string | null, what: 'app' | 'os' = 'app') =>
    new ApiError(403, 'appUpgradeRequired', `This ${what === 'app' ? 'app' : 'operating system'} version is too old; update to ${minimumVersion} or later.`, {
      minimumVersion,
      currentVersion,
      upgrade: what,
    }),
  /** The app must remove this account's data (and only it: a selective wipe), then acknowledge. */
  selectiveWipeRequested: (reason: string) =>
    new ApiError(403, 'selectiveWipeRequested', 'The app protection policy requires this app to remove the account\'s data; remove it, then POST /v1/policy/selective-wipe-ack.', { reason }),
  /**
   * The protected message's use licence does not grant `right` to this user (or the licence expired): information
   * protection (server/protection/) enforces it on the server, whatever the app shows.
   */
  rightsDenied: (right: string, detail: string) => new ApiError(403, 'rightsDenied', detail, { right }),
  /** The tenant's label policy needs a sensitivity label (or a justification for lowering one) on this message. */
  labelRequired: (detail: string, reason: 'mandatory' | 'justificationRequired') => new ApiError(400, 'labelRequired', detail, { reason }),
  /** `If-Match` named a version that is no longer current. */
  conflict: (detail: string) => new ApiError(412, 'conflict', detail),
  wipePending: () =>
    new ApiError(409, 'wipePending', 'A remote wipe is pending for this device; it cannot be removed until the device acknowledges it.'),
  methodNotAllowed: (allowed: string[]) =>
    new ApiError(405, 'methodNotAllowed', `Allowed methods: ${allowed.join(', ')}.`, {}, {
      Allow: allowed.join(', '),
    }),
  /**
   * The mailbox lives in another region (README, "Regions"): its base URL, from this node's directory — never from
   * the request, so the answer cannot be made to point anywhere else.
   */
  wrongRegion: (region: string, baseUrl: string) =>
    new ApiError(421, 'wrongRegion', `This mailbox is served by region ${region}; send its requests to ${baseUrl}.`, { region, baseUrl }),
  payloadTooLarge: (limitBytes: number) =>
    new ApiError(413, 'payloadTooLarge', `The request body exceeds ${limitBytes} bytes.`),
  unsupportedMediaType: (expected: string) =>
    new ApiError(415, 'unsupportedMediaType', `The request body must be ${expected}.`),
  rateLimited: (retryAfterSeconds: number) =>
    new ApiError(429, 'rateLimited', `Too many requests; retry after ${retryAfterSeconds} s.`, {}, {
      'Retry-After': String(retryAfterSeconds),
    }),
  unavailable: (detail: string, retryAfterSeconds = 5) =>
    new ApiError(503, 'unavailable', detail, {}, { 'Retry-After': String(retryAfterSeconds) }),
  insufficientStorage: () =>
    new ApiError(507, 'insufficientStorage', 'The server is out of storage space; the change was not made.'),
};

/**
 * RFC 6749 §5.2 token-endpoint error. Kept separate from ApiError because OAuth clients parse `error`,
 * not `code`; the same single error handler renders both.
 */
export class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly error:
      | 'invalid_request'
      | 'invalid_client'
      | 'invalid_grant'
      | 'unauthorized_client'
      | 'unsupported_grant_type'
      | 'invalid_scope'
      | 'unsupported_token_type',
    readonly description: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(description);
    this.name = 'OAuthError';
  }
}

export const oauthErrors = {
  invalidRequest: (d: string) => new OAuthError(400, 'invalid_request', d),
  invalidClient: (d: string) => new OAuthError(401, 'invalid_client', d),
  invalidGrant: (d: string) => new OAuthError(400, 'invalid_grant', d),
  unsupportedGrantType: (d: string) => new OAuthError(400, 'unsupported_grant_type', d),
  invalidScope: (d: string) => new OAuthError(400, 'invalid_scope', d),
};
