// Native calls only `spak doctor` makes: adjtimex(2) for the clock state, libbpf's version, and
// two tiny programs loaded from raw instructions (no object file) to try the hooks.
import koffi from 'koffi';
import { libbpfLibrary, libcLibrary } from '../bpf/libc.js';
import { closeFd, E, libbpf, sizes } from '../bpf/native.js';

const TIMEX_SIZE = 208; // struct timex on x86_64 and aarch64 (LP64)

/** adjtimex with modes 0 (read only): the clock state, status word and max error. */
export function readAdjtimex(): { state: number; status: number; maxErrorUs: number } {
  const adjtimex = libcLibrary().func('int adjtimex(void *buf)') as (b: Buffer) => number;
  const buf = Buffer.alloc(TIMEX_SIZE);
  const state = adjtimex(buf);
  if (state < 0) throw new Error(`adjtimex: errno ${koffi.errno()}`);
  return { state, status: buf.readInt32LE(40), maxErrorUs: Number(buf.readBigInt64LE(24)) };
}

/** libbpf_version_string(), e.g. "v1.1". */
export function libbpfVersion(): string {
  const f = libbpfLibrary().func('const char *libbpf_version_string(void)') as () => string;
  return f();
}

export const BPF_PROG_TYPE_SCHED_CLS = 3;
export const BPF_PROG_TYPE_XDP = 6;
export const BPF_XDP = 37;
export const BPF_TCX_INGRESS = 46;
export const XDP_PASS = 2;
export const TCX_NEXT = -1;

/** "r0 = imm; exit": the smallest program that returns imm. */
function returnProgram(imm: number): Buffer {
  const b = Buffer.alloc(16);
  b[0] = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
  b.writeInt32LE(imm, 4);
  b[8] = 0x95; // BPF_JMP | BPF_EXIT
  return b;
}

/** Loads a program of `type` that returns `imm`; returns its fd (close it) or throws with the errno. */
export function loadReturnProgram(type: number, imm: number): number {
  const load = libbpfLibrary().func('int bpf_prog_load(int prog_type, const char *prog_name, const char *license, const void *insns, size_t insn_cnt, void *opts)') as
    (t: number, name: string, lic: string, insns: Buffer, n: number, opts: null) => number;
  const insns = returnProgram(imm);
  const fd = load(type, 'spak_doctor', 'GPL', insns, insns.length / 8, null);
  if (fd < 0) throw new Error(`BPF_PROG_LOAD: ${errnoName(-fd)}`);
  return fd;
}

export function errnoName(errno: number): string {
  const name = Object.entries(E).find(([, v]) => v === errno)?.[0];
  return name ?? `errno ${errno}`;
}

/** bpf_link_create, then close at once (a link nobody pins or holds is detached when closed). null = it worked. */
export function tryLink(progFd: number, ifindex: number, attachType: number, flags: number): string | null {
  const ret = libbpf().bpf_link_create(progFd, ifindex, attachType, { sz: sizes().linkCreateOpts, flags });
  if (ret < 0) return errnoName(-ret);
  closeFd(ret);
  return null;
}

export { closeFd };
