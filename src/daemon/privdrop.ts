// Privilege drop after attach: the daemon runs on as a configured user with only the capabilities
// it still needs. Capabilities are per thread in Linux and Node runs several threads, so:
//   - PR_SET_KEEPCAPS is set on the main thread only, before the uid change: the main thread keeps
//     its permitted set, every other thread loses all of its capabilities with the uid change;
//   - setgroups/setgid/setuid go through glibc (Node's process.set*), which applies them to every
//     thread of the process;
//   - then capset narrows the main thread's permitted and effective sets to what is kept, clears
//     its inheritable set; the ambient set is cleared and the bounding set holds only what is kept;
//   - no_new_privs last, on every thread: prctl sets it on the main thread, then an allow-all
//     seccomp filter installed with SECCOMP_FILTER_FLAG_TSYNC carries it to every other thread
//     (the kernel sets no_new_privs on each thread it synchronises). Nothing any thread executes
//     can gain privileges again.
import { chownSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import koffi from 'koffi';
import { libcLibrary } from '../bpf/libc.js';

/** Capability numbers (linux/capability.h) of those the daemon may keep. */
export const CAP = { NET_BIND_SERVICE: 10, NET_ADMIN: 12, PERFMON: 38, BPF: 39 } as const;
export type CapName = keyof typeof CAP;

/**
 * What the drop itself needs besides what it keeps: CAP_CHOWN (handing the pin and state
 * directories over), CAP_DAC_OVERRIDE (the pins are the user's after a drop: the next start, as
 * root, adopts them through directories it does not own), CAP_SETGID, CAP_SETUID, CAP_SETPCAP
 * (narrowing the bounding set).
 */
const DROP_NEEDS = { CHOWN: 0, DAC_OVERRIDE: 1, SETGID: 6, SETUID: 7, SETPCAP: 8 } as const;

const PR_SET_KEEPCAPS = 8;
const PR_CAPBSET_DROP = 24;
const PR_SET_NO_NEW_PRIVS = 38;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_CLEAR_ALL = 4;
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
const SECCOMP_SET_MODE_FILTER = 1;
const SECCOMP_FILTER_FLAG_TSYNC = 1;
const BPF_RET_K = 0x06;
const SECCOMP_RET_ALLOW = 0x7fff0000;
/** seccomp(2) by architecture (glibc has no wrapper). */
const SYS_SECCOMP: Record<string, number> = { x64: 317, arm64: 277 };

type Ptr = unknown;
let bound: ReturnType<typeof bind> | undefined;

function bind() {
  const lib = libcLibrary();
  const passwd = koffi.struct('spak_passwd', {
    pw_name: 'char *', pw_passwd: 'char *', pw_uid: 'uint32_t', pw_gid: 'uint32_t', pw_gecos: 'char *', pw_dir: 'char *', pw_shell: 'char *',
  });
  const group = koffi.struct('spak_group', { gr_name: 'char *', gr_passwd: 'char *', gr_gid: 'uint32_t', gr_mem: 'void *' });
  const sockFilter = koffi.struct('spak_sock_filter', { code: 'uint16_t', jt: 'uint8_t', jf: 'uint8_t', k: 'uint32_t' });
  koffi.struct('spak_sock_fprog', { len: 'unsigned short', filter: koffi.pointer(sockFilter) });
  return {
    passwd,
    group,
    syscall: lib.func('long syscall(long number, ...)') as (...args: unknown[]) => number,
    prctl: lib.func('int prctl(int option, ...)') as (...args: unknown[]) => number,
    capset: lib.func('int capset(void *hdr, void *data)') as (hdr: Buffer, data: Buffer) => number,
    getpwnam: lib.func('void *getpwnam(const char *name)') as (name: string) => Ptr | null,
    getpwuid: lib.func('void *getpwuid(uint32_t uid)') as (uid: number) => Ptr | null,
    getgrnam: lib.func('void *getgrnam(const char *name)') as (name: string) => Ptr | null,
    strerror: lib.func('const char *strerror(int errnum)') as (e: number) => string,
  };
}

function libc() {
  bound ??= bind();
  return bound;
}

function prctl(what: string, option: number, a2 = 0, a3 = 0): void {
  const L = libc();
  const UL = 'unsigned long';
  if (L.prctl(option, UL, a2, UL, a3, UL, 0, UL, 0) !== 0) throw new Error(`dropping privileges: prctl ${what}: ${L.strerror(koffi.errno())}`);
}

export interface Account {
  uid: number;
  gid: number;
  /** As configured, for messages. */
  label: string;
}

/** The uid and gid of a configured user (name or number) and optional group; throws one line. */
export function resolveAccount(user: string | number, group?: string | number): Account {
  const L = libc();
  let uid: number;
  let gid: number | undefined;
  if (typeof user === 'number') {
    uid = user;
    const pw = L.getpwuid(user);
    if (pw) gid = (koffi.decode(pw, L.passwd) as { pw_gid: number }).pw_gid;
  } else {
    const pw = L.getpwnam(user);
    if (!pw) throw new Error(`user "${user}": no such user`);
    const rec = koffi.decode(pw, L.passwd) as { pw_uid: number; pw_gid: number };
    uid = rec.pw_uid;
    gid = rec.pw_gid;
  }
  if (group !== undefined) {
    if (typeof group === 'number') gid = group;
    else {
      const gr = L.getgrnam(group);
      if (!gr) throw new Error(`group "${group}": no such group`);
      gid = (koffi.decode(gr, L.group) as { gr_gid: number }).gr_gid;
    }
  }
  if (gid === undefined) throw new Error(`user ${user} has no passwd entry: give "group" too`);
  if (uid === 0) throw new Error(`user ${user} is root: dropping to it would keep every privilege`);
  return { uid, gid, label: `${user}${group !== undefined ? `:${group}` : ''}` };
}

/** The capability sets of this process's main thread (/proc/self/status), as bit masks. */
function capSets(): { CapBnd: bigint; CapPrm: bigint; CapEff: bigint } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const mask = (name: string) => BigInt(`0x${new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1] ?? '0'}`);
  return { CapBnd: mask('CapBnd'), CapPrm: mask('CapPrm'), CapEff: mask('CapEff') };
}

/**
 * Before anything is attached: can this process drop to `to` keeping `keep`? Every capability the
 * drop and what runs after it need must be permitted and effective now; throws one line naming the
 * missing ones and where to add them (a systemd unit's CapabilityBoundingSet=).
 */
export function checkCanDrop(to: Account, keep: readonly CapName[]): void {
  const sets = capSets();
  const need: [string, number][] = [...Object.entries(DROP_NEEDS), ...keep.map((c): [string, number] => [c, CAP[c]])];
  const missing = need.filter(([, n]) => ((sets.CapPrm & sets.CapEff) >> BigInt(n) & 1n) === 0n).map(([name]) => `CAP_${name}`);
  if (missing.length === 0) return;
  const bounded = missing.filter((c) => (sets.CapBnd >> BigInt(need.find(([n]) => `CAP_${n}` === c)![1]) & 1n) === 0n);
  throw new Error(`the privilege drop to ${to.label} (after the attach) cannot work: this process lacks ${missing.join(', ')}` +
    (bounded.length > 0 ? ` (not in its bounding set: add ${bounded.join(' ')} to the unit's CapabilityBoundingSet=; the drop removes them again)` : ' (run it as root)') +
    '; nothing was attached');
}

function lastCap(): number {
  return Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
}

/**
 * Becomes `to`, keeping `keep` in the main thread's permitted and effective sets, nothing else
 * anywhere. Must run on the main thread, as root, before anything needs the dropped privileges.
 */
export function dropPrivileges(to: Account, keep: readonly CapName[]): void {
  const L = libc();
  const kept: number[] = keep.map((c) => CAP[c]);
  prctl('PR_SET_KEEPCAPS', PR_SET_KEEPCAPS, 1);
  const last = lastCap();
  const bounding = capSets().CapBnd; // what is not in it needs no dropping (nor CAP_SETPCAP)
  for (let cap = 0; cap <= last; cap++) if (!kept.includes(cap) && (bounding >> BigInt(cap) & 1n) === 1n) prctl(`PR_CAPBSET_DROP ${cap}`, PR_CAPBSET_DROP, cap);
  prctl('PR_CAP_AMBIENT_CLEAR_ALL', PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL);
  try {
    process.setgroups!([]);
    process.setgid!(to.gid);
    process.setuid!(to.uid);
  } catch (err) {
    throw new Error(`dropping privileges to ${to.label}: ${(err as Error).message}`);
  }
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
  hdr.writeInt32LE(0, 4);
  const data = Buffer.alloc(24); // two {effective, permitted, inheritable} words: caps 0-31, 32-63
  for (const cap of kept) {
    const word = cap >> 5;
    const bit = 1 << (cap & 31);
    data.writeUInt32LE((data.readUInt32LE(word * 12) | bit) >>> 0, word * 12); // effective
    data.writeUInt32LE((data.readUInt32LE(word * 12 + 4) | bit) >>> 0, word * 12 + 4); // permitted
  }
  if (L.capset(hdr, data) !== 0) throw new Error(`dropping privileges: capset: ${L.strerror(koffi.errno())}`);
  prctl('PR_SET_KEEPCAPS off', PR_SET_KEEPCAPS, 0);
  prctl('PR_SET_NO_NEW_PRIVS', PR_SET_NO_NEW_PRIVS, 1);
  noNewPrivsEverywhere();
  checkDropped(to, kept);
}

/**
 * no_new_privs is per thread and Node's other threads run no code of ours: an allow-all seccomp
 * filter installed with TSYNC makes the kernel set it on every thread of the process.
 */
function noNewPrivsEverywhere(): void {
  const L = libc();
  const nr = SYS_SECCOMP[process.arch];
  if (nr === undefined) throw new Error(`dropping privileges: no seccomp syscall number for ${process.arch}`);
  const prog = { len: 1, filter: [{ code: BPF_RET_K, jt: 0, jf: 0, k: SECCOMP_RET_ALLOW }] };
  const ret = L.syscall(nr, 'unsigned int', SECCOMP_SET_MODE_FILTER, 'unsigned int', SECCOMP_FILTER_FLAG_TSYNC, 'spak_sock_fprog *', prog);
  if (ret !== 0) {
    const why = ret > 0 ? `thread ${ret} could not be synchronised` : L.strerror(koffi.errno());
    throw new Error(`dropping privileges: seccomp (no_new_privs on every thread): ${why}`);
  }
}

/** Reads back what the kernel says of the main thread; throws when it is not what was asked. */
function checkDropped(to: Account, kept: number[]): void {
  const status = readFileSync('/proc/self/status', 'utf8');
  const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '';
  const want = kept.reduce((m, c) => m | (1n << BigInt(c)), 0n);
  const ids = (s: string) => s.split(/\s+/).map(Number);
  const problems: string[] = [];
  if (!ids(field('Uid')).every((u) => u === to.uid)) problems.push(`Uid ${field('Uid')}`);
  if (!ids(field('Gid')).every((g) => g === to.gid)) problems.push(`Gid ${field('Gid')}`);
  for (const set of ['CapEff', 'CapPrm']) if (BigInt(`0x${field(set)}`) !== want) problems.push(`${set} ${field(set)}`);
  if (BigInt(`0x${field('CapAmb')}`) !== 0n) problems.push(`CapAmb ${field('CapAmb')}`);
  if (field('NoNewPrivs') !== '1') problems.push(`NoNewPrivs ${field('NoNewPrivs')}`);
  for (const tid of readdirSync('/proc/self/task')) {
    const t = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
    if (!/^NoNewPrivs:\s*1$/m.test(t)) problems.push(`NoNewPrivs unset on thread ${tid}`);
  }
  if (problems.length > 0) throw new Error(`dropping privileges to ${to.label}: the kernel reports ${problems.join(', ')}`);
}

/**
 * Gives dir and what is in it (but the names in `keep`) to the account: the entries first, the
 * directory last (listed while it is still root's). Throws one line naming what to fix.
 */
export function handOver(dir: string, to: Account, keep: Set<string>, what: string): void {
  const own = (p: string) => {
    try {
      chownSync(p, to.uid, to.gid);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      const fix = code === 'EPERM' ? ': the process needs CAP_CHOWN (a unit: in its CapabilityBoundingSet=)' : '';
      throw new Error(`handing ${what} to ${to.label}: chown ${p}: ${code}${fix}`);
    }
  };
  for (const name of readdirSync(dir)) if (!keep.has(name)) own(path.join(dir, name));
  own(dir);
}
