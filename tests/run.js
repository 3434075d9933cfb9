#!/usr/bin/env node
/**
 * Runs the jest suite and ends with the plain `N passed, N failed` line CI reads (it does not read jest's own
 * summary). Extra arguments go to jest (e.g. a path filter). The exit code is jest's.
 *
 * For a caller that runs the suite more than once (.ci/run: once per Node version) and sums the passes:
 *   TEST_SUMMARY_LABEL=node26  prefixes the line (`node26: N passed, N failed`), so it is not read as the final one;
 *   TEST_SUMMARY_FILE=<path>   also writes the counts there as JSON ({"passed","failed","skipped","code"}).
 *
 * PostgreSQL: the tests that run against the PostgreSQL store (tests/helpers/postgres.ts) need a server whose role
 * may create databases. TEST_POSTGRES_URL names one (`postgres://user:password@host:port/db`, a superuser); without
 * it, this script starts a throwaway cluster of the newest PostgreSQL it finds (`initdb` and `pg_ctl` on PATH, else
 * /usr/lib/postgresql/<version>/bin), on a free loopback port with its socket in its own temporary directory, hands
 * its URL to jest as TEST_POSTGRES_URL, and stops and deletes it when jest ends (also on SIGINT and SIGTERM). A
 * cluster left behind by a runner that was killed outright is removed by the next run. Without PostgreSQL, jest
 * still runs, and the PostgreSQL tests fail saying why.
 */
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const os = require('node:os');

const say = (line) => console.log(`tests/run.js: ${line}`);
const CLUSTER_PREFIX = 'pigeon-pg-';
/** The superuser the tests connect as (initdb's bootstrap role). */
const TEST_ROLE = 'pigeon_test';

/** An executable named `name` in one of PATH's directories. */
function onPath(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** `{ initdb, pgCtl }` of the PostgreSQL to use: PATH's, else the newest under /usr/lib/postgresql; or undefined. */
function findPostgres() {
  const initdb = onPath('initdb');
  const pgCtl = onPath('pg_ctl');
  if (initdb && pgCtl) return { initdb, pgCtl };
  const root = '/usr/lib/postgresql';
  let versions = [];
  try {
    versions = fs.readdirSync(root).filter((v) => /^\d+(\.\d+)?$/.test(v));
  } catch {
    return undefined;
  }
  versions.sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = path.join(root, v, 'bin');
    if (fs.existsSync(path.join(bin, 'initdb')) && fs.existsSync(path.join(bin, 'pg_ctl'))) {
      return { initdb: path.join(bin, 'initdb'), pgCtl: path.join(bin, 'pg_ctl') };
    }
  }
  return undefined;
}

/**
 * How to run PostgreSQL's programs: PostgreSQL refuses to run as root, so a root runner starts them as the
 * `postgres` user (which the Debian package creates) through runuser, and gives that user the cluster's directory.
 */
function runAs() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return { wrap: (argv) => argv };
  const id = (flag) => spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' });
  const uid = id('-u');
  const gid = id('-g');
  if (uid.status !== 0 || gid.status !== 0) throw new Error('running as root, and there is no `postgres` user to run PostgreSQL as');
  const runuser = onPath('runuser') || ['/usr/sbin/runuser', '/sbin/runuser'].find((f) => fs.existsSync(f));
  if (!runuser) throw new Error('running as root, and runuser is missing (PostgreSQL cannot run as root)');
  return { wrap: (argv) => [runuser, '-u', 'postgres', '--', ...argv], uid: Number(uid.stdout), gid: Number(gid.stdout) };
}

const splitArgv = (argv) => [argv[0], argv.slice(1)];

function run(argv, what) {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) {
    const output = `${r.stdout || ''}${r.stderr || ''}`.trim().split('\n').slice(-5).join(' | ');
    throw new Error(`${what} failed${r.error ? ` (${r.error.message})` : ''}: ${output}`);
  }
  return r.stdout;
}

/** A loopback port nothing listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const isAlive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
};

/** Stops the cluster in `dir` at once (it is thrown away, so no checkpoint) and deletes the directory. */
function removeCluster(dir, pgCtl, as) {
  const pidFile = path.join(dir, 'data', 'postmaster.pid');
  if (fs.existsSync(pidFile)) {
    const stopped = spawnSync(...splitArgv(as.wrap([pgCtl, '-D', path.join(dir, 'data'), '-m', 'immediate', '-s', '-w', 'stop'])), { stdio: 'ignore' });
    if (stopped.status !== 0) {
      // pg_ctl could not (another version's cluster, say): SIGQUIT is the postmaster's own immediate shutdown.
      try {
        const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
        if (pid > 0) process.kill(pid, 'SIGQUIT');
      } catch {
        // already gone
      }
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Clusters of earlier runs whose runner no longer exists (killed with SIGKILL, say): stopped and deleted. */
function sweepAbandoned(pgCtl, as) {
  const tmp = os.tmpdir();
  for (const name of fs.readdirSync(tmp)) {
    if (!name.startsWith(CLUSTER_PREFIX)) continue;
    const dir = path.join(tmp, name);
    let owner;
    try {
      owner = Number(fs.readFileSync(path.join(dir, 'runner.pid'), 'utf8'));
    } catch {
      continue; // not ours, or still being set up
    }
    if (owner && !isAlive(owner)) {
      try {
        removeCluster(dir, pgCtl, as);
      } catch {
        // another user's leftover: not ours to remove
      }
    }
  }
}

/** Creates and starts a throwaway cluster; answers its URL, its version and `stop()`. */
async function startCluster({ initdb, pgCtl }) {
  const as = runAs();
  sweepAbandoned(pgCtl, as);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), CLUSTER_PREFIX));
  fs.writeFileSync(path.join(dir, 'runner.pid'), String(process.pid));
  const data = path.join(dir, 'data');
  const stop = () => removeCluster(dir, pgCtl, as);
  try {
    const password = crypto.randomBytes(18).toString('base64url');
    const pwfile = path.join(dir, 'password');
    fs.writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    if (as.uid !== undefined) {
      fs.chownSync(dir, as.uid, as.gid);
      fs.chownSync(pwfile, as.uid, as.gid);
    }
    // Password sign-in over TCP (other local users can reach the port), trust on the socket (its directory is the
    // cluster's own, mode 0700). --no-sync: initdb's files are flushed with everything else by the OS; what the
    // tests rely on is the server's own commit durability (fsync and synchronous_commit below).
    run(
      as.wrap([initdb, '-D', data, '-U', TEST_ROLE, `--pwfile=${pwfile}`, '--auth-local=trust', '--auth-host=scram-sha-256',
        '-E', 'UTF8', '--no-locale', '--no-sync']),
      'initdb',
    );
    fs.rmSync(pwfile);
    const version = (/\d+(\.\d+)*/.exec(run([initdb, '--version'], 'initdb --version')) || ['?'])[0];
    // A free port can be taken between the probe and the bind: try another one.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const options = [
        `-p ${port}`,
        `-k '${dir}'`,
        '-c listen_addresses=127.0.0.1',
        // The crash tests kill servers and count on every acknowledged commit being there afterwards.
        '-c fsync=on',
        '-c synchronous_commit=on',
        '-c max_connections=200',
      ].join(' ');
      const log = path.join(dir, 'server.log');
      const started = spawnSync(...splitArgv(as.wrap([pgCtl, '-D', data, '-l', log, '-o', options, '-w', '-t', '30', '-s', 'start'])), {
        encoding: 'utf8',
      });
      if (started.status === 0) {
        return { url: `postgres://${TEST_ROLE}:${password}@127.0.0.1:${port}/postgres`, version, port, stop };
      }
      const tail = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' | ') : '';
      if (attempt < 3 && /already in use|could not bind/i.test(tail)) continue;
      throw new Error(`pg_ctl start failed: ${`${started.stderr || ''} ${tail}`.trim()}`);
    }
  } catch (err) {
    stop();
    throw err;
  }
}

async function main() {
  // A signal is passed on to jest when it runs; the cluster is stopped once jest has gone (it may still be using
  // it), or at once when the signal comes while it is being started.
  let child;
  let signalled;
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      if (signalled) return;
      signalled = signal;
      if (!child) process.exit(128 + os.constants.signals[signal]);
      child.kill(signal);
      setTimeout(() => child.kill('SIGKILL'), 10000).unref();
    });
  }
  let cluster;
  let stopped = false;
  const stopCluster = () => {
    if (cluster && !stopped) {
      stopped = true;
      cluster.stop();
    }
  };
  process.on('exit', stopCluster); // whatever ends this process, the cluster goes with it

  const env = { ...process.env, FORCE_COLOR: process.env.CI ? '0' : process.env.FORCE_COLOR };
  if (!env.TEST_POSTGRES_URL) {
    const found = findPostgres();
    if (!found) {
      say('PostgreSQL not found (no initdb on PATH or in /usr/lib/postgresql/*/bin), so the PostgreSQL tests will fail: install it (`apt-get install postgresql`) or set TEST_POSTGRES_URL');
    } else {
      const started = Date.now();
      try {
        cluster = await startCluster(found);
        env.TEST_POSTGRES_URL = cluster.url;
        say(`PostgreSQL ${cluster.version} on 127.0.0.1:${cluster.port} (a throwaway cluster, ready in ${((Date.now() - started) / 1000).toFixed(1)} s)`);
      } catch (err) {
        say(`could not start PostgreSQL, so the PostgreSQL tests will fail: ${err.message}`);
      }
    }
  }
  if (signalled) process.exit(128 + os.constants.signals[signalled]);

  const report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-jest-')), 'report.json');
  const jest = require.resolve('jest/bin/jest');
  child = spawn(process.execPath, [jest, '--json', `--outputFile=${report}`, ...process.argv.slice(2)], { stdio: 'inherit', env });
  const status = await new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  stopCluster();

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
  // Interrupted: the exit status a shell gives a process killed by that signal, and the counts so far.
  const code = signalled ? 128 + os.constants.signals[signalled] : (status ?? 1);
  if (code !== 0 && failed === 0) failed = 1; // a failure jest did not count (e.g. a crashed worker) is still a failure
  const label = process.env.TEST_SUMMARY_LABEL ? `${process.env.TEST_SUMMARY_LABEL}: ` : '';
  console.log(`\n${label}${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  if (process.env.TEST_SUMMARY_FILE) fs.writeFileSync(process.env.TEST_SUMMARY_FILE, JSON.stringify({ passed, failed, skipped, code }) + '\n');
  process.exit(code);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
