import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runAdmin } from '../../server/cli/admin';
import { openSqliteStore } from '../../server/store/sqlite';
import { verifyPassword } from '../../server/identity/passwords';
import { tempDir } from '../helpers/testApp';
import { ROOT } from '../helpers/server';

let dir: string;
let saved: NodeJS.ProcessEnv;
// Each test replaces process.env; a child process still needs to find npm and node.
const { PATH, HOME } = process.env;
beforeEach(() => {
  dir = tempDir('pigeon-cli-');
  saved = process.env;
  process.env = { PIGEON_DATA_DIR: dir };
});
afterEach(() => {
  process.env = saved;
  fs.rmSync(dir, { recursive: true, force: true });
});

async function admin(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runAdmin(argv, (l) => out.push(l), (l) => err.push(l));
  return { code, out: out.join('\n'), err: err.join('\n') };
}

test('add-user, list-users, set-password, revoke-sessions', async () => {
  expect((await admin('add-user', '--username', 'dave', '--password', 'dave-password-1', '--admin')).out).toMatch(/^added admin dave/);
  expect((await admin('add-user', '--username', 'erin', '--password', 'erin-password-1')).code).toBe(0);
  const list = (await admin('list-users')).out.split('\n');
  expect(list.map((l) => l.split('\t').slice(1, 3))).toEqual([['dave', 'admin'], ['erin', 'user']]);

  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  const erin = (await store.users.byUsername('erin'))!;
  expect((await store.folders.listByUser(erin.id)).map((f) => f.kind)).toContain('inbox');
  await store.refreshTokens.insert({ id: 'r1', familyId: 'f1', userId: erin.id, deviceId: null, clientId: 'pigeon-app', scope: 'mail', tokenHash: Buffer.from('h1'), createdAt: 0, expiresAt: Date.now() + 1e9 });
  await store.close();

  expect((await admin('set-password', '--username', 'erin', '--password', 'erin-password-2')).out).toContain('1 refresh token(s) revoked');
  const after = openSqliteStore(path.join(dir, 'pigeon.db'));
  const erin2 = (await after.users.byUsername('erin'))!;
  expect(await verifyPassword('erin-password-2', erin2.passwordHash)).toBe(true);
  expect(erin2.sessionVersion).toBe(erin.sessionVersion + 1);
  expect((await after.refreshTokens.byId('r1'))!.revokedAt).not.toBeNull();
  await after.close();

  expect((await admin('revoke-sessions', '--username', 'erin')).code).toBe(0);
});

test('bad input is refused with a clear message and changes nothing', async () => {
  await expect(admin('add-user', '--username', 'x', '--password', 'short')).rejects.toThrow(/at least 8/);
  await expect(admin('add-user', '--username', 'bad name', '--password', 'long-enough-1')).rejects.toThrow(/username/);
  await expect(admin('set-password', '--username', 'ghost', '--password', 'long-enough-1')).rejects.toThrow(/no user named/);
  await expect(admin('add-user', '--bogus')).rejects.toThrow();
  const unknown = await admin('frobnicate');
  expect(unknown).toEqual({ code: 64, out: '', err: expect.stringMatching(/^pigeon admin: unknown command "frobnicate"\nusage: /) });
  expect((await admin('list-users')).out).toBe('');
});

test('a password can come from PIGEON_ADMIN_PASSWORD instead of the command line', async () => {
  process.env.PIGEON_ADMIN_PASSWORD = 'from-env-password';
  expect((await admin('add-user', '--username', 'frank')).code).toBe(0);
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  expect(await verifyPassword('from-env-password', (await store.users.byUsername('frank'))!.passwordHash)).toBe(true);
  await store.close();
});

test('purge-devices ends partnerships unseen for the inactivity period', async () => {
  await admin('add-user', '--username', 'gina', '--password', 'gina-password-1');
  const store = openSqliteStore(path.join(dir, 'pigeon.db'));
  const gina = (await store.users.byUsername('gina'))!;
  const old = await store.devices.create(gina.id, 'old-device-0000000001', { friendlyName: null, deviceType: null, deviceModel: null, deviceOS: null, clientType: null, clientVersion: null, userAgent: null, capabilities: [] }, Date.now() - 31 * 86400_000);
  const recent = await store.devices.create(gina.id, 'new-device-0000000001', { friendlyName: null, deviceType: null, deviceModel: null, deviceOS: null, clientType: null, clientVersion: null, userAgent: null, capabilities: [] }, Date.now());
  await store.close();
  const { out } = await admin('purge-devices');
  expect(out).toContain(`purged ${old.id}`);
  expect(out).toContain('1 inactive device(s) purged');
  const after = openSqliteStore(path.join(dir, 'pigeon.db'));
  expect(await after.devices.byId(old.id)).toBeUndefined();
  expect(await after.devices.byId(recent.id)).toBeDefined();
  await after.close();
});

test('reset-mailbox gives the mailbox a new epoch', async () => {
  await admin('add-user', '--username', 'hank', '--password', 'hank-password-1');
  const before = openSqliteStore(path.join(dir, 'pigeon.db'));
  const epoch = (await before.mailboxes.get((await before.users.byUsername('hank'))!.id))!.epoch;
  await before.close();
  expect((await admin('reset-mailbox', '--username', 'hank')).code).toBe(0);
  const after = openSqliteStore(path.join(dir, 'pigeon.db'));
  expect((await after.mailboxes.get((await after.users.byUsername('hank'))!.id))!.epoch).not.toBe(epoch);
  await after.close();
  await expect(admin('reset-mailbox', '--username', 'nobody')).rejects.toThrow(/no user/);
});

test('help is not an error: usage on stdout, exit 0, and no store is created', async () => {
  const store = path.join(dir, 'pigeon.db');
  for (const argv of [['--help'], ['-h'], ['help'], ['import', '--help']]) {
    const { code, out, err } = await admin(...argv);
    expect({ argv, code, err }).toEqual({ argv, code: 0, err: '' });
    expect(out).toMatch(/^usage: npm run admin -- <command> \[options\]\ncommands:\n/);
    expect(out).toContain('import --user U (--mbox FILE | --eml DIR)');
  }
  const none = await admin();
  expect(none.code).toBe(64);
  expect(none.err).toMatch(/^usage: /);
  expect(fs.existsSync(store)).toBe(false);
});

test('`npm run admin -- --help` exits 0 with the usage on stdout', () => {
  const run = spawnSync('npm', ['run', '--silent', 'admin', '--', '--help'], {
    cwd: ROOT,
    env: { PATH, HOME, npm_config_update_notifier: 'false', PIGEON_DATA_DIR: dir },
    encoding: 'utf8',
    timeout: 30_000,
  });
  expect(run.status).toBe(0);
  expect(run.stdout).toMatch(/^usage: npm run admin -- <command> \[options\]/);
  expect(run.stderr).toBe('');
  expect(fs.existsSync(path.join(dir, 'pigeon.db'))).toBe(false);
}, 30_000);
