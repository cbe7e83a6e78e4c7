// How the daemons (spak server, spak client) live in the foreground: until SIGINT/SIGTERM, with
// SIGUSR1 printing the counters, optionally every statsInterval seconds too, and SIGHUP either
// reloading (the server) or stopping like SIGTERM (the client). Reloads never queue up: one runs at
// a time, SIGHUPs that come meanwhile are merged into one more that starts when it ends (it reads
// the configuration then, so it sees every change they announced), and neither SIGTERM nor anything
// else on the event loop waits for them (the reload's own slow part runs on a worker thread).
// Whoever asks for a reload other than by signal (the control socket, src/daemon/control.ts) gets
// the outcome of the reload that covers the request: the running one when it has not yet read the
// configuration is not enough, so a request made while one runs is answered by the next.
import type { ReloadOutcome } from './control.js';
import { plain } from '../observe/log.js';

export interface ForegroundOptions {
  /** Releases this process's handles; what is pinned stays. */
  stop(): void;
  /** The counters, as printed on SIGUSR1 and once more at exit. */
  report(): string;
  /** Print report() every n seconds; 0: only on SIGUSR1 and at exit. */
  statsInterval: number;
  /** The last line: what stays behind after this signal (reloading: a reload was running, and is abandoned). */
  farewell(signal: string, reloading: boolean): string;
  /** Prints the banner. Runs once the handlers are in place, so whoever waits for it can signal at once. */
  started(): void;
  /** SIGHUP reloads when given (it reports its outcome itself, and returns it); without it SIGHUP stops. */
  reload?: (() => Promise<ReloadOutcome>) | undefined;
  /** Given the way to ask for a reload and wait for its outcome, once the handlers are in place (before started()). */
  control?: ((reload: () => Promise<ReloadOutcome>) => void) | undefined;
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1'] as const;

export function runForeground(o: ForegroundOptions): Promise<void> {
  return new Promise((resolve) => {
    const timer = o.statsInterval > 0 ? setInterval(() => plain(1, 'info', o.report()), o.statsInterval * 1000) : null;
    // Signal handlers alone do not keep Node running: this does, until we are told to stop.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    let reloading = false;
    let stopping = false;
    // Who waits for the reload that runs next (null: none is due).
    let next: ((o: ReloadOutcome) => void)[] | null = null;
    const reload = o.reload;
    const requestReload = (run: () => Promise<ReloadOutcome>): Promise<ReloadOutcome> => {
      const answer = new Promise<ReloadOutcome>((resolve) => (next ??= []).push(resolve));
      if (!reloading) void drain(run);
      return answer;
    };
    const drain = async (run: () => Promise<ReloadOutcome>) => {
      reloading = true;
      try {
        while (next && !stopping) {
          const waiting = next;
          next = null; // requests from now on: merged into the one after this
          let outcome: ReloadOutcome;
          try {
            outcome = await run();
          } catch (e) {
            // reload() reports its own errors; nothing may stop the daemon here
            outcome = { ok: false, message: (e as Error).message };
          }
          for (const w of waiting) w(outcome);
        }
      } finally {
        reloading = false;
        if (next) for (const w of next) w({ ok: false, message: 'the daemon is stopping' });
        next = null;
      }
    };
    const finish = (signal: string) => {
      stopping = true;
      clearInterval(keepAlive);
      if (timer) clearInterval(timer);
      for (const s of SIGNALS) process.removeAllListeners(s);
      let summary = '';
      try {
        summary = o.report();
      } catch {
        // maps already gone
      }
      o.stop();
      plain(1, 'info', `${summary}\n${o.farewell(signal, reloading)}`);
      resolve();
    };
    process.on('SIGINT', () => finish('SIGINT'));
    process.on('SIGTERM', () => finish('SIGTERM'));
    process.on('SIGHUP', () => (reload ? void requestReload(reload) : finish('SIGHUP')));
    process.on('SIGUSR1', () => plain(1, 'info', o.report()));
    if (reload && o.control)
      o.control(() => (stopping ? Promise.resolve({ ok: false, message: 'the daemon is stopping' }) : requestReload(reload)));
    o.started();
  });
}
