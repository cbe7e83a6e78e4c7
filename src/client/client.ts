// The SYN-mode client: loads client.bpf.o, tells it which destinations to tag with
// which key, and attaches it at TC egress. Programs that connect() need no change.
// One client per interface: its filter has a fixed handle and priority, a lock says
// whether a live daemon owns it, and a filter left by a dead one is replaced in place.
import type { Logger } from 'pino';
import { attachTc, BpfObject, ifIndex, queryTc, tryLock, type BpfMap, type TcAttachment } from '../bpf/libbpf.js';
import { keepClockCurrent, writeTimeConfig } from '../bpf/clock.js';
import { readCounters } from '../bpf/counters.js';
import { objectPath } from '../bpf/object-files.js';
import { pinPaths } from '../bpf/pins.js';
import { destinationState } from '../wire/option.js';
import { encodeDest, encodeTarget, SPAK_TIN_SOURCE_BOUND } from '../wire/layout.js';
import { CLIENT_REASON_NAMES, type ClientReason } from '../wire/reasons.js';

export interface ClientTarget {
  address: string;
  port: number;
  keyId: number;
  key: Buffer;
  /** Cover the source address in the tag (the server's destination must say the same). */
  bindSource?: boolean | undefined;
}

export interface ClientOptions {
  iface: string;
  targets: ClientTarget[];
  stepSeconds: number;
  logger?: Logger | undefined;
}

export interface StartedClient {
  ifname: string;
  ifindex: number;
  /** A filter a dead client left was replaced. */
  replaced: boolean;
}

/** spak's egress filter: fixed, so a second client finds the first. "SP" and priority 1. */
export const CLIENT_TC_HANDLE = 0x5350;
export const CLIENT_TC_PRIORITY = 1;

/** The one writer of spak_targets: each destination's key id, binding and SipHash state. */
export function writeTargets(map: BpfMap, targets: ClientTarget[]): void {
  for (const t of targets) {
    const bound = t.bindSource === true;
    const state = destinationState(t.key, { keyId: t.keyId, dport: t.port, daddr: t.address, bindSource: bound });
    map.update(encodeDest({ addr: t.address, port: t.port }), encodeTarget({ state, keyId: t.keyId, flags: bound ? SPAK_TIN_SOURCE_BOUND : 0 }));
  }
}

export class SpakClient {
  readonly #opts: ClientOptions;
  #obj: BpfObject | null = null;
  #tc: TcAttachment | null = null;
  #timer: NodeJS.Timeout | null = null;
  #lock: { release(): void } | null = null;

  constructor(opts: ClientOptions) {
    this.#opts = opts;
  }

  /** Loads, configures and attaches at egress; undoes everything on failure. */
  start(): StartedClient {
    const o = this.#opts;
    const ifindex = ifIndex(o.iface);
    const file = objectPath('client');
    const lock = tryLock(pinPaths(o.iface, 'client').lock);
    if (!lock.acquired) throw new Error(`a spak client already runs on ${o.iface} (pid ${lock.heldBy ?? 'unknown'})`);
    this.#lock = lock;
    try {
      const obj = BpfObject.open(file);
      this.#obj = obj;
      obj.load();
      writeTimeConfig(obj.map('spak_config'), o);
      writeTargets(obj.map('spak_targets'), o.targets);
      // The lock is ours, so a filter at our handle was left by a client that died: replace it.
      const stale = queryTc(o.iface, 'egress', CLIENT_TC_HANDLE, CLIENT_TC_PRIORITY) !== null;
      this.#tc = attachTc(obj.program('spak_client'), o.iface, 'egress', { handle: CLIENT_TC_HANDLE, priority: CLIENT_TC_PRIORITY, replace: true });
      this.#timer = keepClockCurrent(obj.map('spak_config'), o, (err) => o.logger?.error({ err }, 'clock refresh failed'));
      return { ifname: o.iface, ifindex, replaced: stale };
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  /** Detaches and unloads; idempotent. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    try {
      this.#tc?.detach();
    } finally {
      this.#tc = null;
      this.#obj?.close();
      this.#obj = null;
      this.#lock?.release();
      this.#lock = null;
    }
  }

  /** Verdict counters summed over CPUs. */
  counters(): Record<ClientReason, bigint> {
    return readCounters(this.#map('spak_client_counters'), CLIENT_REASON_NAMES);
  }

  #map(name: string): BpfMap {
    if (!this.#obj) throw new Error('client is not running');
    return this.#obj.map(name);
  }
}
