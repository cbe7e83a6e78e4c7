// Cleanup of labs: every lab is registered, and process 'exit', SIGINT, SIGTERM and SIGHUP remove
// them all; what spak pinned for a lab's namespaces goes with them; labs left by a SIGKILLed run are
// found by their owner's pid.
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { runSync } from './process.js';

/** What the registry needs of a lab. */
interface Destroyable {
  destroySync(): void;
}

const labs = new Set<Destroyable>();
let handlersInstalled = false;

/** Registers a lab for removal at exit or on a signal. */
export function registerLab(lab: Destroyable): void {
  labs.add(lab);
  installHandlers();
}

/** Forgets a lab (it has removed itself). */
export function unregisterLab(lab: Destroyable): void {
  labs.delete(lab);
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => destroyAllLabsSync());
  const onSignal = (sig: NodeJS.Signals, code: number) => {
    if (labs.size > 0) process.stderr.write(`spak lab: ${sig}: removing ${labs.size} lab(s)\n`);
    destroyAllLabsSync();
    process.exit(code);
  };
  process.once('SIGINT', () => onSignal('SIGINT', 130));
  process.once('SIGTERM', () => onSignal('SIGTERM', 143));
  process.once('SIGHUP', () => onSignal('SIGHUP', 129));
}

/** Where spak pins its state for a network namespace other than the initial one (see the README). */
export const SPAK_BPFFS_DIR = '/sys/fs/bpf/spak';
/** spak's lock files (one per interface and role). */
export const SPAK_LOCK_DIR = '/run/spak';

/** The inode of a named namespace (/run/netns/<ns>), which names spak's pin directory; null if gone. */
export function netnsInode(ns: string): number | null {
  try {
    return statSync(`/run/netns/${ns}`).ino;
  } catch {
    return null;
  }
}

/**
 * Removes what spak pinned for the namespace with this inode: /sys/fs/bpf/spak/netns-<inode>/ (every
 * pin under it, then the directories; bpffs pins go with unlink) and its lock files in /run/spak.
 * Best effort, never throws: it runs from exit handlers.
 */
export function removeSpakPins(inode: number): void {
  const dir = path.join(SPAK_BPFFS_DIR, `netns-${inode}`);
  try {
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  } catch {
    // best effort
  }
  try {
    // Lock names are the pin path relative to bpffs with '/' turned into '_': ..._netns-<inode>_eth0.server.lock
    const mine = new RegExp(`(^|_)netns-${inode}(_|\\.|$)`);
    for (const name of readdirSync(SPAK_LOCK_DIR)) if (mine.test(name)) rmSync(path.join(SPAK_LOCK_DIR, name), { force: true });
  } catch {
    // no lock directory
  }
}

/** Tears down every lab of this process, synchronously (usable from an 'exit' handler). */
export function destroyAllLabsSync(): void {
  for (const lab of [...labs]) lab.destroySync();
}

/** Removes namespaces named spak-<pid>-... whose pid no longer runs (left by a SIGKILLed run). */
export function removeStaleLabs(): string[] {
  const removed: string[] = [];
  const names = runSync(['ip', 'netns', 'list'])
    .stdout.split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
  for (const ns of names) {
    const m = /^spak-(\d+)-/.exec(ns);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue; // its owner still runs
    } catch {
      // owner gone
    }
    for (const p of runSync(['ip', 'netns', 'pids', ns]).stdout.split(/\s+/).filter((s) => /^\d+$/.test(s))) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        // gone
      }
    }
    const inode = netnsInode(ns);
    runSync(['ip', 'netns', 'del', ns]);
    if (inode !== null) removeSpakPins(inode);
    removed.push(ns);
  }
  return removed;
}
