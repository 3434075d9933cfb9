/**
 * The pages' static files, read once at start-up: our own modules and stylesheet from server/web/assets/ and the
 * one vendor module, htm's standalone Preact build (Preact, its hooks and htm in one browser-ready ES module, no bare
 * imports), straight from node_modules. No build step.
 *
 * Caching: the URLs are not content-hashed (the shell names them plainly), so each answer carries a strong ETag and
 * `Cache-Control: no-cache`: the browser keeps the file and revalidates it (a 304 of no body) on each load, so a
 * deploy is seen at once and an unchanged file costs one small round trip.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { RequestHandler } from 'express';

/** server/web/assets, whether this module runs from server/ (tsx) or dist/ (the build): the files are not compiled. */
export const ASSETS_DIR = path.resolve(__dirname, '..', '..', 'server', 'web', 'assets');
const VENDOR_FILE = path.join(path.dirname(require.resolve('htm')), '..', 'preact', 'standalone.mjs');

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

const TYPES: Record<string, string> = { '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

function asset(file: string): Asset {
  const body = fs.readFileSync(file);
  return { body, type: TYPES[path.extname(file)]!, etag: `"${crypto.createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
}

/** name (as under /web/assets/) → file, for every file we serve; nothing else under that path answers. */
export function loadAssets(): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of fs.readdirSync(ASSETS_DIR)) {
    if (TYPES[path.extname(name)]) assets.set(name, asset(path.join(ASSETS_DIR, name)));
  }
  assets.set('vendor/preact-htm.mjs', asset(VENDOR_FILE));
  return assets;
}

export function serveAssets(assets: Map<string, Asset>): RequestHandler {
  return (req, res, next) => {
    const found = assets.get(req.path.replace(/^\/+/, ''));
    if (!found) return next();
    res.setHeader('Cache-Control', 'no-cache');
    res.setHeader('ETag', found.etag);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    if (req.headers['if-none-match'] === found.etag) return void res.status(304).end();
    res.type(found.type).send(found.body);
  };
}
