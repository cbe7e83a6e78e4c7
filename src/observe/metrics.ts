// Prometheus metrics over HTTP (prom-client), on 127.0.0.1 by default. Every value is read
// when scraped: the verdict counters and table sizes from the kernel maps (through the live
// SpakServer objects), the knock counts from the running knock service. Nothing is cached.
//
// API the daemon calls (one call once the servers and the knock service run):
//
//   const m = await startMetrics({ listen: '127.0.0.1', port: 9862, sources, logger });
//   ... m.address, m.port (the bound ones: port 0 picks a free port) ...
//   await m.close();
//
// `sources` hands out the live objects at each scrape, so a reload that replaces them needs no
// restart of the endpoint:
//   sources.servers(): one { iface, enforcement: { hook, mode }, server } per protected
//     interface; `server` is a SpakServer (counters(), map()), and its destinationCounters(),
//     feeds spak_destination_packets_total: new-connection decisions per protected destination,
//     by outcome (bpf/spak_destcount.h);
//   sources.knock?(): the knock service or null.
// GET /metrics answers the text format; anything else 404.
import { chmodSync, chownSync, lstatSync, readFileSync, unlinkSync, type Stats } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { isIP } from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';
import type { BpfMap } from '../bpf/libbpf.js';
import { REPO_ROOT } from '../bpf/object-files.js';
import type { KnockService } from '../knock/service.js';
import { TABLES, tableFill } from './tables.js';
import { hostPort } from '../wire/address.js';
import { makeDirectory } from '../config/dirs.js';

export const DEFAULT_METRICS_LISTEN = '127.0.0.1';
export const DEFAULT_METRICS_PORT = 9862;

/**
 * What SpakServer.destinationCounters() returns: per protected destination (as configured), the
 * counts of its new-connection decisions by outcome (admit_tag, refuse_tag, ...).
 */
export interface DestinationCounts { address: string; port: number; protocol: 'tcp' | 'udp'; counts: Record<string, bigint> }

/** The `destination` label: "addr:port" or "[addr]:port", with "/udp" for UDP. */
export function destinationLabel(d: Pick<DestinationCounts, 'address' | 'port' | 'protocol'>): string {
  const hp = hostPort(d.address, d.port);
  return d.protocol === 'udp' ? `${hp}/udp` : hp;
}

/** What the metrics read of a server: SpakServer has all of it. */
export interface MetricsServerHandle {
  counters(): Record<string, bigint>;
  map(name: 'spak_flows' | 'spak_replay' | 'spak_allow'): BpfMap;
  /** HOOK for per-destination counters: used when the server has it, else the metric stays empty. */
  destinationCounters?: () => DestinationCounts[];
}

export interface MetricsServerSource {
  iface: string;
  /** How the interface is enforced, e.g. { hook: 'xdp', mode: 'native' }. */
  enforcement: { hook: string; mode: string };
  server: MetricsServerHandle;
}

export interface MetricsSources {
  servers(): MetricsServerSource[];
  knock?: () => Pick<KnockService, 'clientCounters'> | null;
}

export interface MetricsOptions {
  /** An address, or `unix:/PATH` for a unix socket (port unused). */
  listen: string;
  port: number;
  /** The unix socket's permissions (default 0600) and group (default the daemon's). */
  socketMode?: number | undefined;
  socketGid?: number | undefined;
  sources: MetricsSources;
  logger?: Logger | undefined;
}

export interface MetricsEndpoint {
  /** The bound address, or `unix:/PATH`. */
  address: string;
  port: number;
  /** How a scraper reaches it: http://ADDR:PORT/metrics, or unix:/PATH (mode 0660). */
  url: string;
  close(): Promise<void>;
}

/** The package version (package.json of this checkout or installed copy). */
export function spakVersion(): string {
  try {
    return (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

const num = (v: bigint | number): number => (typeof v === 'bigint' ? Number(v) : v);

/** A registry whose collect callbacks read `sources` at each scrape. */
export function metricsRegistry(sources: MetricsSources): Registry {
  const registry = new Registry();
  const registers = [registry];
  const version = spakVersion();

  new Gauge({
    name: 'spak_info', help: 'The running spak daemon (always 1); the version is a label.', labelNames: ['version'], registers,
    collect() {
      this.reset();
      this.set({ version }, 1);
    },
  });
  new Gauge({
    name: 'spak_enforcement_info', help: 'Protected interfaces (always 1): hook (xdp, tcx) and mode (native, generic) as labels.',
    labelNames: ['interface', 'hook', 'mode'], registers,
    collect() {
      this.reset();
      for (const s of sources.servers()) this.set({ interface: s.iface, hook: s.enforcement.hook, mode: s.enforcement.mode }, 1);
    },
  });
  new Counter({
    name: 'spak_verdicts_total', help: 'Packets the kernel program decided, by reason (per-CPU counters summed).',
    labelNames: ['interface', 'reason'], registers,
    collect() {
      this.reset();
      for (const s of sources.servers())
        for (const [reason, n] of Object.entries(s.server.counters())) this.inc({ interface: s.iface, reason }, num(n));
    },
  });
  new Counter({
    name: 'spak_destination_packets_total', help: 'New-connection decisions (SYNs, first UDP datagrams) per protected destination, by outcome.',
    labelNames: ['interface', 'destination', 'reason'], registers,
    collect() {
      this.reset();
      for (const s of sources.servers()) {
        const hook = s.server.destinationCounters;
        if (typeof hook !== 'function') continue;
        for (const d of hook.call(s.server))
          for (const [reason, n] of Object.entries(d.counts)) this.inc({ interface: s.iface, destination: destinationLabel(d), reason }, num(n));
      }
    },
  });
  new Gauge({
    name: 'spak_table_entries', help: 'Entries in use in the kernel tables (flows, replay, allowlist).',
    labelNames: ['interface', 'table'], registers,
    collect() {
      this.reset();
      for (const s of sources.servers())
        for (const [table, map] of Object.entries(TABLES)) this.set({ interface: s.iface, table }, tableFill(s.server.map(map)).entries);
    },
  });
  new Gauge({
    name: 'spak_table_capacity', help: 'Capacity of the kernel tables (flows, replay, allowlist).',
    labelNames: ['interface', 'table'], registers,
    collect() {
      this.reset();
      for (const s of sources.servers())
        for (const [table, map] of Object.entries(TABLES)) this.set({ interface: s.iface, table }, s.server.map(map).maxEntries);
    },
  });
  new Counter({
    name: 'spak_knocks_total', help: 'Knocks the daemon handled, by client and result (accepted or the rejection reason).',
    labelNames: ['client', 'result'], registers,
    collect() {
      this.reset();
      const k = sources.knock?.();
      if (!k) return;
      for (const c of k.clientCounters()) this.inc({ client: c.client, result: c.result }, c.count);
    },
  });
  return registry;
}

/** The metrics are served on a unix socket: `unix:/PATH` (an absolute path). */
export const UNIX_LISTEN = /^unix:(\/.+)$/;
export const DEFAULT_SOCKET_MODE = 0o600;

/** "addr:port", "[v6]:port", "unix:/PATH" or "off" (null). */
export function parseListen(text: string): { listen: string; port: number } | null {
  if (text === 'off') return null;
  if (UNIX_LISTEN.test(text)) return { listen: text, port: 0 };
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!m || isIP(m[1]!) === 0) throw new Error(`bad metrics address "${text}": expected ADDRESS:PORT ([v6]:PORT for IPv6), unix:/PATH or off`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`bad metrics port ${port}: at most 65535`);
  return { listen: m[1]!, port };
}

/** Serves GET /metrics on listen:port until close(). */
export async function startMetrics(o: MetricsOptions): Promise<MetricsEndpoint> {
  const registry = metricsRegistry(o.sources);
  const server: Server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => {
        o.logger?.error({ err }, 'metrics: reading the maps failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`spak: metrics: ${(err as Error)?.message ?? String(err)}\n`);
      },
    );
  });
  const socket = UNIX_LISTEN.exec(o.listen)?.[1];
  if (socket !== undefined) return listenUnix(server, socket, o);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.listen, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref(); // the daemon's own lifetime decides, not the endpoint
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? { address: addr.address, port: addr.port } : { address: o.listen, port: o.port };
  o.logger?.info({ address: bound.address, port: bound.port }, `metrics on http://${hostPort(bound.address, bound.port)}/metrics`);
  return { ...bound, url: `http://${hostPort(bound.address, bound.port)}/metrics`, close: () => closeServer(server) };
}

function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

/**
 * The endpoint on a unix socket at `file`, so that file permissions decide who reads the metrics
 * (client names among them): made with no access for anyone (umask), then given socketMode and
 * socketGid. A socket left by a daemon that did not stop cleanly is replaced; any other file there
 * is an error. Removed again by close().
 */
async function listenUnix(server: Server, file: string, o: MetricsOptions): Promise<MetricsEndpoint> {
  const mode = o.socketMode ?? DEFAULT_SOCKET_MODE;
  makeDirectory(path.dirname(file), 'metrics socket directory', 0o755);
  let st: Stats | null = null;
  try {
    st = lstatSync(file);
  } catch {
    // nothing there
  }
  if (st && !st.isSocket()) throw Object.assign(new Error(`${file} exists and is not a socket`), { code: 'EEXIST' });
  if (st) unlinkSync(file);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const umask = process.umask(0o177); // bind() creates the socket file: no one else may connect before the chmod
    try {
      server.listen(file, () => {
        server.off('error', reject);
        resolve();
      });
    } finally {
      process.umask(umask);
    }
  });
  server.unref();
  try {
    chmodSync(file, mode);
    if (o.socketGid !== undefined) chownSync(file, -1, o.socketGid);
  } catch (err) {
    await closeServer(server);
    throw err;
  }
  const url = `unix:${file}`;
  o.logger?.info({ socket: file, mode: mode.toString(8) }, `metrics on ${url}`);
  return {
    address: url, port: 0, url: `${url} (mode 0${mode.toString(8)})`,
    close: async () => {
      await closeServer(server); // node unlinks the socket file it bound; make sure of it
      try {
        unlinkSync(file);
      } catch {
        // gone already, or not ours to remove any more (after a privilege drop)
      }
    },
  };
}
