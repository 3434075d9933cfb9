/** Tests run TypeScript through SWC (transpile only; `tsc --noEmit` type-checks before the suite). */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/tests'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  // Two cores: more workers only add start-up cost.
  maxWorkers: 2,
  testTimeout: 30000,
};
