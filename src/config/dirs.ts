// Every directory spak makes (the knock state, the lock, log and profile directories) is made here:
// one level at a time from the root, with a bounded number of steps and one line when it cannot be.
// Node's own recursive mkdir is not used: on a filesystem that answers mkdir with ENOENT although
// the parent exists (procfs, sysfs), it retries the parent and the child forever at 100 % CPU.
import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';

/**
 * Makes `dir` and its missing parents (each new one with `mode`), step by step. Throws
 * `cannot create WHAT DIR: REASON` when a level exists but is no directory, or cannot be made
 * (the filesystem refuses, no permission, ...). Returns the directories it made, outermost first.
 * `parents: false`: only `dir` itself may be made; a missing parent is an error.
 */
export function makeDirectory(dir: string, what: string, mode = 0o700, o: { parents?: boolean } = {}): string[] {
  const target = path.resolve(dir);
  // The error carries the errno code that best says why (ENOENT, ENOTDIR, EACCES, ...).
  const fail = (reason: string, code = 'EIO'): never => {
    throw Object.assign(new Error(`cannot create ${what} ${target}: ${reason}`), { code });
  };
  const levels: string[] = [];
  for (let p = target; ; p = path.dirname(p)) {
    levels.unshift(p);
    if (path.dirname(p) === p) break;
  }
  const made: string[] = [];
  for (const level of levels) {
    const kind = kindOf(level, fail);
    if (kind === 'dir') continue;
    if (kind === 'other') fail(`${level} exists and is not a directory`, 'ENOTDIR');
    if (o.parents === false && level !== target) fail(`${level} does not exist`, 'ENOENT');
    try {
      mkdirSync(level, { mode });
      made.push(level);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // Another process made it between our stat and mkdir: fine if it is a directory now.
      if (e.code === 'EEXIST' && kindOf(level, fail) === 'dir') continue;
      if (e.code === 'ENOENT') fail(`the filesystem of ${path.dirname(level)} does not allow making directories in it (ENOENT)`, 'ENOENT');
      fail(`${level}: ${e.code ?? e.message}${e.code === 'EACCES' || e.code === 'EPERM' ? ' (permission denied)' : ''}`, e.code);
    }
    if (kindOf(level, fail) !== 'dir') fail(`${level} was made but is not there as a directory`);
  }
  return made;
}

function kindOf(p: string, fail: (reason: string, code?: string) => never): 'dir' | 'other' | 'missing' {
  try {
    return statSync(p).isDirectory() ? 'dir' : 'other';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'missing';
    // ENOTDIR (a file on the way), EACCES: mkdir cannot help; say what stat said.
    return fail(`${p}: ${code ?? (err as Error).message}`, code);
  }
}
