/**
 * What opening protected mail costs (`npm run bench:protection`), through the real services over a real SQLite
 * file, as the server wires them: an item read (`GET /v1/items/{id}`'s work: the item, its body, the view) of a
 * plain message against the same message protected (Encrypt Only), for a reader with the rightsManagement
 * capability:
 *   - cold: the first open of each message (parse the wrapper, verify the licence, RSA-OAEP unwrap, AES decrypt,
 *     parse the inner message, render);
 *   - warm: opened again within the reader's minute of memory;
 * and the cost of protecting one message on send (encrypt + sign + wrap). Medians and p99, printed as a table.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { openSqliteStore } from '../server/store/sqlite';
import { withHotCache } from '../server/store/cached';
import { ManualClock } from '../server/clock';
import { createDelivery } from '../server/mail/delivery';
import { createContentService } from '../server/content/service';
import { createProtectionService } from '../server/protection/service';
import { createSmimeInspector } from '../server/protection/smime';
import { composeMessage } from '../server/send/compose';
import { BUILT_IN_TEMPLATES } from '../server/protection/config';
import { percentile } from './lib/stats';

const N = Number(process.env.BENCH_PROTECTION_MESSAGES ?? 200);
const ms = (x: number) => `${x.toFixed(2)} ms`;

/** Each of `n` calls of `fn`, one after another, in ms. */
async function time(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-bench-protection-'));
  const store = withHotCache(openSqliteStore(path.join(dir, 'pigeon.db')));
  const clock = new ManualClock(Date.now());
  const log = pino({ level: 'silent' });
  let delivery: ReturnType<typeof createDelivery>;
  const protection = createProtectionService({
    store,
    clock,
    log,
    serverSecret: crypto.randomBytes(32),
    smime: createSmimeInspector({ trustAnchorsPem: [] }),
    prepare: (raw) => delivery.prepare(raw),
  });
  delivery = createDelivery({ store, clock, duplicateWindowSeconds: 0, threadSubjectWindowSeconds: 0, inspect: protection.inspect });
  const content = createContentService(store, protection);

  const tenant = await store.tenants.create('bench', clock.now());
  const mk = async (name: string) => {
    const user = await store.users.create({ tenantId: tenant.id, username: name, email: `${name}@bench.test`, displayName: name, role: 'user', passwordHash: null }, clock.now());
    await store.mailboxes.create(user.id, clock.now());
    return user;
  };
  const alice = await mk('alice');
  const bob = await mk('bob');
  const reader = { userId: bob.id, tenantId: tenant.id, address: bob.email, capable: true };
  const encryptOnly = BUILT_IN_TEMPLATES.find((t) => t.id === 'encrypt-only')!;
  const grant = { template: { id: encryptOnly.id, name: encryptOnly.name }, rights: [...encryptOnly.rights], expiresAt: null };
  // A typical business message: 8 KB of HTML and a 40 KB attachment.
  const html = `<p>${'Quarterly figures and the plan for next year. '.repeat(170)}</p>`;
  const attachment = crypto.randomBytes(40 * 1024);

  const plainIds: string[] = [];
  const protectedIds: string[] = [];
  const protectCost: number[] = [];
  for (let i = 0; i < N; i++) {
    const composed = await composeMessage(
      {
        from: { name: 'Alice', address: alice.email },
        to: [{ address: bob.email }],
        cc: [],
        bcc: [],
        subject: `Figures ${i}`,
        body: { contentType: 'html', content: html },
        attachments: [{ name: 'figures.bin', contentType: 'application/octet-stream', content: attachment, isInline: false, contentId: null }],
        importance: 'normal',
      },
      'bench.test',
      clock.now(),
    );
    const t0 = performance.now();
    const wrapped = await protection.protect({ tenantId: tenant.id, owner: alice.email, inner: composed.withoutBcc, grant, recipients: [bob.email], messageId: composed.internetMessageId });
    protectCost.push(performance.now() - t0);
    const [plain] = await delivery.deliver(await delivery.prepare(composed.withoutBcc), [{ userId: bob.id }], { duplicates: 'import' });
    const [prot] = await delivery.deliver(await delivery.prepare(wrapped), [{ userId: bob.id, folderKind: 'archive' }], { duplicates: 'import' });
    plainIds.push(plain!.itemId);
    protectedIds.push(prot!.itemId);
  }

  const open = async (id: string) => content.withBody(await content.ownItem(bob.id, id), undefined, reader);
  const plainRead = await time(N, (i) => open(plainIds[i]!));
  const cold = await time(N, (i) => open(protectedIds[i]!));
  const warm = await time(N, (i) => open(protectedIds[i]!));
  const sample = await open(protectedIds[0]!);
  if (!String((sample.body as { content: string }).content).includes('Quarterly figures')) throw new Error('the protected message did not open');

  const rows: Array<[string, number[]]> = [
    ['item read, plain message', plainRead],
    ['item read, protected, first open', cold],
    ['item read, protected, opened again', warm],
    ['protect on send (encrypt + sign + wrap)', protectCost],
  ];
  console.log(`${N} messages of ${Math.round((html.length + attachment.length) / 1024)} KB (8 KB HTML + 40 KB attachment), one reader with rightsManagement\n`);
  console.log(`| operation | median | p99 |\n|---|---|---|`);
  for (const [name, xs] of rows) console.log(`| ${name} | ${ms(percentile(xs, 50))} | ${ms(percentile(xs, 99))} |`);
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
