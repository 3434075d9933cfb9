/**
 * mboxrd: the mbox variant that survives a round trip. Every message starts with a `From ` separator line and ends
 * with an empty line; inside a message any line that matches /^>*From / gets one more `>` when written and loses one
 * when read. Unlike mboxo (which only quotes `From `), mboxrd can tell a body line `>From x` from a quoted `From x`,
 * so the bytes a reader returns are the bytes the writer was given.
 *
 * Files on disk use LF line endings (what mbox tools expect); messages leave here as RFC 5322 text with CRLF, the form
 * stored as an item's raw MIME and served to clients. Work is done on `latin1` strings because that mapping is one
 * byte to one char and back: 8-bit bytes in a message pass through unchanged.
 */

/** The input is not an mbox file (it does not start with a separator line). */
export class MboxFormatError extends Error {}

const SEPARATOR = /^From /;
const QUOTED_FROM = /^>+From /;
const NEEDS_QUOTING = /^>*From /;

/**
 * The line-by-line state of a reader: feed it the file's lines (without their line ending) and it hands back each
 * message once the next separator (or the end) shows where it stops. Shared by the in-memory and the streaming reader
 * so they split every file the same way.
 */
function mboxSplitter() {
  let current: string[] | null = null;
  const finish = (): Buffer | undefined => {
    if (!current) return undefined;
    const lines = current;
    current = null;
    // The writer ends every message with one empty line; it belongs to the file format, not to the message.
    if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    return Buffer.from(lines.length ? lines.join('\r\n') + '\r\n' : '', 'latin1');
  };
  return {
    line(line: string): Buffer | undefined {
      if (SEPARATOR.test(line)) {
        const done = finish();
        current = [];
        return done;
      }
      if (current) current.push(QUOTED_FROM.test(line) ? line.slice(1) : line);
      else if (line.trim() !== '') throw new MboxFormatError('not an mbox file: the first non-empty line is not a "From " separator');
      return undefined;
    },
    end: finish,
  };
}

/**
 * Splits an mboxrd file into its raw messages (CRLF line endings, `>From ` un-quoted). Text before the first separator
 * is refused rather than dropped: a file that does not start with `From ` is not an mbox, and silently importing
 * nothing would hide that.
 */
export function mboxMessages(buf: Buffer): Buffer[] {
  const lines = buf.toString('latin1').split(/\r?\n/);
  // A file ending in a newline splits into a last empty string that is not a line of its own.
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();

  const messages: Buffer[] = [];
  const splitter = mboxSplitter();
  for (const line of lines) {
    const message = splitter.line(line);
    if (message) messages.push(message);
  }
  const last = splitter.end();
  if (last) messages.push(last);
  return messages;
}

/**
 * The same split as `mboxMessages`, for files too big to hold in memory: reads the file in chunks (a read stream) and
 * yields each message as soon as the next separator is seen, so memory is bounded by the largest message, not by the
 * file. A chunk may end anywhere, even between a CR and its LF: only complete lines are handed on.
 */
export async function* mboxMessageStream(chunks: AsyncIterable<Buffer | string>): AsyncGenerator<Buffer> {
  const splitter = mboxSplitter();
  let partial = '';
  for await (const chunk of chunks) {
    const lines = (partial + (typeof chunk === 'string' ? chunk : chunk.toString('latin1'))).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      const message = splitter.line(line.endsWith('\r') ? line.slice(0, -1) : line);
      if (message) yield message;
    }
  }
  // A last line without a newline is still a line (the in-memory reader sees it the same way).
  if (partial !== '') {
    const message = splitter.line(partial);
    if (message) yield message;
  }
  const last = splitter.end();
  if (last) yield last;
}

/**
 * Writes one message as an mboxrd entry: separator, quoted body lines (LF), and the trailing empty line. `envelopeFrom`
 * and `date` only fill the separator line (`From sender asctime-date`), which readers ignore.
 */
export function mboxEntry(raw: Buffer, envelopeFrom: string, date: Date): Buffer {
  const lines = raw.toString('latin1').split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const quoted = lines.map((l) => (NEEDS_QUOTING.test(l) ? '>' + l : l));
  const sender = envelopeFrom.replace(/\s+/g, '') || 'MAILER-DAEMON';
  return Buffer.from(`From ${sender} ${asctime(date)}\n${quoted.join('\n')}\n\n`, 'latin1');
}

/** `Thu Jan  1 00:00:00 2026`, the classic separator-line date (always UTC here, so output does not depend on TZ). */
function asctime(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p2 = (n: number): string => String(n).padStart(2, '0');
  return (
    `${days[d.getUTCDay()]} ${months[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ` +
    `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} ${d.getUTCFullYear()}`
  );
}
