/**
 * Key material: the Ed25519 key that signs access tokens, and the server secret that keys HMACs (refresh-token
 * checksums, sync tokens). Each is read from its configured file (PIGEON_SIGNING_KEY_FILE, PIGEON_SECRET_FILE), so a
 * restart keeps every issued token valid. When none is configured: with the embedded SQLite store, a file in the data
 * directory, generated with mode 0600 on first start; with PostgreSQL, a row every node shares (the first node
 * creates it), so a token issued by one node is valid on all. Neither is ever logged.
 */
import crypto, { type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { exportJWK, calculateJwkThumbprint, type JWK } from 'jose';
import type { Config } from '../config';

export interface KeyMaterial {
  signingKey: KeyObject;
  publicKey: KeyObject;
  /** Key id: the RFC 7638 thumbprint of the public key, so a rotated key gets a new id automatically. */
  kid: string;
  publicJwk: JWK;
  serverSecret: Buffer;
}

/** Where unconfigured key material is kept for every node (the PostgreSQL store's `secrets`). */
export interface SharedKeyStore {
  /** The value stored as `name`, or `create()`'s, stored for every node, when there is none yet. */
  getOrCreate(name: string, create: () => string): Promise<string>;
}

/** The names of the key material in a `SharedKeyStore`. */
export const SHARED_KEY_NAMES = { signingKey: 'jwt-signing-key', serverSecret: 'server-secret' } as const;

function readOrCreate(file: string, create: () => string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const text = create();
    // 'wx': never overwrite a key another process created a moment ago.
    try {
      fs.writeFileSync(file, text, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      return fs.readFileSync(file, 'utf8');
    }
    return text;
  }
}

const newSigningKey = () => crypto.generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const newServerSecret = () => crypto.randomBytes(32).toString('hex') + '\n';

/**
 * The key material: configured files win; otherwise `shared` (every node's) when given, else files in the data
 * directory. Errors name where a bad key came from, never the key.
 */
export async function loadKeys(config: Pick<Config, 'dataDir' | 'signingKeyFile' | 'secretFile'>, shared?: SharedKeyStore): Promise<KeyMaterial> {
  const source = async (configured: string, defaultFile: string, name: string, create: () => string) => {
    if (configured || !shared) return { text: readOrCreate(configured || path.join(config.dataDir, 'keys', defaultFile), create), where: 'file' };
    return { text: await shared.getOrCreate(name, create), where: 'database' };
  };
  const pem = await source(config.signingKeyFile, 'jwt-signing-key.pem', SHARED_KEY_NAMES.signingKey, newSigningKey);
  let signingKey: KeyObject;
  try {
    signingKey = crypto.createPrivateKey(pem.text);
  } catch {
    throw new Error(`the access-token signing key (${pem.where === 'database' ? 'node_secrets in the database' : 'PIGEON_SIGNING_KEY_FILE'}) is not a PEM private key`);
  }
  if (signingKey.asymmetricKeyType !== 'ed25519') {
    throw new Error(`PIGEON_SIGNING_KEY_FILE: expected an Ed25519 private key, got ${signingKey.asymmetricKeyType}`);
  }
  const secretHex = (await source(config.secretFile, 'server-secret', SHARED_KEY_NAMES.serverSecret, newServerSecret)).text.trim();
  if (!/^[0-9a-f]{64,}$/i.test(secretHex)) {
    throw new Error('PIGEON_SECRET_FILE: expected at least 32 bytes as hex');
  }
  const publicKey = crypto.createPublicKey(signingKey);
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  return {
    signingKey,
    publicKey,
    kid,
    publicJwk: { ...publicJwk, kid, alg: 'EdDSA', use: 'sig' },
    serverSecret: Buffer.from(secretHex, 'hex'),
  };
}
