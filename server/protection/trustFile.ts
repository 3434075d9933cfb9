/**
 * PIGEON_SMIME_TRUST_FILE: the certificate authorities whose S/MIME signatures count as trusted, as a PEM bundle.
 * Read at start-up; a file that cannot be read or holds anything but certificates stops the server (ConfigError),
 * as a bad trust file of certificate sign-in does.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { ConfigError } from '../config';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

export function loadSmimeTrust(file: string): string[] {
  if (!file) return [];
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('PIGEON_SMIME_TRUST_FILE', `cannot read ${file}: ${(err as Error).message}`);
  }
  const anchors: string[] = [];
  for (const match of text.matchAll(PEM_BLOCK)) {
    if (match[1] !== 'CERTIFICATE') throw new ConfigError('PIGEON_SMIME_TRUST_FILE', `only certificates belong in it, found a ${match[1]}.`);
    try {
      new crypto.X509Certificate(match[0]);
    } catch (err) {
      throw new ConfigError('PIGEON_SMIME_TRUST_FILE', `certificate ${anchors.length + 1} cannot be read: ${(err as Error).message}`);
    }
    anchors.push(match[0]);
  }
  if (anchors.length === 0) throw new ConfigError('PIGEON_SMIME_TRUST_FILE', 'the file holds no PEM certificate.');
  return anchors;
}
