// The daemons' logger (pino). Where lines go:
//   - a file (config `log.file` / --log-file): JSON lines, appended;
//   - stderr: JSON lines when stderr is not a terminal (systemd's journal captures them as
//     they are), one readable line per event on a terminal.
// The terminal format is written here (a dozen lines) rather than taken from pino-pretty:
// pino-pretty runs as a transport in a worker thread and brings its own dependency tree, for
// what is a time, a level, the message and the remaining fields as key=value.
//   - the journal (systemd sets JOURNAL_STREAM=dev:ino to the stream it gave us): one readable line
//     per event, no time (the journal keeps its own), prefixed with the sd-daemon priority of its
//     level (<2> fatal, <3> error, <4> warn, <6> info, <7> debug), so `journalctl -p warning` shows
//     what it should. The daemon's own plain lines (banner, reload outcome, the last error) get
//     their prefix from plain(); the events they already say (attach, adopt, reload) are not
//     repeated by the logger there: one line per event.
import { fstatSync } from 'node:fs';
import path from 'node:path';
import { pino, type DestinationStream, type Level, type Logger, type StreamEntry } from 'pino';
import { RateLimitedLog, type LogSink } from './limiter.js';
import { makeDirectory } from '../config/dirs.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

export interface LogSettings {
  level: string;
  /** JSON lines appended to this file as well. */
  file?: string | undefined;
  /** How stderr gets lines: 'auto' (readable on a terminal, JSON otherwise), 'json', 'pretty' or 'off'. */
  stderr?: 'auto' | 'json' | 'pretty' | 'off';
  /** Where "stderr" lines go (tests); default fd 2. */
  stderrStream?: { write(s: string): unknown; isTTY?: boolean };
  /** Whether those lines go to the journal (default: fd 2 is the stream JOURNAL_STREAM names). */
  journal?: boolean;
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const OMIT = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

function fieldText(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v !== null && typeof v === 'object' && 'message' in v && 'type' in v) return JSON.stringify((v as { message: unknown }).message);
  return JSON.stringify(v);
}

/** One pino JSON line as "HH:MM:SS.mmm LEVEL message key=value ...". Lines that are not JSON pass through. */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const t = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 23) : '';
  const level = LEVEL_NAMES[o.level as number] ?? String(o.level);
  const rest = Object.entries(o).filter(([k]) => !OMIT.has(k)).map(([k, v]) => `${k}=${fieldText(v)}`);
  return `${[t, level.padEnd(5), String(o.msg ?? ''), ...rest].filter((x) => x !== '').join(' ')}\n`;
}

/** A pino destination that writes prettyLine() of each record to `out`. */
export function prettyStream(out: { write(s: string): unknown }): DestinationStream {
  return { write: (line: string) => void out.write(prettyLine(line)) };
}

/** sd-daemon(3) priorities by level name. */
export const JOURNAL_PRIORITY: Record<string, number> = { fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 };
const PRIORITY_OF: Record<number, number> = { 60: 2, 50: 3, 40: 4, 30: 6, 20: 7, 10: 7 };
/** Events the daemon prints as a plain line of its own (src/daemon/daemon.ts): on the journal, said once. */
const PLAIN_TWINS = new Set(['attach', 'adopt', 'reload', 'reload-rejected']);

/** True when fd is the stream systemd connected to the journal (JOURNAL_STREAM names its dev:ino). */
export function onJournal(fd: number, env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** Every line of text with the journal prefix of level ("<3>..."). */
export function withPriority(level: string, text: string): string {
  const p = `<${JOURNAL_PRIORITY[level] ?? 6}>`;
  return text.split('\n').map((l, i, all) => (l === '' && i === all.length - 1 ? '' : `${p}${l}`)).join('\n');
}

/** One pino JSON line for the journal: "<N>LEVEL message key=value ..." (no time), or '' for a plain line's twin. */
export function journalLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return `<6>${json.endsWith('\n') ? json : `${json}\n`}`;
  }
  if (typeof o.event === 'string' && PLAIN_TWINS.has(o.event)) return '';
  const { time: _time, ...rest } = o;
  return `<${PRIORITY_OF[o.level as number] ?? 6}>${prettyLine(JSON.stringify(rest))}`;
}

/** A pino destination that writes journalLine() of each record to `out`. */
export function journalStream(out: { write(s: string): unknown }): DestinationStream {
  return { write: (line: string) => { const l = journalLine(line); if (l) out.write(l); } };
}

/**
 * A plain line of the daemon's own (banner, reload outcome, warnings, the last error) to stdout (1)
 * or stderr (2): as it is, or with its priority prefix when that stream is the journal.
 */
export function plain(fd: 1 | 2, level: string, text: string): void {
  const line = text.endsWith('\n') ? text : `${text}\n`;
  (fd === 1 ? process.stdout : process.stderr).write(onJournal(fd) ? withPriority(level, line) : line);
}

export function checkLevel(level: string): Level {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new Error(`bad log level "${level}": one of ${LOG_LEVELS.join(', ')}`);
  return level as Level;
}

/** The logger for a daemon. A log file that cannot be opened is an error (one line, before anything is attached). */
export function createLogger(s: LogSettings): Logger {
  const level = checkLevel(s.level);
  const streams: StreamEntry[] = [];
  const err = s.stderrStream ?? process.stderr;
  const mode = s.stderr ?? 'auto';
  if (mode !== 'off') {
    const journal = mode === 'auto' && (s.journal ?? (s.stderrStream === undefined && onJournal(2)));
    const pretty = mode === 'pretty' || (mode === 'auto' && err.isTTY === true);
    streams.push({
      level,
      stream: journal ? journalStream(err) : pretty ? prettyStream(err) : s.stderrStream ? { write: (l: string) => void err.write(l) } : pino.destination(2),
    });
  }
  if (s.file !== undefined) {
    try {
      // Only the file's own directory is made (e.g. /var/log/spak), never its parents: a mistyped
      // path is an error, not a new tree.
      makeDirectory(path.dirname(s.file), 'log directory', 0o750, { parents: false });
      // sync: a decision is on disk when the call returns, also if the daemon is killed right after.
      streams.push({ level, stream: pino.destination({ dest: s.file, append: true, sync: true }) });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code !== undefined && !(e as Error).message.startsWith(code) ? ` (${(e as Error).message})` : ''; // makeDirectory's line
      throw new Error(`cannot open log file ${s.file}: ${code ?? String(e)}${why}`);
    }
  }
  return pino({ name: 'spak', level }, pino.multistream(streams));
}

/**
 * The limiter for a daemon's decisions (attach, adopt, reload; the knock service keeps its own
 * for knocks): `perSecond` lines a second, the rest counted and reported.
 */
export function decisionLog(logger: LogSink, perSecond = 20): RateLimitedLog {
  return new RateLimitedLog(logger, { perSecond, name: 'decisions' });
}

/** The knock service's decisions (each knock accepted or rejected), limited on their own. */
export function knockLog(logger: LogSink, perSecond = 20): RateLimitedLog {
  return new RateLimitedLog(logger, { perSecond, name: 'knock' });
}
