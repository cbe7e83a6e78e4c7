// How the daemons (spak server, spak client) live in the foreground: until SIGINT/SIGTERM, with
// SIGUSR1 printing the counters, optionally every statsInterval seconds too, and SIGHUP either
// reloading (the server) or stopping like SIGTERM (the client). Reloads never queue up: one runs at
// a time, SIGHUPs that come meanwhile are merged into one more that starts when it ends (it reads
// the configuration then, so it sees every change they announced), and neither SIGTERM nor anything
// else on the event loop waits for them (the reload's own slow part runs on a worker thread).
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
  /** SIGHUP reloads when given (its errors are its own to report); without it SIGHUP stops. */
  reload?: (() => Promise<void> | void) | undefined;
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1'] as const;

export function runForeground(o: ForegroundOptions): Promise<void> {
  return new Promise((resolve) => {
    const timer = o.statsInterval > 0 ? setInterval(() => process.stdout.write(`${o.report()}\n`), o.statsInterval * 1000) : null;
    // Signal handlers alone do not keep Node running: this does, until we are told to stop.
    const keepAlive = setInterval(() => undefined, 1 << 30);
    let reloading = false;
    let pending = false;
    let stopping = false;
    const reload = o.reload;
    const requestReload = async (run: () => Promise<void> | void) => {
      if (reloading) {
        pending = true; // merged: the reload after the running one covers it
        return;
      }
      reloading = true;
      try {
        do {
          pending = false;
          try {
            await run();
          } catch {
            // reload() reports its own errors; nothing may stop the daemon here
          }
        } while (pending && !stopping);
      } finally {
        reloading = false;
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
      process.stdout.write(`${summary}\n${o.farewell(signal, reloading)}\n`);
      resolve();
    };
    process.on('SIGINT', () => finish('SIGINT'));
    process.on('SIGTERM', () => finish('SIGTERM'));
    process.on('SIGHUP', () => (reload ? void requestReload(reload) : finish('SIGHUP')));
    process.on('SIGUSR1', () => process.stdout.write(`${o.report()}\n`));
    o.started();
  });
}
