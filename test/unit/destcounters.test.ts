// Counter indexes of protected destinations (src/server/destcounters.ts): stable across
// reconfigurations, the lowest free one for a newcomer, and a list of what must be zeroed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DestCounterIndex, destinationId } from '../../src/server/destcounters.js';
import { SPAK_MAX_DESTS } from '../../src/wire/layout.js';

const A = { address: '198.51.100.1', port: 22 };
const B = { address: '2001:db8::1', port: 22 };
const C = { address: '198.51.100.1', port: 22, protocol: 'udp' as const };
const D = { address: '*', port: 443 };

test('a destination is known by protocol, address and port', () => {
  assert.equal(destinationId(A), destinationId({ ...A, protocol: 'tcp', bindSource: true }));
  assert.notEqual(destinationId(A), destinationId(C));
  assert.equal(destinationId({ address: '2001:db8:0::1', port: 22 }), destinationId(B));
  assert.equal(destinationId(D), 'tcp/*/443');
});

test('indexes: first come in order, kept while the destination stays, freed ones reused lowest first', () => {
  const idx = new DestCounterIndex();
  assert.deepEqual(idx.assign([A, B, C]), { indexes: [0, 1, 2], fresh: [0, 1, 2] });
  assert.deepEqual(idx.assign([C, A, B]), { indexes: [2, 0, 1], fresh: [] }, 'reordering keeps every index');
  assert.deepEqual(idx.assign([C, D]), { indexes: [2, 0], fresh: [0] }, 'A and B gone: D takes the lowest free index');
  assert.deepEqual(idx.assign([A, C, D]), { indexes: [1, 2, 0], fresh: [1] });
});

test('more destinations than counter slots are refused', () => {
  const many = Array.from({ length: SPAK_MAX_DESTS + 1 }, (_, i) => ({ address: '198.51.100.1', port: i + 1 }));
  assert.throws(() => new DestCounterIndex().assign(many), /more than 1024/);
});
