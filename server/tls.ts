/**
 * TLS settings and the development certificate. The settings are Mozilla's "intermediate" profile exactly: TLS 1.2
 * and 1.3 only, the six ECDHE AEAD suites for 1.2 (Node's default list also allows CBC and static-RSA suites),
 * curves X25519, P-256, P-384, and the client's cipher preference (every suite on the list is strong).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { TlsOptions } from 'node:tls';
import selfsigned from 'selfsigned';
import type { Config } from './config';

export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
];

export const TLS13_CIPHERSUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'];

export const TLS_PROFILE: TlsOptions = {
  minVersion: 'TLSv1.2',
  maxVersion: 'TLSv1.3',
  ciphers: [...TLS13_CIPHERSUITES, ...TLS12_CIPHERS].join(':'),
  ecdhCurve: 'X25519:prime256v1:secp384r1',
  honorCipherOrder: false,
};

export const CERTS_DIR = path.resolve(__dirname, '../certs');

/**
 * The configured certificate, or a self-signed development one (EC P-256, SHA-256, for localhost, 127.0.0.1 and
 * ::1) generated into certs/ on first start and reused afterwards.
 */
export async function loadCertificate(
  config: Pick<Config, 'tlsCert' | 'tlsKey'>,
  certsDir = CERTS_DIR,
): Promise<{ cert: string | Buffer; key: string | Buffer; generated: boolean; certFile: string }> {
  if (config.tlsCert || config.tlsKey) {
    if (!config.tlsCert || !config.tlsKey) throw new Error('PIGEON_TLS_CERT and PIGEON_TLS_KEY must be set together');
    return { cert: fs.readFileSync(config.tlsCert), key: fs.readFileSync(config.tlsKey), generated: false, certFile: config.tlsCert };
  }
  const certFile = path.join(certsDir, 'dev-cert.pem');
  const keyFile = path.join(certsDir, 'dev-key.pem');
  if (fs.existsSync(certFile) && fs.existsSync(keyFile)) {
    return { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile), generated: false, certFile };
  }
  const notBefore = new Date();
  const notAfter = new Date(notBefore.getTime() + 365 * 86400_000);
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  });
  fs.mkdirSync(certsDir, { recursive: true });
  fs.writeFileSync(keyFile, pems.private, { mode: 0o600 });
  fs.writeFileSync(certFile, pems.cert);
  return { cert: pems.cert, key: pems.private, generated: true, certFile };
}
