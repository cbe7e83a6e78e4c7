#!/usr/bin/env node
// Runs the compiled tests (dist/test/**/*.test.js): unit, then bpf, then e2e, then anything else, each
// group in path order. Every file runs as its own `node --test` child with a time limit, and the whole
// run has one too, so no test can hang `make test`: a file past its limit is stopped (SIGTERM to its
// process group, SIGKILL 5 s later; the e2e lab cleans up on SIGTERM) and counted as a failure.
// Limits: unit 120 s, bpf 600 s, e2e 900 s per file, or `// spak-test-timeout: <seconds>` in a file's
// first lines; whole run SPAK_TEST_RUN_LIMIT seconds (default 3600).
// A file with `// spak-test-modes: xdp tc` in its first lines runs once per enforcement mode, with
// SPAK_ENFORCEMENT set (test/enforcement.ts); within a group the xdp runs come first. SPAK_ENFORCEMENT
// in our own environment restricts those files to that one mode.
// Usage: node scripts/run-tests.mjs [filter]   (filter = substring of the test file path)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const distRoot = path.join(root, 'dist');
const testRoot = path.join(distRoot, 'test');
const GROUP_ORDER = ['unit', 'bpf', 'e2e'];
const FILE_LIMIT_S = { unit: 120, bpf: 600, e2e: 900 };
const OTHER_LIMIT_S = 600;
const KILL_GRACE_MS = 5000;
const preload = pathToFileURL(path.join(root, 'scripts', 'test-defaults.mjs')).href;
const RUN_LIMIT_S = Number(process.env.SPAK_TEST_RUN_LIMIT ?? 3600);
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
function groupRank(file) {
  const rank = GROUP_ORDER.indexOf(groupOf(file));
  return rank === -1 ? GROUP_ORDER.length : rank;
}

/** Per-file limit in seconds: a `// spak-test-timeout: N` comment in the first lines wins over the group default. */
function fileLimit(file) {
  const head = fs.readFileSync(file, 'utf8').split('\n', 15).join('\n');
  const m = /^\s*\/\/\s*spak-test-timeout:\s*(\d+)\s*$/m.exec(head);
  return m ? Number(m[1]) : FILE_LIMIT_S[groupOf(file)] ?? OTHER_LIMIT_S;
}

/** The enforcement modes a file runs in: [''] (no mode: run once as it is) unless it declares them. */
function fileModes(file) {
  const head = fs.readFileSync(file, 'utf8').split('\n', 15).join('\n');
  const m = /^\s*\/\/\s*spak-test-modes:\s*([\w ]+?)\s*$/m.exec(head);
  if (!m) return [''];
  const modes = m[1].split(/\s+/);
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
  .flatMap((file) => fileModes(file).map((mode) => ({ file, mode })))
  .sort((a, b) => groupRank(a.file) - groupRank(b.file) || MODE_ORDER.indexOf(a.mode) - MODE_ORDER.indexOf(b.mode)
    || (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));

if (files.length === 0) {
  console.error(filter ? `no test files match "${filter}"` : 'no test files found');
  process.exit(1);
}

let current = null; // the running child, so a signal to us stops it too

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

/** Run one file; resolves { code, timedOut } once the child and everything left in its process group are gone. */
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
    const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit', detached: true, env });
    current = child;
    let timedOut = false;
    let killTimer;
    const limitTimer = setTimeout(() => {
      timedOut = true;
      killGroup(child, 'SIGTERM');
      killTimer = setTimeout(() => killGroup(child, 'SIGKILL'), KILL_GRACE_MS); // even if the leader ignores SIGTERM
    }, limitS * 1000);
    child.on('error', reject);
    child.on('exit', async (code, signal) => {
      clearTimeout(limitTimer);
      current = null;
      // Whatever the file left in its group (a lab cleaning up after SIGTERM, a forgotten helper) gets the
      // grace period, then SIGKILL: nothing of one file runs into the next.
      const graceEnd = Date.now() + KILL_GRACE_MS;
      while (groupAlive(child) && Date.now() < graceEnd) await new Promise((r) => setTimeout(r, 100));
      if (groupAlive(child)) killGroup(child, 'SIGKILL');
      clearTimeout(killTimer);
      // node's own file timeout (just under our limit) is a timeout too.
      const nodeTimedOut = code !== 0 && Date.now() - started >= fileTimeoutMs;
      resolve({ code: code ?? (signal ? 1 : 0), timedOut: timedOut || nodeTimedOut });
    });
  });
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (current) {
      killGroup(current, 'SIGTERM');
      const child = current;
      setTimeout(() => { killGroup(child, 'SIGKILL'); process.exit(1); }, KILL_GRACE_MS).unref();
      child.on('exit', () => process.exit(1));
    } else {
      process.exit(1);
    }
  });
}

// Each file reports with spec on the terminal and TAP into a file we total at the end, so the run
// closes with one "tests: N passed, N failed, N skipped" line over every file.
const tapDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spak-tests-'));
const totals = { pass: 0, fail: 0, skipped: 0, todo: 0 };
const problems = [];
const runDeadline = Date.now() + RUN_LIMIT_S * 1000;
let exitCode = 0;
try {
  for (const [i, { file, mode }] of files.entries()) {
    const name = `${path.relative(distRoot, file)}${mode ? ` [${mode}]` : ''}`; // e.g. test/e2e/cli.test.js [tc]
    const left = Math.floor((runDeadline - Date.now()) / 1000);
    if (left <= 0) {
      problems.push(`TIMEOUT run limit of ${RUN_LIMIT_S} s reached: ${files.length - i} file(s) not run, from ${name}`);
      totals.fail += files.length - i;
      exitCode = 1;
      break;
    }
    const fileLimitS = fileLimit(file);
    const limitS = Math.min(fileLimitS, left);
    const tap = path.join(tapDir, `file-${i}.tap`);
    if (mode) console.log(`\n# ${name}`);
    const { code, timedOut } = await runFile(file, mode, limitS, tap);
    const text = fs.existsSync(tap) ? fs.readFileSync(tap, 'utf8') : '';
    const counts = {};
    for (const key of Object.keys(totals)) {
      const m = new RegExp(`^# ${key} (\\d+)$`, 'm').exec(text);
      counts[key] = m ? Number(m[1]) : 0;
      totals[key] += counts[key];
    }
    if (timedOut) {
      const why = limitS < fileLimitS ? ` (run limit of ${RUN_LIMIT_S} s)` : '';
      const line = `TIMEOUT ${name} after ${limitS} s${why}`;
      console.log(`\n${line}`);
      problems.push(line);
      totals.fail += 1;
      exitCode = 1;
    } else if (code !== 0) {
      if (counts.fail === 0) { // died before reporting a failure of its own
        problems.push(`FAILED ${name}: exit code ${code}`);
        totals.fail += 1;
      }
      exitCode = 1;
    }
  }
} finally {
  fs.rmSync(tapDir, { recursive: true, force: true });
}
if (problems.length) console.log(`\n${problems.join('\n')}`);
console.log(`\ntests: ${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped${totals.todo ? ` (${totals.todo} todo)` : ''}`);
process.exit(exitCode);
