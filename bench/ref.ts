// A previous build to measure side by side: the ref checked out into a temporary git worktree,
// built there with its own Makefile (node_modules linked from this checkout), removed again.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface RefBuild {
  ref: string;
  /** Short commit id and subject, for the report. */
  commit: string;
  subject: string;
  /** Where it is checked out and built; null when it could not be built. */
  root: string | null;
  /** Why it could not be built (root is null then). */
  error: string | null;
}

function git(repo: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync('git', ['-C', repo, ...args], { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

function lastLines(text: string, n = 8): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

const worktrees = new Set<string>();
let exitHookInstalled = false;

/** Removes a worktree made by buildRef (also its directory); safe to call twice. */
export function removeRef(repo: string, b: RefBuild | string | null): void {
  const dir = typeof b === 'string' ? b : b?.root;
  if (!dir || !worktrees.has(dir)) return;
  worktrees.delete(dir);
  git(repo, ['worktree', 'remove', '--force', dir]);
  rmSync(dir, { recursive: true, force: true });
  git(repo, ['worktree', 'prune']);
}

/**
 * Checks `ref` out into a temporary worktree and builds it (`make bpf ts`, its deps stamp touched
 * so nothing is installed). Never throws: a ref that cannot be built comes back with error set.
 * Whatever happens, the worktree goes when the process exits (removeRef removes it earlier).
 */
export function buildRef(repo: string, ref: string): RefBuild {
  const rev = git(repo, ['rev-parse', '--verify', '--quiet', `${ref}^{commit}`]);
  if (!rev.ok) return { ref, commit: '', subject: '', root: null, error: `${ref} is not a commit here` };
  const sha = rev.out.split('\n')[0]!;
  const commit = sha.slice(0, 7);
  const subject = git(repo, ['log', '-1', '--format=%s', sha]).out;
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const dir of [...worktrees]) removeRef(repo, dir);
    });
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spak-bench-ref-'));
  const add = git(repo, ['worktree', 'add', '--detach', dir, sha]);
  if (!add.ok) {
    rmSync(dir, { recursive: true, force: true });
    return { ref, commit, subject, root: null, error: `git worktree add failed: ${lastLines(add.out, 3)}` };
  }
  worktrees.add(dir);
  const fail = (error: string): RefBuild => {
    removeRef(repo, dir);
    return { ref, commit, subject, root: null, error };
  };
  if (!existsSync(path.join(dir, 'Makefile'))) return fail('it has no Makefile');
  symlinkSync(path.join(repo, 'node_modules'), path.join(dir, 'node_modules'));
  mkdirSync(path.join(dir, 'build'), { recursive: true });
  // Newer than its package.json/package-lock.json: its `deps` target does nothing.
  writeFileSync(path.join(dir, 'build', '.deps'), '');
  const env = { ...process.env };
  delete env.SPAK_BPF_DIR;
  const make = spawnSync('make', ['bpf', 'ts'], { cwd: dir, env, encoding: 'utf8', timeout: 600_000 });
  if (make.status !== 0) return fail(`make bpf ts failed: ${lastLines(`${make.stdout ?? ''}${make.stderr ?? ''}`, 6)}`);
  for (const need of ['dist/bench/xdp.js', 'build/server.bpf.o', 'build/baseline.bpf.o']) {
    if (!existsSync(path.join(dir, need))) return fail(`its build has no ${need}`);
  }
  return { ref, commit, subject, root: dir, error: null };
}
