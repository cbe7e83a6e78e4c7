// BPF maps: element access, batch access, pinning. A map comes either from a BpfObject (its fd is
// the object's) or from an fd we own (a bpffs pin or a map id).
import fs from 'node:fs';
import {
  BpfError, bpfFdKind, check, closeFd, E, fsError, infoName, libbpf, numPossibleCpus, objInfo, sizes, type Ptr,
} from './native.js';

const PERCPU_MAP_TYPES = new Set([5, 6, 10, 21]); // PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE
const UPDATE_FLAGS = { any: 0, noexist: 1, exist: 2 } as const;
const MAP_INFO_SIZE = 88; // struct bpf_map_info of libbpf 1.1's headers
const DEFAULT_BATCH = 8192;

/** Update semantics: 'any' insert or overwrite, 'noexist' create only, 'exist' overwrite only. */
export type UpdateFlag = keyof typeof UPDATE_FLAGS;

/** A little-endian u32 map key (or value): array indexes, destination indexes, port words. */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

/** A map's definition: what must match for a pinned map to stand in for an object's map. */
export interface MapShape { name: string; type: number; keySize: number; valueSize: number; maxEntries: number; flags: number }

/** Why `actual` cannot replace a map defined as `expected` (null when compatible); names are not compared. */
export function mapShapeMismatch(expected: MapShape, actual: MapShape): string | null {
  const fields = [['type', 'type'], ['keySize', 'key size'], ['valueSize', 'value size'], ['maxEntries', 'max entries'], ['flags', 'flags']] as const;
  const diffs = fields.filter(([f]) => expected[f] !== actual[f]).map(([f, words]) => `${words} ${actual[f]} (expected ${expected[f]})`);
  return diffs.length ? diffs.join(', ') : null;
}

/** What a map needs from the object that owns it (kept structural so map.ts does not import object.ts). */
interface MapOwner { readonly path: string; ensureOpen(what: string): void }

type MapSource =
  | { kind: 'object'; owner: MapOwner; ptr: Ptr; name: string }
  | { kind: 'fd'; fd: number; shape: MapShape; id: number; closed: boolean };

const roundUp8 = (n: number) => Math.ceil(n / 8) * 8;
const fullValueSize = (shape: MapShape) =>
  PERCPU_MAP_TYPES.has(shape.type) ? roundUp8(shape.valueSize) * numPossibleCpus() : shape.valueSize;

/** One chunk of lookupChunks(): `count` keys and values, packed back to back. */
export interface MapChunk { count: number; keys: Buffer; values: Buffer }

/** A BPF map, either from a BpfObject (fd valid after load) or owning its own fd (openPinned, fromId, fromFd). */
export class BpfMap {
  #src: MapSource;

  private constructor(src: MapSource) {
    this.#src = src;
  }

  /** @internal use BpfObject.map() */
  static fromObject(owner: MapOwner, ptr: Ptr): BpfMap {
    return new BpfMap({ kind: 'object', owner, ptr, name: libbpf().bpf_map__name(ptr) });
  }

  /** Open a map pinned in bpffs (bpf_obj_get) and learn its shape from the kernel; close() releases the fd. */
  static openPinned(path: string): BpfMap {
    return BpfMap.fromFd(check(libbpf().bpf_obj_get(path), `opening pinned map ${path}`), `opening pinned map ${path}`);
  }

  /** Open a map by its kernel id (bpf_map_get_fd_by_id); close() releases the fd. */
  static fromId(id: number): BpfMap {
    const op = `opening map id ${id}`;
    return BpfMap.fromFd(check(libbpf().bpf_map_get_fd_by_id(id), op), op);
  }

  /** Take ownership of a map fd (closed by close(), or here if it is not a map). */
  static fromFd(fd: number, op = `using map fd ${fd}`): BpfMap {
    try {
      // bpf_obj_get_info_by_fd would happily describe a program too, so make sure it is a map first.
      if (bpfFdKind(fd) !== 'map') throw new BpfError(op, E.EINVAL, 'not a BPF map');
      const info = objInfo(fd, MAP_INFO_SIZE, op);
      return new BpfMap({
        kind: 'fd', fd, closed: false, id: info.readUInt32LE(4),
        shape: {
          name: infoName(info, 24), type: info.readUInt32LE(0), keySize: info.readUInt32LE(8),
          valueSize: info.readUInt32LE(12), maxEntries: info.readUInt32LE(16), flags: info.readUInt32LE(20),
        },
      });
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  /** The definition (read through libbpf each time for object maps: max_entries may change until load). */
  get shape(): MapShape {
    const src = this.#src;
    if (src.kind === 'fd') return { ...src.shape };
    src.owner.ensureOpen(`map ${src.name}`); // the bpf_map pointer dies with the object
    const lib = libbpf();
    return {
      name: src.name, type: lib.bpf_map__type(src.ptr), keySize: lib.bpf_map__key_size(src.ptr),
      valueSize: lib.bpf_map__value_size(src.ptr), maxEntries: lib.bpf_map__max_entries(src.ptr),
      flags: lib.bpf_map__map_flags(src.ptr),
    };
  }

  /** Map name as the kernel/libbpf knows it (at most 15 characters for pinned maps). */
  get name(): string { return this.#src.kind === 'object' ? this.#src.name : this.#src.shape.name; }
  /** Map type (enum bpf_map_type). */
  get type(): number { return this.shape.type; }
  /** Key size in bytes. */
  get keySize(): number { return this.shape.keySize; }
  /** Value size in bytes for one CPU. */
  get valueSize(): number { return this.shape.valueSize; }
  /** Capacity in entries. */
  get maxEntries(): number { return this.shape.maxEntries; }
  /** map_flags (BPF_F_NO_PREALLOC, ...). */
  get flags(): number { return this.shape.flags; }
  /** True for per-CPU map types, whose values hold one slot per possible CPU. */
  get isPerCpu(): boolean { return PERCPU_MAP_TYPES.has(this.type); }
  /** Bytes a lookup/update value occupies: valueSize, or roundup(valueSize, 8) * possible CPUs for per-CPU maps. */
  get fullValueSize(): number { return fullValueSize(this.shape); }

  /** Kernel map id (bpf_map_info.id). */
  get id(): number {
    const src = this.#src;
    return src.kind === 'fd' ? src.id : objInfo(this.fd, MAP_INFO_SIZE, `map ${this.name}`).readUInt32LE(4);
  }

  /** Kernel map fd (throws if the object is not loaded, or the map/object is closed). */
  get fd(): number {
    const src = this.#src;
    if (src.kind === 'fd') {
      if (src.closed) throw new BpfError(`map ${src.shape.name}`, E.EBADF, 'map is closed');
      return src.fd;
    }
    src.owner.ensureOpen(`map ${src.name}`);
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
    const { valueSize, type } = this.shape;
    if (!PERCPU_MAP_TYPES.has(type)) throw new BpfError(`looking up per-CPU values in map ${this.name}`, E.EINVAL, 'not a per-CPU map');
    const all = this.lookup(key);
    if (!all) return [];
    const stride = roundUp8(valueSize);
    return Array.from({ length: numPossibleCpus() }, (_, cpu) => all.subarray(cpu * stride, cpu * stride + valueSize));
  }

  /** Insert or overwrite (flags: 'any' default, 'noexist' create only, 'exist' overwrite only). */
  update(key: Buffer, value: Buffer, flags: UpdateFlag = 'any'): void {
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
    const { keySize, maxEntries } = this.shape;
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

  /**
   * Every entry, one bpf_map_lookup_batch syscall per chunk of up to `chunk` entries. A hash map hands out
   * whole buckets, so ENOSPC (a bucket larger than the chunk) grows the chunk and retries. Entries added or
   * removed meanwhile may or may not be seen, as with any walk of a live map.
   */
  *lookupChunks(chunk = DEFAULT_BATCH): Generator<MapChunk> {
    const fd = this.fd;
    const shape = this.shape;
    const op = `reading map ${this.name} in batches`;
    const valueSize = fullValueSize(shape);
    const opts = { sz: sizes().mapBatchOpts, elem_flags: 0, flags: 0 };
    // The batch cursor is opaque: a bucket index for hashes, a key for arrays. Key-sized (at least 8) fits both.
    const tokenSize = Math.max(8, shape.keySize);
    let inBatch: Buffer | null = null;
    for (;;) {
      const outBatch = Buffer.alloc(tokenSize);
      const keys = Buffer.alloc(chunk * shape.keySize);
      const values = Buffer.alloc(chunk * valueSize);
      const count = [chunk];
      const ret = libbpf().bpf_map_lookup_batch(fd, inBatch, outBatch, keys, values, count, opts);
      if (ret === -E.ENOSPC && count[0] === 0 && chunk <= shape.maxEntries) {
        chunk *= 2;
        continue;
      }
      if (ret < 0 && ret !== -E.ENOENT) check(ret, op);
      const n = count[0]!;
      if (n > 0) yield { count: n, keys: keys.subarray(0, n * shape.keySize), values: values.subarray(0, n * valueSize) };
      if (ret === -E.ENOENT) return; // ENOENT: the walk reached the end (count says what came with it)
      inBatch = outBatch;
    }
  }

  /** Every entry as separate key and value buffers (views into the chunk buffers), via lookupChunks(). */
  lookupBatch(chunk = DEFAULT_BATCH): { keys: Buffer[]; values: Buffer[] } {
    const { keySize } = this.shape;
    const valueSize = this.fullValueSize;
    const keys: Buffer[] = [];
    const values: Buffer[] = [];
    for (const c of this.lookupChunks(chunk)) {
      for (let i = 0; i < c.count; i++) {
        keys.push(c.keys.subarray(i * keySize, (i + 1) * keySize));
        values.push(c.values.subarray(i * valueSize, (i + 1) * valueSize));
      }
    }
    return { keys, values };
  }

  /** Insert or overwrite many entries (flags: only 'any'), one bpf_map_update_batch syscall per chunk; returns the count written. */
  updateBatch(keys: Buffer[], values: Buffer[], flags: UpdateFlag = 'any', chunk = DEFAULT_BATCH): number {
    const fd = this.fd;
    const shape = this.shape;
    const valueSize = fullValueSize(shape);
    if (keys.length !== values.length) throw new BpfError(`updating map ${this.name} in batches`, E.EINVAL, `${keys.length} keys but ${values.length} values`);
    keys.forEach((k) => this.#checkSize('key', k, shape.keySize));
    values.forEach((v) => this.#checkSize('value', v, valueSize));
    // The kernel takes no NOEXIST/EXIST for a batch (elem_flags may only be BPF_F_LOCK).
    if (flags !== 'any') throw new BpfError(`updating map ${this.name} in batches`, E.EINVAL, `flag '${flags}' is not supported for batch updates (only 'any')`);
    const opts = { sz: sizes().mapBatchOpts, elem_flags: 0, flags: 0 };
    let done = 0;
    while (done < keys.length) {
      const end = Math.min(done + chunk, keys.length);
      const count = [end - done];
      const ret = libbpf().bpf_map_update_batch(fd, Buffer.concat(keys.slice(done, end)), Buffer.concat(values.slice(done, end)), count, opts);
      done += count[0]!; // on failure, count says how many went in before the failing element
      if (ret < 0) check(ret, `updating map ${this.name} in batches (${done} of ${keys.length} written)`);
    }
    return done;
  }

  /**
   * Delete many keys, one bpf_map_delete_batch syscall per chunk; returns how many were deleted. A key that is
   * not there (the kernel stops the batch with ENOENT at it) is skipped and the rest of the batch goes on.
   */
  deleteBatch(keys: Buffer[], chunk = DEFAULT_BATCH): number {
    const fd = this.fd;
    const { keySize } = this.shape;
    keys.forEach((k) => this.#checkSize('key', k, keySize));
    const opts = { sz: sizes().mapBatchOpts, elem_flags: 0, flags: 0 };
    let pos = 0;
    let deleted = 0;
    while (pos < keys.length) {
      const end = Math.min(pos + chunk, keys.length);
      const count = [end - pos];
      const ret = libbpf().bpf_map_delete_batch(fd, Buffer.concat(keys.slice(pos, end)), count, opts);
      deleted += count[0]!;
      pos += count[0]!;
      if (ret === -E.ENOENT) pos++; // the missing key
      else if (ret < 0) check(ret, `deleting from map ${this.name} in batches`);
    }
    return deleted;
  }

  /**
   * Pin the map at a bpffs path (bpf_obj_pin). Not bpf_map__pin: libbpf remembers the first pin path of an
   * object's map and refuses any other one afterwards, even after unpinning.
   */
  pin(path: string): void {
    check(libbpf().bpf_obj_pin(this.fd, path), `pinning map ${this.name} at ${path}`);
  }

  /** Remove a pin (unlink); the map lives on while a program, fd or other pin holds it. */
  unpin(path: string): void {
    try {
      fs.unlinkSync(path);
    } catch (err) {
      throw fsError(`unpinning map ${this.name} from ${path}`, err);
    }
  }

  /** Release an fd we own (openPinned, fromId, fromFd); a no-op for object maps (the object owns them); idempotent. */
  close(): void {
    if (this.#src.kind === 'fd' && !this.#src.closed) {
      this.#src.closed = true;
      closeFd(this.#src.fd);
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
    const shape = this.shape;
    this.#checkSize('key', key, shape.keySize);
    return { fd, shape };
  }
}
