// Runs one exported bench function of a checkout's compiled dist/bench/<module>.js in a fresh
// node process and returns what it returned. Both builds compared by `make bench` (this one and
// a previous ref's) are measured this way, so neither side carries the other's process state.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const MARK = 'SPAK_BENCH_RESULT ';

// Children still running when this process exits (an interrupted `make bench`) are killed.
const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** SIGKILLs every bench child still running (on exit: before their checkout is removed). */
export function killBenchChildren(): void {
  for (const c of running) c.kill('SIGKILL');
  running.clear();
}

/**
 * Imports <root>/dist/bench/<module>.js in a child node, calls fn(...args) (awaiting a promise)
 * and parses the JSON it prints on a marked line. Rejects with the child's stderr on failure.
 */
export function runBenchChild<T>(root: string, module: string, fn: string, args: unknown[], timeoutMs = 600_000): Promise<T> {
  const url = pathToFileURL(path.join(root, 'dist', 'bench', `${module}.js`)).href;
  const script = `
import(${JSON.stringify(url)})
  .then((m) => {
    if (typeof m[${JSON.stringify(fn)}] !== 'function') throw new Error(${JSON.stringify(`${module}.js exports no ${fn}()`)});
    return m[${JSON.stringify(fn)}](...${JSON.stringify(args)});
  })
  .then((r) => process.stdout.write('\\n${MARK}' + JSON.stringify(r) + '\\n', () => process.exit(0)))
  .catch((e) => { process.stderr.write(String(e && e.stack || e) + '\\n'); process.exit(1); });
`;
  // The child finds its own objects in <root>/build; an inherited SPAK_BPF_DIR would point both
  // builds at the same ones.
  const env = { ...process.env };
  delete env.SPAK_BPF_DIR;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', killBenchChildren);
    }
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      running.delete(child);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      const line = stdout.split('\n').find((l) => l.startsWith(MARK));
      if (code === 0 && line) {
        resolve(JSON.parse(line.slice(MARK.length)) as T);
        return;
      }
      const why = signal ? `killed by ${signal}${signal === 'SIGKILL' ? ` (time limit ${timeoutMs / 1000} s?)` : ''}` : `exit ${code}`;
      const tail = stderr.trim().split('\n').slice(-6).join('\n');
      reject(new Error(`${module}.${fn}() in ${root}: ${why}${tail ? `\n${tail}` : ''}`));
    });
  });
}
