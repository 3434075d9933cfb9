/**
 * `store.exclusive(task, fn)`: the jobs that must run once across every node sharing the data (the purges, the
 * outbox relay). On both backends: `fn` runs and its answer comes back, a second call for the same task while it runs
 * is refused (or, with `wait`, runs after it), other tasks run alongside, and a rejection is the caller's and frees the
 * task. On PostgreSQL the task is also refused to another store over the same database (another node) for as long as
 * one holds it, and is free again once that store is closed, as when a node dies.
 */
import { eachBackend } from './fixtures';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise and the function that settles it. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

eachBackend('exclusive jobs', (t, backend) => {
  test('fn runs and its answer comes back; the same task meanwhile is refused, another task runs', async () => {
    const { store } = t();
    const hold = gate();
    const first = store.exclusive('contract-a', async () => {
      await hold.opened;
      return 42;
    });
    await sleep(50); // the first has its lock
    expect(await store.exclusive('contract-a', async () => 'twice')).toEqual({ ran: false });
    expect(await store.exclusive('contract-b', async () => 'other')).toEqual({ ran: true, value: 'other' });
    hold.open();
    expect(await first).toEqual({ ran: true, value: 42 });
    expect(await store.exclusive('contract-a', async () => 'again')).toEqual({ ran: true, value: 'again' });
  });

  test('with wait, the call runs once the holder is done', async () => {
    const { store } = t();
    const hold = gate();
    const order: string[] = [];
    const first = store.exclusive('contract-wait', async () => {
      await hold.opened;
      order.push('first');
    });
    await sleep(50);
    const second = store.exclusive('contract-wait', async () => void order.push('second'), { wait: true });
    await sleep(50);
    expect(order).toEqual([]);
    hold.open();
    await Promise.all([first, second]);
    expect(order).toEqual(['first', 'second']);
  });

  test('a rejection reaches the caller and frees the task', async () => {
    const { store } = t();
    await expect(store.exclusive('contract-fail', async () => Promise.reject(new Error('job failed')))).rejects.toThrow('job failed');
    expect(await store.exclusive('contract-fail', async () => 'ok')).toEqual({ ran: true, value: 'ok' });
  });

  if (backend === 'postgres') {
    test('another node is refused while one holds the task, and may take it once the holder is gone', async () => {
      const { store } = t();
      const other = await t().openAnother();
      const hold = gate();
      const first = store.exclusive('contract-nodes', async () => {
        await hold.opened;
        return 'mine';
      });
      await sleep(100);
      expect(await other.exclusive('contract-nodes', async () => 'theirs')).toEqual({ ran: false });
      hold.open();
      expect(await first).toEqual({ ran: true, value: 'mine' });
      expect(await other.exclusive('contract-nodes', async () => 'theirs')).toEqual({ ran: true, value: 'theirs' });

      // A node that goes away while it holds a task (its session ends) leaves the task to the others.
      const third = await t().openAnother();
      const stuck = gate();
      const held = third.exclusive('contract-died', () => stuck.opened);
      await sleep(100);
      expect(await other.exclusive('contract-died', async () => 'later')).toEqual({ ran: false });
      await third.close();
      expect(await other.exclusive('contract-died', async () => 'later')).toEqual({ ran: true, value: 'later' });
      stuck.open();
      await held.catch(() => undefined);
    });
  }
});
