/**
 * Where message bytes should live: the measurement behind server/store/sqlite/content.ts.
 *
 *   A. in SQLite, in 256 KiB chunks, committed with the item in one transaction (what Pigeon does);
 *   B. as content-addressed files beside the database: write to a temporary name, fsync, rename, fsync the
 *      directory (the minimum for a file to survive a power cut), then commit the row that points at it.
 *
 * Both run with synchronous=FULL. Reported: commits per second for 10 KB messages (the common case: LMTP ingest),
 * the time to store one 20 MiB attachment, and read throughput of that attachment in 256 KiB pieces.
 *
 *   npx tsx bench/blobstore.ts [messages=500]
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { openDatabase } from '../server/store/sqlite/db';
import { BLOB_CHUNK_BYTES } from '../server/store/sqlite/content';

const MESSAGES = Number(process.argv[2] ?? 500);
const SMALL = 10 * 1024;
const LARGE = 20 * 1024 * 1024;

function freshDb(dir: string) {
  const db = openDatabase(path.join(dir, 'b.db'));
  db.exec(`CREATE TABLE blobs (id TEXT PRIMARY KEY, size INTEGER NOT NULL) STRICT;
    CREATE TABLE blob_chunks (blob_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, UNIQUE (blob_id, seq)) STRICT;
    CREATE TABLE items (id INTEGER PRIMARY KEY, blob_id TEXT NOT NULL) STRICT;`);
  return db;
}

interface BlobStore {
  store(bytes: Buffer): string;
  read(id: string, size: number): number;
  close(): void;
}

function inSqlite(dir: string): BlobStore {
  const db = freshDb(dir);
  const putBlob = db.prepare('INSERT INTO blobs (id, size) VALUES (?, ?) ON CONFLICT DO NOTHING');
  const putChunk = db.prepare('INSERT INTO blob_chunks (blob_id, seq, data) VALUES (?, ?, ?)');
  const putItem = db.prepare('INSERT INTO items (blob_id) VALUES (?)');
  const readChunk = db.prepare('SELECT data FROM blob_chunks WHERE blob_id = ? AND seq = ?').pluck();
  return {
    store: db.transaction((bytes: Buffer) => {
      const id = crypto.createHash('sha256').update(bytes).digest('hex');
      putBlob.run(id, bytes.length);
      for (let seq = 0, at = 0; at < bytes.length; seq++, at += BLOB_CHUNK_BYTES) putChunk.run(id, seq, bytes.subarray(at, at + BLOB_CHUNK_BYTES));
      putItem.run(id);
      return id;
    }),
    read(id: string, size: number): number {
      let n = 0;
      for (let seq = 0; seq * BLOB_CHUNK_BYTES < size; seq++) n += (readChunk.get(id, seq) as Buffer).length;
      return n;
    },
    close: () => void db.close(),
  };
}

function asFiles(dir: string): BlobStore {
  const db = freshDb(dir);
  const blobDir = path.join(dir, 'blobs');
  fs.mkdirSync(blobDir);
  const putItem = db.prepare('INSERT INTO items (blob_id) VALUES (?)');
  const putBlob = db.prepare('INSERT INTO blobs (id, size) VALUES (?, ?) ON CONFLICT DO NOTHING');
  const dirFd = fs.openSync(blobDir, 'r');
  return {
    store(bytes: Buffer): string {
      const id = crypto.createHash('sha256').update(bytes).digest('hex');
      const tmp = path.join(blobDir, `${id}.tmp`);
      const fd = fs.openSync(tmp, 'w');
      fs.writeSync(fd, bytes);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(tmp, path.join(blobDir, id));
      fs.fsyncSync(dirFd);
      db.transaction(() => {
        putBlob.run(id, bytes.length);
        putItem.run(id);
      })();
      return id;
    },
    read(id: string, size: number): number {
      const fd = fs.openSync(path.join(blobDir, id), 'r');
      const buf = Buffer.allocUnsafe(BLOB_CHUNK_BYTES);
      let n = 0;
      for (let at = 0; at < size; at += BLOB_CHUNK_BYTES) n += fs.readSync(fd, buf, 0, BLOB_CHUNK_BYTES, at);
      fs.closeSync(fd);
      return n;
    },
    close: () => {
      fs.closeSync(dirFd);
      db.close();
    },
  };
}

function measure(name: string, make: (dir: string) => BlobStore) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-blobbench-'));
  const s = make(dir);
  const small = Array.from({ length: MESSAGES }, (_, i) => crypto.randomBytes(SMALL - 8).toString('base64').slice(0, SMALL - 8) + String(i).padStart(8, '0'));
  let t = performance.now();
  for (const m of small) s.store(Buffer.from(m));
  const perSecond = MESSAGES / ((performance.now() - t) / 1000);
  const large = crypto.randomBytes(LARGE);
  t = performance.now();
  const id = s.store(large);
  const storeLargeMs = performance.now() - t;
  t = performance.now();
  const rounds = 5;
  for (let i = 0; i < rounds; i++) if (s.read(id, LARGE) !== LARGE) throw new Error('short read');
  const readMiBs = (rounds * LARGE) / 1048576 / ((performance.now() - t) / 1000);
  s.close();
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(`${name.padEnd(28)} ${perSecond.toFixed(0).padStart(6)} msgs/s (10 KB)   20 MiB stored in ${storeLargeMs.toFixed(0).padStart(5)} ms   read ${readMiBs.toFixed(0).padStart(5)} MiB/s`);
}

measure('A. SQLite, 256 KiB chunks', inSqlite);
measure('B. files + fsync + row', asFiles);
