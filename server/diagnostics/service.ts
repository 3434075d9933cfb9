/**
 * Diagnostics incidents (issue 20): an app uploads its logs ("Collect Diagnostics"), the server keeps them as a zip
 * under an incident id the user can read aloud to support, admins look incidents up and download them, and they are
 * purged after PIGEON_DIAGNOSTICS_RETENTION.
 *
 * An upload goes: bundle.ts reads it (every cap counted as it inflates; hostile input is refused whole) →
 * scrub.ts removes secrets from every text entry → the server attaches what it knows (`device.json`, the device's
 * inventory record as the admin API shows it; `server.log`, this process's log lines about the device over the last
 * hour: deviceLog.ts), scrubbed the same way → bundle.ts writes the zip → the zip (a blob of the user's) and the
 * incident row are stored in one unit. Nothing is stored before every step has passed, so a refused bundle leaves no
 * trace; what is stored has been scrubbed, so neither the zip nor the database ever holds the secrets of the upload.
 */
import { Readable } from 'node:stream';
import type { Clock } from '../clock';
import type { DeviceRecord, DiagnosticIncident, Store, User } from '../store/types';
import type { Actor, DeviceService } from '../devices/service';
import { DEFAULT_BUNDLE_LIMITS, readBundle, writeBundle, type BundleEntry, type BundleLimits, type SkippedEntry } from './bundle';
import { scrubEntries } from './scrub';
import { newIncidentId, parseIncidentId } from './incidentId';
import type { DeviceLogRing } from './deviceLog';

/** The names of what the server attaches to every incident's zip. */
export const DEVICE_ENTRY = 'device.json';
export const SERVER_LOG_ENTRY = 'server.log';
/** Where an app's own entry goes when its name is one of the server's. */
const APP_PREFIX = 'app/';

/** Uploads (attempts) one device may make per hour (UploadLimiter). */
export const DIAGNOSTICS_UPLOADS_PER_HOUR = 5;
/** A user's listing shows this many incidents at most (they expire after the retention anyway). */
export const LIST_LIMIT = 100;
/** The retention purge deletes this many incidents per transaction, and at most PURGE_MAX per run. */
const PURGE_BATCH = 1000;
const PURGE_MAX = 100_000;
/** An id drawn again when it is already an incident of the tenant (40 random bits: practically never). */
const ID_ATTEMPTS = 3;

export interface DiagnosticsServiceOptions {
  store: Store;
  clock: Clock;
  devices: DeviceService;
  /** This process's per-device log lines (server/logger.ts feeds it). */
  deviceLog: DeviceLogRing;
  /** How long an incident is kept (PIGEON_DIAGNOSTICS_RETENTION), in ms. */
  retentionMs: number;
  limits?: BundleLimits;
}

/** What an upload answers (201). */
export interface UploadResult {
  incidentId: string;
  createdAt: string;
  expiresAt: string;
  entries: number;
  redactions: number;
  skipped: SkippedEntry[];
}

const iso = (ms: number) => new Date(ms).toISOString();
const HOUR_MS = 3600_000;

/** An incident as its user sees it. */
export function userView(i: DiagnosticIncident) {
  return { incidentId: i.id, deviceId: i.deviceId, createdAt: iso(i.createdAt), expiresAt: iso(i.expiresAt), size: i.size, entries: i.entries, redactions: i.redactions };
}

/** An incident as an administrator sees it (its owner and device record too). */
export function adminView(i: DiagnosticIncident, username: string | undefined) {
  return { ...userView(i), userId: i.userId, username: username ?? null, deviceRecordId: i.deviceRecordId };
}

/** The stored entries: the app's (renamed under `app/` where one takes a server attachment's name), then the server's. */
function withAttachments(appEntries: BundleEntry[], attachments: BundleEntry[]): BundleEntry[] {
  const reserved = new Set(attachments.map((a) => a.name));
  const taken = new Set(appEntries.map((e) => e.name));
  const renamed = appEntries.map((e) => {
    if (!reserved.has(e.name)) return e;
    let name = `${APP_PREFIX}${e.name}`;
    for (let n = 2; taken.has(name) || reserved.has(name); n++) name = `${APP_PREFIX}${n}-${e.name}`;
    taken.add(name);
    return { ...e, name };
  });
  return [...renamed, ...attachments];
}

export function createDiagnosticsService(opts: DiagnosticsServiceOptions) {
  const { store, clock, devices, deviceLog, retentionMs } = opts;
  const limits = opts.limits ?? DEFAULT_BUNDLE_LIMITS;

  /** The tenant's incident by a typed or spoken id, or undefined (a malformed id is not looked up). */
  async function find(tenantId: string, typed: string): Promise<DiagnosticIncident | undefined> {
    const id = parseIncidentId(typed);
    return id === undefined ? undefined : store.diagnostics.byId(tenantId, id);
  }

  return {
    limits,

    /**
     * Reads, scrubs and stores an upload from `device` of `user`. Throws `BundleRejected` (nothing stored) for a
     * bundle that is refused.
     */
    async upload(user: User, device: DeviceRecord, body: Readable | Buffer, contentType: string): Promise<UploadResult> {
      const read = await readBundle(Buffer.isBuffer(body) ? Readable.from([body]) : body, contentType, limits);
      const app = scrubEntries(read.entries);
      // The inventory record as the admin API shows it (access state, compliance, app protection).
      const record = await devices.adminDevice({ id: user.id, name: user.username, tenantId: user.tenantId }, device.id);
      const serverLog = deviceLog.linesFor(user.id, device.deviceId);
      const attached = scrubEntries([
        { name: DEVICE_ENTRY, text: `${JSON.stringify(record, null, 2)}\n` },
        { name: SERVER_LOG_ENTRY, text: serverLog.length ? `${serverLog.join('\n')}\n` : '' },
      ]);
      const entries = withAttachments(app.entries, attached.entries);
      const zip = await writeBundle(entries);
      const now = clock.now();
      const redactions = app.redactions + attached.redactions;
      const incident = await store.run(function* (tx) {
        const blobId = yield* tx.blobs.put(user.id, zip, now);
        for (let attempt = 0; attempt < ID_ATTEMPTS; attempt++) {
          const id = newIncidentId();
          if (yield* tx.diagnostics.byId(user.tenantId, id)) continue;
          return yield* tx.diagnostics.create({
            id,
            tenantId: user.tenantId,
            userId: user.id,
            deviceRecordId: device.id,
            deviceId: device.deviceId,
            blobId,
            size: zip.length,
            entries: entries.length,
            redactions,
            createdAt: now,
            expiresAt: now + retentionMs,
          });
        }
        throw new Error(`no free incident id after ${ID_ATTEMPTS} attempts`);
      });
      return {
        incidentId: incident.id,
        createdAt: iso(incident.createdAt),
        expiresAt: iso(incident.expiresAt),
        entries: incident.entries,
        redactions: incident.redactions,
        skipped: read.skipped,
      };
    },

    /** The user's own incidents, newest first. */
    async listOwn(user: User) {
      return (await store.diagnostics.listByUser(user.id, LIST_LIMIT)).map(userView);
    },

    /** The user's own incident, or undefined: another user's is not theirs to see, and looks like none at all. */
    async own(user: User, typed: string) {
      const incident = await find(user.tenantId, typed);
      return incident && incident.userId === user.id ? userView(incident) : undefined;
    },

    /** The incident of the administrator's tenant, audited; undefined when there is none in that tenant. */
    async forAdmin(actor: Actor, typed: string) {
      const incident = await find(actor.tenantId, typed);
      if (!incident) return undefined;
      const owner = await store.users.byId(incident.userId);
      await audited(actor, 'diagnostics.view', incident);
      return adminView(incident, owner?.username);
    },

    /** The incident's zip for the administrator of its tenant, audited; undefined when there is none there. */
    async download(actor: Actor, typed: string): Promise<{ incident: DiagnosticIncident; zip: Buffer } | undefined> {
      const incident = await find(actor.tenantId, typed);
      if (!incident) return undefined;
      const zip = await store.blobs.read(incident.userId, incident.blobId, 0, incident.size);
      await audited(actor, 'diagnostics.download', incident);
      return { incident, zip };
    },

    /** Deletes the incidents past their expiry (and so their zips), a batch at a time; answers how many. */
    async purgeExpired(now = clock.now()): Promise<number> {
      let purged = 0;
      for (let n = -1; n !== 0 && purged < PURGE_MAX; purged += n) n = await store.diagnostics.purgeExpired(now, PURGE_BATCH);
      return purged;
    },
  };

  function audited(actor: Actor, action: string, incident: DiagnosticIncident): Promise<void> {
    const now = clock.now();
    return store.run(function* (tx) {
      yield* devices.audit(tx, actor, now, action, 'diagnosticIncident', incident.id, { userId: incident.userId, deviceId: incident.deviceId });
    });
  }
}

export type DiagnosticsService = ReturnType<typeof createDiagnosticsService>;

/**
 * At most `perHour` uploads from one device in any hour. Every bundle that is read counts, refused ones too: a device
 * that keeps sending bombs is stopped as soon as one that keeps sending logs. (What the HTTP layer refuses before the
 * bundle is read — a wrong type, an oversize body — costs next to nothing and does not count.) In memory, per
 * process: with several workers a device could reach each one's allowance, which still bounds the work, and each
 * attempt is bounded by the bundle caps.
 */
export class UploadLimiter {
  private readonly attempts = new Map<string, number[]>();

  constructor(
    private readonly perHour: number,
    private readonly clock: Clock,
    /** Devices remembered at most (the least recently seen are forgotten first). */
    private readonly maxKeys = 10_000,
  ) {}

  /** The seconds until `key` may upload again, or undefined when it may now; counts nothing. */
  wait(key: string): number | undefined {
    const now = this.clock.now();
    const recent = (this.attempts.get(key) ?? []).filter((at) => at > now - HOUR_MS);
    return recent.length >= this.perHour ? Math.max(1, Math.ceil((recent[0]! + HOUR_MS - now) / 1000)) : undefined;
  }

  /** Counts an attempt of `key`; answers undefined when allowed, else the seconds until one is (not counted then). */
  take(key: string): number | undefined {
    const now = this.clock.now();
    const recent = (this.attempts.get(key) ?? []).filter((at) => at > now - HOUR_MS);
    this.attempts.delete(key);
    if (recent.length >= this.perHour) {
      this.attempts.set(key, recent);
      return Math.max(1, Math.ceil((recent[0]! + HOUR_MS - now) / 1000));
    }
    recent.push(now);
    this.attempts.set(key, recent);
    while (this.attempts.size > this.maxKeys) this.attempts.delete(this.attempts.keys().next().value!);
    return undefined;
  }
}
