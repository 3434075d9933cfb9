#!/usr/bin/env node
/**
 * Runs the jest suite and ends with the plain `N passed, N failed` line CI reads (it does not read jest's own
 * summary). Extra arguments go to jest (e.g. a path filter). The exit code is jest's.
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');

const report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-jest-')), 'report.json');
const jest = require.resolve('jest/bin/jest');
const result = spawnSync(process.execPath, [jest, '--json', `--outputFile=${report}`, ...process.argv.slice(2)], {
  stdio: 'inherit',
  env: { ...process.env, FORCE_COLOR: process.env.CI ? '0' : process.env.FORCE_COLOR },
});
let passed = 0;
let failed = 0;
let skipped = 0;
try {
  const r = JSON.parse(fs.readFileSync(report, 'utf8'));
  passed = r.numPassedTests;
  failed = r.numFailedTests + (r.numRuntimeErrorTestSuites || 0);
  skipped = r.numPendingTests + (r.numTodoTests || 0);
} catch {
  failed = Math.max(1, failed); // no report: jest itself failed
}
const code = result.status ?? 1;
if (code !== 0 && failed === 0) failed = 1; // a failure jest did not count (e.g. a crashed worker) is still a failure
console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(code);
