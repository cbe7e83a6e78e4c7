#!/usr/bin/env node
// Runs the compiled tests (dist/test/**/*.test.js) one file at a time: unit, then bpf, then e2e,
// then anything else, each group in path order. Node 20's --test takes no globs, so we list files here.
// Exits with the first non-zero exit code of a group (every group still runs).
// Usage: node scripts/run-tests.mjs [filter]   (filter = substring of the test file path)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const testRoot = path.join(root, 'dist', 'test');
const GROUP_ORDER = ['unit', 'bpf', 'e2e'];
const filter = process.argv[2];

function listTests(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return listTests(full);
    return entry.isFile() && entry.name.endsWith('.test.js') ? [full] : [];
  });
}

function groupRank(file) {
  const group = path.relative(testRoot, file).split(path.sep)[0];
  const rank = GROUP_ORDER.indexOf(group);
  return rank === -1 ? GROUP_ORDER.length : rank;
}

if (!fs.existsSync(testRoot)) {
  console.error(`no compiled tests in ${path.relative(root, testRoot)}: run \`npx tsc -p tsconfig.json\` first`);
  process.exit(1);
}

const files = listTests(testRoot)
  .filter((file) => !filter || path.relative(root, file).includes(filter))
  .sort((a, b) => groupRank(a) - groupRank(b) || (a < b ? -1 : a > b ? 1 : 0));

if (files.length === 0) {
  console.error(filter ? `no test files match "${filter}"` : 'no test files found');
  process.exit(1);
}

// One node --test per group: node sorts the files it is given alphabetically, which would put bpf before unit.
const groups = new Map();
for (const file of files) {
  const rank = groupRank(file);
  if (!groups.has(rank)) groups.set(rank, []);
  groups.get(rank).push(path.relative(root, file));
}

// Each group reports with spec on the terminal and TAP into a file we total at the end, so the
// run closes with one "tests: N passed, N failed" line over every group.
const tapDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spak-tests-'));
const totals = { pass: 0, fail: 0, skipped: 0, todo: 0 };
let exitCode = 0;
try {
  let i = 0;
  for (const groupFiles of groups.values()) {
    const tap = path.join(tapDir, `group-${i++}.tap`);
    const args = ['--test', '--test-concurrency=1', '--test-reporter=spec', '--test-reporter-destination=stdout',
      '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...groupFiles];
    const result = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
    if (result.error) throw result.error;
    const code = result.status ?? 1; // killed by a signal counts as a failure
    if (exitCode === 0) exitCode = code; // report the first failing group's code, but still run the rest
    const text = fs.existsSync(tap) ? fs.readFileSync(tap, 'utf8') : '';
    for (const key of Object.keys(totals)) {
      const m = new RegExp(`^# ${key} (\\d+)$`, 'm').exec(text);
      if (m) totals[key] += Number(m[1]);
    }
  }
} finally {
  fs.rmSync(tapDir, { recursive: true, force: true });
}
if (exitCode !== 0 && totals.fail === 0) totals.fail = 1; // a group died before reporting
console.log(`\ntests: ${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped${totals.todo ? ` (${totals.todo} todo)` : ''}`);
process.exit(exitCode);
