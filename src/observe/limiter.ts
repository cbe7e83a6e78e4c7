// Rate-limited logging for decisions (knocks accepted and rejected, reloads, attaches,
// adoptions): at most `perSecond` lines in each wall-clock second; what is held back is
// counted by kind and reported in one line once the second is over, so a flood of knocks
// cannot flood the log, yet nothing disappears without a trace.

/** The part of a pino logger the limiter writes through. */
export interface LogSink {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export type LimitedLevel = 'info' | 'warn' | 'error';

export interface RateLimitedLogOptions {
  /** Lines let through per second (all kinds together). */
  perSecond: number;
  /** Named in the summary line, e.g. "knock". */
  name?: string;
  /** Clock in ms (tests inject one). */
  now?: () => number;
  /** Report the suppressed count by itself about a second later, even if nothing else is logged (default true). */
  autoFlush?: boolean;
}

export class RateLimitedLog {
  #second = -1;
  #lines = 0;
  #suppressed = new Map<string, number>();
  #timer: NodeJS.Timeout | null = null;
  readonly #sink: LogSink;
  readonly #perSecond: number;
  readonly #name: string;
  readonly #now: () => number;
  readonly #autoFlush: boolean;

  constructor(sink: LogSink, opts: RateLimitedLogOptions) {
    if (!(opts.perSecond >= 0)) throw new RangeError(`perSecond must be 0 or more, got ${opts.perSecond}`);
    this.#sink = sink;
    this.#perSecond = opts.perSecond;
    this.#name = opts.name ?? 'log';
    this.#now = opts.now ?? Date.now;
    this.#autoFlush = opts.autoFlush ?? true;
  }

  /** Logs the line unless this second's budget is spent; returns whether it was written. */
  write(level: LimitedLevel, obj: object, msg: string, kind = 'line'): boolean {
    const s = Math.floor(this.#now() / 1000);
    if (s !== this.#second) {
      this.flush();
      this.#second = s;
      this.#lines = 0;
    }
    if (this.#lines < this.#perSecond) {
      this.#lines++;
      this.#sink[level](obj, msg);
      return true;
    }
    this.#suppressed.set(kind, (this.#suppressed.get(kind) ?? 0) + 1);
    if (this.#autoFlush && this.#timer === null) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.flush();
      }, 1100);
      this.#timer.unref();
    }
    return false;
  }

  /** Lines held back and not yet reported. */
  get pending(): number {
    let n = 0;
    for (const v of this.#suppressed.values()) n += v;
    return n;
  }

  /** Writes one warning with the count of what was held back (by kind), if anything was. */
  flush(): void {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    const n = this.pending;
    if (n === 0) return;
    const byKind = Object.fromEntries(this.#suppressed);
    this.#suppressed.clear();
    this.#sink.warn({ suppressed: n, byKind }, `${this.#name}: ${n} log line(s) suppressed`);
  }
}
