/**
 * The log-secret scan every test server runs when it is closed: no access token, refresh token, `Bearer`
 * credential or password the tests used may appear in any log line (issue 8). Closing a test app or a test server
 * throws when one does, so the test file that leaked fails.
 */
const PATTERNS: Array<[string, RegExp]> = [
  ['Bearer credential', /Bearer\s+[A-Za-z0-9._~+/-]{10,}/i],
  ['JWT', /eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\./],
  ['refresh token', /prt_[A-Za-z0-9_-]{16}\./],
  ['unredacted password field', /"(password|refresh_token|access_token|client_secret)"\s*:\s*"(?!\[redacted\])/i],
];

/** The offending lines, each with what it leaked; `known` are literal secrets (passwords) the tests used. */
export function secretsInLogs(lines: string[], known: Iterable<string> = []): string[] {
  const literals = [...known].filter((s) => s.length >= 6);
  const found: string[] = [];
  for (const line of lines) {
    for (const [what, re] of PATTERNS) if (re.test(line)) found.push(`${what}: ${line.slice(0, 300)}`);
    for (const s of literals) if (line.includes(s)) found.push(`password: ${line.slice(0, 300)}`);
  }
  return found;
}

export function assertNoSecretsInLogs(lines: string[], known: Iterable<string> = [], where = 'logs'): void {
  const found = secretsInLogs(lines, known);
  if (found.length) throw new Error(`secrets in ${where} (${found.length} lines):\n${found.slice(0, 5).join('\n')}`);
}
