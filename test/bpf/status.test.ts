// `spak status` decoding (src/observe/status.ts) against maps the daemon's own code wrote:
// server.bpf.o loaded and configured through ServerProgram (ServerHarness), its maps pinned under
// a bpffs root of this test's own, frames run with BPF_PROG_TEST_RUN and allowlist entries
// written with allowlist.ts. Everything status reports must equal the maps. (A real daemon,
// running and then SIGKILLed, is test/e2e/observe.test.ts.)
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { ensureBpffs, mkdirPins, removePins } from '../../src/bpf/libbpf.js';
import { monotonicNs } from '../../src/bpf/clock.js';
import { allowSource } from '../../src/server/allowlist.js';
import { DEFAULT_BPFFS, pinPaths } from '../../src/bpf/pins.js';
import { PINNED_MAPS } from '../../src/server/maps.js';
import { collectStatus, pinnedInterfaces, readInterfaceStatus } from '../../src/observe/status.js';
import { formatStatus } from '../../src/observe/status-format.js';
import { ServerHarness, settledStep } from './harness.js';
import { DEFAULT_SETUP, DNAT, FAMILIES, rawSyn, validSyn } from './server-fixtures.js';

const ROOT = `${DEFAULT_BPFFS}/spak-status-test-${process.pid}`;
const IFACE = `st${process.pid % 100000}`;
let srv: ServerHarness;
let dir = '';

const SETUP = {
  ...DEFAULT_SETUP,
  protect: [{ address: '198.51.100.1', port: 22, bindSource: true }, { address: '2001:db8::1', port: 22 }, { address: '0.0.0.0', port: 2222 }, ...DNAT],
};

before(() => {
  ensureBpffs(DEFAULT_BPFFS);
  mkdirSync(ROOT);
  srv = new ServerHarness({ replay: 2048, flows: 4096 });
  srv.configure(SETUP);
  const paths = pinPaths(IFACE, 'server', ROOT);
  dir = paths.dir;
  mkdirPins(dir);
  for (const name of PINNED_MAPS) srv.program.map(name).pin(paths.map(name));
});
after(() => {
  try {
    if (dir) removePins(dir, ROOT);
  } finally {
    if (existsSync(ROOT)) rmSync(ROOT, { recursive: true, force: true });
    srv?.close();
  }
});

test('status decodes the pinned maps: destinations, key ids, time step, allowlist, tables, counters', async () => {
  const step = await settledStep(srv.stepSeconds);
  for (let i = 0; i < 3; i++) srv.expect(validSyn(FAMILIES[6], step, { sport: 45000 + i, seq: 0x3000 + i }), 'pass_valid_syn');
  srv.expect(rawSyn(FAMILIES[4], Buffer.alloc(0)), 'drop_no_option');
  const allow = srv.program.map('spak_allow');
  const now = monotonicNs();
  allowSource(allow, { addr: '198.51.100.7', proto: 'tcp', port: 22, expiresNs: now + 100_000_000_000n });
  allowSource(allow, { addr: '2001:db8::7', proto: 'udp', port: 53, expiresNs: now + 3_600_000_000_000n });

  assert.deepEqual(pinnedInterfaces(ROOT), [IFACE]);
  const s = readInterfaceStatus(IFACE, ROOT);
  assert.deepEqual(s.problems, []);
  assert.equal(s.interface, IFACE);
  assert.equal(s.pinDir, dir);
  assert.equal(s.link, null, 'no link pinned here');
  assert.equal(s.daemonPid, null);
  assert.equal(s.stepSeconds, 30);
  assert.equal(s.stepWindow, 1);
  assert.equal(s.knockPort, null);
  assert.deepEqual(s.keyIds, [1, 7]);
  assert.deepEqual(s.destinations.map((d) => `${d.protocol} ${d.address} ${d.port} ${d.keyIds.join(',')}${d.bindSource ? ' bound' : ''}`), [
    'tcp 198.51.100.1 22 1,7 bound',
    'tcp 2001:db8::1 22 1,7',
    'tcp 0.0.0.0 2222 1,7',
    'tcp 198.51.100.1 8022 1,7',
    'tcp 2001:db8::1 8022 1,7',
  ]);
  assert.deepEqual(s.allowlist.map((a) => `${a.address} ${a.protocol}/${a.port}`), ['198.51.100.7 tcp/22', '2001:db8::7 udp/53']);
  assert.ok(s.allowlist[0]!.secondsLeft > 90 && s.allowlist[0]!.secondsLeft <= 100, String(s.allowlist[0]!.secondsLeft));
  assert.ok(s.allowlist[1]!.secondsLeft > 3590 && s.allowlist[1]!.secondsLeft <= 3600, String(s.allowlist[1]!.secondsLeft));
  assert.deepEqual(s.tables, {
    flows: { entries: srv.flows.keys().length, capacity: 4096 },
    replay: { entries: srv.replay.keys().length, capacity: 2048 },
    allowlist: { entries: 2, capacity: allow.maxEntries },
  });
  assert.equal(s.tables.flows?.entries, 3);
  const kernel = srv.program.counters();
  for (const [k, v] of Object.entries(kernel)) assert.equal(s.counters[k as keyof typeof s.counters], Number(v), k);
  assert.equal(s.rates, null);

  const text = formatStatus(s);
  assert.match(text, new RegExp(`^${IFACE}: no pinned link: not protected`));
  assert.match(text, /tcp +198\.51\.100\.1:22 +key ids 1,7 +source-bound/);
  assert.match(text, /tcp +0\.0\.0\.0 \(every IPv4 address\) +port 2222/);
  assert.match(text, /198\.51\.100\.7 +tcp\/22 +9\d s left/);
  assert.match(text, /tables \(entries\/capacity\): flows 3\/4096, replay \d+\/2048, allowlist 2\/\d+/);
});

test('rates: only the counters that moved between the two readings, by the packets sent', async () => {
  const before = readInterfaceStatus(IFACE, ROOT).counters;
  const pending = collectStatus([IFACE], ROOT, 300); // the first reading happens before this returns
  for (let i = 0; i < 4; i++) srv.expect(rawSyn(FAMILIES[4], Buffer.alloc(0), { sport: 46000 + i }), 'drop_no_option');
  const [s] = await pending;
  assert.equal(s!.counters.drop_no_option! - before.drop_no_option!, 4);
  assert.deepEqual(Object.keys(s!.rates!), ['drop_no_option']);
  assert.ok(s!.rates!.drop_no_option! > 0);
});

test('a map missing from the pins is reported as a problem, the rest is still read', () => {
  const p = pinPaths(IFACE, 'server', ROOT);
  rmSync(p.map('spak_allow'));
  try {
    const s = readInterfaceStatus(IFACE, ROOT);
    assert.equal(s.problems.length, 1);
    assert.match(s.problems[0]!, /^spak_allow: /);
    assert.equal(s.tables.allowlist, undefined);
    assert.equal(s.destinations.length, 5);
  } finally {
    srv.program.map('spak_allow').pin(p.map('spak_allow'));
  }
});
