// What a knock that opened gets: a rejection reason, or the allowlist entries to write. One pure
// function (no clock, no maps, no log) so that the service and the unit tests run the same
// decisions; the service does the writing, counting and logging around it.
import { addrTo16, inNetwork } from '../wire/address.js';
import { KNOCK_REJECTS, type Access, type KnockPlain } from './datagram.js';
import type { KnockPolicy } from './policy.js';

/** Reasons the service adds to the datagram's own (KNOCK_REJECTS). */
export const KNOCK_POLICY_REJECTS = [
  'source_not_allowed',    // packet source outside the client's fromNetworks
  'source_mismatch',       // packet source is not the address the knock names (or it names none), and the policy has no nat
  'port_not_allowed',      // a requested protocol/port is not in the policy (or nothing is allowed)
  'duration_over_max',     // requested duration above the policy's maximum
  'bad_allow_address',     // address to allow is unspecified, loopback, link-local, multicast, broadcast or the server's own
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

/** Addresses an allowlist entry must never name (the server's own are checked against serverAddrs). */
export function unusableAllowAddress(a16: Buffer): boolean {
  const v4 = a16.subarray(0, 12).equals(Buffer.from('00000000000000000000ffff', 'hex'));
  // 0.0.0.0/8, loopback 127/8, link-local 169.254/16, multicast, reserved, broadcast
  if (v4) return a16[12] === 0 || a16[12] === 127 || (a16[12] === 169 && a16[13] === 254) || a16[12]! >= 224;
  const loopback = a16.subarray(0, 15).every((b) => b === 0) && a16[15] === 1;
  const linkLocal = a16[0] === 0xfe && (a16[1]! & 0xc0) === 0x80; // fe80::/10
  return a16.every((b) => b === 0) || loopback || linkLocal || a16[0] === 0xff;
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
  /** As addressSet builds them; a knock must name one of them, and none of them is ever allowed. */
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
 * The checks after the open, in order: still served, freshness, server address, the source (bound
 * to the address the knock names, unless the policy has nat; inside fromNetworks; an address that
 * may be allowed), replay, then the rest of the client's policy (ports, duration). The source is
 * checked before the replay check, so a thief sending a captured knock first from its own address
 * does not burn the nonce: the client's own copy still opens. The nonce is recorded before the
 * remaining policy checks, so a knock refused by them cannot be replayed either. The grant always
 * goes to the packet's source.
 */
export function decideKnock(f: KnockFacts): KnockDecision {
  const { plain: p, client, src } = f;
  if (f.revoked) return no('unknown_client', 'revoked');
  const fresh = checkFreshness(p.timestamp, f.nowS, f.windowS);
  if (fresh) return no(fresh, `timestamp ${p.timestamp}, now ${f.nowS}`);
  if (!f.serverAddrs.has(addrTo16(p.serverAddr).toString('hex'))) return no('wrong_server', `sent to ${p.serverAddr}`);
  const pol = client.policy;
  const src16 = addrTo16(src);
  // Bound to its sender: the knock names the address it was sent from. Behind NAT (policy nat) the
  // source may differ from the name; the grant goes to the source either way.
  const named = p.allowAddr === null ? null : addrTo16(p.allowAddr);
  if (!pol.nat && (named === null || !named.equals(src16)))
    return no('source_mismatch', named === null ? `from ${src}, names no address` : `from ${src}, names ${p.allowAddr}`);
  if (pol.fromNetworks.length > 0 && !pol.fromNetworks.some((n) => inNetwork(src16, n))) return no('source_not_allowed', `from ${src}`);
  if (unusableAllowAddress(src16) || f.serverAddrs.has(src16.toString('hex'))) return no('bad_allow_address', src);
  let replay: ReplayVerdict;
  try {
    replay = f.replay.check(client.id, p.nonce, p.timestamp, f.nowS);
  } catch (err) {
    return no('replay_store_failed', (err as Error).message);
  }
  if (replay !== 'new') return no(replay);
  const want: Access[] = p.open.length > 0 ? p.open : pol.allow;
  if (want.length === 0) return no('port_not_allowed', 'the policy allows nothing');
  const denied = want.filter((a) => !pol.allow.some((b) => b.proto === a.proto && b.port === a.port));
  if (denied.length > 0) return no('port_not_allowed', denied.map((a) => `${a.proto}/${a.port}`).join(','));
  const durationS = p.durationS === 0 ? pol.defaultDurationSeconds : p.durationS;
  if (durationS > pol.maxDurationSeconds) return no('duration_over_max', `${durationS} s > ${pol.maxDurationSeconds} s`);
  return {
    ok: true,
    grant: {
      addr: src,
      open: [...new Map(want.map((a) => [`${a.proto}/${a.port}`, a])).values()],
      durationS,
      expiresNs: f.monoNs + BigInt(durationS) * NS,
      idleNs: BigInt(pol.idleExtensionSeconds) * NS,
      graceNs: BigInt(pol.graceSeconds) * NS,
    },
  };
}
