// Knock replay protection. ReplayCache remembers nonces in memory; ReplayStore keeps them across
// daemon restarts, since a knock captured before a restart must stay useless after it. Each
// recorded nonce is appended to FILE as one line ("<key> <until>", unix seconds) before the knock
// is acted on; at start and then periodically the live entries are rewritten to a temporary file
// and renamed over FILE, so a reader never sees half a file and the file does not grow without
// bound. A torn last line (crash mid-append) is ignored.
import { DEFAULT_KNOCK_WINDOW_S } from './decide.js';
import { Journal } from './journal.js';

/** Remembers nonces until they could no longer pass the freshness check anyway. */
export class ReplayCache {
  private readonly expiry = new Map<string, number>();

  /** onRecord sees each entry as it is recorded (the daemon persists it); if it throws, so does seen(). */
  constructor(
    private readonly windowS = DEFAULT_KNOCK_WINDOW_S,
    private readonly capacity = 1_000_000,
    private readonly onRecord?: (key: string, until: number) => void,
  ) {}

  /** True when (client, nonce) was seen; records it otherwise. */
  seen(clientId: number, nonce: Buffer, timestamp: number, nowS: number): boolean {
    const key = `${clientId.toString(16)}:${nonce.toString('hex')}`;
    const until = this.expiry.get(key);
    if (until !== undefined && until >= nowS) return true;
    if (this.expiry.size >= this.capacity) this.prune(nowS);
    // A full cache of live entries must refuse rather than forget: forgetting allows replay.
    if (this.expiry.size >= this.capacity) return true;
    // Valid until the knock's own timestamp leaves the window, at least.
    const keepUntil = Math.max(timestamp, nowS) + this.windowS;
    this.expiry.set(key, keepUntil);
    this.onRecord?.(key, keepUntil);
    return false;
  }

  prune(nowS: number): void {
    for (const [k, until] of this.expiry) if (until < nowS) this.expiry.delete(k);
  }

  get size(): number {
    return this.expiry.size;
  }

  entries(): [string, number][] {
    return [...this.expiry];
  }

  restore(entries: Iterable<[string, number]>): void {
    for (const [k, until] of entries) this.expiry.set(k, until);
  }
}

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
