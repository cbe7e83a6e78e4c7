import assert from 'node:assert/strict';
import { test } from 'node:test';
import { coverage, parseProcNetTcp, type KernelSocket } from '../../src/server/seed.js';
import { scopeWarnings } from '../../src/server/scope.js';

// Lines in the format of /proc/net/tcp and /proc/net/tcp6 (addresses are host-order words).
const TCP4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 016433C6:0016 026433C6:9C40 01 00000000:00000000 02:000A7B4D 00000000     0        0 12345 2 0000000000000000 20 4 31 10 -1
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: B80D0120000000000000000001000000:0016 B80D0120000000000000000002000000:A000 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1
   1: 0000000000000000FFFF0000016433C6:1F90 0000000000000000FFFF0000026433C6:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
`;

test('IPv4 sockets are decoded from host-order hex', () => {
  const [est, listen] = parseProcNetTcp(TCP4);
  assert.deepEqual(est, { localAddr: '198.51.100.1', localPort: 22, remoteAddr: '198.51.100.2', remotePort: 40000, state: 1, inode: 12345 });
  assert.equal(listen?.state, 0x0a);
  assert.equal(listen?.localPort, 8080);
});

test('IPv6 and IPv4-mapped sockets are decoded', () => {
  const [v6, mapped] = parseProcNetTcp(TCP6);
  assert.equal(v6?.localAddr, '2001:db8::1');
  assert.equal(v6?.remoteAddr, '2001:db8::2');
  assert.equal(v6?.remotePort, 0xa000);
  assert.equal(mapped?.localAddr, '198.51.100.1');
  assert.equal(mapped?.remoteAddr, '198.51.100.2');
  assert.equal(mapped?.remotePort, 50000);
});

const listener = (localAddr: string, localPort: number): KernelSocket => ({ localAddr, localPort, remoteAddr: localAddr.includes(':') ? '::' : '0.0.0.0', remotePort: 0, state: 0x0a, inode: 0 });

test('scope: a listener on [::] with only an IPv4 address protected is named, with the fix', () => {
  const w = scopeWarnings([{ address: '198.51.100.1', port: 22 }], [listener('::', 22)]);
  assert.deepEqual(w, [
    "port 22: a process listens on [::]:22; IPv6 is not protected: add '::' or use --all-addresses",
    "port 22: a process listens on [::]:22; IPv4 is not protected on every address: add '0.0.0.0' or use --all-addresses",
  ]);
});

test('scope: listeners covered by what is protected give no warning', () => {
  assert.deepEqual(scopeWarnings([{ address: '*', port: 22 }], [listener('::', 22), listener('0.0.0.0', 22)]), []);
  assert.deepEqual(scopeWarnings([{ address: '0.0.0.0', port: 22 }, { address: '::', port: 22 }], [listener('::', 22)]), []);
  assert.deepEqual(scopeWarnings([{ address: '198.51.100.1', port: 22 }], [listener('198.51.100.1', 22)]), []);
  assert.deepEqual(scopeWarnings([{ address: '198.51.100.1', port: 22 }], [listener('0.0.0.0', 80)]), [], 'other ports are not ours');
});

test('scope: [::] beside 0.0.0.0 on the same port is IPv6-only (both could not bind otherwise)', () => {
  assert.deepEqual(scopeWarnings([{ address: '198.51.100.1', port: 22 }], [listener('0.0.0.0', 22), listener('::', 22)]), [
    "port 22: a process listens on 0.0.0.0:22; only 198.51.100.1 is protected, not every IPv4 address: add '0.0.0.0' or use --all-addresses",
    "port 22: a process listens on [::]:22; IPv6 is not protected: add '::' or use --all-addresses",
  ]);
});

test('scope: a listener on every IPv4 address or on another address', () => {
  assert.deepEqual(scopeWarnings([{ address: '198.51.100.1', port: 22 }], [listener('0.0.0.0', 22)]), [
    "port 22: a process listens on 0.0.0.0:22; only 198.51.100.1 is protected, not every IPv4 address: add '0.0.0.0' or use --all-addresses",
  ]);
  assert.deepEqual(scopeWarnings([{ address: '198.51.100.1', port: 22 }], [listener('198.51.100.7', 22)]), [
    "port 22: a process listens on 198.51.100.7:22; 198.51.100.7 is not protected: add it or use --all-addresses",
  ]);
});

test('coverage: which sockets fall under the protected destinations (seeding)', () => {
  const covers = coverage([{ address: '198.51.100.1', port: 22 }, { address: '::', port: 443 }, { address: '*', port: 8080 }]);
  assert.equal(covers('198.51.100.1', 22), true);
  assert.equal(covers('198.51.100.2', 22), false);
  assert.equal(covers('2001:db8::1', 443), true);
  assert.equal(covers('198.51.100.1', 443), false);
  assert.equal(covers('198.51.100.9', 8080), true);
  assert.equal(covers('2001:db8::9', 8080), true);
});
