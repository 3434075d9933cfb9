import { newId } from '../../server/ids';

test('record ids are 16 url-safe characters and never start with a dash or an underscore (the CLI reads those as options)', () => {
  const ids = Array.from({ length: 20_000 }, () => newId());
  for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9][A-Za-z0-9_-]{15}$/);
  expect(new Set(ids).size).toBe(ids.length);
  // Every other character still takes all 64 values: the rule costs the first character only.
  expect(new Set(ids.map((id) => id[1])).size).toBe(64);
});
