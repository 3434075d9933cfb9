/**
 * The HTTPS listener and its graceful drain. There is no plain-HTTP listener for the API. The certificate sign-in
 * listener is one too, with the client-certificate options added (`extraTls`).
 */
import https from 'node:https';
import type { Socket } from 'node:net';
import type { TlsOptions } from 'node:tls';
import type { RequestListener } from 'node:http';
import type { Config } from './config';
import { TLS_PROFILE } from './tls';
import { slowBodyGuard } from './http/overload';

export interface HttpsHandle {
  server: https.Server;
  port: number;
  /** Stops accepting, lets in-flight requests finish (up to `deadlineMs`), then cuts what is left. */
  drain(deadlineMs: number): Promise<{ forced: boolean }>;
}

export async function listenHttps(
  handler: RequestListener,
  tls: { cert: string | Buffer; key: string | Buffer },
  config: Pick<Config, 'host' | 'port' | 'headersTimeout' | 'requestTimeout' | 'keepAliveTimeout' | 'bodyMinRate'>,
  extraTls: TlsOptions = {},
): Promise<HttpsHandle> {
  const server = https.createServer(
    {
      ...TLS_PROFILE,
      cert: tls.cert,
      key: tls.key,
      ...extraTls,
      handshakeTimeout: 10_000,
      // Node enforces headersTimeout only at this sweep (default 30 s): sweep every 2 s so slow-header clients
      // are reaped within headersTimeout + 2 s.
      connectionsCheckingInterval: 2_000,
      headersTimeout: config.headersTimeout * 1000,
      requestTimeout: config.requestTimeout * 1000,
      keepAliveTimeout: config.keepAliveTimeout * 1000,
    },
    handler,
  );
  server.headersTimeout = config.headersTimeout * 1000;
  server.requestTimeout = config.requestTimeout * 1000;
  server.keepAliveTimeout = config.keepAliveTimeout * 1000;

  let inFlight = 0;
  let draining = false;
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const guardBody = slowBodyGuard({ minBytesPerSecond: config.bodyMinRate, graceMs: 10_000, checkEveryMs: 5_000 });
  server.on('request', (req, res) => {
    guardBody(req, res);
    inFlight++;
    if (draining) res.setHeader('Connection', 'close');
    res.once('close', () => {
      inFlight--;
      if (draining) server.closeIdleConnections();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;

  return {
    server,
    port,
    drain(deadlineMs) {
      draining = true;
      return new Promise((resolve) => {
        let forced = false;
        const hard = setTimeout(() => {
          forced = true;
          server.closeAllConnections();
          for (const s of sockets) s.destroy();
        }, deadlineMs);
        hard.unref();
        server.close(() => {
          clearTimeout(hard);
          resolve({ forced });
        });
        // Idle keep-alive sockets would hold close() open until keepAliveTimeout; busy ones close as they finish.
        server.closeIdleConnections();
        if (inFlight === 0) server.closeIdleConnections();
      });
    },
  };
}
