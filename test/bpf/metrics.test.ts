// The Prometheus endpoint (src/observe/metrics.ts) against the kernel: server.bpf.o loaded and
// configured through the daemon's own code (ServerHarness -> ServerProgram), frames run with
// BPF_PROG_TEST_RUN, /metrics scraped over HTTP on 127.0.0.1 and parsed. Every verdict counter
// must equal what ServerProgram.counters() reads from the per-CPU map, and move by exactly the
// packets sent; table sizes must equal the maps' entry counts and capacities.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { monotonicNs } from '../../src/bpf/clock.js';
import { destinationLabel, startMetrics, spakVersion, type MetricsEndpoint } from '../../src/observe/metrics.js';
import { parsePromText, sampleValue, type Sample } from '../support/promtext.js';
import { allowSource } from '../../src/server/allowlist.js';
import { SERVER_REASON_NAMES, type ServerReason } from '../../src/wire/reasons.js';
import { ServerHarness, settledStep } from './harness.js';
import { DEFAULT_SETUP, FAMILIES, rawSyn, segment, validSyn } from './server-fixtures.js';

const IFACE = 'metrics0';
let srv: ServerHarness;
let endpoint: MetricsEndpoint;

before(async () => {
  srv = new ServerHarness({ replay: 2048, flows: 4096 });
  srv.configure(DEFAULT_SETUP);
  endpoint = await startMetrics({
    listen: '127.0.0.1', port: 0,
    sources: { servers: () => [{ iface: IFACE, enforcement: { hook: 'xdp', mode: 'native' }, server: srv.program }] },
  });
});
after(async () => {
  await endpoint?.close();
  srv?.close();
});

async function scrape(path = '/metrics'): Promise<{ status: number; text: string; type: string }> {
  const r = await fetch(`http://127.0.0.1:${endpoint.port}${path}`);
  return { status: r.status, text: await r.text(), type: r.headers.get('content-type') ?? '' };
}

async function samples(): Promise<Sample[]> {
  const r = await scrape();
  assert.equal(r.status, 200, r.text);
  assert.match(r.type, /^text\/plain/);
  return parsePromText(r.text);
}

const verdict = (s: Sample[], reason: string): number | undefined => sampleValue(s, 'spak_verdicts_total', { interface: IFACE, reason });

test('listens on 127.0.0.1 and serves only GET /metrics', async () => {
  assert.equal(endpoint.address, '127.0.0.1');
  assert.ok(endpoint.port > 0);
  assert.equal((await scrape('/')).status, 404);
  assert.equal((await scrape('/metrics?x=1')).status, 200);
});

test('every verdict counter equals the kernel map, and moves by exactly the packets sent', async () => {
  const first = await samples();
  const kernelBefore = srv.program.counters();
  for (const reason of SERVER_REASON_NAMES) assert.equal(verdict(first, reason), Number(kernelBefore[reason]), `${reason} before`);

  const step = await settledStep(srv.stepSeconds);
  const e = FAMILIES[4];
  const sent = new Map<ServerReason, number>();
  const count = (r: ServerReason) => sent.set(r, (sent.get(r) ?? 0) + 1);
  for (let i = 0; i < 3; i++) count(srv.run(validSyn(e, step, { sport: 41000 + i, seq: 0x1000 + i })).reason);
  for (let i = 0; i < 2; i++) count(srv.run(rawSyn(e, Buffer.alloc(0), { sport: 42000 + i })).reason);
  count(srv.run(segment(e, { ack: true }, { sport: 41000 })).reason);
  count(srv.run(segment(FAMILIES[6], { ack: true }, { sport: 43000 })).reason);
  assert.equal(sent.get('pass_valid_syn'), 3, 'three valid SYNs passed');
  assert.equal(sent.get('drop_no_option'), 2, 'two untagged SYNs dropped');

  const second = await samples();
  const kernelAfter = srv.program.counters();
  for (const reason of SERVER_REASON_NAMES) {
    assert.equal(verdict(second, reason), Number(kernelAfter[reason]), `${reason} equals the map`);
    assert.equal(verdict(second, reason)! - verdict(first, reason)!, sent.get(reason) ?? 0, `${reason} moved by the packets sent`);
  }
});

test('table entries and capacities are the maps\' own, read at scrape time', async () => {
  srv.reset();
  const step = await settledStep(srv.stepSeconds);
  for (let i = 0; i < 5; i++) srv.expect(validSyn(FAMILIES[4], step, { sport: 44000 + i, seq: 0x2000 + i }), 'pass_valid_syn');
  const expires = monotonicNs() + 60_000_000_000n;
  const allow = srv.program.map('spak_allow');
  for (const k of allow.keys()) allow.delete(k);
  allowSource(allow, { addr: '198.51.100.7', proto: 'tcp', port: 22, expiresNs: expires });
  allowSource(allow, { addr: '2001:db8::7', proto: 'udp', port: 53, expiresNs: expires });

  const s = await samples();
  const maps = { flows: srv.flows, replay: srv.replay, allowlist: allow };
  for (const [table, map] of Object.entries(maps)) {
    assert.equal(sampleValue(s, 'spak_table_entries', { interface: IFACE, table }), map.keys().length, `${table} entries`);
    assert.equal(sampleValue(s, 'spak_table_capacity', { interface: IFACE, table }), map.maxEntries, `${table} capacity`);
  }
  assert.equal(sampleValue(s, 'spak_table_entries', { table: 'flows' }), 5);
  assert.equal(sampleValue(s, 'spak_table_entries', { table: 'replay' }), 5);
  assert.equal(sampleValue(s, 'spak_table_entries', { table: 'allowlist' }), 2);
  assert.equal(sampleValue(s, 'spak_table_capacity', { table: 'flows' }), 4096);
  assert.equal(sampleValue(s, 'spak_table_capacity', { table: 'replay' }), 2048);

  // Removing entries shows at the next scrape: nothing is cached.
  srv.reset();
  for (const k of allow.keys()) allow.delete(k);
  const t = await samples();
  for (const table of ['flows', 'replay', 'allowlist']) assert.equal(sampleValue(t, 'spak_table_entries', { table }), 0, table);
});

test('daemon info: version and enforcement mode', async () => {
  const s = await samples();
  assert.equal(sampleValue(s, 'spak_info', { version: spakVersion() }), 1);
  assert.notEqual(spakVersion(), 'unknown');
  assert.equal(sampleValue(s, 'spak_enforcement_info', { interface: IFACE, hook: 'xdp', mode: 'native' }), 1);
  // No knock service among the sources: no knock samples.
  assert.equal(s.filter((x) => x.name === 'spak_knocks_total').length, 0);
});

test('per-destination counts equal ServerProgram.destinationCounters(), and move by exactly the decisions made', async () => {
  const label = (d: { address: string; port: number; protocol: string }) => destinationLabel({ ...d, protocol: d.protocol === 'udp' ? 'udp' : 'tcp' });
  const dest = (s: Sample[], d: { address: string; port: number; protocol: string }, reason: string) =>
    sampleValue(s, 'spak_destination_packets_total', { interface: IFACE, destination: label(d), reason });
  const first = await samples();
  const before = srv.program.destinationCounters();
  assert.equal(before.length, DEFAULT_SETUP.protect.length);
  for (const d of before) for (const [reason, n] of Object.entries(d.counts)) assert.equal(dest(first, d, reason), Number(n), `${label(d)} ${reason}`);
  assert.equal(label(before[1]!), '[2001:db8::1]:22');

  srv.reset();
  const step = await settledStep(srv.stepSeconds);
  srv.expect(validSyn(FAMILIES[4], step, { sport: 45000, seq: 0x3000 }), 'pass_valid_syn');
  srv.expect(rawSyn(FAMILIES[4], Buffer.alloc(0), { sport: 45001 }), 'drop_no_option');
  srv.expect(segment(FAMILIES[4], { ack: true }, { sport: 45000, seq: 0x3001 }), 'pass_flow');
  const second = await samples();
  const v4 = before.find((d) => d.address === FAMILIES[4].server && d.port === 22)!;
  assert.equal(dest(second, v4, 'admit_tag')! - dest(first, v4, 'admit_tag')!, 1);
  assert.equal(dest(second, v4, 'refuse_tag')! - dest(first, v4, 'refuse_tag')!, 1);
  for (const d of srv.program.destinationCounters())
    for (const [reason, n] of Object.entries(d.counts)) assert.equal(dest(second, d, reason), Number(n), `${label(d)} ${reason} after`);
});

test('a second endpoint on a taken port is refused with the error', async () => {
  await assert.rejects(
    startMetrics({ listen: '127.0.0.1', port: endpoint.port, sources: { servers: () => [] } }),
    /EADDRINUSE/,
  );
});
