/**
 * Firebase Cloud Messaging HTTP v1, authorised with a service account through the OAuth 2.0 JWT bearer grant
 * (RFC 7523).
 */
import { performance } from 'node:perf_hooks';
import { importPKCS8, SignJWT, type KeyLike } from 'jose';
import { appPayload, PushGatewayConfigError, retryAfterMs, retryOutcome, withDeadline } from './common';
import type { Gateway, PushMessage, PushTarget, SendOutcome } from './types';

export interface FcmServiceAccount {
  client_email: string;
  /** PKCS#8 PEM (RSA), as in the service account's JSON key file. */
  private_key: string;
  token_uri: string;
}

export interface FcmGatewayOptions {
  projectId: string;
  serviceAccount: FcmServiceAccount;
  /** https://fcm.googleapis.com or a test URL. */
  origin: string;
  timeoutMs: number;
  fetch?: typeof fetch;
  now?: () => number;
}

export const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
/** Google accepts assertions valid for at most an hour. */
const ASSERTION_LIFETIME_S = 3600;
/** An access token is replaced this long before it expires, so none is used as it lapses mid-request. */
export const FCM_TOKEN_REFRESH_MARGIN_MS = 5 * 60_000;

/** The FCM message body. `data` values must be strings, so the app's data travels as one JSON string. */
export function fcmMessage(token: string, message: PushMessage): Record<string, unknown> {
  const payload = appPayload(message);
  const data: Record<string, string> = { type: payload.type, id: payload.id, data: JSON.stringify(payload.data) };
  if (payload.badge !== undefined) data.badge = String(payload.badge);
  const notification = message.alert
    ? { title: message.alert.title, body: message.alert.body, ...(message.badge !== undefined ? { notification_count: message.badge } : {}) }
    : undefined;
  return {
    message: {
      token,
      data,
      android: {
        collapse_key: message.collapseKey,
        ttl: `${Math.max(0, Math.floor(message.ttlSeconds))}s`,
        priority: message.urgency === 'high' ? 'HIGH' : 'NORMAL',
        ...(notification ? { notification } : {}),
      },
    },
  };
}

class TokenEndpointError extends Error {
  override readonly name = 'TokenEndpointError';
  constructor(readonly status: number, readonly retryAfter: string | null, detail: string) {
    super(`token endpoint answered ${status}: ${detail}`);
  }
}

interface FcmError {
  status?: string;
  message?: string;
  details?: Array<{ '@type'?: string; errorCode?: string; fieldViolations?: Array<{ field?: string }> }>;
}

export function createFcmGateway(options: FcmGatewayOptions): Gateway {
  const { projectId, serviceAccount, timeoutMs } = options;
  if (!projectId || !serviceAccount.client_email || !serviceAccount.private_key || !serviceAccount.token_uri) {
    throw new PushGatewayConfigError('FCM needs a project id and a service account (client_email, private_key, token_uri)');
  }
  const doFetch = options.fetch ?? fetch;
  const now = options.now ?? Date.now;
  const sendUrl = `${options.origin.replace(/\/+$/, '')}/v1/projects/${encodeURIComponent(projectId)}/messages:send`;
  let signingKey: Promise<KeyLike> | undefined;
  let access: { token: string; refreshAt: number } | undefined;
  let accessInFlight: Promise<string> | undefined;

  function accessToken(forceRefresh: boolean, signal: AbortSignal): Promise<string> {
    if (!forceRefresh && access && now() < access.refreshAt) return Promise.resolve(access.token);
    accessInFlight ??= (async () => {
      signingKey ??= importPKCS8(serviceAccount.private_key, 'RS256');
      const iat = Math.floor(now() / 1000);
      const assertion = await new SignJWT({ scope: FCM_SCOPE })
        .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
        .setIssuer(serviceAccount.client_email)
        .setAudience(serviceAccount.token_uri)
        .setIssuedAt(iat)
        .setExpirationTime(iat + ASSERTION_LIFETIME_S)
        .sign(await signingKey);
      const response = await doFetch(serviceAccount.token_uri, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }).toString(),
        signal,
      });
      const text = await response.text();
      if (!response.ok) throw new TokenEndpointError(response.status, response.headers.get('retry-after'), text.slice(0, 200));
      const grant = JSON.parse(text) as { access_token?: string; expires_in?: number };
      if (!grant.access_token) throw new TokenEndpointError(response.status, null, 'no access_token');
      const lifetimeMs = (grant.expires_in ?? ASSERTION_LIFETIME_S) * 1000;
      // Short-lived tokens (tests, odd servers) are refreshed at half their life rather than never cached.
      access = { token: grant.access_token, refreshAt: now() + Math.max(lifetimeMs - FCM_TOKEN_REFRESH_MARGIN_MS, lifetimeMs / 2) };
      return grant.access_token;
    })().finally(() => {
      accessInFlight = undefined;
    });
    return accessInFlight;
  }

  async function post(body: string, token: string, signal: AbortSignal): Promise<{ status: number; retryAfter: string | null; error?: FcmError }> {
    const response = await doFetch(sendUrl, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json; charset=utf-8' },
      body,
      signal,
    });
    const text = await response.text();
    let error: FcmError | undefined;
    if (!response.ok) {
      try {
        error = (JSON.parse(text) as { error?: FcmError }).error;
      } catch {
        error = { message: text.slice(0, 200) };
      }
    }
    return { status: response.status, retryAfter: response.headers.get('retry-after'), ...(error ? { error } : {}) };
  }

  async function send(target: PushTarget, message: PushMessage, signal?: AbortSignal): Promise<SendOutcome> {
    if (!target.token) return { status: 'rejected', reason: 'FCM target needs a registration token' };
    const body = JSON.stringify(fcmMessage(target.token, message));
    const started = performance.now();
    try {
      return await withDeadline(timeoutMs, signal, async (deadline) => {
        let answer = await post(body, await accessToken(false, deadline), deadline);
        if (answer.status === 401) {
          // Revoked or expired early: one fresh token, then the answer stands.
          answer = await post(body, await accessToken(true, deadline), deadline);
        }
        return outcomeFor(answer, now(), started);
      });
    } catch (error) {
      if (signal?.aborted && error === signal.reason) throw error;
      if (error instanceof TokenEndpointError) {
        if (error.status === 429 || error.status >= 500) return retryOutcome(retryAfterMs(error.retryAfter, now()));
        return { status: 'rejected', reason: error.message };
      }
      // A timeout (PushTimeoutError) or a network error: the gateway may answer the next attempt.
      return { status: 'retry' };
    }
  }

  return {
    kind: 'fcm',
    send,
    async close() {
      access = undefined;
    },
  };
}

function errorCode(error: FcmError | undefined): string | undefined {
  return error?.details?.find((detail) => detail.errorCode)?.errorCode ?? error?.status;
}

/** INVALID_ARGUMENT is permanent for the message, but means a dead channel only when it names the token. */
function concernsToken(error: FcmError | undefined): boolean {
  if (error?.details?.some((detail) => detail.fieldViolations?.some((violation) => violation.field === 'message.token'))) return true;
  return /registration token/i.test(error?.message ?? '');
}

function outcomeFor(answer: { status: number; retryAfter: string | null; error?: FcmError }, nowMs: number, started: number): SendOutcome {
  const { status, error } = answer;
  if (status >= 200 && status < 300) return { status: 'sent', latencyMs: performance.now() - started };
  const code = errorCode(error);
  if (status === 404 || code === 'UNREGISTERED') return { status: 'gone' };
  if (status === 400 && code === 'INVALID_ARGUMENT' && concernsToken(error)) return { status: 'gone' };
  if (status === 429 || status >= 500) return retryOutcome(retryAfterMs(answer.retryAfter, nowMs));
  return { status: 'rejected', reason: `FCM answered ${status}${code ? ` ${code}` : ''}${error?.message ? `: ${error.message}` : ''}` };
}
