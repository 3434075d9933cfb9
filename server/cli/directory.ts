/**
 * The admin CLI's `directory` command (server/cli/admin.ts hands it its arguments): a user's directory entry and a
 * CSV import, over the configured store, with the same rules as the admin API (server/directory/service.ts: the
 * tenant's own users only, no manager cycles, an import changes everything or nothing) and audited the same way,
 * by `system`.
 *
 *   directory set --user U [--title T] [--department D] [--office O] [--phone P] [--mobile M]
 *                 [--manager U2 | --no-manager] [--hidden | --visible]
 *   directory import --csv FILE [--tenant ID]
 *
 * Exit status: 0 done, 2 refused (no such user, a bad value, a cycle, a bad line: the message says which); a usage
 * mistake throws UserAdminError, which admin.ts reports with the usage (64).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { systemClock, type Clock } from '../clock';
import { loadConfig } from '../config';
import { nodeName, openConfiguredStore } from '../database';
import { checkStoreRegion } from '../regions';
import { UserAdminError } from '../admin/users';
import type { Actor } from '../devices/service';
import type { Store } from '../store/types';
import { CSV_COLUMNS, DIRECTORY_FIELDS, DirectoryNotFound, DirectoryRefused, createDirectoryService, type DirectoryField, type EntryChange } from '../directory/service';

export const DIRECTORY_USAGE = `  directory set --user U [--title T] [--department D] [--office O] [--phone P] [--mobile M]
                [--manager U2 | --no-manager] [--hidden | --visible]
                                                 (U, U2: usernames of one tenant; an empty value clears a field)
  directory import --csv FILE [--tenant ID]      (lines: ${CSV_COLUMNS.join(',')} (a username);
                                                 all or nothing; ID: needed when the store has several tenants)`;

export type DirectoryCommand =
  | { action: 'set'; user: string; fields: Partial<Record<DirectoryField, string>>; manager?: string | null; hidden?: boolean }
  | { action: 'import'; csv: string; tenant?: string };

/** The command's arguments (those after `directory`), checked before any store is opened. */
export function parseDirectoryArgs(argv: string[]): DirectoryCommand {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      user: { type: 'string' },
      title: { type: 'string' },
      department: { type: 'string' },
      office: { type: 'string' },
      phone: { type: 'string' },
      mobile: { type: 'string' },
      manager: { type: 'string' },
      'no-manager': { type: 'boolean' },
      hidden: { type: 'boolean' },
      visible: { type: 'boolean' },
      csv: { type: 'string' },
      tenant: { type: 'string' },
    },
  });
  const [sub, ...extra] = positionals;
  if ((sub !== 'set' && sub !== 'import') || extra.length) throw new UserAdminError('directory: expected directory set or directory import');
  const setOptions = [...DIRECTORY_FIELDS, 'user', 'manager', 'no-manager', 'hidden', 'visible'] as const;
  if (sub === 'import') {
    const misplaced = setOptions.find((o) => values[o] !== undefined);
    if (misplaced) throw new UserAdminError(`directory import takes no --${misplaced}`);
    if (!values.csv) throw new UserAdminError('directory import needs --csv FILE');
    return { action: 'import', csv: values.csv, ...(values.tenant ? { tenant: values.tenant } : {}) };
  }
  if (values.csv !== undefined || values.tenant !== undefined) throw new UserAdminError('directory set takes --user, not --csv or --tenant');
  if (!values.user) throw new UserAdminError('directory set needs --user U');
  if (values.manager !== undefined && values['no-manager']) throw new UserAdminError('give --manager U2 or --no-manager, not both');
  if (values.hidden && values.visible) throw new UserAdminError('give --hidden or --visible, not both');
  const fields: Partial<Record<DirectoryField, string>> = {};
  for (const name of DIRECTORY_FIELDS) if (values[name] !== undefined) fields[name] = values[name];
  const manager = values['no-manager'] ? null : values.manager;
  const hidden = values.hidden ? true : values.visible ? false : undefined;
  if (!Object.keys(fields).length && manager === undefined && hidden === undefined) {
    throw new UserAdminError('directory set: name something to change (--title, --manager, --hidden, ...)');
  }
  return { action: 'set', user: values.user, fields, ...(manager === undefined ? {} : { manager }), ...(hidden === undefined ? {} : { hidden }) };
}

export interface DirectoryCommandIo {
  out(line: string): void;
  err(line: string): void;
  clock?: Clock;
}

/** Runs a parsed command over `store`; answers the exit status. */
export async function runDirectoryCommand(store: Store, command: DirectoryCommand, io: DirectoryCommandIo): Promise<number> {
  const directory = createDirectoryService({ store, clock: io.clock ?? systemClock });
  const refused = (message: string) => {
    io.err(`pigeon admin: ${message}`);
    return 2;
  };
  try {
    if (command.action === 'set') {
      const user = await store.users.byUsername(command.user);
      if (!user) return refused(`no user named ${JSON.stringify(command.user)}`);
      const change: EntryChange = { ...command.fields };
      if (command.manager === null) change.managerId = null;
      else if (command.manager !== undefined) {
        const manager = await store.users.byUsername(command.manager);
        if (!manager || manager.tenantId !== user.tenantId) return refused(`no user named ${JSON.stringify(command.manager)} in ${user.username}'s tenant`);
        change.managerId = manager.id;
      }
      if (command.hidden !== undefined) change.hiddenFromDirectory = command.hidden;
      const actor: Actor = { id: null, name: 'system', tenantId: user.tenantId };
      const entry = await directory.update(actor, user.id, change);
      const facts = [...DIRECTORY_FIELDS.map((f) => `${f}=${entry[f] ?? ''}`), `manager=${entry.managerId ?? ''}`, `hidden=${entry.hiddenFromDirectory}`];
      io.out(`directory entry of ${user.username} (${user.id}) set: ${facts.join(' ')}`);
      return 0;
    }
    let tenantId = command.tenant;
    if (tenantId === undefined) {
      const tenants = await store.tenants.list();
      if (tenants.length !== 1) throw new UserAdminError(`this store has ${tenants.length} tenants: give --tenant ID (see tenant list)`);
      tenantId = tenants[0]!.id;
    } else if (!(await store.tenants.get(tenantId))) {
      return refused(`no tenant ${JSON.stringify(tenantId)} (see tenant list)`);
    }
    let csv: string;
    try {
      csv = new TextDecoder('utf-8', { fatal: true }).decode(fs.readFileSync(command.csv));
    } catch (err) {
      return refused(`${command.csv}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : 'not a readable UTF-8 text file'}`);
    }
    const { imported } = await directory.importCsv({ id: null, name: 'system', tenantId }, csv);
    io.out(`imported ${imported} directory entr${imported === 1 ? 'y' : 'ies'} into tenant ${tenantId}`);
    return 0;
  } catch (err) {
    if (err instanceof DirectoryNotFound) return refused(err.message);
    if (err instanceof DirectoryRefused) {
      io.err(`pigeon admin: ${command.action === 'import' ? `${command.csv}: ` : ''}refused, nothing changed:`);
      for (const p of err.problems) io.err(`  ${p.field}: ${p.message}`);
      return 2;
    }
    throw err;
  }
}

/**
 * `directory …` as admin.ts runs it: the arguments checked first, then the configured store opened (and checked to
 * be this region's, as every command does), the command run, the store closed.
 */
export async function runDirectoryCli(argv: string[], out: (line: string) => void, err: (line: string) => void): Promise<number> {
  const command = parseDirectoryArgs(argv);
  const { PIGEON_ADMIN_PASSWORD: _ignored, ...env } = process.env;
  const config = loadConfig(env);
  const store = await openConfiguredStore(config, { nodeId: nodeName(config, 'admin'), poolSize: 2 });
  try {
    await checkStoreRegion(store, config.region);
    return await runDirectoryCommand(store, command, { out, err });
  } finally {
    await store.close();
  }
}
