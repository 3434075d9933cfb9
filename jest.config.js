/** Tests run TypeScript through SWC (transpile only; `tsc --noEmit` type-checks before the suite). */
const ESM_ONLY = '(htmlparser2|domhandler|domutils|dom-serializer|domelementtype|entities|oidc-provider|jose/dist/webapi|openid-client|oauth4webapi|@scure/base|@noble/hashes)';

module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/tests'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }],
    // Packages that ship ES modules only; jest runs CommonJS, so they are compiled to it (Node itself loads them
    // with require(), which it supports for ES modules without top-level await). sanitize-html's parser
    // (htmlparser2 12 and its dom* / entities helpers); the identity platform's oidc-provider with its jose 6
    // (dist/webapi: jose 5, the project's own, ships CommonJS and is left alone), openid-client and oauth4webapi
    // (the relying party in the tests) and @scure/base and @noble/hashes 2 (otplib's base32 and HMAC).
    [`^.+/node_modules/${ESM_ONLY}/.+\\.js$`]: ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  // Ignore a node_modules path unless its innermost package is one of those.
  transformIgnorePatterns: [`/node_modules/(?!${ESM_ONLY}/)(?!.*/node_modules/)`],
  // Two cores: more workers only add start-up cost.
  maxWorkers: 2,
  testTimeout: 30000,
};
