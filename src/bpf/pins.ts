// Where a server's pinned state lives: one directory per interface under <bpffs>/spak/.
// Interface names repeat across network namespaces (every container has an eth0), so
// outside the initial namespace the directory sits below netns-<inode of that namespace>
// (scopeOf(): decided by the caller's own namespace inode alone).
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { BpfLink } from './libbpf.js';
import { mkdirPins } from './bpffs.js';

export const DEFAULT_BPFFS = '/sys/fs/bpf';
export const LOCK_DIR = '/run/spak';

/** Inode of a namespace link (/proc/<pid>/ns/<kind>), or null when it cannot be read. */
export function namespaceInode(link: string): number | null {
  try {
    return statSync(link).ino;
  } catch {
    return null;
  }
}

/** Current kernels give the initial network namespace this fixed inode (older ones do not). */
export const INIT_NET_INODE = 0xeffffff9;

/**
 * The one rule, the same from every context (root shell, the unit's daemon without
 * CAP_SYS_PTRACE, a container whose /proc/1 is its own init): it depends only on the inode of
 * the caller's own network namespace, which every process can read. "" for the initial
 * namespace where the kernel gives it its fixed inode, "netns-<inode>" for any other namespace
 * (and, on kernels without the fixed inode, for the initial one too). Earlier versions compared
 * with /proc/1/ns/net, which only some callers may read; see legacyPinPaths().
 */
export function scopeOf(ownNetnsInode: number | null): string {
  return ownNetnsInode === null || ownNetnsInode === INIT_NET_INODE ? '' : `netns-${ownNetnsInode}`;
}

export function netnsScope(): string {
  return scopeOf(namespaceInode('/proc/self/ns/net'));
}

export interface PinPaths {
  /** The interface's directory: <bpffs>/spak[/netns-N]/<ifname>. */
  dir: string;
  /** The pinned XDP bpf_link. */
  link: string;
  /** Held (flock) while a daemon serves this interface. */
  lock: string;
  map(name: string): string;
}

export function pinPaths(ifname: string, role: 'server' | 'client', bpffs = DEFAULT_BPFFS): PinPaths {
  return pathsIn(netnsScope(), ifname, role, bpffs);
}

function pathsIn(scope: string, ifname: string, role: 'server' | 'client', bpffs: string): PinPaths {
  if (!/^[\w.@:-]{1,15}$/.test(ifname)) throw new Error(`bad interface name "${ifname}"`);
  const dir = path.join(bpffs, 'spak', scope, ifname);
  const lockName = `${scope ? `${scope}_` : ''}${ifname}.${role}.lock`;
  return { dir, link: path.join(dir, 'link'), lock: path.join(LOCK_DIR, lockName), map: (name) => path.join(dir, name) };
}

/**
 * Where an earlier version may have pinned this interface's state: directly under <bpffs>/spak/
 * (it chose that where /proc/1/ns/net was readable and in the caller's namespace, e.g. a root
 * shell in a container, or the initial namespace of a kernel without the fixed inode). Null when
 * that is where pinPaths() points anyway.
 */
export function legacyPinPaths(ifname: string, role: 'server' | 'client', bpffs = DEFAULT_BPFFS): PinPaths | null {
  return netnsScope() === '' ? null : pathsIn('', ifname, role, bpffs);
}

/** For readers (status, stats, stop, doctor): pinPaths(), or the legacy place while only it holds pins. */
export function currentPinPaths(ifname: string, role: 'server' | 'client', bpffs = DEFAULT_BPFFS): PinPaths {
  const paths = pinPaths(ifname, role, bpffs);
  const legacy = legacyPinPaths(ifname, role, bpffs);
  return legacy && !existsSync(paths.dir) && existsSync(legacy.link) ? legacy : paths;
}

/**
 * An upgrade stays gapless: a server starting where pinPaths() holds nothing, while the legacy
 * place holds a link attached to this very interface (ifindex), moves the legacy directory there
 * (one rename on bpffs: the link stays attached and in force) and adopts it as usual. Returns
 * what it did, or null. `heldBy` tells whether an older daemon still serves it (then nothing moves).
 */
export function adoptLegacyPins(ifname: string, ifindex: number, bpffs: string, heldBy: (lock: string) => number | null): string | null {
  const paths = pinPaths(ifname, 'server', bpffs);
  const legacy = legacyPinPaths(ifname, 'server', bpffs);
  if (!legacy || existsSync(paths.dir)) return null;
  const link = openPinnedLink(legacy.link);
  if (!link) return null;
  let ours: boolean;
  try {
    ours = link.info().ifindex === ifindex;
  } finally {
    link.close();
  }
  if (!ours) return null;
  const pid = heldBy(legacy.lock);
  if (pid !== null) throw new Error(`a spak server (an earlier version, pid ${pid}) still serves ${ifname} from ${legacy.dir}`);
  mkdirPins(path.dirname(paths.dir));
  renameSync(legacy.dir, paths.dir);
  return `moved the pins of an earlier version from ${legacy.dir} to ${paths.dir}`;
}

/** The pinned link, or null when there is none (or it cannot be opened). */
export function openPinnedLink(pin: string): BpfLink | null {
  try {
    return BpfLink.openPinned(pin);
  } catch {
    return null;
  }
}

/** Where a mode switch pins the new link before it renames it over the old one's pin (bpffs refuses dotted names). */
export function stagedLinkPin(paths: PinPaths): string {
  return `${paths.link}-new`;
}

/** Unlinks a pin: a pin is a file on bpffs, and unlinking it drops that reference. */
export function removePin(pin: string): void {
  rmSync(pin, { force: true });
}
