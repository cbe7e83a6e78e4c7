// spak-test-modes: xdp tc
// The server (build/server.bpf.o: spak_server at XDP, spak_server_tc at TC in the tc run) through
// BPF_PROG_TEST_RUN: every case asserts the verdict (XDP_PASS / XDP_DROP, or TC_ACT_OK / TC_ACT_SHOT)
// and the one reason counter that moved. Needs root and `make bpf`.
// Setup and shapes: see server-fixtures.ts.
// This file: what the parser lets through, drops, or cannot read (fragments, VLAN, tunnels, wildcards).
import { after, before, beforeEach, describe, test } from 'node:test';
import {
  buildIcmp, buildIp, buildUdp, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, linuxSynOptions
} from '../support/packet.js';
import {
  DEFAULT_SETUP, FAMILIES, fileServer, rawSyn, segment, validSyn, withHopByHop, truncateL4, withTags,
  withOuterTag, type Endpoints
} from './server-fixtures.js';
import { testEnforcement } from '../enforcement.js';

const file = fileServer();
const useSetup = file.use;
const step = file.step;

/* ---------------------------------------------------------------------------------------------- */

describe('server: traffic it does not guard', () => {
  beforeEach(() => useSetup());

  for (const e of Object.values(FAMILIES)) {
    test(`IPv${e.family}: SYN without option to unprotected port 80 -> pass_other`, () => {
      file.srv.expect(rawSyn(e, linuxSynOptions(), { dport: 80 }), 'pass_other');
    });

    test(`IPv${e.family}: SYN without option to port 22 of an unprotected address (${e.unprotected}) -> pass_unprotected`, () => {
      file.srv.expect(rawSyn(e, linuxSynOptions(), { daddr: e.unprotected }), 'pass_unprotected');
    });

    test(`IPv${e.family}: UDP to port 22 -> pass_other`, () => {
      file.srv.expect(buildUdp({ family: e.family, saddr: e.client, daddr: e.server, sport: 40000, dport: 22, payload: Buffer.from('x') }), 'pass_other');
    });

    test(`IPv${e.family}: ICMP${e.family === 6 ? 'v6' : ''} echo to the protected address -> pass_other`, () => {
      file.srv.expect(buildIcmp({ family: e.family, saddr: e.client, daddr: e.server, id: 1, seq: 1 }), 'pass_other');
    });
  }

  // Tunnels the kernel may open itself: the parser does not follow them.
  for (const [name, proto] of [['IP-in-IP', 4], ['IPv6-in-IP', 41], ['GRE', 47], ['EtherIP', 97]] as const) {
    for (const e of Object.values(FAMILIES)) {
      test(`IPv${e.family}: ${name} to the protected address -> drop_unparsed; to an unprotected one -> pass_other`, () => {
        const inner = rawSyn(e, linuxSynOptions()).subarray(14);
        file.srv.expect(buildIp({ family: e.family, saddr: e.client, daddr: e.server }, proto, inner), 'drop_unparsed');
        file.srv.expect(buildIp({ family: e.family, saddr: e.client, daddr: e.unprotected }, proto, inner), 'pass_other');
      });
    }
  }

  test('ARP (non-IP ethertype) -> pass_other', () => {
    const arp = Buffer.alloc(14 + 28);
    Buffer.from('ffffffffffff020000000001', 'hex').copy(arp, 0);
    arp.writeUInt16BE(0x0806, 12);
    Buffer.from('0001080006040001020000000001c6336402000000000000c6336401', 'hex').copy(arp, 14);
    file.srv.expect(arp, 'pass_other');
  });

  test('a bare Ethernet header -> pass_other', () => {
    const eth = Buffer.from('020000000002020000000001' + '88cc', 'hex'); // LLDP
    file.srv.expect(eth, 'pass_other');
  });
});

/* ---------------------------------------------------------------------------------------------- */

describe('server: fragments and truncated headers', () => {
  beforeEach(() => useSetup());
  const v4 = FAMILIES[4];
  const v6 = FAMILIES[6];

  /** A non-first IPv4 fragment: TCP protocol, 16 bytes of payload, no TCP header. */
  const laterFragment4 = (daddr: string) =>
    buildIp({ family: 4, saddr: v4.client, daddr, fragOffset: 24, moreFragments: false }, IPPROTO_TCP, Buffer.alloc(16, 0xab));

  test('IPv4 first fragment (MF set) to the protected address -> drop_fragment', async () => {
    file.srv.expect(validSyn(v4, await step(), { moreFragments: true }), 'drop_fragment');
  });

  test('IPv4 later fragment (offset > 0) to the protected address -> drop_fragment', () => {
    file.srv.expect(laterFragment4(v4.server), 'drop_fragment');
  });

  test('IPv4 fragments to an unprotected address -> pass_other', () => {
    file.srv.expect(rawSyn(v4, linuxSynOptions(), { daddr: v4.unprotected, moreFragments: true }), 'pass_other');
    file.srv.expect(laterFragment4(v4.unprotected), 'pass_other');
  });

  test('IPv4 DF set, no fragment fields -> not a fragment (pass_valid_syn)', async () => {
    file.srv.expect(validSyn(v4, await step(), { dontFragment: true }), 'pass_valid_syn');
  });

  test('IPv6 fragment header (first fragment) to the protected address -> drop_fragment', async () => {
    file.srv.expect(validSyn(v6, await step(), { ipv6Fragment: { offset: 0, more: true, id: 7 } }), 'drop_fragment');
  });

  test('IPv6 fragment header (later fragment) to the protected address -> drop_fragment', () => {
    file.srv.expect(rawSyn(v6, Buffer.alloc(0), { ipv6Fragment: { offset: 64, more: false, id: 7 } }), 'drop_fragment');
  });

  // The fragment header names the upper protocol: fragments of what nothing protects pass.
  test('IPv6 ICMPv6 fragments (ping -s 3000) to the protected address -> pass_other', () => {
    const icmp = buildIcmp({ family: 6, saddr: v6.client, daddr: v6.server, id: 1, seq: 1, ipv6Fragment: { offset: 0, more: true, id: 11 } });
    file.srv.expect(icmp, 'pass_other');
    file.srv.expect(buildIp({ family: 6, saddr: v6.client, daddr: v6.server, ipv6Fragment: { offset: 1448, more: false, id: 11 } }, IPPROTO_ICMPV6, Buffer.alloc(64, 1)), 'pass_other');
  });

  test('IPv6 UDP fragment to the protected address -> pass_other', () => {
    file.srv.expect(buildIp({ family: 6, saddr: v6.client, daddr: v6.server, ipv6Fragment: { offset: 64, more: false, id: 12 } }, IPPROTO_UDP, Buffer.alloc(32, 1)), 'pass_other');
  });

  test('IPv6 fragment whose next header is an extension header (may hide TCP) -> drop_fragment', () => {
    file.srv.expect(buildIp({ family: 6, saddr: v6.client, daddr: v6.server, ipv6Fragment: { offset: 0, more: true, id: 13 } }, 60 /* dest opts */, Buffer.alloc(32, 0)), 'drop_fragment');
  });

  test('IPv4 ICMP fragments to the protected address -> pass_other', () => {
    file.srv.expect(buildIcmp({ family: 4, saddr: v4.client, daddr: v4.server, id: 1, seq: 1, moreFragments: true }), 'pass_other');
  });

  test('IPv6 fragment header to an unprotected address -> pass_other', () => {
    file.srv.expect(rawSyn(v6, Buffer.alloc(0), { daddr: v6.unprotected, ipv6Fragment: { offset: 0, more: true, id: 7 } }), 'pass_other');
  });

  test('IPv6 hop-by-hop header then a valid SYN -> pass_valid_syn', async () => {
    file.srv.expect(withHopByHop(validSyn(v6, await step())), 'pass_valid_syn');
  });

  test('IPv6 hop-by-hop header then a fragment header to the protected address -> drop_fragment', async () => {
    file.srv.expect(withHopByHop(validSyn(v6, await step(), { ipv6Fragment: { offset: 0, more: true, id: 9 } })), 'drop_fragment');
  });

  for (const e of [v4, v6]) {
    test(`IPv${e.family}: TCP header cut short (10 of 20 bytes) to the protected address -> drop_malformed`, () => {
      file.srv.expect(truncateL4(rawSyn(e, Buffer.alloc(0)), e.family, 10), 'drop_malformed');
    });

    test(`IPv${e.family}: TCP header cut short to an unprotected address -> pass_other`, () => {
      file.srv.expect(truncateL4(rawSyn(e, Buffer.alloc(0), { daddr: e.unprotected }), e.family, 10), 'pass_other');
    });
  }

  // BPF_PROG_TEST_RUN refuses (EINVAL) an skb whose IPv4 header is cut short, so at TC the same cut
  // frame goes in behind one VLAN tag, past which the kernel does not look; the program walks the tag.
  test('IPv4 header cut short (10 bytes after Ethernet) -> drop_malformed', () => {
    const cut = rawSyn(v4, Buffer.alloc(0)).subarray(0, 24);
    file.srv.expect(testEnforcement() === 'tc' ? withTags(cut, 1, 0x8100, 5) : cut, 'drop_malformed');
  });
});


/* ---------------------------------------------------------------------------------------------- */

describe('server: VLAN', () => {
  beforeEach(() => useSetup());

  for (const e of Object.values(FAMILIES)) {
    test(`IPv${e.family}: 802.1Q-tagged valid SYN -> pass_valid_syn`, async () => {
      file.srv.expect(validSyn(e, await step(), { vlan: 100 }), 'pass_valid_syn');
    });

    test(`IPv${e.family}: 802.1Q-tagged SYN without option -> drop_no_option`, () => {
      file.srv.expect(rawSyn(e, linuxSynOptions(), { vlan: 100 }), 'drop_no_option');
    });
  }

  test('QinQ (802.1ad + 802.1Q) valid SYN -> pass_valid_syn', async () => {
    file.srv.expect(withOuterTag(validSyn(FAMILIES[4], await step(), { vlan: 100 }), 200), 'pass_valid_syn');
  });

  // The kernel strips priority tags (VLAN id 0) one after another and delivers what is inside:
  // a frame still tagged after the two tags the parser follows must never pass.
  for (const e of Object.values(FAMILIES)) {
    for (const depth of [3, 4, 8]) {
      test(`IPv${e.family}: SYN inside ${depth} VLAN-id-0 tags -> drop_unparsed`, () => {
        file.srv.expect(withTags(rawSyn(e, linuxSynOptions()), depth, 0x8100, 0), 'drop_unparsed');
      });
    }
    test(`IPv${e.family}: even a valid SYN or unprotected traffic inside 3 tags -> drop_unparsed`, async () => {
      file.srv.expect(withTags(validSyn(e, await step()), 3, 0x8100, 0), 'drop_unparsed');
      file.srv.expect(withTags(rawSyn(e, linuxSynOptions(), { dport: 80 }), 3, 0x8100, 0), 'drop_unparsed');
    });
  }

  test('802.1ad outer + two 802.1Q inner tags -> drop_unparsed', () => {
    file.srv.expect(withOuterTag(withTags(rawSyn(FAMILIES[4], linuxSynOptions()), 2, 0x8100, 0), 0), 'drop_unparsed');
  });

  test('two VLAN-id-0 tags (the most the parser follows) with a SYN without option -> drop_no_option', () => {
    file.srv.expect(withTags(rawSyn(FAMILIES[4], linuxSynOptions()), 2, 0x8100, 0), 'drop_no_option');
  });

  test('802.1Q-tagged ACK of a flow opened untagged -> pass_flow', async () => {
    file.srv.expect(validSyn(FAMILIES[4], await step()), 'pass_valid_syn');
    file.srv.expect(segment(FAMILIES[4], { ack: true }, { vlan: 100 }), 'pass_flow');
  });
});

/* ---------------------------------------------------------------------------------------------- */

describe('server: wildcard protection (0.0.0.0:2222 and [::]:3333)', () => {
  before(() => useSetup({
    protect: [...DEFAULT_SETUP.protect, { address: '0.0.0.0', port: 2222 }, { address: '::', port: 3333 }],
  }));
  beforeEach(() => file.srv.reset());
  after(() => useSetup());

  const anyV4: Endpoints = { ...FAMILIES[4], server: '192.0.2.77' };
  const anyV6: Endpoints = { ...FAMILIES[6], server: '2001:db8:ffff::77' };

  test('valid SYN to any IPv4 address on 2222 -> pass_valid_syn', async () => {
    file.srv.expect(validSyn(anyV4, await step(), { dport: 2222 }), 'pass_valid_syn');
    file.srv.expect(validSyn(FAMILIES[4], await step(), { dport: 2222 }), 'pass_valid_syn');
  });

  test('SYN without option to any IPv4 address on 2222 -> drop_no_option', () => {
    file.srv.expect(rawSyn(anyV4, linuxSynOptions(), { dport: 2222 }), 'drop_no_option');
  });

  test('ACK without flow to any IPv4 address on 2222 -> drop_flow_miss', () => {
    file.srv.expect(segment(anyV4, { ack: true }, { dport: 2222 }), 'drop_flow_miss');
  });

  test('the IPv4 wildcard does not cover IPv6: SYN to [2001:db8:ffff::77]:2222 -> pass_unprotected', () => {
    file.srv.expect(rawSyn(anyV6, linuxSynOptions(), { dport: 2222 }), 'pass_unprotected');
  });

  test('IPv6 wildcard: SYN without option to any IPv6 address on 3333 -> drop_no_option; valid -> pass_valid_syn', async () => {
    file.srv.expect(rawSyn(anyV6, linuxSynOptions(), { dport: 3333 }), 'drop_no_option');
    file.srv.expect(validSyn(anyV6, await step(), { dport: 3333 }), 'pass_valid_syn');
  });

  test('the IPv6 wildcard does not cover IPv4: SYN to 192.0.2.77:3333 -> pass_unprotected', () => {
    file.srv.expect(rawSyn(anyV4, linuxSynOptions(), { dport: 3333 }), 'pass_unprotected');
  });

  test('with a wildcard address protected, fragments to any address of that family -> drop_fragment', () => {
    file.srv.expect(rawSyn(anyV4, Buffer.alloc(0), { dport: 80, moreFragments: true }), 'drop_fragment');
    file.srv.expect(rawSyn(anyV6, Buffer.alloc(0), { dport: 80, ipv6Fragment: { offset: 0, more: true, id: 3 } }), 'drop_fragment');
  });
});

