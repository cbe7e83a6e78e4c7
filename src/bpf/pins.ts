// Where a server's pinned state lives: one directory per interface under <bpffs>/spak/.
// Interface names repeat across network namespaces (every container has an eth0), so
// outside the initial namespace the directory sits below netns-<inode of that namespace>.
import { rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { BpfLink } from './libbpf.js';

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
const INIT_NET_INODE = 0xeffffff9;

/**
 * "" in the initial network namespace, "netns-<inode>" in any other. Where /proc/1/ns is
 * hidden (some sandboxes refuse it even to root), kthreadd (pid 2) lives in the initial
 * namespaces too.
 */
export function netnsScope(): string {
  const own = namespaceInode('/proc/self/ns/net');
  const init = namespaceInode('/proc/1/ns/net') ?? namespaceInode('/proc/2/ns/net') ?? INIT_NET_INODE;
  return own === null || own === init ? '' : `netns-${own}`;
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
  if (!/^[\w.@:-]{1,15}$/.test(ifname)) throw new Error(`bad interface name "${ifname}"`);
  const scope = netnsScope();
  const dir = path.join(bpffs, 'spak', scope, ifname);
  const lockName = `${scope ? `${scope}_` : ''}${ifname}.${role}.lock`;
  return { dir, link: path.join(dir, 'link'), lock: path.join(LOCK_DIR, lockName), map: (name) => path.join(dir, name) };
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
