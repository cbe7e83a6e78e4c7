// spak-test-timeout: 120
// The checks after a knock opens (src/knock/decide.ts), driven directly: freshness, server address,
// replay, every policy rejection in KNOCK_REJECT_REASONS order, and the grant an accepted knock gets.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { clientIdOf, generateX25519 } from '../../src/knock/keys.js';
import { KnockOpener, KnockSealer, knockClient, KNOCK_REJECTS, type KnockPlain } from '../../src/knock/datagram.js';
import {
  addressSet, checkFreshness, decideKnock, KNOCK_POLICY_REJECTS, KNOCK_REJECT_REASONS,
  type KnockDecision, type KnockFacts, type KnockRejectReason,
} from '../../src/knock/decide.js';
import { parsePolicy, type PolicyDefaults } from '../../src/knock/policy.js';
import { ReplayMemory } from '../../src/knock/replay.js';
import { MemoryNonceTable } from '../support/nonce-table.js';

const NOW = 1_800_000_000;
const MONO = 5_000_000_000n;
const NS = 1_000_000_000n;
const DEFAULTS: PolicyDefaults = {
  allow: ['tcp/22', 'udp/51820'], maxDurationSeconds: 900, defaultDurationSeconds: 120,
  fromNetworks: [], nat: false, maxAddresses: 4, idleExtensionSeconds: 60, graceSeconds: 10,
};
const policy = (over: object = {}) => parsePolicy(JSON.stringify(over), DEFAULTS);
const plain = (over: Partial<KnockPlain> = {}): KnockPlain => ({
  timestamp: NOW, nonce: randomBytes(16), serverAddr: '198.51.100.1', allowAddr: '192.0.2.7', durationS: 0, open: [], ...over,
});
/** A replay memory whose fence is well before NOW (as after a start 100 s ago). */
const memoryOf = (table = new MemoryNonceTable()): ReplayMemory => ReplayMemory.open(() => [table], 30, NOW - 100).memory;
const facts = (over: Partial<KnockFacts> = {}): KnockFacts => ({
  plain: plain(), client: { id: 1, policy: policy() }, revoked: false, src: '192.0.2.7',
  nowS: NOW, monoNs: MONO, windowS: 30, serverAddrs: addressSet(['198.51.100.1', '2001:db8::1']), replay: memoryOf(),
  ...over,
});
const reasonOf = (d: KnockDecision): string => (d.ok ? 'accepted' : d.reason);
const failingStore = { check(): never { throw new Error('E2BIG: the replay memory is full'); } };

describe('freshness and replay', () => {
  test('freshness window', () => {
    assert.equal(checkFreshness(NOW, NOW, 30), null);
    assert.equal(checkFreshness(NOW - 30, NOW, 30), null);
    assert.equal(checkFreshness(NOW + 30, NOW, 30), null);
    assert.equal(checkFreshness(NOW - 31, NOW, 30), 'expired');
    assert.equal(checkFreshness(NOW + 31, NOW, 30), 'future');
  });

  test('expired, future, wrong server, replayed, and a fresh one accepted once (opened through HPKE)', async () => {
    const server = generateX25519();
    const alice = generateX25519();
    const client = knockClient(server.privateKey, alice.publicKey, 'alice');
    const opener = new KnockOpener(server.privateKey, (id) => (id === clientIdOf(alice.publicKey) ? client : undefined));
    const sealer = new KnockSealer(alice.privateKey, server.publicKey);
    const opened = async (over: Partial<KnockPlain>): Promise<KnockPlain> => {
      const r = await opener.open(await sealer.seal({ serverAddr: '198.51.100.1', allowAddr: '192.0.2.7', durationS: 600, open: [{ proto: 'tcp', port: 22 }], timestamp: NOW, ...over }));
      assert.ok(r.ok);
      return r.plain;
    };
    const table = new MemoryNonceTable();
    const replay = memoryOf(table);
    const o = facts({ replay });
    const decide = (id: number, p: KnockPlain, more: Partial<KnockFacts> = {}) => reasonOf(decideKnock({ ...o, client: { ...o.client, id }, plain: p, ...more }));
    assert.equal(decide(1, await opened({ timestamp: NOW - 120 })), 'expired');
    assert.equal(decide(1, await opened({ timestamp: NOW + 120 })), 'future');
    assert.equal(decide(1, await opened({ serverAddr: '203.0.113.5' })), 'wrong_server');
    const p = await opened({});
    assert.equal(decide(1, p), 'accepted');
    assert.equal(decide(1, p), 'replayed');
    assert.equal(decide(1, p, { nowS: NOW + 20 }), 'replayed');
    assert.equal(decide(2, p), 'accepted', 'per client');
    assert.equal(decide(1, await opened({ serverAddr: '2001:db8::1' })), 'accepted');
    // Pruned once it could no longer pass the window anyway.
    replay.prune(NOW + 61);
    assert.equal(table.seen.size, 0);
  });

  test('a full replay memory refuses rather than forgets', () => {
    const c = memoryOf(new MemoryNonceTable(2));
    assert.equal(c.check(1, randomBytes(16), NOW, NOW), 'new');
    assert.equal(c.check(1, randomBytes(16), NOW, NOW), 'new');
    assert.throws(() => c.check(1, randomBytes(16), NOW, NOW), /full/);
    assert.equal(reasonOf(decideKnock(facts({ replay: c }))), 'replay_store_failed');
    assert.equal(c.check(1, randomBytes(16), NOW + 100, NOW + 100), 'new', 'after the old ones left the window');
  });

  test('the nonce is recorded only for knocks that are fresh and sent here, then also when the policy refuses', () => {
    const table = new MemoryNonceTable();
    const replay = memoryOf(table);
    decideKnock(facts({ replay, plain: plain({ timestamp: NOW - 120 }) }));
    decideKnock(facts({ replay, plain: plain({ serverAddr: '203.0.113.5' }) }));
    assert.equal(table.seen.size, 0);
    const refused = plain({ durationS: 901 });
    assert.equal(reasonOf(decideKnock(facts({ replay, plain: refused }))), 'duration_over_max');
    assert.equal(reasonOf(decideKnock(facts({ replay, plain: refused }))), 'replayed');
  });

  test('an IPv4 server address matches in either spelling', () => {
    assert.equal(reasonOf(decideKnock(facts({ plain: plain({ serverAddr: '::ffff:198.51.100.1' }) }))), 'accepted');
    assert.equal(reasonOf(decideKnock(facts({ serverAddrs: addressSet(['::ffff:198.51.100.1']) }))), 'accepted');
    assert.equal(reasonOf(decideKnock(facts({ serverAddrs: addressSet([]) }))), 'wrong_server', 'no server address: nothing passes');
  });
});

/** One case per reason decideKnock gives, in KNOCK_REJECT_REASONS order. */
const CASES: { reason: KnockRejectReason; what: string; facts: KnockFacts; detail?: RegExp }[] = [
  { reason: 'unknown_client', what: 'removed or edited while HPKE ran', facts: facts({ revoked: true }), detail: /^revoked$/ },
  { reason: 'expired', what: 'older than the window', facts: facts({ plain: plain({ timestamp: NOW - 31 }) }), detail: /timestamp 1799999969, now 1800000000/ },
  { reason: 'future', what: 'newer than the window', facts: facts({ plain: plain({ timestamp: NOW + 31 }) }) },
  { reason: 'wrong_server', what: 'sent to another address', facts: facts({ plain: plain({ serverAddr: '203.0.113.5' }) }), detail: /sent to 203\.0\.113\.5/ },
  { reason: 'replayed', what: 'nonce seen before', facts: facts({ replay: { check: () => 'replayed' } }) },
  { reason: 'source_not_allowed', what: 'packet source outside fromNetworks', facts: facts({ client: { id: 1, policy: policy({ fromNetworks: ['10.0.0.0/8'] }) } }) },
  { reason: 'source_not_allowed', what: 'behind NAT (nat: true), the packet source outside fromNetworks', detail: /from 192\.0\.2\.7/,
    facts: facts({ plain: plain({ allowAddr: '10.1.2.3' }), client: { id: 1, policy: policy({ nat: true, fromNetworks: ['10.0.0.0/8'] }) } }) },
  { reason: 'source_mismatch', what: 'sent from another address than it names (a thief\'s copy)', detail: /from 192\.0\.2\.7, names 192\.0\.2\.99/,
    facts: facts({ plain: plain({ allowAddr: '192.0.2.99' }) }) },
  { reason: 'source_mismatch', what: 'names no address', detail: /names no address/, facts: facts({ plain: plain({ allowAddr: null }) }) },
  { reason: 'source_mismatch', what: 'names another address, inside fromNetworks too', facts: facts({ plain: plain({ allowAddr: '192.0.2.99' }),
    client: { id: 1, policy: policy({ fromNetworks: ['192.0.2.0/24'] }) } }) },
  { reason: 'port_not_allowed', what: 'a port outside the policy', facts: facts({ plain: plain({ open: [{ proto: 'tcp', port: 22 }, { proto: 'tcp', port: 23 }] }) }), detail: /^tcp\/23$/ },
  { reason: 'port_not_allowed', what: 'the policy allows nothing', facts: facts({ client: { id: 1, policy: policy({ allow: [] }) } }), detail: /allows nothing/ },
  { reason: 'duration_over_max', what: 'above maxDurationSeconds', facts: facts({ plain: plain({ durationS: 901 }) }), detail: /901 s > 900 s/ },
  { reason: 'bad_allow_address', what: 'from and naming 0.0.0.0', facts: facts({ src: '0.0.0.0', plain: plain({ allowAddr: '0.0.0.0' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming IPv4 multicast', facts: facts({ src: '224.0.0.1', plain: plain({ allowAddr: '224.0.0.1' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming the broadcast address', facts: facts({ src: '255.255.255.255', plain: plain({ allowAddr: '255.255.255.255' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming ::', facts: facts({ src: '::', plain: plain({ allowAddr: '::' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming IPv6 multicast', facts: facts({ src: 'ff02::1', plain: plain({ allowAddr: 'ff02::1' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming IPv4 loopback', facts: facts({ src: '127.0.0.1', plain: plain({ allowAddr: '127.0.0.1' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming another 127/8 address', facts: facts({ src: '127.9.9.9', plain: plain({ allowAddr: '127.9.9.9' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming IPv6 loopback', facts: facts({ src: '::1', plain: plain({ allowAddr: '::1' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming IPv4 link-local', facts: facts({ src: '169.254.1.2', plain: plain({ allowAddr: '169.254.1.2' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming IPv6 link-local', facts: facts({ src: 'fe80::1', plain: plain({ allowAddr: 'fe80::1' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming fe80::/10, not just fe80::/16', facts: facts({ src: 'febf::1', plain: plain({ allowAddr: 'febf::1' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming the server\'s own IPv4 address', facts: facts({ src: '198.51.100.1', plain: plain({ allowAddr: '198.51.100.1' }) }) },
  { reason: 'bad_allow_address', what: 'from and naming the server\'s own IPv6 address', facts: facts({ src: '2001:db8::1', plain: plain({ allowAddr: '2001:db8::1' }) }) },
  { reason: 'bad_allow_address', what: 'behind NAT, a loopback source', facts: facts({ src: '127.0.0.1', client: { id: 1, policy: policy({ nat: true }) } }) },
  { reason: 'before_fence', what: 'stamped at or before the replay memory\'s fence', facts: facts({ replay: ReplayMemory.open(() => [new MemoryNonceTable()], 30, NOW).memory }) },
  { reason: 'replay_store_failed', what: 'the nonce cannot be recorded', facts: facts({ replay: failingStore }), detail: /full/ },
];
/** Reasons given before decideKnock runs (the datagram's open) or after it (the allowlist write, anything thrown). */
const NOT_DECIDED_HERE = new Set<KnockRejectReason>([
  'truncated', 'oversized', 'bad_version', 'bad_reserved', 'bad_prefilter_tag', 'hpke_open_failed', 'bad_plain_version', 'bad_plain',
  'allowlist_failed', 'internal_error',
]);

describe('every rejection decideKnock makes', () => {
  test('the reasons: the datagram\'s, then the policy\'s, each once', () => {
    assert.deepEqual(KNOCK_REJECT_REASONS, [...KNOCK_REJECTS, ...KNOCK_POLICY_REJECTS]);
    assert.equal(new Set(KNOCK_REJECT_REASONS).size, KNOCK_REJECT_REASONS.length);
  });

  test('every reason is covered below or given elsewhere, and the cases follow the reasons\' order', () => {
    const covered = new Set(CASES.map((c) => c.reason));
    assert.deepEqual(KNOCK_REJECT_REASONS.filter((r) => !covered.has(r) && !NOT_DECIDED_HERE.has(r)), []);
    const order = CASES.map((c) => KNOCK_REJECT_REASONS.indexOf(c.reason));
    assert.deepEqual(order, [...order].sort((a, b) => a - b));
  });

  for (const c of CASES) {
    test(`${c.reason}: ${c.what}`, () => {
      const d = decideKnock(c.facts);
      assert.equal(reasonOf(d), c.reason);
      if (c.detail && !d.ok) assert.match(d.detail ?? '', c.detail);
    });
  }
});

describe('the grant of an accepted knock', () => {
  test('empty request: the policy allow list for the default duration, with its idle extension and grace', () => {
    const d = decideKnock(facts());
    assert.ok(d.ok);
    assert.deepEqual(d.grant, {
      addr: '192.0.2.7', open: [{ proto: 'tcp', port: 22 }, { proto: 'udp', port: 51820 }], durationS: 120,
      expiresNs: MONO + 120n * NS, idleNs: 60n * NS, graceNs: 10n * NS,
    });
  });

  test('the ports asked, once each, for the duration asked', () => {
    const d = decideKnock(facts({ plain: plain({ durationS: 900, open: [{ proto: 'udp', port: 51820 }, { proto: 'udp', port: 51820 }] }) }));
    assert.ok(d.ok);
    assert.deepEqual(d.grant.open, [{ proto: 'udp', port: 51820 }]);
    assert.equal(d.grant.durationS, 900);
    assert.equal(d.grant.expiresNs, MONO + 900n * NS);
  });

  test('the named address equal to the source (v4 or v6, either spelling) is the one allowed', () => {
    for (const [src, allowAddr] of [['203.0.113.50', '203.0.113.50'], ['203.0.113.50', '::ffff:203.0.113.50'], ['2001:db8::50', '2001:db8:0::50']]) {
      const d = decideKnock(facts({ src: src!, plain: plain({ allowAddr: allowAddr! }) }));
      assert.ok(d.ok, `${src} naming ${allowAddr}`);
      assert.equal(d.grant.addr, src);
    }
  });

  test('behind NAT (nat: true) the grant goes to the packet source, whatever the knock names', () => {
    const pol = policy({ nat: true });
    for (const allowAddr of ['10.0.0.5', null]) {
      const d = decideKnock(facts({ client: { id: 1, policy: pol }, plain: plain({ allowAddr }) }));
      assert.ok(d.ok);
      assert.equal(d.grant.addr, '192.0.2.7');
    }
  });

  test('the thief\'s copy does not burn the nonce: the client\'s own copy then opens', () => {
    const table = new MemoryNonceTable();
    const replay = memoryOf(table);
    const p = plain();
    assert.equal(reasonOf(decideKnock(facts({ replay, plain: p, src: '192.0.2.66' }))), 'source_mismatch');
    assert.equal(table.seen.size, 0);
    assert.equal(reasonOf(decideKnock(facts({ replay, plain: p }))), 'accepted');
    assert.equal(reasonOf(decideKnock(facts({ replay, plain: p }))), 'replayed');
  });

  test('fromNetworks admits the packet source and a named address inside them', () => {
    const pol = policy({ fromNetworks: ['192.0.2.0/24', '2001:db8::/32'] });
    assert.equal(reasonOf(decideKnock(facts({ client: { id: 1, policy: pol } }))), 'accepted');
    assert.equal(reasonOf(decideKnock(facts({ client: { id: 1, policy: pol }, src: '2001:db8::9', plain: plain({ allowAddr: '2001:db8::9' }) }))), 'accepted');
  });
});
