// One daemon per interface: an flock(2) on a file under /run/spak. The kernel drops the lock when the
// holder dies, even by SIGKILL, so a stale file never blocks a new daemon; the pid written into the
// file (and /proc/locks) tells who holds it.
import fs from 'node:fs';
import path from 'node:path';
import { BpfError, E, fsError, libc } from './native.js';
import { makeDirectory } from '../config/dirs.js';
import koffi from 'koffi';

const LOCK_EX = 2;
const LOCK_NB = 4;

/** The outcome of tryLock: either we hold the lock, or someone else (pid if known) does. */
export type LockResult =
  | { acquired: true; path: string; release(): void }
  | { acquired: false; path: string; heldBy: number | null };

/** glibc's major/minor split of a dev_t, to match /proc/locks' "MAJ:MIN:INODE" (hex major/minor). */
function devId(dev: number, ino: number): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino}`;
}

/** Pid holding an flock on the file (from /proc/locks, without touching the lock), or null if none. */
function flockHolder(st: fs.Stats): number | null {
  const id = devId(st.dev, st.ino);
  for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
    // e.g. "12: FLOCK  ADVISORY  WRITE 4242 00:19:1234 0 EOF"; "->" lines are waiters, not holders
    const f = line.trim().split(/\s+/);
    if (f[1] === 'FLOCK' && f[5] === id) return Number(f[4]);
  }
  return null;
}

/** Take an exclusive flock on path (creating it and its parent directories), without blocking. */
export function tryLock(file: string): LockResult {
  const op = `locking ${file}`;
  let fd: number;
  makeDirectory(path.dirname(file), 'lock directory', 0o755);
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  } catch (err) {
    throw fsError(op, err);
  }
  if (libc().flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    const errno = koffi.errno();
    const st = fs.fstatSync(fd);
    fs.closeSync(fd);
    if (errno !== E.EWOULDBLOCK) throw new BpfError(op, errno || E.EIO);
    return { acquired: false, path: file, heldBy: flockHolder(st) ?? pidInFile(file) };
  }
  fs.ftruncateSync(fd, 0);
  fs.writeSync(fd, `${process.pid}\n`, 0);
  let held = true;
  return {
    acquired: true, path: file,
    release() {
      if (!held) return;
      held = false;
      // Empty the file first so a reader never takes our pid for a live holder; closing drops the flock.
      try { fs.ftruncateSync(fd, 0); } catch { /* closing still releases */ }
      fs.closeSync(fd);
    },
  };
}

function pidInFile(file: string): number | null {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Pid of the live process holding the lock on path, or null when nobody holds it (or there is no file). */
export function readLockHolder(file: string): number | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return null;
  }
  const pid = flockHolder(st);
  if (pid === null) return null;
  return pid > 0 ? pid : pidInFile(file); // /proc/locks shows -1 or 0 for a holder in another pid namespace
}
