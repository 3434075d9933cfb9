/**
 * The mailbox API is a resource server: it validates tokens and never sees a password (issue 15). Password hashing
 * lives in server/identity/ (the identity provider); the only other modules that may use it are the ones that
 * manage accounts — setting a password is an identity operation, not a mailbox one.
 */
import fs from 'node:fs';
import path from 'node:path';

const SERVER = path.resolve(__dirname, '../../server');
const ACCOUNT_MANAGEMENT = new Set([
  'admin/users.ts', // create user, reset password (admin API and CLI)
  'demo/seed.ts', // the demo tenant's users
]);

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? sources(full) : e.name.endsWith('.ts') ? [full] : [];
  });
}

test('no module outside the identity provider and account management imports password hashing', () => {
  const offenders = sources(SERVER)
    .map((file) => path.relative(SERVER, file).split(path.sep).join('/'))
    .filter((rel) => !rel.startsWith('identity/') && !ACCOUNT_MANAGEMENT.has(rel))
    .filter((rel) => /from '[./]*(?:identity\/)?passwords'|require\([^)]*passwords/.test(fs.readFileSync(path.join(SERVER, rel), 'utf8')));
  expect(offenders).toEqual([]);
});

test('the check can fail: it sees the account-management modules that do import it', () => {
  const importing = [...ACCOUNT_MANAGEMENT].filter((rel) => /passwords'/.test(fs.readFileSync(path.join(SERVER, rel), 'utf8')));
  expect(importing.length).toBeGreaterThan(0);
});

test('the token checks (server/auth) depend on nothing of the identity provider', () => {
  const auth = fs.readdirSync(path.join(SERVER, 'auth'));
  expect(auth.length).toBeGreaterThan(0);
  for (const file of auth) expect([file, fs.readFileSync(path.join(SERVER, 'auth', file), 'utf8').match(/from '\.\.\/identity\/[^']*'/g)]).toEqual([file, null]);
});
