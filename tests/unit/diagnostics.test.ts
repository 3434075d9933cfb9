import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import yazl from 'yazl';
import {
  BundleLimits,
  BundleRejected,
  BundleRejectedReason,
  DEFAULT_BUNDLE_LIMITS,
  readBundle,
  sanitiseEntryName,
  writeBundle,
} from '../../server/diagnostics/bundle';
import { REDACTED, scrubEntries } from '../../server/diagnostics/scrub';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** A zip made by yazl from in-memory files. */
function yazlZip(files: Array<{ name: string; data: Buffer | string; compress?: boolean }>): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const f of files) zip.addBuffer(Buffer.isBuffer(f.data) ? f.data : Buffer.from(f.data), f.name, { compress: f.compress ?? true });
  zip.end();
  return collect(zip.outputStream);
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

interface CraftedEntry {
  /** The name's bytes as stored (UTF-8 flag set). */
  name: string | Buffer;
  /** The entry's data as stored (already deflated for method 8). */
  data: Buffer;
  method?: number;
  crc?: number;
  /** The uncompressed size the headers declare (the truth is whatever `data` inflates to). */
  declaredSize: number;
  flags?: number;
}

/**
 * A zip written byte by byte (APPNOTE 4.3), so headers can say what no honest writer would: lying sizes, an encryption
 * flag, names yazl refuses to write.
 */
function craftZip(entries: CraftedEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.isBuffer(e.name) ? e.name : Buffer.from(e.name, 'utf8');
    const flags = (e.flags ?? 0) | 0x800;
    const method = e.method ?? 8;
    const crc = e.crc ?? 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(flags, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt16LE(0, 10); // time
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(e.data.length, 18);
    local.writeUInt32LE(e.declaredSize, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(flags, 8);
    central.writeUInt16LE(method, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(e.data.length, 20);
    central.writeUInt32LE(e.declaredSize, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, e.data);
    centrals.push(central, name);
    offset += local.length + name.length + e.data.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
}

/** An honest crafted entry of `text` (deflated, true CRC and size). */
const honest = (name: string | Buffer, text: string | Buffer, extra: Partial<CraftedEntry> = {}): CraftedEntry => {
  const data = Buffer.isBuffer(text) ? text : Buffer.from(text);
  return { name, data: zlib.deflateRawSync(data), crc: zlib.crc32(data), declaredSize: data.length, ...extra };
};

/** The upload as a request body would arrive: in chunks. */
const body = (bytes: Buffer) => Readable.from((function* () {
  for (let i = 0; i < bytes.length; i += 64 * 1024) yield bytes.subarray(i, i + 64 * 1024);
})());

const limits = (overrides: Partial<BundleLimits> = {}): BundleLimits => ({ ...DEFAULT_BUNDLE_LIMITS, ...overrides });

/** The reason readBundle refuses with (fails the test if it accepts). */
async function refusal(bytes: Buffer | Readable, contentType: string, l: BundleLimits = limits()): Promise<BundleRejectedReason> {
  try {
    await readBundle(Buffer.isBuffer(bytes) ? body(bytes) : bytes, contentType, l);
  } catch (err) {
    if (err instanceof BundleRejected) return err.reason;
    throw err;
  }
  throw new Error('the bundle was accepted');
}

/** Runs `work` and answers how far the process's resident set grew above where it started, sampled every few ms. */
async function rssGrowth(work: () => Promise<unknown>): Promise<number> {
  const start = process.memoryUsage().rss;
  let peak = start;
  const sample = () => (peak = Math.max(peak, process.memoryUsage().rss));
  const timer = setInterval(sample, 2);
  try {
    await work();
  } catch {
    // the refusal itself is checked by the caller
  } finally {
    clearInterval(timer);
    sample();
  }
  return peak - start;
}

describe('readBundle: good bundles', () => {
  test('a zip of text logs comes out entry by entry, with its sizes', async () => {
    const app = '{"level":30,"msg":"started"}\n{"level":40,"msg":"sync slow"}\n';
    const net = 'GET /v1/folders 200\n'.repeat(1000);
    const zip = await yazlZip([{ name: 'app.log', data: app }, { name: 'logs/net.log', data: net }, { name: 'notes.txt', data: 'héllo ✓', compress: false }]);
    const read = await readBundle(body(zip), 'application/zip', limits());
    expect(read.entries).toEqual([
      { name: 'app.log', text: app },
      { name: 'logs/net.log', text: net },
      { name: 'notes.txt', text: 'héllo ✓' },
    ]);
    expect(read.skipped).toEqual([]);
    expect(read.compressedBytes).toBe(zip.length);
    expect(read.uncompressedBytes).toBe(Buffer.byteLength(app) + net.length + Buffer.byteLength('héllo ✓'));
  });

  test('a gzip log is the one entry app.log; parameters and case of the content type do not matter', async () => {
    const log = '{"msg":"a"}\n{"msg":"b"}\n';
    const gz = zlib.gzipSync(log);
    const read = await readBundle(body(gz), 'Application/GZIP; charset=binary', limits());
    expect(read.entries).toEqual([{ name: 'app.log', text: log }]);
    expect(read).toMatchObject({ compressedBytes: gz.length, uncompressedBytes: log.length });
    // Concatenated members (`cat a.gz b.gz`) are one log continued.
    const two = Buffer.concat([zlib.gzipSync('first\n'), zlib.gzipSync('second\n')]);
    expect((await readBundle(body(two), 'application/gzip', limits())).entries).toEqual([{ name: 'app.log', text: 'first\nsecond\n' }]);
  });

  test('directories, binary entries and nested archives are skipped, not expanded', async () => {
    const inner = await yazlZip([{ name: 'inner.log', data: 'secret inside' }]);
    const zip = craftZip([
      honest('logs/', '', { declaredSize: 0, data: Buffer.alloc(0), method: 0 }),
      honest('logs/app.log', 'fine\n'),
      honest('screenshot.png', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d])),
      honest('latin1.txt', Buffer.from('caf\xe9', 'latin1')),
      honest('inner.zip', inner),
      honest('inner.dat', zlib.gzipSync('hidden')),
    ]);
    const read = await readBundle(body(zip), 'application/zip', limits());
    expect(read.entries).toEqual([{ name: 'logs/app.log', text: 'fine\n' }]);
    expect(read.skipped).toEqual([
      { name: 'logs/', reason: 'directory' },
      { name: 'screenshot.png', reason: 'binary' },
      { name: 'latin1.txt', reason: 'binary' },
      { name: 'inner.zip', reason: 'nestedArchive' },
      { name: 'inner.dat', reason: 'nestedArchive' },
    ]);
    expect(JSON.stringify(read.entries)).not.toContain('inside');
  });

  test('names are normalised where harmless: backslashes, ./ and doubled slashes', async () => {
    const zip = craftZip([honest('logs\\win.log', 'a'), honest('./b.log', 'b'), honest('c//d/./e.log', 'c')]);
    const read = await readBundle(body(zip), 'application/zip', limits());
    expect(read.entries.map((e) => e.name)).toEqual(['logs/win.log', 'b.log', 'c/d/e.log']);
  });

  test('a seeded token comes out scrubbed, and the stored bundle does not hold it', async () => {
    const refresh = `prt_${crypto.randomBytes(12).toString('base64url')}.${crypto.randomBytes(32).toString('base64url')}`;
    const password = `pw-${crypto.randomBytes(9).toString('base64url')}`;
    const log = [
      '{"level":30,"msg":"app started","version":"1.2.3"}',
      JSON.stringify({ level: 20, msg: 'token refresh', body: `grant_type=refresh_token&refresh_token=${refresh}` }),
      `> Authorization: Bearer ${refresh}`,
      JSON.stringify({ level: 20, request: { username: 'ann', password } }),
      '{"level":30,"msg":"sync done","items":12}',
    ].join('\n');
    for (const [bytes, type] of [[await yazlZip([{ name: 'app.log', data: log }]), 'application/zip'], [zlib.gzipSync(log), 'application/gzip']] as const) {
      const read = await readBundle(body(bytes), type, limits());
      expect(read.entries[0]!.text).toContain(refresh); // read as uploaded: scrubbing is the next step
      const { entries, redactions } = scrubEntries(read.entries);
      expect(redactions).toBeGreaterThanOrEqual(3);
      const stored = await writeBundle([...entries, { name: 'device.json', text: '{"model":"iPhone15,2"}' }]);
      // Read the stored zip back, byte-level too: neither the token nor the password is anywhere in it.
      const back = await readBundle(body(stored), 'application/zip', limits());
      const all = back.entries.map((e) => e.text).join('\n');
      for (const secret of [refresh, refresh.split('.')[1]!, password]) {
        expect(all).not.toContain(secret);
        expect(stored.includes(Buffer.from(secret))).toBe(false);
      }
      expect(all).toContain(REDACTED);
      expect(all).toContain('"msg":"sync done"');
      expect(back.entries.map((e) => e.name)).toEqual(['app.log', 'device.json']);
    }
  });
});

describe('readBundle: refusals', () => {
  test('a content type other than gzip or zip is unsupportedType, and the body is not read', async () => {
    for (const type of ['text/plain', 'application/json', '', 'application/x-tar', 'application/zipx', 'multipart/form-data; boundary=x']) {
      let pulled = 0;
      const stream = new Readable({ read() { pulled++; this.push(Buffer.alloc(1024)); if (pulled > 3) this.push(null); } });
      expect(await refusal(stream, type)).toBe('unsupportedType');
    }
  });

  test('a body that is not what its type says is corrupt', async () => {
    const gz = zlib.gzipSync('x');
    const zip = await yazlZip([{ name: 'a.log', data: 'x' }]);
    expect(await refusal(gz, 'application/zip')).toBe('corrupt');
    expect(await refusal(zip, 'application/gzip')).toBe('corrupt');
    expect(await refusal(Buffer.from('plain text, not an archive at all'), 'application/gzip')).toBe('corrupt');
  });

  test('an upload over the compressed cap is tooLarge, and reading stops at the cap', async () => {
    let produced = 0;
    const endless = new Readable({
      read() {
        produced += 64 * 1024;
        this.push(crypto.randomBytes(64 * 1024));
      },
    });
    expect(await refusal(endless, 'application/zip', limits({ maxCompressedBytes: MiB }))).toBe('tooLarge');
    expect(produced).toBeLessThan(MiB + 512 * 1024);
    expect(endless.destroyed).toBe(true);
    // Exactly at the cap is fine; one byte over is not.
    const zip = await yazlZip([{ name: 'a.log', data: 'x'.repeat(1000) }]);
    await expect(readBundle(body(zip), 'application/zip', limits({ maxCompressedBytes: zip.length }))).resolves.toBeDefined();
    expect(await refusal(zip, 'application/zip', limits({ maxCompressedBytes: zip.length - 1 }))).toBe('tooLarge');
  });

  test('more entries than maxEntries is tooManyEntries', async () => {
    const files = Array.from({ length: 11 }, (_, i) => ({ name: `log${i}.txt`, data: `line ${i}` }));
    const zip = await yazlZip(files);
    expect(await refusal(zip, 'application/zip', limits({ maxEntries: 10 }))).toBe('tooManyEntries');
    expect((await readBundle(body(zip), 'application/zip', limits({ maxEntries: 11 }))).entries).toHaveLength(11);
  });

  test('names that escape, hide or mislead are badName', async () => {
    for (const name of [
      '../evil.log',
      'logs/../../evil.log',
      '..\\..\\evil.log',
      '/etc/passwd',
      '\\\\server\\share\\x.log',
      'C:\\Windows\\x.log',
      'c:x.log',
      'a\u0000b.log',
      'line\nbreak.log',
      'esc\u001b[31m.log',
      'c1\u0085.log',
      'report\u202egol.exe',
      '',
      '.',
      'x'.repeat(300),
    ]) {
      expect([name, await refusal(craftZip([honest(name, 'x')]), 'application/zip')]).toEqual([name, 'badName']);
    }
    // Not UTF-8, though flagged as UTF-8.
    expect(await refusal(craftZip([honest(Buffer.from([0x61, 0xff, 0x2e, 0x6c]), 'x')]), 'application/zip')).toBe('badName');
    // Two entries with one name (the second would overwrite the first).
    expect(await refusal(craftZip([honest('a.log', 'x'), honest('./a.log', 'y')]), 'application/zip')).toBe('badName');
    expect(() => sanitiseEntryName('fine/name.log')).not.toThrow();
  });

  test('an encrypted entry is refused', async () => {
    // Traditional PKWARE encryption (bit 0), and strong encryption (bit 6, which implies bit 0).
    expect(await refusal(craftZip([honest('a.log', 'ok'), honest('secret.log', 'x', { flags: 0x1 })]), 'application/zip')).toBe('encrypted');
    expect(await refusal(craftZip([honest('secret.log', 'x', { flags: 0x41 })]), 'application/zip')).toBe('encrypted');
  });

  test('an entry compressed with anything but store or deflate is unsupportedType', async () => {
    expect(await refusal(craftZip([honest('a.log', 'x', { method: 12 })]), 'application/zip')).toBe('unsupportedType');
  });

  test('truncated or damaged archives are corrupt', async () => {
    const log = crypto.randomBytes(20_000).toString('hex');
    const zip = await yazlZip([{ name: 'a.log', data: log }, { name: 'b.log', data: log }]);
    for (const cut of [10, 100, zip.length >> 1, zip.length - 30, zip.length - 1]) {
      expect([cut, await refusal(zip.subarray(0, cut), 'application/zip')]).toEqual([cut, 'corrupt']);
    }
    // A flipped byte inside the deflated data: zlib or the CRC notices.
    const damaged = Buffer.from(zip);
    damaged[200] = damaged[200]! ^ 0xff;
    expect(await refusal(damaged, 'application/zip')).toBe('corrupt');
    // A wrong CRC with the right data.
    expect(await refusal(craftZip([honest('a.log', 'hello', { crc: 1234 })]), 'application/zip')).toBe('corrupt');
    // Headers that declare more than the data holds.
    expect(await refusal(craftZip([honest('a.log', 'hello', { declaredSize: 50 })]), 'application/zip')).toBe('corrupt');

    const gz = zlib.gzipSync(log);
    for (const cut of [5, 20, gz.length >> 1, gz.length - 4]) {
      expect([cut, await refusal(gz.subarray(0, cut), 'application/gzip')]).toEqual([cut, 'corrupt']);
    }
    expect(await refusal(Buffer.concat([gz, Buffer.from('trailing garbage')]), 'application/gzip')).toBe('corrupt');
    const badCrc = Buffer.from(gz);
    badCrc[badCrc.length - 8] = badCrc[badCrc.length - 8]! ^ 0xff;
    expect(await refusal(badCrc, 'application/gzip')).toBe('corrupt');
  });

  test('an upload that fails while being read is corrupt', async () => {
    const failing = new Readable({ read() { this.destroy(new Error('connection reset')); } });
    expect(await refusal(failing, 'application/zip')).toBe('corrupt');
  });
});

describe('readBundle: bombs', () => {
  /** 1 GiB of zeros, deflated by yazl (node:zlib) into a zip of about 1 MB; and its parts, for crafted variants. */
  let bombZip: Buffer;
  let bombDeflated: Buffer;
  let bombCrc: number;

  beforeAll(async () => {
    const zeros = Buffer.alloc(MiB);
    let sent = 0;
    const source = new Readable({ read() { this.push(sent++ < 1024 ? zeros : null); } });
    const zip = new yazl.ZipFile();
    zip.addReadStreamLazy('zeros.log', (cb) => cb(null, source));
    zip.end();
    bombZip = await collect(zip.outputStream);
    // Take the deflated data and CRC back out of the central directory (APPNOTE 4.3.12).
    const cd = bombZip.readUInt32LE(bombZip.length - 22 + 16);
    bombCrc = bombZip.readUInt32LE(cd + 16);
    const compressedSize = bombZip.readUInt32LE(cd + 20);
    expect(bombZip.readUInt32LE(cd + 24)).toBe(GiB); // yazl wrote the truth
    const local = bombZip.readUInt32LE(cd + 42);
    const dataStart = local + 30 + bombZip.readUInt16LE(local + 26) + bombZip.readUInt16LE(local + 28);
    bombDeflated = bombZip.subarray(dataStart, dataStart + compressedSize);
  }, 120_000);

  const tight = limits({ maxEntryBytes: 8 * MiB, maxUncompressedBytes: 16 * MiB, maxRatio: 1000_000 });

  test('the 1 GB zip bomb is refused by its declared size before inflating', async () => {
    expect(bombZip.length).toBeLessThan(2 * MiB);
    const error = await readBundle(body(bombZip), 'application/zip', tight).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BundleRejected);
    expect(error).toMatchObject({ reason: 'tooLarge', message: expect.stringMatching(/declares 1073741824 bytes/) });
  });

  test('the 1 GB zip bomb whose headers lie stops at the per-entry cap, in bounded memory', async () => {
    const liar = craftZip([{ name: 'small.log', data: bombDeflated, crc: bombCrc, declaredSize: 1000 }]);
    let error: unknown;
    const growth = await rssGrowth(() => readBundle(body(liar), 'application/zip', tight).catch((err) => { error = err; }));
    expect(error).toBeInstanceOf(BundleRejected);
    expect(error).toMatchObject({ reason: 'tooLarge', message: expect.stringMatching(/entry "small.log" inflates to more than 8388608 bytes/) });
    expect(growth).toBeLessThan(64 * MiB);
  });

  test('entries that each stay under the entry cap stop at the bundle cap', async () => {
    // Three entries of 10 MiB of zeros each: the per-entry cap (12 MiB) lets each through, the
    // bundle cap (20 MiB) stops the third.
    const tenMiB = Buffer.alloc(10 * MiB);
    const part = { data: zlib.deflateRawSync(tenMiB), crc: zlib.crc32(tenMiB), declaredSize: tenMiB.length };
    const liars = craftZip(Array.from({ length: 3 }, (_, i) => ({ name: `part${i}.log`, ...part })));
    const l = limits({ maxEntryBytes: 12 * MiB, maxUncompressedBytes: 20 * MiB, maxRatio: 1000_000 });
    let error: unknown;
    const growth = await rssGrowth(() => readBundle(body(liars), 'application/zip', l).catch((err) => { error = err; }));
    expect(error).toBeInstanceOf(BundleRejected);
    expect((error as BundleRejected).reason).toBe('tooLarge');
    expect((error as BundleRejected).message).toMatch(/bundle inflates to more than/);
    expect(growth).toBeLessThan(64 * MiB);
  });

  test('the ratio limit stops a bomb before the byte caps do', async () => {
    const liar = craftZip([{ name: 'small.log', data: bombDeflated, crc: bombCrc, declaredSize: 1000 }]);
    const l = limits({ maxEntryBytes: GiB, maxUncompressedBytes: GiB, maxRatio: 10 });
    expect(await refusal(liar, 'application/zip', l)).toBe('compressionRatio');
  });

  test('the 1 GB gzip bomb stops at the cap (or the ratio), in bounded memory', async () => {
    // A gzip member around the same deflate stream (RFC 1952): header, data, CRC-32, size mod 2^32.
    const header = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    const trailer = Buffer.alloc(8);
    trailer.writeUInt32LE(bombCrc, 0);
    trailer.writeUInt32LE(GiB % 2 ** 32, 4);
    const gzipBomb = Buffer.concat([header, bombDeflated, trailer]);
    let reason: BundleRejectedReason | undefined;
    const growth = await rssGrowth(async () => (reason = await refusal(gzipBomb, 'application/gzip', tight)));
    expect(reason).toBe('tooLarge');
    expect(growth).toBeLessThan(64 * MiB);
    expect(await refusal(gzipBomb, 'application/gzip', limits({ maxRatio: 20 }))).toBe('compressionRatio');
  });

  test('with the default limits, each bomb is refused', async () => {
    const liar = craftZip([{ name: 'small.log', data: bombDeflated, crc: bombCrc, declaredSize: 1000 }]);
    expect(await refusal(bombZip, 'application/zip')).toBe('tooLarge');
    expect(['tooLarge', 'compressionRatio']).toContain(await refusal(liar, 'application/zip'));
  });
});

describe('writeBundle', () => {
  test('stores the entries as a zip that reads back the same, and refuses names it would not accept', async () => {
    const entries = [
      { name: 'app.log', text: 'one\ntwo\n' },
      { name: 'server/lines.ndjson', text: '{"msg":"ü"}\n' },
      { name: 'device.json', text: '{}' },
    ];
    const zip = await writeBundle(entries);
    expect(zip.subarray(0, 4).toString('latin1')).toBe('PK\x03\x04');
    expect((await readBundle(body(zip), 'application/zip', limits())).entries).toEqual(entries);
    expect(await writeBundle(entries)).toEqual(zip); // deterministic
    await expect(writeBundle([{ name: '../x', text: '' }])).rejects.toMatchObject({ reason: 'badName' });
    await expect(writeBundle([{ name: 'a', text: '' }, { name: 'a', text: '' }])).rejects.toMatchObject({ reason: 'badName' });
  });
});
