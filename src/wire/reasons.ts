// The verdict reasons and destination outcomes of bpf/spak_wire.h, in header order: a reason's
// index is its per-CPU counter slot. test/unit/wire.test.ts checks them against the header.

export const SERVER_REASONS = [
  'SPAK_SRV_PASS_OTHER',
  'SPAK_SRV_PASS_UNPROTECTED',
  'SPAK_SRV_PASS_VALID_SYN',
  'SPAK_SRV_PASS_RETRANSMIT',
  'SPAK_SRV_PASS_FLOW',
  'SPAK_SRV_PASS_FLOW_END',
  'SPAK_SRV_DROP_NO_OPTION',
  'SPAK_SRV_DROP_BAD_OPTION',
  'SPAK_SRV_DROP_UNKNOWN_KEY',
  'SPAK_SRV_DROP_STALE_STEP',
  'SPAK_SRV_DROP_FUTURE_STEP',
  'SPAK_SRV_DROP_BAD_TAG',
  'SPAK_SRV_DROP_REPLAY',
  'SPAK_SRV_DROP_FLOW_MISS',
  'SPAK_SRV_DROP_FRAGMENT',
  'SPAK_SRV_DROP_MALFORMED',
  'SPAK_SRV_DROP_UNPARSED',
  'SPAK_SRV_DROP_REPLAY_FULL',
  'SPAK_SRV_DROP_FLOW_FULL',
  'SPAK_SRV_PASS_KNOCK',
  'SPAK_SRV_DROP_KNOCK_RATE',
  'SPAK_SRV_DROP_KNOCK_MALFORMED',
  'SPAK_SRV_DROP_KNOCK_UNKNOWN_CLIENT',
  'SPAK_SRV_DROP_KNOCK_TAG',
  'SPAK_SRV_DROP_KNOCK_FRAGMENT',
  'SPAK_SRV_PASS_ALLOWLISTED',
  'SPAK_SRV_PASS_ALWAYS',
  'SPAK_SRV_DROP_UDP_NOT_ALLOWED',
  'SPAK_SRV_DROP_STEALTH_SYN',
  'SPAK_SRV_DROP_STEALTH_UDP',
  'SPAK_SRV_DROP_STEALTH_SEGMENT',
  'SPAK_SRV_DROP_KNOCK_UNPARSED',
  'SPAK_SRV_DROP_KNOCK_REPEAT',
  'SPAK_SRV_DROP_KNOCK_CLIENT_RATE',
] as const;

/** Outcomes of a protected destination's new-connection decisions (enum spak_dest_outcome), in header order. */
export const DEST_OUTCOMES = [
  'SPAK_DOUT_ADMIT_TAG',
  'SPAK_DOUT_ADMIT_KNOCK',
  'SPAK_DOUT_ADMIT_ALWAYS',
  'SPAK_DOUT_REFUSE_TAG',
  'SPAK_DOUT_REFUSE_REPLAY',
  'SPAK_DOUT_REFUSE_NOT_ALLOWED',
  'SPAK_DOUT_REFUSE_FULL',
  'SPAK_DOUT_REFUSE_OTHER',
] as const;

export const CLIENT_REASONS = [
  'SPAK_CLI_PASS_OTHER',
  'SPAK_CLI_INJECTED',
  'SPAK_CLI_SKIP_NO_ROOM',
  'SPAK_CLI_SKIP_PAYLOAD',
  'SPAK_CLI_SKIP_MALFORMED',
  'SPAK_CLI_ERROR',
] as const;

export type ServerReasonId = (typeof SERVER_REASONS)[number];
export type ClientReasonId = (typeof CLIENT_REASONS)[number];

/** Strip the enum prefix and lower-case: SPAK_SRV_PASS_OTHER -> pass_other. */
type Friendly<S extends string, P extends string> = S extends `${P}${infer R}` ? Lowercase<R> : never;
export type ServerReason = Friendly<ServerReasonId, 'SPAK_SRV_'>;
export type ClientReason = Friendly<ClientReasonId, 'SPAK_CLI_'>;
export type DestOutcome = Friendly<(typeof DEST_OUTCOMES)[number], 'SPAK_DOUT_'>;

function friendly<P extends string, S extends string>(prefix: P, ids: readonly S[]): Friendly<S, P>[] {
  return ids.map((id) => id.slice(prefix.length).toLowerCase() as Friendly<S, P>);
}

/** Friendly names, same order: SERVER_REASON_NAMES[i] names counter slot i. */
export const SERVER_REASON_NAMES: readonly ServerReason[] = friendly('SPAK_SRV_', SERVER_REASONS);
export const CLIENT_REASON_NAMES: readonly ClientReason[] = friendly('SPAK_CLI_', CLIENT_REASONS);
/** admit_tag, admit_knock, ...: DEST_OUTCOME_NAMES[i] is outcome i of a destination's counters. */
export const DEST_OUTCOME_NAMES: readonly DestOutcome[] = friendly('SPAK_DOUT_', DEST_OUTCOMES);

/** SPAK_SRV_REASON_MAX / SPAK_CLI_REASON_MAX: the number of counter slots. */
export const SPAK_SRV_REASON_MAX = SERVER_REASONS.length;
export const SPAK_CLI_REASON_MAX = CLIENT_REASONS.length;
/** SPAK_DOUT_MAX: counters per destination in spak_dest_counters. */
export const SPAK_DOUT_MAX = DEST_OUTCOMES.length;

/** Counter slot of a reason by friendly name, e.g. serverReasonIndex('drop_bad_tag'). */
export function serverReasonIndex(name: ServerReason): number {
  return SERVER_REASON_NAMES.indexOf(name);
}
export function clientReasonIndex(name: ClientReason): number {
  return CLIENT_REASON_NAMES.indexOf(name);
}
