// The SYN-mode server: loads server.bpf.o, fills its maps, attaches it at XDP and
// keeps the clock offset and the flow table tidy while it runs.
import { mkdirSync, rmdirSync, rmSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  attachXdp,
  BpfMap,
  BpfObject,
  type BpfProgram,
  ifIndex,
  type XdpAttachment,
  type XdpMode,
} from '../bpf/libbpf.js';
import { keepClockCurrent, monotonicNs, writeTimeConfig } from '../bpf/clock.js';
import { readCounters } from '../bpf/counters.js';
import { objectPath } from '../bpf/objects.js';
import {
  addrTo16,
  decodeFlow,
  encodeDest,
  encodeFlow,
  encodeFlowKey,
  encodeKeySlot,
  encodePortSlot,
  encodeProtect,
  portBit,
  SERVER_REASON_NAMES,
  SPAK_PORT_SEVERAL,
  SPAK_PORT_SINGLE,
  SPAK_PROTECT_TAG_ADDR,
  SPAK_PROTECT_TAG_PORT,
  SPAK_FLOW_CLOSING,
  SPAK_FLOW_OPEN,
  type ServerReason,
} from '../wire/layout.js';
import { liveTcpSockets, TCP_ESTABLISHED, type KernelSocket } from './seed.js';

export interface ProtectedDest {
  address: string;
  port: number;
  /** Behind DNAT: what clients dial, and so what their tags are bound to. */
  dialAddress?: string | undefined;
  dialPort?: number | undefined;
}

export interface ServerKey {
  id: number;
  key: Buffer;
}

export interface ServerOptions {
  iface: string;
  xdpMode: XdpMode;
  keys: ServerKey[];
  protect: ProtectedDest[];
  stepSeconds: number;
  stepWindow: number;
  flowIdleSeconds: number;
  flowFinSeconds: number;
  /** Seed flows from the kernel's sockets so existing connections survive. */
  seedExisting: boolean;
  /** Pin the maps here (a bpffs directory) so `spak stats` can read them. */
  pinDir?: string | undefined;
  logger?: Logger | undefined;
}

const NS = 1_000_000_000n;
const FLOW_SWEEP_MS = 5_000;
export const SERVER_MAPS = ['spak_config', 'spak_ports', 'spak_port_slots', 'spak_protected', 'spak_protected_addrs', 'spak_keys', 'spak_flows', 'spak_replay', 'spak_server_counters'] as const;

export interface StartedServer {
  ifname: string;
  ifindex: number;
  mode: 'native' | 'generic';
  seededFlows: number;
}

export class SpakServer {
  readonly #opts: ServerOptions;
  #obj: BpfObject | null = null;
  #xdp: XdpAttachment | null = null;
  #timers: NodeJS.Timeout[] = [];
  #pinned: string[] = [];
  #pinDir: string | null = null;

  constructor(opts: ServerOptions) {
    this.#opts = opts;
  }

  /** Loads, configures and attaches. On any failure everything done so far is undone. */
  start(): StartedServer {
    const ifindex = ifIndex(this.#opts.iface);
    try {
      this.load();
      return { ...this.attach(), ifindex };
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  /**
   * Loads server.bpf.o and fills every map but the flows; attaches nothing. Benchmarks and
   * tests run the program from here with BPF_PROG_TEST_RUN.
   */
  load(): BpfProgram {
    const obj = BpfObject.open(objectPath('server'));
    this.#obj = obj;
    obj.load();
    writeTimeConfig(obj.map('spak_config'), this.#opts);
    this.#writeKeys();
    return obj.program('spak_server');
  }

  /** Seeds existing connections, enables protection and attaches at XDP. */
  attach(): Omit<StartedServer, 'ifindex'> {
    const o = this.#opts;
    if (!this.#obj) throw new Error('server is not loaded');
    // Flows first, then what is protected: no moment where a live connection is gated.
    let seeded = o.seedExisting ? this.#seedFlows() : 0;
    this.#writeProtected();
    this.#xdp = attachXdp(this.#obj.program('spak_server'), o.iface, {
      mode: o.xdpMode,
      onWarning: (msg: string) => o.logger?.warn(msg),
    });
    // A connection completed between the first scan and the attach is caught here.
    if (o.seedExisting) seeded = Math.max(seeded, this.#seedFlows());
    if (o.pinDir) this.#pin(o.pinDir);
    this.#timers.push(keepClockCurrent(this.#map('spak_config'), o, (err) => o.logger?.error({ err }, 'clock refresh failed')));
    const sweep = setInterval(() => this.#safely('flow sweep', () => this.sweepFlows()), FLOW_SWEEP_MS);
    sweep.unref();
    this.#timers.push(sweep);
    return { ifname: o.iface, mode: this.#xdp.mode, seededFlows: seeded };
  }

  /** Turns protection on without attaching (for BPF_PROG_TEST_RUN). */
  protectWithoutAttaching(): void {
    this.#writeProtected();
  }

  /** A map of the loaded object, for tests and benchmarks. */
  map(name: (typeof SERVER_MAPS)[number]): BpfMap {
    return this.#map(name);
  }

  /** Detaches and unloads; idempotent. */
  stop(): void {
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    try {
      this.#xdp?.detach();
    } finally {
      this.#xdp = null;
      for (const p of this.#pinned) BpfMapUnpin(p);
      this.#pinned = [];
      if (this.#pinDir) {
        try {
          rmdirSync(this.#pinDir);
        } catch {
          // not empty or not ours to remove
        }
        this.#pinDir = null;
      }
      this.#obj?.close();
      this.#obj = null;
    }
  }

  /** Verdict counters summed over CPUs. */
  counters(): Record<ServerReason, bigint> {
    return readCounters(this.#map('spak_server_counters'), SERVER_REASON_NAMES);
  }

  /**
   * Deletes flows idle past their limit (the XDP program also expires them lazily). A flow a FIN
   * or RST marked closing is reopened while the kernel still has the connection established (the
   * XDP program cannot tell a blind injected FIN/RST from a real one, the TCP stack can) and kept
   * while its socket is in any other live state (a half-close can last long).
   */
  sweepFlows(sockets: KernelSocket[] = liveTcpSockets()): { removed: number; reopened: number } {
    const flows = this.#map('spak_flows');
    const now = monotonicNs();
    const idle = BigInt(this.#opts.flowIdleSeconds) * NS;
    const fin = BigInt(this.#opts.flowFinSeconds) * NS;
    // The kernel's view of each connection, keyed like the flow table.
    const kernel = new Map(
      sockets.map((k) => [
        encodeFlowKey({ saddr: k.remoteAddr, daddr: k.localAddr, sport: k.remotePort, dport: k.localPort }).toString('hex'),
        k.state,
      ]),
    );
    let removed = 0;
    let reopened = 0;
    for (const key of flows.keys()) {
      const v = flows.lookup(key);
      if (!v) continue;
      const f = decodeFlow(v);
      const socketState = f.state === SPAK_FLOW_CLOSING ? kernel.get(key.toString('hex')) : undefined;
      if (socketState !== undefined) {
        // Established: the FIN/RST was not real. Any other live state is a close in progress,
        // perhaps a long half-close (the server still sending): keep the flow while it lasts.
        const state = socketState === TCP_ESTABLISHED ? SPAK_FLOW_OPEN : SPAK_FLOW_CLOSING;
        flows.update(key, encodeFlow({ lastSeenNs: now, state }), 'exist');
        if (state === SPAK_FLOW_OPEN) reopened++;
        continue;
      }
      const limit = f.state === SPAK_FLOW_CLOSING ? fin : idle;
      if (now - f.lastSeenNs > limit && flows.delete(key)) removed++;
    }
    return { removed, reopened };
  }

  #map(name: (typeof SERVER_MAPS)[number]): BpfMap {
    if (!this.#obj) throw new Error('server is not running');
    return this.#obj.map(name);
  }

  #safely(what: string, fn: () => unknown): void {
    try {
      fn();
    } catch (err) {
      this.#opts.logger?.error({ err }, `${what} failed`);
    }
  }

  #writeKeys(): void {
    const keys = this.#map('spak_keys');
    for (const k of this.#opts.keys) keys.update(u32(k.id), encodeKeySlot({ key: k.key, valid: true }));
  }

  #writeProtected(): void {
    const prot = this.#map('spak_protected');
    const addrs = this.#map('spak_protected_addrs');
    const ports = this.#map('spak_ports');
    const slots = this.#map('spak_port_slots');
    const words = new Map<number, bigint>();
    const perPort = new Map<number, ProtectedDest[]>();
    for (const d of this.#opts.protect) {
      prot.update(encodeDest({ addr: d.address, port: d.port }), encodeProtect(tagBinding(d)));
      addrs.update(addrTo16(d.address), u32(1));
      perPort.set(d.port, [...(perPort.get(d.port) ?? []), d]);
      const { index, bit } = portBit(d.port);
      words.set(index, (words.get(index) ?? 0n) | bit);
    }
    // A port with one protected address is answered from its slot; several go to the hash.
    for (const [port, dests] of perPort) {
      const d = dests[0]!;
      const single = dests.length === 1;
      const mode = single ? SPAK_PORT_SINGLE : SPAK_PORT_SEVERAL;
      slots.update(u32(port), encodePortSlot({ addr: single ? d.address : '::', protect: tagBinding(d), mode }));
    }
    // The port bitmap goes last: until a port's bit is set nothing on it is gated.
    for (const [w, bits] of words) {
      const v = Buffer.alloc(8);
      v.writeBigUInt64LE(bits);
      ports.update(u32(w), v);
    }
  }

  #seedFlows(): number {
    const flows = this.#map('spak_flows');
    const wanted = this.#opts.protect.map((d) => ({ addr: addrTo16(d.address), port: d.port }));
    const wildcard4 = addrTo16('0.0.0.0');
    const wildcard6 = addrTo16('::');
    const now = monotonicNs();
    let n = 0;
    for (const s of liveTcpSockets()) {
      const local = addrTo16(s.localAddr);
      const v4 = s.localAddr.includes('.');
      const hit = wanted.some(
        (w) => w.port === s.localPort && (w.addr.equals(local) || w.addr.equals(v4 ? wildcard4 : wildcard6)),
      );
      if (!hit) continue;
      const key = encodeFlowKey({ saddr: s.remoteAddr, daddr: s.localAddr, sport: s.remotePort, dport: s.localPort });
      flows.update(key, encodeFlow({ lastSeenNs: now, state: SPAK_FLOW_OPEN }));
      n++;
    }
    return n;
  }

  #pin(dir: string): void {
    if (!this.#obj) return;
    mkdirSync(dir, { recursive: true });
    this.#pinDir = dir;
    for (const name of SERVER_MAPS) {
      const path = `${dir}/${name}`;
      this.#obj.map(name).pin(path);
      this.#pinned.push(path);
    }
  }
}

/** What a destination's tags are bound to: itself, or behind DNAT what clients dial. */
function tagBinding(d: ProtectedDest) {
  return {
    tagAddr: d.dialAddress ?? '::',
    tagPort: d.dialPort ?? 0,
    flags: (d.dialAddress !== undefined ? SPAK_PROTECT_TAG_ADDR : 0) | (d.dialPort !== undefined ? SPAK_PROTECT_TAG_PORT : 0),
  };
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function BpfMapUnpin(path: string): void {
  rmSync(path, { force: true });
}
