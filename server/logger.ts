import fs from 'node:fs';
import net from 'node:net';
import pino, { type Logger } from 'pino';
import type { Config } from './config';
import { DeviceLogRing } from './diagnostics/deviceLog';

/**
 * pino JSON logs. Redaction is belt and braces: request lines never include headers or query strings, but any
 * object that reaches a log call with one of these keys is masked.
 */
export const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'headers.cookie',
  '*.headers.cookie',
  'password',
  '*.password',
  'refresh_token',
  '*.refresh_token',
  'access_token',
  '*.access_token',
  'token',
  '*.token',
  'tlsKey',
  '*.tlsKey',
];

/** Lines waiting for the output may take this much memory; past it new lines are dropped (and counted). */
export const LOG_QUEUE_BYTES = 1024 * 1024;
/** At most this much goes to the output in one write. */
const BATCH_BYTES = 64 * 1024;
/** A pipe or socket output gets no more lines while this much is still on its way. */
const STREAM_IN_FLIGHT_BYTES = 64 * 1024;
/** After a failed write the next try waits this long, doubling up to RETRY_MAX_MS. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 1_000;

export interface LogSinkOptions {
  /** File descriptor the lines go to (1: stdout). */
  fd?: number;
  maxQueueBytes?: number;
  /** Where the one-time "dropping log lines" notice goes; stderr when not given. */
  notify?: (text: string) => void;
}

export interface LogSinkStats {
  /** Lines handed to the output and acknowledged. */
  written: number;
  /** Lines lost: queue full (output stalled or too slow), output failed (ENOSPC, EPIPE, EIO, ...) or gone. */
  dropped: number;
  /** Bytes (UTF-16 units) of lines waiting in memory. */
  queuedBytes: number;
  /** The error code of the failure under way, if any. */
  failing: string | undefined;
}

type Output = { kind: 'fd' } | { kind: 'stream'; stream: net.Socket } | { kind: 'none'; why: string };

/**
 * A pino destination that can neither block the event loop nor crash the process, whatever happens to the output:
 *
 * - `write()` only queues the line (bounded by `maxQueueBytes`; a line that does not fit is dropped and counted).
 * - A regular file or device (`/dev/full`, a tty) is written with asynchronous `fs.write` from the thread pool, one
 *   write at a time. A failed write (ENOSPC, EIO, ...) drops its batch; the next try waits 100 ms, then up to 1 s,
 *   so a full disk costs a few failed syscalls a second, and logging resumes by itself once space returns, starting
 *   with a warning line that says how many lines were lost. A line cut short by the failure is ended first.
 * - A pipe or socket is written through a non-blocking stream (`process.stdout` for fd 1), never the thread pool:
 *   a blocking write to a stalled pipe would hold a pool thread forever, and `process.exit()` waits for those
 *   threads, so SIGTERM could never end the process. A stalled reader only fills the bounded queue; a reader that
 *   has gone (EPIPE) makes every later line a counted drop.
 * - Errors never escape: `write()` does not throw and no `'error'` event goes unhandled.
 * - The first drop is announced once on stderr (when stderr itself can take it).
 *
 * `drain(ms)` waits at most `ms` for the queue to empty (the final flush before exit).
 */
export class LogSink implements pino.DestinationStream {
  private readonly fd: number;
  private readonly maxQueueBytes: number;
  private readonly notify: (text: string) => void;
  private output: Output | undefined;
  private queue: string[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  private busy = false; // an fs.write is under way
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_FIRST_MS;
  private torn = false; // the output ends in the middle of a line
  private failing: string | undefined;
  private droppedInOutage = 0;
  private announced = false;
  private waitingForDrain = false;
  private idleWaiters: Array<() => void> = [];
  written = 0;
  dropped = 0;

  constructor(options: LogSinkOptions = {}) {
    this.fd = options.fd ?? 1;
    this.maxQueueBytes = options.maxQueueBytes ?? LOG_QUEUE_BYTES;
    this.notify = options.notify ?? writeStderr;
  }

  write(line: string): boolean {
    try {
      const output = this.open();
      if (output.kind === 'none') {
        this.drop(1, output.why);
        return true;
      }
      if (this.queuedBytes + line.length > this.maxQueueBytes) {
        this.drop(1, this.failing ?? 'queue full');
        return true;
      }
      this.queue.push(line);
      this.queuedBytes += line.length;
      this.pump();
    } catch {
      this.dropped++; // never reached by design; a logger must not throw into its caller either way
    }
    return true;
  }

  stats(): LogSinkStats {
    return { written: this.written, dropped: this.dropped, queuedBytes: this.queuedBytes, failing: this.failing };
  }

  /** Resolves true once every queued line is out, false when `timeoutMs` passes first (the output is stuck). */
  drain(timeoutMs: number): Promise<boolean> {
    if (this.retryTimer) {
      // A failing output gets one more try now rather than after its back-off.
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.pump();
    }
    if (this.idle()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.idleWaiters.push(done);
    });
  }

  private idle(): boolean {
    if (this.queuedBytes > 0 || this.busy) return false;
    const out = this.output;
    return !(out?.kind === 'stream' && out.stream.writableLength > 0 && !out.stream.destroyed);
  }

  private settle() {
    if (!this.idle() || !this.idleWaiters.length) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** What the descriptor is decides how it is written; looked at on the first line, not at construction. */
  private open(): Output {
    if (this.output) return this.output;
    let stat: fs.Stats;
    try {
      stat = fs.fstatSync(this.fd);
    } catch (err) {
      return (this.output = { kind: 'none', why: codeOf(err) });
    }
    if (stat.isFIFO() || stat.isSocket()) {
      try {
        const stream =
          this.fd === 1 ? (process.stdout as unknown as net.Socket) : this.fd === 2 ? (process.stderr as unknown as net.Socket) : new net.Socket({ fd: this.fd, readable: false, writable: true });
        stream.on('error', (err) => this.streamFailed(err));
        return (this.output = { kind: 'stream', stream });
      } catch (err) {
        return (this.output = { kind: 'none', why: codeOf(err) });
      }
    }
    return (this.output = { kind: 'fd' });
  }

  /** Takes queued lines, up to BATCH_BYTES (at least one line), off the front of the queue. */
  private take(): { text: string; lines: number } {
    let text = '';
    let lines = 0;
    while (this.queueHead < this.queue.length) {
      const line = this.queue[this.queueHead]!;
      if (lines > 0 && text.length + line.length > BATCH_BYTES) break;
      text += line;
      lines++;
      this.queueHead++;
      this.queuedBytes -= line.length;
    }
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    } else if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    }
    return { text, lines };
  }

  private pump() {
    const out = this.output;
    if (!out || out.kind === 'none') return;
    if (out.kind === 'stream') this.pumpStream(out.stream);
    else this.pumpFd();
  }

  private pumpStream(stream: net.Socket) {
    if (stream.destroyed) {
      this.dropQueued(this.failing ?? 'output closed');
      return;
    }
    while (this.queuedBytes > 0 && stream.writableLength < STREAM_IN_FLIGHT_BYTES) {
      const batch = this.take();
      stream.write(batch.text, (err) => {
        if (err) this.drop(batch.lines, codeOf(err));
        else this.succeeded(batch.lines);
        this.settle();
      });
    }
    if (this.queuedBytes > 0 && !this.waitingForDrain) {
      this.waitingForDrain = true;
      stream.once('drain', () => {
        this.waitingForDrain = false;
        this.pump();
      });
    }
  }

  private streamFailed(err: unknown) {
    this.failing = codeOf(err);
    // The stream is finished (EPIPE: the reader has gone for good); what waits can never be written.
    this.dropQueued(this.failing);
    this.settle();
  }

  private pumpFd() {
    if (this.busy || this.retryTimer || this.queuedBytes === 0) return;
    const batch = this.take();
    const prefix = this.torn ? '\n' : '';
    const buf = Buffer.from(prefix + batch.text, 'utf8');
    this.busy = true;
    const writeFrom = (offset: number) => {
      fs.write(this.fd, buf, offset, buf.length - offset, null, (err, n) => {
        if (!err && offset + n < buf.length && n > 0) return writeFrom(offset + n);
        this.busy = false;
        if (err || n === 0) {
          if (offset > 0) {
            // Part of the batch made it: the whole lines in it are written; the rest is lost and a line is cut.
            const whole = countNewlines(buf, offset) - (prefix ? 1 : 0);
            this.written += Math.max(0, whole);
            this.drop(batch.lines - Math.max(0, whole), codeOf(err ?? 'EIO'));
            this.torn = buf[offset - 1] !== 0x0a;
          } else {
            this.drop(batch.lines, codeOf(err ?? 'EIO'));
          }
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            this.pump();
          }, this.retryMs);
          this.retryTimer.unref();
          this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
          this.settle();
          return;
        }
        this.torn = false;
        this.succeeded(batch.lines);
        this.pump();
        this.settle();
      });
    };
    writeFrom(0);
  }

  private succeeded(lines: number) {
    this.written += lines;
    this.retryMs = RETRY_FIRST_MS;
    if (this.failing === undefined && this.droppedInOutage === 0) return;
    // Back after an outage: the log itself says how much it lost, before anything else.
    const lost = this.droppedInOutage;
    const reason = this.failing;
    this.failing = undefined;
    this.droppedInOutage = 0;
    const notice = `${JSON.stringify({ level: 40, time: new Date().toISOString(), service: 'pigeon', dropped: lost, reason, msg: 'log lines dropped' })}\n`;
    this.queue.splice(this.queueHead, 0, notice);
    this.queuedBytes += notice.length;
  }

  private dropQueued(why: string) {
    const lines = this.queue.length - this.queueHead;
    this.queue = [];
    this.queueHead = 0;
    this.queuedBytes = 0;
    if (lines) this.drop(lines, why);
  }

  private drop(lines: number, why: string) {
    if (lines <= 0) return;
    this.dropped += lines;
    totalDropped += lines;
    this.droppedInOutage += lines;
    if (why !== 'queue full') this.failing = why;
    if (!this.announced) {
      this.announced = true;
      this.notify(
        `pigeon: the log output failed or stalled (${why}); dropping log lines until it recovers ` +
          `(counted in pigeon_log_lines_dropped_total); requests are still served\n`,
      );
    }
  }
}

let totalDropped = 0;
let stdoutSink: LogSink | undefined;

/** Lines every LogSink of this process has dropped (the `pigeon_log_lines_dropped_total` counter). */
export function droppedLogLines(): number {
  return totalDropped;
}

/** Bytes waiting in the stdout sink's queue (0 before any line); a stalled or failing output holds them here. */
export function queuedLogBytes(): number {
  return stdoutSink?.stats().queuedBytes ?? 0;
}

/** The process's one stdout sink (created on first use). */
export function stdoutLogSink(): LogSink {
  return (stdoutSink ??= new LogSink({ fd: 1 }));
}

/** The final flush: waits at most `timeoutMs` for the stdout sink to empty. */
export function drainLogs(timeoutMs: number): Promise<boolean> {
  return stdoutSink ? stdoutSink.drain(timeoutMs) : Promise.resolve(true);
}

let stderrGuarded = false;

/**
 * Writes to stderr without ever blocking or throwing: a pipe through the non-blocking `process.stderr` (skipped
 * while earlier text is still stuck in it), a file or device with one synchronous write whose failure is ignored.
 */
export function writeStderr(text: string): void {
  try {
    const stat = fs.fstatSync(2);
    if (stat.isFIFO() || stat.isSocket()) {
      const err = process.stderr;
      if (!stderrGuarded) {
        stderrGuarded = true;
        err.on('error', () => undefined);
      }
      if (err.destroyed || err.writableLength > STREAM_IN_FLIGHT_BYTES) return;
      err.write(text);
    } else {
      fs.writeSync(2, text);
    }
  } catch {
    /* stderr is gone or full too: nothing more can be said */
  }
}

function codeOf(err: unknown): string {
  if (typeof err === 'string') return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : 'EIO';
}

function countNewlines(buf: Buffer, end: number): number {
  let n = 0;
  for (let i = buf.indexOf(0x0a); i >= 0 && i < end; i = buf.indexOf(0x0a, i + 1)) n++;
  return n;
}

/** The device-log ring each logger made by `createLogger` feeds (see `deviceLogOf`). */
const deviceLogs = new WeakMap<Logger, DeviceLogRing>();

/**
 * The ring of per-device log lines this logger feeds (server/diagnostics/deviceLog.ts), or undefined for a logger not
 * made by `createLogger`. Keyed by the logger object itself, so each logger (each test app's) has its own.
 */
export function deviceLogOf(log: Logger): DeviceLogRing | undefined {
  return deviceLogs.get(log);
}

export interface LoggerOptions {
  /** The ring the lines are also written to; default: a new one (read it back with `deviceLogOf`). */
  deviceLog?: DeviceLogRing;
}

/** Writes every line to `destination` and to the ring, in that order; the ring never throws. */
function tee(destination: pino.DestinationStream, ring: DeviceLogRing): pino.DestinationStream {
  const feed = ring.destination();
  return {
    write(line: string) {
      const written = destination.write(line);
      feed.write(line);
      return written;
    },
  } as pino.DestinationStream;
}

/**
 * The server's logger. Without `destination` it writes JSON lines to stdout through the process's LogSink; with
 * `logPretty`, through pino-pretty (development only). Every line is also offered to a `DeviceLogRing`, which keeps
 * the last hour of lines that name a device, for diagnostics uploads.
 */
export function createLogger(config: Pick<Config, 'logLevel' | 'logPretty'>, destination?: pino.DestinationStream, loggerOptions: LoggerOptions = {}): Logger {
  const options: pino.LoggerOptions = {
    level: config.logLevel,
    base: { service: 'pigeon' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  const ring = loggerOptions.deviceLog ?? new DeviceLogRing();
  let log: Logger;
  if (destination) log = pino(options, tee(destination, ring));
  else if (config.logPretty) {
    // pino-pretty runs in a worker thread (a transport); the ring takes the JSON lines beside it.
    const pretty = pino.transport({ target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss' } }) as pino.DestinationStream;
    log = pino(options, pino.multistream([{ level: 'trace', stream: pretty }, { level: 'trace', stream: ring.destination() }]));
  } else log = pino(options, tee(stdoutLogSink(), ring));
  deviceLogs.set(log, ring);
  return log;
}
