/**
 * PIGEON_COMPLIANCE_PARTNERS_FILE: the MDMs allowed to report device compliance, read once at start-up. A bad file
 * stops start-up (ConfigError) rather than leave the compliance API half-configured.
 *
 *   [{ "id": "intune-like", "tenantIds": ["<tenant id>"],
 *      "keys": [{ "keyId": "mdm-2026", "publicKeyFile": "mdm-2026.pem" }] }]
 *
 * A key is a public JWK (`publicKey` as an object), PEM text (`publicKey` as a string) or a PEM file
 * (`publicKeyFile`, relative to the partners file).
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../config';
import type { CompliancePartnerConfig } from './compliancePartner';

const keySchema = z
  .strictObject({
    keyId: z.string().min(1).max(200),
    publicKey: z.union([z.string().min(1), z.record(z.string(), z.unknown())]).optional(),
    publicKeyFile: z.string().min(1).optional(),
  })
  .refine((k) => (k.publicKey === undefined) !== (k.publicKeyFile === undefined), 'give exactly one of publicKey and publicKeyFile');

const fileSchema = z.array(
  z.strictObject({
    id: z.string().min(1).max(200),
    tenantIds: z.array(z.string().min(1)).min(1, 'must name at least one tenant'),
    keys: z.array(keySchema).min(1, 'must list at least one key'),
  }),
);

export function loadCompliancePartners(file: string): CompliancePartnerConfig[] {
  if (!file) return [];
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError('PIGEON_COMPLIANCE_PARTNERS_FILE', `cannot read ${file} as JSON (${(err as Error).message})`);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ConfigError('PIGEON_COMPLIANCE_PARTNERS_FILE', `${issues}`);
  }
  const dir = path.dirname(file);
  return parsed.data.map((p) => ({
    id: p.id,
    tenantIds: p.tenantIds,
    keys: p.keys.map((k) => {
      if (k.publicKeyFile === undefined) return { keyId: k.keyId, publicKey: k.publicKey as string };
      const where = path.resolve(dir, k.publicKeyFile);
      try {
        return { keyId: k.keyId, publicKey: fs.readFileSync(where, 'utf8') };
      } catch (err) {
        throw new ConfigError('PIGEON_COMPLIANCE_PARTNERS_FILE', `key ${k.keyId}: cannot read ${k.publicKeyFile} (${(err as Error).message})`);
      }
    }),
  }));
}
