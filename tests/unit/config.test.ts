import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, ConfigError, configMarkdown, parseDuration, redactedConfig } from '../../server/config';

test('defaults', () => {
  const c = loadConfig({});
  expect(c).toMatchObject({ host: 'localhost', port: 8443, demo: true, accessTokenTtl: 3600, refreshTokenTtl: 90 * 86400, changeHistory: 30 * 86400 });
  expect(path.isAbsolute(c.dataDir)).toBe(true);
});

test('values are parsed by type', () => {
  const c = loadConfig({ PIGEON_PORT: '9443', PIGEON_DEMO: 'off', PIGEON_ACCESS_TOKEN_TTL: '15m', PIGEON_OAUTH_CLIENTS: 'a, b,,c' });
  expect(c).toMatchObject({ port: 9443, demo: false, accessTokenTtl: 900, oauthClients: ['a', 'b', 'c'] });
});

test.each([
  ['PIGEON_PORT', 'eighty'],
  ['PIGEON_PORT', '70000'],
  ['PIGEON_DEMO', 'maybe'],
  ['PIGEON_LOG_LEVEL', 'loud'],
  ['PIGEON_ACCESS_TOKEN_TTL', '1y'],
  ['PIGEON_ACCESS_TOKEN_TTL', '10s'],
  ['PIGEON_PROT', '1'],
])('%s=%s stops start-up naming the key', (env, value) => {
  expect(() => loadConfig({ [env]: value })).toThrow(ConfigError);
  expect(() => loadConfig({ [env]: value })).toThrow(new RegExp(`^${env}: `));
});

test('a bad secret value is not echoed in the error', () => {
  // No secret is typed as anything but a string today; the masking is checked through redactedConfig.
  const c = loadConfig({ PIGEON_TLS_KEY: '/secret/key.pem' });
  expect(redactedConfig(c).tlsKey).toBe('[redacted]');
  expect(JSON.stringify(redactedConfig(c))).not.toContain('/secret/key.pem');
});

test('parseDuration', () => {
  expect(parseDuration('90d')).toBe(7776000);
  expect(parseDuration('30')).toBe(30);
  expect(parseDuration('1.5h')).toBeUndefined();
});

test('the README config table is the one the code generates', () => {
  const readme = fs.readFileSync(path.resolve(__dirname, '../../README.md'), 'utf8');
  const table = /<!-- config-table:start -->\n([\s\S]*?)\n<!-- config-table:end -->/.exec(readme)?.[1];
  expect(table).toBe(configMarkdown());
});

test('metrics: own listener on loopback by default, port and token validated, the token a secret', () => {
  expect(loadConfig({})).toMatchObject({ metricsEnabled: true, metricsHost: '127.0.0.1', metricsPort: 9464, metricsToken: '' });
  expect(loadConfig({ PIGEON_METRICS_PORT: '0', PIGEON_METRICS_ENABLED: 'off', PIGEON_METRICS_HOST: '::1' })).toMatchObject({
    metricsPort: 0,
    metricsEnabled: false,
    metricsHost: '::1',
  });
  for (const [env, value] of [
    ['PIGEON_METRICS_PORT', '65536'],
    ['PIGEON_METRICS_PORT', 'metrics'],
    ['PIGEON_METRICS_ENABLED', 'sometimes'],
    ['PIGEON_METRICS_TOKEN', 'short-token'],
    ['PIGEON_METRICS_TOKEN', 'has spaces in it, sixteen+'],
  ] as const) {
    expect(() => loadConfig({ [env]: value })).toThrow(new RegExp(`^${env}: `));
  }
  // A refused token is not echoed in the error; an accepted one is masked wherever the config is logged.
  let refused = '';
  try {
    loadConfig({ PIGEON_METRICS_TOKEN: 'short-token' });
  } catch (err) {
    refused = (err as Error).message;
  }
  expect(refused).toMatch(/^PIGEON_METRICS_TOKEN: /);
  expect(refused).not.toContain('short-token');
  const token = 'scrape-token-0123456789abcdef';
  const c = loadConfig({ PIGEON_METRICS_TOKEN: token });
  expect(c.metricsToken).toBe(token);
  expect(redactedConfig(c).metricsToken).toBe('[redacted]');
  expect(JSON.stringify(redactedConfig(c))).not.toContain(token);
});

test('background push: defaults, the VAPID pair both or neither and well-formed, APNs ids with the key, https origins', () => {
  expect(loadConfig({})).toMatchObject({
    pushEnabled: true,
    pushVapidSubject: '',
    pushVapidPublicKey: '',
    pushApnsOrigin: 'https://api.push.apple.com',
    pushApnsSandboxOrigin: 'https://api.sandbox.push.apple.com',
    pushFcmOrigin: 'https://fcm.googleapis.com',
    pushRatePerDevice: 30,
    pushRateGlobal: 500,
    pushAllowPrivateEndpoints: false,
  });
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  const pair = { PIGEON_PUSH_VAPID_PUBLIC_KEY: ecdh.getPublicKey().toString('base64url'), PIGEON_PUSH_VAPID_PRIVATE_KEY: crypto.randomBytes(32).toString('base64url') };
  expect(loadConfig(pair).pushVapidPublicKey).toBe(pair.PIGEON_PUSH_VAPID_PUBLIC_KEY);
  // The private key is a secret: masked in the logged config, never echoed in an error.
  expect(redactedConfig(loadConfig(pair)).pushVapidPrivateKey).toBe('[redacted]');
  expect(() => loadConfig({ ...pair, PIGEON_PUSH_VAPID_PRIVATE_KEY: 'c2hvcnQ' })).toThrow(/^PIGEON_PUSH_VAPID_PRIVATE_KEY: expected 32 bytes in base64url$/);
  for (const [env, value, extra] of [
    ['PIGEON_PUSH_VAPID_PUBLIC_KEY', pair.PIGEON_PUSH_VAPID_PUBLIC_KEY, {}],
    ['PIGEON_PUSH_VAPID_PUBLIC_KEY', 'not-a-point', { PIGEON_PUSH_VAPID_PRIVATE_KEY: pair.PIGEON_PUSH_VAPID_PRIVATE_KEY }],
    ['PIGEON_PUSH_VAPID_SUBJECT', 'postmaster@example.com', {}],
    ['PIGEON_PUSH_APNS_KEY_FILE', '/keys/AuthKey.p8', { PIGEON_PUSH_APNS_TEAM_ID: 'TEAM123456' }],
    ['PIGEON_PUSH_APNS_ORIGIN', 'http://api.push.apple.com', {}],
    ['PIGEON_PUSH_FCM_ORIGIN', 'https://fcm.googleapis.com/v1/projects', {}],
    ['PIGEON_PUSH_RATE_PER_DEVICE', '0', {}],
    ['PIGEON_PUSH_ALLOW_PRIVATE_ENDPOINTS', 'perhaps', {}],
  ] as Array<[string, string, Record<string, string>]>) {
    expect(() => loadConfig({ [env]: value, ...extra })).toThrow(ConfigError);
  }
  expect(loadConfig({ PIGEON_PUSH_VAPID_SUBJECT: 'mailto:ops@example.com' }).pushVapidSubject).toBe('mailto:ops@example.com');
  expect(loadConfig({ PIGEON_PUSH_APNS_KEY_FILE: '/keys/AuthKey.p8', PIGEON_PUSH_APNS_KEY_ID: 'ABC123DEFG', PIGEON_PUSH_APNS_TEAM_ID: 'TEAM123456' }).pushApnsKeyFile).toBe('/keys/AuthKey.p8');
});
