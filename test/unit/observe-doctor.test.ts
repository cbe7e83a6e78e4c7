// spak doctor's decisions (src/observe/doctor.ts) on injected inputs, and its exit code by severity.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CAP, checkBpffs, checkBtf, checkClock, checkConfig, checkInterface, checkKernel, checkLibbpf, checkListeners, checkObjects,
  checkPrivileges, checkTc, checkXdp, exitCodeFor, formatReport, STA_UNSYNC, TIME_ERROR, type CheckResult,
} from '../../src/observe/doctor.js';
import type { KernelSocket } from '../../src/server/seed.js';

const r = (severity: CheckResult['severity']): CheckResult => ({ check: 'x', severity, detail: '' });
const cap = (...caps: number[]) => caps.reduce((a, c) => a | (1n << BigInt(c)), 0n);

test('exit code: 0 all OK, 1 with a warning, 2 with a failure (whatever the order)', () => {
  assert.equal(exitCodeFor([]), 0);
  assert.equal(exitCodeFor([r('ok'), r('ok')]), 0);
  assert.equal(exitCodeFor([r('ok'), r('warn')]), 1);
  assert.equal(exitCodeFor([r('fail'), r('warn'), r('ok')]), 2);
  assert.equal(exitCodeFor([r('warn'), r('fail')]), 2);
});

test('kernel: 5.11 needed, 6.6 for TCX', () => {
  assert.equal(checkKernel('6.18.44-fc').severity, 'ok');
  assert.equal(checkKernel('6.6.0').severity, 'ok');
  assert.equal(checkKernel('6.1.0-21-amd64').severity, 'warn');
  assert.equal(checkKernel('5.11.0').severity, 'warn');
  assert.equal(checkKernel('5.10.200').severity, 'fail');
  assert.equal(checkKernel('4.19.0').severity, 'fail');
  assert.equal(checkKernel('weird').severity, 'warn');
});

test('BTF and bpffs', () => {
  assert.equal(checkBtf(true).severity, 'ok');
  assert.equal(checkBtf(false).severity, 'fail');
  assert.equal(checkBpffs('/sys/fs/bpf', true).severity, 'ok');
  const b = checkBpffs('/sys/fs/bpf', false);
  assert.equal(b.severity, 'warn');
  assert.match(b.fix!, /mount -t bpf bpf \/sys\/fs\/bpf/);
  assert.match(b.fix!, /spak bpffs mount/);
  // In a private mount namespace spak server refuses to mount it: a failure, and where to mount it instead.
  const p = checkBpffs('/sys/fs/bpf', false, true);
  assert.equal(p.severity, 'fail');
  assert.match(p.detail, /private mount namespace: spak server will refuse/);
  assert.match(p.fix!, /spak bpffs mount in the host's mount namespace/);
  assert.equal(checkBpffs('/sys/fs/bpf', true, true).severity, 'ok');
});

test('privileges: root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON; else FAIL naming what is missing', () => {
  assert.equal(checkPrivileges(0, cap(CAP.SYS_ADMIN, CAP.NET_ADMIN)).severity, 'ok');
  assert.equal(checkPrivileges(1000, cap(CAP.BPF, CAP.NET_ADMIN, CAP.PERFMON)).severity, 'ok');
  const noNet = checkPrivileges(1000, cap(CAP.BPF, CAP.PERFMON));
  assert.equal(noNet.severity, 'fail');
  assert.match(noNet.detail, /lacks CAP_NET_ADMIN:/);
  const none = checkPrivileges(1000, 0n);
  assert.match(none.detail, /CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON/);
  assert.equal(checkPrivileges(0, 0n).severity, 'fail', 'root in a user namespace without capabilities');
});

test('libbpf and the objects', () => {
  assert.equal(checkLibbpf('v1.1').severity, 'ok');
  assert.equal(checkLibbpf('v0.8').severity, 'warn');
  const missing = checkLibbpf(null, 'libbpf.so.1: cannot open shared object file');
  assert.equal(missing.severity, 'fail');
  assert.match(missing.fix!, /libbpf1/);
  const objs = checkObjects({ server: null, client: 'eBPF object /x/client.bpf.o not found: run make build' });
  assert.deepEqual(objs.map((o) => [o.check, o.severity]), [['object server', 'ok'], ['object client', 'fail']]);
  assert.match(objs[1]!.detail, /not found/);
});

test('objects: an EPERM load points at capabilities, a container\'s seccomp filter and unprivileged_bpf_disabled, not at make build', () => {
  const [perm] = checkObjects({ server: 'loading server.bpf.o: EPERM (Operation not permitted)' }, 2);
  assert.equal(perm!.severity, 'fail');
  assert.doesNotMatch(perm!.fix!, /make build/);
  for (const want of [/CAP_BPF/, /CAP_PERFMON/, /CAP_NET_ADMIN/, /seccomp/, /--system-call-filter=bpf/, /unprivileged_bpf_disabled=2/]) assert.match(perm!.fix!, want);
  const [gone] = checkObjects({ client: 'eBPF object /x/client.bpf.o not found: run make build' });
  assert.match(gone!.fix!, /make build/);
});

test('clock: TIME_ERROR or STA_UNSYNC is a warning with what to run', () => {
  assert.equal(checkClock({ state: 0, status: 0x2001, maxErrorUs: 1500 }).severity, 'ok');
  const err = checkClock({ state: TIME_ERROR, status: STA_UNSYNC, maxErrorUs: 16_000_000 });
  assert.equal(err.severity, 'warn');
  assert.match(err.detail, /TIME_ERROR/);
  assert.match(err.fix!, /NTP/);
  assert.match(checkClock({ state: 0, status: STA_UNSYNC, maxErrorUs: 0 }).detail, /STA_UNSYNC/);
  assert.equal(checkClock({ state: 0, status: 0, maxErrorUs: 0, error: 'EPERM' }).severity, 'warn');
});

test('config and interface', () => {
  assert.equal(checkConfig(null, null).severity, 'warn');
  assert.equal(checkConfig('/etc/spak/spak.json', null).severity, 'ok');
  const bad = checkConfig('/x.json', '/x.json: server.protect[0].port: Too big');
  assert.equal(bad.severity, 'fail');
  assert.match(bad.detail, /server\.protect\[0\]\.port/);
  assert.equal(checkInterface('eth0', 2).severity, 'ok');
  assert.equal(checkInterface('eth9', null).severity, 'fail');
});

test('XDP: spak there, another program, native, generic only (by configured mode), nothing', () => {
  assert.equal(checkXdp('eth0', { kind: 'spak', mode: 'native' }, 'native').severity, 'ok');
  const other = checkXdp('eth0', { kind: 'other', progId: 42 }, 'native');
  assert.equal(other.severity, 'fail');
  assert.match(other.detail, /id 42/);
  assert.equal(checkXdp('eth0', { kind: 'tried', native: null, generic: null }, 'native').severity, 'ok');
  assert.equal(checkXdp('eth0', { kind: 'tried', native: 'EOPNOTSUPP', generic: null }, 'native').severity, 'fail');
  assert.equal(checkXdp('eth0', { kind: 'tried', native: 'EOPNOTSUPP', generic: null }, 'auto').severity, 'warn');
  assert.equal(checkXdp('eth0', { kind: 'tried', native: 'EOPNOTSUPP', generic: 'EPERM' }, 'auto').severity, 'fail');
  assert.equal(checkXdp('eth0', { kind: 'skipped', why: 'needs root' }, 'native').severity, 'warn');
});

test('TC: TCX and clsact', () => {
  assert.equal(checkTc('eth0', { tcx: null, clsact: null }).severity, 'ok');
  assert.equal(checkTc('eth0', { tcx: 'EINVAL', clsact: null }).severity, 'warn');
  assert.equal(checkTc('eth0', { tcx: 'EINVAL', clsact: 'EOPNOTSUPP' }).severity, 'fail');
  assert.equal(checkTc('eth0', { skipped: 'needs root' }).severity, 'warn');
});

const sock = (localAddr: string, localPort: number, state = 0x0a, inode = 0): KernelSocket => ({ localAddr, localPort, remoteAddr: '0.0.0.0', remotePort: 0, state, inode });

test('listeners: what listens on each protected port, the scope gaps, the knock port', () => {
  const protect = [{ address: '198.51.100.1', port: 22 }, { address: '198.51.100.1', port: 8080 }, { address: '*', port: 53, protocol: 'udp' as const }];
  const tcp = [sock('::', 22), sock('198.51.100.1', 8080, 0x01)]; // 8080: only an established socket, no listener
  const udp = [sock('0.0.0.0', 53, 0x07), sock('0.0.0.0', 62201, 0x07)];
  const res = checkListeners(protect, tcp, udp, 62201, false);
  const by = (c: string) => res.filter((x) => x.check === c);
  assert.equal(by('listen tcp/22')[0]!.severity, 'ok');
  assert.match(by('listen tcp/22')[0]!.detail, /\[::\]:22/);
  assert.equal(by('listen tcp/8080')[0]!.severity, 'warn');
  assert.equal(by('listen udp/53')[0]!.severity, 'ok');
  const scope = by('scope').map((x) => x.detail);
  assert.equal(scope.length, 2, JSON.stringify(scope));
  assert.ok(scope.some((d) => /IPv6 is not protected/.test(d)));
  assert.ok(scope.some((d) => /IPv4 is not protected on every address/.test(d)));
  assert.equal(by('knock udp/62201')[0]!.severity, 'fail', 'taken with no spak daemon running');
  assert.equal(checkListeners(protect, tcp, udp, 62201, true).find((x) => x.check === 'knock udp/62201')!.severity, 'ok');
  assert.equal(checkListeners(protect, tcp, [], 62201, false).find((x) => x.check === 'knock udp/62201')!.severity, 'ok');
  assert.equal(checkListeners(protect, tcp, udp, null, false).some((x) => x.check.startsWith('knock')), false);
});

test('report: one line per check, fixes under warnings and failures, a summary with the exit code', () => {
  const text = formatReport([
    { check: 'kernel', severity: 'ok', detail: 'Linux 6.18', fix: 'never shown' },
    { check: 'clock', severity: 'warn', detail: 'not synchronised', fix: 'run NTP' },
    { check: 'config', severity: 'fail', detail: 'bad', fix: 'correct it' },
  ]);
  const lines = text.split('\n');
  assert.match(lines[0]!, /^OK {4}kernel {2}Linux 6\.18$/);
  assert.match(lines[1]!, /^WARN {2}clock {3}not synchronised$/);
  assert.match(lines[2]!, /^ +fix: run NTP$/);
  assert.match(lines[3]!, /^FAIL {2}config {2}bad$/);
  assert.equal(lines.at(-1), '1 OK, 1 WARN, 1 FAIL (exit 2)');
  assert.doesNotMatch(text, /never shown/);
});
