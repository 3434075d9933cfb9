/**
 * `GET /v1/events` read as it arrives, for the end-to-end tests that watch push over real HTTPS: the SSE blocks
 * received so far (each with its arrival time), and waits for a block, an event or the end of the stream.
 */
import https from 'node:https';
import type http from 'node:http';
import type { RunningServer } from './server';

export interface Block {
  text: string;
  at: number;
}

export function readEventStream(server: Pick<RunningServer, 'port' | 'cert'>, headers: Record<string, string>, label = '') {
  const blocks: Block[] = [];
  let buffer = '';
  let endedAt: number | undefined;
  let wake = () => undefined as void;
  let request: http.ClientRequest | undefined;
  const ready = new Promise<number>((resolve, reject) => {
    request = https.get({ host: '127.0.0.1', port: server.port, path: '/v1/events', headers, ca: server.cert, servername: 'localhost', agent: false }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          blocks.push({ text: buffer.slice(0, cut), at: Date.now() });
          buffer = buffer.slice(cut + 2);
        }
        wake();
      });
      res.on('close', () => {
        endedAt = Date.now();
        wake();
      });
      resolve(res.statusCode!);
    });
    request.once('error', reject);
  });
  /** Resolves with `check()`'s first defined value, re-checked whenever something arrives; rejects after `ms`. */
  const until = <T>(check: () => T | undefined, ms: number, what: string) =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms${label}; got ${JSON.stringify(blocks)}`)), ms);
      const test = () => {
        const v = check();
        if (v !== undefined) {
          clearTimeout(timer);
          resolve(v);
        } else wake = test;
      };
      test();
    });
  const events = () => blocks.filter((block) => block.text.includes('event: changed'));
  return {
    /** The response's status. */
    ready,
    blocks,
    events,
    until,
    /** The `n`-th `changed` event (from 0). */
    event: (n: number, ms = 3000) => until(() => events()[n], ms, `event #${n}`),
    /** When the server ended the stream. */
    ended: (ms: number) => until(() => endedAt, ms, 'end of stream'),
    close: () => request?.destroy(),
  };
}
