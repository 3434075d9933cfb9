#!/usr/bin/env node
/**
 * Runs the jest suite and ends with the plain `N passed, N failed` line CI reads (it does not read jest's own
 * summary). Extra arguments go to jest (e.g. a path filter). The exit code is jest's.
 *
 * For a caller that runs the suite more than once (.ci/run: once per Node version) and sums the passes:
 *   TEST_SUMMARY_LABEL=node26  prefixes the line (`node26: N passed, N failed`), so it is not read as the final one;
 *   TEST_SUMMARY_FILE=<path>   also writes the counts there as JSON ({"passed","failed","skipped","code"}).
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
fs.rmSync(path.dirname(report), { recursive: true, force: true });
const code = result.status ?? 1;
if (code !== 0 && failed === 0) failed = 1; // a failure jest did not count (e.g. a crashed worker) is still a failure
const label = process.env.TEST_SUMMARY_LABEL ? `${process.env.TEST_SUMMARY_LABEL}: ` : '';
console.log(`\n${label}${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
if (process.env.TEST_SUMMARY_FILE) fs.writeFileSync(process.env.TEST_SUMMARY_FILE, JSON.stringify({ passed, failed, skipped, code }) + '\n');
process.exit(code);
