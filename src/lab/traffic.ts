// Traffic in the lab: real services in a host (http, echo, banner), and bounded probes from a host
// (connect only, fetch, curl). Functions over the few things they need of a lab (LabShell); the Lab
// offers each as a method.
import { mkdtempSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { hostPort } from '../wire/address.js';
import { sleep, SYSTEM_PYTHON, type ExecOptions, type ExecResult, type LabProcess } from './process.js';

/** What the traffic helpers use of a lab. */
export interface LabShell {
  readonly dir: string;
  exec(host: string, argv: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  spawn(host: string, argv: readonly string[], env?: Record<string, string>, name?: string): LabProcess;
  writeFile(name: string, content: string): string;
}


/** Waits until something listens on addr:port in a host (polls `ss`). */
export async function waitListening(lab: LabShell, host: string, addr: string, port: number, timeoutMs = 10_000): Promise<void> {
  const want = hostPort(addr, port);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await lab.exec(host, ['ss', '-Hltn'], { timeoutMs: 5_000 });
    const locals = r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[3]);
    if (locals.includes(want) || locals.includes(`*:${port}`) || locals.includes(`[::]:${port}`)) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${want} in ${host} after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * A real TCP service on addr:port in a host, returned once it listens.
 *  - 'http': python3 -m http.server serving `page` as index.html
 *  - 'echo': ncat echoing back whatever it reads (cat per connection)
 *  - 'banner': ncat writing `page` to each connection, then closing
 */
export async function startService(
  lab: LabShell,
  host: string,
  addr: string,
  port: number,
  kind: 'http' | 'echo' | 'banner' = 'http',
  page = 'spak-demo-ok\n',
): Promise<LabProcess> {
  let argv: string[];
  if (kind === 'http') {
    const root = mkdtempSync(path.join(lab.dir, `www-${port}-`));
    writeFileSync(path.join(root, 'index.html'), page);
    argv = [SYSTEM_PYTHON, '-u', '-m', 'http.server', String(port), '--bind', addr, '--directory', root];
  } else if (kind === 'echo') {
    argv = ['ncat', '-lk', addr, String(port), '--sh-exec', 'cat'];
  } else {
    const file = lab.writeFile(`banner-${port}-${addr.replace(/[:.]/g, '_')}.txt`, page);
    argv = ['ncat', '-lk', addr, String(port), '--sh-exec', `cat ${file}`];
  }
  const proc = lab.spawn(host, argv, {}, `${kind} service ${host} ${addr} ${port}`);
  try {
    await Promise.race([
      waitListening(lab, host, addr, port),
      proc.exited.then(() => {
        throw new Error(`${proc.name} exited: ${proc.output}`);
      }),
    ]);
  } catch (err) {
    await proc.stop(1_000);
    throw err;
  }
  return proc;
}

/**
 * connect() only, from a host to addr:port, bounded by timeoutMs: {ok: true} once connected,
 * else {ok: false, error: 'timeout' | errno code}.
 */
export async function tcpConnect(lab: LabShell, host: string, addr: string, port: number, timeoutMs = 2_000): Promise<{ ok: boolean; error?: string }> {
  const r = await lab.exec(host, [process.execPath, '-e', CONNECT_SCRIPT, addr, String(port), String(timeoutMs)], {
    timeoutMs: timeoutMs + 10_000,
  });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as { ok: boolean; error?: string };
  } catch {
    return { ok: false, error: `connect helper failed: ${r.stderr.trim() || r.stdout.trim() || `exit ${r.code}`}` };
  }
}

/** Connects, optionally sends `send`, reads until the peer closes: {ok, data, error}. Bounded. */
export async function tcpFetch(
  lab: LabShell,
  host: string,
  addr: string,
  port: number,
  timeoutMs = 3_000,
  send = '',
): Promise<{ ok: boolean; data: string; error?: string }> {
  const r = await lab.exec(
    host,
    [process.execPath, '-e', FETCH_SCRIPT, addr, String(port), String(timeoutMs), send],
    { timeoutMs: timeoutMs + 10_000 },
  );
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as { ok: boolean; data: string; error?: string };
  } catch {
    return { ok: false, data: '', error: `fetch helper failed: ${r.stderr.trim() || `exit ${r.code}`}` };
  }
}

/** curl -s --max-time from a host: ok when curl exits 0; body is what came back. */
export async function httpGet(lab: LabShell, host: string, addr: string, port: number, maxTimeSec = 3): Promise<{ ok: boolean; body: string; error?: string }> {
  const url = `http://${hostPort(addr, port)}/`;
  const r = await lab.exec(host, ['curl', '-sS', '-g', '--max-time', String(maxTimeSec), url], {
    timeoutMs: maxTimeSec * 1000 + 10_000,
  });
  if (r.code === 0) return { ok: true, body: r.stdout };
  return { ok: false, body: r.stdout, error: r.stderr.trim() || `curl exit ${r.code}` };
}

// node -e helpers (CommonJS): argv = [node, addr, port, timeoutMs, ...]
const CONNECT_SCRIPT = `
const net = require('net');
const [addr, port, ms] = process.argv.slice(1);
const done = (r) => { process.stdout.write(JSON.stringify(r) + '\\n'); process.exit(0); };
const s = net.connect({ host: addr, port: Number(port) });
setTimeout(() => { s.destroy(); done({ ok: false, error: 'timeout' }); }, Number(ms));
s.on('connect', () => { s.destroy(); done({ ok: true }); });
s.on('error', (e) => done({ ok: false, error: e.code || e.message }));
`;

const FETCH_SCRIPT = `
const net = require('net');
const [addr, port, ms, send] = process.argv.slice(1);
let data = '', connected = false;
const done = (r) => { process.stdout.write(JSON.stringify(r) + '\\n'); process.exit(0); };
const s = net.connect({ host: addr, port: Number(port) });
setTimeout(() => { s.destroy(); done({ ok: false, data, error: connected ? 'timeout reading' : 'timeout' }); }, Number(ms));
s.setEncoding('utf8');
s.on('connect', () => { connected = true; if (send) s.write(send); });
s.on('data', (d) => { data += d; });
s.on('end', () => { s.destroy(); done({ ok: connected, data }); });
s.on('error', (e) => done({ ok: false, data, error: e.code || e.message }));
`;

