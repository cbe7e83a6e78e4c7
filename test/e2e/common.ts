// Shared by the adversarial e2e tests (attack, restart, options): the LAN's addresses, configs,
// node -e helper scripts run inside the hosts, and the scapy scripts' runners.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { type Lab, type LabProcess, REPO_ROOT, sleep, startSpak, SYSTEM_PYTHON, type SpakProcess, type SpakServerConfig } from '../../src/lab/lab.js';

export const KEY = randomBytes(16).toString('hex');
export const KEY_ID = 1;
export const SRV = 'srv';
export const CLI = 'cli';
export const OTH = 'oth';
export const ADDR = { v4: '198.51.100.1', v6: '2001:db8::1' } as const;
export type Family = keyof typeof ADDR;
export const FAMILIES: Family[] = ['v4', 'v6'];
/** connect() bound for "it does not get through": the SYN and at least one retransmission. */
export const BLOCKED_MS = 2_500;
export const ATTACK_PY = path.join(REPO_ROOT, 'test', 'e2e', 'attack.py');
export const REPLAY_PY = path.join(REPO_ROOT, 'test', 'e2e', 'replay.py');
const PCAP_HEADER_LEN = 24;

export const skip =
  typeof process.geteuid === 'function' && process.geteuid() !== 0
    ? 'needs root'
    : !existsSync(path.join(REPO_ROOT, 'build', 'server.bpf.o'))
      ? 'run make build first'
      : false;

/** The usual three hosts: server .1/::1, client .2/::2, keyless third host .3/::3. */
export async function threeHosts(lab: Lab): Promise<void> {
  await lab.addHost(SRV, 1);
  await lab.addHost(CLI, 2);
  await lab.addHost(OTH, 3);
}

type Extra = Record<string, unknown>;

/** Server config protecting each port on the server's v4 and v6 address. */
export function serverConfig(ports: number[], extra: Extra = {}, destExtra: Extra = {}) {
  return {
    keys: [{ id: KEY_ID, secret: KEY }],
    protect: ports.flatMap((port) => FAMILIES.map((f) => ({ address: ADDR[f], port, ...destExtra }))),
    ...extra,
  };
}

/** Client config tagging SYNs to each port on the server's v4 and v6 address. */
export function clientConfig(ports: number[], destExtra: Extra = {}) {
  return {
    destinations: ports.flatMap((port) =>
      FAMILIES.map((f) => ({ address: ADDR[f], port, keyId: KEY_ID, secret: KEY, ...destExtra })),
    ),
  };
}

export const TIMEOUT = { ok: false, error: 'timeout' } as const;

/** Asserts that a keyless connect() from host to every (address, port) times out. */
export async function assertBlocked(lab: Lab, host: string, targets: { addr: string; port: number }[], what: string): Promise<void> {
  const rs = await Promise.all(targets.map((t) => lab.tcpConnect(host, t.addr, t.port, BLOCKED_MS)));
  rs.forEach((r, i) => assert.deepEqual(r, TIMEOUT, `${what}: ${host} -> ${targets[i]!.addr} port ${targets[i]!.port}`));
}

// A connection that lives on: prints "connected <local port>", then one line every 300 ms, each echoed back.
export const LONG_LIVED = `
const net = require('net');
const [addr, port] = process.argv.slice(1);
const s = net.connect({ host: addr, port: Number(port) });
s.setEncoding('utf8');
let n = 0, buf = '';
s.on('connect', () => { console.log('connected ' + s.localPort); setInterval(() => s.write('ping ' + (++n) + '\\n'), 300); });
s.on('data', (d) => {
  buf += d;
  for (let i; (i = buf.indexOf('\\n')) >= 0; buf = buf.slice(i + 1)) {
    const m = /^ping (\\d+)$/.exec(buf.slice(0, i));
    console.log(m ? 'echo ' + m[1] : 'unexpected ' + buf.slice(0, i));
  }
});
s.on('error', (e) => { console.log('error ' + (e.code || e.message)); process.exit(1); });
s.on('close', () => { console.log('closed'); process.exit(1); });
`;

export function lastEcho(output: string): number {
  let last = 0;
  for (const m of output.matchAll(/^echo (\d+)$/gm)) last = Math.max(last, Number(m[1]));
  return last;
}

/** Starts LONG_LIVED from host to addr:port; resolves once two echoes came back. */
export async function longLived(lab: Lab, host: string, addr: string, port: number): Promise<{ proc: LabProcess; localPort: number }> {
  const proc = lab.spawn(host, [process.execPath, '-e', LONG_LIVED, addr, String(port)], {}, `long-lived ${host} -> ${addr}:${port}`);
  try {
    const line = await proc.waitForLine(/^connected \d+$/, 15_000);
    await proc.waitForLine(/^echo 2$/, 15_000);
    return { proc, localPort: Number(line.split(' ')[1]) };
  } catch (err) {
    await proc.stop(1_000);
    throw err;
  }
}

/** Waits for `more` further echoes on a LONG_LIVED connection and checks it is intact. */
export async function assertStillEchoes(conn: LabProcess, more: number, what: string): Promise<void> {
  const from = conn.output.length;
  const want = lastEcho(conn.output) + more;
  try {
    await conn.waitForLine(new RegExp(`^echo ${want}$`), 20_000, from);
  } catch (err) {
    assert.fail(`${what}: the connection stopped echoing (last echo ${lastEcho(conn.output)}, wanted ${want}): ${(err as Error).message}`);
  }
  assert.ok(conn.running, `${what}: ${conn.name} still runs`);
  assert.doesNotMatch(conn.output, /^(error|closed|unexpected)/m, what);
}

// A keyless prober: for each address, connect() attempts back to back (300 ms each) until SIGTERM
// (or maxMs); a connection that succeeds is kept open. At the end it writes a line on every kept
// connection and counts those that still echo. Prints "probing", then one JSON line.
const PROBER = `
const net = require('net');
const [port, maxMs, ...addrs] = process.argv.slice(1);
let attempts = 0, successes = 0, running = true;
const kept = [];
function loop(addr) {
  if (!running) return;
  attempts++;
  const s = net.connect({ host: addr, port: Number(port) });
  let settled = false;
  const next = () => { if (!settled) { settled = true; setImmediate(() => loop(addr)); } };
  const t = setTimeout(() => { s.destroy(); next(); }, 300);
  s.on('connect', () => { clearTimeout(t); successes++; kept.push(s); next(); });
  s.on('error', () => { clearTimeout(t); s.destroy(); setTimeout(next, 50); });
}
function finish() {
  if (!running) return;
  running = false;
  let alive = 0;
  for (const s of kept) {
    s.setEncoding('utf8');
    s.on('data', () => { if (!s.counted) { s.counted = true; alive++; } });
    s.on('error', () => {});
    s.write('probe\\n');
  }
  setTimeout(() => { console.log(JSON.stringify({ attempts, successes, alive })); process.exit(0); }, kept.length ? 2000 : 0);
}
process.on('SIGTERM', finish);
setTimeout(finish, Number(maxMs));
console.log('probing');
for (const a of addrs) loop(a);
`;

export interface ProbeResult {
  attempts: number;
  successes: number;
  alive: number;
}

/** Starts a keyless prober in host against addrs:port; stop() ends it and returns the counts. */
export async function startProber(lab: Lab, host: string, addrs: string[], port: number, maxMs = 60_000) {
  const proc = lab.spawn(host, [process.execPath, '-e', PROBER, String(port), String(maxMs), ...addrs], {}, `prober ${host}`);
  await proc.waitForLine(/^probing$/, 10_000);
  return {
    proc,
    async stop(): Promise<ProbeResult> {
      proc.signal('SIGTERM');
      await Promise.race([proc.exited, sleep(10_000)]);
      await proc.stop(1_000, 'SIGKILL');
      const line = proc.stdout.trim().split('\n').pop() ?? '';
      try {
        return JSON.parse(line) as ProbeResult;
      } catch {
        throw new Error(`prober printed no result: ${proc.output}`);
      }
    },
  };
}

/** The prober tried at least minAttempts times and never got a connection (nor kept one). */
export function assertProberBlocked(probe: ProbeResult, minAttempts: number, when: string): void {
  assert.ok(probe.attempts >= minAttempts, `the prober tried: ${JSON.stringify(probe)}`);
  assert.equal(probe.successes, 0, `keyless connects ${when}: ${JSON.stringify(probe)}`);
  assert.equal(probe.alive, 0, `keyless connections kept: ${JSON.stringify(probe)}`);
}

/** Polls a connect from host to addr:port until it succeeds (a knock is acted on asynchronously), bounded. */
export async function connectsWithin(lab: Lab, host: string, addr: string, port: number, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  let last = '';
  while (Date.now() < deadline) {
    const r = await lab.tcpConnect(host, addr, port, 500);
    if (r.ok) return;
    last = r.error ?? '';
    await sleep(100);
  }
  assert.fail(`${what}: no connect within ${ms} ms (last: ${last})`);
}

// Connects, prints "connected", stays idle for idleMs, then sends one line: prints "echoed" when it
// comes back within 3 s, else "no echo" (or "error <code>" / "closed").
export const IDLE_THEN_SEND = `
const net = require('net');
const [addr, port, idleMs] = process.argv.slice(1);
const s = net.connect({ host: addr, port: Number(port) });
s.setEncoding('utf8');
s.on('connect', () => {
  console.log('connected');
  setTimeout(() => {
    s.write('after idle\\n');
    setTimeout(() => { console.log('no echo'); process.exit(1); }, 3000);
  }, Number(idleMs));
});
s.on('data', (d) => { if (d.includes('after idle')) { console.log('echoed'); process.exit(0); } });
s.on('error', (e) => { console.log('error ' + (e.code || e.message)); process.exit(1); });
s.on('close', () => { console.log('closed'); process.exit(1); });
`;

/** Runs attack.py in a host; returns its JSON line (throws when it reports an error). */
export async function attackPy(lab: Lab, host: string, args: string[]): Promise<Record<string, unknown>> {
  const r = await lab.exec(host, [SYSTEM_PYTHON, ATTACK_PY, ...args], { timeoutMs: 60_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let out: Record<string, unknown>;
  try {
    out = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`attack.py ${args[0]} failed (exit ${r.code}): ${r.stderr}${r.stdout}`);
  }
  if (out.error !== undefined) throw new Error(`attack.py ${args.join(' ')}: ${line}`);
  return out;
}

/** replay.py from host: the first SYN to dst:dport in pcap, resent from `src` (to toPort if given). */
export async function replayPy(
  lab: Lab,
  host: string,
  o: { pcap: string; src: string; dst: string; dstMac: string; dport: number; toPort?: number },
): Promise<{ answer?: string; captured?: { src: string; seq: number; has_spak_option: boolean } }> {
  const argv = [SYSTEM_PYTHON, REPLAY_PY, '--pcap', o.pcap, '--iface', 'eth0', '--src', o.src, '--dst', o.dst,
    '--dst-mac', o.dstMac, '--dport', String(o.dport), '--timeout', '3'];
  if (o.toPort !== undefined) argv.push('--to-port', String(o.toPort));
  const r = await lab.exec(host, argv, { timeoutMs: 60_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let out: { answer?: string; error?: string; captured?: { src: string; seq: number; has_spak_option: boolean } };
  try {
    out = JSON.parse(line) as typeof out;
  } catch {
    throw new Error(`replay.py failed (exit ${r.code}): ${r.stderr}${r.stdout}`);
  }
  assert.equal(out.error, undefined, `replay.py: ${line}`);
  return out;
}

/**
 * Captures (tcpdump in `host`, on eth0) the TCP packets to dport while fn runs; resolves once
 * something past the pcap header is in the file. Returns the pcap path.
 */
export async function capture(
  lab: Lab, host: string, dport: number, name: string, fn: () => Promise<void>, proto: 'tcp' | 'udp' = 'tcp',
): Promise<string> {
  const pcap = path.join(lab.dir, `${name}.pcap`);
  // --immediate-mode: without it packets wait in the capture ring for up to a second.
  const dump = lab.spawn(host, ['tcpdump', '-i', 'eth0', '-n', '-U', '--immediate-mode', '-Z', 'root', '-w', pcap,
    proto, 'dst', 'port', String(dport)], {}, `tcpdump ${host} ${name}`);
  try {
    await dump.waitForLine(/listening on/, 10_000);
    await fn();
    for (let i = 0; i < 100 && !(existsSync(pcap) && statSync(pcap).size > PCAP_HEADER_LEN); i++) await sleep(50);
  } finally {
    await dump.stop();
  }
  assert.ok(existsSync(pcap) && statSync(pcap).size > PCAP_HEADER_LEN, `tcpdump captured the ${proto === 'tcp' ? 'SYN' : 'datagram'}: ${dump.output}`);
  return pcap;
}

/** The difference of one counter between two readings. */
export function delta(before: Record<string, number>, after: Record<string, number>, name: string): number {
  return (after[name] ?? 0) - (before[name] ?? 0);
}

type Stoppable = { stop(): Promise<unknown> } | null | undefined;

/** Stops the given processes, then removes what spak left on each of `hosts`. Never throws. */
export async function stopAndClean(lab: Lab, hosts: readonly string[], ...procs: Stoppable[]): Promise<void> {
  for (const p of procs) await p?.stop().catch(() => undefined);
  for (const h of hosts) await lab.cleanupSpak(h);
}

/** Stops the given processes and removes what spak left on the server and the client host. */
export async function cleanupHosts(lab: Lab, ...procs: Stoppable[]): Promise<void> {
  await stopAndClean(lab, [SRV, CLI], ...procs);
}

/** Asserts that an HTTP GET from host to every (address, port) succeeds. */
export async function assertConnects(lab: Lab, host: string, targets: { addr: string; port: number }[], what: string): Promise<void> {
  for (const t of targets) {
    const r = await lab.httpGet(host, t.addr, t.port);
    assert.ok(r.ok, `${what}: ${host} -> ${t.addr} port ${t.port}: ${r.error}`);
  }
}

/** Runs `spak <args>` in a host and asserts it exits 0; returns its stdout. */
export async function spakOk(lab: Lab, host: string, args: string[]): Promise<string> {
  const r = await lab.spak(host, args);
  assert.equal(r.code, 0, `spak ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/**
 * A knock client: `spak keygen client` on `host` (its bundle and key pair go to `home`), its public
 * key and its policy (NAME.json) put in the server's `clientsDir`. Returns the bundle's path.
 */
export async function newKnockClient(
  lab: Lab, o: { host: string; name: string; serverPub: string; home: string; clientsDir: string; policy: Record<string, unknown> },
): Promise<string> {
  await spakOk(lab, o.host, ['keygen', 'client', '--name', o.name, '--server-pub', o.serverPub, '--out', o.home]);
  writeFileSync(path.join(o.clientsDir, `${o.name}.json`), JSON.stringify(o.policy));
  copyFileSync(path.join(o.home, `${o.name}.pub`), path.join(o.clientsDir, `${o.name}.pub`));
  return path.join(o.home, `${o.name}.spak`);
}

/**
 * Sends the client's captured SYN from the third host: first to a port nothing protects (the
 * control: answered with RST, so silence below is spak's doing), then to the protected port,
 * where it must get no answer, move `reason` and let nothing pass as valid.
 */
export async function assertCapturedSynRefused(
  lab: Lab, server: { counters(): Promise<Record<string, number>> },
  o: { pcap: string; src: string; dst: string; dstMac: string; dport: number }, reason: string, what: string,
): Promise<void> {
  assert.equal((await replayPy(lab, OTH, { ...o, toPort: o.dport + 1 })).answer, 'rst', `control (${what})`);
  const before = await server.counters();
  const out = await replayPy(lab, OTH, o);
  assert.equal(out.captured?.src, lab.host(CLI)[o.dst.includes(':') ? 'v6' : 'v4'], `the captured SYN is the client's (${what})`);
  assert.equal(out.captured?.has_spak_option, true, `the captured SYN carries the spak option (${what})`);
  assert.equal(out.answer, 'none', `no answer to the captured SYN from the third host (${what})`);
  const after = await server.counters();
  assert.ok(delta(before, after, reason) >= 1, `${reason} (${what}): ${JSON.stringify(after)}`);
  assert.equal(delta(before, after, 'pass_valid_syn'), 0, `nothing passed as valid (${what})`);
}

/** Starts `spak server` on host with config and waits for its knock port line; stops it if that never comes. */
export async function startKnockServer(lab: Lab, host: string, config: SpakServerConfig): Promise<SpakProcess> {
  const server = await startSpak(lab, host, 'server', { config });
  try {
    await server.proc.waitForLine(/spak server: knock port/, 10_000);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

/**
 * What the knock files start from: the server's keys (`server-keys`) and clients directory
 * (`clients`) in the lab's directory, and one client, `laptop`, on CLI with `policy`.
 */
export async function knockKeysAndLaptop(lab: Lab, policy: Record<string, unknown>): Promise<{ keysDir: string; clientsDir: string; bundle: string }> {
  const keysDir = path.join(lab.dir, 'server-keys');
  const clientsDir = path.join(lab.dir, 'clients');
  mkdirSync(clientsDir, { recursive: true });
  await spakOk(lab, SRV, ['keygen', 'server', '--out', keysDir]);
  const bundle = await newKnockClient(lab, {
    host: CLI, name: 'laptop', serverPub: path.join(keysDir, 'server.pub'), home: path.join(lab.dir, 'client-home'), clientsDir, policy,
  });
  return { keysDir, clientsDir, bundle };
}
