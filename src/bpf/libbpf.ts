// A small typed binding over the system libbpf (1.1, libbpf.so.1) through koffi.
// Everything goes through libbpf or libc: this module never runs ip/tc/bpftool.
// Struct layouts follow /usr/include/bpf/{libbpf,bpf}.h of libbpf 1.1 and are checked against the
// C sizes (open_opts 80, test_run_opts 80, xdp_attach_opts 16, tc_hook 24, tc_opts 32, map_info 88).
import fs from 'node:fs';
import os from 'node:os';
import koffi, { type LibraryHandle } from 'koffi';

type Ptr = bigint; // koffi 3 hands native pointers around as BigInt (NULL comes back as null)

const E = os.constants.errno;
const VERIFIER_LOG_SIZE = 16 << 20; // large enough that a rejected program's log is not truncated (ENOSPC)
const VERIFIER_LOG_TAIL_LINES = 100;
const RECENT_LIBBPF_LINES = 50;

const XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0;
const XDP_FLAGS_SKB_MODE = 1 << 1;
const XDP_FLAGS_DRV_MODE = 1 << 2;
const XDP_FLAGS_REPLACE = 1 << 4;
const BPF_TC_INGRESS = 1 << 0;
const BPF_TC_EGRESS = 1 << 1;
const F_DUPFD_CLOEXEC = 1030;
const PERCPU_MAP_TYPES = new Set([5, 6, 10, 21]); // PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE
const UPDATE_FLAGS = { any: 0, noexist: 1, exist: 2 } as const;

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
function check(ret: number, op: string, reason?: string): number {
  if (ret < 0) throw new BpfError(op, -ret, reason);
  return ret;
}

// Native libraries, loaded on first use. Each binding pairs its TS signature with the C prototype.

type Opts = Record<string, unknown>; // koffi marshals plain objects to/from the structs below

function bindLibc(lib: LibraryHandle) {
  const fn = <T>(proto: string) => lib.func(proto) as T;
  return {
    if_nametoindex: fn<(name: string) => number>('unsigned int if_nametoindex(const char *name)'),
    strerror: fn<(errnum: number) => string>('const char *strerror(int errnum)'),
    vsnprintf: fn<(buf: Buffer, size: number, fmt: Ptr | null, args: Ptr | null) => number>('int vsnprintf(void *buf, size_t size, void *fmt, void *args)'),
    fcntl: fn<(fd: number, cmd: number, ...varargs: unknown[]) => number>('int fcntl(int fd, int cmd, ...)'),
    close: fn<(fd: number) => number>('int close(int fd)'),
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
    bpf_program__fd: fn<(prog: Ptr) => number>('int bpf_program__fd(spak_bpf_program *prog)'),
    bpf_map__fd: fn<MapGetter>('int bpf_map__fd(spak_bpf_map *map)'),
    bpf_map__name: fn<(map: Ptr) => string>('const char *bpf_map__name(spak_bpf_map *map)'),
    bpf_map__type: fn<MapGetter>('int bpf_map__type(spak_bpf_map *map)'),
    bpf_map__key_size: fn<MapGetter>('uint32_t bpf_map__key_size(spak_bpf_map *map)'),
    bpf_map__value_size: fn<MapGetter>('uint32_t bpf_map__value_size(spak_bpf_map *map)'),
    bpf_map__max_entries: fn<MapGetter>('uint32_t bpf_map__max_entries(spak_bpf_map *map)'),
    bpf_map__set_max_entries: fn<(map: Ptr, n: number) => number>('int bpf_map__set_max_entries(spak_bpf_map *map, uint32_t n)'),
    bpf_map__pin: fn<(map: Ptr, path: string) => number>('int bpf_map__pin(spak_bpf_map *map, const char *path)'),
    bpf_map__unpin: fn<(map: Ptr, path: string) => number>('int bpf_map__unpin(spak_bpf_map *map, const char *path)'),
    bpf_obj_get: fn<(path: string) => number>('int bpf_obj_get(const char *path)'),
    bpf_obj_pin: fn<(fd: number, path: string) => number>('int bpf_obj_pin(int fd, const char *path)'),
    bpf_obj_get_info_by_fd: fn<(fd: number, info: Buffer, len: number[]) => number>('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)'),
    bpf_map_lookup_elem: fn<(fd: number, key: Buffer, value: Buffer) => number>('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    bpf_map_update_elem: fn<(fd: number, key: Buffer, value: Buffer, flags: number) => number>('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
    bpf_map_delete_elem: fn<(fd: number, key: Buffer) => number>('int bpf_map_delete_elem(int fd, const void *key)'),
    bpf_map_get_next_key: fn<(fd: number, key: Buffer | null, next: Buffer) => number>('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
    bpf_prog_test_run_opts: fn<(fd: number, opts: Opts) => number>('int bpf_prog_test_run_opts(int fd, _Inout_ spak_test_run_opts *opts)'),
    bpf_xdp_attach: fn<(ifindex: number, progFd: number, flags: number, opts: Opts | null) => number>('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const spak_xdp_attach_opts *opts)'),
    bpf_xdp_detach: fn<(ifindex: number, flags: number, opts: Opts | null) => number>('int bpf_xdp_detach(int ifindex, uint32_t flags, const spak_xdp_attach_opts *opts)'),
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
  };
}

let libcHandle: ReturnType<typeof bindLibc> | undefined;
let libbpfHandle: ReturnType<typeof bindLibbpf> | undefined;
let structSizes: ReturnType<typeof declareTypes> | undefined;

function libc(): ReturnType<typeof bindLibc> {
  libcHandle ??= bindLibc(koffi.load('libc.so.6'));
  return libcHandle;
}

function libbpf(): ReturnType<typeof bindLibbpf> {
  if (libbpfHandle) return libbpfHandle;
  let lib: LibraryHandle;
  try {
    lib = koffi.load('libbpf.so.1');
  } catch {
    throw new BpfError('libbpf.so.1 not found', E.ENOENT, 'install libbpf1');
  }
  structSizes = declareTypes();
  libbpfHandle = bindLibbpf(lib);
  // Registered once for the life of the process; setLibbpfLogger() only swaps the JS sink.
  libbpfHandle.libbpf_set_print(koffi.register(onLibbpfPrint, 'spak_libbpf_print_fn *'));
  return libbpfHandle;
}

function sizes(): ReturnType<typeof declareTypes> {
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

function libbpfLinesSince(mark: number): string[] {
  const count = Math.min(printedLineCount - mark, recentLines.length);
  return count > 0 ? recentLines.slice(-count) : [];
}

/** Route libbpf's log lines to fn (all levels); null restores the default: keep the last 50 warn/info lines in memory, print nothing. */
export function setLibbpfLogger(fn: LibbpfLogger | null): void {
  libbpf();
  userLogger = fn;
}

// Small helpers

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

// Objects, programs, maps

const closedObjects = new WeakSet<BpfObject>();

function ensureOpen(owner: BpfObject, what: string): void {
  if (closedObjects.has(owner)) throw new BpfError(what, E.EBADF, `object ${owner.path} is closed`);
}

/** A BPF ELF object file opened with libbpf: configure maps, load, then look up programs and maps. */
export class BpfObject {
  #ptr: Ptr;
  #logBuf: Ptr | null; // kernel verifier log buffer: libbpf keeps the pointer from open until load

  private constructor(readonly path: string, ptr: Ptr, logBuf: Ptr) {
    this.#ptr = ptr;
    this.#logBuf = logBuf;
  }

  /** Open (but do not load) an object file; a missing or malformed file throws a BpfError naming the path. */
  static open(path: string): BpfObject {
    const lib = libbpf();
    const logBuf = koffi.alloc('char', VERIFIER_LOG_SIZE) as Ptr;
    koffi.encode(logBuf, 'char', 0); // empty until a rejected program writes to it
    // kernel_log_level 0: libbpf only asks for a log (into our buffer) when a program is rejected.
    const ptr = lib.bpf_object__open_file(path, {
      sz: sizes().openOpts, kernel_log_buf: logBuf, kernel_log_size: VERIFIER_LOG_SIZE, kernel_log_level: 0,
    });
    if (!ptr) {
      const errno = koffi.errno() || E.EINVAL;
      koffi.free(logBuf);
      throw new BpfError(`opening ${path}`, errno);
    }
    return new BpfObject(path, ptr, logBuf);
  }

  /** Resize a map before load() (bpf_map__set_max_entries). */
  setMaxEntries(mapName: string, n: number): void {
    const map = this.#findMap(mapName);
    check(libbpf().bpf_map__set_max_entries(map, n), `setting max_entries of map ${mapName}`);
  }

  /** Load all programs and maps into the kernel; on failure err.verifierLog holds the verifier log tail. */
  load(): void {
    ensureOpen(this, `loading ${this.path}`);
    const mark = printedLineCount;
    const ret = libbpf().bpf_object__load(this.#ptr);
    try {
      if (ret < 0) {
        const errno = -ret;
        const log = this.#logBuf === null ? '' : (koffi.decode(this.#logBuf, 'char', -1) as string);
        const verifierLog = log.trimEnd().split('\n').slice(-VERIFIER_LOG_TAIL_LINES).join('\n');
        const hint = errno === E.ENOSPC && log ? 'verifier log buffer too small (program rejected)' : undefined;
        throw new BpfError(`loading ${this.path}`, errno, hint, { verifierLog, libbpfLog: libbpfLinesSince(mark) });
      }
    } finally {
      this.#releaseLogBuffer(); // only program loads use it, and libbpf allows a single load per object
    }
  }

  /** Find a program by its C function name; throws if missing. */
  program(name: string): BpfProgram {
    ensureOpen(this, `finding program ${name}`);
    const ptr = libbpf().bpf_object__find_program_by_name(this.#ptr, name);
    if (!ptr) throw new BpfError(`finding program ${name} in ${this.path}`, E.ENOENT, 'no such program');
    return new BpfProgram(this, ptr, name);
  }

  /** Find a map by name; throws if missing. */
  map(name: string): BpfMap {
    return BpfMap.fromObject(this, this.#findMap(name));
  }

  /** Unload everything this object created (pinned maps and attachments stay); idempotent. */
  close(): void {
    if (closedObjects.has(this)) return;
    closedObjects.add(this);
    libbpf().bpf_object__close(this.#ptr);
    this.#releaseLogBuffer();
  }

  #findMap(name: string): Ptr {
    ensureOpen(this, `finding map ${name}`);
    const ptr = libbpf().bpf_object__find_map_by_name(this.#ptr, name);
    if (!ptr) throw new BpfError(`finding map ${name} in ${this.path}`, E.ENOENT, 'no such map');
    return ptr;
  }

  #releaseLogBuffer(): void {
    if (this.#logBuf === null) return;
    koffi.free(this.#logBuf);
    this.#logBuf = null;
  }
}

/** A program inside a BpfObject; fd is valid once the object is loaded and until it is closed. */
export class BpfProgram {
  #owner: BpfObject;
  #ptr: Ptr;

  /** @internal use BpfObject.program() */
  constructor(owner: BpfObject, ptr: Ptr, readonly name: string) {
    this.#owner = owner;
    this.#ptr = ptr;
  }

  /** The kernel program fd (throws if the object is not loaded or already closed). */
  get fd(): number {
    ensureOpen(this.#owner, `program ${this.name}`);
    return check(libbpf().bpf_program__fd(this.#ptr), `program ${this.name}`, 'not loaded (call load() first)');
  }
}

interface MapShape { name: string; type: number; keySize: number; valueSize: number; maxEntries: number }
type MapSource =
  | { kind: 'object'; owner: BpfObject; ptr: Ptr; name: string }
  | { kind: 'pinned'; fd: number; shape: MapShape; closed: boolean };

const roundUp8 = (n: number) => Math.ceil(n / 8) * 8;
const fullValueSize = (shape: MapShape) =>
  PERCPU_MAP_TYPES.has(shape.type) ? roundUp8(shape.valueSize) * numPossibleCpus() : shape.valueSize;

/** A BPF map, either from a BpfObject (fd valid after load) or opened from a bpffs pin. */
export class BpfMap {
  #src: MapSource;

  private constructor(src: MapSource) {
    this.#src = src;
  }

  /** @internal use BpfObject.map() */
  static fromObject(owner: BpfObject, ptr: Ptr): BpfMap {
    return new BpfMap({ kind: 'object', owner, ptr, name: libbpf().bpf_map__name(ptr) });
  }

  /** Open a map pinned in bpffs (bpf_obj_get) and learn its shape from the kernel; close() releases the fd. */
  static openPinned(path: string): BpfMap {
    const op = `opening pinned map ${path}`;
    const fd = check(libbpf().bpf_obj_get(path), op);
    try {
      // bpf_obj_get_info_by_fd would happily describe a program too, so make sure it is a map first.
      if (!fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').includes('map_type:')) throw new BpfError(op, E.EINVAL, 'not a BPF map');
      const info = Buffer.alloc(88); // struct bpf_map_info
      check(libbpf().bpf_obj_get_info_by_fd(fd, info, [info.length]), op);
      const name = info.toString('utf8', 24, 40).replace(/\0.*$/s, '');
      return new BpfMap({
        kind: 'pinned', fd, closed: false,
        shape: { name, type: info.readUInt32LE(0), keySize: info.readUInt32LE(8), valueSize: info.readUInt32LE(12), maxEntries: info.readUInt32LE(16) },
      });
    } catch (err) {
      libc().close(fd);
      throw err;
    }
  }

  // Read through libbpf each time for object maps: max_entries may change until load.
  #shape(): MapShape {
    const src = this.#src;
    if (src.kind === 'pinned') return src.shape;
    ensureOpen(src.owner, `map ${src.name}`); // the bpf_map pointer dies with the object
    const lib = libbpf();
    return {
      name: src.name, type: lib.bpf_map__type(src.ptr), keySize: lib.bpf_map__key_size(src.ptr),
      valueSize: lib.bpf_map__value_size(src.ptr), maxEntries: lib.bpf_map__max_entries(src.ptr),
    };
  }

  /** Map name as the kernel/libbpf knows it (at most 15 characters for pinned maps). */
  get name(): string { return this.#src.kind === 'object' ? this.#src.name : this.#src.shape.name; }
  /** Map type (enum bpf_map_type). */
  get type(): number { return this.#shape().type; }
  /** Key size in bytes. */
  get keySize(): number { return this.#shape().keySize; }
  /** Value size in bytes for one CPU. */
  get valueSize(): number { return this.#shape().valueSize; }
  /** Capacity in entries. */
  get maxEntries(): number { return this.#shape().maxEntries; }
  /** True for per-CPU map types, whose values hold one slot per possible CPU. */
  get isPerCpu(): boolean { return PERCPU_MAP_TYPES.has(this.type); }
  /** Bytes a lookup/update value occupies: valueSize, or roundup(valueSize, 8) * possible CPUs for per-CPU maps. */
  get fullValueSize(): number { return fullValueSize(this.#shape()); }

  /** Kernel map fd (throws if the object is not loaded, or the map/object is closed). */
  get fd(): number {
    const src = this.#src;
    if (src.kind === 'pinned') {
      if (src.closed) throw new BpfError(`map ${src.shape.name}`, E.EBADF, 'map is closed');
      return src.fd;
    }
    ensureOpen(src.owner, `map ${src.name}`);
    return check(libbpf().bpf_map__fd(src.ptr), `map ${src.name}`, 'not loaded (call load() first)');
  }

  /** Value for key, or null if absent (for per-CPU maps: all CPU slots concatenated). */
  lookup(key: Buffer): Buffer | null {
    const { fd, shape } = this.#access(key);
    const value = Buffer.alloc(fullValueSize(shape));
    const ret = libbpf().bpf_map_lookup_elem(fd, key, value);
    if (ret === -E.ENOENT) return null;
    check(ret, `looking up a key in map ${this.name}`);
    return value;
  }

  /** Per-CPU map lookup split into one valueSize buffer per possible CPU ([] if the key is absent). */
  lookupPerCpu(key: Buffer): Buffer[] {
    const { valueSize, type } = this.#shape();
    if (!PERCPU_MAP_TYPES.has(type)) throw new BpfError(`looking up per-CPU values in map ${this.name}`, E.EINVAL, 'not a per-CPU map');
    const all = this.lookup(key);
    if (!all) return [];
    const stride = roundUp8(valueSize);
    return Array.from({ length: numPossibleCpus() }, (_, cpu) => all.subarray(cpu * stride, cpu * stride + valueSize));
  }

  /** Insert or overwrite (flags: 'any' default, 'noexist' create only, 'exist' overwrite only). */
  update(key: Buffer, value: Buffer, flags: keyof typeof UPDATE_FLAGS = 'any'): void {
    const { fd, shape } = this.#access(key);
    this.#checkSize('value', value, fullValueSize(shape));
    check(libbpf().bpf_map_update_elem(fd, key, value, UPDATE_FLAGS[flags]), `updating map ${this.name}`);
  }

  /** Delete key; false if it was not there. */
  delete(key: Buffer): boolean {
    const { fd } = this.#access(key);
    const ret = libbpf().bpf_map_delete_elem(fd, key);
    if (ret === -E.ENOENT) return false;
    check(ret, `deleting from map ${this.name}`);
    return true;
  }

  /** All keys, by bpf_map_get_next_key iteration (not atomic against concurrent updates). */
  keys(): Buffer[] {
    const fd = this.fd;
    const { keySize, maxEntries } = this.#shape();
    const keys: Buffer[] = [];
    let prev: Buffer | null = null;
    // A hash map restarts iteration when the previous key vanished mid-walk; the cap keeps us finite.
    while (keys.length < maxEntries) {
      const next = Buffer.alloc(keySize);
      const ret = libbpf().bpf_map_get_next_key(fd, prev, next);
      if (ret === -E.ENOENT) break;
      check(ret, `listing keys of map ${this.name}`);
      keys.push(next);
      prev = next;
    }
    return keys;
  }

  /** Pin the map at a bpffs path (bpf_map__pin for object maps, bpf_obj_pin for opened pins). */
  pin(path: string): void {
    const src = this.#src;
    const fd = this.fd; // also checks the object is open and loaded
    check(src.kind === 'object' ? libbpf().bpf_map__pin(src.ptr, path) : libbpf().bpf_obj_pin(fd, path), `pinning map ${this.name} at ${path}`);
  }

  /** Remove a pin: bpf_map__unpin for maps of an open object, otherwise a plain unlink. */
  unpin(path: string): void {
    const src = this.#src;
    const op = `unpinning map ${this.name} from ${path}`;
    if (src.kind === 'object' && !closedObjects.has(src.owner)) {
      check(libbpf().bpf_map__unpin(src.ptr, path), op);
      return;
    }
    try {
      fs.unlinkSync(path);
    } catch (err) {
      throw new BpfError(op, Math.abs((err as NodeJS.ErrnoException).errno ?? E.EIO));
    }
  }

  /** Release the fd of a map from openPinned(); a no-op for object maps (the object owns them); idempotent. */
  close(): void {
    if (this.#src.kind === 'pinned' && !this.#src.closed) {
      this.#src.closed = true;
      libc().close(this.#src.fd);
    }
  }

  #checkSize(what: string, buf: Buffer, expected: number): void {
    // The kernel reads exactly `expected` bytes from our pointer; a short buffer would be an overread.
    if (buf.length !== expected) {
      throw new BpfError(`accessing map ${this.name}`, E.EINVAL, `${what} is ${buf.length} bytes, the map expects ${expected}`);
    }
  }

  /** fd and shape for a key-based operation, after checking the key length. */
  #access(key: Buffer): { fd: number; shape: MapShape } {
    const fd = this.fd;
    const shape = this.#shape();
    this.#checkSize('key', key, shape.keySize);
    return { fd, shape };
  }
}

// XDP

/** 'native' = driver mode, 'generic' = skb mode, 'auto' = native, falling back to generic if unsupported. */
export type XdpMode = 'native' | 'generic' | 'auto';

/** An XDP program attached to an interface; detach() removes it only if it is still ours. */
export interface XdpAttachment {
  readonly ifindex: number;
  readonly ifname: string;
  readonly mode: 'native' | 'generic';
  detach(): void;
}

/** Options for attachXdp: replace=true clobbers an existing program; onWarning hears about the generic fallback. */
export interface XdpAttachOptions {
  mode?: XdpMode;
  replace?: boolean;
  onWarning?: (message: string) => void;
}

/** Attach prog at XDP on ifname; refuses to replace another program unless opts.replace. */
export function attachXdp(prog: BpfProgram, ifname: string, opts: XdpAttachOptions = {}): XdpAttachment {
  const op = `attaching XDP to ${ifname}`;
  const ifindex = ifIndex(ifname);
  // Our own fd for the program, so detach() can still name it after the BpfObject is closed.
  const ownFd = check(libc().fcntl(prog.fd, F_DUPFD_CLOEXEC, 'int', 3), op, 'cannot duplicate the program fd');
  const requested = opts.mode ?? 'auto';
  const modeFlag = (mode: 'native' | 'generic') => (mode === 'native' ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE);
  const attach = (mode: 'native' | 'generic') =>
    libbpf().bpf_xdp_attach(ifindex, ownFd, modeFlag(mode) | (opts.replace ? 0 : XDP_FLAGS_UPDATE_IF_NOEXIST), null);

  let mode: 'native' | 'generic' = requested === 'generic' ? 'generic' : 'native';
  let ret = attach(mode);
  if (ret < 0 && requested === 'auto' && (ret === -E.EOPNOTSUPP || ret === -E.EINVAL)) {
    const warn = opts.onWarning ?? ((msg: string) => process.emitWarning(msg, { code: 'SPAK_XDP_GENERIC' }));
    warn(`native XDP on ${ifname} failed (${describeErrno(-ret)}); falling back to generic XDP, which is slower`);
    mode = 'generic';
    ret = attach(mode);
  }
  if (ret < 0) {
    libc().close(ownFd);
    // EBUSY: this mode already has a program; EEXIST: a program is attached in the other mode.
    check(ret, op, ret === -E.EBUSY || ret === -E.EEXIST ? 'another XDP program is already attached' : undefined);
  }

  let attached = true;
  return {
    ifindex, ifname, mode,
    detach() {
      if (!attached) return;
      const opts = { sz: sizes().xdpAttachOpts, old_prog_fd: ownFd };
      const res = libbpf().bpf_xdp_detach(ifindex, modeFlag(mode) | XDP_FLAGS_REPLACE, opts);
      // With XDP_FLAGS_REPLACE, EEXIST means the attached program (if any) is not ours: nothing of ours to remove.
      if (res < 0 && res !== -E.EEXIST && res !== -E.ENOENT && res !== -E.ENODEV) check(res, `detaching XDP from ${ifname}`);
      attached = false;
      libc().close(ownFd);
    },
  };
}

// tc (clsact + direct-action BPF filter)

/** A tc BPF filter attached by attachTc; detach() removes it if it still runs our program. */
export interface TcAttachment {
  readonly ifindex: number;
  readonly ifname: string;
  readonly direction: 'ingress' | 'egress';
  readonly handle: number;
  readonly priority: number;
  detach(): void;
}

// The clsact qdisc is shared by every filter on an interface, so we remove it only when we created it
// and the last of *our* filters on that interface is gone. Filters added by others after us are not
// visible through libbpf and would go with it; we accept that for a qdisc we introduced.
const clsactCreatedByUs = new Set<number>();
const ourTcFilters = new Map<number, number>();

function releaseClsact(ifindex: number): void {
  const left = (ourTcFilters.get(ifindex) ?? 1) - 1;
  if (left > 0) return void ourTcFilters.set(ifindex, left);
  ourTcFilters.delete(ifindex);
  if (!clsactCreatedByUs.delete(ifindex)) return;
  // Both attach points together destroy the qdisc itself (one alone would just flush its filters).
  libbpf().bpf_tc_hook_destroy({ sz: sizes().tcHook, ifindex, attach_point: BPF_TC_INGRESS | BPF_TC_EGRESS, parent: 0 });
}

/** Attach prog as a direct-action tc filter (creating the clsact qdisc if needed); handle/priority 0 = kernel picks. */
export function attachTc(
  prog: BpfProgram, ifname: string, direction: 'ingress' | 'egress', opts: { priority?: number; handle?: number } = {},
): TcAttachment {
  const op = `attaching tc ${direction} program to ${ifname}`;
  const lib = libbpf();
  const ifindex = ifIndex(ifname);
  const progFd = prog.fd;
  const hook = { sz: sizes().tcHook, ifindex, attach_point: direction === 'ingress' ? BPF_TC_INGRESS : BPF_TC_EGRESS, parent: 0 };

  const created = lib.bpf_tc_hook_create(hook);
  if (created < 0 && created !== -E.EEXIST) check(created, op);
  if (created === 0) clsactCreatedByUs.add(ifindex);
  ourTcFilters.set(ifindex, (ourTcFilters.get(ifindex) ?? 0) + 1);

  const tcOpts = { sz: sizes().tcOpts, prog_fd: progFd, flags: 0, prog_id: 0, handle: opts.handle ?? 0, priority: opts.priority ?? 0 };
  const ret = lib.bpf_tc_attach(hook, tcOpts);
  if (ret < 0) {
    releaseClsact(ifindex);
    const taken = ret === -E.EEXIST ? `a filter with handle ${tcOpts.handle} and priority ${tcOpts.priority} already exists` : undefined;
    check(ret, op, taken);
  }
  const { handle, priority, prog_id: progId } = tcOpts; // filled in by the kernel's echo

  let attached = true;
  return {
    ifindex, ifname, direction, handle, priority,
    detach() {
      if (!attached) return;
      const query: Opts = { sz: sizes().tcOpts, prog_fd: 0, flags: 0, prog_id: 0, handle, priority };
      const found = lib.bpf_tc_query(hook, query);
      if (found === 0 && query.prog_id === progId) {
        const res = lib.bpf_tc_detach(hook, { sz: sizes().tcOpts, prog_fd: 0, flags: 0, prog_id: 0, handle, priority });
        if (res < 0 && res !== -E.ENOENT) check(res, `detaching tc ${direction} program from ${ifname}`);
      } else if (found < 0 && found !== -E.ENOENT && found !== -E.ENODEV && found !== -E.EINVAL) {
        check(found, `detaching tc ${direction} program from ${ifname}`);
      } // else: already gone, or someone replaced it with their own program: leave theirs alone
      attached = false;
      releaseClsact(ifindex);
    },
  };
}

// BPF_PROG_TEST_RUN

/** Result of testRun: retval is signed (tc's TC_ACT_UNSPEC reads -1), durationNs is the kernel's per-run average. */
export interface TestRunResult {
  retval: number;
  dataOut: Buffer;
  durationNs: number;
}

/** Run prog once (or opts.repeat times) on data in the kernel without attaching it (bpf_prog_test_run_opts). */
export function testRun(prog: BpfProgram, data: Buffer, opts: { repeat?: number; dataOutSize?: number; ctxIn?: Buffer } = {}): TestRunResult {
  const dataOut = Buffer.alloc(opts.dataOutSize ?? data.length + 256);
  const run: Opts = {
    sz: sizes().testRunOpts,
    data_in: data, data_out: dataOut, data_size_in: data.length, data_size_out: dataOut.length,
    ctx_in: opts.ctxIn ?? null, ctx_out: null, ctx_size_in: opts.ctxIn?.length ?? 0, ctx_size_out: 0,
    retval: 0, repeat: opts.repeat ?? 1, duration: 0, flags: 0, cpu: 0, batch_size: 0,
  };
  const ret = libbpf().bpf_prog_test_run_opts(prog.fd, run);
  const tooSmall = ret === -E.ENOSPC ? `output (${String(run.data_size_out)} bytes) exceeds dataOutSize ${dataOut.length}` : undefined;
  check(ret, `test-running program ${prog.name}`, tooSmall);
  return {
    retval: (run.retval as number) | 0,
    dataOut: dataOut.subarray(0, run.data_size_out as number),
    durationNs: run.duration as number,
  };
}
