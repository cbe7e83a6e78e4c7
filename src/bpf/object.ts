// BPF ELF objects and their programs: open, configure maps, load, find programs and maps.
import koffi from 'koffi';
import { BpfMap, mapShapeMismatch, type MapShape } from './map.js';
import {
  BpfError, check, E, infoName, libbpf, libbpfLinesSince, libbpfLogMark, objInfo, sizes, type Ptr,
} from './native.js';

const VERIFIER_LOG_SIZE = 16 << 20; // large enough that a rejected program's log is not truncated (ENOSPC)
const VERIFIER_LOG_TAIL_LINES = 100;
const PROG_INFO_SIZE = 80; // struct bpf_prog_info up to and including name[16] (the kernel fills what fits)

/** The async loads of this process, one after the other (BpfObject.loadAsync). */
let asyncLoads: Promise<unknown> = Promise.resolve();

/** bpf_object__load through koffi's worker-thread call. */
function loadOnWorker(ptr: Ptr, done: (err: unknown, ret: number) => void): void {
  (libbpf().bpf_object__load as unknown as { async(obj: Ptr, cb: (err: unknown, ret: number) => void): void }).async(ptr, done);
}

/**
 * How often a load is tried when a signal interrupted it: the verifier gives up with EAGAIN when
 * the loading thread has a signal pending (libbpf itself retries BPF_PROG_LOAD a few times first),
 * and a system call may end with EINTR. A load that failed leaves its object unusable (libbpf loads
 * an object once), so each try opens the file afresh.
 */
export const LOAD_ATTEMPTS = 5;

/** A load that a signal interrupted (worth a fresh try), as opposed to a rejection. */
export function interruptedLoad(err: unknown): boolean {
  return err instanceof BpfError && (err.errno === E.EAGAIN || err.errno === E.EINTR);
}

/**
 * Opens path, lets prepare() size its maps and share others, and loads it; an interrupted load
 * (interruptedLoad) is tried again on a fresh open, up to LOAD_ATTEMPTS times, 50 ms more apart
 * each time (a burst of signals may pass meanwhile). The load runs on a worker thread (loadAsync).
 * On failure nothing stays open.
 */
export async function openAndLoad(path: string, prepare: (obj: BpfObject) => void): Promise<BpfObject> {
  for (let attempt = 1; ; attempt++) {
    const obj = BpfObject.open(path);
    try {
      prepare(obj);
      await obj.loadAsync();
      return obj;
    } catch (err) {
      obj.close();
      if (!interruptedLoad(err) || attempt >= LOAD_ATTEMPTS) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
  }
}

/** openAndLoad on the calling thread, for the synchronous paths (a daemon's start, tests). */
export function openAndLoadSync(path: string, prepare: (obj: BpfObject) => void): BpfObject {
  for (let attempt = 1; ; attempt++) {
    const obj = BpfObject.open(path);
    try {
      prepare(obj);
      obj.load();
      return obj;
    } catch (err) {
      obj.close();
      if (!interruptedLoad(err) || attempt >= LOAD_ATTEMPTS) throw err;
    }
  }
}

/** A BPF ELF object file opened with libbpf: configure maps, load, then look up programs and maps. */
export class BpfObject {
  #ptr: Ptr;
  #logBuf: Ptr | null; // kernel verifier log buffer: libbpf keeps the pointer from open until load
  #closed = false;
  #loaded = false;
  /** A worker thread runs bpf_object__load on this object (loadAsync); close() waits for it. */
  #onWorker = false;
  #closeWhenBack = false;

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

  /** True once close() ran: programs and maps of this object are then unusable. */
  get closed(): boolean { return this.#closed; }

  /** Resize a map before load() (bpf_map__set_max_entries). */
  setMaxEntries(mapName: string, n: number): void {
    const map = this.#findMap(mapName);
    check(libbpf().bpf_map__set_max_entries(map, n), `setting max_entries of map ${mapName}`);
  }

  /** The map's definition as the object will create it (after any setMaxEntries), to compare with a pin before reuseMap(). */
  mapShape(name: string): MapShape {
    return this.map(name).shape;
  }

  /**
   * Before load(): make the object use an existing kernel map (e.g. one opened with BpfMap.openPinned) instead
   * of creating its own (bpf_map__reuse_fd). Refuses a map whose type, key/value size, capacity or flags differ
   * from the object's definition. libbpf keeps its own duplicate of the fd: `map` may be closed afterwards.
   */
  reuseMap(name: string, map: BpfMap): void {
    const op = `reusing map ${map.name} as ${name} of ${this.path}`;
    if (this.#loaded) throw new BpfError(op, E.EBUSY, 'the object is already loaded');
    const ptr = this.#findMap(name);
    const mismatch = mapShapeMismatch(this.mapShape(name), map.shape);
    if (mismatch) throw new BpfError(op, E.EINVAL, `incompatible map: ${mismatch}`);
    check(libbpf().bpf_map__reuse_fd(ptr, map.fd), op);
  }

  /** Load all programs and maps into the kernel; on failure err.verifierLog holds the verifier log tail. */
  load(): void {
    this.ensureOpen(`loading ${this.path}`);
    const mark = libbpfLogMark();
    this.#settleLoad(libbpf().bpf_object__load(this.#ptr), mark);
  }

  /**
   * load() on a worker thread (koffi's .async), so that the event loop keeps serving (knocks,
   * signals) while the verifier runs, which takes most of a second for server.bpf.o. One load at a
   * time in the process: each waits for the one before (libbpf's print callback and its log lines
   * are shared). A close() meanwhile waits for the worker to be done with the object.
   */
  loadAsync(): Promise<void> {
    this.ensureOpen(`loading ${this.path}`);
    const run = asyncLoads.then(() => new Promise<void>((resolve, reject) => {
      if (this.#closed) return reject(new BpfError(`loading ${this.path}`, E.EBADF, `object ${this.path} is closed`));
      const mark = libbpfLogMark();
      this.#onWorker = true;
      loadOnWorker(this.#ptr, (err, ret) => {
        this.#onWorker = false;
        try {
          if (this.#closeWhenBack) {
            this.#closeWhenBack = false;
            this.close();
            throw new BpfError(`loading ${this.path}`, E.EBADF, `object ${this.path} was closed during the load`);
          }
          if (err) throw err;
          this.#settleLoad(ret, mark);
          resolve();
        } catch (e) {
          reject(e as Error);
        }
      });
    }));
    asyncLoads = run.catch(() => undefined);
    return run;
  }

  #settleLoad(ret: number, mark: number): void {
    try {
      if (ret < 0) {
        const errno = -ret;
        const log = this.#logBuf === null ? '' : (koffi.decode(this.#logBuf, 'char', -1) as string);
        const verifierLog = log.trimEnd().split('\n').slice(-VERIFIER_LOG_TAIL_LINES).join('\n');
        const hint = errno === E.ENOSPC && log ? 'verifier log buffer too small (program rejected)' : undefined;
        throw new BpfError(`loading ${this.path}`, errno, hint, { verifierLog, libbpfLog: libbpfLinesSince(mark) });
      }
      this.#loaded = true;
    } finally {
      this.#releaseLogBuffer(); // only program loads use it, and libbpf allows a single load per object
    }
  }

  /** Find a program by its C function name; throws if missing. */
  program(name: string): BpfProgram {
    this.ensureOpen(`finding program ${name}`);
    const ptr = libbpf().bpf_object__find_program_by_name(this.#ptr, name);
    if (!ptr) throw new BpfError(`finding program ${name} in ${this.path}`, E.ENOENT, 'no such program');
    return new BpfProgram(this, ptr, name);
  }

  /** Find a map by name; throws if missing. */
  map(name: string): BpfMap {
    return BpfMap.fromObject(this, this.#findMap(name));
  }

  /** The names of every map the object defines (internal ones such as .rodata too), in libbpf's order. */
  mapNames(): string[] {
    this.ensureOpen('listing maps');
    const lib = libbpf();
    const names: string[] = [];
    for (let m = lib.bpf_object__next_map(this.#ptr, null); m; m = lib.bpf_object__next_map(this.#ptr, m)) names.push(lib.bpf_map__name(m));
    return names;
  }

  /** Unload everything this object created (pinned maps and attachments stay); idempotent. */
  close(): void {
    if (this.#closed) return;
    if (this.#onWorker) {
      this.#closeWhenBack = true; // libbpf frees the object: not while the worker's load uses it
      return;
    }
    this.#closed = true;
    libbpf().bpf_object__close(this.#ptr);
    this.#releaseLogBuffer();
  }

  /** @internal throws EBADF once the object is closed: its libbpf pointers are gone. */
  ensureOpen(what: string): void {
    if (this.#closed) throw new BpfError(what, E.EBADF, `object ${this.path} is closed`);
  }

  #findMap(name: string): Ptr {
    this.ensureOpen(`finding map ${name}`);
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

/** A program inside a BpfObject; fd and id are valid once the object is loaded and until it is closed. */
export class BpfProgram {
  #owner: BpfObject;
  #ptr: Ptr;
  #id: number | undefined;

  /** @internal use BpfObject.program() */
  constructor(owner: BpfObject, ptr: Ptr, readonly name: string) {
    this.#owner = owner;
    this.#ptr = ptr;
  }

  /** The kernel program fd (throws if the object is not loaded or already closed). */
  get fd(): number {
    this.#owner.ensureOpen(`program ${this.name}`);
    return check(libbpf().bpf_program__fd(this.#ptr), `program ${this.name}`, 'not loaded (call load() first)');
  }

  /** The kernel's program id (bpf_prog_info.id), as bpftool and link info report it. */
  get id(): number {
    this.#id ??= progInfo(this.fd, `program ${this.name}`).id;
    return this.#id;
  }
}

/** id and (15-character) name of the program behind fd. */
export function progInfo(fd: number, op: string): { id: number; name: string } {
  const info = objInfo(fd, PROG_INFO_SIZE, op);
  return { id: info.readUInt32LE(4), name: infoName(info, 64) };
}
