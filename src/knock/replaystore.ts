// The knock replay cache, kept across daemon restarts: a knock captured before a restart must stay
// useless after it. Each recorded nonce is appended to FILE as one line ("<key> <until>", unix
// seconds) before the knock is acted on; at start and then periodically the live entries are
// rewritten to a temporary file and renamed over FILE, so a reader never sees half a file and
// the file does not grow without bound. A torn last line (crash mid-append) is ignored.
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, writeSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ReplayCache } from './checks.js';

const LINE = /^([0-9a-f]{1,8}:[0-9a-f]{32}) (\d{1,15})$/;

export class ReplayStore {
  readonly cache: ReplayCache;
  #fd: number | null = null;

  private constructor(readonly file: string, readonly windowS: number, capacity: number) {
    this.cache = new ReplayCache(windowS, capacity, (key, until) => {
      if (this.#fd === null) throw new Error('replay store is closed');
      writeSync(this.#fd, `${key} ${until}\n`);
    });
  }

  /** Loads FILE (missing: empty), drops what has expired, compacts and opens it for appending. */
  static open(file: string, windowS: number, nowS: number, capacity = 1_000_000): ReplayStore {
    const s = new ReplayStore(file, windowS, capacity);
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${file}: ${(err as Error).message}`);
    }
    const entries: [string, number][] = [];
    for (const line of text.split('\n')) {
      const m = LINE.exec(line);
      if (m) entries.push([m[1]!, Number(m[2])]);
    }
    s.cache.restore(entries);
    s.compact(nowS);
    return s;
  }

  /** Rewrites FILE with the live entries only, atomically, and appends there from now on. */
  compact(nowS: number): void {
    this.cache.prune(nowS);
    const tmp = path.join(path.dirname(this.file), `.${path.basename(this.file)}.${process.pid}.tmp`);
    writeFileSync(tmp, this.cache.entries().map(([k, u]) => `${k} ${u}\n`).join(''), { mode: 0o600 });
    renameSync(tmp, this.file);
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = openSync(this.file, 'a', 0o600);
  }

  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }
}
