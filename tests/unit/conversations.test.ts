/**
 * Conversation sync and actions at their edges, over a real SQLite store: an action that fails halfway changes
 * nothing; a no-change poll reads nothing and answers its own token with the same window; a soft reset and a device
 * reset answer 410 with their reasons; the page's prebuilt JSON is exactly the page.
 */
import { SyncWorld, conversationSyncOf } from '../helpers/syncWorld';
import { createConversationService } from '../../server/conversations/service';
import { conversationPageJson, createConversationSync, type ConversationSyncRequest } from '../../server/conversations/sync';
import type { MailService } from '../../server/mail/service';
import type { Store } from '../../server/store/types';

let w: SyncWorld;
beforeEach(async () => {
  w = await SyncWorld.open();
});
afterEach(() => w.close());

async function thread(conversationId: string, count: number) {
  const inbox = await w.folder('inbox');
  const items = [];
  for (let i = 0; i < count; i++) items.push(await w.store.items.create({ ...w.newItem(inbox.id, w.clock.now() + i), conversationId }, w.clock.now()));
  return items;
}

test('an action that fails on its second message changes nothing (one unit of work)', async () => {
  const items = await thread('conv-atomic', 3);
  const archive = await w.folder('archive');
  let moves = 0;
  const failing: MailService = {
    ...w.mail,
    steps: {
      ...w.mail.steps,
      *move(...args: Parameters<MailService['steps']['move']>) {
        if (++moves === 2) throw new Error('injected failure');
        return yield* w.mail.steps.move(...args);
      },
    },
  };
  const service = createConversationService({ store: w.store, clock: w.clock, mail: failing });
  const before = (await w.store.mailboxes.get(w.user.id))!.highestModseq;
  await expect(service.act(w.user.id, 'conv-atomic', { action: 'move', destinationFolderId: archive.id })).rejects.toThrow('injected failure');
  expect(moves).toBe(2);
  const after = await w.store.items.byIds(w.user.id, items.map((i) => i.id));
  expect(after.map((i) => i.folderId)).toEqual(items.map((i) => i.folderId));
  expect((await w.store.mailboxes.get(w.user.id))!.highestModseq).toBe(before);

  // The same action with a working mail service moves all three, newest first.
  const ok = await createConversationService({ store: w.store, clock: w.clock, mail: w.mail }).act(w.user.id, 'conv-atomic', { action: 'move', destinationFolderId: archive.id });
  expect(ok.affected).toEqual(items.map((i) => i.id).reverse());
});

/** The store, counting every call a sync makes of it (units of work and conversation reads). */
function counted(store: Store) {
  const calls: string[] = [];
  const conversations = new Proxy(store.conversations, {
    get(target, name) {
      const fn = target[name as keyof typeof target] as (...a: unknown[]) => unknown;
      return (...args: unknown[]) => {
        calls.push(`conversations.${String(name)}`);
        return fn.apply(target, args);
      };
    },
  });
  const proxy = new Proxy(store, {
    get(target, name) {
      if (name === 'conversations') return conversations;
      if (name === 'run') {
        return (unit: Parameters<Store['run']>[0]) => {
          calls.push('run');
          return target.run(unit);
        };
      }
      const value = target[name as keyof Store];
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { store: proxy as Store, calls };
}

test('a no-change poll reads nothing and answers the token it was given, with the same window', async () => {
  await thread('conv-a', 2);
  await thread('conv-b', 1);
  const { store, calls } = counted(w.store);
  const sync = createConversationSync({ store, clock: w.clock, codec: w.codec, trimAfterMs: 3600_000, window: w.window });
  const device = await w.device();
  const inbox = await w.folder('inbox');
  const request = async (token?: string): Promise<ConversationSyncRequest> => ({
    userId: w.user.id, device: (await w.store.devices.byId(device.id))!, folder: (await w.store.folders.byId(w.user.id, inbox.id))!, token, maxChanges: 100, loadMore: false,
  });
  const first = await sync(await request());
  expect(first.created.map((c) => c.id).sort()).toEqual(['conv-a', 'conv-b']);
  expect(first.window).toEqual({ size: w.window.initial, max: w.window.max, conversationsInFolder: 2, hasOlder: false });
  calls.length = 0;
  const poll = await sync(await request(first.token));
  expect(calls).toEqual([]); // SQLite's folder read carried the mailbox: nothing else was read
  expect(poll).toEqual({ ...first, created: [] });

  // A change in the folder: the next poll reads, and answers it.
  await thread('conv-c', 1);
  const changed = await sync(await request(first.token));
  expect(calls).toContain('run');
  expect(changed.updated.map((c) => c.id)).toEqual(['conv-c']);
  expect(changed.window.conversationsInFolder).toBe(3);
  expect(changed.token).not.toBe(first.token);
});

test('a soft reset answers 410 viewChanged, an admin reset 410 deviceReset, another folder\'s token 400', async () => {
  await thread('conv-a', 1);
  const device = await w.device();
  const sync = conversationSyncOf(w);
  const request = async (token?: string, folderKind: 'inbox' | 'archive' = 'inbox'): Promise<ConversationSyncRequest> => ({
    userId: w.user.id, device: (await w.store.devices.byId(device.id))!, folder: (await w.folder(folderKind))!, token, maxChanges: 100, loadMore: false,
  });
  const { token } = await sync(await request());
  await expect(sync(await request(token, 'archive'))).rejects.toMatchObject({ status: 400, code: 'invalidToken' });

  const settings = (await w.store.devices.byId(device.id))!.viewSettings;
  await w.store.devices.setViewSettings(device.id, { ...settings, threaded: !settings.threaded }, w.clock.now());
  await expect(sync(await request(token))).rejects.toMatchObject({ status: 410, code: 'resyncRequired', extra: { reason: 'viewChanged' } });

  const { token: second } = await sync(await request());
  await w.store.devices.bumpEpoch(device.id, w.clock.now());
  await expect(sync(await request(second))).rejects.toMatchObject({ status: 410, extra: { reason: 'deviceReset' } });
});

test('calendar and contacts folders are refused', async () => {
  const device = await w.device();
  for (const kind of ['calendar', 'contacts'] as const) {
    await expect(conversationSyncOf(w)({ userId: w.user.id, device, folder: await w.folder(kind), maxChanges: 10, loadMore: false })).rejects.toMatchObject({
      status: 400,
      code: 'invalidRequest',
    });
  }
});

test('the page JSON is exactly JSON.stringify of the page', async () => {
  await thread('conv-"quoted"', 2);
  await thread('conv-ü', 1);
  const device = await w.device();
  const page = await conversationSyncOf(w)({ userId: w.user.id, device, folder: await w.folder('inbox'), maxChanges: 100, loadMore: false });
  expect(page.created).toHaveLength(2);
  expect(conversationPageJson(page)).toBe(JSON.stringify(page));
});
