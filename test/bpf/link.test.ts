// XDP and tcx (TC ingress) bpf_links and tc queries on a veth pair in a throwaway network namespace. The children run with
// `nsenter --net` (not `ip netns exec`, which remounts /sys and would hide our bpffs), so pins they make
// are visible here and outlive them. Needs root, clang-16, iproute2, util-linux and `make bpf`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_BPFFS, ensureBpffs, mkdirPins, removePins } from '../../src/bpf/libbpf.js';

const LIB_URL = new URL('../../src/bpf/libbpf.js', import.meta.url).href;

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'Makefile'))) dir = path.dirname(dir);
  return dir;
}
const repoRoot = findRepoRoot();
const baselinePath = path.join(repoRoot, 'build/baseline.bpf.o');
const scratchDir = fs.mkdtempSync(path.join(os.tmpdir(), 'spak-link-test-'));
const fixturePath = path.join(scratchDir, 'maps_fixture.bpf.o');
const netns = `spak-l-${process.pid}`;
const pinDir = path.join(DEFAULT_BPFFS, `spak-test-link-${process.pid}`);
const linkPin = path.join(pinDir, 'link');

const COMMON = `
const [libUrl, baselinePath, fixturePath, linkPin] = process.argv.slice(2);
const lib = await import(libUrl);
const errorOf = (fn) => { try { fn(); return null; } catch (e) { return { name: e.name, code: e.code, message: e.message }; } };
const load = (p) => { const o = lib.BpfObject.open(p); o.load(); return o; };
const report = {};
`;

// Creates and pins a native XDP link, then exits without detaching: the pin must keep it attached.
const CREATE_CHILD = `${COMMON}
const baseline = load(baselinePath);
const prog = baseline.program('baseline_xdp_pass');
const { link, mode } = lib.BpfLink.createXdp(prog, 'spak0', 'native');
link.pin(linkPin);
report.mode = mode;
report.info = link.info();
report.xdpMode = link.xdpMode();
report.progId = prog.id;
console.log(JSON.stringify(report));
`;

// Adopts the pinned link, swaps programs, probes refusals, then detaches; also tc handle/priority queries.
const ADOPT_CHILD = `${COMMON}
const fixture = load(fixturePath);
const baseline = load(baselinePath);
const link = lib.BpfLink.openPinned(linkPin);
const before = link.info();
report.before = before;
fixture.map('fixture_hash').pin(linkPin + '-map');
report.notALink = errorOf(() => lib.BpfLink.openPinned(linkPin + '-map'));
fixture.map('fixture_hash').unpin(linkPin + '-map');
report.secondLink = errorOf(() => lib.BpfLink.createXdp(baseline.program('baseline_xdp_pass'), 'spak0', 'native'));
report.genericOverNative = errorOf(() => lib.BpfLink.createXdp(baseline.program('baseline_xdp_pass'), 'spak0', 'generic'));
report.netlinkOverLink = errorOf(() => lib.attachXdp(baseline.program('baseline_xdp_pass'), 'spak0', { mode: 'native' }));
const count = fixture.program('fixture_count');
report.wrongExpected = errorOf(() => link.update(count, before.progId + 100000));
report.afterWrong = link.info().progId;
link.update(count, before.progId);
report.afterSwap = link.info().progId;
report.countId = count.id;
report.staleExpected = errorOf(() => link.update(baseline.program('baseline_xdp_pass'), before.progId));
link.detach();
report.afterDetach = link.info();
link.unpin(linkPin);
link.close();
link.close();
report.closedFd = errorOf(() => link.fd);

// A netlink-attached program blocks a link too, and the message names it.
const nl = lib.attachXdp(baseline.program('baseline_xdp_pass'), 'spak1', { mode: 'generic' });
report.linkOverNetlink = errorOf(() => lib.BpfLink.createXdp(count, 'spak1', 'auto'));
nl.detach();
// An unpinned link dies with its last fd.
const generic = lib.BpfLink.createXdp(count, 'spak1', 'generic');
report.generic = { mode: generic.mode, xdpMode: generic.link.xdpMode() };
generic.link.close();

// tc: a fixed handle/priority lets a second attacher see the first.
const tcProg = baseline.program('baseline_tc_ok');
report.tcNone = lib.queryTc('spak0', 'egress', 7, 7);
const tc = lib.attachTc(tcProg, 'spak0', 'egress', { handle: 7, priority: 7 });
report.tcQuery = lib.queryTc('spak0', 'egress', 7, 7);
report.tcProgId = tcProg.id;
report.tcEcho = tc.progId;
report.tcTaken = errorOf(() => lib.attachTc(tcProg, 'spak0', 'egress', { handle: 7, priority: 7 }));
const replaced = lib.attachTc(tcProg, 'spak0', 'egress', { handle: 7, priority: 7, replace: true });
report.tcReplaced = lib.queryTc('spak0', 'egress', 7, 7);
replaced.detach();
tc.detach();
report.tcAfter = lib.queryTc('spak0', 'egress', 7, 7);
console.log(JSON.stringify(report));
`;

// A tcx link at TC ingress (what --enforcement tc attaches): created, pinned, reopened, swapped from the
// expected program only, detached. Two loads of the baseline object give two sched_cls programs.
const TCX_CHILD = `${COMMON}
const a = load(baselinePath).program('baseline_tc_ok');
const b = load(baselinePath).program('baseline_tc_ok');
const ifindex = lib.ifIndex('spak0');
report.ifindex = ifindex;
report.aId = a.id;
report.bId = b.id;
report.queryBefore = lib.queryTcxIngress(ifindex);
const link = lib.BpfLink.createTcx(a, 'spak0');
report.info = link.info();
report.kind = lib.linkKind(report.info);
report.xdpMode = link.xdpMode();
report.query = lib.queryTcxIngress(ifindex);
link.pin(linkPin + '-tcx');
link.close();
const again = lib.BpfLink.openPinned(linkPin + '-tcx');
report.pinned = again.info();
report.wrongExpected = errorOf(() => again.update(b, a.id + 100000));
again.update(b, a.id);
report.afterSwap = again.info().progId;
report.queryAfterSwap = lib.queryTcxIngress(ifindex);
again.detach();
report.afterDetach = again.info();
report.queryAfterDetach = lib.queryTcxIngress(ifindex);
again.unpin(linkPin + '-tcx');
again.close();
report.noDevice = errorOf(() => lib.BpfLink.createTcx(a, 'nosuch0'));
console.log(JSON.stringify(report));
`;

const xdpOf = (dev: string) => {
  const out = execFileSync('ip', ['-n', netns, '-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' });
  return (JSON.parse(out)[0]?.xdp ?? null) as { mode: number; prog?: { id: number; name: string } } | null;
};

function runChild(name: string, source: string): any {
  const script = path.join(scratchDir, `${name}.mjs`);
  fs.writeFileSync(script, source);
  const child = spawnSync('nsenter', [`--net=/run/netns/${netns}`, process.execPath, script, LIB_URL, baselinePath, fixturePath, linkPin], {
    encoding: 'utf8', timeout: 60_000,
  });
  assert.equal(child.status, 0, `${name} child failed (${child.signal ?? child.status}):\n${child.stderr}`);
  return JSON.parse(child.stdout);
}

describe('XDP bpf_link in a fresh network namespace', () => {
  let created: any;
  let afterExit: ReturnType<typeof xdpOf>;
  let adopted: any;
  let afterAdopt: ReturnType<typeof xdpOf>;
  let tcx: any;

  before(() => {
    assert.ok(fs.existsSync(baselinePath), `${baselinePath} is missing: run \`make bpf\` first`);
    execFileSync('clang-16', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c',
      path.join(repoRoot, 'test/bpf/fixtures/maps_fixture.bpf.c'), '-o', fixturePath]);
    ensureBpffs(DEFAULT_BPFFS, { allowPrivateMount: true });
    mkdirPins(pinDir);
    const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    spawnSync('ip', ['netns', 'del', netns]); // leftover from a killed run with the same pid
    ip('netns', 'add', netns);
    ip('-n', netns, 'link', 'add', 'name', 'spak0', 'type', 'veth', 'peer', 'name', 'spak1');
    ip('-n', netns, 'address', 'add', '198.51.100.1/24', 'dev', 'spak0');
    ip('-n', netns, 'address', 'add', '198.51.100.2/24', 'dev', 'spak1');
    ip('-n', netns, 'link', 'set', 'dev', 'spak0', 'up');
    ip('-n', netns, 'link', 'set', 'dev', 'spak1', 'up');

    created = runChild('create', CREATE_CHILD);
    afterExit = xdpOf('spak0');
    adopted = runChild('adopt', ADOPT_CHILD);
    afterAdopt = xdpOf('spak0');
    tcx = runChild('tcx', TCX_CHILD);
  });

  after(() => {
    // Deleting the namespace takes the veth pair and detaches any link left on it; then the pins go.
    spawnSync('ip', ['netns', 'del', netns]);
    removePins(pinDir);
    fs.rmSync(scratchDir, { recursive: true, force: true });
  });

  test('createXdp attaches a native link and reports it', () => {
    assert.equal(created.mode, 'native');
    assert.equal(created.xdpMode, 'native');
    assert.equal(created.info.type, 6); // BPF_LINK_TYPE_XDP
    assert.ok(created.info.id > 0 && created.info.ifindex > 0);
    assert.equal(created.info.progId, created.progId);
  });

  test('a pinned link stays attached after the creating process exits', () => {
    assert.equal(afterExit?.mode, 1); // XDP_ATTACHED_DRV
    assert.equal(afterExit?.prog?.id, created.progId);
    assert.equal(adopted.before.id, created.info.id);
    assert.equal(adopted.before.progId, created.progId);
  });

  test('a second XDP program is refused and named, whatever the attach method', () => {
    for (const err of [adopted.secondLink, adopted.genericOverNative]) {
      assert.equal(err?.name, 'BpfError');
      assert.equal(err?.message, `attaching XDP link to spak0: another XDP program is already attached to spak0 (program id ${created.progId}, name baseline_xdp_pa)`);
    }
    assert.match(adopted.netlinkOverLink?.message ?? '', /^attaching XDP to spak0: /);
    assert.match(adopted.linkOverNetlink?.message ?? '', /another XDP program is already attached to spak1 \(program id \d+, name baseline_xdp_pa\)$/);
    assert.match(adopted.notALink?.message ?? '', /^opening pinned link .*-map: not a BPF link$/);
  });

  test('update swaps atomically only from the expected program', () => {
    assert.equal(adopted.wrongExpected?.name, 'BpfError');
    assert.match(adopted.wrongExpected.message, /no longer exists|no longer runs/);
    assert.equal(adopted.afterWrong, created.progId);
    assert.equal(adopted.afterSwap, adopted.countId);
    assert.match(adopted.staleExpected?.message ?? '', /someone else replaced it\)$/);
  });

  test('detach removes the link from the interface even while pinned; close keeps nothing open', () => {
    assert.equal(adopted.afterDetach.ifindex, 0);
    assert.equal(afterAdopt, null);
    assert.equal(fs.existsSync(linkPin), false);
    assert.equal(adopted.closedFd?.code, 'EBADF');
  });

  test('generic links, and an unpinned link dies with its fd', () => {
    assert.deepEqual(adopted.generic, { mode: 'generic', xdpMode: 'generic' });
    assert.equal(xdpOf('spak1'), null);
  });

  test('createTcx: a tcx link at TC ingress, pinnable, swapped only from the expected program, detached', () => {
    assert.deepEqual(tcx.queryBefore, []);
    assert.equal(tcx.info.type, 11); // BPF_LINK_TYPE_TCX
    assert.equal(tcx.kind, 'tc');
    assert.equal(tcx.info.ifindex, tcx.ifindex);
    assert.equal(tcx.info.attachType, 46); // BPF_TCX_INGRESS
    assert.equal(tcx.info.progId, tcx.aId);
    assert.equal(tcx.xdpMode, null);
    assert.deepEqual(tcx.query, [tcx.aId]);
    assert.deepEqual(tcx.pinned, tcx.info, 'the pin keeps the link attached after its creating fd is closed');
    assert.match(tcx.wrongExpected?.message ?? '', /no longer exists|no longer runs/);
    assert.equal(tcx.afterSwap, tcx.bId);
    assert.deepEqual(tcx.queryAfterSwap, [tcx.bId]);
    assert.equal(tcx.afterDetach.ifindex, 0);
    assert.deepEqual(tcx.queryAfterDetach, []);
    assert.match(tcx.noDevice?.message ?? '', /nosuch0/);
  });

  test('queryTc sees a filter at a fixed handle/priority; replace overwrites it', () => {
    assert.equal(adopted.tcNone, null);
    assert.equal(adopted.tcQuery, adopted.tcProgId);
    assert.equal(adopted.tcEcho, adopted.tcProgId);
    assert.match(adopted.tcTaken?.message ?? '', /a filter with handle 7 and priority 7 already exists$/);
    assert.equal(adopted.tcReplaced, adopted.tcProgId);
    assert.equal(adopted.tcAfter, null);
  });
});
