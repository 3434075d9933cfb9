/**
 * Sign-in risk (issue 16), pure logic: the caller gathers the user's recent history from the store (allowed
 * sign-ins of the last `RISK_HISTORY_WINDOW_MS`, failed passwords of the last `FAILED_ATTEMPT_WINDOW_MS`) and gets
 * back a level, a score and the signals that fired with their weights (what the sign-in log shows). The weights are
 * documented (`RISK_WEIGHTS`) so an administrator can tell why a sign-in was rated as it was.
 *
 * Signals:
 * - `failedAttemptBurst`: 5 or more failed passwords for the user in 15 minutes (10 or more weigh more).
 * - `newDevice`, `newNetwork`, `unfamiliarClient`: a device id, network or client id absent from the user's allowed
 *   sign-ins of the last 90 days. A network is the address's /24 (IPv4) or /48 (IPv6), so a home router's changing
 *   address or a phone hopping within its carrier's prefix is not "new"; an IPv4-mapped IPv6 address
 *   (`::ffff:a.b.c.d`, what a dual-stack socket reports) is the IPv4 address it carries.
 *   On a user's first sign-in ever none of these fire (everything would be new: that is no signal), nor does one
 *   whose value is unknown (no device id, no client id, or an address that does not parse): no value, no comparison.
 *
 * score = sum of weights, capped at 100; level: ≥ 60 high, ≥ 35 medium, ≥ 15 low, else none.
 */
import net from 'node:net';
import type { UserRisk } from '../store/types';
import type { SignInRisk } from './policies';

export type RiskSignal = 'failedAttemptBurst' | 'newDevice' | 'newNetwork' | 'unfamiliarClient';

/**
 * The documented weights. `failedAttemptBurst` has tiers, checked in order: the first whose `atLeast` the failure
 * count reaches gives the weight.
 */
export const RISK_WEIGHTS = {
  failedAttemptBurst: [
    { atLeast: 10, weight: 60 },
    { atLeast: 5, weight: 40 },
  ],
  newDevice: 20,
  newNetwork: 20,
  unfamiliarClient: 15,
} as const;

/** Lowest score of each level (checked from high down); a score below `low` is `none`. */
export const RISK_LEVEL_THRESHOLDS = { high: 60, medium: 35, low: 15 } as const;
export const RISK_SCORE_CAP = 100;

/** How far back failed passwords count toward `failedAttemptBurst`. */
export const FAILED_ATTEMPT_WINDOW_MS = 15 * 60_000;
/** How far back allowed sign-ins make a device, network or client familiar. */
export const RISK_HISTORY_WINDOW_MS = 90 * 24 * 3_600_000;

/** Network prefix lengths that count as "the same network". */
export const NETWORK_PREFIX = { ipv4: 24, ipv6: 48 } as const;

export interface SignInHistory {
  deviceIds: readonly string[];
  clientIds: readonly string[];
  /** Addresses of the allowed sign-ins (any form: IPv4, IPv6, IPv4-mapped; ones that do not parse are ignored). */
  ips: readonly string[];
}

export interface SignInRiskInput {
  history: SignInHistory;
  /** Failed passwords for the user in the last `FAILED_ATTEMPT_WINDOW_MS`. */
  failuresLast15Min: number;
  deviceId: string | null;
  clientId: string | null;
  ip: string | null;
  /** The user has never signed in before: history signals are skipped. */
  firstSignIn: boolean;
}

export interface RiskAssessment {
  level: SignInRisk;
  score: number;
  /** The signals that fired, in the order of `RiskSignal` above. */
  signals: Array<{ signal: RiskSignal; weight: number }>;
}

export function riskLevelOf(score: number): SignInRisk {
  if (score >= RISK_LEVEL_THRESHOLDS.high) return 'high';
  if (score >= RISK_LEVEL_THRESHOLDS.medium) return 'medium';
  if (score >= RISK_LEVEL_THRESHOLDS.low) return 'low';
  return 'none';
}

/** The eight 16-bit groups of an IPv6 address that `net.isIP` accepted (zone index already removed). */
function ipv6Groups(address: string): number[] {
  // An embedded IPv4 tail (`::ffff:192.0.2.1`, `64:ff9b::192.0.2.1`) is written as the two groups it stands for.
  const text = address.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_, a, b, c, d) =>
    `${((+a << 8) | +b).toString(16)}:${((+c << 8) | +d).toString(16)}`,
  );
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const gap = text.indexOf('::');
  if (gap < 0) return parse(text);
  const head = parse(text.slice(0, gap));
  const rest = parse(text.slice(gap + 2));
  return [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
}

/**
 * The network an address belongs to, as a comparable key (`4:a.b.c` for its /24, `6:g1:g2:g3` for its /48), or
 * undefined for text that is not an IP address.
 */
export function networkOf(ip: string): string | undefined {
  const address = ip.includes('%') ? ip.slice(0, ip.indexOf('%')) : ip;
  const version = net.isIP(address);
  if (version === 4) return `4:${address.split('.').slice(0, 3).map(Number).join('.')}`;
  if (version !== 6) return undefined;
  const g = ipv6Groups(address);
  const mapped = g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff;
  if (mapped) return `4:${(g[6]! >> 8) & 255}.${g[6]! & 255}.${(g[7]! >> 8) & 255}`;
  return `6:${g.slice(0, NETWORK_PREFIX.ipv6 / 16).map((x) => x.toString(16)).join(':')}`;
}

/** Rates a sign-in from its signals (see the module comment). Pure: same input, same answer. */
export function assessSignInRisk(input: SignInRiskInput): RiskAssessment {
  const signals: RiskAssessment['signals'] = [];
  const burst = RISK_WEIGHTS.failedAttemptBurst.find((tier) => input.failuresLast15Min >= tier.atLeast);
  if (burst) signals.push({ signal: 'failedAttemptBurst', weight: burst.weight });

  if (!input.firstSignIn) {
    const { history } = input;
    if (input.deviceId !== null && !history.deviceIds.includes(input.deviceId)) {
      signals.push({ signal: 'newDevice', weight: RISK_WEIGHTS.newDevice });
    }
    const network = input.ip === null ? undefined : networkOf(input.ip);
    if (network !== undefined && !history.ips.some((ip) => networkOf(ip) === network)) {
      signals.push({ signal: 'newNetwork', weight: RISK_WEIGHTS.newNetwork });
    }
    if (input.clientId !== null && !history.clientIds.includes(input.clientId)) {
      signals.push({ signal: 'unfamiliarClient', weight: RISK_WEIGHTS.unfamiliarClient });
    }
  }

  const score = Math.min(RISK_SCORE_CAP, signals.reduce((sum, s) => sum + s.weight, 0));
  return { level: riskLevelOf(score), score, signals };
}

/**
 * The risk a sign-in (or the session it started) is treated as having, once an administrator's word is applied:
 * confirmed → `high` whenever the sign-in was (until someone dismisses it); dismissed → `none` for a sign-in
 * before the dismissal (the administrator looked at it); otherwise what was computed, so a new risky sign-in after
 * a dismissal counts again.
 */
export function effectiveRisk(computed: { level: SignInRisk; at: number }, userRisk?: UserRisk): SignInRisk {
  if (userRisk?.state === 'confirmed') return 'high';
  if (userRisk?.state === 'dismissed' && computed.at < userRisk.at) return 'none';
  return computed.level;
}
