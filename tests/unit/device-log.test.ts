/**
 * The per-device log ring (server/diagnostics/deviceLog.ts): it keeps the lines that name a device, under the user
 * and device together, drops them after an hour, and stays within its bounds (lines per device, devices); and the
 * logger feeds it (server/logger.ts) without changing what the destination receives.
 */
import { DeviceLogRing } from '../../server/diagnostics/deviceLog';
import { createLogger, deviceLogOf } from '../../server/logger';

const line = (fields: Record<string, unknown>) => `${JSON.stringify({ level: 30, msg: 'request', ...fields })}\n`;

test('lines are kept per user and device, oldest first; lines without a device are not kept', () => {
  const ring = new DeviceLogRing({}, () => 1000);
  ring.record(line({ user: 'u1', device: 'd1', path: '/a' }));
  ring.record(line({ user: 'u1', device: 'd2', path: '/b' }));
  ring.record(line({ user: 'u2', device: 'd1', path: '/c' }));
  ring.record(line({ user: 'u1', device: 'd1', path: '/d' }));
  ring.record(line({ path: '/no-device' }));
  ring.record('not json "device":"d1"\n');
  expect(ring.linesFor('u1', 'd1').map((l) => JSON.parse(l).path)).toEqual(['/a', '/d']);
  expect(ring.linesFor('u2', 'd1').map((l) => JSON.parse(l).path)).toEqual(['/c']);
  expect(ring.linesFor('u3', 'd1')).toEqual([]);
});

test('lines older than the hour are dropped', () => {
  let now = 0;
  const ring = new DeviceLogRing({ maxAgeMs: 3600_000 }, () => now);
  ring.record(line({ user: 'u', device: 'd', n: 1 }));
  now = 1800_000;
  ring.record(line({ user: 'u', device: 'd', n: 2 }));
  now = 3600_001;
  expect(ring.linesFor('u', 'd').map((l) => JSON.parse(l).n)).toEqual([2]);
  now = 5400_001;
  expect(ring.linesFor('u', 'd')).toEqual([]);
  expect(ring.size).toBe(0);
});

test('bounded: lines per device, devices (least recently written go), line length', () => {
  const ring = new DeviceLogRing({ linesPerDevice: 3, devices: 2, maxLineBytes: 100 }, () => 0);
  for (let n = 0; n < 10; n++) ring.record(line({ user: 'u', device: 'a', n }));
  expect(ring.linesFor('u', 'a').map((l) => JSON.parse(l).n)).toEqual([7, 8, 9]);
  ring.record(line({ user: 'u', device: 'b' }));
  ring.record(line({ user: 'u', device: 'a', n: 10 })); // a is now the most recent
  ring.record(line({ user: 'u', device: 'c' }));
  expect(ring.size).toBe(2);
  expect(ring.linesFor('u', 'b')).toEqual([]);
  expect(ring.linesFor('u', 'a')).toHaveLength(3);
  ring.record(line({ user: 'u', device: 'c', long: 'x'.repeat(500) }));
  const [, long] = ring.linesFor('u', 'c');
  expect(long!.length).toBe(101);
});

test('the logger feeds its ring and still writes every line to its destination', () => {
  const written: string[] = [];
  const log = createLogger({ logLevel: 'info', logPretty: false }, { write: (l: string) => void written.push(l) });
  const child = log.child({ worker: 1 });
  child.info({ user: 'u', device: 'dev-1', path: '/v1/x' }, 'request');
  log.info({ other: true }, 'no device here');
  expect(written).toHaveLength(2);
  const ring = deviceLogOf(log)!;
  expect(ring.linesFor('u', 'dev-1').map((l) => JSON.parse(l))).toEqual([expect.objectContaining({ path: '/v1/x', worker: 1 })]);
  // Each logger its own ring.
  expect(deviceLogOf(createLogger({ logLevel: 'info', logPretty: false }, { write: () => {} }))).not.toBe(ring);
});
