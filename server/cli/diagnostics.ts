/**
 * The admin CLI's `diagnostics` command (server/cli/admin.ts hands it its arguments): an incident looked up by the id
 * a user read out (any case, with or without dashes or the prefix), its zip written to a file, and the retention
 * purge run now. Lookups and downloads are audited as the admin API's are, by `system`, in the incident's tenant.
 *
 *   diagnostics show ID
 *   diagnostics download ID FILE
 *   diagnostics purge
 *
 * Exit status: 0 done, 2 no such incident (or the file cannot be written); a usage mistake throws UserAdminError,
 * which admin.ts reports with the usage (64).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { systemClock, type Clock } from '../clock';
import { loadConfig } from '../config';
import { JOBS, nodeName, openConfiguredStore } from '../database';
import { checkStoreRegion } from '../regions';
import { UserAdminError } from '../admin/users';
import { createDeviceService } from '../devices/service';
import { DeviceSignals } from '../devices/signals';
import type { Store } from '../store/types';
import { DeviceLogRing } from '../diagnostics/deviceLog';
import { createDiagnosticsService } from '../diagnostics/service';

export const DIAGNOSTICS_USAGE = `  diagnostics show ID                            (an incident: ID as the user read it, e.g. PGN-7K4Q-2M9X; audited)
  diagnostics download ID FILE                   (the incident's zip into FILE; audited)
  diagnostics purge                              (deletes incidents older than PIGEON_DIAGNOSTICS_RETENTION)`;

export type DiagnosticsCommand = { action: 'show'; id: string } | { action: 'download'; id: string; file: string } | { action: 'purge' };

/** The command's arguments (those after `diagnostics`), checked before any store is opened. */
export function parseDiagnosticsArgs(argv: string[]): DiagnosticsCommand {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: {} });
  const [sub, ...words] = positionals;
  if (sub === 'show' && words.length === 1) return { action: 'show', id: words[0]! };
  if (sub === 'download' && words.length === 2) return { action: 'download', id: words[0]!, file: words[1]! };
  if (sub === 'purge' && words.length === 0) return { action: 'purge' };
  throw new UserAdminError('diagnostics: expected diagnostics show ID, diagnostics download ID FILE or diagnostics purge');
}

export interface DiagnosticsCommandIo {
  out(line: string): void;
  err(line: string): void;
  clock?: Clock;
  /** PIGEON_DIAGNOSTICS_RETENTION, in seconds (only new incidents use it; the purge reads each one's expiry). */
  retentionSeconds: number;
}

/** Runs a parsed command over `store`; answers the exit status. */
export async function runDiagnosticsCommand(store: Store, command: DiagnosticsCommand, io: DiagnosticsCommandIo): Promise<number> {
  const clock = io.clock ?? systemClock;
  // The device service only for its audit helper here (and the inventory view an upload would attach).
  const devices = createDeviceService({ store, clock, signals: new DeviceSignals(), maxDevicesPerUser: 1, inactivityMs: 1 });
  const diagnostics = createDiagnosticsService({ store, clock, devices, deviceLog: new DeviceLogRing(), retentionMs: io.retentionSeconds * 1000 });
  if (command.action === 'purge') {
    // Not while a server's history purge runs (with PostgreSQL: on any node); after it, this one finds what is left.
    const turn = await store.exclusive(JOBS.historyPurge, () => diagnostics.purgeExpired(), { wait: true });
    io.out(`${turn.ran ? turn.value : 0} expired incident(s) purged`);
    return 0;
  }
  // The CLI speaks for no one tenant: the incident's tenant is the one that has it.
  for (const tenant of await store.tenants.list()) {
    const actor = { id: null, name: 'system', tenantId: tenant.id };
    if (command.action === 'show') {
      const incident = await diagnostics.forAdmin(actor, command.id);
      if (!incident) continue;
      io.out(`${incident.incidentId}\ttenant ${tenant.id}\tuser ${incident.username ?? incident.userId} (${incident.userId})\tdevice ${incident.deviceId}`);
      io.out(`created ${incident.createdAt}\texpires ${incident.expiresAt}\t${incident.entries} entries\t${incident.redactions} redactions\t${incident.size} bytes`);
      return 0;
    }
    const found = await diagnostics.download(actor, command.id);
    if (!found) continue;
    try {
      // wx: never overwrite a file that is there (a typo in FILE must not destroy something else).
      fs.writeFileSync(command.file, found.zip, { flag: 'wx', mode: 0o600 });
    } catch (err) {
      io.err(`pigeon admin: ${command.file}: ${(err as NodeJS.ErrnoException).code === 'EEXIST' ? 'exists already' : (err as Error).message}`);
      return 2;
    }
    io.out(`${found.incident.id}: ${found.zip.length} bytes written to ${command.file}`);
    return 0;
  }
  io.err(`pigeon admin: no incident ${JSON.stringify(command.id)}`);
  return 2;
}

/** `diagnostics …` as admin.ts runs it: the arguments checked, the configured store opened and checked, closed. */
export async function runDiagnosticsCli(argv: string[], out: (line: string) => void, err: (line: string) => void): Promise<number> {
  const command = parseDiagnosticsArgs(argv);
  const { PIGEON_ADMIN_PASSWORD: _ignored, ...env } = process.env;
  const config = loadConfig(env);
  const store = await openConfiguredStore(config, { nodeId: nodeName(config, 'admin'), poolSize: 2 });
  try {
    await checkStoreRegion(store, config.region);
    return await runDiagnosticsCommand(store, command, { out, err, retentionSeconds: config.diagnosticsRetention });
  } finally {
    await store.close();
  }
}
