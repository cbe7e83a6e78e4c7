// An in-memory NonceTable (src/server/knocknonces.ts) for the unit tests of the replay memory
// (src/knock/replay.ts): the same contract as the pinned map, with a capacity that fills quickly.
import type { NonceTable } from '../../src/server/knocknonces.js';

export class MemoryNonceTable implements NonceTable {
  readonly seen = new Map<string, number>();
  fenceS: number | null = null;
  /** setFence calls, in order (a test checks the fence rises before anything is forgotten). */
  readonly log: string[] = [];

  constructor(private readonly capacity = 1_000_000) {}

  insert(clientId: number, nonce: Buffer, timestampS: number): boolean {
    const key = `${clientId}:${nonce.toString('hex')}`;
    if (this.seen.has(key)) return false;
    if (this.seen.size >= this.capacity) throw new Error('E2BIG: the replay memory is full');
    this.seen.set(key, timestampS);
    return true;
  }

  fence(): number | null {
    return this.fenceS;
  }

  setFence(fenceS: number): void {
    this.fenceS = fenceS;
    this.log.push(`fence ${fenceS}`);
  }

  scan(): { key: Buffer; timestampS: number }[] {
    return [...this.seen].map(([k, t]) => ({ key: Buffer.from(k), timestampS: t }));
  }

  remove(keys: Buffer[]): number {
    let n = 0;
    for (const k of keys) if (this.seen.delete(k.toString())) n++;
    if (n > 0) this.log.push(`removed ${n}`);
    return n;
  }
}
