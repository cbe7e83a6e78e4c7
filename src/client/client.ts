// The SYN-mode client: loads client.bpf.o, tells it which destinations to tag with
// which key, and attaches it at TC egress. Programs that connect() need no change.
import type { Logger } from 'pino';
import { attachTc, BpfObject, ifIndex, type BpfMap, type TcAttachment } from '../bpf/libbpf.js';
import { keepClockCurrent, writeTimeConfig } from '../bpf/clock.js';
import { readCounters } from '../bpf/counters.js';
import { objectPath } from '../bpf/objects.js';
import { CLIENT_REASON_NAMES, encodeDest, encodeTarget, type ClientReason } from '../wire/layout.js';

export interface ClientTarget {
  address: string;
  port: number;
  keyId: number;
  key: Buffer;
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
}

export class SpakClient {
  readonly #opts: ClientOptions;
  #obj: BpfObject | null = null;
  #tc: TcAttachment | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(opts: ClientOptions) {
    this.#opts = opts;
  }

  /** Loads, configures and attaches at egress; undoes everything on failure. */
  start(): StartedClient {
    const o = this.#opts;
    const ifindex = ifIndex(o.iface);
    const file = objectPath('client');
    try {
      const obj = BpfObject.open(file);
      this.#obj = obj;
      obj.load();
      writeTimeConfig(obj.map('spak_config'), o);
      const targets = obj.map('spak_targets');
      for (const t of o.targets)
        targets.update(encodeDest({ addr: t.address, port: t.port }), encodeTarget({ key: t.key, keyId: t.keyId }));
      this.#tc = attachTc(obj.program('spak_client'), o.iface, 'egress');
      this.#timer = keepClockCurrent(obj.map('spak_config'), o, (err) => o.logger?.error({ err }, 'clock refresh failed'));
      return { ifname: o.iface, ifindex };
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
