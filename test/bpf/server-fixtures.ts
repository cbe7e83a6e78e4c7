// Shared by the server packet matrices (server-*.test.ts): endpoints, the daemon-written setups
// (DEFAULT_SETUP and the four shapes of port 22) and frame builders. Not a test file.
//
// Setup, written by the daemon's own writer (ServerProgram.configure, through ServerHarness): keys 1 and 7 both valid
// (rotation), clients 198.51.100.2:40000 and [2001:db8::2]:40000. Port 22 is protected in four
// shapes, and the per-family matrix runs in each, so every lookup path of the program is taken:
//   several   198.51.100.1:22 and [2001:db8::1]:22 (two addresses on the port: the hash)
//   single    only the family's server address on 22 (the per-port slot)
//   wildcard  0.0.0.0:22 or [::]:22 (the slot, every address of the family, address bound at run)
//   all       "*":22 (every address of both families)
import { after, before } from 'node:test';
import { encodeFlowKey } from '../../src/wire/layout.js';
import { type ServerReason } from '../../src/wire/reasons.js';
import { buildTcp, padOptions, type TcpFlags, type TcpParams } from '../support/packet.js';
import {
  ServerHarness, settledStep, taggedSyn, KEY1, KEY7, type ServerSetup, type TaggedSynParams
} from './harness.js';

export const WRONG_KEY = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
export const ISN = 0x1234abcd;

export type Family = 4 | 6;

export interface Endpoints {
  family: Family;
  client: string;
  /** A second client: replay source. */
  other: string;
  server: string;
  /** An address of the server host that is not protected. */
  unprotected: string;
}

export const FAMILIES: Record<Family, Endpoints> = {
  4: { family: 4, client: '198.51.100.2', other: '198.51.100.3', server: '198.51.100.1', unprotected: '198.51.100.9' },
  6: { family: 6, client: '2001:db8::2', other: '2001:db8::3', server: '2001:db8::1', unprotected: '2001:db8::9' },
};

export const DNAT: ServerSetup['protect'] = [
  { address: '198.51.100.1', port: 8022, dialAddress: '203.0.113.10', dialPort: 2022 },
  { address: '2001:db8::1', port: 8022, dialPort: 2022 },
];

export const DEFAULT_SETUP: ServerSetup = {
  keys: [{ id: 1, key: KEY1 }, { id: 7, key: KEY7 }],
  protect: [{ address: '198.51.100.1', port: 22 }, { address: '2001:db8::1', port: 22 }, ...DNAT],
  stepSeconds: 30,
  stepWindow: 1,
  flowIdleSeconds: 300,
  flowFinSeconds: 10,
};

export type Shape = 'several' | 'single' | 'wildcard' | 'all';
export const SHAPES: Shape[] = ['several', 'single', 'wildcard', 'all'];

/** Port 22 of family e protected in the given shape (the DNAT entries stay). */
export function shapeSetup(shape: Shape, e: Endpoints): ServerSetup {
  const port22 =
    shape === 'several' ? DEFAULT_SETUP.protect.filter((d) => d.port === 22)
      : shape === 'single' ? [{ address: e.server, port: 22 }]
        : shape === 'wildcard' ? [{ address: e.family === 4 ? '0.0.0.0' : '::', port: 22 }]
          : [{ address: '*', port: 22 }];
  return { ...DEFAULT_SETUP, protect: [...port22, ...DNAT] };
}

/** What a segment to port 22 of e.unprotected meets: only the specific shapes leave that address alone. */
export function unprotectedAddrReason(shape: Shape): ServerReason {
  return shape === 'several' || shape === 'single' ? 'pass_unprotected' : 'drop_flow_miss';
}

/**
 * The test file's server program: loaded through the daemon's code before the file's tests,
 * closed after them. `use` reconfigures it (DEFAULT_SETUP with overrides, empty tables);
 * `step` is a time step safely inside the current one (see settledStep).
 */
export function fileServer() {
  const f = {
    srv: undefined as unknown as ServerHarness,
    use(s: Partial<ServerSetup> = {}): void {
      f.srv.configure({ ...DEFAULT_SETUP, ...s });
    },
    step: (): Promise<number> => settledStep(f.srv.stepSeconds),
  };
  before(() => {
    f.srv = new ServerHarness();
    f.srv.configure(DEFAULT_SETUP);
  });
  after(() => f.srv?.close());
  return f;
}

/** The base of every SYN from the client to a protected port (no options yet). */
export function synBase(e: Endpoints, o: Partial<TcpParams> = {}): Omit<TcpParams, 'flags'> {
  return { family: e.family, saddr: e.client, daddr: e.server, sport: 40000, dport: 22, seq: ISN, ...o };
}

/** A valid tagged SYN (key id 1, the current step) with overrides. */
export function validSyn(e: Endpoints, step: number, o: Partial<TaggedSynParams> = {}): Buffer {
  return taggedSyn({ ...synBase(e), key: KEY1, keyId: 1, timeStep: step, ...o });
}

/** A SYN with raw option bytes (padded with NOPs) and no tag logic. */
export function rawSyn(e: Endpoints, options: Buffer, o: Partial<TcpParams> = {}): Buffer {
  return buildTcp({ ...synBase(e), flags: { syn: true }, options: padOptions(options), ...o });
}

/** A later segment of the client's connection. */
export function segment(e: Endpoints, flags: TcpFlags, o: Partial<TcpParams> = {}): Buffer {
  return buildTcp({ ...synBase(e), seq: ISN + 1, ack: 0x55667788, flags, ...o });
}

export function flowKey(e: Endpoints, o: { saddr?: string; sport?: number; daddr?: string; dport?: number } = {}): Buffer {
  return encodeFlowKey({ saddr: o.saddr ?? e.client, daddr: o.daddr ?? e.server, sport: o.sport ?? 40000, dport: o.dport ?? 22 });
}


/** Inserts an 8-byte hop-by-hop options header (PadN) after the fixed IPv6 header of an untagged frame. */
export function withHopByHop(frame: Buffer): Buffer {
  const l3 = 14;
  const ip = Buffer.from(frame.subarray(l3, l3 + 40));
  const hbh = Buffer.from([ip[6]!, 0, 1, 4, 0, 0, 0, 0]); // next header, length 0 (8 bytes), PadN(4)
  ip[6] = 0; // hop-by-hop
  ip.writeUInt16BE(ip.readUInt16BE(4) + 8, 4);
  return Buffer.concat([frame.subarray(0, l3), ip, hbh, frame.subarray(l3 + 40)]);
}

/** Cuts an untagged frame to keep only `keep` bytes of L4 (lengths in the IP header left as they were). */
export function truncateL4(frame: Buffer, family: Family, keep: number): Buffer {
  return Buffer.from(frame.subarray(0, 14 + (family === 4 ? 20 : 40) + keep));
}

/** Puts n VLAN tags (tpid, vid) between the MAC addresses and the ethertype of a frame. */
export function withTags(frame: Buffer, n: number, tpid: number, vid: number): Buffer {
  const tags = Buffer.alloc(4 * n);
  for (let i = 0; i < n; i++) {
    tags.writeUInt16BE(tpid, 4 * i);
    tags.writeUInt16BE(vid, 4 * i + 2);
  }
  return Buffer.concat([frame.subarray(0, 12), tags, frame.subarray(12)]);
}

/** Adds an outer 802.1ad (QinQ) tag in front of a single-tagged frame. */
export function withOuterTag(frame: Buffer, vlan: number): Buffer {
  const tag = Buffer.alloc(4);
  tag.writeUInt16BE(0x88a8, 0);
  tag.writeUInt16BE(vlan, 2);
  return Buffer.concat([frame.subarray(0, 12), tag, frame.subarray(12)]);
}

