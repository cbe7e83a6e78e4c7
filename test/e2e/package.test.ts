// spak-test-timeout: 600
// The npm package (issue 7 §4): `npm pack` of the built checkout carries the compiled eBPF objects,
// so installing it needs no clang. Packed from the existing dist/ and build/ (nothing rebuilt),
// installed globally into a temporary prefix, and run from there: --help, keygen, `doctor` (it must load
// the packaged objects), and a real `spak server` in a lab namespace loading the packaged object.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, REPO_ROOT } from '../../src/lab/lab.js';
import { skip } from './common.js';

const KEY = '112233445566778899aabbccddeeff00';
const NPM_TIMEOUT_MS = 300_000;

function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeout ?? 60_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

/** Environment for npm and the installed spak: node on PATH, nothing of this checkout's leaking in. */
function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('SPAK_') && !k.startsWith('npm_') && k !== 'SECRET_KEY') env[k] = v;
  env.PATH = `${path.dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`;
  return env;
}

/** mtimes of what the pack must take as built: nothing may be rebuilt. */
function builtMtimes(): Map<string, number> {
  const files = ['build/server.bpf.o', 'build/client.bpf.o', 'dist/src/cli/main.js', 'dist/src/bpf/object-files.js'];
  return new Map(files.map((f) => [f, statSync(path.join(REPO_ROOT, f)).mtimeMs]));
}

describe('npm package: packed, installed into a temporary prefix, run from there', { skip }, () => {
  let tmp = '';
  let tarball = '';
  let prefix = '';
  let spak = '';
  let entries: string[] = [];

  before(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'spak-pkg-'));
    prefix = path.join(tmp, 'prefix');
  });

  after(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test('npm pack uses the built dist/ and build/: nothing rebuilt', () => {
    const before = builtMtimes();
    // --ignore-scripts: no prepack/prepare hook may rebuild (there is none; this keeps it so).
    const r = sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: REPO_ROOT, env: cleanEnv(), timeout: NPM_TIMEOUT_MS });
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
    tarball = path.join(tmp, info[0]!.filename);
    assert.ok(existsSync(tarball), tarball);
    assert.deepEqual(builtMtimes(), before, 'the build outputs were not touched');
    const list = sh('tar', ['-tzf', tarball]);
    assert.equal(list.status, 0, list.stderr);
    entries = list.stdout.split('\n').filter(Boolean).map((e) => e.replace(/^package\//, ''));
    assert.deepEqual(new Set(info[0]!.files.map((f) => f.path)), new Set(entries), 'npm and tar agree on the contents');
  });

  test('the tarball carries the eBPF objects, the CLI, README, examples and packaging, and no tests or sources', () => {
    assert.ok(tarball, 'packed');
    for (const f of ['build/server.bpf.o', 'build/client.bpf.o', 'bin/spak', 'dist/src/cli/main.js', 'dist/src/bpf/object-files.js', 'README.md',
      'package.json', 'examples/spak.json', 'examples/client.json', 'packaging/systemd/spak-server.service', 'packaging/systemd/spak-client.service',
      'packaging/sysusers.d/spak.conf'])
      assert.ok(entries.includes(f), `${f} is in the tarball`);
    const unwanted = entries.filter((e) => /^(test|bench|src|bpf|scripts|dist\/test|dist\/bench)\//.test(e) || e.endsWith('.ts') || e.endsWith('.map') || e === 'build/siphash_test.bpf.o');
    assert.deepEqual(unwanted, []);
  });

  test('the product is all there: every module of src/ but the lab, and nothing of the lab or the test support', () => {
    assert.ok(tarball, 'packed');
    const sourcesOf = (dir: string): string[] => readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? sourcesOf(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []);
    const product = sourcesOf('src').filter((f) => !f.startsWith(`src${path.sep}lab${path.sep}`)).map((f) => `dist/${f.replace(/\.ts$/, '.js')}`);
    assert.deepEqual(product.filter((f) => !entries.includes(f)), [], 'every product module is packed');
    const packedJs = entries.filter((e) => e.startsWith('dist/src/'));
    // The lab (make demo, the benchmarks, the e2e tests) stays out, and so does whatever a stale dist/ still holds.
    assert.deepEqual(packedJs.filter((e) => e.startsWith('dist/src/lab/')), [], 'no dist/src/lab');
    assert.deepEqual(packedJs.filter((e) => !product.includes(e)), [], 'nothing packed without its source in src/');
    const support = sourcesOf(path.join('test', 'support')).map((f) => path.basename(f, '.ts'));
    assert.ok(support.includes('packet'), 'the test support is where this test looks for it');
    assert.deepEqual(entries.filter((e) => support.some((name) => e.endsWith(`/${name}.js`) && !product.includes(e))), [], 'no test support');
  });

  test('npm install -g into a temporary prefix (from the npm cache when it has everything)', () => {
    assert.ok(tarball, 'packed');
    const r = sh('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], {
      env: cleanEnv(), timeout: NPM_TIMEOUT_MS,
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    spak = path.join(prefix, 'bin', 'spak');
    assert.ok(existsSync(spak), `${spak} installed`);
    const pkgDir = path.join(prefix, 'lib', 'node_modules', 'spak');
    assert.equal(realpathSync(spak), path.join(pkgDir, 'bin', 'spak'));
    assert.deepEqual(readdirSync(path.join(pkgDir, 'build')).sort(), ['client.bpf.o', 'server.bpf.o']);
  });

  test('the installed spak: --help, keygen, and the objects found inside the installed package', () => {
    assert.ok(spak, 'installed');
    const help = sh(spak, ['--help'], { env: cleanEnv() });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^Usage: spak/m);
    for (const cmd of ['server', 'client', 'keygen', 'stats', 'knock']) assert.match(help.stdout, new RegExp(`^ {2}${cmd}\\b`, 'm'), cmd);
    const key = sh(spak, ['keygen'], { env: cleanEnv() });
    assert.equal(key.status, 0, key.stderr);
    assert.match(key.stdout, /^[0-9a-f]{32}\n$/);
    const objects = path.join(prefix, 'lib', 'node_modules', 'spak', 'dist', 'src', 'bpf', 'object-files.js');
    const where = sh(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(objects)}).then((m) => console.log(m.objectPath('server')))`], { env: cleanEnv() });
    assert.equal(where.status, 0, where.stderr);
    assert.equal(where.stdout.trim(), path.join(prefix, 'lib', 'node_modules', 'spak', 'build', 'server.bpf.o'));
  });

  test('spak doctor from the installed copy', () => {
    assert.ok(spak, 'installed');
    const r = sh(spak, ['doctor'], { env: cleanEnv(), timeout: 60_000 });
    // Its exit code is the worst severity it found on this machine (0, 1 or 2: an unsynchronised
    // clock is a warning); what matters here is that the installed copy runs it to the end and
    // loads the objects that came in the tarball, with no clang and no checkout.
    assert.ok(r.status === 0 || r.status === 1 || r.status === 2, `exit ${r.status}: ${r.stderr}`);
    assert.match(r.stdout, /^OK +object server +server\.bpf\.o loads/m, r.stdout);
    assert.match(r.stdout, /^OK +object client +client\.bpf\.o loads/m, r.stdout);
    assert.match(r.stdout, /\d+ OK, \d+ WARN, \d+ FAIL \(exit \d\)/);
    assert.doesNotMatch(r.stderr, /ERR_MODULE_NOT_FOUND|Cannot find module|\n\s+at /);
  });

  test('the installed spak server loads the packaged object and attaches, in a lab namespace', async () => {
    assert.ok(spak, 'installed');
    const lab = await Lab.create({ tag: 'pkg' });
    try {
      const host = await lab.addHost('srv', 1);
      const env = { ...cleanEnv(), SECRET_KEY: KEY };
      const proc = lab.spawn(host.name, [process.execPath, spak, 'server', host.v4, '8080', '1', 'eth0', '--xdp-mode', 'generic'], env, 'installed spak server', 'nsenter');
      const banner = await proc.waitForLine(/spak server: XDP/, 20_000);
      assert.match(banner, /XDP \(generic\) attached to eth0/);
      await proc.stop();
      const stop = await lab.execNet(host.name, [process.execPath, spak, 'server', 'stop', 'eth0'], { timeoutMs: 30_000 });
      assert.equal(stop.code, 0, stop.stderr);
      assert.match(stop.stdout, /spak server stop: /);
    } finally {
      await lab.destroy();
    }
  });
});
