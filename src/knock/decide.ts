// What a knock that opened gets: a rejection reason, or the allowlist entries to write. One pure
// function (no clock, no maps, no log) so that the service and the unit tests run the same
// decisions; the service does the writing, counting and logging around it.
import { addrTo16, inNetwork } from '../wire/address.js';
import { KNOCK_REJECTS, type Access, type KnockPlain } from './datagram.js';
import type { KnockPolicy } from './policy.js';

/** Reasons the service adds to the datagram's own (KNOCK_REJECTS). */
export const KNOCK_POLICY_REJECTS = [
  'source_not_allowed',    // packet source (or the address named) outside the client's fromNetworks
  'port_not_allowed',      // a requested protocol/port is not in the policy (or nothing is allowed)
  'duration_over_max',     // requested duration above the policy's maximum
  'bad_allow_address',     // named address to allow is unspecified, multicast or broadcast
  'before_fence',          // stamped at or before the replay memory's fence (knock/replay.ts): it may have opened before
  'replay_store_failed',   // the nonce could not be recorded (the replay memory is full): refused rather than replayable
  'allowlist_failed',      // writing the allowlist map failed (full?)
  'internal_error',        // anything else thrown while handling
] as const;
export type KnockRejectReason = (typeof KNOCK_REJECTS)[number] | (typeof KNOCK_POLICY_REJECTS)[number];
/** Every reason, in counter-slot order. */
export const KNOCK_REJECT_REASONS: readonly KnockRejectReason[] = [...KNOCK_REJECTS, ...KNOCK_POLICY_REJECTS];

export const DEFAULT_KNOCK_WINDOW_S = 30;
const NS = 1_000_000_000n;

/** null when the timestamp is within +-windowS of nowS. */
export function checkFreshness(timestamp: number, nowS: number, windowS = DEFAULT_KNOCK_WINDOW_S): 'expired' | 'future' | null {
  if (timestamp < nowS - windowS) return 'expired';
  if (timestamp > nowS + windowS) return 'future';
  return null;
}

/** Addresses an allowlist entry must never name. */
export function unusableAllowAddress(a16: Buffer): boolean {
  const v4 = a16.subarray(0, 12).equals(Buffer.from('00000000000000000000ffff', 'hex'));
  if (v4) return a16[12] === 0 || a16[12]! >= 224; // 0.0.0.0/8, multicast, reserved, broadcast
  return a16.every((b) => b === 0) || a16[0] === 0xff;
}

/** The server's own addresses in the form decideKnock looks them up (IPv4 and ::ffff:IPv4 alike). */
export const addressSet = (addrs: Iterable<string>): Set<string> => new Set([...addrs].map((a) => addrTo16(a).toString('hex')));

/** What the replay memory says of a knock: 'new' (and recorded now), or why it is refused. */
export type ReplayVerdict = 'new' | 'replayed' | 'before_fence';

/** The replay check (knock/replay.ts ReplayMemory): records a new (client, nonce). May throw (a memory that cannot record). */
export interface ReplayCheck {
  check(clientId: number, nonce: Buffer, timestamp: number, nowS: number): ReplayVerdict;
}

export interface KnockFacts {
  /** The opened plaintext. */
  plain: KnockPlain;
  client: { id: number; policy: KnockPolicy };
  /** The directory dropped or replaced this client while HPKE ran. */
  revoked: boolean;
  /** The packet's source, normalized ("1.2.3.4", not "::ffff:1.2.3.4"). */
  src: string;
  /** Wall clock, unix seconds: what the knock's timestamp is checked against. */
  nowS: number;
  /** CLOCK_MONOTONIC in ns (process.hrtime.bigint()): the clock of the allowlist's expiry. */
  monoNs: bigint;
  windowS: number;
  /** As addressSet builds them; a knock must name one of them. */
  serverAddrs: ReadonlySet<string>;
  /** Consulted only for knocks that are fresh and sent to this server; records the nonce. */
  replay: ReplayCheck;
}

/** Allowlist entries for addr, one per protocol/port, with the policy's timing. */
export interface KnockGrant {
  addr: string;
  /** Deduplicated, in the order asked. */
  open: Access[];
  durationS: number;
  expiresNs: bigint;
  idleNs: bigint;
  graceNs: bigint;
}

export type KnockDecision = { ok: true; grant: KnockGrant } | { ok: false; reason: KnockRejectReason; detail?: string };

const no = (reason: KnockRejectReason, detail?: string): KnockDecision => (detail === undefined ? { ok: false, reason } : { ok: false, reason, detail });

/**
 * The checks after the open, in order: still served, freshness, server address, replay, then the
 * client's policy (source, ports, duration, the address to allow). The nonce is recorded before
 * the policy checks, so a knock refused by policy cannot be replayed either.
 */
export function decideKnock(f: KnockFacts): KnockDecision {
  const { plain: p, client, src } = f;
  if (f.revoked) return no('unknown_client', 'revoked');
  const fresh = checkFreshness(p.timestamp, f.nowS, f.windowS);
  if (fresh) return no(fresh, `timestamp ${p.timestamp}, now ${f.nowS}`);
  if (!f.serverAddrs.has(addrTo16(p.serverAddr).toString('hex'))) return no('wrong_server', `sent to ${p.serverAddr}`);
  let replay: ReplayVerdict;
  try {
    replay = f.replay.check(client.id, p.nonce, p.timestamp, f.nowS);
  } catch (err) {
    return no('replay_store_failed', (err as Error).message);
  }
  if (replay !== 'new') return no(replay);
  const pol = client.policy;
  const inFrom = (a16: Buffer): boolean => pol.fromNetworks.length === 0 || pol.fromNetworks.some((n) => inNetwork(a16, n));
  if (!inFrom(addrTo16(src))) return no('source_not_allowed');
  const want: Access[] = p.open.length > 0 ? p.open : pol.allow;
  if (want.length === 0) return no('port_not_allowed', 'the policy allows nothing');
  const denied = want.filter((a) => !pol.allow.some((b) => b.proto === a.proto && b.port === a.port));
  if (denied.length > 0) return no('port_not_allowed', denied.map((a) => `${a.proto}/${a.port}`).join(','));
  const durationS = p.durationS === 0 ? pol.defaultDurationSeconds : p.durationS;
  if (durationS > pol.maxDurationSeconds) return no('duration_over_max', `${durationS} s > ${pol.maxDurationSeconds} s`);
  // Behind NAT a client may name the address to allow (its public one); else the packet's source.
  const addr = p.allowAddr ?? src;
  const addr16 = addrTo16(addr);
  if (unusableAllowAddress(addr16)) return no('bad_allow_address', addr);
  // A named address must satisfy fromNetworks too, or naming one would sidestep it.
  if (p.allowAddr !== null && !inFrom(addr16)) return no('source_not_allowed', `address to allow ${addr} is outside fromNetworks`);
  return {
    ok: true,
    grant: {
      addr,
      open: [...new Map(want.map((a) => [`${a.proto}/${a.port}`, a])).values()],
      durationS,
      expiresNs: f.monoNs + BigInt(durationS) * NS,
      idleNs: BigInt(pol.idleExtensionSeconds) * NS,
      graceNs: BigInt(pol.graceSeconds) * NS,
    },
  };
}
