/**
 * `--profile`: Pigeon runs with `--cpu-prof`; this prints where its CPU went — self time by function and by
 * package — from the .cpuprofile V8 writes at exit. Open the same file in Chrome DevTools (Performance → Load
 * profile) or speedscope for the flame graph.
 */
import fs from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
}

function packageOf(url: string): string {
  if (!url) return '(native / idle / gc)';
  if (url.startsWith('node:')) return url.split('/')[0]!;
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const server = url.indexOf('/server/');
  return server >= 0 ? url.slice(server + 1).replace(/\.ts$/, '') : url;
}

export function summarize(file: string, top = 25): string {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const total = profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0) || 1;
  const byFunction = new Map<string, number>();
  const byPackage = new Map<string, number>();
  /** Time with the function anywhere on the stack (each sample counted once per function): Pigeon's own code only. */
  const inclusive = new Map<string, number>();
  const parent = new Map<number, ProfileNode>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n);
  const nameOf = (n: ProfileNode) => {
    const where = n.callFrame.url ? `${path.basename(n.callFrame.url)}:${n.callFrame.lineNumber + 1}` : '';
    return `${n.callFrame.functionName || '(anonymous)'} ${where}`.trim();
  };
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0;
    if (!hits) continue;
    const fn = nameOf(n);
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + hits);
    const pkg = packageOf(n.callFrame.url);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + hits);
    const seen = new Set<string>();
    for (let a: ProfileNode | undefined = n; a; a = parent.get(a.id)) {
      if (!a.callFrame.url.includes('/server/') || a.callFrame.url.includes('node_modules')) continue;
      const key = nameOf(a);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + hits);
    }
  }
  const list = (m: Map<string, number>, k: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(([name, hits]) => `  ${((hits / total) * 100).toFixed(1).padStart(5)} %  ${name}`);
  const seconds = (profile.endTime - profile.startTime) / 1e6;
  return [`${path.basename(file)}: ${seconds.toFixed(1)} s profiled`, 'self time by package / module:', ...list(byPackage, 15), 'self time by function:', ...list(byFunction, top), "Pigeon's functions, inclusive time:", ...list(inclusive, top)].join('\n');
}

/**
 * The main-thread profiles written into `dir` since `since` (ms since epoch), oldest first. V8 names them
 * CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; other threads (tsx's loader worker) only wait.
 */
export function profilesIn(dir: string, since: number): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile') && f.split('.')[4] === '0')
    .map((f) => path.join(dir, f))
    .filter((f) => fs.statSync(f).mtimeMs >= since)
    .sort((a, b) => fs.statSync(a).mtimeMs - fs.statSync(b).mtimeMs);
}
