/**
 * Rate limits and retry timing of the background push drain: token buckets (one per device, one for the whole
 * process), or the windows every drainer shares (SharedLimits), and exponential backoff with jitter. Pure: every
 * function takes the time (and the random source) as an argument, so tests drive them exactly.
 */

/**
 * A token bucket: `capacity` tokens, refilled at `perMs` tokens a millisecond. A send takes one token; an empty
 * bucket says when the next token will be there (the caller defers the send to then instead of dropping it).
 */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    readonly capacity: number,
    readonly perMs: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.at = now;
  }

  private refill(now: number): void {
    if (now > this.at) {
      this.tokens = Math.min(this.capacity, this.tokens + (now - this.at) * this.perMs);
      this.at = now;
    }
  }

  /** Takes a token: 0 when one was there, else how long (ms) until one will be (nothing is taken then). */
  take(now: number): number {
    this.refill(now);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - this.tokens) / this.perMs));
  }

  /** Whole tokens available now (how many sends may start without waiting). */
  available(now: number): number {
    this.refill(now);
    return Math.floor(this.tokens);
  }

  /** Gives back a token taken for a send that did not happen. */
  giveBack(): void {
    this.tokens = Math.min(this.capacity, this.tokens + 1);
  }

  /** Whether the bucket is full (an idle device's bucket can be forgotten). */
  full(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.capacity;
  }
}

/** A bucket of `n` tokens a minute (burst `n`). */
export const perMinuteBucket = (n: number, now: number) => new TokenBucket(Math.max(1, n), Math.max(1, n) / 60_000, now);
/** A bucket of `n` tokens a second (burst `n`). */
export const perSecondBucket = (n: number, now: number) => new TokenBucket(Math.max(1, n), Math.max(1, n) / 1000, now);

/**
 * Per-device buckets, created on first use and forgotten once full again (so the map holds only devices that sent
 * lately).
 */
export class DeviceBuckets {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(private readonly perMinute: number) {}

  /** 0 when the device may send now (a token is taken), else ms until it may. */
  take(deviceKey: string, now: number): number {
    let bucket = this.buckets.get(deviceKey);
    if (!bucket) {
      bucket = perMinuteBucket(this.perMinute, now);
      this.buckets.set(deviceKey, bucket);
    }
    const wait = bucket.take(now);
    if (this.buckets.size > 10_000) this.sweep(now);
    return wait;
  }

  giveBack(deviceKey: string): void {
    this.buckets.get(deviceKey)?.giveBack();
  }

  sweep(now: number): void {
    for (const [key, bucket] of this.buckets) if (bucket.full(now)) this.buckets.delete(key);
  }

  get size(): number {
    return this.buckets.size;
  }
}

/**
 * The drain's limits when several drainers share the queue (PostgreSQL: each node's leader drains): the buckets above
 * would give each drainer the whole budget, so N nodes would send N times it. Instead every claim takes its sends
 * from windows in the store (`push.takeSendBudget`, in the claiming unit): per device, `perDevicePerMinute` in a
 * minute; over all, `perSecond` in a second. A claimed delivery that gets no send goes back to the queue for its
 * window's end. What is held here is only when the global window was last found spent, so no claim is made (or
 * round trip spent) before it ends.
 */
export class SharedLimits {
  static readonly GLOBAL_KEY = 'global';
  static readonly GLOBAL_WINDOW_MS = 1000;
  static readonly DEVICE_WINDOW_MS = 60_000;
  private spentUntil = 0;

  constructor(
    readonly perSecond: number,
    readonly perDevicePerMinute: number,
  ) {}

  static deviceKey(deviceRecordId: string): string {
    return `device ${deviceRecordId}`;
  }

  /** Whether a claim may be made now (false while the global window is known to be spent). */
  open(now: number): boolean {
    return now >= this.spentUntil;
  }

  /** The global window was spent (a grant fell short): no claims until it ends. */
  spent(resetAt: number): void {
    this.spentUntil = Math.max(this.spentUntil, resetAt);
  }
}

export interface BackoffOptions {
  retryBaseMs: number;
  retryMaxMs: number;
}

/**
 * The wait before attempt `attempts + 1`, after `attempts` failed ones: base × 2^(attempts − 1), at most max, with
 * "equal jitter" (between half of it and all of it, so retries of many messages spread out but never come sooner
 * than half the schedule). A gateway's Retry-After (`afterMs`) wins when it is longer.
 */
export function backoffMs(attempts: number, options: BackoffOptions, afterMs?: number, random: () => number = Math.random): number {
  const exponent = Math.max(0, attempts - 1);
  const plain = Math.min(options.retryMaxMs, options.retryBaseMs * 2 ** Math.min(exponent, 40));
  const jittered = Math.round(plain / 2 + random() * (plain / 2));
  return Math.max(jittered, afterMs ?? 0);
}
