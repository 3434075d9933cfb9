/**
 * Builds a real app over a real SQLite file in a temporary directory, with a manual clock and a silent logger.
 * Each test file gets its own; nothing is shared between files.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { createApp } from '../../server/app';
import { loadConfig, type Config } from '../../server/config';
import { ManualClock } from '../../server/clock';
import { loadKeys, type KeyMaterial } from '../../server/auth/keys';
import { openSqliteStore, type SqliteStore } from '../../server/store/sqlite';
import { createUserAdmin } from '../../server/admin/users';
import { createLogger } from '../../server/logger';
import { assertNoSecretsInLogs } from './secrets';

export interface TestContext {
  dir: string;
  config: Config;
  store: SqliteStore;
  keys: KeyMaterial;
  clock: ManualClock;
  app: ReturnType<typeof createApp>['app'];
  built: ReturnType<typeof createApp>;
  users: ReturnType<typeof createUserAdmin>;
  logLines: string[];
  /** Passwords the tests used: the log scan at close() looks for each of them literally. */
  secrets: Set<string>;
  close(): Promise<void>;
}

export function tempDir(prefix = 'pigeon-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function buildTestApp(overrides: Partial<Config> = {}, env: Record<string, string> = {}): Promise<TestContext> {
  const dir = tempDir();
  const config = loadConfig({ PIGEON_DATA_DIR: dir, PIGEON_DEMO: 'false', PIGEON_PASSWORD_GRANT: 'true', PIGEON_LOG_LEVEL: 'info', ...env }, overrides);
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  const keys = await loadKeys(config);
  const clock = new ManualClock(Date.now());
  const logLines: string[] = [];
  // The production logger (its redaction included), writing into memory so close() can scan what was logged.
  const log = createLogger({ logLevel: 'info', logPretty: false }, { write: (line: string) => void logLines.push(line) });
  const secrets = new Set<string>();
  // The shedder would read the test runner's own event loop (busy with other tests): in-process apps never shed.
  // tests/reliability/overload.test.ts drives it with a lag source of its own.
  const built = createApp({ config, store, keys, clock, log, lag: { lagMs: () => 0, stop() {} } });
  const { app } = built;
  return {
    dir,
    config,
    store,
    keys,
    clock,
    app,
    built,
    users: createUserAdmin(store, clock),
    logLines,
    secrets,
    async close() {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
      assertNoSecretsInLogs(logLines, secrets, 'the test app log');
    },
  };
}

export const CLIENT_ID = 'pigeon-app';

export async function passwordGrant(ctx: TestContext, username: string, password: string, extra: Record<string, string> = {}) {
  ctx.secrets.add(password);
  return request(ctx.app)
    .post('/oauth2/token')
    .type('form')
    .send({ grant_type: 'password', client_id: CLIENT_ID, username, password, ...extra });
}

/** Signs in and returns the token response body (fails the test when the grant fails). */
export async function signIn(ctx: TestContext, username: string, password: string, extra: Record<string, string> = {}) {
  const res = await passwordGrant(ctx, username, password, extra);
  if (res.status !== 200) throw new Error(`sign-in failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as { access_token: string; refresh_token: string; expires_in: number; scope: string };
}

/**
 * Requests to the in-process app as one caller: its bearer token, its `X-Device-Id` when it has one, and any other
 * headers every request of the test sends (a fixed User-Agent, say).
 */
export function asCaller(ctx: Pick<TestContext, 'app'>, s: { access: string; deviceId?: string }, headers: Record<string, string> = {}) {
  const h = (r: request.Test) => {
    r.set('Authorization', `Bearer ${s.access}`).set(headers);
    if (s.deviceId) r.set('X-Device-Id', s.deviceId);
    return r;
  };
  return {
    get: (p: string) => h(request(ctx.app).get(p)),
    post: (p: string, body?: object) => h(request(ctx.app).post(p)).send(body ?? {}),
    put: (p: string, body?: object) => h(request(ctx.app).put(p)).send(body ?? {}),
    patch: (p: string, body?: object) => h(request(ctx.app).patch(p)).send(body ?? {}),
    delete: (p: string) => h(request(ctx.app).delete(p)),
  };
}
