// Where the compiled eBPF objects live: build/ of this checkout or of the installed npm package
// (the tarball carries build/server.bpf.o and build/client.bpf.o), or $SPAK_BPF_DIR.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout (or installed package) root: dist/src/bpf/object-files.js is three levels below it. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Path of build/<name>.bpf.o; throws a one-line error when it has not been built. */
export function objectPath(name: string): string {
  const dir = process.env.SPAK_BPF_DIR ?? path.join(REPO_ROOT, 'build');
  const file = path.join(dir, `${name}.bpf.o`);
  if (!existsSync(file)) throw new Error(`eBPF object ${file} not found: run make build (in a checkout) or reinstall the spak package`);
  return file;
}
