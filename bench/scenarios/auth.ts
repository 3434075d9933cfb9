/**
 * Scenario 5: what authentication and the device gate cost. A refresh grant (rotates the refresh token: a signed
 * access token and a committed write) and `GET /v1/session` with a registered device (token verification, the
 * user's session version, the device's access state) — the overhead every /v1 call pays.
 */
import { FORM, type SignedIn } from '../lib/client';
import { httpFigure, type BenchContext, type Figure } from '../lib/figure';
import { json, type Target } from '../lib/http';
import type { LoadRequest } from '../lib/load';

export async function authFigures(ctx: BenchContext, p: Target, s: SignedIn): Promise<Figure[]> {
  // Each refresh uses the successor the previous one returned (a rotated token presented again would take the
  // retry-grace path, or end the family): the load generator carries it from response to request.
  let current = s.refreshToken;
  const form = (rt: string) => `grant_type=refresh_token&client_id=pigeon-app&refresh_token=${encodeURIComponent(rt)}`;
  let reused = 0;
  const refresh: LoadRequest = {
    method: 'POST',
    path: '/oauth2/token',
    headers: FORM,
    setupRequest: (req) => ({ ...req, body: form(current) }),
    onResponse: (status, body) => {
      if (status !== 200) return;
      const next = (JSON.parse(body) as { refresh_token: string }).refresh_token;
      if (next === current) reused++;
      current = next;
    },
  };
  const template = { method: 'POST', path: '/oauth2/token', headers: FORM, body: form(current) };
  const refreshFigure = await httpFigure(ctx, p, template, {
    id: 'auth.refresh',
    scenario: 5,
    label: 'token refresh (rotation), latency',
    kind: 'latency',
    check: (r) => (current = json<{ refresh_token: string }>(r).refresh_token),
    requests: [refresh],
  });
  if (reused > 0) throw new Error(`token refresh: ${reused} responses repeated the presented token (the chain broke)`);

  const session = { method: 'GET', path: '/v1/session', headers: s.headers };
  const sessionLatency = await httpFigure(ctx, p, session, { id: 'auth.session.latency', scenario: 5, label: 'GET /v1/session (token + device gate), latency', kind: 'latency' });
  const sessionLoad = await httpFigure(ctx, p, session, { id: 'auth.session.throughput', scenario: 5, label: 'GET /v1/session, 16 connections', kind: 'throughput' });
  return [refreshFigure, sessionLatency, sessionLoad];
}
