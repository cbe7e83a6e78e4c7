// Knock replay protection: no knock may open twice, across restarts and crashes, whatever happens
// to the disk or the wall clock. The nonces live in each served interface's spak_knock_nonces
// (server/knocknonces.ts): a pinned BPF map outlives every daemon, only root can touch it (the
// service user cannot), and recording a nonce is one map update, no disk write. With it a FENCE:
// every knock stamped at or before the fence is refused (before_fence).
// - Pruning forgets only nonces stamped below now - window (they fail the freshness check
//   anyway), and first raises the fence to the highest of them: a wall clock that jumps ahead
//   prunes early, but what it forgot stays refused when the clock comes back.
// - No map (first start, or after a reboot: the pins are gone), or a map without a fence (never
//   used, another layout, a pin removed): nothing tells which knocks opened before, so the fence
//   becomes the daemon's start and every knock stamped before it is refused. That is why no file
//   is kept: after a reboot the start fence already refuses everything captured earlier.
// - Full: the knock is refused (replay_store_failed), never a live nonce forgotten.
import type { NonceTable } from '../server/knocknonces.js';
import type { ReplayCheck, ReplayVerdict } from './decide.js';

export class ReplayMemory implements ReplayCheck {
  #fence: number;

  private constructor(
    private readonly tables: () => readonly NonceTable[],
    private readonly windowS: number,
    fence: number,
  ) {
    this.#fence = fence;
  }

  /**
   * Takes over what the tables remember (every served interface's; a knock is recorded in each).
   * `cold` says why there was nothing trustworthy to take over (then the fence is nowS), or null.
   */
  static open(tables: () => readonly NonceTable[], windowS: number, nowS: number): { memory: ReplayMemory; cold: string | null } {
    const ts = tables();
    if (ts.length === 0) throw new Error('knock: no replay memory to open');
    let unreadable: string | null = null;
    const fences = ts.map((t) => {
      try {
        return t.fence();
      } catch (err) {
        unreadable = `unreadable: ${(err as Error).message}`;
        return null;
      }
    });
    const known = fences.filter((f): f is number => f !== null);
    let fence = Math.max(0, ...known);
    let cold: string | null = null;
    if (known.length < ts.length) {
      fence = Math.max(fence, nowS);
      cold = unreadable ?? (known.length === 0 ? 'first start, a reboot, or its pins removed' : `${ts.length - known.length} of ${ts.length} interfaces have none`);
    }
    const memory = new ReplayMemory(tables, windowS, fence);
    for (const t of ts) t.setFence(fence, nowS);
    memory.prune(nowS);
    return { memory, cold };
  }

  /** Knocks stamped at or before this (unix seconds) are refused. */
  get fence(): number {
    return this.#fence;
  }

  /** Refused when stamped at or before the fence or seen before; recorded otherwise. Throws when it cannot record (full). */
  check(clientId: number, nonce: Buffer, timestamp: number, nowS: number): ReplayVerdict {
    if (timestamp <= this.#fence) return 'before_fence';
    let replayed = false;
    for (const t of this.tables()) {
      let recorded: boolean;
      try {
        recorded = t.insert(clientId, nonce, timestamp, nowS);
      } catch {
        // Full, most likely: forget what has left the window, then try once more (a second failure is the caller's).
        this.prune(nowS);
        recorded = t.insert(clientId, nonce, timestamp, nowS);
      }
      if (!recorded) replayed = true;
    }
    return replayed ? 'replayed' : 'new';
  }

  /**
   * Forgets the nonces stamped below nowS - window, after raising the fence (in every table) to
   * the highest of them: a crash between the two leaves a fence too high, never a nonce forgotten
   * below it. Returns how many were forgotten.
   */
  prune(nowS: number): number {
    const below = nowS - this.windowS;
    const ts = this.tables();
    const stale = ts.map((t) => t.scan().filter((e) => e.timestampS < below));
    let highest = this.#fence;
    for (const list of stale) for (const e of list) if (e.timestampS > highest) highest = e.timestampS;
    if (highest > this.#fence) {
      for (const t of ts) t.setFence(highest, nowS);
      this.#fence = highest;
    }
    let removed = 0;
    ts.forEach((t, i) => { removed += t.remove(stale[i]!.map((e) => e.key)); });
    return removed;
  }
}
