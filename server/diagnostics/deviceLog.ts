/**
 * The server's own log lines about one device over the last hour, kept in memory so that a diagnostics upload can
 * attach them (`server.log` in the incident's zip): what the server saw of the device's requests is often the half
 * of the story the app's log lacks.
 *
 * Fed with every JSON line the logger writes (server/logger.ts tees them here); a line is kept when it names a
 * device (`device`, the app's `X-Device-Id`, as every request line of an authenticated device does:
 * http/requestContext.ts), under its user and device together, since a device id is the app's own and is unique
 * per user only. Bounded whatever the traffic: at most `linesPerDevice` lines for each of at most `devices` devices
 * (the device written to least recently goes first), each line cut to `maxLineBytes`, and lines older than
 * `maxAgeMs` are dropped as they are read or written.
 *
 * Per process: with several workers (PIGEON_WORKERS) each keeps the lines it logged itself, and an upload attaches
 * what the process that received it holds — the device's requests served by other workers are not in it. The
 * lines are the logger's own (its redaction applied; request lines carry no headers or query strings), and the
 * upload scrubs them again with the app's files before anything is stored.
 */

export interface DeviceLogLimits {
  linesPerDevice: number;
  devices: number;
  maxAgeMs: number;
  /** A longer line is cut to this many characters (an error's stack, say). */
  maxLineBytes: number;
}

/** About 200 lines × 2 KB × 1,000 devices: at most ~400 MB in theory, a few MB for the devices active in an hour. */
export const DEFAULT_DEVICE_LOG_LIMITS: Readonly<DeviceLogLimits> = Object.freeze({
  linesPerDevice: 200,
  devices: 1000,
  maxAgeMs: 3600_000,
  maxLineBytes: 2048,
});

interface Kept {
  at: number;
  line: string;
}

const keyOf = (userId: string, deviceId: string) => `${userId}\n${deviceId}`;

export class DeviceLogRing {
  private readonly limits: DeviceLogLimits;
  /** user + device → its lines, oldest first; the Map's order is least recently written first. */
  private readonly byDevice = new Map<string, Kept[]>();

  constructor(
    limits: Partial<DeviceLogLimits> = {},
    private readonly now: () => number = Date.now,
  ) {
    this.limits = { ...DEFAULT_DEVICE_LOG_LIMITS, ...limits };
  }

  /** Takes one line as the logger wrote it (JSON, newline-terminated); lines without a device are ignored. */
  record(line: string): void {
    // Most lines name no device: a substring test spares them the parse.
    if (!line.includes('"device":"')) return;
    let parsed: { device?: unknown; user?: unknown };
    try {
      parsed = JSON.parse(line) as typeof parsed;
    } catch {
      return;
    }
    if (typeof parsed.device !== 'string' || typeof parsed.user !== 'string') return;
    const key = keyOf(parsed.user, parsed.device);
    const at = this.now();
    let lines = this.byDevice.get(key);
    if (lines) this.byDevice.delete(key); // re-inserted below: most recently written last
    else lines = [];
    const text = line.endsWith('\n') ? line.slice(0, -1) : line;
    lines.push({ at, line: text.length > this.limits.maxLineBytes ? `${text.slice(0, this.limits.maxLineBytes)}…` : text });
    this.prune(lines, at);
    if (lines.length > this.limits.linesPerDevice) lines.splice(0, lines.length - this.limits.linesPerDevice);
    this.byDevice.set(key, lines);
    while (this.byDevice.size > this.limits.devices) this.byDevice.delete(this.byDevice.keys().next().value!);
  }

  /** The device's lines of the last `maxAgeMs`, oldest first. */
  linesFor(userId: string, deviceId: string): string[] {
    const lines = this.byDevice.get(keyOf(userId, deviceId));
    if (!lines) return [];
    this.prune(lines, this.now());
    if (!lines.length) this.byDevice.delete(keyOf(userId, deviceId));
    return lines.map((l) => l.line);
  }

  /** How many devices have lines kept (for tests and metrics). */
  get size(): number {
    return this.byDevice.size;
  }

  /** A pino destination that feeds this ring (server/logger.ts tees every line to it). */
  destination(): { write(line: string): boolean } {
    return {
      write: (line: string) => {
        try {
          this.record(line);
        } catch {
          /* a log tee must never throw into the caller of a log call */
        }
        return true;
      },
    };
  }

  private prune(lines: Kept[], now: number): void {
    const cutoff = now - this.limits.maxAgeMs;
    let drop = 0;
    while (drop < lines.length && lines[drop]!.at < cutoff) drop++;
    if (drop) lines.splice(0, drop);
  }
}
