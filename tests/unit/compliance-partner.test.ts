/**
 * Authentication of the device-compliance partner API (server/access/compliancePartner.ts): RFC 9421 signatures by a
 * partner's registered key. A good request of each algorithm passes; each refusal case differs from a good request by
 * the one thing it tests. The signature base is also built here by hand (RFC 9421 §2.5) for one fixed request, and
 * checked against RFC 9421's own Ed25519 example (Appendix B.2.6), so a base built wrongly fails these tests instead
 * of agreeing with itself.
 */
import crypto from 'node:crypto';
import {
  PartnerConfigError,
  PartnerNonceMemoryFull,
  PartnerRequestRefused,
  assertTenantAllowed,
  contentDigest,
  createNonceMemory,
  createPartnerVerifier,
  signPartnerRequest,
  signatureBaseFor,
  type CompliancePartnerConfig,
  type PartnerNonceMemory,
  type PartnerRefusalReason,
  type PartnerRequest,
  type PartnerSigningOptions,
} from '../../server/access/compliancePartner';

const START = Date.UTC(2026, 0, 1, 12);
const CREATED = START / 1000; // 1767268800
let nowMs = START;
const now = () => nowMs;

const URL = 'https://pigeon.example.test/v1/compliance/devices/dev-1?tenant=tenant-1';
const DATE = 'Thu, 01 Jan 2026 12:00:00 GMT';
const BODY = '{"state":"noncompliant","reasons":["osOutdated"],"expiresAt":"2026-01-02T12:00:00Z"}';
/** Field names as a client might write them: the verifier looks them up in any case. */
const HEADERS = { 'Content-Type': 'application/json', Date: DATE };

const ed = crypto.generateKeyPairSync('ed25519');
const p256 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const stranger = crypto.generateKeyPairSync('ed25519');

const PARTNERS: CompliancePartnerConfig[] = [
  {
    id: 'mdm-a',
    keys: [
      { keyId: 'mdm-a-ed', publicKey: ed.publicKey.export({ format: 'jwk' }) },
      { keyId: 'mdm-a-p256', publicKey: p256.publicKey.export({ format: 'pem', type: 'spki' }) as string },
    ],
    tenantIds: ['tenant-1', 'tenant-2'],
  },
  { id: 'mdm-b', keys: [{ keyId: 'mdm-b-ed', publicKey: stranger.publicKey.export({ format: 'jwk' }) }], tenantIds: ['tenant-3'] },
];

let verifier: ReturnType<typeof createPartnerVerifier>;
beforeEach(() => {
  nowMs = START;
  verifier = createPartnerVerifier({ partners: PARTNERS, now, nonces: createNonceMemory({ now }) });
});

/** A request signed by mdm-a's Ed25519 key unless `overrides` say otherwise; `body` is what is sent. */
function signedRequest(overrides: Partial<PartnerSigningOptions> = {}, sent: Partial<PartnerRequest> = {}): PartnerRequest {
  const opts: PartnerSigningOptions = {
    method: 'POST',
    url: URL,
    headers: HEADERS,
    body: BODY,
    keyId: 'mdm-a-ed',
    privateKey: ed.privateKey,
    created: CREATED,
    ...overrides,
  };
  const { headers } = signPartnerRequest(opts);
  return {
    method: opts.method,
    url: opts.url,
    headers: {
      ...opts.headers,
      'Content-Digest': headers['content-digest'],
      'Signature-Input': headers['signature-input'],
      Signature: headers.signature,
    },
    body: Buffer.from(opts.body ?? ''),
    ...sent,
  };
}

async function refusalOf(attempt: Promise<unknown>): Promise<PartnerRequestRefused> {
  try {
    await attempt;
  } catch (err) {
    if (err instanceof PartnerRequestRefused) return err;
    throw err;
  }
  throw new Error('The request was accepted, but a refusal was expected.');
}

async function expectRefused(request: PartnerRequest, reason: PartnerRefusalReason): Promise<void> {
  const refusal = await refusalOf(verifier.verify(request));
  expect({ reason: refusal.reason, message: refusal.message }).toEqual({ reason, message: expect.any(String) });
}

describe('accepted requests', () => {
  test('an Ed25519-signed request verifies and names its partner and tenants', async () => {
    const request = signedRequest({ nonce: 'nonce-ed-1' });
    await expect(verifier.verify(request)).resolves.toEqual({
      partnerId: 'mdm-a',
      tenantIds: ['tenant-1', 'tenant-2'],
      keyId: 'mdm-a-ed',
      created: CREATED,
      nonce: 'nonce-ed-1',
    });
  });

  test('an ECDSA P-256-signed request verifies (key configured as PEM)', async () => {
    const request = signedRequest({ keyId: 'mdm-a-p256', privateKey: p256.privateKey });
    expect(String(request.headers['Signature-Input'])).toContain('alg="ecdsa-p256-sha256"');
    await expect(verifier.verify(request)).resolves.toMatchObject({ partnerId: 'mdm-a', keyId: 'mdm-a-p256' });
  });

  test('a second partner verifies with its own key and tenants', async () => {
    const request = signedRequest({ keyId: 'mdm-b-ed', privateKey: stranger.privateKey });
    await expect(verifier.verify(request)).resolves.toMatchObject({ partnerId: 'mdm-b', tenantIds: ['tenant-3'] });
  });

  test('a GET with an empty body verifies (its Content-Digest is of the empty body)', async () => {
    const request = signedRequest({ method: 'GET', headers: { Date: DATE }, body: '' });
    expect(request.headers['Content-Digest']).toBe('sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:');
    await expect(verifier.verify(request)).resolves.toMatchObject({ partnerId: 'mdm-a' });
  });

  test('created exactly at either edge of the window is accepted', async () => {
    await expect(verifier.verify(signedRequest({ created: CREATED - 300 }))).resolves.toMatchObject({ partnerId: 'mdm-a' });
    await expect(verifier.verify(signedRequest({ created: CREATED + 300 }))).resolves.toMatchObject({ partnerId: 'mdm-a' });
  });

  test('with another signature before it (a proxy\'s, by a key not ours), the partner\'s is the one checked', async () => {
    const ours = signedRequest();
    const proxy = `edge=("@method");created=${CREATED};keyid="edge-proxy";nonce="p1"`;
    const request = {
      ...ours,
      headers: {
        ...ours.headers,
        'Signature-Input': `${proxy}, ${String(ours.headers['Signature-Input'])}`,
        Signature: `edge=:${Buffer.alloc(64, 7).toString('base64')}:, ${String(ours.headers.Signature)}`,
      },
    };
    await expect(verifier.verify(request)).resolves.toMatchObject({ partnerId: 'mdm-a' });
  });

  test('signature fields split over several field lines (node gives an array) are combined', async () => {
    const ours = signedRequest();
    const request = { ...ours, headers: { ...ours.headers, 'Signature-Input': [`x=("@method");keyid="other";created=1;nonce="n"`, String(ours.headers['Signature-Input'])] } };
    await expect(verifier.verify(request)).resolves.toMatchObject({ partnerId: 'mdm-a' });
  });
});

describe('the signature base, built independently (RFC 9421 §2.5)', () => {
  const NONCE = 'kR2l0Zs2hBfE1nq3fTQz8A';
  const digest = `sha-256=:${crypto.createHash('sha256').update(BODY).digest('base64')}:`;
  const params = `("@method" "@target-uri" "content-digest" "content-type" "date");created=1767268800;keyid="mdm-a-ed";alg="ed25519";nonce="${NONCE}"`;
  // One line per covered component, `"name": value`, then `"@signature-params"`; LF between lines, none at the end.
  const handBase =
    '"@method": POST\n' +
    `"@target-uri": ${URL}\n` +
    `"content-digest": ${digest}\n` +
    '"content-type": application/json\n' +
    `"date": ${DATE}\n` +
    `"@signature-params": ${params}`;

  test('the signer signs exactly the hand-built base, and writes the fields the contract describes', () => {
    const signed = signPartnerRequest({ method: 'POST', url: URL, headers: HEADERS, body: BODY, keyId: 'mdm-a-ed', privateKey: ed.privateKey, created: CREATED, nonce: NONCE });
    expect(signed.signatureBase).toBe(handBase);
    expect(signed.headers['content-digest']).toBe(digest);
    expect(signed.headers['signature-input']).toBe(`sig1=${params}`);
    // Ed25519 is deterministic: the same bytes signed give the same signature.
    const expected = crypto.sign(null, Buffer.from(handBase, 'ascii'), ed.privateKey).toString('base64');
    expect(signed.headers.signature).toBe(`sig1=:${expected}:`);
  });

  test('the verifier accepts fields assembled by hand over the hand-built base, for both algorithms', async () => {
    const edSignature = crypto.sign(null, Buffer.from(handBase, 'ascii'), ed.privateKey);
    const request: PartnerRequest = {
      method: 'POST',
      url: URL,
      headers: { ...HEADERS, 'content-digest': digest, 'signature-input': `sig1=${params}`, signature: `sig1=:${edSignature.toString('base64')}:` },
      body: Buffer.from(BODY),
    };
    expect(signatureBaseFor(request, `sig1=${params}`, 'sig1')).toBe(handBase);
    await expect(verifier.verify(request)).resolves.toMatchObject({ partnerId: 'mdm-a', nonce: NONCE });

    const p256Params = params.replace('keyid="mdm-a-ed";alg="ed25519"', 'keyid="mdm-a-p256";alg="ecdsa-p256-sha256"');
    const p256Base = handBase.replace(params, p256Params);
    // RFC 9421 §3.3.4: r‖s, 32 bytes each ("ieee-p1363"), not DER.
    const raw = crypto.sign('sha256', Buffer.from(p256Base, 'ascii'), { key: p256.privateKey, dsaEncoding: 'ieee-p1363' });
    const p256Request = {
      ...request,
      headers: { ...request.headers, 'signature-input': `sig1=${p256Params}`, signature: `sig1=:${raw.toString('base64')}:` },
    };
    await expect(verifier.verify(p256Request)).resolves.toMatchObject({ keyId: 'mdm-a-p256' });

    const der = crypto.sign('sha256', Buffer.from(p256Base.replace(NONCE, 'other-nonce'), 'ascii'), p256.privateKey);
    const derRequest = {
      ...request,
      headers: { ...request.headers, 'signature-input': `sig1=${p256Params.replace(NONCE, 'other-nonce')}`, signature: `sig1=:${der.toString('base64')}:` },
    };
    await expectRefused(derRequest, 'bad_signature');
  });

  // RFC 9421 Appendix B.1.4 (test-key-ed25519), B.2 (test-request) and B.2.6 (the signature with ed25519).
  const RFC_KEY = crypto.createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', d: 'n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU', x: 'JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs' },
    format: 'jwk',
  });
  const RFC_REQUEST = {
    method: 'POST',
    url: 'https://example.com/foo?param=Value&Pet=dog',
    headers: {
      Host: 'example.com',
      Date: 'Tue, 20 Apr 2021 02:07:55 GMT',
      'Content-Type': 'application/json',
      'Content-Digest': 'sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:',
      'Content-Length': '18',
    },
  };
  const RFC_BODY = '{"hello": "world"}';

  test('RFC 9421 B.2.6: the base matches the RFC\'s, and the RFC\'s key signs it into the RFC\'s signature', () => {
    const input = 'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"';
    const rfcBase =
      '"date": Tue, 20 Apr 2021 02:07:55 GMT\n' +
      '"@method": POST\n' +
      '"@path": /foo\n' +
      '"@authority": example.com\n' +
      '"content-type": application/json\n' +
      '"content-length": 18\n' +
      '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"';
    const rfcSignature = 'wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==';
    // The transcription is the RFC's: its key signs it into its published (deterministic) signature.
    expect(crypto.sign(null, Buffer.from(rfcBase, 'ascii'), RFC_KEY).toString('base64')).toBe(rfcSignature);
    expect(signatureBaseFor(RFC_REQUEST, input, 'sig-b26')).toBe(rfcBase);
  });

  test('RFC 9421 B.2.3: @query and a sha-512 Content-Digest in the base', () => {
    const input =
      'sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"';
    expect(signatureBaseFor(RFC_REQUEST, input, 'sig-b23')).toBe(
      '"date": Tue, 20 Apr 2021 02:07:55 GMT\n' +
        '"@method": POST\n' +
        '"@path": /foo\n' +
        '"@query": ?param=Value&Pet=dog\n' +
        '"@authority": example.com\n' +
        '"content-type": application/json\n' +
        '"content-digest": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n' +
        '"content-length": 18\n' +
        '"@signature-params": ("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"',
    );
    // The RFC's sha-512 digest is of that body.
    expect(crypto.createHash('sha512').update(RFC_BODY).digest('base64')).toBe('WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==');
  });

  test('derived components and field values follow RFC 9421 §2.1–2.2 (case, default port, empty path and query, field lines)', () => {
    const input = 'a=("@authority" "@scheme" "@path" "@query" "@target-uri" "x-tag");created=1;keyid="k"';
    const message = (url: string) => ({ method: 'GET', url, headers: { 'X-Tag': ['  one ', 'two'] } });
    const valuesOf = (url: string) => signatureBaseFor(message(url), input, 'a').split('\n').slice(0, -1);
    expect(valuesOf('HTTPS://Pigeon.Example.TEST:443')).toEqual([
      '"@authority": pigeon.example.test',
      '"@scheme": https',
      '"@path": /',
      '"@query": ?',
      '"@target-uri": HTTPS://Pigeon.Example.TEST:443',
      '"x-tag": one, two',
    ]);
    expect(valuesOf('https://pigeon.example.test:8443/a/b?x=1&y=%41')).toEqual([
      '"@authority": pigeon.example.test:8443',
      '"@scheme": https',
      '"@path": /a/b',
      '"@query": ?x=1&y=%41',
      '"@target-uri": https://pigeon.example.test:8443/a/b?x=1&y=%41',
      '"x-tag": one, two',
    ]);
  });

  test('RFC 9530 §2: the Content-Digest of the example body', () => {
    expect(contentDigest(RFC_BODY)).toBe('sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:');
  });
});

describe('refusals', () => {
  test('unsigned: no signature fields, or only one of them', async () => {
    await expectRefused({ method: 'POST', url: URL, headers: { ...HEADERS, 'Content-Digest': contentDigest(BODY) }, body: Buffer.from(BODY) }, 'unsigned');
    const signed = signedRequest();
    const { Signature: _signature, ...withoutSignature } = signed.headers;
    await expectRefused({ ...signed, headers: withoutSignature }, 'unsigned');
  });

  test('unknown_key: a key id no partner has', async () => {
    await expectRefused(signedRequest({ keyId: 'mdm-x-ed', privateKey: stranger.privateKey }), 'unknown_key');
  });

  test('bad_signature: a registered key id, signed by another key', async () => {
    await expectRefused(signedRequest({ keyId: 'mdm-a-ed', privateKey: stranger.privateKey }), 'bad_signature');
  });

  test('digest_mismatch: one body byte flipped', async () => {
    const request = signedRequest();
    const body = Buffer.from(request.body);
    body[10] = body[10]! ^ 0x01;
    await expectRefused({ ...request, body }, 'digest_mismatch');
  });

  test('digest_mismatch: a Content-Digest without sha-256', async () => {
    const request = signedRequest();
    const sha512 = `sha-512=:${crypto.createHash('sha512').update(BODY).digest('base64')}:`;
    // Re-signed over the sha-512-only field, so the signature verifies and the digest check is what refuses.
    const base = signatureBaseFor({ ...request, headers: { ...request.headers, 'Content-Digest': sha512 } }, String(request.headers['Signature-Input']), 'sig1');
    const signature = crypto.sign(null, Buffer.from(base, 'ascii'), ed.privateKey).toString('base64');
    await expectRefused({ ...request, headers: { ...request.headers, 'Content-Digest': sha512, Signature: `sig1=:${signature}:` } }, 'digest_mismatch');
  });

  test('bad_signature: the path, query, host or method changed after signing', async () => {
    await expectRefused({ ...signedRequest(), url: URL.replace('dev-1', 'dev-2') }, 'bad_signature');
    await expectRefused({ ...signedRequest(), url: URL.replace('tenant-1', 'tenant-2') }, 'bad_signature');
    await expectRefused({ ...signedRequest(), url: URL.replace('pigeon.example.test', 'staging.example.test') }, 'bad_signature');
    await expectRefused({ ...signedRequest(), method: 'PUT' }, 'bad_signature');
  });

  test('bad_signature: a covered field changed after signing', async () => {
    const request = signedRequest();
    await expectRefused({ ...request, headers: { ...request.headers, 'Content-Type': 'text/plain' } }, 'bad_signature');
    await expectRefused({ ...request, headers: { ...request.headers, Date: 'Thu, 01 Jan 2026 12:00:01 GMT' } }, 'bad_signature');
  });

  test('bad_signature: signature parameters changed after signing (they are in the base)', async () => {
    const request = signedRequest({ nonce: 'nonce-a' });
    const input = String(request.headers['Signature-Input']).replace('nonce-a', 'nonce-b');
    await expectRefused({ ...request, headers: { ...request.headers, 'Signature-Input': input } }, 'bad_signature');
  });

  test('stale: created more than the skew in the past, or in the future', async () => {
    await expectRefused(signedRequest({ created: CREATED - 301 }), 'stale');
    await expectRefused(signedRequest({ created: CREATED + 301 }), 'stale');
  });

  test('stale: a signature past its own expires', async () => {
    const request = signedRequest();
    const input = `${String(request.headers['Signature-Input'])};expires=${CREATED - 1}`;
    const base = signatureBaseFor(request, input, 'sig1');
    const signature = crypto.sign(null, Buffer.from(base, 'ascii'), ed.privateKey).toString('base64');
    await expectRefused({ ...request, headers: { ...request.headers, 'Signature-Input': input, Signature: `sig1=:${signature}:` } }, 'stale');
  });

  test('replayed: the same request twice; a new nonce passes; a replay after the window is stale', async () => {
    const request = signedRequest({ nonce: 'once' });
    await expect(verifier.verify(request)).resolves.toMatchObject({ nonce: 'once' });
    await expectRefused(request, 'replayed');
    nowMs += 299_000;
    await expectRefused(request, 'replayed');
    await expect(verifier.verify(signedRequest({ nonce: 'twice' }))).resolves.toMatchObject({ nonce: 'twice' });
    nowMs = START + 301_000;
    await expectRefused(request, 'stale');
  });

  test('a refused request does not use up its nonce', async () => {
    const request = signedRequest({ nonce: 'kept' });
    await expectRefused({ ...request, body: Buffer.from(BODY.replace('noncompliant', 'compliant')) }, 'digest_mismatch');
    await expect(verifier.verify(request)).resolves.toMatchObject({ nonce: 'kept' });
  });

  test('missing_component: no nonce, no created, no keyid', async () => {
    await expectRefused(signedRequest({ nonce: null }), 'missing_component');
    const request = signedRequest();
    const input = String(request.headers['Signature-Input']);
    await expectRefused({ ...request, headers: { ...request.headers, 'Signature-Input': input.replace(`;created=${CREATED}`, '') } }, 'missing_component');
    await expectRefused({ ...request, headers: { ...request.headers, 'Signature-Input': input.replace(';keyid="mdm-a-ed"', '') } }, 'missing_component');
  });

  test('missing_component: content-digest, @target-uri or @method not covered', async () => {
    await expectRefused(signedRequest({ components: ['@method', '@target-uri', 'content-type', 'date'] }), 'missing_component');
    await expectRefused(signedRequest({ components: ['@method', '@path', 'content-digest', 'content-type', 'date'] }), 'missing_component');
    await expectRefused(signedRequest({ components: ['@target-uri', 'content-digest', 'content-type', 'date'] }), 'missing_component');
  });

  test('missing_component: content-type or date present but not covered', async () => {
    await expectRefused(signedRequest({ components: ['@method', '@target-uri', 'content-digest', 'date'] }), 'missing_component');
    await expectRefused(signedRequest({ components: ['@method', '@target-uri', 'content-digest', 'content-type'] }), 'missing_component');
  });

  test('missing_component: a covered field the request does not carry', async () => {
    const request = signedRequest({ headers: { ...HEADERS, 'x-device-id': 'dev-1' }, components: ['@method', '@target-uri', 'content-digest', 'content-type', 'date', 'x-device-id'] });
    await expect(createPartnerVerifier({ partners: PARTNERS, now }).verify(request)).resolves.toMatchObject({ partnerId: 'mdm-a' });
    const { 'x-device-id': _dropped, ...without } = request.headers;
    await expectRefused({ ...request, headers: without }, 'missing_component');
  });

  test('bad_signature: an alg that is not the key\'s', async () => {
    await expectRefused(signedRequest({ alg: 'ecdsa-p256-sha256' }), 'bad_signature');
    await expectRefused(signedRequest({ alg: 'hmac-sha256' }), 'bad_signature');
    await expectRefused(signedRequest({ keyId: 'mdm-a-p256', privateKey: p256.privateKey, alg: 'ed25519' }), 'bad_signature');
    // Without alg, the key decides: accepted.
    await expect(verifier.verify(signedRequest({ alg: null }))).resolves.toMatchObject({ keyId: 'mdm-a-ed' });
  });

  test('bad_signature: malformed or unsupported signature fields', async () => {
    const request = signedRequest();
    const input = String(request.headers['Signature-Input']);
    const variants = [
      { 'Signature-Input': input.replace('(', '') }, // not an inner list
      { 'Signature-Input': `${input},` }, // trailing comma
      { Signature: 'sig1=:not base64!:' },
      { Signature: 'sig2=:AAAA:' }, // no signature under the label
      { Signature: 'sig1="a string"' },
      { 'Signature-Input': input.replace('"@method"', '"@method";req') }, // component parameters
      { 'Signature-Input': input.replace('"@method"', '"@request-target"') }, // unsupported derived component
      { 'Signature-Input': input.replace('"content-type"', '"Content-Type"') }, // not lower case
      { 'Signature-Input': input.replace('"date"', '"date" "date"') }, // covered twice
      { 'Signature-Input': input.replace(`created=${CREATED}`, `created="${CREATED}"`) }, // created not an integer
    ];
    for (const fields of variants) await expectRefused({ ...request, headers: { ...request.headers, ...fields } }, 'bad_signature');
  });

  test('tenant_not_allowed: a verified partner outside its tenants', async () => {
    const partner = await verifier.verify(signedRequest());
    expect(() => assertTenantAllowed(partner, 'tenant-1')).not.toThrow();
    let refusal: unknown;
    try {
      assertTenantAllowed(partner, 'tenant-3');
    } catch (err) {
      refusal = err;
    }
    expect(refusal).toBeInstanceOf(PartnerRequestRefused);
    expect((refusal as PartnerRequestRefused).reason).toBe('tenant_not_allowed');
  });
});

describe('nonce memory', () => {
  test('remembers until expiry; when full of live nonces it refuses instead of evicting', () => {
    const memory = createNonceMemory({ now, capacity: 2 });
    expect(memory.seen('a', START + 1000)).toBe(false);
    expect(memory.seen('a', START + 1000)).toBe(true);
    expect(memory.seen('b', START + 5000)).toBe(false);
    expect(() => memory.seen('c', START + 5000)).toThrow(PartnerNonceMemoryFull);
    expect(memory.seen('a', START + 1000)).toBe(true); // still remembered: nothing live was evicted
    nowMs = START + 1000; // "a" expires
    expect(memory.seen('c', START + 5000)).toBe(false);
    expect(memory.size).toBe(2);
    expect(() => memory.seen('d', START + 9000)).toThrow(PartnerNonceMemoryFull);
    nowMs = START + 5000; // "b" and "c" expire
    expect(memory.seen('a', START + 9000)).toBe(false); // forgotten once expired
    expect(memory.size).toBe(1);
  });

  test('the verifier lets PartnerNonceMemoryFull through, and remembers a nonce until created + skew', async () => {
    const calls: Array<[string, number]> = [];
    const full: PartnerNonceMemory = {
      seen(key, expiresAt) {
        calls.push([key, expiresAt]);
        throw new PartnerNonceMemoryFull();
      },
    };
    const v = createPartnerVerifier({ partners: PARTNERS, now, maxSkewSeconds: 120, nonces: full });
    await expect(v.verify(signedRequest({ nonce: 'n1', created: CREATED - 10 }))).rejects.toBeInstanceOf(PartnerNonceMemoryFull);
    expect(calls).toEqual([[JSON.stringify(['mdm-a-ed', 'n1']), (CREATED - 10 + 120) * 1000 + 1]]);
  });

  test('an asynchronous memory (a shared store) is awaited', async () => {
    const used = new Set<string>();
    const shared: PartnerNonceMemory = {
      async seen(key) {
        await new Promise((resolve) => setImmediate(resolve));
        if (used.has(key)) return true;
        used.add(key);
        return false;
      },
    };
    const v = createPartnerVerifier({ partners: PARTNERS, now, nonces: shared });
    const request = signedRequest();
    await expect(v.verify(request)).resolves.toMatchObject({ partnerId: 'mdm-a' });
    expect((await refusalOf(v.verify(request))).reason).toBe('replayed');
  });
});

describe('configuration', () => {
  const build = (partners: CompliancePartnerConfig[]) => () => createPartnerVerifier({ partners, now });
  const edJwk = ed.publicKey.export({ format: 'jwk' });

  test('a private key (PEM or JWK) is refused', () => {
    const pem = ed.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    expect(build([{ id: 'p', keys: [{ keyId: 'k', publicKey: pem }], tenantIds: ['t'] }])).toThrow(PartnerConfigError);
    const jwk = ed.privateKey.export({ format: 'jwk' });
    expect(build([{ id: 'p', keys: [{ keyId: 'k', publicKey: jwk }], tenantIds: ['t'] }])).toThrow(PartnerConfigError);
  });

  test('keys of other kinds are refused (RSA, P-384, HMAC)', () => {
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'pem', type: 'spki' }) as string;
    const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'jwk' });
    for (const publicKey of [rsa, p384, { kty: 'oct', k: 'c2VjcmV0' }]) {
      expect(build([{ id: 'p', keys: [{ keyId: 'k', publicKey }], tenantIds: ['t'] }])).toThrow(PartnerConfigError);
    }
  });

  test('a key id used twice, a partner id used twice, or a JWK alg that contradicts the key are refused', () => {
    expect(build([{ id: 'p', keys: [{ keyId: 'k', publicKey: edJwk }, { keyId: 'k', publicKey: edJwk }], tenantIds: ['t'] }])).toThrow(PartnerConfigError);
    expect(
      build([
        { id: 'p', keys: [{ keyId: 'k1', publicKey: edJwk }], tenantIds: ['t'] },
        { id: 'p', keys: [{ keyId: 'k2', publicKey: edJwk }], tenantIds: ['t'] },
      ]),
    ).toThrow(PartnerConfigError);
    expect(build([{ id: 'p', keys: [{ keyId: 'k', publicKey: { ...edJwk, alg: 'ES256' } }], tenantIds: ['t'] }])).toThrow(PartnerConfigError);
    expect(build([{ id: 'p', keys: [{ keyId: 'k', publicKey: { ...edJwk, alg: 'EdDSA' } }], tenantIds: ['t'] }])).not.toThrow();
  });
});
