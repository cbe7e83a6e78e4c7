// Real (unmocked) tests of the libbpf binding. They need root, clang-16, iproute2 and build/baseline.bpf.o (`make bpf`).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BpfError, BpfMap, BpfObject, DEFAULT_BPFFS, ensureBpffs, ifIndex, mapShapeMismatch, mkdirPins, numPossibleCpus, removePins, setLibbpfLogger, testRun, u32,
} from '../../src/bpf/libbpf.js';

const LIB_URL = new URL('../../src/bpf/libbpf.js', import.meta.url).href; // the compiled module under test

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'Makefile'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('cannot find the repository root (no Makefile above the test)');
    dir = parent;
  }
  return dir;
}

const repoRoot = findRepoRoot();
const baselinePath = path.join(repoRoot, 'build/baseline.bpf.o');
const fixtureSource = path.join(repoRoot, 'test/bpf/fixtures/maps_fixture.bpf.c');
const scratchDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spak-libbpf-test-'));
after(() => fs.rmSync(scratchDir, { recursive: true, force: true }));

/** Compile the map fixture (once per variant) into the scratch dir. */
const compiled = new Map<string, string>();
function compileFixture(variant: 'ok' | 'broken' = 'ok'): string {
  const cached = compiled.get(variant);
  if (cached) return cached;
  const out = path.join(scratchDir, `maps_fixture_${variant}.bpf.o`);
  const defines = variant === 'broken' ? ['-DSPAK_FIXTURE_BROKEN'] : [];
  execFileSync('clang-16', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', ...defines, '-c', fixtureSource, '-o', out]);
  compiled.set(variant, out);
  return out;
}

function isBpfError(pattern: RegExp, code?: string) {
  return (err: unknown) => {
    assert.ok(err instanceof BpfError, `expected a BpfError, got ${String(err)}`);
    assert.match(err.message, pattern);
    if (code) assert.equal(err.code, code);
    return true;
  };
}


function u64(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}

/** A minimal Ethernet + IPv4 + UDP frame (checksums are irrelevant to test_run). */
function udpFrame(): Buffer {
  const payload = Buffer.from('spak');
  const frame = Buffer.alloc(14 + 20 + 8 + payload.length);
  Buffer.from('020000000002020000000001', 'hex').copy(frame, 0); // dst, src MAC
  frame.writeUInt16BE(0x0800, 12);
  frame.writeUInt8(0x45, 14); // IPv4, IHL 5
  frame.writeUInt16BE(frame.length - 14, 16);
  frame.writeUInt8(64, 22); // TTL
  frame.writeUInt8(17, 23); // UDP
  Buffer.from([10, 0, 0, 1, 10, 0, 0, 2]).copy(frame, 26);
  frame.writeUInt16BE(40000, 34);
  frame.writeUInt16BE(62201, 36);
  frame.writeUInt16BE(8 + payload.length, 38);
  payload.copy(frame, 42);
  return frame;
}

describe('errors and lookups', () => {
  test('opening a missing object file names the path', () => {
    assert.throws(() => BpfObject.open('/nonexistent/missing.bpf.o'), isBpfError(/^opening \/nonexistent\/missing\.bpf\.o: no such file or directory$/, 'ENOENT'));
  });

  test('unknown interface -> no such device', () => {
    assert.throws(() => ifIndex('spak-nope0'), isBpfError(/^looking up interface spak-nope0: no such device$/, 'ENODEV'));
    assert.equal(ifIndex('lo'), 1);
  });

  test('numPossibleCpus is at least the online CPU count', () => {
    assert.ok(numPossibleCpus() >= os.cpus().length);
  });

  test('setLibbpfLogger receives libbpf output', () => {
    const lines: string[] = [];
    setLibbpfLogger((level, msg) => lines.push(`${level}: ${msg}`));
    try {
      assert.throws(() => BpfObject.open('/nonexistent/logged.bpf.o'), BpfError);
    } finally {
      setLibbpfLogger(null);
    }
    assert.ok(lines.some((l) => l.startsWith('warn: ') && l.includes('/nonexistent/logged.bpf.o')), lines.join('\n'));
  });
});

describe('baseline object', () => {
  let obj: BpfObject;
  before(() => {
    assert.ok(fs.existsSync(baselinePath), `${baselinePath} is missing: run \`make bpf\` first`);
    obj = BpfObject.open(baselinePath);
    obj.load();
  });
  after(() => obj.close());

  test('XDP test_run returns XDP_PASS', () => {
    const prog = obj.program('baseline_xdp_pass');
    const once = testRun(prog, Buffer.alloc(64));
    assert.equal(once.retval, 2);
    assert.equal(typeof once.durationNs, 'number');
    assert.equal(once.dataOut.length, 64);
    const many = testRun(prog, Buffer.alloc(64), { repeat: 1000 });
    assert.equal(many.retval, 2);
    assert.ok(Number.isInteger(many.durationNs) && many.durationNs >= 0);
  });

  test('tc test_run returns TC_ACT_OK and the frame unchanged', () => {
    const frame = udpFrame();
    const result = testRun(obj.program('baseline_tc_ok'), frame);
    assert.equal(result.retval, 0);
    assert.deepEqual(result.dataOut, frame);
  });

  test('a missing program or map is a clear error', () => {
    assert.throws(() => obj.program('nope'), isBpfError(/^finding program nope in .*baseline\.bpf\.o: no such program$/, 'ENOENT'));
    assert.throws(() => obj.map('nope'), isBpfError(/no such map$/, 'ENOENT'));
  });

  test('close is idempotent and invalidates programs', () => {
    const other = BpfObject.open(baselinePath);
    other.load();
    const prog = other.program('baseline_xdp_pass');
    assert.ok(prog.fd > 0);
    other.close();
    other.close();
    assert.throws(() => prog.fd, isBpfError(/is closed$/, 'EBADF'));
  });
});

describe('maps fixture', () => {
  let obj: BpfObject;
  before(() => {
    obj = BpfObject.open(compileFixture());
    obj.setMaxEntries('fixture_hash', 64);
    obj.load();
  });
  after(() => obj.close());

  test('setMaxEntries applies before load and is refused after', () => {
    const hash = obj.map('fixture_hash');
    assert.equal(hash.maxEntries, 64);
    assert.equal(hash.keySize, 4);
    assert.equal(hash.valueSize, 8);
    assert.equal(hash.type, 1); // BPF_MAP_TYPE_HASH
    assert.throws(() => obj.setMaxEntries('fixture_hash', 128), isBpfError(/^setting max_entries of map fixture_hash: /));
  });

  test('hash update / lookup / delete / keys', () => {
    const hash = obj.map('fixture_hash');
    assert.equal(hash.lookup(u32(7)), null);
    hash.update(u32(7), u64(700n));
    hash.update(u32(8), u64(800n), 'noexist');
    assert.deepEqual(hash.lookup(u32(7)), u64(700n));
    assert.throws(() => hash.update(u32(7), u64(1n), 'noexist'), isBpfError(/^updating map fixture_hash: /, 'EEXIST'));
    assert.throws(() => hash.update(u32(9), u64(1n), 'exist'), isBpfError(/^updating map fixture_hash: /, 'ENOENT'));
    hash.update(u32(7), u64(701n), 'exist');
    assert.deepEqual(hash.lookup(u32(7)), u64(701n));
    const keys = hash.keys().map((k) => k.readUInt32LE(0)).sort((a, b) => a - b);
    assert.deepEqual(keys, [7, 8]);
    assert.equal(hash.delete(u32(7)), true);
    assert.equal(hash.delete(u32(7)), false);
    assert.deepEqual(hash.keys(), [u32(8)]);
    assert.throws(() => hash.lookup(Buffer.alloc(2)), isBpfError(/key is 2 bytes, the map expects 4/, 'EINVAL'));
    assert.throws(() => hash.update(u32(1), Buffer.alloc(4)), isBpfError(/value is 4 bytes, the map expects 8/, 'EINVAL'));
  });

  test('per-CPU counter after test_run', () => {
    const counter = obj.map('fixture_counter');
    const before = counter.lookupPerCpu(u32(0));
    assert.equal(before.length, numPossibleCpus());
    const total = (slots: Buffer[]) => slots.reduce((sum, slot) => sum + slot.readBigUInt64LE(0), 0n);
    assert.equal(total(before), 0n);
    assert.equal(testRun(obj.program('fixture_count'), Buffer.alloc(64), { repeat: 5 }).retval, 2);
    assert.equal(total(counter.lookupPerCpu(u32(0))), 5n);
    assert.equal(counter.lookup(u32(0))?.length, 8 * numPossibleCpus());
    assert.throws(() => obj.map('fixture_hash').lookupPerCpu(u32(0)), isBpfError(/not a per-CPU map/));
  });

  test('pin, openPinned, unpin', () => {
    // ensureBpffs mounts bpffs if the machine has none; mkdirPins refuses (rather than spin) off bpffs.
    ensureBpffs(DEFAULT_BPFFS, { allowPrivateMount: true });
    const pinDir = path.join(DEFAULT_BPFFS, `spak-test-${process.pid}`);
    const pinPath = path.join(pinDir, 'fixture_hash');
    mkdirPins(pinDir);
    try {
      const hash = obj.map('fixture_hash');
      hash.update(u32(42), u64(4242n));
      hash.pin(pinPath);
      const pinned = BpfMap.openPinned(pinPath);
      try {
        assert.equal(pinned.name, 'fixture_hash');
        assert.equal(pinned.keySize, 4);
        assert.equal(pinned.valueSize, 8);
        assert.equal(pinned.maxEntries, 64);
        assert.deepEqual(pinned.lookup(u32(42)), u64(4242n));
        pinned.update(u32(43), u64(4343n));
        assert.deepEqual(hash.lookup(u32(43)), u64(4343n)); // same kernel map
      } finally {
        pinned.close();
        pinned.close();
      }
      assert.throws(() => pinned.fd, isBpfError(/map is closed/, 'EBADF'));
      hash.unpin(pinPath);
      assert.equal(fs.existsSync(pinPath), false);
      assert.throws(() => BpfMap.openPinned(pinPath), isBpfError(/^opening pinned map .*: no such file or directory$/, 'ENOENT'));
    } finally {
      removePins(pinDir);
    }
  });

  test('batch update / lookup / delete on a 250,000-entry hash', () => {
    const big = obj.map('fixture_big');
    const n = 250_000;
    const keys = Array.from({ length: n }, (_, i) => u32(i * 7 + 1));
    const values = Array.from({ length: n }, (_, i) => u64(BigInt(i) * 3n));
    const t0 = performance.now();
    assert.equal(big.updateBatch(keys, values), n);
    const t1 = performance.now();
    const all = big.lookupBatch();
    const t2 = performance.now();
    assert.equal(all.keys.length, n);
    const seen = new Map(all.keys.map((k, i) => [k.readUInt32LE(0), all.values[i]!.readBigUInt64LE(0)]));
    assert.equal(seen.size, n);
    for (const i of [0, 1, 4242, n - 1]) assert.equal(seen.get(i * 7 + 1), BigInt(i) * 3n);
    let chunks = 0;
    for (const c of big.lookupChunks(1024)) chunks += c.count > 0 ? 1 : 0;
    assert.ok(chunks >= n / 1024 - 1, `only ${chunks} chunks of 1024`);
    // Half the keys plus some that are not there: missing keys are skipped, the rest deleted.
    const doomed = [...keys.filter((_, i) => i % 2 === 0), u32(0), u32(2)];
    const t3 = performance.now();
    assert.equal(big.deleteBatch(doomed), n / 2);
    const t4 = performance.now();
    assert.equal(big.lookupBatch().keys.length, n / 2);
    assert.equal(big.lookup(u32(1)), null);
    assert.deepEqual(big.lookup(u32(8)), u64(3n));
    assert.throws(() => big.updateBatch([u32(8)], [u64(1n)], 'noexist'), isBpfError(/only 'any'/, 'EINVAL'));
    assert.throws(() => big.updateBatch([u32(8)], []), isBpfError(/1 keys but 0 values/, 'EINVAL'));
    // One syscall per 8192 entries: a few hundred milliseconds at most even on a slow machine.
    const timings = [['update', t1 - t0], ['lookup', t2 - t1], ['delete', t4 - t3]] as const;
    console.log(`# batch ops on ${n} entries: ${timings.map(([w, ms]) => `${w} ${ms.toFixed(0)} ms`).join(', ')}`);
    for (const [what, ms] of timings) {
      assert.ok(ms < 3000, `${what} of ${n} entries took ${ms.toFixed(0)} ms`);
    }
    big.deleteBatch(big.lookupBatch().keys);
    assert.equal(big.lookupBatch().keys.length, 0);
  });

  test('program and map ids', () => {
    const prog = obj.program('fixture_count');
    assert.ok(prog.id > 0);
    assert.equal(prog.id, prog.id);
    assert.ok(obj.map('fixture_hash').id > 0);
    const byId = BpfMap.fromId(obj.map('fixture_hash').id);
    try {
      assert.equal(byId.name, 'fixture_hash');
      assert.equal(byId.id, obj.map('fixture_hash').id);
    } finally {
      byId.close();
    }
  });

  test('reuseMap makes a second object share a pinned map, and refuses an incompatible one', () => {
    ensureBpffs(DEFAULT_BPFFS, { allowPrivateMount: true });
    const pinDir = path.join(DEFAULT_BPFFS, `spak-test-reuse-${process.pid}`);
    mkdirPins(pinDir);
    const second = BpfObject.open(compileFixture());
    const third = BpfObject.open(compileFixture());
    try {
      const hash = obj.map('fixture_hash');
      hash.pin(path.join(pinDir, 'fixture_hash'));
      hash.update(u32(1000), u64(1n));
      const pinned = BpfMap.openPinned(path.join(pinDir, 'fixture_hash'));
      second.setMaxEntries('fixture_hash', 64);
      assert.equal(mapShapeMismatch(second.mapShape('fixture_hash'), pinned.shape), null);
      second.reuseMap('fixture_hash', pinned);
      assert.equal(mapShapeMismatch(third.mapShape('fixture_hash'), pinned.shape), 'max entries 64 (expected 16)');
      assert.throws(() => third.reuseMap('fixture_hash', pinned), isBpfError(/incompatible map: max entries 64 \(expected 16\)$/, 'EINVAL'));
      pinned.close(); // libbpf holds its own duplicate
      second.load();
      assert.equal(second.map('fixture_hash').id, hash.id);
      assert.deepEqual(second.map('fixture_hash').lookup(u32(1000)), u64(1n));
      assert.throws(() => second.reuseMap('fixture_hash', hash), isBpfError(/already loaded/, 'EBUSY'));
      hash.delete(u32(1000));
    } finally {
      second.close();
      third.close();
      removePins(pinDir);
    }
  });

  test('a verifier rejection keeps the message on one line and the log in err.verifierLog', () => {
    const broken = BpfObject.open(compileFixture('broken'));
    try {
      assert.throws(() => broken.load(), (err: unknown) => {
        assert.ok(err instanceof BpfError);
        assert.match(err.message, /^loading .*maps_fixture_broken\.bpf\.o: permission denied$/);
        assert.equal(err.code, 'EACCES');
        assert.match(err.verifierLog ?? '', /invalid mem access/);
        assert.ok(err.libbpfLog?.some((line) => line.includes('fixture_broken')), String(err.libbpfLog));
        return true;
      });
    } finally {
      broken.close();
    }
  });
});

// The child runs inside the namespace (netlink attach calls act on the caller's netns) and reports JSON.
const NETNS_CHILD = `
import { execFileSync } from 'node:child_process';
const [libUrl, baselinePath, fixturePath] = process.argv.slice(2);
const { BpfObject, attachXdp, attachTc } = await import(libUrl);
const run = (cmd, ...args) => execFileSync(cmd, args, { encoding: 'utf8' });
const xdpOf = (dev) => JSON.parse(run('ip', '-j', 'link', 'show', 'dev', dev))[0].xdp ?? null;
const errorOf = (fn) => { try { fn(); return null; } catch (e) { return { name: e.name, code: e.code, message: e.message }; } };
const tcState = (dev) => ({ filters: run('tc', 'filter', 'show', 'dev', dev, 'egress'), qdiscs: run('tc', 'qdisc', 'show', 'dev', dev) });

const baseline = BpfObject.open(baselinePath);
baseline.load();
const xdp = baseline.program('baseline_xdp_pass');
const report = {};

const native = attachXdp(xdp, 'spak0', { mode: 'native' });
report.native = { mode: native.mode, ifname: native.ifname, xdp: xdpOf('spak0') };
report.secondAttach = errorOf(() => attachXdp(xdp, 'spak0', { mode: 'native' }));
report.otherModeAttach = errorOf(() => attachXdp(xdp, 'spak0', { mode: 'generic' }));
native.detach();
report.detachTwice = errorOf(() => native.detach());
report.afterDetach = xdpOf('spak0');

const generic = attachXdp(xdp, 'spak1', { mode: 'generic' });
report.generic = { mode: generic.mode, xdp: xdpOf('spak1') };
generic.detach();
report.afterGenericDetach = xdpOf('spak1');

const auto = attachXdp(xdp, 'spak0');
report.autoMode = auto.mode;
auto.detach();

// detach() must leave alone a program that replaced ours, and must work after the object is closed.
const fixture = BpfObject.open(fixturePath);
fixture.load();
const ours = attachXdp(xdp, 'spak0', { mode: 'native' });
const theirs = attachXdp(fixture.program('fixture_count'), 'spak0', { mode: 'native', replace: true });
ours.detach();
report.afterForeignDetach = xdpOf('spak0');
fixture.close();
report.afterOwnerClosed = xdpOf('spak0');
theirs.detach();
report.afterClosedDetach = xdpOf('spak0');

const tc = attachTc(baseline.program('baseline_tc_ok'), 'spak0', 'egress');
report.tc = { handle: tc.handle, priority: tc.priority, direction: tc.direction, ...tcState('spak0') };
tc.detach();
tc.detach();
report.afterTcDetach = tcState('spak0');

report.unknownInterface = errorOf(() => attachXdp(xdp, 'spak-nope0'));
baseline.close();
console.log(JSON.stringify(report));
`;

describe('attaching in a fresh network namespace', () => {
  const netns = `spak-t-${process.pid}`;
  let report: any;

  before(() => {
    const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const script = path.join(scratchDir, 'netns-child.mjs');
    fs.writeFileSync(script, NETNS_CHILD);
    spawnSync('ip', ['netns', 'del', netns]); // leftover from a killed run with the same pid
    try {
      ip('netns', 'add', netns);
      // "name"/"dev" keywords matter: iproute2 would read a bare "a" as an abbreviation of "address".
      ip('-n', netns, 'link', 'add', 'name', 'spak0', 'type', 'veth', 'peer', 'name', 'spak1');
      ip('-n', netns, 'link', 'set', 'dev', 'spak0', 'up');
      ip('-n', netns, 'link', 'set', 'dev', 'spak1', 'up');
      const child = spawnSync('ip', ['netns', 'exec', netns, process.execPath, script, LIB_URL, baselinePath, compileFixture()], {
        encoding: 'utf8', timeout: 60_000,
      });
      assert.equal(child.status, 0, `netns child failed:\n${child.stderr}`);
      report = JSON.parse(child.stdout);
    } finally {
      spawnSync('ip', ['netns', 'del', netns]);
    }
  });

  test('native XDP attaches as driver mode and detaches', () => {
    assert.equal(report.native.mode, 'native');
    assert.equal(report.native.xdp?.mode, 1); // XDP_ATTACHED_DRV ("xdp" rather than "xdpgeneric")
    assert.equal(report.native.xdp?.prog?.name, 'baseline_xdp_pa'); // kernel names are 15 chars
    assert.equal(report.detachTwice, null);
    assert.equal(report.afterDetach, null);
  });

  test('attaching over an existing XDP program is refused', () => {
    for (const err of [report.secondAttach, report.otherModeAttach]) {
      assert.equal(err?.name, 'BpfError');
      assert.equal(err?.message, 'attaching XDP to spak0: another XDP program is already attached');
    }
  });

  test('generic and auto modes', () => {
    assert.equal(report.generic.mode, 'generic');
    assert.equal(report.generic.xdp?.mode, 2); // XDP_ATTACHED_SKB ("xdpgeneric")
    assert.equal(report.afterGenericDetach, null);
    assert.equal(report.autoMode, 'native'); // veth supports native XDP
  });

  test('detach removes only our own program, even after the object is closed', () => {
    assert.equal(report.afterForeignDetach?.prog?.name, 'fixture_count');
    assert.equal(report.afterOwnerClosed?.prog?.name, 'fixture_count');
    assert.equal(report.afterClosedDetach, null);
  });

  test('tc egress attach creates clsact, detach removes filter and qdisc', () => {
    assert.equal(report.tc.direction, 'egress');
    assert.ok(report.tc.handle > 0 && report.tc.priority > 0);
    assert.match(report.tc.filters, /baseline_tc_ok.*direct-action/);
    assert.match(report.tc.qdiscs, /clsact/);
    assert.equal(report.afterTcDetach.filters.trim(), '');
    assert.doesNotMatch(report.afterTcDetach.qdiscs, /clsact/);
  });

  test('unknown interface -> no such device', () => {
    assert.equal(report.unknownInterface?.code, 'ENODEV');
    assert.match(report.unknownInterface?.message, /no such device/);
  });
});
