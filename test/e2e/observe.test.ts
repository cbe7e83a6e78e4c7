// spak-test-timeout: 600
// Observability of a real daemon (issue 7, section 3): `spak server` in a lab namespace with its
// metrics endpoint on 127.0.0.1 inside that namespace, a tagging client and a keyless host making
// real connections. /metrics (scraped with curl from inside the server's namespace) must match
// `spak stats --json` and the pinned maps; `spak status --json` must match the maps too, while the
// daemon runs and after it was SIGKILLed (protection and pins stay).
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BpfMap } from '../../src/bpf/libbpf.js';
import { readCounters } from '../../src/bpf/counters.js';
import { Lab, netnsInode, SPAK_BPFFS_DIR, startSpak, type Counters, type SpakProcess } from '../../src/lab/lab.js';
import { parsePromText, sampleValue, type Sample } from '../support/promtext.js';
import type { InterfaceStatus } from '../../src/observe/status.js';
import { SERVER_REASON_NAMES } from '../../src/wire/reasons.js';
import { ADDR, assertBlocked, CLI, clientConfig, KEY_ID, OTH, serverConfig, skip, SRV, threeHosts } from './common.js';

const PORT = 8080;
const METRICS_PORT = 9862;

describe('metrics and status of a real daemon', { skip }, () => {
  let lab: Lab;
  let server: SpakProcess | null = null;
  let client: SpakProcess | null = null;
  let pinDir = '';

  before(async () => {
    lab = await Lab.create({ tag: 'observe' });
    await threeHosts(lab);
    for (const a of [ADDR.v4, ADDR.v6]) await lab.startService(SRV, a, PORT, 'http');
    pinDir = path.join(SPAK_BPFFS_DIR, `netns-${netnsInode(lab.host(SRV).ns)}`, 'eth0');
  });

  after(async () => {
    await client?.stop().catch(() => undefined);
    await server?.stop().catch(() => undefined);
    await lab?.cleanupSpak(SRV);
    await lab?.cleanupSpak(CLI);
    await lab?.destroy();
  });

  /** The pinned map, read from this process (bpffs is shared; the pin path names the namespace). */
  function pinned<T>(name: string, read: (m: BpfMap) => T): T {
    const m = BpfMap.openPinned(path.join(pinDir, name));
    try {
      return read(m);
    } finally {
      m.close();
    }
  }
  const kernelCounters = (): Counters =>
    Object.fromEntries(Object.entries(pinned('spak_server_counters', (m) => readCounters(m, SERVER_REASON_NAMES))).map(([k, v]) => [k, Number(v)]));

  async function scrape(): Promise<Sample[]> {
    const r = await lab.execNet(SRV, ['curl', '-sS', '--max-time', '5', `http://127.0.0.1:${METRICS_PORT}/metrics`], { timeoutMs: 15_000 });
    assert.equal(r.code, 0, `curl /metrics: ${r.stderr}`);
    return parsePromText(r.stdout);
  }

  async function status(): Promise<InterfaceStatus> {
    const r = await lab.spak(SRV, ['status', '--json', '--sample', '0', 'eth0']);
    assert.equal(r.code, 0, `spak status: ${r.stderr}`);
    const s = JSON.parse(r.stdout) as { interfaces: InterfaceStatus[] };
    assert.equal(s.interfaces.length, 1);
    return s.interfaces[0]!;
  }

  /**
   * Reads `other` between two readings of the kernel counters (`spak stats --json`); every
   * counter that did not move meanwhile (the host's own neighbour discovery may tick a pass_*
   * counter) must equal what `other` says. Returns the stable reading.
   */
  async function matchesStats(what: string, other: () => Promise<Counters>): Promise<Counters> {
    const a = await lab.spakStats(SRV);
    const got = await other();
    const b = await lab.spakStats(SRV);
    let compared = 0;
    for (const reason of SERVER_REASON_NAMES) {
      if (a[reason] !== b[reason]) continue;
      compared++;
      assert.equal(got[reason] ?? 0, a[reason] ?? 0, `${what}: ${reason}`);
    }
    for (const r of ['pass_valid_syn', 'drop_no_option'] as const) assert.equal(a[r], b[r], `${r} stood still while we read`);
    assert.ok(compared >= SERVER_REASON_NAMES.length - 3, `${what}: too many counters moved while reading`);
    return a;
  }

  it('the daemon\'s /metrics matches spak stats and the kernel after real connections', { timeout: 120_000 }, async () => {
    server = await startSpak(lab, SRV, 'server', { config: serverConfig([PORT]) }, ['--metrics', `127.0.0.1:${METRICS_PORT}`]);
    await server.proc.waitFor(/spak server: metrics on http:\/\/127\.0\.0\.1:9862\/metrics/);
    client = await startSpak(lab, CLI, 'client', { config: clientConfig([PORT]) });
    const before = await lab.spakStats(SRV);
    let opened = 0;
    for (let i = 0; i < 3; i++)
      for (const a of [ADDR.v4, ADDR.v6]) {
        const r = await lab.httpGet(CLI, a, PORT);
        assert.ok(r.ok, `client -> ${a}: ${r.error}`);
        opened++;
      }
    await assertBlocked(lab, OTH, [{ addr: ADDR.v4, port: PORT }, { addr: ADDR.v6, port: PORT }], 'keyless host');

    const stable = await matchesStats('metrics', async () => {
      const s = await scrape();
      return Object.fromEntries(SERVER_REASON_NAMES.map((r) => [r, sampleValue(s, 'spak_verdicts_total', { interface: 'eth0', reason: r }) ?? -1]));
    });
    assert.ok(stable.pass_valid_syn! - (before.pass_valid_syn ?? 0) >= opened, `valid SYNs counted for ${opened} connections`);
    assert.ok(stable.drop_no_option! - (before.drop_no_option ?? 0) >= 2, 'the keyless SYNs were counted');
    const direct = kernelCounters();
    assert.equal(direct.pass_valid_syn, stable.pass_valid_syn, 'spak stats reads the kernel map');

    const s = await scrape();
    const mode = /XDP \((native|generic)\)/.exec(server.banner)![1]!;
    assert.equal(sampleValue(s, 'spak_enforcement_info', { interface: 'eth0', hook: 'xdp', mode }), 1);
    for (const [table, map] of [['flows', 'spak_flows'], ['replay', 'spak_replay'], ['allowlist', 'spak_allow']] as const) {
      assert.equal(sampleValue(s, 'spak_table_capacity', { interface: 'eth0', table }), pinned(map, (m) => m.maxEntries), `${table} capacity`);
      // Entries may change with the sweep: compare when two kernel reads around the scrape agree.
      for (let attempt = 0; ; attempt++) {
        const a = pinned(map, (m) => m.keys().length);
        const v = sampleValue(await scrape(), 'spak_table_entries', { interface: 'eth0', table });
        const b = pinned(map, (m) => m.keys().length);
        if (a === b) {
          assert.equal(v, a, `${table} entries`);
          break;
        }
        assert.ok(attempt < 5, `${table} kept changing`);
      }
    }
    assert.ok(sampleValue(s, 'spak_table_entries', { interface: 'eth0', table: 'replay' })! >= opened, 'every valid SYN left a replay entry');
  });

  function checkStatusAgainstMaps(st: InterfaceStatus): void {
    assert.equal(st.interface, 'eth0');
    assert.equal(st.link?.hook, 'xdp');
    assert.equal(st.link?.attached, true);
    assert.deepEqual(st.keyIds, [KEY_ID]);
    assert.deepEqual(
      st.destinations.map((d) => `${d.protocol} ${d.address} ${d.port} ${d.keyIds.join(',')}`).sort(),
      [`tcp ${ADDR.v4} ${PORT} ${KEY_ID}`, `tcp ${ADDR.v6} ${PORT} ${KEY_ID}`],
    );
    assert.equal(st.destinations.length, pinned('spak_protected', (m) => m.keys().length));
    assert.equal(st.tables.flows?.capacity, pinned('spak_flows', (m) => m.maxEntries));
    assert.equal(st.tables.replay?.capacity, pinned('spak_replay', (m) => m.maxEntries));
    assert.deepEqual(st.problems, []);
  }

  it('spak status --json matches the maps with the daemon running, and after it is SIGKILLed', { timeout: 120_000 }, async (t) => {
    assert.ok(server?.running, 'the daemon of the first test runs');
    const running = await status();
    checkStatusAgainstMaps(running);
    assert.equal(running.daemonPid, server!.proc.pid, 'the lock holder is the daemon');
    assert.equal(running.link?.mode, /XDP \((native|generic)\)/.exec(server!.banner)![1]);
    await matchesStats('status (running)', async () => (await status()).counters as Counters);

    await server!.kill('SIGKILL');
    server = null;
    const orphan = await status();
    checkStatusAgainstMaps(orphan);
    assert.equal(orphan.daemonPid, null, 'no daemon holds the interface');
    assert.equal(orphan.link?.id, running.link?.id, 'the same pinned link still protects');
    await matchesStats('status (no daemon)', async () => (await status()).counters as Counters);
    await assertBlocked(lab, OTH, [{ addr: ADDR.v4, port: PORT }], 'keyless host, no daemon');

    // Rates: sampled over 1 s; the readable form names the interface, mode and destinations.
    const r = await lab.spak(SRV, ['status', '--sample', '500ms']);
    assert.equal(r.code, 0, r.stderr);
    t.diagnostic(r.stdout);
    assert.match(r.stdout, /^eth0: XDP (native|generic), link id \d+/);
    assert.match(r.stdout, /daemon: none/);
    assert.match(r.stdout, new RegExp(`tcp\\s+${ADDR.v4.replace(/\./g, '\\.')}:${PORT}\\s+key ids ${KEY_ID}`));
    assert.match(r.stdout, /per second over the sample/);
  });

  it('status with nothing pinned says so and exits 1', async () => {
    await lab.cleanupSpak(SRV);
    const r = await lab.spak(SRV, ['status']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^spak: no spak server state pinned in this network namespace/);
    const one = await lab.spak(SRV, ['status', 'eth0', '--json']);
    assert.equal(one.code, 1);
    assert.match(one.stderr, /no spak server state pinned for eth0/);
  });
});
