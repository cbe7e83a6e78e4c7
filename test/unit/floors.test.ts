// The floors of src/: each folder imports only from the floors below it, and no module graph
// has a circle. The picture (README, Layout) is this list; the test reads every import of
// every source file and fails on an arrow upward, sideways into a folder it may not use, or
// any cycle.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const src = path.join(root, 'src');

/** Bottom to top: a folder may import from its own floor and every floor before it. */
const FLOORS = ['wire', 'config', 'bpf', 'server', 'knock', 'observe', 'daemon', 'cli'] as const;
/** Folders beside the floors, and exactly what each may import. */
const BESIDE: Record<string, readonly string[]> = {
  // The SYN-mode client: the wire formats, its configuration and the libbpf binding, nothing of the server.
  client: ['wire', 'config', 'bpf'],
  // The demo's and the benchmarks' network lab (not in the npm package).
  lab: ['wire', 'config', 'bpf'],
};

function allowed(from: string): Set<string> {
  const beside = BESIDE[from];
  if (beside) return new Set([from, ...beside]);
  const at = FLOORS.indexOf(from as (typeof FLOORS)[number]);
  if (at < 0) return new Set();
  return new Set([...FLOORS.slice(0, at + 1), ...(from === 'cli' ? ['client'] : [])]);
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sources(full);
    return e.name.endsWith('.ts') ? [full] : [];
  });
}

/** Relative imports of one file (static, re-exports and dynamic import()), as .ts paths. */
function importsOf(file: string): string[] {
  // Comments may name modules ("from './libbpf.js' keeps working"): only code counts.
  const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
    out.push(path.resolve(path.dirname(file), m[1]!.replace(/\.js$/, '.ts')));
  }
  return out;
}

const files = sources(src);
const graph = new Map(files.map((f) => [f, importsOf(f)]));
const folderOf = (f: string) => path.relative(src, f).split(path.sep)[0]!;
const rel = (f: string) => path.relative(root, f);

describe('the floors of src/', () => {
  test('every folder is a known floor or sits beside them', () => {
    const unknown = [...new Set(files.map(folderOf))].filter((d) => !FLOORS.includes(d as never) && !(d in BESIDE));
    assert.deepEqual(unknown, [], `folders outside the picture: ${unknown.join(', ')}`);
  });

  test('each folder imports only from the floors below it', () => {
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      const ok = allowed(folderOf(file));
      for (const dep of deps) {
        if (!dep.startsWith(src + path.sep)) wrong.push(`${rel(file)} imports ${rel(dep)}, outside src/`);
        else if (!ok.has(folderOf(dep))) wrong.push(`${rel(file)} imports ${rel(dep)}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  test('every import names a file that exists', () => {
    const missing = [...graph].flatMap(([file, deps]) => deps.filter((d) => !graph.has(d)).map((d) => `${rel(file)} -> ${rel(d)}`));
    assert.deepEqual(missing, []);
  });

  test('no circles between modules', () => {
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (f: string, trail: string[]): void => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        cycles.push([...trail.slice(trail.indexOf(f)), f].map(rel).join(' -> '));
        return;
      }
      state.set(f, 'open');
      for (const d of graph.get(f) ?? []) visit(d, [...trail, f]);
      state.set(f, 'done');
    };
    for (const f of files) visit(f, []);
    assert.deepEqual(cycles, []);
  });

  test('the checker sees an upward arrow (server -> knock) as wrong', () => {
    assert.ok(!allowed('server').has('knock'));
    assert.ok(!allowed('client').has('server'));
    assert.ok(allowed('daemon').has('observe'));
  });
});
