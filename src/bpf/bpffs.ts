// bpffs: where pins live. We mount it ourselves when nothing is mounted at the root (as bpftool does)
// and check with statfs that every pin directory really is on bpffs, because a plain directory of
// sysfs (what /sys/fs/bpf is before the mount) makes fs.mkdirSync(..., { recursive: true }) spin
// forever on ENOENT.
import fs from 'node:fs';
import path from 'node:path';
import { BpfError, checkLibc, E, fsError, libc } from './native.js';

export const BPF_FS_MAGIC = 0xcafe4a11;
export const DEFAULT_BPFFS = '/sys/fs/bpf';
const STATFS_SIZE = 120; // struct statfs on x86_64; f_type (a long) comes first

/** True when path exists and lies on a bpf filesystem (statfs f_type == BPF_FS_MAGIC). */
export function isBpffs(p: string): boolean {
  const buf = Buffer.alloc(STATFS_SIZE);
  if (libc().statfs(p, buf) !== 0) return false;
  return buf.readBigInt64LE(0) === BigInt(BPF_FS_MAGIC);
}

// Inode numbers the initial mount namespace is known by when /proc/1 is out of reach (ptrace-restricted):
// fixed at 0xEFFFFFF8 since kernel 6.17 (PROC_MNT_INIT_INO), and the first one allocated (0xF0000000) before.
const INITIAL_MNT_NS_INODES = new Set([0xeffffff8, 0xf0000000]);

/** False when this process has its own mount namespace (e.g. under `ip netns exec`, `unshare -m`). */
export function inInitialMountNamespace(): boolean {
  const self = fs.readlinkSync('/proc/self/ns/mnt'); // "mnt:[4026531832]"
  try {
    return self === fs.readlinkSync('/proc/1/ns/mnt');
  } catch {
    return INITIAL_MNT_NS_INODES.has(Number(/\[(\d+)\]/.exec(self)?.[1]));
  }
}

export interface EnsureBpffsOptions {
  /** Mount even in a private mount namespace, where the mount (and every pin) vanishes with the namespace. */
  allowPrivateMount?: boolean;
}

/** Make sure root is a bpffs mount, mounting one there if not; returns whether we mounted it. */
export function ensureBpffs(root = DEFAULT_BPFFS, opts: EnsureBpffsOptions = {}): { mounted: boolean } {
  if (isBpffs(root)) return { mounted: false };
  const op = `cannot mount bpffs at ${root}`;
  if (!opts.allowPrivateMount && !inInitialMountNamespace()) {
    throw new BpfError(op, E.EPERM,
      'this process runs in a private mount namespace (as under `ip netns exec`), where pins would vanish when it exits; ' +
      'enter the network namespace with `nsenter --net=/run/netns/NAME` instead, or mount bpffs there first');
  }
  if (!fs.existsSync(root)) {
    try {
      fs.mkdirSync(root, { mode: 0o700 }); // one level only: a recursive mkdir is what spins on sysfs
    } catch (err) {
      throw new BpfError(op, fsError(op, err).errno);
    }
  }
  checkLibc(libc().mount('bpf', root, 'bpf', 0, 'mode=0700'), op);
  if (!isBpffs(root)) throw new BpfError(op, E.EIO, 'mount succeeded but statfs does not see bpffs there');
  return { mounted: true };
}

function notOnBpffs(op: string, p: string): BpfError {
  return new BpfError(op, E.ENOTSUP, `${p} is not on bpffs (mount one with ensureBpffs first)`);
}

/** Create dir (and missing parents) one level at a time, refusing unless every level is on bpffs; returns what it created. */
export function mkdirPins(dir: string): string[] {
  // Another daemon's removePins may take an empty parent away (spak/, netns-N/) between two of
  // our mkdirs: start again from what exists, a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      return mkdirPinsOnce(dir);
    } catch (err) {
      if (attempt >= 5 || !(err instanceof ParentGone)) throw err instanceof ParentGone ? err.cause : err;
    }
  }
}

class ParentGone extends Error {}

function mkdirPinsOnce(dir: string): string[] {
  const op = `creating pin directory ${dir}`;
  const target = path.resolve(dir);
  const missing: string[] = [];
  let existing = target;
  while (!fs.existsSync(existing)) {
    missing.unshift(existing);
    const parent = path.dirname(existing);
    if (parent === existing) break;
    existing = parent;
  }
  if (!isBpffs(existing)) throw notOnBpffs(op, existing);
  if (!fs.statSync(existing).isDirectory()) throw new BpfError(op, E.ENOTDIR, `${existing} is not a directory`);
  for (const level of missing) {
    try {
      fs.mkdirSync(level, { mode: 0o700 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new ParentGone(op, { cause: fsError(op, err) });
      if (code !== 'EEXIST') throw fsError(op, err);
    }
    if (!isBpffs(level)) throw notOnBpffs(op, level);
  }
  return missing;
}

/**
 * Unlink every pin in dir (and its subdirectories), remove dir, then its parents while they are empty, up to
 * and including <root>/spak (never root itself). Returns every path removed; [] when dir does not exist.
 */
export function removePins(dir: string, root = DEFAULT_BPFFS): string[] {
  const op = `removing pins in ${dir}`;
  const target = path.resolve(dir);
  if (!fs.existsSync(target)) return [];
  if (!isBpffs(target)) throw notOnBpffs(op, target); // never unlink files on another filesystem
  const removed: string[] = [];
  const removeTree = (d: string): void => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      try {
        if (entry.isDirectory()) removeTree(p);
        else fs.unlinkSync(p);
      } catch (err) {
        throw fsError(`${op}: ${p}`, err);
      }
      if (!entry.isDirectory()) removed.push(p);
    }
    fs.rmdirSync(d);
    removed.push(d);
  };
  removeTree(target);

  const stop = path.join(path.resolve(root), 'spak');
  for (let p = path.dirname(target); p === stop || p.startsWith(stop + path.sep); p = path.dirname(p)) {
    try {
      fs.rmdirSync(p);
    } catch {
      break; // not empty (another interface's pins), or already gone
    }
    removed.push(p);
  }
  return removed;
}
