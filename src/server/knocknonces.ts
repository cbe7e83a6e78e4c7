// The one writer of spak_knock_nonces (bpf/spak_server_maps.h): the knock replay memory, a state
// map pinned with the interface's other state, so it outlives every daemon (not a reboot) and
// only root can touch it. Entries of kind SEEN are (client id, nonce) -> the knock's timestamp and
// when it was recorded; one entry of kind FENCE holds the highest timestamp ever forgotten. What
// the entries mean (which knocks are refused, when one may be forgotten): knock/replay.ts.
import { BpfError, type BpfMap } from '../bpf/libbpf.js';

const KIND_SEEN = 0;
const KIND_FENCE = 1;
const KEY_SIZE = 24; // struct spak_knock_nonce_key
const VALUE_SIZE = 16; // struct spak_knock_nonce
const NONCE_SIZE = 16;
const EEXIST = 17;

function nonceKey(kind: number, clientId: number, nonce: Buffer | null): Buffer {
  const k = Buffer.alloc(KEY_SIZE);
  k.writeUInt32LE(kind, 0);
  k.writeUInt32BE(clientId >>> 0, 4); // the client id as on the wire
  if (nonce) {
    if (nonce.length !== NONCE_SIZE) throw new RangeError(`a knock nonce is ${NONCE_SIZE} bytes, not ${nonce.length}`);
    nonce.copy(k, 8);
  }
  return k;
}

function nonceValue(timestampS: number, recordedS: number): Buffer {
  const v = Buffer.alloc(VALUE_SIZE);
  v.writeBigUInt64LE(BigInt(Math.max(0, Math.floor(timestampS))), 0);
  v.writeBigUInt64LE(BigInt(Math.max(0, Math.floor(recordedS))), 8);
  return v;
}

const FENCE_KEY = nonceKey(KIND_FENCE, 0, null);

/** One interface's replay memory, as knock/replay.ts uses it (tests give it an in-memory one). */
export interface NonceTable {
  /** Records (client, nonce) unless it is there: false when it was (a replay). Throws when it cannot (full). */
  insert(clientId: number, nonce: Buffer, timestampS: number, recordedS: number): boolean;
  /** The fence, or null when this table has none (it was never used: a cold start). */
  fence(): number | null;
  setFence(fenceS: number, recordedS: number): void;
  /** The timestamps of every recorded nonce, with their keys (opaque), for pruning. */
  scan(): { key: Buffer; timestampS: number }[];
  remove(keys: Buffer[]): number;
}

/** The NonceTable of one interface's spak_knock_nonces. */
export function nonceTable(map: BpfMap): NonceTable {
  return {
    insert(clientId, nonce, timestampS, recordedS) {
      try {
        map.update(nonceKey(KIND_SEEN, clientId, nonce), nonceValue(timestampS, recordedS), 'noexist');
        return true;
      } catch (err) {
        if (err instanceof BpfError && err.errno === EEXIST) return false;
        throw err;
      }
    },
    fence() {
      const v = map.lookup(FENCE_KEY);
      return v ? Number(v.readBigUInt64LE(0)) : null;
    },
    setFence(fenceS, recordedS) {
      map.update(FENCE_KEY, nonceValue(fenceS, recordedS));
    },
    scan() {
      const out: { key: Buffer; timestampS: number }[] = [];
      for (const c of map.lookupChunks()) {
        for (let i = 0; i < c.count; i++) {
          if (c.keys.readUInt32LE(i * KEY_SIZE) !== KIND_SEEN) continue;
          out.push({ key: Buffer.from(c.keys.subarray(i * KEY_SIZE, (i + 1) * KEY_SIZE)), timestampS: Number(c.values.readBigUInt64LE(i * VALUE_SIZE)) });
        }
      }
      return out;
    },
    remove(keys) {
      return keys.length > 0 ? map.deleteBatch(keys) : 0;
    },
  };
}
