/**
 * Admin CLI: `npm run admin -- <command> [options]`. Works on the configured store directly, also while the server
 * runs: the SQLite file (its WAL and busy timeout make that safe) or, with PIGEON_DATABASE_URL, PostgreSQL (the
 * servers hear its changes from the database's feed, as they hear each other's).
 *
 *   add-user --username U [--password P] [--admin] [--display-name N] [--email E] [--tenant ID]
 *   set-password --username U [--password P]      (revokes every session of U)
 *   revoke-sessions --username U
 *   list-users
 *   purge-devices                                  (ends partnerships unseen for PIGEON_DEVICE_INACTIVITY)
 *   reset-mailbox --username U                     (new sync epoch: every device of U resyncs; use after a restore)
 *   import --user U (--mbox FILE | --eml DIR) [--folder KIND|ID]
 *   tenant create --name N [--region R]           (R: PIGEON_REGION, the only region this node may create in)
 *   tenant list
 *   tenant export --tenant ID --out FILE          (the tenant's users, mail, rules and audit log, to move it)
 *   tenant import --in FILE                        (recreates an exported tenant here, in PIGEON_REGION)
 *   region adopt NAME                              (relabels a store created before regions as region NAME's)
 *   directory set --user U [--title T] [--manager U2] …  (a user's directory fields; audited)
 *   directory import --csv FILE [--tenant ID]      (directory fields of many users from CSV, all or nothing)
 *   diagnostics show ID | download ID FILE | purge (incidents: server/cli/diagnostics.ts)
 *   config-doc                                     (the config table as Markdown)
 *   help, --help, -h                               (the usage on stdout, exit 0; also `<command> --help`)
 *
 * A password not given with --password is read from PIGEON_ADMIN_PASSWORD or, failing that, from standard input,
 * so it need not appear in shell history.
 *
 * `import` goes through the same delivery path as LMTP (server/mail/import.ts). It runs in this process, not the
 * server's, so with SQLite devices connected to a running server get no push event for imported mail: they see it on
 * their next sync (apps sync at start and on a timer). With PostgreSQL the database's feed tells the servers, as it
 * does of any node's commits. Exit status: 0 when every message was stored or was a duplicate, 1 when
 * some failed (each is listed), 2 when the user or folder does not exist.
 *
 * Regions (README): every command but `tenant list` and `region adopt` first checks that the store holds no tenant of
 * another region than PIGEON_REGION, as the server does at start, so a CLI pointed at the wrong store changes
 * nothing. `tenant create` for another region is refused with that region's base URL: run it there. `tenant
 * export` on a node of the source region and `tenant import` on one of the target region move a tenant
 * (server/admin/tenantMove.ts): exit status 2 when the move is refused (a damaged file, a tenant or username that
 * exists), 1 when an import failed after writing (the message names what it created).
 */
import { DIRECTORY_USAGE, runDirectoryCli } from './directory';
import { DIAGNOSTICS_USAGE, runDiagnosticsCli } from './diagnostics';
import { createMessageInspector } from '../protection/inspect';
import { createSmimeInspector } from '../protection/smime';
import { loadSmimeTrust } from '../protection/trustFile';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import cliProgress from 'cli-progress';
import { loadConfig, configMarkdown, ConfigError, type Config } from '../config';
import { JOBS, nodeName, openConfiguredStore } from '../database';
import { systemClock } from '../clock';
import { createUserAdmin, UserAdminError } from '../admin/users';
import { createDeviceService } from '../devices/service';
import { DeviceSignals } from '../devices/signals';
import { createDelivery } from '../mail/delivery';
import { createImporter, emlDirectorySource, mboxFileSource, type ImportCounts, type ImportReport, type ImportTarget } from '../mail/import';
import { MboxFormatError } from '../content/mbox';
import type { Store } from '../store/types';
import { adoptRegion, checkStoreRegion, regionsOf, RegionAdoptError, WrongRegionStore } from '../regions';
import { exportTenant, importTenant, TenantImportFailed, TenantMoveError } from '../admin/tenantMove';
import { loadKeys } from '../auth/keys';

const USAGE = `usage: npm run admin -- <command> [options]
commands:
  add-user --username U [--password P] [--admin] [--display-name N] [--email E] [--tenant ID]
                                                 (ID: a tenant of this store; the first user's tenant by default)
  set-password --username U [--password P]
  revoke-sessions --username U
  list-users
  purge-devices                                  (ends partnerships unseen for PIGEON_DEVICE_INACTIVITY)
  reset-mailbox --username U                     (new sync epoch: every device of U resyncs; use after a restore)
  import --user U (--mbox FILE | --eml DIR) [--folder KIND|ID]
                                                 (U: username, address or id; folder: inbox by default)
  tenant create --name N [--region R]            (R must be PIGEON_REGION, the default)
  tenant list
  tenant export --tenant ID --out FILE           (to move a tenant to another region: its users, mail, rules and
                                                 audit log, not its devices or sign-ins; audited)
  tenant import --in FILE                        (on the target region: recreates the exported tenant; audited)
  region adopt NAME                              (relabels a store created before regions as NAME's; audited)
${DIRECTORY_USAGE}
${DIAGNOSTICS_USAGE}
  config-doc
  help                                           (this text; also --help, -h, or --help after a command)`;

async function readPassword(given: string | undefined): Promise<string> {
  if (given) return given;
  const fromEnv = process.env.PIGEON_ADMIN_PASSWORD;
  if (fromEnv) return fromEnv;
  if (process.stdin.isTTY) process.stderr.write('password: ');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

/** Progress on stderr: a bar on a terminal, otherwise (a log, a pipe) a line every 1,000 messages. */
function importProgress(total: number, unit: 'bytes' | 'messages') {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: 'importing [{bar}] {percentage}% | {processed} messages: {stored} stored, {duplicates} duplicates, {failed} failed', stream: process.stderr },
      cliProgress.Presets.shades_classic,
    );
    bar.start(Math.max(total, 1), 0, { processed: 0, stored: 0, duplicates: 0, failed: 0 });
    return {
      update: (c: ImportCounts, done: number) => bar.update(done, { ...c }),
      stop: () => bar.stop(),
    };
  }
  let reported = 0;
  return {
    update: (c: ImportCounts, done: number) => {
      if (Math.floor(c.processed / 1000) <= reported) return;
      reported = Math.floor(c.processed / 1000);
      const share = unit === 'bytes' ? ` (${Math.floor((100 * done) / Math.max(total, 1))}% of the file)` : '';
      process.stderr.write(`imported ${c.processed} messages${share}: ${c.stored} stored, ${c.duplicates} duplicates, ${c.failed} failed\n`);
    },
    stop: () => {},
  };
}

async function importCommand(
  store: Store,
  config: Config,
  args: { user?: string; mbox?: string; eml?: string; folder?: string },
  out: (line: string) => void,
): Promise<number> {
  if (!args.user) throw new UserAdminError('--user is required');
  if (Boolean(args.mbox) === Boolean(args.eml)) throw new UserAdminError('give exactly one of --mbox FILE and --eml DIR');
  const from = (args.mbox ?? args.eml)!;
  if (!fs.existsSync(from)) throw new UserAdminError(`${from}: no such ${args.mbox ? 'file' : 'directory'}`);
  const user = (await store.users.byUsername(args.user)) ?? (await store.users.byId(args.user)) ?? (await store.users.byEmail(args.user))[0];
  if (!user) {
    process.stderr.write(`pigeon admin: no user ${JSON.stringify(args.user)} (give a username, an address or a user id)\n`);
    return 2;
  }
  const delivery = createDelivery({
    store,
    clock: systemClock,
    duplicateWindowSeconds: config.duplicateWindow,
    threadSubjectWindowSeconds: config.threadSubjectWindow,
    // The same inspection as live delivery: protected mail is stored as its placeholder, S/MIME with its status.
    inspect: createMessageInspector({
      smime: createSmimeInspector({ trustAnchorsPem: loadSmimeTrust(config.smimeTrustFile) }),
      clock: systemClock,
      warn: (facts, message) => process.stderr.write(`pigeon admin: ${message} ${JSON.stringify(facts)}\n`),
    }),
  });
  const importer = createImporter({ store, clock: systemClock, delivery, maxMessageBytes: config.maxMessageBytes });
  let target: ImportTarget;
  try {
    target = await importer.resolveTarget(user, args.folder);
  } catch (err) {
    process.stderr.write(`pigeon admin: ${(err as Error).message} (--folder ${args.folder}: a folder kind such as inbox or archive, or a folder id)\n`);
    return 2;
  }

  let done = 0;
  let progress: ReturnType<typeof importProgress>;
  let source: AsyncIterable<Buffer>;
  if (args.mbox) {
    progress = importProgress(fs.statSync(args.mbox).size, 'bytes');
    source = mboxFileSource(args.mbox, (bytes) => (done = bytes));
  } else {
    const eml = emlDirectorySource(args.eml!);
    progress = importProgress(eml.count, 'messages');
    source = eml.messages;
  }
  const started = performance.now();
  let report: ImportReport;
  try {
    report = await importer.importAll(target, source, { onProgress: (c) => progress.update(c, args.mbox ? done : c.processed) });
  } catch (err) {
    if (!(err instanceof MboxFormatError)) throw err;
    process.stderr.write(`pigeon admin: ${args.mbox}: ${err.message}\n`);
    return 1;
  } finally {
    progress.stop();
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const failures = report.failed.slice(0, 100).map((f) => `message #${f.index + 1} failed: ${f.reason}`);
  if (report.failed.length > failures.length) failures.push(`... and ${report.failed.length - failures.length} more`);
  failures.forEach(out);
  out(
    `imported into ${user.username}/${target.folder.displayName}: ${report.stored} stored, ${report.duplicates} duplicates, ` +
      `${report.failed.length} failed (${report.stored + report.duplicates + report.failed.length} messages in ${seconds} s)`,
  );
  return report.failed.length ? 1 : 0;
}

/**
 * `tenant export` and `tenant import` (server/admin/tenantMove.ts). `serverSecret` is this node's, as the server
 * loads it: the export opens the tenant's sealed protection keys with it, the import seals them with it.
 */
async function tenantMoveCommand(
  store: Store,
  region: string,
  serverSecret: Buffer,
  sub: 'export' | 'import',
  args: { tenant?: string; out?: string; in?: string },
  out: (line: string) => void,
  err: (line: string) => void,
): Promise<number> {
  const progress = (line: string) => err(`pigeon admin: ${line}`);
  if (sub === 'export') {
    if (!args.tenant || !args.out) throw new UserAdminError('tenant export needs --tenant ID and --out FILE');
    const done = await exportTenant(store, args.tenant, args.out, { clock: systemClock, serverSecret, progress });
    const c = done.counts;
    out(
      `exported tenant ${done.tenant.name} (${done.tenant.id}) of region ${done.tenant.region} to ${done.file}: ${c.users} users, ` +
        `${c.folders} folders, ${c.items} items, ${c.attachments} attachments, ${c.rules} rules, ${c.audit} audit entries; sha256 ${done.sha256}`,
    );
    out('not moved: devices, sign-ins, outbox, idempotency records and sync history (devices sign in again at the new region)');
    return 0;
  }
  if (!args.in) throw new UserAdminError('tenant import needs --in FILE');
  try {
    const done = await importTenant(store, args.in, region, { clock: systemClock, serverSecret, progress });
    const c = done.counts;
    out(
      `imported tenant ${done.tenant.name} (${done.tenant.id}) from region ${done.sourceRegion} into region ${done.tenant.region}: ` +
        `${c.users} users, ${c.folders} folders, ${c.items} items, ${c.attachments} attachments, ${c.rules} rules, ` +
        `${c.audit} audit entries; sha256 ${done.sha256}; audited as tenant.imported`,
    );
    return 0;
  } catch (e) {
    if (!(e instanceof TenantImportFailed)) throw e;
    err(`pigeon admin: ${e.message}`);
    return 1;
  }
}

const COMMANDS = ['add-user', 'set-password', 'revoke-sessions', 'list-users', 'purge-devices', 'reset-mailbox', 'import', 'tenant', 'region', 'directory', 'diagnostics', 'config-doc'];
/** The subcommands of the commands that have them, and how many more words each takes. */
const SUBCOMMANDS: Record<string, Record<string, number>> = { tenant: { create: 0, list: 0, export: 0, import: 0 }, region: { adopt: 1 } };
const HELP = ['help', '--help', '-h'];
const EX_USAGE = 64;

/** Exit status: 0 on success, 64 (EX_USAGE) for an unknown command (the usage goes to stderr), or the command's own. */
export async function runAdmin(argv: string[], out: (line: string) => void, err: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) {
    err(USAGE);
    return EX_USAGE;
  }
  // Asking for help is not an error: the usage on stdout and 0, before the store is opened (or created).
  if (HELP.includes(command) || rest.includes('--help')) {
    out(USAGE);
    return 0;
  }
  if (!COMMANDS.includes(command)) {
    err(`pigeon admin: unknown command ${JSON.stringify(command)}\n${USAGE}`);
    return EX_USAGE;
  }
  if (command === 'config-doc') {
    out(configMarkdown());
    return 0;
  }
  if (command === 'directory') return await runDirectoryCli(rest, out, err);
  if (command === 'diagnostics') return await runDiagnosticsCli(rest, out, err);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      username: { type: 'string' },
      password: { type: 'string' },
      admin: { type: 'boolean', default: false },
      'display-name': { type: 'string' },
      email: { type: 'string' },
      user: { type: 'string' },
      mbox: { type: 'string' },
      eml: { type: 'string' },
      folder: { type: 'string' },
      name: { type: 'string' },
      region: { type: 'string' },
      tenant: { type: 'string' },
      out: { type: 'string' },
      in: { type: 'string' },
    },
    strict: true,
  });
  const [sub, ...words] = positionals;
  const subcommands = SUBCOMMANDS[command];
  if (subcommands ? sub === undefined || !Object.hasOwn(subcommands, sub) || words.length !== subcommands[sub] : positionals.length) {
    throw new UserAdminError(
      subcommands ? `${command}: expected one of ${Object.keys(subcommands).map((c) => `${command} ${c}`).join(', ')}` : `unexpected argument ${JSON.stringify(positionals[0])}`,
    );
  }
  const action = subcommands ? `${command} ${sub}` : command;
  const { PIGEON_ADMIN_PASSWORD: _ignored, ...env } = process.env;
  const config = loadConfig(env);
  const regions = regionsOf(config);
  if (action === 'tenant create') {
    if (!values.name) throw new UserAdminError('--name is required');
    const region = values.region ?? config.region;
    // A tenant is created by its own region's nodes, in its own region's store, never from here into another's.
    if (region !== config.region) {
      const where = Object.hasOwn(regions.directory, region) ? `: run it against region ${region}'s store (${regions.directory[region]})` : ' (PIGEON_REGIONS does not list it)';
      throw new UserAdminError(`refused: this store is region ${config.region}'s (PIGEON_REGION), not ${region}'s${where}`);
    }
  }
  // A command is a few statements at a time: two connections are plenty.
  const store = await openConfiguredStore(config, { nodeId: nodeName(config, 'admin'), poolSize: 2 });
  try {
    // As the server does at start: a store of another region is not this CLI's to change (README, "Regions").
    if (action !== 'tenant list' && action !== 'region adopt') await checkStoreRegion(store, config.region);
    const admin = createUserAdmin(store, systemClock, { region: config.region });
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
          tenantId: values.tenant,
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
        out(`${await admin.revokeSessionsOf(username)} refresh token(s) of ${username} revoked; access tokens end now`);
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
        // Not while a server's purge runs (with PostgreSQL: on any node); after it, this one finds what is left.
        const turn = await store.exclusive(JOBS.devicePurge, () => devices.purgeInactive(), { wait: true });
        const purged = turn.ran ? turn.value : [];
        for (const d of purged) out(`purged ${d.id}\t${d.deviceId}\tuser ${d.userId}`);
        out(`${purged.length} inactive device(s) purged`);
        return 0;
      }
      case 'reset-mailbox': {
        const username = needUser();
        const user = await store.users.byUsername(username);
        if (!user) throw new UserAdminError(`no user named ${JSON.stringify(username)}`);
        await store.mailboxes.resetEpoch(user.id);
        out(`mailbox of ${username} reset: every device resyncs from scratch on its next sync`);
        return 0;
      }
      case 'import':
        return await importCommand(store, config, { user: values.user, mbox: values.mbox, eml: values.eml, folder: values.folder }, out);
      case 'tenant': {
        if (sub === 'list') {
          for (const t of await store.tenants.list()) out(`${t.id}\t${t.name}\t${t.region}\t${new Date(t.createdAt).toISOString()}`);
          return 0;
        }
        if (sub === 'export' || sub === 'import') {
          // The server's own key material (main.ts): the data directory's files, or with PostgreSQL the database's.
          const { serverSecret } = await loadKeys(config, store.backend === 'postgres' ? store.secrets : undefined);
          return await tenantMoveCommand(store, config.region, serverSecret, sub, values, out, err);
        }
        const now = systemClock.now();
        const name = values.name!;
        const tenant = await store.run(function* (tx) {
          const created = yield* tx.tenants.create(name, now, config.region);
          yield* tx.audit.append({
            tenantId: created.id,
            at: now,
            actorId: null,
            actorName: 'system',
            action: 'tenant.create',
            targetType: 'tenant',
            targetId: created.id,
            details: { region: created.region },
          });
          return created;
        });
        out(`created tenant ${tenant.name} (${tenant.id}) in region ${tenant.region}`);
        return 0;
      }
      case 'region': {
        const region = words[0]!;
        if (region !== config.region) {
          throw new UserAdminError(`refused: region adopt ${region} needs PIGEON_REGION=${region} (this configuration serves ${config.region})`);
        }
        const adopted = await adoptRegion(store, region, systemClock.now());
        for (const t of adopted) out(`tenant ${t.name} (${t.id}): region default → ${region}`);
        out(`${adopted.length} tenant(s) adopted into region ${region}`);
        return 0;
      }
      case 'list-users': {
        for (const u of await admin.list()) out(`${u.id}\t${u.username}\t${u.role}\t${u.email}\t${u.disabled ? 'disabled' : 'active'}`);
        return 0;
      }
      default:
        err(USAGE);
        return EX_USAGE;
    }
  } finally {
    await store.close();
  }
}

if (require.main === module) {
  runAdmin(process.argv.slice(2), (line) => process.stdout.write(line + '\n')).then(
    (code) => process.exit(code),
    (err) => {
      const known = err instanceof UserAdminError || err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
      // A store of another region, a refused adoption or move: the message says it all, and it is no usage error.
      const refused = err instanceof WrongRegionStore || err instanceof RegionAdoptError || err instanceof TenantMoveError;
      process.stderr.write(`pigeon admin: ${known || refused ? err.message : err.stack}\n${known ? USAGE + '\n' : ''}`);
      process.exit(known ? EX_USAGE : refused ? 2 : 1);
    },
  );
}
