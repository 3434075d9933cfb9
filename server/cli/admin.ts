/**
 * Admin CLI: `npm run admin -- <command> [options]`. Works on the store file directly (the server may be running:
 * SQLite's WAL and busy timeout make that safe).
 *
 *   add-user --username U [--password P] [--admin] [--display-name N] [--email E]
 *   set-password --username U [--password P]      (revokes every session of U)
 *   revoke-sessions --username U
 *   list-users
 *   purge-devices                                  (ends partnerships unseen for PIGEON_DEVICE_INACTIVITY)
 *   reset-mailbox --username U                     (new sync epoch: every device of U resyncs; use after a restore)
 *   config-doc                                     (the config table as Markdown)
 *
 * A password not given with --password is read from PIGEON_ADMIN_PASSWORD or, failing that, from standard input,
 * so it need not appear in shell history.
 */
import { parseArgs } from 'node:util';
import { loadConfig, configMarkdown, ConfigError } from '../config';
import { openSqliteStore } from '../store/sqlite';
import { systemClock } from '../clock';
import { createUserAdmin, UserAdminError } from '../admin/users';
import { databaseFile } from '../paths';
import { createDeviceService } from '../devices/service';
import { DeviceSignals } from '../devices/signals';

const USAGE = `usage: npm run admin -- <command> [options]
commands:
  add-user --username U [--password P] [--admin] [--display-name N] [--email E]
  set-password --username U [--password P]
  revoke-sessions --username U
  list-users
  purge-devices                                  (ends partnerships unseen for PIGEON_DEVICE_INACTIVITY)
  reset-mailbox --username U                     (new sync epoch: every device of U resyncs; use after a restore)
  config-doc`;

async function readPassword(given: string | undefined): Promise<string> {
  if (given) return given;
  const fromEnv = process.env.PIGEON_ADMIN_PASSWORD;
  if (fromEnv) return fromEnv;
  if (process.stdin.isTTY) process.stderr.write('password: ');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

export async function runAdmin(argv: string[], out: (line: string) => void): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'config-doc') {
    out(configMarkdown());
    return 0;
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      username: { type: 'string' },
      password: { type: 'string' },
      admin: { type: 'boolean', default: false },
      'display-name': { type: 'string' },
      email: { type: 'string' },
    },
    strict: true,
  });
  const { PIGEON_ADMIN_PASSWORD: _ignored, ...env } = process.env;
  const config = loadConfig(env);
  const store = openSqliteStore(databaseFile(config));
  try {
    const admin = createUserAdmin(store, systemClock);
    const needUser = () => {
      if (!values.username) throw new UserAdminError('--username is required');
      return values.username;
    };
    switch (command) {
      case 'add-user': {
        const username = needUser();
        const user = await admin.addUser({
          username,
          password: await readPassword(values.password),
          role: values.admin ? 'admin' : 'user',
          displayName: values['display-name'],
          email: values.email,
        });
        out(`added ${user.role} ${user.username} (${user.id})`);
        return 0;
      }
      case 'set-password': {
        const username = needUser();
        const { revoked } = await admin.setPassword(username, await readPassword(values.password));
        out(`password of ${username} changed; ${revoked} refresh token(s) revoked`);
        return 0;
      }
      case 'revoke-sessions': {
        const username = needUser();
        out(`${admin.revokeSessionsOf(username)} refresh token(s) of ${username} revoked; access tokens end now`);
        return 0;
      }
      case 'purge-devices': {
        const devices = createDeviceService({
          store,
          clock: systemClock,
          signals: new DeviceSignals(),
          maxDevicesPerUser: config.maxDevicesPerUser,
          inactivityMs: config.deviceInactivity * 1000,
        });
        const purged = devices.purgeInactive();
        for (const d of purged) out(`purged ${d.id}\t${d.deviceId}\tuser ${d.userId}`);
        out(`${purged.length} inactive device(s) purged`);
        return 0;
      }
      case 'reset-mailbox': {
        const username = needUser();
        const user = store.users.byUsername(username);
        if (!user) throw new UserAdminError(`no user named ${JSON.stringify(username)}`);
        store.mailboxes.resetEpoch(user.id);
        out(`mailbox of ${username} reset: every device resyncs from scratch on its next sync`);
        return 0;
      }
      case 'list-users': {
        for (const u of admin.list()) out(`${u.id}\t${u.username}\t${u.role}\t${u.email}\t${u.disabled ? 'disabled' : 'active'}`);
        return 0;
      }
      default:
        out(USAGE);
        return 64;
    }
  } finally {
    store.close();
  }
}

if (require.main === module) {
  runAdmin(process.argv.slice(2), (line) => process.stdout.write(line + '\n')).then(
    (code) => process.exit(code),
    (err) => {
      const known = err instanceof UserAdminError || err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
      process.stderr.write(`pigeon admin: ${known ? err.message : err.stack}\n${known ? USAGE + '\n' : ''}`);
      process.exit(known ? 64 : 1);
    },
  );
}
