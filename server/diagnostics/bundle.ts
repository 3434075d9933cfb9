/**
 * Diagnostics bundles: reading what an app uploads (hostile until proven otherwise) and writing what is stored.
 *
 * An upload is `application/gzip` (one log, possibly NDJSON: the entry `app.log`) or `application/zip` (several
 * text files). Reading never trusts what the archive says about itself: the body is read into a buffer capped at
 * `maxCompressedBytes`, and every byte inflated is counted as it comes out of zlib, against `maxEntryBytes` per entry,
 * `maxUncompressedBytes` for the bundle and `maxRatio` times the compressed size; a declared size is only used to
 * refuse early (a zip whose headers lie is stopped by the counting all the same). Memory therefore stays within the
 * caps whatever the archive holds: a 1 GB bomb costs at most the cap and a few zlib buffers.
 *
 * What is refused (the whole bundle, with a `BundleRejected` reason the route maps to a status):
 * - `unsupportedType` (415): a content type other than the two, or a zip entry compressed with something other than
 *   store or deflate;
 * - `tooLarge` (413): over the compressed, uncompressed or per-entry cap;
 * - `tooManyEntries` (413): more entries than `maxEntries` (counted from the central directory, directories too);
 * - `compressionRatio` (413): more than `maxRatio` bytes out per byte in (past `RATIO_FLOOR_BYTES`);
 * - `encrypted` (400): an encrypted entry (there is nothing to scrub in what cannot be read);
 * - `badName` (400): an absolute name, a `..` segment, a control or bidi-override character, an empty or over-long
 *   name, or two entries with one name;
 * - `corrupt` (400): anything that does not parse: a truncated archive, a bad CRC, trailing bytes, a body that is not
 *   what its content type says, an entry whose real size is not the size declared.
 *
 * What is skipped (the bundle is accepted without it, and `skipped` says so): directories; binary entries (not
 * UTF-8, or holding NUL bytes: a screenshot, a database file) because what cannot be read as text cannot be scrubbed
 * of secrets and must not be stored; and nested archives (zip, gzip and the like, by name or by magic bytes), which
 * are never expanded. Skipped entries still count against every cap, since they were inflated to be recognised.
 *
 * Entries come out as read: scrubbing (`scrub.ts`) is the caller's next step, before anything is stored.
 */
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import yauzl from 'yauzl';
import yazl from 'yazl';

export type BundleRejectedReason =
  | 'tooLarge'
  | 'tooManyEntries'
  | 'compressionRatio'
  | 'unsupportedType'
  | 'corrupt'
  | 'encrypted'
  | 'badName';

/** A refused upload: `reason` is stable (the route maps it to 413/415/400), the message is for logs. */
export class BundleRejected extends Error {
  constructor(
    readonly reason: BundleRejectedReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BundleRejected';
  }
}

export interface BundleLimits {
  /** Bytes of the upload itself (the archive). */
  maxCompressedBytes: number;
  /** Bytes of all entries once inflated, skipped ones included. */
  maxUncompressedBytes: number;
  /** Entries of a zip, directories included. */
  maxEntries: number;
  /** Bytes of one entry once inflated. */
  maxEntryBytes: number;
  /** Inflated bytes per uploaded byte, over the whole bundle. */
  maxRatio: number;
}

/**
 * Defaults sized for an app's logs: a week of verbose logs is a few MB compressed; text logs compress 5 to 20 times
 * (NDJSON with repeated keys up to ~50), while a zip bomb of zeros compresses about 1,000 times.
 */
export const DEFAULT_BUNDLE_LIMITS: Readonly<BundleLimits> = Object.freeze({
  maxCompressedBytes: 10 * 1024 * 1024,
  maxUncompressedBytes: 64 * 1024 * 1024,
  maxEntries: 64,
  maxEntryBytes: 32 * 1024 * 1024,
  maxRatio: 100,
});

/**
 * Below this many inflated bytes the ratio is not judged: a small, very repetitive log can legitimately compress
 * 100:1, and a few MB cost nothing; the ratio limit is for the bomb that would otherwise run to the byte caps.
 */
export const RATIO_FLOOR_BYTES = 1024 * 1024;

/** The name a gzip upload's one log is stored under. */
export const GZIP_ENTRY_NAME = 'app.log';
export const MAX_NAME_LENGTH = 255;

export interface BundleEntry {
  name: string;
  text: string;
}

export interface SkippedEntry {
  name: string;
  reason: 'directory' | 'binary' | 'nestedArchive';
}

export interface ReadBundle {
  entries: BundleEntry[];
  /** Entries left out of `entries`, and why. */
  skipped: SkippedEntry[];
  compressedBytes: number;
  uncompressedBytes: number;
}

type BundleKind = 'gzip' | 'zip';

/** The kind of bundle a Content-Type names (parameters and case ignored), or `unsupportedType`. */
export function bundleKind(contentType: string | undefined): BundleKind {
  const mediaType = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (mediaType === 'application/gzip') return 'gzip';
  if (mediaType === 'application/zip') return 'zip';
  throw new BundleRejected('unsupportedType', `unsupported content type ${JSON.stringify(mediaType)}: send application/gzip or application/zip`);
}

export async function readBundle(body: Readable, contentType: string, limits: BundleLimits = DEFAULT_BUNDLE_LIMITS): Promise<ReadBundle> {
  let kind: BundleKind;
  try {
    kind = bundleKind(contentType);
  } catch (err) {
    body.resume(); // nothing will be read: let the upload drain rather than stall the connection
    throw err;
  }
  const archive = await readCapped(body, limits.maxCompressedBytes);
  const budget = new InflateBudget(limits, archive.length);
  const read = kind === 'gzip' ? await readGzip(archive, budget) : await readZip(archive, limits, budget);
  return { ...read, compressedBytes: archive.length, uncompressedBytes: budget.total };
}

/** The whole body, refused as soon as it passes `max` bytes (the stream is destroyed: the rest is never read). */
async function readCapped(body: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of body) {
      const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
      length += buffer.length;
      if (length > max) {
        body.destroy();
        throw new BundleRejected('tooLarge', `the upload is larger than ${max} bytes`);
      }
      chunks.push(buffer);
    }
  } catch (err) {
    if (err instanceof BundleRejected) throw err;
    throw new BundleRejected('corrupt', `the upload could not be read: ${(err as Error).message}`, { cause: err });
  }
  return Buffer.concat(chunks, length);
}

/** Counts inflated bytes against the caps as they are produced, for one entry at a time and for the bundle. */
class InflateBudget {
  total = 0;
  constructor(
    private readonly limits: BundleLimits,
    private readonly compressedBytes: number,
  ) {}

  /** Called with each inflated chunk; `entrySoFar` includes it. Throws the first cap it breaks. */
  take(bytes: number, entrySoFar: number, name: string): void {
    this.total += bytes;
    if (entrySoFar > this.limits.maxEntryBytes) {
      throw new BundleRejected('tooLarge', `entry ${JSON.stringify(name)} inflates to more than ${this.limits.maxEntryBytes} bytes`);
    }
    if (this.total > this.limits.maxUncompressedBytes) {
      throw new BundleRejected('tooLarge', `the bundle inflates to more than ${this.limits.maxUncompressedBytes} bytes`);
    }
    if (this.total > RATIO_FLOOR_BYTES && this.total > this.limits.maxRatio * this.compressedBytes) {
      throw new BundleRejected('compressionRatio', `the bundle inflates more than ${this.limits.maxRatio} times its size`);
    }
  }
}

/**
 * Inflated bytes of one stream, counted chunk by chunk against the budget. Consuming with `for await` keeps zlib
 * under back-pressure, so it never runs ahead of the counting; on a refusal the stream is destroyed at once.
 */
async function drain(stream: Readable, budget: InflateBudget, name: string): Promise<{ data: Buffer; crc: number }> {
  const chunks: Buffer[] = [];
  let length = 0;
  let crc = 0;
  try {
    for await (const chunk of stream) {
      const buffer = chunk as Buffer;
      length += buffer.length;
      budget.take(buffer.length, length, name);
      crc = zlib.crc32(buffer, crc);
      chunks.push(buffer);
    }
  } catch (err) {
    stream.destroy();
    if (err instanceof BundleRejected) throw err;
    throw new BundleRejected('corrupt', `entry ${JSON.stringify(name)} does not inflate: ${(err as Error).message}`, { cause: err });
  }
  return { data: Buffer.concat(chunks, length), crc };
}

async function readGzip(archive: Buffer, budget: InflateBudget): Promise<Omit<ReadBundle, 'compressedBytes' | 'uncompressedBytes'>> {
  if (archive.length < 18 || archive[0] !== 0x1f || archive[1] !== 0x8b) {
    throw new BundleRejected('corrupt', 'the body is not gzip');
  }
  // zlib checks the CRC and length of each member. Concatenated members are one log continued (what `cat a.gz
  // b.gz` makes), so they are read as one; anything zlib leaves unread after the last member is refused.
  const gunzip = zlib.createGunzip();
  const done = drain(gunzip, budget, GZIP_ENTRY_NAME);
  gunzip.end(archive);
  const { data } = await done;
  if (gunzip.bytesWritten !== archive.length) {
    throw new BundleRejected('corrupt', `${archive.length - gunzip.bytesWritten} bytes follow the gzip data`);
  }
  const entries: BundleEntry[] = [];
  const skipped: SkippedEntry[] = [];
  const verdict = textOf(data);
  if (typeof verdict === 'string') entries.push({ name: GZIP_ENTRY_NAME, text: verdict });
  else skipped.push({ name: GZIP_ENTRY_NAME, reason: verdict.skip });
  return { entries, skipped };
}

const openZip = (archive: Buffer) =>
  new Promise<yauzl.ZipFile>((resolve, reject) => {
    // Names are decoded and judged here (decodeStrings: false), not by yauzl, so that a bad one is `badName`; sizes
    // are counted here (validateEntrySizes: false), so that a lying one is stopped at the cap, not after it.
    yauzl.fromBuffer(archive, { lazyEntries: true, decodeStrings: false, validateEntrySizes: false, autoClose: false }, (err, zip) =>
      err || !zip ? reject(err ?? new Error('no zip')) : resolve(zip),
    );
  });

const openEntry = (zip: yauzl.ZipFile, entry: yauzl.Entry) =>
  new Promise<Readable>((resolve, reject) => {
    zip.openReadStream(entry, (err, stream) => (err || !stream ? reject(err ?? new Error('no stream')) : resolve(stream)));
  });

/** The next central-directory entry, or undefined after the last. */
function nextEntry(zip: yauzl.ZipFile): Promise<yauzl.Entry | undefined> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      zip.off('entry', onEntry);
      zip.off('end', onEnd);
      zip.off('error', onError);
    };
    const onEntry = (entry: yauzl.Entry) => (cleanup(), resolve(entry));
    const onEnd = () => (cleanup(), resolve(undefined));
    const onError = (err: Error) => (cleanup(), reject(err));
    zip.on('entry', onEntry);
    zip.on('end', onEnd);
    zip.on('error', onError);
    zip.readEntry();
  });
}

/** yauzl's own refusal of an entry flagged with strong encryption (it stops before handing the entry over). */
const isYauzlEncryptionError = (err: unknown) => err instanceof Error && /encrypt/i.test(err.message);

async function readZip(archive: Buffer, limits: BundleLimits, budget: InflateBudget): Promise<Omit<ReadBundle, 'compressedBytes' | 'uncompressedBytes'>> {
  if (archive.length < 22 || archive[0] !== 0x50 || archive[1] !== 0x4b) throw new BundleRejected('corrupt', 'the body is not a zip');
  let zip: yauzl.ZipFile;
  try {
    zip = await openZip(archive);
  } catch (err) {
    throw new BundleRejected('corrupt', `the zip does not parse: ${(err as Error).message}`, { cause: err });
  }
  try {
    if (zip.entryCount > limits.maxEntries) {
      throw new BundleRejected('tooManyEntries', `the zip has ${zip.entryCount} entries, more than ${limits.maxEntries}`);
    }
    const entries: BundleEntry[] = [];
    const skipped: SkippedEntry[] = [];
    const seen = new Set<string>();
    for (;;) {
      let entry: yauzl.Entry | undefined;
      try {
        entry = await nextEntry(zip);
      } catch (err) {
        if (isYauzlEncryptionError(err)) throw new BundleRejected('encrypted', 'the zip holds an encrypted entry', { cause: err });
        throw new BundleRejected('corrupt', `the zip does not parse: ${(err as Error).message}`, { cause: err });
      }
      if (!entry) break;
      const rawName = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, false);
      const name = sanitiseEntryName(rawName);
      if (seen.has(name)) throw new BundleRejected('badName', `two entries are named ${JSON.stringify(name)}`);
      seen.add(name);
      if (name.endsWith('/')) {
        skipped.push({ name, reason: 'directory' });
        continue;
      }
      if (entry.isEncrypted()) throw new BundleRejected('encrypted', `entry ${JSON.stringify(name)} is encrypted`);
      if (entry.compressionMethod !== 0 && entry.compressionMethod !== 8) {
        throw new BundleRejected('unsupportedType', `entry ${JSON.stringify(name)} uses compression method ${entry.compressionMethod}: only store and deflate are read`);
      }
      // What the headers declare can only make us refuse sooner; the counting in drain() is what holds.
      if (entry.uncompressedSize > limits.maxEntryBytes) {
        throw new BundleRejected('tooLarge', `entry ${JSON.stringify(name)} declares ${entry.uncompressedSize} bytes, more than ${limits.maxEntryBytes}`);
      }
      let stream: Readable;
      try {
        stream = await openEntry(zip, entry);
      } catch (err) {
        throw new BundleRejected('corrupt', `entry ${JSON.stringify(name)} cannot be read: ${(err as Error).message}`, { cause: err });
      }
      const { data, crc } = await drain(stream, budget, name);
      if (data.length !== entry.uncompressedSize) {
        throw new BundleRejected('corrupt', `entry ${JSON.stringify(name)} declares ${entry.uncompressedSize} bytes and holds ${data.length}`);
      }
      if (crc !== entry.crc32) throw new BundleRejected('corrupt', `entry ${JSON.stringify(name)} fails its CRC check`);
      if (NESTED_ARCHIVE_NAME.test(name)) {
        skipped.push({ name, reason: 'nestedArchive' });
        continue;
      }
      const verdict = textOf(data);
      if (typeof verdict === 'string') entries.push({ name, text: verdict });
      else skipped.push({ name, reason: verdict.skip });
    }
    return { entries, skipped };
  } finally {
    zip.close();
  }
}

/** Names of archives and compressed files, which are never expanded (nor stored). */
const NESTED_ARCHIVE_NAME = /\.(zip|gz|tgz|tar|bz2|xz|zst|7z|rar|jar|apk|ipa|aar)$/i;
/** Magic bytes of the same: zip (local header, empty archive), gzip, bzip2, xz, zstd, 7z, rar. */
const ARCHIVE_MAGIC: readonly Buffer[] = [
  Buffer.from('PK\x03\x04', 'latin1'),
  Buffer.from('PK\x05\x06', 'latin1'),
  Buffer.from([0x1f, 0x8b]),
  Buffer.from('BZh', 'latin1'),
  Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
  Buffer.from([0x28, 0xb5, 0x2f, 0xfd]),
  Buffer.from([0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]),
  Buffer.from('Rar!', 'latin1'),
];

/** The entry's text, or why it is skipped: an archive by its magic, or binary (not UTF-8, or holding NUL). */
function textOf(data: Buffer): string | { skip: 'binary' | 'nestedArchive' } {
  if (ARCHIVE_MAGIC.some((magic) => data.length >= magic.length && data.subarray(0, magic.length).equals(magic))) {
    return { skip: 'nestedArchive' };
  }
  if (data.includes(0)) return { skip: 'binary' };
  try {
    // fatal: a byte sequence that is not UTF-8 makes the entry binary rather than turning into U+FFFD.
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(data);
  } catch {
    return { skip: 'binary' };
  }
}

/**
 * The name an entry is stored under, or `badName`. Harmless differences are normalised (backslashes of a zip made
 * on Windows become slashes, `.` and empty segments go); anything that could escape a directory, hide itself or
 * mislead whoever reads a listing is refused: absolute paths and drive letters, `..`, control characters (C0, DEL,
 * C1), bidi overrides and isolates (a name that reads backwards), and names longer than MAX_NAME_LENGTH.
 */
export function sanitiseEntryName(raw: string): string {
  const refuse = (why: string) => new BundleRejected('badName', `entry name ${JSON.stringify(raw)}: ${why}`);
  if (raw.length === 0) throw refuse('empty');
  if (/[\u0000-\u001f\u007f-\u009f]/.test(raw)) throw refuse('control character');
  if (/[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]/.test(raw)) throw refuse('bidi control character');
  if (raw.includes('\ufffd')) throw refuse('not valid UTF-8');
  const slashed = raw.replace(/\\/g, '/');
  if (slashed.startsWith('/') || /^[A-Za-z]:/.test(slashed)) throw refuse('absolute path');
  const isDirectory = slashed.endsWith('/');
  const segments = slashed.split('/').filter((segment) => segment !== '' && segment !== '.');
  if (segments.includes('..')) throw refuse('parent directory segment');
  if (segments.length === 0) throw refuse('empty');
  const name = segments.join('/') + (isDirectory ? '/' : '');
  if (name.length > MAX_NAME_LENGTH) throw refuse(`longer than ${MAX_NAME_LENGTH} characters`);
  return name;
}

/**
 * The zip that is stored for an incident: the scrubbed entries plus what the server attaches (the device record, its
 * own log lines). Names go through the same sanitising as uploads (yazl refuses the rest anyway), and every entry is
 * deflated, UTF-8 with the UTF-8 name flag.
 */
const FIXED_MTIME = new Date(Date.UTC(2000, 0, 1));

export function writeBundle(entries: ReadonlyArray<BundleEntry>): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const zip = new yazl.ZipFile();
    const seen = new Set<string>();
    try {
      for (const entry of entries) {
        const name = sanitiseEntryName(entry.name);
        if (name.endsWith('/') || seen.has(name)) throw new BundleRejected('badName', `cannot store entry ${JSON.stringify(entry.name)} twice or as a directory`);
        seen.add(name);
        // A fixed mtime: the same entries make the same bytes (the incident's own time is in the store).
        zip.addBuffer(Buffer.from(entry.text, 'utf8'), name, { mtime: FIXED_MTIME, compress: true });
      }
    } catch (err) {
      reject(err);
      return;
    }
    zip.end();
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (chunk: Buffer) => chunks.push(chunk));
    zip.outputStream.on('error', reject);
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
  });
}
