/** Tests run TypeScript through SWC (transpile only; `tsc --noEmit` type-checks before the suite). */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/tests'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }],
    // sanitize-html's parser (htmlparser2 12 and its dom* / entities helpers) ships ES modules only; jest runs
    // CommonJS, so those few packages are compiled to it. Node itself loads them with require() as they are.
    '^.+/node_modules/(htmlparser2|domhandler|domutils|dom-serializer|domelementtype|entities)/.+\\.js$': [
      '@swc/jest',
      { jsc: { target: 'es2022' }, module: { type: 'commonjs' } },
    ],
  },
  // Ignore a node_modules path unless its innermost package is one of those (they sit under sanitize-html/).
  transformIgnorePatterns: ['/node_modules/(?!(htmlparser2|domhandler|domutils|dom-serializer|domelementtype|entities)/)(?!.*/node_modules/)'],
  // Two cores: more workers only add start-up cost.
  maxWorkers: 2,
  testTimeout: 30000,
};
