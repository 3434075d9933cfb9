#!/usr/bin/env node
/**
 * A stand-in for a company's OIDC identity provider (Keycloak, Entra ID), run as its own process with its own keys,
 * so the mailbox API's external-issuer support is tested against something it shares nothing with.
 *
 *   node tests/helpers/external-idp.js
 *
 * Listens on 127.0.0.1 on a free port and prints `{"url": "http://127.0.0.1:<port>"}` as its first stdout line; the
 * issuer is that URL. It exits on SIGTERM/SIGINT and, with --exit-with-stdin, when its stdin closes (the parent that
 * started it went away).
 *
 *   GET  /.well-known/openid-configuration   discovery (issuer, jwks_uri)
 *   GET  /jwks                               the public keys: current RSA, EC P-256 and Ed25519 keys, plus retained
 *                                            old RSA keys
 *   POST /mint      {claims?, alg?, kid?, expiresIn?, audience?, issuer?, typ?, omit?, secret?}
 *                   → {token}. alg: RS256 (default), PS256, ES256, EdDSA; `HS256` signs with `secret` (default: the
 *                   current RSA public key as PEM: the classic alg-confusion forgery); `none` leaves it unsigned.
 *                   `kid` replaces the header's key id; `omit` lists claims to leave out (e.g. ["exp"]).
 *   POST /rotate    {keep?: boolean} → {kid, previous}: a new RSA key signs from now on; the old one stays in the
 *                   JWKS only with keep: true.
 *   POST /settings  {outage?: boolean, discoveryIssuer?: string|null} → {}: outage makes discovery and JWKS answer
 *                   503; discoveryIssuer makes the discovery document name another issuer.
 *   GET  /stats     → {jwksFetches, discoveryFetches}
 *
 * Plain JavaScript, so it starts without a TypeScript compiler.
 */
'use strict';

const crypto = require('node:crypto');
const http = require('node:http');
const jose = require('jose');

const state = {
  url: '',
  outage: false,
  discoveryIssuer: null,
  stats: { jwksFetches: 0, discoveryFetches: 0 },
  /** RSA keys: the first signs, the rest are retired but still published. */
  rsa: [],
  ec: undefined,
  ed: undefined,
};

function newKey(type, options) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync(type, options);
  return { kid: crypto.randomBytes(9).toString('base64url'), privateKey, publicKey };
}

const newRsaKey = () => newKey('rsa', { modulusLength: 2048 });
state.rsa.push(newRsaKey());
state.ec = newKey('ec', { namedCurve: 'P-256' });
state.ed = newKey('ed25519');

function publicJwk(key, alg) {
  return { ...key.publicKey.export({ format: 'jwk' }), kid: key.kid, use: 'sig', alg };
}

function jwks() {
  return {
    keys: [
      ...state.rsa.map((k) => publicJwk(k)), // RS256 and PS256 both: no alg pinned
      publicJwk(state.ec, 'ES256'),
      publicJwk(state.ed, 'EdDSA'),
    ],
  };
}

function signingKey(alg) {
  if (alg === 'RS256' || alg === 'PS256') return state.rsa[0];
  if (alg === 'ES256') return state.ec;
  if (alg === 'EdDSA') return state.ed;
  throw new Error(`cannot sign with ${alg}`);
}

const b64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

async function mint(body) {
  const alg = body.alg || 'RS256';
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: body.issuer || state.url,
    aud: body.audience === undefined ? 'pigeon' : body.audience,
    iat: now,
    exp: now + (body.expiresIn === undefined ? 300 : body.expiresIn),
    jti: crypto.randomUUID(),
    ...(body.claims || {}),
  };
  for (const name of body.omit || []) delete claims[name];
  const header = { alg, typ: body.typ === undefined ? 'JWT' : body.typ };
  if (header.typ === null) delete header.typ;

  if (alg === 'none') return `${b64url(header)}.${b64url(claims)}.`;
  if (alg.startsWith('HS')) {
    // A verifier that lets the token choose the algorithm would check this HMAC with the RSA public key's bytes.
    const secret = body.secret !== undefined ? body.secret : state.rsa[0].publicKey.export({ format: 'pem', type: 'spki' });
    if (body.kid !== undefined) header.kid = body.kid;
    else header.kid = state.rsa[0].kid;
    return new jose.SignJWT(claims).setProtectedHeader(header).sign(Buffer.from(secret));
  }
  const key = signingKey(alg);
  header.kid = body.kid !== undefined ? body.kid : key.kid;
  if (header.kid === null) delete header.kid;
  return new jose.SignJWT(claims).setProtectedHeader(header).sign(key.privateKey);
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (part) => parts.push(part));
    req.on('end', () => {
      const text = Buffer.concat(parts).toString('utf8');
      try {
        resolve(text ? JSON.parse(text) : {});
      } catch (err) {
        reject(err);
      }
    });
    req.on('error', reject);
  });
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function handle(req, res) {
  const path = new URL(req.url, state.url).pathname;
  if (req.method === 'GET' && path === '/.well-known/openid-configuration') {
    state.stats.discoveryFetches++;
    if (state.outage) return send(res, 503, { error: 'outage' });
    return send(res, 200, {
      issuer: state.discoveryIssuer || state.url,
      jwks_uri: `${state.url}/jwks`,
      id_token_signing_alg_values_supported: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    });
  }
  if (req.method === 'GET' && path === '/jwks') {
    state.stats.jwksFetches++;
    if (state.outage) return send(res, 503, { error: 'outage' });
    return send(res, 200, jwks());
  }
  if (req.method === 'GET' && path === '/stats') return send(res, 200, state.stats);
  if (req.method === 'POST' && path === '/mint') return send(res, 200, { token: await mint(await readJson(req)) });
  if (req.method === 'POST' && path === '/rotate') {
    const body = await readJson(req);
    const previous = state.rsa[0];
    const next = newRsaKey();
    state.rsa = body.keep ? [next, ...state.rsa] : [next];
    return send(res, 200, { kid: next.kid, previous: previous.kid });
  }
  if (req.method === 'POST' && path === '/settings') {
    const body = await readJson(req);
    if (body.outage !== undefined) state.outage = Boolean(body.outage);
    if (body.discoveryIssuer !== undefined) state.discoveryIssuer = body.discoveryIssuer;
    return send(res, 200, {});
  }
  return send(res, 404, { error: 'not found' });
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => send(res, 400, { error: String(err && err.message) }));
});

server.listen(0, '127.0.0.1', () => {
  state.url = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`${JSON.stringify({ url: state.url })}\n`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (process.argv.includes('--exit-with-stdin')) {
  // The parent holds our stdin: when it goes (a killed test worker, say), so do we.
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
