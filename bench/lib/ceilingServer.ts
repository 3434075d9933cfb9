/**
 * The ceiling: what the same machine can do with no Pigeon in the way. A bare `node:https` server started with the
 * very listener Pigeon uses (server/httpsServer.ts: same TLS profile, certificate, keep-alive and timeouts) that
 * answers each request with the response bytes Pigeon sent for it, recorded by the runner just before. No
 * framework, no auth, no database: the difference to Pigeon is exactly what Pigeon adds.
 *
 * Also, for the push and ingest scenarios: event streams that stay open (RSS per idle stream), an LMTP sink (the
 * same smtp-server library, messages read and dropped), and a trigger that writes the recorded event to a stream as
 * soon as a delivery arrives (the floor of delivery → event latency).
 *
 * Runs as a child process of the runner (IPC for routes and readiness), like Pigeon runs as its own process.
 */
import fs from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { SMTPServer } from 'smtp-server';
import { listenHttps } from '../../server/httpsServer';
import { loadConfig } from '../../server/config';

export interface CeilingRoute {
  /** `METHOD /path?query`, exactly as the client sends it. */
  key: string;
  status: number;
  headers: Array<[string, string]>;
  body: string; // base64
  /** Leave the response open after the body (an event stream). */
  stream?: boolean;
  /** After answering, write the event to the streams of the `x-bench-stream` named in the request. */
  trigger?: boolean;
}

export type CeilingMessage = { type: 'routes'; id: number; routes: CeilingRoute[] } | { type: 'event'; id: number; bytes: string };

interface Route extends Omit<CeilingRoute, 'body'> {
  body: Buffer;
}

const routes = new Map<string, Route>();
const streams = new Map<string, Set<ServerResponse>>();
let event = Buffer.from('event: changed\ndata: {}\n\n');

function notify(streamKey: string | undefined): void {
  if (!streamKey) return;
  for (const res of streams.get(streamKey) ?? []) res.write(event);
}

function answer(route: Route, req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(route.status, route.headers.flat());
  if (!route.stream) {
    res.end(route.body);
    if (route.trigger) notify(req.headers['x-bench-stream'] as string | undefined);
    return;
  }
  res.write(route.body);
  const key = String(req.headers['x-bench-stream'] ?? '');
  let set = streams.get(key);
  if (!set) streams.set(key, (set = new Set()));
  set.add(res);
  res.once('close', () => set!.delete(res));
}

function handler(req: IncomingMessage, res: ServerResponse): void {
  const route = routes.get(`${req.method} ${req.url}`);
  // Read the body as Pigeon does before it answers; then answer with the recorded bytes.
  req.on('data', () => undefined);
  req.once('end', () => {
    if (route) answer(route, req, res);
    else res.writeHead(404, { 'content-type': 'text/plain' }).end('no recorded response\n');
  });
}

async function main(): Promise<void> {
  const config = loadConfig({});
  const tls = { cert: fs.readFileSync(process.env.BENCH_CEILING_CERT!), key: fs.readFileSync(process.env.BENCH_CEILING_KEY!) };
  const https = await listenHttps(handler, tls, { ...config, host: '127.0.0.1', port: 0 });

  // The LMTP sink: every message is read to its end and acknowledged; a recipient `<stream key>@...` gets the event.
  const lmtp = new SMTPServer({
    lmtp: true,
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    size: config.maxMessageBytes,
    logger: false,
    onData(stream, session, callback) {
      const keys = session.envelope.rcptTo.map((r) => r.address.split('@')[0]); // the envelope is reset by callback()
      stream.on('data', () => undefined);
      stream.once('end', () => {
        callback();
        for (const key of keys) notify(key);
      });
    },
  });
  await new Promise<void>((resolve) => lmtp.listen(0, '127.0.0.1', resolve));
  const lmtpAddress = lmtp.server.address();

  process.on('message', (msg: CeilingMessage) => {
    if (msg.type === 'routes') {
      for (const r of msg.routes) routes.set(r.key, { ...r, body: Buffer.from(r.body, 'base64') });
    } else if (msg.type === 'event') {
      event = Buffer.from(msg.bytes, 'base64');
    }
    process.send!({ type: 'ok', id: msg.id });
  });
  process.on('disconnect', () => process.exit(0));
  process.send!({
    type: 'ready',
    port: https.port,
    lmtpPort: typeof lmtpAddress === 'object' && lmtpAddress ? lmtpAddress.port : 0,
    readyMs: performance.now(),
  });
}

main().catch((err) => {
  process.stderr.write(`ceiling: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
