import crypto from 'node:crypto';
import fc from 'fast-check';
import { SignJWT, generateKeyPair } from 'jose';
import { CROCKFORD_ALPHABET, isCanonicalIncidentId, newIncidentId, parseIncidentId } from '../../server/diagnostics/incidentId';
import { REDACTED, scrubEntries, scrubText } from '../../server/diagnostics/scrub';
import { createTokenCodec } from '../../server/sync/tokens';

describe('incident IDs', () => {
  test('PGN-XXXX-XXXX from the Crockford alphabet, without I, L, O and U', () => {
    for (let i = 0; i < 1000; i++) {
      const id = newIncidentId();
      expect(id).toMatch(/^PGN-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/);
      expect(isCanonicalIncidentId(id)).toBe(true);
    }
    expect(CROCKFORD_ALPHABET).toHaveLength(32);
    expect(CROCKFORD_ALPHABET).not.toMatch(/[ILOU]/);
  });

  test('100,000 IDs are all different, and every symbol appears in every position', () => {
    const ids = new Set<string>();
    const seen = Array.from({ length: 8 }, () => new Set<string>());
    for (let i = 0; i < 100_000; i++) {
      const id = newIncidentId();
      ids.add(id);
      id.replace(/^PGN-/, '').replace('-', '').split('').forEach((symbol, position) => seen[position]!.add(symbol));
    }
    expect(ids.size).toBe(100_000);
    // 40 random bits spread over all 8 symbols: a stuck or biased bit would leave symbols out of some position.
    for (const symbols of seen) expect(symbols.size).toBe(32);
  });

  test('parsing gives back the ID, however it was typed', () => {
    for (let i = 0; i < 500; i++) {
      const id = newIncidentId();
      const bare = id.slice(4).replace('-', '');
      expect(parseIncidentId(id)).toBe(id);
      expect(parseIncidentId(id.toLowerCase())).toBe(id);
      expect(parseIncidentId(` ${id.replace(/-/g, ' ')} `)).toBe(id);
      expect(parseIncidentId(id.replace(/-/g, ''))).toBe(id);
      expect(parseIncidentId(bare)).toBe(id);
      expect(parseIncidentId(`${bare.slice(0, 4)}-${bare.slice(4)}`)).toBe(id);
      // Crockford's look-alikes: O for 0, I and L for 1, in either case.
      const misread = bare.replace(/0/g, 'o').replace(/1/g, () => (Math.random() < 0.5 ? 'I' : 'l'));
      expect(parseIncidentId(`pgn-${misread}`)).toBe(id);
    }
    expect(parseIncidentId('pgn 7k4q 2m9x')).toBe('PGN-7K4Q-2M9X');
    expect(parseIncidentId('PGN-OOOO-IIII')).toBe('PGN-0000-1111');
  });

  test('garbage is refused', () => {
    for (const text of [
      '',
      'PGN',
      'PGN-',
      'PGN-7K4Q-2M9',
      'PGN-7K4Q-2M9XX',
      'PGN-7K4Q-2M9U', // U is not a symbol
      'PGN-7K4Q-2M9*',
      'XYZ-7K4Q-2M9X',
      'PGN-7K4Q-2M9X-7K4Q',
      'PGN-7K4Q-2M9Ä',
      'PGN-7K4Q-😀9X',
      '7K4Q2M9X'.repeat(10),
    ]) {
      expect(parseIncidentId(text)).toBeUndefined();
    }
    expect(parseIncidentId(undefined as unknown as string)).toBeUndefined();
  });
});

const b64url = (bytes: number) => crypto.randomBytes(bytes).toString('base64url');
/** A refresh token as identity/passwordGrant.ts mints them: `prt_<16>.<HMAC, 43>`. */
const refreshToken = () => `prt_${b64url(12)}.${crypto.createHmac('sha256', 'k').update(b64url(8)).digest('base64url')}`;

describe('scrubText: each kind of secret', () => {
  let accessToken: string;
  let syncToken: string;
  beforeAll(async () => {
    const { privateKey } = await generateKeyPair('EdDSA');
    accessToken = await new SignJWT({ scope: 'mail', cnf: { jkt: b64url(32) } })
      .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'k1' })
      .setSubject('user-1')
      .setIssuer('https://pigeon.test')
      .setAudience('pigeon')
      .setExpirationTime('5m')
      .sign(privateKey);
    syncToken = createTokenCodec(crypto.randomBytes(32)).encode({
      k: 'h', u: 'user-1', d: 'dev-1', di: 'device-1', e: 'epoch', de: 1, m: 42, c: '',
    });
  });

  /** Scrubs `text`, checks that `secret` is gone and that `kept` (the text around it) is still there. */
  const expectScrubbed = (text: string, secret: string, kept: string[] = []) => {
    const result = scrubText(text);
    expect(result.text).not.toContain(secret);
    expect(result.text).toContain(REDACTED);
    expect(result.redactions).toBeGreaterThanOrEqual(1);
    for (const k of kept) expect(result.text).toContain(k);
    return result;
  };

  test('Authorization and Proxy-Authorization headers, whatever the scheme', () => {
    expectScrubbed(`> Authorization: Bearer ${accessToken}\n> Accept: */*`, accessToken, ['> Accept: */*', '> Authorization: ']);
    expectScrubbed(`authorization: DPoP ${accessToken}`, accessToken);
    const basic = Buffer.from('ann:hunter2hunter2').toString('base64');
    expectScrubbed(`Proxy-Authorization: Basic ${basic}`, basic);
    expectScrubbed('Authorization: opaque-secret-value', 'opaque-secret-value');
    // Logged inside a JSON string: the redaction stops at the string's end, the rest of the line stays JSON.
    const line = JSON.stringify({ msg: `sent Authorization: Bearer ${accessToken}`, status: 200 });
    const out = expectScrubbed(line, accessToken);
    expect(JSON.parse(out.text)).toEqual({ msg: `sent Authorization: ${REDACTED}`, status: 200 });
  });

  test('Bearer and DPoP credentials and JWTs anywhere', () => {
    const opaque = `${b64url(30)}9`;
    expectScrubbed(`retrying with Bearer ${opaque} after 401`, opaque, ['after 401']);
    expectScrubbed(`proof DPoP ${opaque}`, opaque);
    expectScrubbed(`token is ${accessToken}.`, accessToken, ['token is ']);
    expectScrubbed(`{"id_token":"x","at":"${accessToken}"}`, accessToken);
    // A JWT without signature (alg none) and a JWE (five parts) are still JWTs.
    const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"a"}').toString('base64url')}.`;
    expectScrubbed(`got ${unsigned} from idp`, unsigned.slice(0, -1));
    const jwe = `eyJhbGciOiJSU0EtT0FFUCJ9.${b64url(40)}.${b64url(12)}.${b64url(60)}.${b64url(16)}`;
    expectScrubbed(`jwe=${jwe}`, jwe.split('.')[3]!);
  });

  test('Pigeon refresh and sync tokens', () => {
    const refresh = refreshToken();
    expectScrubbed(`refreshed with ${refresh} ok`, refresh, ['refreshed with ', ' ok']);
    expectScrubbed(`refreshed with ${refresh} ok`, refresh.split('.')[1]!);
    expectScrubbed(`GET /v1/sync?token=${syncToken}&limit=50`, syncToken, ['&limit=50']);
    expectScrubbed(`next page from ${syncToken}`, syncToken.split('.')[2]!);
    expectScrubbed(JSON.stringify({ nextSyncToken: syncToken, more: true }), syncToken);
  });

  test('passwords in JSON, escaped JSON, forms, queries, logfmt and prose', () => {
    const pw = 'c0rrect-h0rse-Battery!';
    expectScrubbed(JSON.stringify({ username: 'ann', password: pw }), pw, ['"username":"ann"']);
    expectScrubbed(JSON.stringify({ msg: `body ${JSON.stringify({ password: pw, username: 'ann' })}` }), pw);
    expectScrubbed(`grant_type=password&username=ann&password=${encodeURIComponent(pw)}`, encodeURIComponent(pw), ['username=ann']);
    expectScrubbed(`login user=ann password="${pw}" ok`, pw, ['user=ann', ' ok']);
    expectScrubbed(`password: ${pw}`, pw);
    expectScrubbed(`{"Password" : 12345678}`, '12345678');
    // JSON keys whose value is a number or string escape still go.
    expectScrubbed(`{"passwd":"a\\"b${pw}"}`, pw);
  });

  test('client_secret, OAuth code, code_verifier and cookies', () => {
    const secret = b64url(24);
    expectScrubbed(`client_id=app&client_secret=${secret}&grant_type=client_credentials`, secret, ['client_id=app', 'grant_type=client_credentials']);
    expectScrubbed(JSON.stringify({ client_secret: secret }), secret);
    const code = b64url(20);
    expectScrubbed(`GET /callback?code=${code}&state=xyz HTTP/1.1`, code, ['state=xyz']);
    expectScrubbed(`grant_type=authorization_code&code=${code}&code_verifier=${secret}`, code);
    expectScrubbed(`grant_type=authorization_code&code=${code}&code_verifier=${secret}`, secret);
    expectScrubbed(`Cookie: sid=${secret}; theme=dark`, secret);
    expectScrubbed(`< Set-Cookie: __Host-sid=${secret}; Path=/; Secure; HttpOnly`, secret);
    expectScrubbed(JSON.stringify({ headers: { cookie: `sid=${secret}`, accept: 'text/html' } }), secret, ['"accept":"text/html"']);
  });

  test('API-key-like headers', () => {
    const key = b64url(24);
    for (const header of ['X-Api-Key', 'x-api-key', 'Api-Key', 'X-Auth-Token', 'X-Amz-Security-Token', 'Ocp-Apim-Subscription-Key', 'X-Goog-Api-Key']) {
      expectScrubbed(`${header}: ${key}`, key, [`${header}: `]);
    }
    expectScrubbed(JSON.stringify({ 'X-API-Key': key }), key);
  });

  test('private key PEM blocks, whole, cut off, or escaped in JSON', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    for (const pem of [
      privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
      privateKey.export({ format: 'pem', type: 'sec1' }) as string,
    ]) {
      const body = pem.split('\n')[1]!;
      expectScrubbed(`loaded key\n${pem}\nready`, body, ['loaded key', 'ready']);
      expectScrubbed(JSON.stringify({ key: pem }), body);
      expectScrubbed(`key: ${pem.slice(0, pem.length - 40)}`, body); // the END line is lost
    }
    const encrypted = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
      format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'x',
    }) as string;
    expect(encrypted).toContain('ENCRYPTED PRIVATE KEY');
    expectScrubbed(encrypted, encrypted.split('\n')[1]!);
  });

  test('ordinary lines are left alone, and values that hide nothing are not counted', () => {
    const ordinary = [
      '2026-12-07T08:56:03.123Z INFO sync folder 3f2a0c1e-9b7d-4c55-8e21-0a1b2c3d4e5f modseq=1234 items=50 took 12ms',
      'exit code=1 after 3s',
      'Invalid token: expired; Bearer token missing; DPoP proof rejected',
      '{"level":30,"code":"invalidToken","status":400,"tokenType":"DPoP","msg":"sync token rejected"}',
      'Content-Type: application/json; charset=utf-8',
      'com.example.pigeon.SyncService started in 1.2s',
      '{"refreshToken":null,"secret":true,"password":""}',
    ].join('\n');
    expect(scrubText(ordinary)).toEqual({ text: ordinary, redactions: 0 });
  });

  test('scrubEntries scrubs every entry and adds up the redactions', () => {
    const refresh = refreshToken();
    const { entries, redactions } = scrubEntries([
      { name: 'a.log', text: `one ${refresh}` },
      { name: 'b.log', text: `two ${refresh} and password=x1y2z3` },
      { name: 'c.log', text: 'nothing here' },
    ]);
    expect(redactions).toBe(3);
    expect(entries.map((e) => e.name)).toEqual(['a.log', 'b.log', 'c.log']);
    expect(entries.map((e) => e.text).join('\n')).not.toContain(refresh);
    expect(entries[2]!.text).toBe('nothing here');
  });

  test('a hostile log does not make the rules backtrack for long', () => {
    const hostile = [
      '-----BEGIN PRIVATE KEY-----\n'.repeat(20_000),
      `"${'a'.repeat(100_000)}":`,
      `${'x-'.repeat(50_000)}: `,
      `${'A'.repeat(50_000)}.`.repeat(3),
      `Bearer ${'a'.repeat(200_000)}`,
    ].join('\n');
    const started = Date.now();
    scrubText(hostile);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe('scrubText: properties', () => {
  const ordinaryLine = fc.oneof(
    fc.tuple(fc.date({ noInvalidDate: true }), fc.uuid(), fc.nat(100_000), fc.nat(500)).map(
      ([time, id, modseq, ms]) => `${time.toISOString()} INFO sync folder ${id} modseq=${modseq} items=${ms % 50} took ${ms}ms`,
    ),
    fc.tuple(fc.uuid(), fc.nat(200), fc.constantFrom(200, 304, 400, 401, 410, 503)).map(
      ([id, limit, status]) => `WARN GET /v1/folders/${id}/items?limit=${limit}&windowSize=${limit} -> ${status}`,
    ),
    fc.tuple(fc.constantFrom('invalidToken', 'resyncRequired', 'unauthorized'), fc.nat(600), fc.uuid()).map(([code, status, deviceId]) =>
      JSON.stringify({ level: 40, code, status, deviceId, tokenType: 'DPoP', msg: 'request failed' }),
    ),
    fc.nat(255).map((n) => `worker exited with exit code=${n}`),
    fc.constantFrom(
      'Invalid token: expired',
      'Bearer token missing, asking the user to sign in again',
      'Accept: application/json',
      'User-Agent: Pigeon/1.2.3 (iOS 17.1; iPhone15,2)',
      'com.example.pigeon.push.PushReceiver woke up',
      'retrying in 5s (attempt 3 of 5)',
      'password policy: 12 characters at least',
    ),
  );
  const ordinaryText = fc.array(ordinaryLine, { minLength: 1, maxLength: 8 }).map((lines) => lines.join('\n'));

  test('ordinary log text is untouched', () => {
    fc.assert(
      fc.property(ordinaryText, (text) => {
        const result = scrubText(text);
        expect(result.text).toBe(text);
        expect(result.redactions).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  /** A secret of a random shape: an opaque token, a JWT, a Pigeon refresh or sync token, a password. */
  const secret = fc.oneof(
    fc.uint8Array({ minLength: 24, maxLength: 48 }).map((b) => ({ kind: 'opaque', value: Buffer.from(b).toString('base64url') })),
    fc.tuple(fc.uint8Array({ minLength: 8, maxLength: 40 }), fc.uint8Array({ minLength: 32, maxLength: 64 })).map(([claims, sig]) => ({
      kind: 'jwt',
      value: `${Buffer.from('{"alg":"EdDSA","typ":"at+jwt"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: Buffer.from(claims).toString('hex') })).toString('base64url')}.${Buffer.from(sig).toString('base64url')}`,
    })),
    fc.tuple(fc.uint8Array({ minLength: 12, maxLength: 12 }), fc.uint8Array({ minLength: 32, maxLength: 32 })).map(([id, mac]) => ({
      kind: 'refresh',
      value: `prt_${Buffer.from(id).toString('base64url')}.${Buffer.from(mac).toString('base64url')}`,
    })),
    fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 60 }), fc.uint8Array({ minLength: 16, maxLength: 16 })).map(([payload, mac]) => ({
      kind: 'sync',
      value: `p1.${Buffer.from(JSON.stringify({ u: Buffer.from(payload).toString('hex') })).toString('base64url')}.${Buffer.from(mac).toString('base64url')}`,
    })),
    fc.stringMatching(/^[A-Za-z0-9!@#$%^*()_+=~-]{12,24}$/).map((value) => ({ kind: 'password', value: `Zq${value}` })),
  );

  const secretKeys = ['password', 'refresh_token', 'access_token', 'client_secret', 'syncToken', 'id_token', 'api_key', 'apiKey', 'authorization', 'code_verifier', 'token', 'passphrase'];
  const placement = fc.oneof(
    fc.tuple(fc.constantFrom('Authorization: Bearer ', 'authorization: DPoP ', 'Proxy-Authorization: Basic ', 'X-Api-Key: ', 'X-Auth-Token: ', 'Cookie: sid=', 'Set-Cookie: sid=')).map(
      ([prefix]) => ({ where: 'header', render: (s: string) => `> ${prefix}${s}` }),
    ),
    fc.constantFrom(...secretKeys).map((key) => ({ where: 'json', render: (s: string) => JSON.stringify({ level: 20, [key]: s, msg: 'request' }) })),
    fc.constantFrom(...secretKeys).map((key) => ({
      where: 'escaped json',
      render: (s: string) => JSON.stringify({ level: 20, msg: `body ${JSON.stringify({ [key]: s, user: 'ann' })}` }),
    })),
    fc.constantFrom('access_token', 'refresh_token', 'code', 'client_secret', 'password', 'token', 'api_key').map((param) => ({
      where: 'url query',
      render: (s: string) => `GET https://mail.example.test/v1/cb?state=abc&${param}=${encodeURIComponent(s)}&x=1 HTTP/1.1`,
    })),
    fc.constantFrom('refresh_token', 'password', 'client_secret').map((param) => ({
      where: 'form body',
      render: (s: string) => `POST /token grant_type=${param}&${param}=${encodeURIComponent(s)}`,
    })),
    fc.constant({ where: 'prose', render: (s: string) => `using ${s} now` }),
  );

  test('a seeded secret never survives, wherever it stands', () => {
    fc.assert(
      fc.property(ordinaryText, secret, placement, ordinaryText, (before, seeded, place, after) => {
        // Opaque tokens and passwords have no shape of their own: in prose nothing says they are secret.
        fc.pre(place.where !== 'prose' || seeded.kind === 'jwt' || seeded.kind === 'refresh' || seeded.kind === 'sync');
        const text = `${before}\n${place.render(seeded.value)}\n${after}`;
        const result = scrubText(text);
        expect(result.text).not.toContain(seeded.value);
        expect(result.text).not.toContain(encodeURIComponent(seeded.value));
        // Nor its last 16 characters (the signature or MAC: what makes it work).
        expect(result.text).not.toContain(seeded.value.slice(-16));
        expect(result.redactions).toBeGreaterThanOrEqual(1);
        // The ordinary lines around it are still there.
        expect(result.text.startsWith(`${before}\n`)).toBe(true);
        expect(result.text.endsWith(`\n${after}`)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});
