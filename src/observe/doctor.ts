// `spak doctor`: the decisions. Each check turns what was found (gathered in doctor-probes.ts,
// or given by a test) into OK, WARN or FAIL with what to fix. Exit code by the worst severity:
// 0 everything OK, 1 at least one WARN, 2 at least one FAIL.
import type { ProtectedDest } from '../server/destinations.js';
import { scopeWarnings } from '../server/scope.js';
import { TCP_LISTEN, type KernelSocket } from '../server/seed.js';
import { hostPort } from '../wire/address.js';

export type Severity = 'ok' | 'warn' | 'fail';
export interface CheckResult { check: string; severity: Severity; detail: string; fix?: string }

const RANK: Record<Severity, number> = { ok: 0, warn: 1, fail: 2 };

/** 0 all OK, 1 warnings, 2 failures. */
export function exitCodeFor(results: CheckResult[]): number {
  return results.reduce((worst, r) => Math.max(worst, RANK[r.severity]), 0);
}

const ok = (check: string, detail: string): CheckResult => ({ check, severity: 'ok', detail });
const warn = (check: string, detail: string, fix: string): CheckResult => ({ check, severity: 'warn', detail, fix });
const fail = (check: string, detail: string, fix: string): CheckResult => ({ check, severity: 'fail', detail, fix });

/** Kernel release, e.g. "6.18.44-fc": XDP links and coarse ktime need 5.11; TCX needs 6.6. */
export function checkKernel(release: string): CheckResult {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return warn('kernel', `cannot read the version of "${release}"`, 'use Linux 6.6 or newer');
  const v = Number(m[1]) * 1000 + Number(m[2]);
  if (v < 5011) return fail('kernel', `Linux ${release}: too old (XDP bpf_links, batch map reads and bpf_ktime_get_coarse_ns need 5.11)`, 'use Linux 6.6 or newer');
  if (v < 6006) return warn('kernel', `Linux ${release}: works, but has no TCX (6.6)`, 'use Linux 6.6 or newer for the TC enforcement mode');
  return ok('kernel', `Linux ${release}`);
}

export function checkBtf(present: boolean): CheckResult {
  return present ? ok('btf', '/sys/kernel/btf/vmlinux present')
    : fail('btf', '/sys/kernel/btf/vmlinux missing: the kernel was built without BTF', 'use a kernel with CONFIG_DEBUG_INFO_BTF=y');
}

/**
 * bpffs at the pin root: mounted; or not, and then whether spak server will mount it (it does in
 * the host's mount namespace, refuses in a private one, where the mount would vanish with it).
 */
export function checkBpffs(root: string, mounted: boolean, privateMountNs = false): CheckResult {
  if (mounted) return ok('bpffs', `bpffs mounted at ${root}`);
  if (privateMountNs)
    return fail('bpffs', `no bpffs at ${root}, and this runs in a private mount namespace: spak server will refuse to mount it here (pins would vanish with the namespace)`,
      `spak bpffs mount in the host's mount namespace (the packaged unit does it as ExecStartPre=+), or enter only the network namespace (nsenter --net=...)`);
  return warn('bpffs', `no bpffs at ${root}: spak server mounts it at start (the packaged unit: ExecStartPre=+spak bpffs mount)`, `spak bpffs mount (or mount -t bpf bpf ${root})`);
}

/** CAP_NET_ADMIN (12), CAP_SYS_ADMIN (21), CAP_PERFMON (38), CAP_BPF (39). */
export const CAP = { NET_ADMIN: 12, SYS_ADMIN: 21, PERFMON: 38, BPF: 39 } as const;

export function checkPrivileges(euid: number, capEff: bigint): CheckResult {
  const has = (c: number) => ((capEff >> BigInt(c)) & 1n) === 1n;
  if (euid === 0 && has(CAP.SYS_ADMIN)) return ok('privileges', 'root');
  const bpf = has(CAP.BPF) || has(CAP.SYS_ADMIN);
  const missing = [!bpf && 'CAP_BPF', !has(CAP.NET_ADMIN) && 'CAP_NET_ADMIN', !has(CAP.PERFMON) && !has(CAP.SYS_ADMIN) && 'CAP_PERFMON'].filter(Boolean);
  if (missing.length === 0) return ok('privileges', `uid ${euid} with CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON`);
  return fail('privileges', `uid ${euid} lacks ${missing.join(', ')}: cannot load or attach eBPF`, 'run as root (sudo spak doctor), as the server runs');
}

export function checkLibbpf(version: string | null, error?: string): CheckResult {
  if (version === null) return fail('libbpf', `libbpf.so.1 not usable: ${error ?? 'not found'}`, 'apt-get install libbpf1');
  const m = /^v?(\d+)\.(\d+)/.exec(version);
  if (m && Number(m[1]) < 1) return warn('libbpf', `libbpf ${version}: older than 1.0`, 'install libbpf 1.x');
  return ok('libbpf', `libbpf ${version}`);
}

/**
 * name -> null when it loaded (BPF_PROG_LOAD, not attached), else the error. `unprivBpfDisabled`:
 * /proc/sys/kernel/unprivileged_bpf_disabled (null: unreadable).
 */
export function checkObjects(loads: Record<string, string | null>, unprivBpfDisabled: number | null = null): CheckResult[] {
  return Object.entries(loads).map(([name, err]) => err === null
    ? ok(`object ${name}`, `${name}.bpf.o loads (verifier passed; not attached)`)
    : fail(`object ${name}`, `${name}.bpf.o: ${err}`, objectFix(err, unprivBpfDisabled)));
}

/** What to do about a load that failed: the object is missing, or the kernel refused the caller. */
export function objectFix(err: string, unprivBpfDisabled: number | null): string {
  if (/not found|ENOENT/.test(err)) return 'run make build (or reinstall the package: it carries the objects)';
  if (/EPERM|EACCES|not permitted|Permission denied/i.test(err)) {
    const unpriv = unprivBpfDisabled !== null && unprivBpfDisabled !== 0
      ? ` (kernel.unprivileged_bpf_disabled=${unprivBpfDisabled}: only CAP_BPF/CAP_SYS_ADMIN may call bpf(2))` : '';
    return 'the kernel refused bpf(2) to this process: it needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (run as root, or check the ' +
      'unit\'s CapabilityBoundingSet=)' + unpriv + '; in a container the seccomp filter may block bpf(2) and the capabilities may be ' +
      'dropped: systemd-nspawn needs --system-call-filter=bpf --capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN (Docker: --cap-add ' +
      'BPF,PERFMON,NET_ADMIN and a seccomp profile that allows bpf); see README, Containers';
  }
  return 'the verifier or the kernel refused the program: check the kernel (spak doctor: kernel, btf) and run make build again';
}

/** adjtimex(2): state (TIME_ERROR = 5) and status (STA_UNSYNC = 0x40). */
export interface ClockState { state: number; status: number; maxErrorUs: number; error?: string }
export const TIME_ERROR = 5;
export const STA_UNSYNC = 0x40;

export function checkClock(c: ClockState): CheckResult {
  const fix = 'run an NTP client (systemd-timesyncd, chrony): server and clients must agree on the time step, and a step of the clock moves every tag';
  if (c.error) return warn('clock', `adjtimex failed: ${c.error}`, fix);
  if (c.state === TIME_ERROR || (c.status & STA_UNSYNC) !== 0)
    return warn('clock', `the kernel clock is not synchronised (${c.state === TIME_ERROR ? 'TIME_ERROR' : 'STA_UNSYNC'}; max error ${(c.maxErrorUs / 1000).toFixed(0)} ms)`, fix);
  return ok('clock', `synchronised (max error ${(c.maxErrorUs / 1000).toFixed(1)} ms)`);
}

/** The configuration: null file = none given and none at the default path. */
export function checkConfig(file: string | null, error: string | null): CheckResult {
  if (file === null) return warn('config', 'no configuration given (and none at the default path)', 'spak doctor --config FILE, to check it and the interface it names');
  if (error !== null) return fail('config', error, 'correct the field named, then run spak doctor again');
  return ok('config', `${file} is valid`);
}

export function checkInterface(iface: string, ifindex: number | null): CheckResult {
  return ifindex !== null ? ok('interface', `${iface} (ifindex ${ifindex})`)
    : fail('interface', `${iface} does not exist in this network namespace`, 'name an existing interface in the configuration');
}

/** What the XDP probe found on the interface. */
export type XdpProbe =
  | { kind: 'spak'; mode: 'native' | 'generic' }
  | { kind: 'other'; progId: number }
  | { kind: 'tried'; native: string | null; generic: string | null }
  | { kind: 'skipped'; why: string };

export function checkXdp(iface: string, p: XdpProbe, wanted: 'native' | 'generic' | 'auto'): CheckResult {
  const c = `xdp ${iface}`;
  if (p.kind === 'skipped') return warn(c, `not probed: ${p.why}`, 'run spak doctor as root with --config naming the interface');
  if (p.kind === 'spak') return ok(c, `spak's program is attached (${p.mode})`);
  if (p.kind === 'other') return fail(c, `another XDP program (id ${p.progId}) is attached: spak server will refuse`, 'remove it, or protect another interface');
  if (p.native === null) return ok(c, 'native XDP works (a pass-through program was attached and removed)');
  if (p.generic === null) {
    return wanted === 'native'
      ? fail(c, `no native XDP (${p.native}); generic XDP works`, 'set "xdpMode": "auto" or "generic" (generic costs more per packet)')
      : warn(c, `no native XDP (${p.native}); generic XDP works and will be used`, 'a driver with native XDP is faster');
  }
  return fail(c, `XDP cannot attach: native ${p.native}, generic ${p.generic}`, 'use the TC enforcement mode, or another interface');
}

export interface TcProbe { tcx: string | null; clsact: string | null }

export function checkTc(iface: string, p: TcProbe | { skipped: string }): CheckResult {
  const c = `tc ${iface}`;
  if ('skipped' in p) return warn(c, `not probed: ${p.skipped}`, 'run spak doctor as root with --config naming the interface');
  if (p.tcx === null && p.clsact === null) return ok(c, 'TCX links and the clsact qdisc both work');
  if (p.clsact === null) return warn(c, `clsact works, TCX does not (${p.tcx})`, 'Linux 6.6 or newer for TCX');
  return fail(c, `clsact: ${p.clsact}${p.tcx ? `; TCX: ${p.tcx}` : ''}`, 'a kernel with CONFIG_NET_SCH_INGRESS (sch_ingress) and CONFIG_NET_CLS_BPF');
}

/**
 * What listens on the protected ports, and what the configuration leaves open (scope.ts's
 * warnings); the knock port must be free unless a spak daemon holds it.
 */
export function checkListeners(
  protect: ProtectedDest[], tcp: KernelSocket[], udp: KernelSocket[], knockPort: number | null, daemonRunning: boolean,
): CheckResult[] {
  const out: CheckResult[] = [];
  const ports = [...new Set(protect.map((d) => `${d.protocol ?? 'tcp'}/${d.port}`))];
  for (const pp of ports) {
    const [proto, portText] = pp.split('/') as ['tcp' | 'udp', string];
    const port = Number(portText);
    const socks = proto === 'tcp' ? tcp.filter((s) => s.state === TCP_LISTEN && s.localPort === port) : udp.filter((s) => s.localPort === port);
    const where = socks.map((s) => hostPort(s.localAddr, port));
    out.push(socks.length > 0 ? ok(`listen ${pp}`, `listening on ${[...new Set(where)].join(', ')}`)
      : warn(`listen ${pp}`, `nothing listens on ${pp}: spak protects it, but no service answers`, 'start the service, or remove the destination'));
  }
  for (const w of scopeWarnings(protect.filter((d) => (d.protocol ?? 'tcp') === 'tcp'), tcp))
    out.push(warn('scope', w, 'protect the addresses the service listens on'));
  if (knockPort !== null) {
    const taken = udp.filter((s) => s.localPort === knockPort);
    if (taken.length === 0) out.push(ok(`knock udp/${knockPort}`, daemonRunning ? 'no socket bound, yet a daemon runs (knock mode off in it?)' : 'free'));
    else out.push(daemonRunning ? ok(`knock udp/${knockPort}`, 'bound (by the running spak daemon)')
      : fail(`knock udp/${knockPort}`, `udp/${knockPort} is taken by another socket: the knock receiver cannot bind`, 'free the port, or choose another knock port'));
  }
  return out;
}

/** Readable report: one line per check, the fix indented below it. */
export function formatReport(results: CheckResult[]): string {
  const width = Math.max(...results.map((r) => r.check.length));
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`${r.severity.toUpperCase().padEnd(4)}  ${r.check.padEnd(width)}  ${r.detail}`);
    if (r.fix && r.severity !== 'ok') lines.push(`${' '.repeat(6 + width + 2)}fix: ${r.fix}`);
  }
  const code = exitCodeFor(results);
  const counts = (s: Severity) => results.filter((r) => r.severity === s).length;
  lines.push(`${counts('ok')} OK, ${counts('warn')} WARN, ${counts('fail')} FAIL (exit ${code})`);
  return lines.join('\n');
}
