/**
 * The CMS (RFC 5652) core of rights protection: tenant protection keys, EnvelopedData for the protected content and
 * SignedData for its use licence. The structures are built and read with pkijs/asn1js (no hand-written ASN.1) and
 * the cryptography is node's WebCrypto, handed to pkijs and @peculiar/x509 on every call (no module-level engine).
 * The profiles (algorithms, OIDs, recipient identifiers) are documented in schema/protection-format.md.
 *
 * Every function answers CmsError and nothing else when it cannot do its work (pkijs, asn1js and WebCrypto each
 * throw their own kinds of error), so a caller maps one error type to "this message cannot be opened".
 */
import nodeCrypto, { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { readBer } from './ber';

/** Malformed input, no matching recipient, refused algorithm, bad signature, untrusted signer... */
export class CmsError extends Error {
  override readonly name = 'CmsError';
}

/** A protection key as stored: the certificate and its PKCS#8 private key, both PEM. */
export interface KeyMaterial {
  certificatePem: string;
  privateKeyPem: string /* PKCS#8 PEM */;
}

const OID = {
  data: '1.2.840.113549.1.7.1',
  signedData: '1.2.840.113549.1.7.2',
  envelopedData: '1.2.840.113549.1.7.3',
  rsaEncryption: '1.2.840.113549.1.1.1',
  rsaesOaep: '1.2.840.113549.1.1.7',
  mgf1: '1.2.840.113549.1.1.8',
  pSpecified: '1.2.840.113549.1.1.9',
  contentTypeAttr: '1.2.840.113549.1.9.3',
  messageDigestAttr: '1.2.840.113549.1.9.4',
  signingTimeAttr: '1.2.840.113549.1.9.5',
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
} as const;

/** Content encryption we open: AES-CBC of any key size (what `openssl cms -encrypt -aes128/-aes192/-aes256` makes). */
const AES_CBC_OIDS = new Set(['2.16.840.1.101.3.4.1.2', '2.16.840.1.101.3.4.1.22', '2.16.840.1.101.3.4.1.42']);
/** OAEP hashes we accept (SHA-1 is still openssl's default for OAEP; it is safe there, unlike in signatures). */
const OAEP_HASHES = new Set<string>([OID.sha1, OID.sha256, OID.sha384, OID.sha512]);
/** Digests we accept in signatures: no SHA-1 (collisions are practical). */
const SIGNATURE_DIGESTS = new Set<string>([OID.sha256, OID.sha384, OID.sha512]);

const DAY_MS = 24 * 60 * 60 * 1000;
const DEFAULT_VALIDITY_YEARS = 10;
const RSA_MODULUS_BITS = 2048;

/** A pkijs engine over node's WebCrypto, made per call as the project keeps no module-level crypto state. */
function engine(): pkijs.CryptoEngine {
  return new pkijs.CryptoEngine({ name: 'node', crypto: webcrypto });
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Runs `work`, turning whatever it throws into a CmsError (a CmsError passes through unchanged). */
async function asCmsError<T>(what: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof CmsError) throw err;
    throw new CmsError(`${what}: ${errorText(err)}`, { cause: err });
  }
}

function asCmsErrorSync<T>(what: string, work: () => T): T {
  try {
    return work();
  } catch (err) {
    if (err instanceof CmsError) throw err;
    throw new CmsError(`${what}: ${errorText(err)}`, { cause: err });
  }
}

/** DER of the single PEM block labelled `label` (x509's converter, strict about the label). */
function pemBlock(pem: string, label: string): ArrayBuffer {
  if (typeof pem !== 'string') throw new CmsError(`${label}: not a PEM string`);
  const blocks = x509.PemConverter.decodeWithHeaders(pem).filter((b) => b.type === label);
  if (blocks.length !== 1) throw new CmsError(`expected exactly one PEM block "${label}", found ${blocks.length}`);
  return blocks[0]!.rawData;
}

/** One BER/DER value filling `bytes` exactly (trailing bytes are refused: they would not be covered by anything). */
function parseAsn1(bytes: ArrayBuffer, what: string): asn1js.AsnType {
  const parsed = readBer(bytes);
  if (!parsed) throw new CmsError(`${what}: not valid BER/DER`);
  if (parsed.offset !== bytes.byteLength) throw new CmsError(`${what}: trailing bytes after the structure`);
  return parsed.result;
}

function parseCertificate(pem: string): pkijs.Certificate {
  return asCmsErrorSync('certificate', () => new pkijs.Certificate({ schema: parseAsn1(pemBlock(pem, 'CERTIFICATE'), 'certificate') }));
}

/** The `content` of a ContentInfo of the expected type. */
function contentOf(der: Buffer, contentType: string, what: string): asn1js.AsnType {
  if (!((der as unknown) instanceof Uint8Array)) throw new CmsError(`${what}: not bytes`);
  const info = new pkijs.ContentInfo({ schema: parseAsn1(toArrayBuffer(der), what) });
  if (info.contentType !== contentType) throw new CmsError(`${what}: content type ${info.contentType}, expected ${contentType}`);
  return info.content as asn1js.AsnType;
}

function contentInfoDer(contentType: string, content: asn1js.AsnType): Buffer {
  return Buffer.from(new pkijs.ContentInfo({ contentType, content }).toSchema().toBER(false));
}

function oidText(block: asn1js.AsnType | undefined): string | undefined {
  return block instanceof asn1js.ObjectIdentifier ? block.valueBlock.toString() : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Protection keys

/** A positive, 16-byte serial number (RFC 5280 §4.1.2.2: at most 20 octets, positive; random so it is unique). */
function randomSerialHex(): string {
  const serial = nodeCrypto.randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x40; // positive, and no leading zero octet to strip
  return serial.toString('hex');
}

/**
 * RSA-2048 (e=65537) key pair and a self-signed certificate for it: CN = `Pigeon protection: ${tenantName}`, random
 * serial, subjectKeyIdentifier, keyUsage digitalSignature + keyEncipherment (one key signs licences and receives
 * content keys), valid from a day before `now` (clock skew) to `validityYears` after it. Readers pin the certificate
 * itself, so its validity period is informative: an expired protection key still opens and verifies old messages.
 */
export async function createProtectionKey(opts: { tenantName: string; now: number; validityYears?: number }): Promise<KeyMaterial> {
  const { tenantName, now } = opts;
  const validityYears = opts.validityYears ?? DEFAULT_VALIDITY_YEARS;
  if (typeof tenantName !== 'string' || tenantName.trim() === '') throw new CmsError('tenantName must be a non-empty string');
  if (!Number.isFinite(now)) throw new CmsError('now must be a time in milliseconds');
  if (!(Number.isInteger(validityYears) && validityYears > 0 && validityYears <= 100)) {
    throw new CmsError('validityYears must be an integer from 1 to 100');
  }

  return asCmsError('createProtectionKey', async () => {
    const publicExponent = new Uint8Array([1, 0, 1]); // 65537
    const algorithm = { name: 'RSASSA-PKCS1-v1_5', modulusLength: RSA_MODULUS_BITS, publicExponent, hash: 'SHA-256' };
    const keys = await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
    const start = Math.floor(now / 1000) * 1000; // X.509 times have whole seconds
    const notBefore = new Date(start - DAY_MS);
    const notAfter = new Date(start);
    notAfter.setUTCFullYear(notAfter.getUTCFullYear() + validityYears);
    const certificate = await x509.X509CertificateGenerator.createSelfSigned(
      {
        serialNumber: randomSerialHex(),
        // The JSON form of the name: the tenant's name is a value, never parsed as RDN syntax (commas, plus signs...).
        name: [{ CN: [`Pigeon protection: ${tenantName}`] }],
        notBefore,
        notAfter,
        keys,
        signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
        extensions: [
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
        ],
      },
      webcrypto,
    );
    const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
    return {
      certificatePem: certificate.toString('pem'),
      privateKeyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'),
    };
  });
}

// ---------------------------------------------------------------------------------------------------------------
// EnvelopedData

/**
 * DER EnvelopedData of `content` for every certificate: AES-256-CBC content encryption, RSAES-OAEP (SHA-256,
 * MGF1-SHA-256) key transport, recipients identified by issuerAndSerialNumber.
 */
export async function encryptFor(content: Buffer, recipientCertificatesPem: string[]): Promise<Buffer> {
  if (!Array.isArray(recipientCertificatesPem) || recipientCertificatesPem.length === 0) {
    throw new CmsError('encryptFor: no recipient certificates');
  }
  return asCmsError('encryptFor', async () => {
    const crypto = engine();
    // disableSplit: pkijs would otherwise cut the ciphertext into a constructed OCTET STRING, which is BER, not DER.
    const enveloped = new pkijs.EnvelopedData({ disableSplit: true });
    for (const pem of recipientCertificatesPem) {
      enveloped.addRecipientByCertificate(parseCertificate(pem), { oaepHashAlgorithm: 'SHA-256' }, 1, crypto);
    }
    await enveloped.encrypt({ name: 'AES-CBC', length: 256 }, toArrayBuffer(content), crypto);
    // RFC 5652 §6.1: no originatorInfo, no unprotectedAttrs and only version-0 KeyTransRecipientInfos make version 0
    // (pkijs always writes 2).
    enveloped.version = 0;
    return contentInfoDer(OID.envelopedData, enveloped.toSchema());
  });
}

interface ParsedKey {
  certificate: pkijs.Certificate;
  pkcs8: ArrayBuffer;
  /** subjectKeyIdentifier extension value and the SHA-1 of the public key (what it usually is): either may be used. */
  keyIds: Buffer[];
}

async function parseKey(key: KeyMaterial): Promise<ParsedKey> {
  const certificate = parseCertificate(key.certificatePem);
  const pkcs8 = pemBlock(key.privateKeyPem, 'PRIVATE KEY');
  const keyIds: Buffer[] = [];
  const ski = certificate.extensions?.find((e) => e.extnID === pkijs.id_SubjectKeyIdentifier)?.parsedValue;
  if (ski instanceof asn1js.OctetString) keyIds.push(Buffer.from(ski.valueBlock.valueHexView));
  const spki = certificate.subjectPublicKeyInfo.subjectPublicKey.valueBlock.valueHexView;
  keyIds.push(Buffer.from(await webcrypto.subtle.digest('SHA-1', spki)));
  return { certificate, pkcs8, keyIds };
}

function ridMatches(rid: pkijs.KeyTransRecipientInfo['rid'], key: ParsedKey): boolean {
  if (rid instanceof pkijs.IssuerAndSerialNumber) {
    return rid.issuer.isEqual(key.certificate.issuer) && rid.serialNumber.isEqual(key.certificate.serialNumber);
  }
  if (rid instanceof asn1js.OctetString) {
    const id = Buffer.from(rid.valueBlock.valueHexView);
    return key.keyIds.some((k) => k.equals(id));
  }
  return false;
}

/**
 * Refuses key transport other than RSAES-OAEP: PKCS#1 v1.5 (openssl's default) is open to padding-oracle attacks
 * and WebCrypto cannot decrypt it anyway. WebCrypto's RSA-OAEP uses MGF1 with the OAEP hash and an empty label, so
 * other parameters are refused here, with a reason, rather than failing as a wrong key would.
 */
function checkKeyTransport(algorithm: pkijs.AlgorithmIdentifier): void {
  if (algorithm.algorithmId === OID.rsaEncryption) throw new CmsError('key transport RSAES-PKCS1-v1_5 is refused: use RSAES-OAEP');
  if (algorithm.algorithmId !== OID.rsaesOaep) throw new CmsError(`key transport ${algorithm.algorithmId} is not supported`);
  const params = new pkijs.RSAESOAEPParams(algorithm.algorithmParams ? { schema: algorithm.algorithmParams } : {});
  const hash = params.hashAlgorithm.algorithmId;
  if (!OAEP_HASHES.has(hash)) throw new CmsError(`RSAES-OAEP hash ${hash} is not supported`);
  if (params.maskGenAlgorithm.algorithmId !== OID.mgf1) throw new CmsError('RSAES-OAEP mask generation other than MGF1');
  const mgfHash = new pkijs.AlgorithmIdentifier({ schema: params.maskGenAlgorithm.algorithmParams }).algorithmId;
  if (mgfHash !== hash) throw new CmsError('RSAES-OAEP with an MGF1 hash other than the OAEP hash is not supported');
  // pSourceAlgorithm [2] absent means the empty label (RFC 4055 §4.1); pkijs' default object says otherwise, so the
  // encoding itself is looked at.
  const fields = algorithm.algorithmParams instanceof asn1js.Sequence ? algorithm.algorithmParams.valueBlock.value : [];
  if (fields.some((f) => f.idBlock.tagClass === 3 && f.idBlock.tagNumber === 2)) {
    const label = params.pSourceAlgorithm.algorithmParams;
    const emptyLabel = label instanceof asn1js.OctetString && label.valueBlock.valueHexView.byteLength === 0;
    if (params.pSourceAlgorithm.algorithmId !== OID.pSpecified || !emptyLabel) {
      throw new CmsError('RSAES-OAEP with a label is not supported');
    }
  }
}

function checkContentEncryption(enveloped: pkijs.EnvelopedData): void {
  const info = enveloped.encryptedContentInfo;
  if (info.contentType !== OID.data) throw new CmsError(`encrypted content type ${info.contentType}, expected id-data`);
  const algorithm = info.contentEncryptionAlgorithm;
  if (!AES_CBC_OIDS.has(algorithm.algorithmId)) {
    throw new CmsError(`content encryption ${algorithm.algorithmId} is not supported (AES-CBC only)`);
  }
  const iv = algorithm.algorithmParams;
  if (!(iv instanceof asn1js.OctetString) || iv.valueBlock.valueHexView.byteLength !== 16) throw new CmsError('AES-CBC without a 16-byte IV');
  if (!info.encryptedContent) throw new CmsError('no encrypted content (detached content is not supported)');
}

/**
 * Opens DER EnvelopedData with whichever of `keys` it was encrypted for (a KeyTransRecipientInfo whose
 * issuerAndSerialNumber or subjectKeyIdentifier names the key's certificate).
 *
 * AES-CBC has no integrity of its own: a changed ciphertext block decrypts to garbage unless it breaks the padding.
 * What binds the ciphertext is the licence's contentDigest, which readers must check before calling this (which
 * also keeps this function from ever acting as a padding oracle on data an attacker chose).
 */
export async function decryptWith(envelopedDer: Buffer, keys: KeyMaterial[]): Promise<Buffer> {
  return asCmsError('enveloped data', async () => {
    const enveloped = new pkijs.EnvelopedData({ schema: contentOf(envelopedDer, OID.envelopedData, 'enveloped data') });
    checkContentEncryption(enveloped);
    const parsedKeys = await Promise.all(keys.map(parseKey));
    const crypto = engine();
    let lastFailure: unknown;
    let matched = false;
    for (const [index, recipient] of enveloped.recipientInfos.entries()) {
      if (!(recipient.value instanceof pkijs.KeyTransRecipientInfo)) continue;
      const info = recipient.value;
      for (const key of parsedKeys.filter((k) => ridMatches(info.rid, k))) {
        matched = true;
        try {
          checkKeyTransport(info.keyEncryptionAlgorithm);
          const plain = await enveloped.decrypt(index, { recipientPrivateKey: key.pkcs8 }, crypto);
          return Buffer.from(plain);
        } catch (err) {
          lastFailure = err; // another recipient entry may still name one of the keys
        }
      }
    }
    if (!matched) throw new CmsError('enveloped data: encrypted for none of the given keys');
    if (lastFailure instanceof CmsError) throw lastFailure;
    throw new CmsError(`enveloped data: cannot be decrypted (${errorText(lastFailure)})`, { cause: lastFailure });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// SignedData

/** signingTime: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5652 §11.3), whole seconds. */
function signingTimeValue(now: number): asn1js.AsnType {
  const at = new Date(Math.floor(now / 1000) * 1000);
  return at.getUTCFullYear() < 2050 ? new asn1js.UTCTime({ valueDate: at }) : new asn1js.GeneralizedTime({ valueDate: at });
}

/** DER SET OF is sorted by the encodings of its elements (X.690 §11.6); openssl checks signatures over that form. */
function sortedForDer(attributes: pkijs.Attribute[]): pkijs.Attribute[] {
  const encoded = attributes.map((a) => ({ a, der: Buffer.from(a.toSchema().toBER(false)) }));
  return encoded.sort((x, y) => Buffer.compare(x.der, y.der)).map((e) => e.a);
}

/**
 * DER SignedData with `content` encapsulated (id-data), the signer's certificate included, SHA-256,
 * RSASSA-PKCS1-v1_5, signed attributes contentType, signingTime (`now`) and messageDigest.
 */
export async function signContent(content: Buffer, signer: KeyMaterial, now: number): Promise<Buffer> {
  return asCmsError('signContent', async () => {
    const certificate = parseCertificate(signer.certificatePem);
    const pkcs8 = pemBlock(signer.privateKeyPem, 'PRIVATE KEY');
    const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['sign']);
    const digest = nodeCrypto.createHash('sha256').update(content).digest();
    const attributes = sortedForDer([
      new pkijs.Attribute({ type: OID.contentTypeAttr, values: [new asn1js.ObjectIdentifier({ value: OID.data })] }),
      new pkijs.Attribute({ type: OID.signingTimeAttr, values: [signingTimeValue(now)] }),
      new pkijs.Attribute({ type: OID.messageDigestAttr, values: [new asn1js.OctetString({ valueHex: toArrayBuffer(digest) })] }),
    ]);
    const encapContentInfo = new pkijs.EncapsulatedContentInfo({ eContentType: OID.data });
    // Set after construction: pkijs' constructor would cut it into a constructed OCTET STRING (BER, not DER).
    encapContentInfo.eContent = new asn1js.OctetString({ valueHex: toArrayBuffer(content) });
    const signedData = new pkijs.SignedData({
      version: 1,
      encapContentInfo,
      certificates: [certificate],
      signerInfos: [
        new pkijs.SignerInfo({
          version: 1,
          sid: new pkijs.IssuerAndSerialNumber({ issuer: certificate.issuer, serialNumber: certificate.serialNumber }),
          signedAttrs: new pkijs.SignedAndUnsignedAttributes({ type: 0, attributes }),
        }),
      ],
    });
    await signedData.sign(privateKey, 0, 'SHA-256', undefined, engine());
    return contentInfoDer(OID.signedData, signedData.toSchema(true));
  });
}

function parseSignedData(der: Buffer): pkijs.SignedData {
  const signedData = new pkijs.SignedData({ schema: contentOf(der, OID.signedData, 'signed data') });
  if (signedData.encapContentInfo.eContentType !== OID.data) throw new CmsError('signed data: encapsulated content type is not id-data');
  return signedData;
}

function encapsulatedContent(signedData: pkijs.SignedData): Buffer {
  const eContent = signedData.encapContentInfo.eContent;
  if (!eContent) throw new CmsError('signed data: detached content (no encapsulated content)');
  return Buffer.from(eContent.getValue());
}

/** RFC 5652 §5.3: with signed attributes, contentType must be there, once, single-valued, naming eContentType. */
function checkSignedAttributes(signerInfo: pkijs.SignerInfo, eContentType: string): void {
  const attributes = signerInfo.signedAttrs?.attributes;
  if (!attributes) return;
  for (const type of [OID.contentTypeAttr, OID.messageDigestAttr]) {
    const found = attributes.filter((a) => a.type === type);
    if (found.length !== 1 || found[0]!.values.length !== 1) {
      throw new CmsError(`signed data: attribute ${type} must occur once with one value`);
    }
  }
  const contentType = attributes.find((a) => a.type === OID.contentTypeAttr)!.values[0];
  if (oidText(contentType) !== eContentType) throw new CmsError('signed data: contentType attribute does not match the content');
}

/**
 * Verifies DER SignedData with encapsulated content. The one signer's certificate must be one of
 * `trustedCertificatesPem` (pinning: looked up there by the signer identifier, never taken from the message, no
 * chain, no validity dates, so a retired key still verifies what it signed) and the signature must verify with it.
 * Answers the content and the trusted PEM that verified it.
 */
export async function verifySignedContent(
  der: Buffer,
  trustedCertificatesPem: string[],
): Promise<{ content: Buffer; signerCertificatePem: string }> {
  return asCmsError('signed data', async () => {
    const signedData = parseSignedData(der);
    const content = encapsulatedContent(signedData);
    if (signedData.signerInfos.length !== 1) {
      throw new CmsError(`signed data: ${signedData.signerInfos.length} signers, expected exactly one`);
    }
    const signerInfo = signedData.signerInfos[0]!;
    const digestAlgorithm = signerInfo.digestAlgorithm.algorithmId;
    if (!SIGNATURE_DIGESTS.has(digestAlgorithm)) throw new CmsError(`signed data: digest ${digestAlgorithm} is not accepted`);
    checkSignedAttributes(signerInfo, signedData.encapContentInfo.eContentType);

    const trusted = trustedCertificatesPem.map((pem) => ({ pem, certificate: parseCertificate(pem) }));
    // pkijs finds the signer among `certificates`: offering only the pinned ones is what makes this pinning.
    signedData.certificates = trusted.map((t) => t.certificate);
    let result: pkijs.SignedDataVerifyResult;
    try {
      result = await signedData.verify({ signer: 0, checkChain: false, extendedMode: true }, engine());
    } catch (err) {
      const code = (err as { code?: number }).code;
      if (code === 3) throw new CmsError('signed data: the signer is not a trusted certificate', { cause: err });
      throw new CmsError(`signed data: ${errorText(err)}`, { cause: err });
    }
    if (result.signatureVerified !== true) throw new CmsError('signed data: the signature does not verify');
    const signer = trusted.find((t) => t.certificate === result.signerCertificate);
    if (!signer) throw new CmsError('signed data: the signer is not a trusted certificate');
    return { content, signerCertificatePem: signer.pem };
  });
}

/** The encapsulated content of SignedData, NOT verified (to show a descriptor before trust is known). */
export function signedContentUnverified(der: Buffer): Buffer {
  return asCmsErrorSync('signed data', () => encapsulatedContent(parseSignedData(der)));
}
