#!/usr/bin/env node
// Runs the compiled tests (dist/test/**/*.test.js). Every file runs as its own `node --test` child with a
// time limit, and the whole run has one too, so no test can hang `make test`: a file past its limit is
// stopped (SIGTERM to its process group, SIGKILL 5 s later; the e2e lab cleans up on SIGTERM) and counted
// as a failure.
// Limits: unit 120 s, bpf 600 s, e2e 900 s per file, or `// spak-test-timeout: <seconds>` in a file's
// first lines; whole run SPAK_TEST_RUN_LIMIT seconds (default 3600).
// A file with `// spak-test-modes: xdp tc` in its first lines runs once per enforcement mode, with
// SPAK_ENFORCEMENT set (test/enforcement.ts). SPAK_ENFORCEMENT in our own environment restricts those
// files to that one mode.
//
// Up to SPAK_TEST_JOBS files (default 4) run at once: the e2e files mostly wait on the network, and each
// makes namespaces and pins of its own (spak-<pid>-..., /sys/fs/bpf/spak/netns-<inode>). What a file
// does share is declared in its first lines:
//   // spak-test-shares: <name> ...   never runs beside another file naming one of the same resources
//   // spak-test-exclusive            runs with nothing else running
// Before anything runs, what files would otherwise race to make is made once (see prepareMachine): the
// bpffs mount at /sys/fs/bpf, the shared /run/netns mount, and /sys/fs/bpf/spak itself.
// Files start longest first (e2e, then bpf, then unit, each in path order; the xdp run of a file before
// its tc run). Each file's output is held back and printed whole, with its wall time, when it ends;
// the failures are repeated at the end, before the closing "tests: N passed, N failed, N skipped".
// Usage: node scripts/run-tests.mjs [filter]   (filter = substring of the test file path)
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const distRoot = path.join(root, 'dist');
const testRoot = path.join(distRoot, 'test');
const START_ORDER = ['e2e', 'bpf', 'unit'];
const FILE_LIMIT_S = { unit: 120, bpf: 600, e2e: 900 };
const OTHER_LIMIT_S = 600;
const KILL_GRACE_MS = 5000;
const preload = pathToFileURL(path.join(root, 'scripts', 'test-defaults.mjs')).href;
const RUN_LIMIT_S = Number(process.env.SPAK_TEST_RUN_LIMIT ?? 3600);
const JOBS = Math.max(1, Math.floor(Number(process.env.SPAK_TEST_JOBS ?? 4)) || 1);
const BPFFS = '/sys/fs/bpf';
const BPF_FS_MAGIC = 0xcafe4a11;
const filter = process.argv[2];

function listTests(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return listTests(full);
    return entry.isFile() && entry.name.endsWith('.test.js') ? [full] : [];
  });
}

const groupOf = (file) => path.relative(testRoot, file).split(path.sep)[0];
function startRank(file) {
  const rank = START_ORDER.indexOf(groupOf(file));
  return rank === -1 ? START_ORDER.length : rank;
}

/** The value of a `// spak-test-<name>[: value]` marker in a file's first lines: null if absent, '' if bare. */
function marker(file, name) {
  const head = fs.readFileSync(file, 'utf8').split('\n', 15).join('\n');
  const m = new RegExp(`^\\s*//\\s*spak-test-${name}(?::\\s*(.*?))?\\s*$`, 'm').exec(head);
  return m ? m[1] ?? '' : null;
}

/** Per-file limit in seconds: a `// spak-test-timeout: N` comment wins over the group default. */
function fileLimit(file) {
  const m = /^\d+$/.exec(marker(file, 'timeout') ?? '');
  return m ? Number(m[0]) : FILE_LIMIT_S[groupOf(file)] ?? OTHER_LIMIT_S;
}

/** The enforcement modes a file runs in: [''] (no mode: run once as it is) unless it declares them. */
function fileModes(file) {
  const declared = marker(file, 'modes');
  if (!declared) return [''];
  const modes = declared.split(/\s+/);
  const only = process.env.SPAK_ENFORCEMENT;
  return only ? modes.filter((mode) => mode === only) : modes;
}
const MODE_ORDER = ['', 'xdp', 'tc'];

if (!fs.existsSync(testRoot)) {
  console.error(`no compiled tests in ${path.relative(root, testRoot)}: run \`npx tsc -p tsconfig.json\` first`);
  process.exit(1);
}

const files = listTests(testRoot)
  .filter((file) => !filter || path.relative(root, file).includes(filter))
  .flatMap((file) => fileModes(file).map((mode) => ({
    file, mode, name: `${path.relative(distRoot, file)}${mode ? ` [${mode}]` : ''}`, // e.g. test/e2e/cli.test.js [tc]
    shares: (marker(file, 'shares') ?? '').split(/\s+/).filter(Boolean), exclusive: marker(file, 'exclusive') !== null,
  })))
  .sort((a, b) => startRank(a.file) - startRank(b.file) || (a.file < b.file ? -1 : a.file > b.file ? 1 : 0)
    || MODE_ORDER.indexOf(a.mode) - MODE_ORDER.indexOf(b.mode));

if (files.length === 0) {
  console.error(filter ? `no test files match "${filter}"` : 'no test files found');
  process.exit(1);
}

/**
 * What concurrent files would otherwise race on, made once before any runs: bpffs at /sys/fs/bpf (each
 * `spak server` mounts it when missing: two at once stack two mounts, and pins made in the lower one
 * vanish from view); /run/netns as the shared mount the first `ip netns add` makes of it (same race).
 * Returns the cleanup (nothing: both stay, as a sequential run left them).
 */
function prepareMachine() {
  if (files.every(({ file }) => groupOf(file) === 'unit')) return () => {};
  let onBpffs = false;
  try { onBpffs = fs.statfsSync(BPFFS).type === BPF_FS_MAGIC; } catch { /* no such directory */ }
  if (!onBpffs) {
    const r = spawnSync('mount', ['-t', 'bpf', '-o', 'mode=0700', 'bpf', BPFFS], { encoding: 'utf8' });
    console.log(r.status === 0 ? `# mounted bpffs at ${BPFFS}` : `# could not mount bpffs at ${BPFFS}: ${r.stderr.trim()}`);
  }
  const ns = `spak-${process.pid}-runner`; // the lab's naming: removeStaleLabs knows it
  if (spawnSync('ip', ['netns', 'add', ns]).status === 0) spawnSync('ip', ['netns', 'del', ns]);
  return () => {};
}


const tapDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spak-tests-')); // each file's TAP, totalled at the end
let unprepare = () => {};
let stopping = false; // a signal came: start nothing more
const running = new Set(); // the children running now, so a signal to us stops them too

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal); // the child leads its own process group: its helpers go too
  } catch {
    try { child.kill(signal); } catch { /* already gone */ }
  }
}

const groupAlive = (child) => {
  try { process.kill(-child.pid, 0); return true; } catch { return false; }
};

/** Run one file; resolves { code, timedOut, output } once the child and everything left in its process group are gone. */
function runFile(file, mode, limitS, tap) {
  // Three bounds, innermost first, so the most precise report wins: each test (named by node, via the
  // preload) 20 s before the limit; node's own --test-timeout (in Node 20 it bounds the file) 10 s before;
  // then our hard limit, which stops the whole process group.
  const testTimeoutMs = Math.max(1000, (limitS - 20) * 1000);
  const fileTimeoutMs = Math.max(2000, (limitS - 10) * 1000);
  const args = ['--test', '--test-concurrency=1', `--test-timeout=${fileTimeoutMs}`, '--import', preload,
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    '--test-reporter=tap', `--test-reporter-destination=${tap}`, path.relative(root, file)];
  const env = { ...process.env, SPAK_TEST_DEFAULT_TIMEOUT_MS: String(testTimeoutMs) };
  if (mode) env.SPAK_ENFORCEMENT = mode;
  else delete env.SPAK_ENFORCEMENT;
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env });
    running.add(child);
    const chunks = []; // stdout and stderr as they came, printed whole at the end
    child.stdout.on('data', (d) => chunks.push(d));
    child.stderr.on('data', (d) => chunks.push(d));
    let timedOut = false;
    let killTimer;
    const limitTimer = setTimeout(() => {
      timedOut = true;
      killGroup(child, 'SIGTERM');
      killTimer = setTimeout(() => killGroup(child, 'SIGKILL'), KILL_GRACE_MS); // even if the leader ignores SIGTERM
    }, limitS * 1000);
    child.on('error', reject);
    child.on('close', async (code, signal) => {
      clearTimeout(limitTimer);
      running.delete(child);
      // Whatever the file left in its group (a lab cleaning up after SIGTERM, a forgotten helper) gets the
      // grace period, then SIGKILL: nothing of one file outlives it.
      const graceEnd = Date.now() + KILL_GRACE_MS;
      while (groupAlive(child) && Date.now() < graceEnd) await new Promise((r) => setTimeout(r, 100));
      if (groupAlive(child)) killGroup(child, 'SIGKILL');
      clearTimeout(killTimer);
      // node's own file timeout (just under our limit) is a timeout too.
      const nodeTimedOut = code !== 0 && Date.now() - started >= fileTimeoutMs;
      resolve({ code: code ?? (signal ? 1 : 0), timedOut: timedOut || nodeTimedOut, output: Buffer.concat(chunks).toString() });
    });
  });
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    // No file starts any more; every running one gets SIGTERM (its lab cleans up), then SIGKILL after the grace period.
    if (stopping) return;
    stopping = true;
    const children = [...running];
    for (const child of children) killGroup(child, 'SIGTERM');
    const graceEnd = Date.now() + KILL_GRACE_MS;
    setInterval(() => {
      if (Date.now() < graceEnd && children.some(groupAlive)) return;
      for (const child of children) if (groupAlive(child)) killGroup(child, 'SIGKILL');
      unprepare();
      fs.rmSync(tapDir, { recursive: true, force: true });
      process.exit(1);
    }, 100);
  });
}

// Each file reports with spec into our buffer and TAP into a file we total at the end, so the run
// closes with one "tests: N passed, N failed, N skipped" line over every file.
const totals = { pass: 0, fail: 0, skipped: 0, todo: 0 };
const problems = [];
const failures = []; // the "failing tests" part of each failed file's output, repeated at the end
const runDeadline = Date.now() + RUN_LIMIT_S * 1000;
let exitCode = 0;

/** Totals one finished file and prints its output whole. */
function report(entry, limitS, fileLimitS, { code, timedOut, output }, seconds) {
  const text = fs.existsSync(entry.tap) ? fs.readFileSync(entry.tap, 'utf8') : '';
  const counts = {};
  for (const key of Object.keys(totals)) {
    const m = new RegExp(`^# ${key} (\\d+)$`, 'm').exec(text);
    counts[key] = m ? Number(m[1]) : 0;
    totals[key] += counts[key];
  }
  console.log(`\n# ${entry.name} (${seconds.toFixed(1)} s)`);
  process.stdout.write(output.endsWith('\n') || output === '' ? output : `${output}\n`);
  if (timedOut) {
    const why = limitS < fileLimitS ? ` (run limit of ${RUN_LIMIT_S} s)` : '';
    const line = `TIMEOUT ${entry.name} after ${limitS} s${why}`;
    console.log(`\n${line}`);
    problems.push(line);
    totals.fail += 1;
    exitCode = 1;
  } else if (code !== 0) {
    if (counts.fail === 0) { // died before reporting a failure of its own
      problems.push(`FAILED ${entry.name}: exit code ${code}`);
      totals.fail += 1;
    }
    exitCode = 1;
  }
  if (counts.fail > 0) {
    const at = output.lastIndexOf('failing tests:');
    failures.push(`# ${entry.name}: ${counts.fail} failed\n${at === -1 ? '' : output.slice(output.indexOf('\n', at) + 1).trimEnd()}`);
  }
}

/** A file may start when a slot is free and nothing running shares a resource with it (or runs exclusively). */
function canStart(entry, active) {
  if (active.length >= JOBS) return false;
  if (entry.exclusive) return active.length === 0;
  return active.every((other) => !other.exclusive && !other.shares.some((s) => entry.shares.includes(s)));
}

unprepare = prepareMachine();
try {
  await new Promise((done) => {
    const pending = files.map((entry, i) => ({ ...entry, tap: path.join(tapDir, `file-${i}.tap`) }));
    const active = [];
    const pump = () => {
      const left = Math.floor((runDeadline - Date.now()) / 1000);
      if (left <= 0 && pending.length > 0) {
        problems.push(`TIMEOUT run limit of ${RUN_LIMIT_S} s reached: ${pending.length} file(s) not run, from ${pending[0].name}`);
        totals.fail += pending.length;
        exitCode = 1;
        pending.length = 0;
      }
      for (let i = 0; i < pending.length && !stopping;) {
        const entry = pending[i];
        if (!canStart(entry, active)) {
          if (entry.exclusive) break; // nothing overtakes a waiting exclusive file: the slots drain for it
          i++;
          continue;
        }
        pending.splice(i, 1);
        active.push(entry);
        const fileLimitS = fileLimit(entry.file);
        const limitS = Math.min(fileLimitS, left);
        const started = Date.now();
        runFile(entry.file, entry.mode, limitS, entry.tap).then((result) => {
          report(entry, limitS, fileLimitS, result, (Date.now() - started) / 1000);
          active.splice(active.indexOf(entry), 1);
          pump();
        }, (err) => {
          console.error(`cannot run ${entry.name}: ${err.message}`);
          process.exit(1);
        });
      }
      if (pending.length === 0 && active.length === 0) done();
    };
    pump();
  });
} finally {
  unprepare();
  fs.rmSync(tapDir, { recursive: true, force: true });
}
if (failures.length) console.log(`\nfailing tests, by file:\n${failures.join('\n\n')}`);
if (problems.length) console.log(`\n${problems.join('\n')}`);
console.log(`\ntests: ${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped${totals.todo ? ` (${totals.todo} todo)` : ''}`);
process.exit(exitCode);
