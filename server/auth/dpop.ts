/**
 * DPoP proofs (RFC 9449) as a resource server checks them: the client proves, on every request, that it holds the
 * private key its access token is bound to (`cnf.jkt`), so a leaked token is useless without that key.
 *
 * A proof is accepted when all of these hold (each failure names its reason; the RFC's error code is
 * `invalid_dpop_proof`):
 * - it is one compact JWS, at most `MAX_PROOF_LENGTH` characters;
 * - header: `typ` is `dpop+jwt`; `alg` is one of `DPOP_ALGORITHMS` (asymmetric only: never `none`, never HMAC, whose
 *   "key" would be public); `jwk` is a public key of the kind `alg` needs, with no private member (`d`, RSA's
 *   primes…, or a symmetric `k`);
 * - the signature verifies by that `jwk` (jose);
 * - `htm` is the request's method, exactly; `htu` is the request's URI without query and fragment, both compared
 *   after normalisation (scheme and host case, default port, dot segments, percent-escape case and unreserved
 *   characters: RFC 3986 §6.2.2–6.2.3);
 * - `iat` is within [now − `PROOF_MAX_AGE_SECONDS`, now + `CLOCK_TOLERANCE_SECONDS`]: 60 s back, and 5 s ahead for a
 *   client clock slightly ahead of ours (the same tolerance as access tokens). No server nonce (RFC 9449 §8) is used;
 * - `jti` is a string of at most `MAX_JTI_LENGTH` characters not seen before with the same key while a proof with
 *   it could still be accepted (the replay memory below);
 * - with an access token, `ath` is base64url(SHA-256(token));
 * - with an expected thumbprint (the token's `cnf.jkt`), the RFC 7638 SHA-256 thumbprint of `jwk` equals it.
 * The verifier answers that thumbprint.
 *
 * Replay memory: a proof is remembered (key thumbprint + `jti`) from its acceptance until its `iat` leaves the
 * window, so no remembered proof could still be accepted once forgotten. The memory is bounded: when full, expired
 * entries are dropped, and if it is still full the proof is refused with `DpopReplayMemoryFull` (the caller answers
 * 503, retry shortly) — never is a live entry evicted, which would let its replay through. The default memory is this
 * process's: with several processes (server/cluster.ts) or nodes, a proof replayed to another one within the window is
 * not caught unless they share a `DpopReplayMemory`.
 */
import crypto from 'node:crypto';
import { calculateJwkThumbprint, decodeProtectedHeader, importJWK, jwtVerify, errors as joseErrors, type JWK, type KeyLike } from 'jose';
import { CLOCK_TOLERANCE_SECONDS } from './accessTokens';

/** The signature algorithms a proof may use: asymmetric ones every mainstream platform signs with. */
export const DPOP_ALGORITHMS = ['ES256', 'EdDSA', 'RS256', 'PS256'] as const;
export type DpopAlgorithm = (typeof DPOP_ALGORITHMS)[number];

/** How old a proof's `iat` may be (its own clock's view), in seconds. */
export const PROOF_MAX_AGE_SECONDS = 60;

/** A proof is a few hundred characters (an RSA 4096 key makes it about 1.5 KB); anything far larger is not one. */
export const MAX_PROOF_LENGTH = 8192;

/** Bounds what one remembered proof costs (RFC 9449 asks for 96 random bits or more: 16 characters suffice). */
export const MAX_JTI_LENGTH = 256;

/** Proofs remembered at most: a minute of about 800 DPoP requests a second per process, some 20 MB at worst. */
export const REPLAY_MEMORY_SIZE = 50_000;

/** The kind of key each algorithm needs (`kty`, and `crv` where the algorithm fixes it). */
const KEY_KINDS: Record<DpopAlgorithm, { kty: string; crv?: readonly string[] }> = {
  ES256: { kty: 'EC', crv: ['P-256'] },
  EdDSA: { kty: 'OKP', crv: ['Ed25519', 'Ed448'] },
  RS256: { kty: 'RSA' },
  PS256: { kty: 'RSA' },
};

/** JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** A proof that fails a check: RFC 9449's error code and what was wrong (safe to show the client). */
export class InvalidDpopProof extends Error {
  readonly error = 'invalid_dpop_proof' as const;
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'InvalidDpopProof';
  }
}

/** The replay memory is full of live entries: the proof can be neither checked for replay nor remembered. */
export class DpopReplayMemoryFull extends Error {
  constructor() {
    super('The DPoP replay memory is full.');
    this.name = 'DpopReplayMemoryFull';
  }
}

/**
 * Remembers accepted proofs: `remember` answers `fresh` (now remembered until `expiresAtMs`), `replay` (seen and not
 * expired) or `full` (not remembered: refuse). A shared implementation (IPC, database) can replace the in-memory one.
 */
export interface DpopReplayMemory {
  remember(key: string, expiresAtMs: number, nowMs: number): 'fresh' | 'replay' | 'full' | Promise<'fresh' | 'replay' | 'full'>;
}

/** The in-process replay memory: a map in insertion order, bounded by `capacity`, live entries never evicted. */
export function createReplayMemory(capacity = REPLAY_MEMORY_SIZE): DpopReplayMemory & { readonly size: number } {
  const seen = new Map<string, number>(); // key → expiry (ms)
  return {
    get size() {
      return seen.size;
    },
    remember(key, expiresAtMs, nowMs) {
      const known = seen.get(key);
      if (known !== undefined) {
        if (known > nowMs) return 'replay';
        seen.delete(key);
      }
      // Entries arrive in nearly the order they expire (their `iat` is about their arrival): drop the expired ones at
      // the front on the way, so the map stays about one window's worth.
      for (const [k, expiry] of seen) {
        if (expiry > nowMs) break;
        seen.delete(k);
      }
      if (seen.size >= capacity) {
        // Out of order expiries may hide behind a live entry: sweep them all before giving up.
        for (const [k, expiry] of seen) if (expiry <= nowMs) seen.delete(k);
        if (seen.size >= capacity) return 'full';
      }
      seen.set(key, expiresAtMs);
      return 'fresh';
    },
  };
}

export interface DpopVerifierOptions {
  /** Milliseconds since the epoch (the app's clock). */
  now: () => number;
  /** Where accepted proofs are remembered; an in-process memory of `REPLAY_MEMORY_SIZE` when not given. */
  replay?: DpopReplayMemory;
  /** `PROOF_MAX_AGE_SECONDS` when not given. */
  maxAgeSeconds?: number;
  /** `CLOCK_TOLERANCE_SECONDS` when not given: how far ahead of ours a proof's `iat` may be. */
  clockToleranceSeconds?: number;
}

export interface DpopCheck {
  /** The `DPoP` header's value (one header: the caller refuses two). */
  proof: string;
  /** The request's method, as received. */
  method: string;
  /** The request's absolute URI as the client addressed it (query and fragment may be present: they are ignored). */
  uri: string;
  /** The access token the request presents: the proof's `ath` must be its hash. */
  accessToken?: string;
  /** The thumbprint the access token is bound to (`cnf.jkt`): the proof's key must have it. */
  jkt?: string;
}

/** Percent-escapes with uppercase hex, and escapes of unreserved characters decoded (RFC 3986 §6.2.2.1–2). */
function normalizeEscapes(path: string): string {
  if (!path.includes('%')) return path;
  return path.replace(/%[0-9A-Fa-f]{2}/g, (escape) => {
    const ch = String.fromCharCode(parseInt(escape.slice(1), 16));
    return /[A-Za-z0-9\-._~]/.test(ch) ? ch : escape.toUpperCase();
  });
}

/**
 * An `htu` (or the request's URI) as compared: scheme, host and port as the WHATWG URL parser writes them (lowercase,
 * no default port), the path with dot segments resolved and escapes normalised; no query, no fragment. Undefined for
 * what is not an http(s) URI, or names a user.
 */
export function normalizeHtu(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username !== '' || url.password !== '') return undefined;
  return `${url.protocol}//${url.host}${normalizeEscapes(url.pathname)}`;
}

/** base64url(SHA-256(access token)): the `ath` a proof carries for that token (RFC 9449 §4.2). */
export function accessTokenHash(token: string): string {
  return crypto.createHash('sha256').update(token, 'ascii').digest('base64url');
}

function isAllowedAlgorithm(alg: unknown): alg is DpopAlgorithm {
  return typeof alg === 'string' && (DPOP_ALGORITHMS as readonly string[]).includes(alg);
}

/** The header's public key, checked for `alg` before any use; throws InvalidDpopProof. */
function publicJwkOf(jwk: unknown, alg: DpopAlgorithm): JWK {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw new InvalidDpopProof('The proof header has no "jwk" object.');
  const key = jwk as Record<string, unknown>;
  for (const member of PRIVATE_MEMBERS) {
    if (member in key) throw new InvalidDpopProof(`The proof's "jwk" is not a public key (it has "${member}").`);
  }
  const kind = KEY_KINDS[alg];
  if (key.kty !== kind.kty || (kind.crv && !kind.crv.includes(key.crv as string))) {
    throw new InvalidDpopProof(`The proof's "jwk" is not a key for ${alg}.`);
  }
  return key as unknown as JWK;
}

export function createDpopVerifier(opts: DpopVerifierOptions) {
  const { now } = opts;
  const maxAge = opts.maxAgeSeconds ?? PROOF_MAX_AGE_SECONDS;
  const tolerance = opts.clockToleranceSeconds ?? CLOCK_TOLERANCE_SECONDS;
  const replay = opts.replay ?? createReplayMemory();

  /** Checks one proof; answers its key's RFC 7638 thumbprint. Throws InvalidDpopProof or DpopReplayMemoryFull. */
  async function verify(check: DpopCheck): Promise<string> {
    const { proof } = check;
    if (proof.length > MAX_PROOF_LENGTH) throw new InvalidDpopProof('The DPoP proof is too large.');
    if (!COMPACT_JWS.test(proof)) throw new InvalidDpopProof('The DPoP proof is not a signed JWT in compact form.');

    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(proof);
    } catch {
      throw new InvalidDpopProof('The DPoP proof header cannot be read.');
    }
    if (typeof header.typ !== 'string' || header.typ.toLowerCase() !== 'dpop+jwt') {
      throw new InvalidDpopProof('The DPoP proof header "typ" must be "dpop+jwt".');
    }
    const { alg } = header;
    if (!isAllowedAlgorithm(alg)) {
      throw new InvalidDpopProof(`The DPoP proof algorithm must be one of ${DPOP_ALGORITHMS.join(', ')}.`);
    }
    const jwk = publicJwkOf(header.jwk, alg);

    let key: KeyLike | Uint8Array;
    try {
      key = await importJWK(jwk, alg);
    } catch {
      throw new InvalidDpopProof(`The proof's "jwk" is not a usable ${alg} public key.`);
    }
    if (key instanceof Uint8Array || key.type !== 'public') throw new InvalidDpopProof('The proof\'s "jwk" is not a public key.');

    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(proof, key, {
        algorithms: [alg],
        typ: 'dpop+jwt',
        currentDate: new Date(now()),
        clockTolerance: tolerance,
      }));
    } catch (err) {
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) throw new InvalidDpopProof('The DPoP proof signature does not verify with its "jwk".');
      if (err instanceof joseErrors.JOSEError || err instanceof TypeError) throw new InvalidDpopProof('The DPoP proof is not a valid JWT.');
      throw err;
    }

    const { jti, htm, htu, iat, ath } = payload;
    if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH) {
      throw new InvalidDpopProof(`The DPoP proof needs a "jti" of 1 to ${MAX_JTI_LENGTH} characters.`);
    }
    if (htm !== check.method) throw new InvalidDpopProof(`The DPoP proof "htm" does not match the request method ${check.method}.`);
    const target = normalizeHtu(check.uri);
    if (target === undefined) throw new InvalidDpopProof('The request URI cannot be determined.');
    if (typeof htu !== 'string' || normalizeHtu(htu) !== target) {
      throw new InvalidDpopProof(`The DPoP proof "htu" does not match the request URI ${target}.`);
    }
    if (typeof iat !== 'number' || !Number.isFinite(iat)) throw new InvalidDpopProof('The DPoP proof needs a numeric "iat".');
    const nowSeconds = now() / 1000;
    if (iat < nowSeconds - maxAge) throw new InvalidDpopProof(`The DPoP proof is older than ${maxAge} s ("iat").`);
    if (iat > nowSeconds + tolerance) throw new InvalidDpopProof('The DPoP proof is issued in the future ("iat").');
    if (check.accessToken !== undefined) {
      if (typeof ath !== 'string') throw new InvalidDpopProof('The DPoP proof needs an "ath" (the access token hash).');
      if (ath !== accessTokenHash(check.accessToken)) throw new InvalidDpopProof('The DPoP proof "ath" does not match the access token.');
    }
    const jkt = await calculateJwkThumbprint(jwk, 'sha256');
    if (check.jkt !== undefined && jkt !== check.jkt) {
      throw new InvalidDpopProof('The DPoP proof is signed by a key other than the one the access token is bound to.');
    }

    // Last: only a proof that passed every other check is remembered (a failing one could not be accepted later for
    // the same reason, except a future `iat`, which is refused now and so not remembered either).
    const verdict = await replay.remember(`${jkt} ${jti}`, (iat + maxAge) * 1000 + 1, now());
    if (verdict === 'replay') throw new InvalidDpopProof('The DPoP proof has been used before ("jti").');
    if (verdict === 'full') throw new DpopReplayMemoryFull();
    return jkt;
  }

  return { algorithms: DPOP_ALGORITHMS, verify };
}

export type DpopVerifier = ReturnType<typeof createDpopVerifier>;
