// The map registry (src/server/maps.ts) against the compiled server.bpf.o: it names exactly the
// object's maps, and each decision it records fits the role (what adoption, reload and pinning
// derive from it). Needs `make bpf`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BpfObject } from '../../src/bpf/libbpf.js';
import { objectPath } from '../../src/bpf/object-files.js';
import {
  capacities, PINNED_MAPS, RELOAD_SHARED_MAPS, SERVER_MAP_NAMES, SERVER_MAPS, STATE_MAPS, TABLES, type MapSpec,
} from '../../src/server/maps.js';
import { DESTINATION_MAPS } from '../../src/server/destinations.js';
import { KNOCK_MAPS } from '../../src/server/knockmaps.js';

const spec = (n: string): MapSpec => (SERVER_MAPS as Record<string, MapSpec>)[n]!;

test('the registry names exactly the maps of build/server.bpf.o', () => {
  const obj = BpfObject.open(objectPath('server'));
  try {
    assert.deepEqual([...SERVER_MAP_NAMES].sort(), obj.mapNames().sort());
  } finally {
    obj.close();
  }
});

test('every state map is pinned (the next daemon adopts it), and so is every map `spak status` reads', () => {
  for (const n of STATE_MAPS) assert.ok(spec(n).pinned, `${n} is state but not pinned`);
  assert.deepEqual([...PINNED_MAPS].sort(), [...SERVER_MAP_NAMES].sort(), 'every map is pinned today');
});

test('a reload shares the state and only the config maps kept on reload', () => {
  for (const n of SERVER_MAP_NAMES) {
    const s = spec(n);
    assert.equal(RELOAD_SHARED_MAPS.includes(n), s.role === 'state' || s.keptOnReload === true, n);
    if (s.keptOnReload) assert.equal(s.role, 'config', `${n}: keptOnReload only means something for a config map`);
  }
});

test('config maps have a user-space writer; sized tables and reported tables are state', () => {
  for (const n of SERVER_MAP_NAMES) {
    const s = spec(n);
    if (s.role === 'config') assert.notEqual(s.writer, 'program', `${n}: a config map nobody writes`);
    if (s.capacity) assert.equal(s.role, 'state', `${n}: a sized table is state`);
    if (s.table) assert.equal(s.role, 'state', `${n}: a reported table is state`);
  }
  assert.deepEqual(TABLES, { flows: 'spak_flows', replay: 'spak_replay', allowlist: 'spak_allow' });
  assert.deepEqual(Object.keys(capacities({})).sort(), ['spak_allow', 'spak_flows', 'spak_knock_nonces', 'spak_replay']);
  assert.equal(capacities({ flowCapacity: 7 }).spak_flows, 7);
});

test('the writers are handed exactly their maps', () => {
  assert.deepEqual([...KNOCK_MAPS].sort(), ['spak_knock_accepted', 'spak_knock_clients', 'spak_knock_config']);
  assert.deepEqual([...DESTINATION_MAPS].sort(),
    ['spak_dests', 'spak_port_slots', 'spak_ports', 'spak_protected', 'spak_protected_addrs', 'spak_udp_ports', 'spak_udp_protected']);
});
