/**
 * A tenant's protection keys and its protection document, as the reader and the writer of protected mail need them.
 *
 * Keys: the store keeps each private key sealed with the server secret (keys.ts); the newest unretired key is the
 * active one. A tenant gets its first key the first time it protects anything, so a tenant that never uses
 * protection never holds a key. Opened keys are kept in memory by key id (a key never changes once written); the
 * list itself is read from the store on every use, so a rotation made by another worker or node is seen at once.
 *
 * The document is compiled once per version (like the access document).
 */
import type { Clock } from '../clock';
import type { Store, ProtectionKeyRecord } from '../store/types';
import { createProtectionKey, type KeyMaterial } from './cms';
import { createKeySealer } from './keys';
import { compileProtection, EMPTY_PROTECTION_DOCUMENT, type CompiledProtection, type ProtectionDocument } from './config';
import { newId } from '../ids';

export interface TenantKey extends KeyMaterial {
  id: string;
  createdAt: number;
  retiredAt: number | null;
}

export function createKeyring(deps: { store: Store; clock: Clock; serverSecret: Buffer }) {
  const { store, clock } = deps;
  const sealer = createKeySealer(deps.serverSecret);
  const opened = new Map<string, TenantKey>();
  const compiled = new Map<string, { version: number; value: CompiledProtection }>();
  /** One key creation at a time per tenant in this process (two first uses at once would make two keys). */
  const creating = new Map<string, Promise<TenantKey>>();

  function open(record: ProtectionKeyRecord): TenantKey {
    let key = opened.get(record.id);
    if (!key) {
      key = { id: record.id, certificatePem: record.certificatePem, privateKeyPem: sealer.open(record.sealedPrivateKey), createdAt: record.createdAt, retiredAt: record.retiredAt };
      opened.set(record.id, key);
    }
    // Retirement is the one thing that changes on a stored key.
    return key.retiredAt === record.retiredAt ? key : { ...key, retiredAt: record.retiredAt };
  }

  /** Every key of the tenant, newest first (retired ones too: they still read what they protected). */
  async function keys(tenantId: string): Promise<TenantKey[]> {
    return (await store.protection.keys(tenantId)).map(open);
  }

  async function addKey(tenantId: string): Promise<TenantKey> {
    const tenant = await store.tenants.get(tenantId);
    const now = clock.now();
    const material = await createProtectionKey({ tenantName: tenant?.name ?? tenantId, now });
    const record: ProtectionKeyRecord = {
      id: newId(),
      tenantId,
      certificatePem: material.certificatePem,
      sealedPrivateKey: sealer.seal(material.privateKeyPem),
      createdAt: now,
      retiredAt: null,
    };
    await store.protection.rotateKey(record);
    return open(record);
  }

  /** The key new content is protected with; made on first use. */
  async function activeKey(tenantId: string): Promise<TenantKey> {
    const current = (await keys(tenantId)).find((k) => k.retiredAt === null);
    if (current) return current;
    let pending = creating.get(tenantId);
    if (!pending) {
      pending = addKey(tenantId).finally(() => creating.delete(tenantId));
      creating.set(tenantId, pending);
    }
    return pending;
  }

  /** A new active key; the old ones are retired, and keep reading what they protected. */
  function rotate(tenantId: string): Promise<TenantKey> {
    return addKey(tenantId);
  }

  /** The tenant's document, compiled; the empty document (built-in templates, no labels) when none is stored. */
  async function document(tenantId: string): Promise<CompiledProtection & { version: number }> {
    const record = await store.protection.config(tenantId);
    const version = record?.version ?? 0;
    const hit = compiled.get(tenantId);
    if (hit && hit.version === version) return { ...hit.value, version };
    // Stored documents were validated on the way in; the JSON is trusted to have that shape.
    const doc = record ? (JSON.parse(record.doc) as ProtectionDocument) : EMPTY_PROTECTION_DOCUMENT;
    const value = compileProtection(doc);
    compiled.set(tenantId, { version, value });
    return { ...value, version };
  }

  return { keys, activeKey, rotate, document };
}

export type Keyring = ReturnType<typeof createKeyring>;
