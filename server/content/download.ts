/**
 * Sends a stored blob (an attachment, a raw message) as a download: validators, conditional requests, one byte range,
 * HEAD, and a body streamed from the store a chunk at a time, so a 50 MiB attachment never sits in memory and a
 * slow client holds back only what its socket buffers.
 *
 * Choices (also in the OpenAPI description of the download operations):
 * - `ETag` is the blob id (the SHA-256 of the bytes) in quotes: strong, and the same for every copy of the bytes.
 * - `Range` with one range answers 206; several ranges answer the whole body with 200 (no multipart/byteranges:
 *   apps resume downloads with one range); a range that starts beyond the end answers 416 with
 *   `Content-Range: bytes *\/<size>`; a header that is not a well-formed `bytes=` range set is ignored (RFC 9110
 *   §14.2) and the whole body is sent.
 * - `If-Range` must be the current ETag (strong comparison) for the range to apply; a date or another tag gets 200.
 * - `Cache-Control: no-transform` keeps the compression middleware off (it would drop `Content-Length` and gzip a
 *   206 body); the bytes are the stored bytes, always.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import rangeParser from 'range-parser';
import { create as contentDisposition } from 'content-disposition';
import { ApiError } from '../errors';
import type { Reply } from '../http/table';
import type { Store } from '../store/types';

/** Bytes per read: the SQLite store's chunk size, so each read is one row and the buffer handed on is that row's. */
export const READ_BYTES = 256 * 1024;

/** Downloads never change under their URL, but an item can be deleted: a day of private caching is plenty. */
const CACHE_CONTROL = 'private, max-age=86400, no-transform';

/**
 * A blob's bytes [start, end) as a stream. Each `_read` reads at most READ_BYTES (up to the next chunk boundary) and
 * pushes once the store answers; the stream asks again only after that push and only when its consumer has
 * drained, which is the backpressure (and keeps one read in flight at a time).
 */
export class BlobStream extends Readable {
  private at: number;

  constructor(
    private readonly blobs: Pick<Store['blobs'], 'read'>,
    /** The blob's owner: the mailbox whose item references it. */
    private readonly userId: string,
    private readonly blobId: string,
    start: number,
    private readonly end: number,
  ) {
    super({ highWaterMark: READ_BYTES });
    this.at = start;
  }

  override _read(): void {
    if (this.at >= this.end) {
      this.push(null);
      return;
    }
    const next = Math.min(this.end, (Math.floor(this.at / READ_BYTES) + 1) * READ_BYTES);
    this.blobs.read(this.userId, this.blobId, this.at, next).then(
      (bytes) => {
        if (this.destroyed) return; // the client went away while the store was reading
        this.at = next;
        this.push(bytes);
      },
      (err: unknown) => this.destroy(err as Error), // e.g. the item was deleted for good while its blob was being read
    );
  }
}

export interface Download {
  /** The mailbox the blob is read for (its item's owner). */
  userId: string;
  blobId: string;
  size: number;
  contentType: string;
  filename: string;
  disposition: 'attachment' | 'inline';
}

const TOKEN = "[a-z0-9!#$&^_.+-]{1,127}";
const SANE_TYPE = new RegExp(`^(application|audio|font|image|message|model|text|video)/${TOKEN}$`);

/** The media type as stored, when it is a plain `type/subtype`; anything else is served as opaque bytes. */
export function saneContentType(value: string): string {
  const type = value.trim().toLowerCase();
  return SANE_TYPE.test(type) ? type : 'application/octet-stream';
}

/** A file name fit for a header: no control characters or path separators, at most 200 characters. */
export function cleanFilename(name: string, fallback: string): string {
  const cleaned = name
    .replace(/[\u0000-\u001f\u007f-\u009f/\\]/g, '_')
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/^\.+/, '');
  return Array.from(cleaned).slice(0, 200).join('') || fallback;
}

/** RFC 6266 with an RFC 8187 `filename*`; the plain `filename` is an ASCII spelling (accents dropped, rest `_`). */
export function dispositionHeader(filename: string, type: 'attachment' | 'inline'): string {
  const ascii = filename.normalize('NFKD').replace(/[\u0300-\u036f]/g, '').replace(/[^\x20-\x7e]/g, '_');
  return contentDisposition(filename, { type, fallback: ascii });
}

/** Entity tags of an If-None-Match / If-Range value; `*` stays `*`. */
function entityTags(header: string): string[] {
  return header.match(/\*|(?:W\/)?"[^"]*"/g) ?? [];
}

/** If-None-Match: weak comparison (RFC 9110 §13.1.2); `*` matches anything that exists. */
export function noneMatchHits(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return entityTags(header).some((tag) => tag === '*' || tag.replace(/^W\//, '') === etag);
}

/** If-Range: only the current strong tag lets the range through (we send no Last-Modified, so a date never does). */
function ifRangeAllows(header: string | string[] | undefined, etag: string): boolean {
  return header === undefined || (typeof header === 'string' && header.trim() === etag);
}

/** `bytes=` followed by one or more `first-last`, `first-` or `-suffix` specs with first ≤ last. */
function wellFormedRange(header: string): boolean {
  const m = /^bytes=(.+)$/i.exec(header.trim());
  if (!m) return false;
  return m[1]!.split(',').every((spec) => {
    const r = /^\s*(?:(\d+)-(\d*)|-(\d+))\s*$/.exec(spec);
    if (!r) return false;
    return r[1] === undefined || r[2] === '' || Number(r[1]) <= Number(r[2]);
  });
}

/**
 * The answer to a download request: 304 when `If-None-Match` hits, 206 for one satisfiable range, else 200 with
 * the whole blob; a range that starts beyond the end throws the 416 problem. The bytes are a BlobStream, read as
 * the client takes them (the route-table adapter pipes it, sends no body on HEAD, and ends the connection if it
 * breaks midway).
 */
export function downloadReply(blobs: Pick<Store['blobs'], 'read'>, headers: IncomingHttpHeaders, d: Download): Reply {
  const etag = `"${d.blobId}"`;
  const validators = { ETag: etag, 'Accept-Ranges': 'bytes', 'Cache-Control': CACHE_CONTROL };

  if (noneMatchHits(headers['if-none-match'], etag)) return { status: 304, headers: validators };

  let start = 0;
  let end = d.size; // exclusive
  let partial: { 'Content-Range': string } | undefined;
  const range = headers.range;
  if (range !== undefined && wellFormedRange(range) && ifRangeAllows(headers['if-range'], etag)) {
    const parsed = rangeParser(d.size, range.trim().replace(/^bytes/i, 'bytes'), { combine: true });
    if (parsed === -1) {
      throw new ApiError(416, 'rangeNotSatisfiable', `The range is outside the ${d.size} bytes of this resource.`, {}, {
        'Content-Range': `bytes */${d.size}`,
        'Accept-Ranges': 'bytes',
      });
    }
    if (parsed !== -2 && parsed.length === 1) {
      start = parsed[0]!.start;
      end = parsed[0]!.end + 1;
      partial = { 'Content-Range': `bytes ${start}-${end - 1}/${d.size}` };
    }
  }

  return {
    status: partial ? 206 : 200,
    // Set as given (setHeader): express's res.set would append a charset to text/* types the stored bytes may lack.
    headers: {
      ...partial,
      ...validators,
      'Content-Type': d.contentType,
      'Content-Length': String(end - start),
      'Content-Disposition': dispositionHeader(d.filename, d.disposition),
    },
    // Nothing is read until the adapter pipes it; the pipe destroys it when the client goes away.
    stream: new BlobStream(blobs, d.userId, d.blobId, start, end),
  };
}
