// The knock replay cache, kept across daemon restarts: a knock captured before a restart must stay
// useless after it. Each recorded nonce is appended to FILE as one line ("<key> <until>", unix
// seconds) before the knock is acted on; at start and then periodically the live entries are
// rewritten to a temporary file and renamed over FILE, so a reader never sees half a file and
// the file does not grow without bound. A torn last line (crash mid-append) is ignored.
import { ReplayCache } from './checks.js';
import { Journal } from './journal.js';

const LINE = /^([0-9a-f]{1,8}:[0-9a-f]{32}) (\d{1,15})$/;

export class ReplayStore {
  readonly cache: ReplayCache;

  private constructor(private readonly journal: Journal, readonly windowS: number, capacity: number) {
    this.cache = new ReplayCache(windowS, capacity, (key, until) => journal.append(`${key} ${until}`));
  }

  get file(): string {
    return this.journal.file;
  }

  /** Loads FILE (missing: empty), drops what has expired, compacts and opens it for appending. */
  static open(file: string, windowS: number, nowS: number, capacity = 1_000_000): ReplayStore {
    const { journal, lines } = Journal.open(file);
    const s = new ReplayStore(journal, windowS, capacity);
    const entries: [string, number][] = [];
    for (const line of lines) {
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
    this.journal.rewrite(this.cache.entries().map(([k, u]) => `${k} ${u}`));
  }

  close(): void {
    this.journal.close();
  }
}
