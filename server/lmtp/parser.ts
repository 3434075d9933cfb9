/**
 * Two repairs to smtp-server's command parser (`SMTPStream`, 3.21.x), installed on each LMTP connection's parser.
 * Both check that the parser looks as expected and leave it alone otherwise.
 *
 * `resumeWithoutLosingTheNext`: `continue()` resumes the commands a client pipelined behind a message's final dot
 * by calling the saved continuation and only then clearing it. A continuation that runs a whole next transaction
 * synchronously (MAIL, RCPT, DATA and its final dot) saves the next continuation inside that call, and `continue()`
 * then wipes it: every command after that message was never read or answered (issue 12, defect 7). Here the
 * continuation is cleared before it runs. (server.ts also answers MAIL and RCPT on a later turn, which keeps the
 * chain asynchronous even where this repair is not installed.)
 *
 * `feedDataWithoutCopies`: in DATA mode the parser keeps the last 4 bytes of every chunk back (a final dot or an
 * escape dot can straddle two chunks) and starts each next chunk with `Buffer.concat([those 4 bytes, chunk])`:
 * every byte of every message is copied once more, in a fresh ~64 KiB buffer per socket read (1,600 copies, 100 MB,
 * for a 100 MB message). When the carried bytes and the first two bytes of the chunk hold no dot, nothing that
 * straddles the seam can be a final dot or an escape dot: the carried bytes are plain content. They are then passed
 * on as they are and the chunk is handed to the library's own code with nothing carried, so it scans and slices the
 * chunk in place; the result is byte for byte the library's (only the seam goes out as a separate 1–4 byte piece).
 * Any other chunk takes the library's path unchanged.
 */
import type { SMTPStream } from 'smtp-server/lib/smtp-stream';

const DOT = 0x2e;

/** Clears the saved continuation before running it, so one saved while it runs is kept. */
export function resumeWithoutLosingTheNext(parser: SMTPStream | false | undefined): void {
  if (!parser || typeof parser.continue !== 'function' || !('_continueCallback' in parser)) return;
  parser.continue = function resume(this: SMTPStream) {
    const next = this._continueCallback;
    if (typeof next === 'function') {
      this._continueCallback = false;
      next();
    } else {
      // The message has not reached its final dot yet: resume as soon as it does.
      this._continueCallback = true;
    }
  };
}

/** Installs the copy-free data path on one parser. */
export function feedDataWithoutCopies(parser: SMTPStream | false | undefined): void {
  if (!parser) return;
  const original = parser._feedDataStream;
  if (typeof original !== 'function' || typeof parser._countDataBytes !== 'function' || !('_lastBytes' in parser) || !('_atDataStart' in parser)) return;
  parser._feedDataStream = function feedDataStream(this: SMTPStream, chunk: Buffer, done: (err?: Error | null) => void) {
    const carried = this._lastBytes;
    const out = this._dataStream;
    if (carried && carried.length && out && !this._atDataStart && chunk.length > 4 && chunk[0] !== DOT && chunk[1] !== DOT && !carried.includes(DOT)) {
      this._lastBytes = false;
      this._countDataBytes(carried.length);
      // At most 4 bytes past the high-water mark: the library's write of the chunk that follows waits for 'drain'.
      if (out.writable) out.write(carried);
    }
    return original.call(this, chunk, done);
  };
}
