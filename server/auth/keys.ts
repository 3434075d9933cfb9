/**
 * Key material: the Ed25519 key that signs access tokens, and the server secret that keys HMACs (refresh-token
 * checksums, sync tokens). Both live in files (generated with mode 0600 on first start when not configured) so a
 * restart keeps every issued token valid; neither is ever logged.
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

export async function loadKeys(config: Pick<Config, 'dataDir' | 'signingKeyFile' | 'secretFile'>): Promise<KeyMaterial> {
  const keyFile = config.signingKeyFile || path.join(config.dataDir, 'keys', 'jwt-signing-key.pem');
  const secretFile = config.secretFile || path.join(config.dataDir, 'keys', 'server-secret');
  const pem = readOrCreate(keyFile, () =>
    crypto.generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  );
  const signingKey = crypto.createPrivateKey(pem);
  if (signingKey.asymmetricKeyType !== 'ed25519') {
    throw new Error(`PIGEON_SIGNING_KEY_FILE: expected an Ed25519 private key, got ${signingKey.asymmetricKeyType}`);
  }
  const secretHex = readOrCreate(secretFile, () => crypto.randomBytes(32).toString('hex') + '\n').trim();
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
