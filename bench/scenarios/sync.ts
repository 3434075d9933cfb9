/**
 * Scenarios 1–4: item sync of the bench user's inbox, as an app does it.
 *   1. no-change poll (the call every app makes most): latency, and throughput at 16 connections;
 *   2. the initial 500-item window, gzip on and off: latency and bytes;
 *   3. incremental sync after 100 mixed changes (50 flag changes, 25 new messages, 25 deletions);
 *   4. load more (500 → 1000) and the trim back to 500.
 * Every measured request is one the protocol says may be replayed (a sync token presented again answers the
 * same), so each figure repeats one exact request and the ceiling replays Pigeon's exact answer to it.
 */
import path from 'node:path';
import { openSqliteStore } from '../../server/store/sqlite';
import type { Store } from '../../server/store/types';
import { syncPath, syncToEnd, type SignedIn, type SyncPage } from '../lib/client';
import { httpFigure, httpFigures, type BenchContext, type Figure } from '../lib/figure';
import { json, type Recorded, type Target } from '../lib/http';
import { BENCH_USER } from '../lib/mailbox';

const page = (r: Recorded) => json<SyncPage>(r);
const entries = (p: SyncPage) => p.created.length + p.updated.length + p.removed.length;

function expectPage(what: string, want: (p: SyncPage) => boolean) {
  return (r: Recorded) => {
    const p = page(r);
    if (!want(p)) throw new Error(`${what}: unexpected page (created ${p.created.length}, updated ${p.updated.length}, removed ${p.removed.length}, more ${p.moreAvailable})`);
  };
}

/** A Pigeon holding one of the bench mailboxes, and the signed-in app device measuring it. */
export interface Mailbox {
  size: string;
  pigeon: Target & { dataDir: string };
  app: SignedIn;
  /** Opens another store over the mailbox's data (default: the SQLite file in the data dir). */
  openStore?: () => Promise<Store>;
  /** Set apart figure ids and labels (`--store`: `.pg` and ` — PostgreSQL`). */
  idSuffix?: string;
  labelSuffix?: string;
}

/** Latency on every mailbox side by side (does a poll cost more in a bigger mailbox?); throughput on the first. */
export async function pollFigures(ctx: BenchContext, boxes: Mailbox[]): Promise<Figure[]> {
  const check = expectPage('no-change poll', (pg) => entries(pg) === 0 && !pg.moreAvailable);
  const items = [];
  for (const { size, pigeon, app } of boxes) {
    const { token } = await syncToEnd(pigeon, app);
    const x = { method: 'GET', path: syncPath(app, { token }), headers: app.headers };
    items.push({ pigeon, x, def: { id: `poll.latency.${size}`, scenario: 1, label: `no-change poll, ${size} mailbox, latency`, check } });
  }
  const latency = await httpFigures(ctx, 'latency', items);
  const first = items[0]!;
  const load = await httpFigures(ctx, 'throughput', [{ ...first, def: { ...first.def, id: `poll.throughput.${boxes[0]!.size}`, label: `no-change poll, ${boxes[0]!.size} mailbox, 16 connections` } }]);
  return [...latency, ...load];
}

export async function initialWindowFigures(ctx: BenchContext, p: Target, s: SignedIn): Promise<Figure[]> {
  const out: Figure[] = [];
  for (const gzip of [true, false]) {
    const x = { method: 'GET', path: syncPath(s, { maxChanges: 512 }), headers: { ...s.headers, ...(gzip ? { 'accept-encoding': 'gzip' } : {}) } };
    out.push(
      await httpFigure(ctx, p, x, {
        id: `initial.${gzip ? 'gzip' : 'identity'}`,
        scenario: 2,
        label: `initial 500-item window, gzip ${gzip ? 'on' : 'off'}`,
        kind: 'latency',
        check: expectPage('initial window', (pg) => pg.created.length === 500 && !pg.moreAvailable),
      }),
    );
  }
  return out;
}

export async function windowFigures(ctx: BenchContext, p: Target, s: SignedIn): Promise<Figure[]> {
  const { token } = await syncToEnd(p, s);
  const more = { method: 'GET', path: syncPath(s, { token, loadMore: true, maxChanges: 512 }), headers: s.headers };
  let extended = '';
  const loadMore = await httpFigure(ctx, p, more, {
    id: 'window.loadMore',
    scenario: 4,
    label: 'load more, 500 → 1000',
    kind: 'latency',
    check: (r) => {
      expectPage('load more', (pg) => pg.created.length === 500 && !pg.moreAvailable)(r);
      extended = page(r).token;
    },
  });
  // The server trims an extended window after PIGEON_WINDOW_TRIM_AFTER (1 s in the bench): wait it out.
  await new Promise((r) => setTimeout(r, 1_200));
  const trim = { method: 'GET', path: syncPath(s, { token: extended, maxChanges: 512 }), headers: s.headers };
  const trimmed = await httpFigure(ctx, p, trim, {
    id: 'window.trim',
    scenario: 4,
    label: 'trim, 1000 → 500',
    kind: 'latency',
    check: expectPage('trim', (pg) => pg.removed.length === 500 && pg.removed.every((e) => e.reason === 'evicted')),
  });
  return [loadMore, trimmed];
}

/**
 * 100 mixed changes made in the store while the server runs (a second writer on the same SQLite file, as an admin
 * tool would be; on PostgreSQL another node's store, whose commit feed tells the server), then the sync from the token taken before them. Changes go to items of the device's window, so
 * every one of them is work for the sync, and new messages push nothing out (25 in, 25 deleted). The mailboxes are
 * measured side by side, so their ratio (does the cost depend on the mailbox's size?) is not the machine's drift.
 */
export async function incrementalFigures(ctx: BenchContext, boxes: Mailbox[]): Promise<Figure[]> {
  const items = [];
  for (const box of boxes) {
    const { size, pigeon, app } = box;
    const { token, held } = await syncToEnd(pigeon, app);
    await changeHundred(await storeOf(box), app.inboxId, [...held].sort().reverse());
    const x = { method: 'GET', path: syncPath(app, { token, maxChanges: 512 }), headers: app.headers };
    const check = expectPage('incremental', (pg) => entries(pg) === 100 && !pg.moreAvailable);
    items.push({ pigeon, x, def: { id: `incremental.${size}${box.idSuffix ?? ''}`, scenario: 3, label: `incremental after 100 changes, ${size} mailbox${box.labelSuffix ?? ''}`, check } });
  }
  return httpFigures(ctx, 'latency', items);
}

const storeOf = (box: Mailbox): Promise<Store> => (box.openStore ? box.openStore() : Promise.resolve(openSqliteStore(path.join(box.pigeon.dataDir, 'pigeon.db'))));

/** 50 flag-and-read changes, 25 new messages, 25 deletions in one transaction; `held` newest first. Closes `store`. */
export async function changeHundred(store: Store, inboxId: string, held: string[]): Promise<void> {
  try {
    const user = (await store.users.byUsername(BENCH_USER.username))!;
    const now = Date.now();
    await store.run(function* (tx) {
      for (const id of held.slice(0, 50)) {
        const item = (yield* tx.items.byId(user.id, id))!;
        yield* tx.items.update(user.id, id, { isFlagged: !item.isFlagged, isRead: !item.isRead }, now);
      }
      for (let i = 0; i < 25; i++) {
        yield* tx.items.create(
          { userId: user.id, folderId: inboxId, type: 'email', receivedAt: now + i, subject: `new message ${i}`, from: { name: 'New Sender', address: 'new@example.org' }, preview: 'A new message arrived.' },
          now,
        );
      }
      for (const id of held.slice(50, 75)) yield* tx.items.delete(user.id, id, now);
    });
  } finally {
    await store.close();
  }
}
