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
  /** Built, but with complaints worth a line in the report. */
  warning?: string | null;
}

function git(repo: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync('git', ['-C', repo, ...args], { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

function lastLines(text: string, n = 8): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

/** The lines of a build's output that say what went wrong (else its last lines), on one line. */
function errorLines(text: string): string {
  const errs = text.split('\n').filter((l) => /\berror\b/i.test(l) && !/^make: \*\*\*/.test(l));
  return (errs.length ? errs.slice(0, 3) : text.trim().split('\n').slice(-3)).map((l) => l.trim()).join('; ');
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
  const make = (target: string) => {
    const r = spawnSync('make', [target], { cwd: dir, env, encoding: 'utf8', timeout: 600_000 });
    return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
  };
  const bpf = make('bpf');
  if (!bpf.ok) return fail(`make bpf failed: ${errorLines(bpf.out)}`);
  // tsc emits even when it reports type errors: such a build still runs, and says so.
  const ts = make('ts');
  const warning = ts.ok ? null : `make ts reported errors (its output is used): ${errorLines(ts.out)}`;
  for (const need of ['dist/bench/xdp.js', 'dist/src/server/server.js', 'build/server.bpf.o', 'build/baseline.bpf.o']) {
    if (!existsSync(path.join(dir, need))) return fail(`its build has no ${need}${warning ? `; ${warning}` : ''}`);
  }
  return { ref, commit, subject, root: dir, error: null, warning };
}
