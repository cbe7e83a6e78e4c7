// spak-test-timeout: 60
// Reading the kernel's TCP table for the flows a revoked client keeps (src/server/flowend.ts):
// /proc/net/tcp and tcp6 addresses decoded, only ESTABLISHED connections kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { establishedTcp } from '../../src/server/flowend.js';

const HEAD = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';

test('ESTABLISHED connections as "remote port local port", IPv4 and IPv6; other states and missing files skipped', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'spak-flowend-'));
  try {
    const v4 = path.join(dir, 'tcp');
    const v6 = path.join(dir, 'tcp6');
    writeFileSync(v4, HEAD +
      '   0: 016433C6:1F90 026433C6:D431 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0 0 10 -1\n' +
      '   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 10 0 0 10 -1\n' +
      '   2: 016433C6:1F90 036433C6:D432 06 00000000:00000000 00:00000000 00000000     0        0 3 1 0 10 0 0 10 -1\n');
    // 2001:db8::1 port 8080 <- 2001:db8::2 port 50000 (each 32-bit word in host order)
    writeFileSync(v6, HEAD +
      '   0: B80D0120000000000000000001000000:1F90 B80D0120000000000000000002000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 10 0 0 10 -1\n');
    const got = establishedTcp([v4, v6, path.join(dir, 'absent')]);
    assert.deepEqual([...got].sort(), ['198.51.100.2 54321 198.51.100.1 8080', '2001:db8::2 50000 2001:db8::1 8080']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
