// bpffs mounting and pin directories (in a private mount namespace, so the machine's own /sys/fs/bpf is
// never touched), and the flock-based daemon lock. Needs root and util-linux (unshare).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BpfError, inInitialMountNamespace, isBpffs, mkdirPins, readLockHolder, tryLock } from '../../src/bpf/libbpf.js';

const LIB_URL = new URL('../../src/bpf/libbpf.js', import.meta.url).href;
const scratchDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spak-bpffs-test-'));
after(() => fs.rmSync(scratchDir, { recursive: true, force: true }));

// Runs where /sys/fs/bpf is a bare sysfs directory, as on a machine that never mounted bpffs.
const BARE_CHILD = `
const [libUrl, scratch] = process.argv.slice(2);
const lib = await import(libUrl);
const fs = await import('node:fs');
const errorOf = (fn) => { try { fn(); return null; } catch (e) { return { name: e.name, code: e.code, message: e.message }; } };
const root = '/sys/fs/bpf';
const r = {};
r.initialNs = lib.inInitialMountNamespace();
r.bareIsBpffs = lib.isBpffs(root);
r.refused = errorOf(() => lib.ensureBpffs(root));
const t0 = Date.now();
r.mkdirOffBpffs = errorOf(() => lib.mkdirPins(root + '/spak/eth9'));
r.mkdirMs = Date.now() - t0;
r.first = lib.ensureBpffs(root, { allowPrivateMount: true });
r.second = lib.ensureBpffs(root, { allowPrivateMount: true });
r.isBpffs = lib.isBpffs(root);
r.created = lib.mkdirPins(root + '/spak/netns-1/eth9');
r.createdAgain = lib.mkdirPins(root + '/spak/netns-1/eth9');
lib.mkdirPins(root + '/spak/eth8');
const obj = lib.BpfObject.open(scratch + '/fixture.bpf.o');
obj.load();
obj.map('fixture_hash').pin(root + '/spak/netns-1/eth9/fixture_hash');
obj.map('fixture_counter').pin(root + '/spak/netns-1/eth9/fixture_counter');
obj.close();
r.removed1 = lib.removePins(root + '/spak/netns-1/eth9');
r.spakLeft = fs.readdirSync(root + '/spak');
r.removed2 = lib.removePins(root + '/spak/eth8');
r.rootLeft = fs.readdirSync(root).filter((n) => n === 'spak');
r.removedNothing = lib.removePins(root + '/spak/nope');
fs.mkdirSync(scratch + '/plain');
r.removeOffBpffs = errorOf(() => lib.removePins(scratch + '/plain'));
fs.mkdirSync(scratch + '/parent');
r.custom = lib.ensureBpffs(scratch + '/parent/bpf', { allowPrivateMount: true });
r.customIsBpffs = lib.isBpffs(scratch + '/parent/bpf');
console.log(JSON.stringify(r));
`;

describe('bpffs', () => {
  test('isBpffs and mkdirPins refuse a path off bpffs at once', () => {
    assert.equal(isBpffs(scratchDir), false);
    assert.equal(isBpffs('/nonexistent/spak'), false);
    assert.throws(() => mkdirPins(path.join(scratchDir, 'a/b')), (err: unknown) => {
      assert.ok(err instanceof BpfError);
      assert.equal(err.code, 'EOPNOTSUPP');
      assert.match(err.message, /is not on bpffs/);
      return true;
    });
    assert.equal(fs.existsSync(path.join(scratchDir, 'a')), false);
  });

  test('inInitialMountNamespace', () => {
    // The test runner may itself run in a private namespace (the bare-machine check does): compare with unshare.
    const child = spawnSync('unshare', ['-m', process.execPath, '--input-type=module', '-e',
      `const { inInitialMountNamespace } = await import(${JSON.stringify(LIB_URL)}); console.log(inInitialMountNamespace());`], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.stdout.trim(), 'false', child.stderr);
    assert.equal(typeof inInitialMountNamespace(), 'boolean');
  });

  test('ensureBpffs mounts bpffs where none is, in a private mount namespace', () => {
    const fixture = path.join(scratchDir, 'fixture.bpf.o');
    const source = new URL('../../../test/bpf/fixtures/maps_fixture.bpf.c', import.meta.url).pathname;
    const cc = spawnSync('clang-16', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', source, '-o', fixture], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
    const script = path.join(scratchDir, 'bare.mjs');
    fs.writeFileSync(script, BARE_CHILD);
    // Private propagation: the umount and our mounts stay inside the child's namespace and die with it.
    const child = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c',
      'while umount /sys/fs/bpf 2>/dev/null; do :; done; exec "$0" "$@"', process.execPath, script, LIB_URL, scratchDir], {
      encoding: 'utf8', timeout: 60_000,
    });
    assert.equal(child.status, 0, `child failed (${child.signal ?? child.status}):\n${child.stderr}`);
    const r = JSON.parse(child.stdout);
    const root = '/sys/fs/bpf';
    assert.equal(r.initialNs, false);
    assert.equal(r.bareIsBpffs, false);
    assert.match(r.refused?.message ?? '', /^cannot mount bpffs at \/sys\/fs\/bpf: .*private mount namespace.*nsenter --net=\/run\/netns\/NAME/);
    assert.equal(r.mkdirOffBpffs?.code, 'EOPNOTSUPP');
    assert.match(r.mkdirOffBpffs.message, /^creating pin directory \/sys\/fs\/bpf\/spak\/eth9: \/sys\/fs\/bpf is not on bpffs/);
    assert.ok(r.mkdirMs < 1000, `mkdirPins took ${r.mkdirMs} ms`);
    assert.deepEqual([r.first, r.second, r.isBpffs], [{ mounted: true }, { mounted: false }, true]);
    assert.deepEqual(r.created, [`${root}/spak`, `${root}/spak/netns-1`, `${root}/spak/netns-1/eth9`]);
    assert.deepEqual(r.createdAgain, []);
    assert.deepEqual(r.removed1.sort(), [
      `${root}/spak/netns-1`, `${root}/spak/netns-1/eth9`,
      `${root}/spak/netns-1/eth9/fixture_counter`, `${root}/spak/netns-1/eth9/fixture_hash`,
    ]);
    assert.deepEqual(r.spakLeft, ['eth8']);
    assert.deepEqual(r.removed2, [`${root}/spak/eth8`, `${root}/spak`]);
    assert.deepEqual(r.rootLeft, []);
    assert.deepEqual(r.removedNothing, []);
    assert.match(r.removeOffBpffs?.message ?? '', /is not on bpffs/);
    assert.deepEqual([r.custom, r.customIsBpffs], [{ mounted: true }, true]);
    // The child's mounts died with its namespace.
    assert.equal(isBpffs(path.join(scratchDir, 'parent/bpf')), false);
  });
});

const HOLDER_CHILD = `
const [libUrl, lockPath] = process.argv.slice(2);
const lib = await import(libUrl);
const r = lib.tryLock(lockPath);
console.log(JSON.stringify({ acquired: r.acquired }));
setInterval(() => {}, 1000);
`;

describe('daemon lock', () => {
  const lockPath = path.join(scratchDir, 'run/spak/eth9.server.lock');

  test('a lock held by another process is reported with its pid and freed when it is SIGKILLed', async () => {
    const script = path.join(scratchDir, 'holder.mjs');
    fs.writeFileSync(script, HOLDER_CHILD);
    assert.equal(readLockHolder(lockPath), null); // no file yet
    const child = spawn(process.execPath, [script, LIB_URL, lockPath], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        child.stdout.once('data', (d: Buffer) => resolve(d.toString()));
        child.once('exit', (code) => reject(new Error(`holder exited early (${code})`)));
      });
      assert.deepEqual(JSON.parse(line), { acquired: true });
      assert.equal(readLockHolder(lockPath), child.pid);
      const second = tryLock(lockPath);
      assert.deepEqual(second, { acquired: false, path: lockPath, heldBy: child.pid });
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
    assert.equal(readLockHolder(lockPath), null); // the kernel dropped the flock with the process
    const mine = tryLock(lockPath);
    try {
      assert.equal(mine.acquired, true);
      assert.equal(readLockHolder(lockPath), process.pid);
      assert.equal(fs.readFileSync(lockPath, 'utf8'), `${process.pid}\n`);
    } finally {
      if (mine.acquired) mine.release();
    }
    assert.equal(readLockHolder(lockPath), null);
  });
});
