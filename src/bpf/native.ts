// The native side of the binding: libc and libbpf (1.1, libbpf.so.1, opened in libc.ts), the struct
// types they take, errno naming, BpfError, and libbpf's log sink. Every other src/bpf module reaches
// the kernel only through the functions bound here; nothing here runs ip/tc/bpftool.
// Struct layouts follow /usr/include/bpf/{libbpf,bpf}.h of libbpf 1.1 and were checked against the C
// sizes (open_opts 80, test_run_opts 80, xdp_attach_opts 16, tc_hook 24, tc_opts 32, map_info 88,
// link_create_opts 64, link_update_opts 16, map_batch_opts 24, statfs 120).
import fs from 'node:fs';
import os from 'node:os';
import koffi, { type LibraryHandle } from 'koffi';
import { libbpfLibrary, libcLibrary } from './libc.js';

/** koffi 3 hands native pointers around as BigInt (NULL comes back as null). */
export type Ptr = bigint;
/** koffi marshals plain objects to/from the structs declared below. */
export type Opts = Record<string, unknown>;

export const E = os.constants.errno;

// Errors

const LIBBPF_ERRNO_NAMES = ['LIBELF', 'FORMAT', 'KVERSION', 'ENDIAN', 'INTERNAL', 'RELOC', 'LOAD', 'VERIFY',
  'PROG2BIG', 'KVER', 'PROGTYPE', 'WRNGPID', 'INVSEQ', 'NLPARSE'];
const LIBBPF_ERRNO_START = 4000;

const errnoCodes = new Map<number, string>();
for (const [code, num] of Object.entries(E)) if (!errnoCodes.has(num)) errnoCodes.set(num, code);
errnoCodes.set(E.EOPNOTSUPP, 'EOPNOTSUPP'); // Linux aliases ENOTSUP to it; the kernel speaks of EOPNOTSUPP

/** Symbolic name of an errno value (e.g. 95 -> 'EOPNOTSUPP'), including libbpf's own 4000+ codes. */
export function errnoCode(errno: number): string {
  const libbpfName = LIBBPF_ERRNO_NAMES[errno - LIBBPF_ERRNO_START];
  if (libbpfName !== undefined) return `LIBBPF_ERRNO__${libbpfName}`;
  return errnoCodes.get(errno) ?? `E${errno}`;
}

/** Human words for an errno value, lower-cased to fit mid-sentence ("operation not supported"). */
export function describeErrno(errno: number): string {
  const words = errno >= LIBBPF_ERRNO_START ? libbpfStrerror(errno) : libc().strerror(errno);
  return /^[A-Z][a-z]/.test(words) ? words[0]!.toLowerCase() + words.slice(1) : words;
}

/** A failed libbpf/kernel operation: message is "<op>: <reason>", e.g. "attaching XDP to eth0: operation not supported". */
export class BpfError extends Error {
  /** Positive errno value (or libbpf's 4000+ codes). */
  readonly errno: number;
  /** Symbolic errno, e.g. 'EOPNOTSUPP'. */
  readonly code: string;
  /** What we were doing, e.g. "attaching XDP to eth0". */
  readonly op: string;
  /** Tail of the kernel verifier log, set when loading an object fails. */
  declare readonly verifierLog?: string;
  /** libbpf warn/info lines printed during the failed operation (load errors only). */
  declare readonly libbpfLog?: string[];

  constructor(op: string, errno: number, reason?: string, logs: { verifierLog?: string; libbpfLog?: string[] } = {}) {
    super(`${op}: ${reason ?? describeErrno(errno)}`);
    this.name = 'BpfError';
    this.op = op;
    this.errno = errno;
    this.code = errnoCode(errno);
    if (logs.verifierLog !== undefined) this.verifierLog = logs.verifierLog;
    if (logs.libbpfLog !== undefined) this.libbpfLog = logs.libbpfLog;
  }
}

/** libbpf 1.x returns -errno on failure; turn that into a BpfError. */
export function check(ret: number, op: string, reason?: string): number {
  if (ret < 0) throw new BpfError(op, -ret, reason);
  return ret;
}

/** libc calls report failure as -1 plus errno; turn that into a BpfError. */
export function checkLibc(ret: number, op: string, reason?: string): number {
  if (ret < 0) throw new BpfError(op, koffi.errno() || E.EIO, reason);
  return ret;
}

/** A Node fs error as a BpfError (node's errno is negative). */
export function fsError(op: string, err: unknown): BpfError {
  return new BpfError(op, Math.abs((err as NodeJS.ErrnoException).errno ?? E.EIO));
}

// Native libraries, loaded on first use. Each binding pairs its TS signature with the C prototype.

function bindLibc(lib: LibraryHandle) {
  const fn = <T>(proto: string) => lib.func(proto) as T;
  return {
    if_nametoindex: fn<(name: string) => number>('unsigned int if_nametoindex(const char *name)'),
    strerror: fn<(errnum: number) => string>('const char *strerror(int errnum)'),
    vsnprintf: fn<(buf: Buffer, size: number, fmt: Ptr | null, args: Ptr | null) => number>('int vsnprintf(void *buf, size_t size, void *fmt, void *args)'),
    fcntl: fn<(fd: number, cmd: number, ...varargs: unknown[]) => number>('int fcntl(int fd, int cmd, ...)'),
    close: fn<(fd: number) => number>('int close(int fd)'),
    statfs: fn<(path: string, buf: Buffer) => number>('int statfs(const char *path, void *buf)'),
    mount: fn<(source: string, target: string, fstype: string, flags: number, data: string | null) => number>(
      'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
    flock: fn<(fd: number, op: number) => number>('int flock(int fd, int op)'),
    socket: fn<(domain: number, type: number, protocol: number) => number>('int socket(int domain, int type, int protocol)'),
    sendto: fn<(fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number>(
      'long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
  };
}

function bindLibbpf(lib: LibraryHandle) {
  const fn = <T>(proto: string) => lib.func(proto) as T;
  type MapGetter = (map: Ptr) => number;
  return {
    libbpf_set_print: fn<(cb: Ptr | null) => Ptr | null>('void *libbpf_set_print(spak_libbpf_print_fn *fn)'),
    libbpf_strerror: fn<(err: number, buf: Buffer, size: number) => number>('int libbpf_strerror(int err, void *buf, size_t size)'),
    libbpf_num_possible_cpus: fn<() => number>('int libbpf_num_possible_cpus(void)'),
    bpf_object__open_file: fn<(path: string, opts: Opts) => Ptr | null>('spak_bpf_object *bpf_object__open_file(const char *path, const spak_open_opts *opts)'),
    bpf_object__load: fn<(obj: Ptr) => number>('int bpf_object__load(spak_bpf_object *obj)'),
    bpf_object__close: fn<(obj: Ptr) => void>('void bpf_object__close(spak_bpf_object *obj)'),
    bpf_object__find_program_by_name: fn<(obj: Ptr, name: string) => Ptr | null>('spak_bpf_program *bpf_object__find_program_by_name(spak_bpf_object *obj, const char *name)'),
    bpf_object__find_map_by_name: fn<(obj: Ptr, name: string) => Ptr | null>('spak_bpf_map *bpf_object__find_map_by_name(spak_bpf_object *obj, const char *name)'),
    bpf_object__next_map: fn<(obj: Ptr, prev: Ptr | null) => Ptr | null>('spak_bpf_map *bpf_object__next_map(const spak_bpf_object *obj, const spak_bpf_map *map)'),
    bpf_program__fd: fn<(prog: Ptr) => number>('int bpf_program__fd(spak_bpf_program *prog)'),
    bpf_map__fd: fn<MapGetter>('int bpf_map__fd(spak_bpf_map *map)'),
    bpf_map__name: fn<(map: Ptr) => string>('const char *bpf_map__name(spak_bpf_map *map)'),
    bpf_map__type: fn<MapGetter>('int bpf_map__type(spak_bpf_map *map)'),
    bpf_map__key_size: fn<MapGetter>('uint32_t bpf_map__key_size(spak_bpf_map *map)'),
    bpf_map__value_size: fn<MapGetter>('uint32_t bpf_map__value_size(spak_bpf_map *map)'),
    bpf_map__max_entries: fn<MapGetter>('uint32_t bpf_map__max_entries(spak_bpf_map *map)'),
    bpf_map__map_flags: fn<MapGetter>('uint32_t bpf_map__map_flags(spak_bpf_map *map)'),
    bpf_map__set_max_entries: fn<(map: Ptr, n: number) => number>('int bpf_map__set_max_entries(spak_bpf_map *map, uint32_t n)'),
    bpf_map__reuse_fd: fn<(map: Ptr, fd: number) => number>('int bpf_map__reuse_fd(spak_bpf_map *map, int fd)'),
    bpf_obj_get: fn<(path: string) => number>('int bpf_obj_get(const char *path)'),
    bpf_obj_pin: fn<(fd: number, path: string) => number>('int bpf_obj_pin(int fd, const char *path)'),
    bpf_obj_get_info_by_fd: fn<(fd: number, info: Buffer, len: number[]) => number>('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)'),
    bpf_prog_get_fd_by_id: fn<(id: number) => number>('int bpf_prog_get_fd_by_id(uint32_t id)'),
    bpf_map_get_fd_by_id: fn<(id: number) => number>('int bpf_map_get_fd_by_id(uint32_t id)'),
    bpf_map_lookup_elem: fn<(fd: number, key: Buffer, value: Buffer) => number>('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    bpf_map_update_elem: fn<(fd: number, key: Buffer, value: Buffer, flags: number) => number>('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
    bpf_map_delete_elem: fn<(fd: number, key: Buffer) => number>('int bpf_map_delete_elem(int fd, const void *key)'),
    bpf_map_get_next_key: fn<(fd: number, key: Buffer | null, next: Buffer) => number>('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
    bpf_map_lookup_batch: fn<(fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: number[], opts: Opts) => number>(
      'int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, const spak_map_batch_opts *opts)'),
    bpf_map_update_batch: fn<(fd: number, keys: Buffer, values: Buffer, count: number[], opts: Opts) => number>(
      'int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const spak_map_batch_opts *opts)'),
    bpf_map_delete_batch: fn<(fd: number, keys: Buffer, count: number[], opts: Opts) => number>(
      'int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32_t *count, const spak_map_batch_opts *opts)'),
    bpf_prog_test_run_opts: fn<(fd: number, opts: Opts) => number>('int bpf_prog_test_run_opts(int fd, _Inout_ spak_test_run_opts *opts)'),
    bpf_xdp_attach: fn<(ifindex: number, progFd: number, flags: number, opts: Opts | null) => number>('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const spak_xdp_attach_opts *opts)'),
    bpf_xdp_detach: fn<(ifindex: number, flags: number, opts: Opts | null) => number>('int bpf_xdp_detach(int ifindex, uint32_t flags, const spak_xdp_attach_opts *opts)'),
    bpf_xdp_query_id: fn<(ifindex: number, flags: number, progId: number[]) => number>('int bpf_xdp_query_id(int ifindex, int flags, _Out_ uint32_t *prog_id)'),
    bpf_prog_query: fn<(targetFd: number, type: number, queryFlags: number, attachFlags: number[], progIds: Uint32Array, progCnt: number[]) => number>(
      'int bpf_prog_query(int target_fd, int type, uint32_t query_flags, _Out_ uint32_t *attach_flags, _Out_ uint32_t *prog_ids, _Inout_ uint32_t *prog_cnt)'),
    bpf_link_create: fn<(progFd: number, targetFd: number, attachType: number, opts: Opts) => number>(
      'int bpf_link_create(int prog_fd, int target_fd, int attach_type, const spak_link_create_opts *opts)'),
    bpf_link_update: fn<(linkFd: number, newProgFd: number, opts: Opts) => number>('int bpf_link_update(int link_fd, int new_prog_fd, const spak_link_update_opts *opts)'),
    bpf_link_detach: fn<(linkFd: number) => number>('int bpf_link_detach(int link_fd)'),
    bpf_tc_hook_create: fn<(hook: Opts) => number>('int bpf_tc_hook_create(spak_tc_hook *hook)'),
    bpf_tc_hook_destroy: fn<(hook: Opts) => number>('int bpf_tc_hook_destroy(spak_tc_hook *hook)'),
    bpf_tc_attach: fn<(hook: Opts, opts: Opts) => number>('int bpf_tc_attach(const spak_tc_hook *hook, _Inout_ spak_tc_opts *opts)'),
    bpf_tc_detach: fn<(hook: Opts, opts: Opts) => number>('int bpf_tc_detach(const spak_tc_hook *hook, const spak_tc_opts *opts)'),
    bpf_tc_query: fn<(hook: Opts, opts: Opts) => number>('int bpf_tc_query(const spak_tc_hook *hook, _Inout_ spak_tc_opts *opts)'),
  };
}

/** Struct types, prefixed spak_ so they cannot clash with koffi type names declared elsewhere; returns their sizes. */
function declareTypes() {
  for (const name of ['spak_bpf_object', 'spak_bpf_program', 'spak_bpf_map']) koffi.opaque(name);
  koffi.proto('int spak_libbpf_print_fn(int level, void *fmt, void *args)');
  return {
    openOpts: koffi.struct('spak_open_opts', {
      sz: 'size_t', object_name: 'void *', relaxed_maps: 'bool', pin_root_path: 'void *',
      removed_attach_prog_fd: 'uint32_t', kconfig: 'void *', btf_custom_path: 'void *',
      kernel_log_buf: 'void *', kernel_log_size: 'size_t', kernel_log_level: 'uint32_t',
    }).size,
    testRunOpts: koffi.struct('spak_test_run_opts', {
      sz: 'size_t', data_in: 'void *', data_out: 'void *', data_size_in: 'uint32_t', data_size_out: 'uint32_t',
      ctx_in: 'void *', ctx_out: 'void *', ctx_size_in: 'uint32_t', ctx_size_out: 'uint32_t',
      retval: 'uint32_t', repeat: 'int', duration: 'uint32_t', flags: 'uint32_t', cpu: 'uint32_t', batch_size: 'uint32_t',
    }).size,
    xdpAttachOpts: koffi.struct('spak_xdp_attach_opts', { sz: 'size_t', old_prog_fd: 'int' }).size,
    tcHook: koffi.struct('spak_tc_hook', { sz: 'size_t', ifindex: 'int', attach_point: 'int', parent: 'uint32_t' }).size,
    tcOpts: koffi.struct('spak_tc_opts', {
      sz: 'size_t', prog_fd: 'int', flags: 'uint32_t', prog_id: 'uint32_t', handle: 'uint32_t', priority: 'uint32_t',
    }).size,
    mapBatchOpts: koffi.struct('spak_map_batch_opts', { sz: 'size_t', elem_flags: 'uint64_t', flags: 'uint64_t' }).size,
    // The trailing union (perf_event / kprobe_multi / tracing) is unused for XDP: reserve its 32 bytes.
    linkCreateOpts: koffi.struct('spak_link_create_opts', {
      sz: 'size_t', flags: 'uint32_t', iter_info: 'void *', iter_info_len: 'uint32_t', target_btf_id: 'uint32_t',
      target_union: koffi.array('uint64_t', 4),
    }).size,
    linkUpdateOpts: koffi.struct('spak_link_update_opts', { sz: 'size_t', flags: 'uint32_t', old_prog_fd: 'uint32_t' }).size,
  };
}

let libcHandle: ReturnType<typeof bindLibc> | undefined;
let libbpfHandle: ReturnType<typeof bindLibbpf> | undefined;
let structSizes: ReturnType<typeof declareTypes> | undefined;

export function libc(): ReturnType<typeof bindLibc> {
  libcHandle ??= bindLibc(libcLibrary());
  return libcHandle;
}

export function libbpf(): ReturnType<typeof bindLibbpf> {
  if (libbpfHandle) return libbpfHandle;
  let lib: LibraryHandle;
  try {
    lib = libbpfLibrary();
  } catch {
    throw new BpfError('libbpf.so.1 not found', E.ENOENT, 'install libbpf1');
  }
  structSizes = declareTypes();
  libbpfHandle = bindLibbpf(lib);
  // Registered once for the life of the process; setLibbpfLogger() only swaps the JS sink.
  libbpfHandle.libbpf_set_print(koffi.register(onLibbpfPrint, 'spak_libbpf_print_fn *'));
  return libbpfHandle;
}

/** sizeof() of the option structs, for their `sz` fields. */
export function sizes(): ReturnType<typeof declareTypes> {
  libbpf();
  return structSizes!;
}

function libbpfStrerror(errno: number): string {
  const buf = Buffer.alloc(256);
  libbpf().libbpf_strerror(errno, buf, buf.length);
  return buf.toString('utf8', 0, buf.indexOf(0));
}

// libbpf's own log output

/** Receives libbpf's log lines; see setLibbpfLogger. */
export type LibbpfLogger = (level: 'warn' | 'info' | 'debug', msg: string) => void;

const RECENT_LIBBPF_LINES = 50;
const LEVEL_NAMES = ['warn', 'info', 'debug'] as const;
const printBuf = Buffer.alloc(8192);
const recentLines: string[] = [];
let printedLineCount = 0; // total ever remembered, so callers can ask "what was printed since X"
let userLogger: LibbpfLogger | null = null;

function onLibbpfPrint(level: number, fmt: Ptr | null, args: Ptr | null): number {
  try {
    // va_list decays to a pointer on x86-64, so vsnprintf can consume it directly.
    const n = libc().vsnprintf(printBuf, printBuf.length, fmt, args);
    const msg = printBuf.toString('utf8', 0, Math.max(0, Math.min(n, printBuf.length - 1))).trimEnd();
    const levelName = LEVEL_NAMES[level] ?? 'debug';
    if (levelName !== 'debug') {
      const lines = msg.split('\n');
      recentLines.push(...lines);
      printedLineCount += lines.length;
      recentLines.splice(0, Math.max(0, recentLines.length - RECENT_LIBBPF_LINES));
    }
    userLogger?.(levelName, msg);
  } catch {
    // An exception must never unwind into libbpf; a lost log line is the lesser evil.
  }
  return 0;
}

/** A mark for libbpfLinesSince(): how many warn/info lines libbpf has printed so far. */
export function libbpfLogMark(): number {
  return printedLineCount;
}

/** The warn/info lines printed since mark (at most the last 50). */
export function libbpfLinesSince(mark: number): string[] {
  const count = Math.min(printedLineCount - mark, recentLines.length);
  return count > 0 ? recentLines.slice(-count) : [];
}

/** Route libbpf's log lines to fn (all levels); null restores the default: keep the last 50 warn/info lines in memory, print nothing. */
export function setLibbpfLogger(fn: LibbpfLogger | null): void {
  libbpf();
  userLogger = fn;
}

// Small helpers shared by the other modules

/** Interface index for a name (libc if_nametoindex); throws BpfError ENODEV for unknown interfaces. */
export function ifIndex(name: string): number {
  const index = libc().if_nametoindex(name);
  if (index === 0) throw new BpfError(`looking up interface ${name}`, koffi.errno() || E.ENODEV);
  return index;
}

let possibleCpus: number | undefined;
/** Number of possible CPUs: the slot count of per-CPU map values (libbpf_num_possible_cpus). */
export function numPossibleCpus(): number {
  possibleCpus ??= check(libbpf().libbpf_num_possible_cpus(), 'counting possible CPUs');
  return possibleCpus;
}

const F_DUPFD_CLOEXEC = 1030;

/** A close-on-exec duplicate of fd, so a handle can outlive the object that owns the original. */
export function dupFd(fd: number, op: string): number {
  return checkLibc(libc().fcntl(fd, F_DUPFD_CLOEXEC, 'int', 3), op, 'cannot duplicate the fd');
}

export function closeFd(fd: number): void {
  libc().close(fd);
}

/** bpf_obj_get_info_by_fd into a zeroed buffer of `size` bytes (the kernel fills what it knows). */
export function objInfo(fd: number, size: number, op: string): Buffer {
  const info = Buffer.alloc(size);
  check(libbpf().bpf_obj_get_info_by_fd(fd, info, [info.length]), op);
  return info;
}

/** A NUL-terminated name field of an info struct. */
export function infoName(info: Buffer, offset: number): string {
  return info.toString('utf8', offset, offset + 16).replace(/\0.*$/s, '');
}

/** The BPF object kind behind an fd, from /proc/self/fdinfo ('map', 'prog', 'link' or null). */
export function bpfFdKind(fd: number): 'map' | 'prog' | 'link' | null {
  const text = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  if (/^map_type:/m.test(text)) return 'map';
  if (/^link_type:/m.test(text)) return 'link';
  if (/^prog_type:/m.test(text)) return 'prog';
  return null;
}
