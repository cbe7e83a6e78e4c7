// The daemon's control socket: `spak server reload [IFACE]` asks the running daemon to reload and
// waits for the outcome, so `systemctl reload` needs no /bin/kill, no CAP_KILL after the privilege
// drop, and fails when the new configuration is rejected. One socket per served interface, next
// to the interface's lock in /run/spak (<lock name without .lock>.ctl), bound before the drop with
// mode 0600: only its owner (root under the unit) may connect. The protocol is one line each way:
// "reload\n" in; "ok <summary>\n" or "error <reason>\n" out. SIGHUP keeps working beside it.
import { chmodSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { LOCK_DIR, netnsScope, pinPaths } from '../bpf/pins.js';

/** What one reload ended with: ok, and the daemon's one line (the summary, or why it was rejected). */
export interface ReloadOutcome {
  ok: boolean;
  message: string;
}

/** Where the daemon serving iface listens (beside its lock file). */
export function controlPath(iface: string): string {
  return pinPaths(iface, 'server').lock.replace(/\.lock$/, '.ctl');
}

export interface ControlServer {
  /** Stops listening and removes the socket files (where it still may). */
  close(): void;
}

/**
 * Listens on the control socket of every interface; each "reload" request runs `reload` (which
 * coalesces) and is answered with its outcome. The caller holds the interfaces' locks, so a socket
 * file found there is a dead daemon's and is replaced.
 */
export async function startControl(ifaces: string[], reload: () => Promise<ReloadOutcome>, served: string): Promise<ControlServer> {
  const servers: net.Server[] = [];
  const files: string[] = [];
  const close = () => {
    for (const s of servers) s.close();
    for (const f of files) {
      try {
        rmSync(f, { force: true });
      } catch {
        // after the privilege drop /run/spak is not ours to write: the next start replaces it
      }
    }
  };
  try {
    for (const iface of ifaces) {
      const file = controlPath(iface);
      rmSync(file, { force: true });
      const server = net.createServer((conn) => serve(conn, reload, served));
      await listenPrivately(server, file);
      servers.push(server);
      files.push(file);
    }
  } catch (err) {
    close();
    throw new Error(`control socket: ${(err as Error).message}`);
  }
  return { close };
}

/** Binds with a umask that leaves the socket 0600 from its first moment, and chmods it to be sure. */
function listenPrivately(server: net.Server, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const old = process.umask(0o177);
    try {
      server.once('error', reject);
      server.listen(file, () => {
        server.off('error', reject);
        try {
          chmodSync(file, 0o600);
          resolve();
        } catch (e) {
          reject(e as Error);
        }
      });
    } finally {
      process.umask(old);
    }
  });
}

function serve(conn: net.Socket, reload: () => Promise<ReloadOutcome>, served: string): void {
  let text = '';
  conn.setEncoding('utf8');
  conn.on('error', () => undefined); // the asker went away: nothing to tell
  conn.on('data', (chunk: string) => {
    text += chunk;
    if (!text.includes('\n')) {
      if (text.length > 256) conn.end('error request too long\n');
      return;
    }
    const request = text.slice(0, text.indexOf('\n')).trim();
    text = '';
    conn.pause();
    if (request !== 'reload') {
      conn.end(`error unknown request "${request.slice(0, 40)}" (this daemon knows: reload)\n`);
      return;
    }
    void reload().then(
      (o) => conn.end(`${o.ok ? 'ok' : 'error'} ${served} ${oneLine(o.message)}\n`),
      (e: unknown) => conn.end(`error ${served} ${oneLine((e as Error).message)}\n`),
    );
  });
}

const oneLine = (s: string) => s.replace(/\s*\n\s*/g, ' ');

/** The answer of one daemon: which interfaces it serves (comma-separated), ok, its line. */
export interface ControlAnswer extends ReloadOutcome {
  served: string[];
}

/** Asks the daemon listening on `file` to reload; rejects with the errno code when nobody listens. */
export function requestReload(file: string, timeoutMs = 300_000): Promise<ControlAnswer> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(file);
    let reply = '';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new Error(`no answer from ${file} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write('reload\n'));
    conn.on('data', (d: string) => (reply += d));
    conn.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    conn.on('close', () => {
      clearTimeout(timer);
      const m = /^(ok|error) (?:(\S+) )?(.*)$/.exec(reply.trim());
      if (!m) return reject(new Error(`the daemon on ${file} closed without an answer${reply ? ` (${reply.trim()})` : ''}`));
      resolve({ ok: m[1] === 'ok', served: (m[2] ?? '').split(',').filter((x) => x), message: m[3] ?? '' });
    });
  });
}

/** The control sockets of this network namespace's server daemons, by interface. */
export function controlSockets(): Map<string, string> {
  const scope = netnsScope();
  const prefix = scope ? `${scope}_` : '';
  const out = new Map<string, string>();
  let names: string[] = [];
  try {
    names = readdirSync(LOCK_DIR);
  } catch {
    return out;
  }
  for (const n of names) {
    const m = /^(.+)\.server\.ctl$/.exec(n);
    if (!m) continue;
    const rest = m[1]!;
    if (prefix ? !rest.startsWith(prefix) : rest.startsWith('netns-')) continue; // another namespace's
    out.set(rest.slice(prefix.length), path.join(LOCK_DIR, n));
  }
  return out;
}
