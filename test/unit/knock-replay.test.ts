// spak-test-timeout: 60
// The knock replay memory's rules (src/knock/replay.ts) over an in-memory table with the pinned
// map's contract: the start fence of a cold start, what a warm start keeps, pruning that never
// forgets a nonce inside its window and raises the fence first, and wall-clock jumps.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ReplayMemory } from '../../src/knock/replay.js';
import { MemoryNonceTable } from '../support/nonce-table.js';

const T = 1_800_000_000;
const W = 30;
const open = (tables: MemoryNonceTable[], nowS: number) => ReplayMemory.open(() => tables, W, nowS);

describe('the replay memory', () => {
  test('a cold start (no fence anywhere): fenced at its start, says why; stamped later: recorded once', () => {
    const table = new MemoryNonceTable();
    const { memory, cold } = open([table], T);
    assert.match(cold ?? '', /first start|reboot/);
    assert.equal(memory.fence, T);
    assert.equal(table.fenceS, T, 'the fence is kept in the table too');
    assert.equal(memory.check(1, randomBytes(16), T - 5, T), 'before_fence', 'captured before the start');
    assert.equal(memory.check(1, randomBytes(16), T, T), 'before_fence', 'stamped in the start\'s second');
    const n = randomBytes(16);
    assert.equal(memory.check(1, n, T + 1, T + 1), 'new');
    assert.equal(memory.check(1, n, T + 1, T + 2), 'replayed');
    assert.equal(memory.check(2, n, T + 1, T + 2), 'new', 'per client');
  });

  test('a warm start keeps the nonces and the fence (not raised to the start): a knock from just before the restart stays refused', () => {
    const table = new MemoryNonceTable();
    const first = open([table], T - 100).memory;
    const n = randomBytes(16);
    assert.equal(first.check(7, n, T - 2, T), 'new');
    const { memory, cold } = open([table], T + 1);
    assert.equal(cold, null);
    assert.equal(memory.fence, T - 100);
    assert.equal(memory.check(7, n, T - 2, T + 1), 'replayed');
    assert.equal(memory.check(7, randomBytes(16), T - 1, T + 1), 'new', 'a skewed client\'s fresh knock still opens after a warm restart');
  });

  test('pruning forgets only what left the window, raising the fence to it first', () => {
    const table = new MemoryNonceTable();
    const m = open([table], T - 1000).memory;
    const stamps = [T - 40, T - 31, T - 30, T, T + 30];
    const nonces = stamps.map(() => randomBytes(16));
    stamps.forEach((s, i) => assert.equal(m.check(1, nonces[i]!, s, s), 'new'));
    table.log.length = 0;
    assert.equal(m.prune(T), 2, 'T-40 and T-31: below T - window');
    assert.deepEqual(table.log, [`fence ${T - 31}`, 'removed 2'], 'the fence rises before anything is forgotten');
    assert.equal(m.fence, T - 31);
    assert.equal(m.check(1, nonces[1]!, T - 31, T - 10), 'before_fence', 'forgotten, still refused (clock back 10 s)');
    for (const i of [2, 3, 4]) assert.equal(m.check(1, nonces[i]!, stamps[i]!, T), 'replayed', `stamp ${stamps[i]! - T}: kept`);
  });

  test('one start with the clock 120 s ahead, then the right clock: nothing captured before opens', () => {
    const table = new MemoryNonceTable();
    const m = open([table], T - 500).memory;
    const captured = randomBytes(16);
    assert.equal(m.check(3, captured, T, T), 'new');
    // The restart with the clock ahead prunes everything (now - window is past every stamp)...
    const ahead = open([table], T + 120);
    assert.equal(ahead.cold, null);
    assert.equal(table.seen.size, 0);
    // ...and the fence remembers it: the next start (clock right again) refuses the capture.
    const back = open([table], T + 5).memory;
    assert.equal(back.check(3, captured, T, T + 5), 'before_fence');
    assert.equal(back.check(3, randomBytes(16), T + 5, T + 5), 'new', 'a fresh knock opens');
  });

  test('a jump ahead while running (housekeeping prunes), then back: still refused', () => {
    const table = new MemoryNonceTable();
    const m = open([table], T - 500).memory;
    const n = randomBytes(16);
    assert.equal(m.check(3, n, T, T), 'new');
    m.prune(T + 3600);
    assert.equal(m.check(3, n, T, T + 1), 'before_fence');
  });

  test('a full memory prunes what left the window, else it throws (refused: replay_store_failed)', () => {
    const table = new MemoryNonceTable(2);
    const m = open([table], T - 500).memory;
    assert.equal(m.check(1, randomBytes(16), T - 100, T - 100), 'new');
    assert.equal(m.check(1, randomBytes(16), T, T), 'new');
    assert.equal(m.check(1, randomBytes(16), T, T), 'new', 'the one stamped T-100 made room');
    assert.equal(m.fence, T - 100);
    assert.throws(() => m.check(1, randomBytes(16), T, T), /full/);
  });

  test('a table that cannot be read is a cold start too (fenced at the start, the reason in the line)', () => {
    const table = new MemoryNonceTable();
    open([table], T - 500).memory.check(1, randomBytes(16), T - 1, T - 1);
    table.fence = () => { throw new Error('EPERM'); };
    const { memory, cold } = open([table], T);
    assert.match(cold ?? '', /unreadable: EPERM/);
    assert.equal(memory.fence, T);
  });

  test('several interfaces: each records every knock; one table without a fence makes a cold start', () => {
    const a = new MemoryNonceTable();
    const b = new MemoryNonceTable();
    const n = randomBytes(16);
    assert.equal(open([a], T - 500).memory.check(1, n, T - 1, T), 'new');
    const both = open([a, b], T + 1);
    assert.match(both.cold ?? '', /1 of 2 interfaces/);
    assert.equal(both.memory.fence, T + 1);
    assert.equal(b.fenceS, T + 1);
    const later = open([b, a], T + 2).memory;
    const m = randomBytes(16);
    assert.equal(later.check(1, m, T + 3, T + 3), 'new');
    assert.equal(open([b], T + 4).memory.check(1, m, T + 3, T + 4), 'replayed', 'b alone remembers it');
    assert.equal(open([a], T + 4).memory.check(1, m, T + 3, T + 4), 'replayed', 'a alone remembers it');
  });
});
