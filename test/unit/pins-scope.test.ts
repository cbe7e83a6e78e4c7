// spak-test-timeout: 30
// The pin directory's scope (issue 13, item 4): one rule from every context. It is decided by the
// inode of the caller's own network namespace alone, never by /proc/1 (which a daemon without
// CAP_SYS_PTRACE, or a root shell in a container, sees differently).
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { test } from 'node:test';
import { INIT_NET_INODE, netnsScope, pinPaths, scopeOf } from '../../src/bpf/pins.js';

test('the initial namespace (fixed inode): no scope; any other namespace: netns-<its inode>', () => {
  assert.equal(scopeOf(INIT_NET_INODE), '');
  assert.equal(scopeOf(4026532412), 'netns-4026532412');
  // A kernel without the fixed inode: its initial namespace is scoped like any other (still one rule).
  assert.equal(scopeOf(4026531992), 'netns-4026531992');
});

test('this process: the scope of its own namespace, and the pin and lock paths follow it', () => {
  const own = statSync('/proc/self/ns/net').ino;
  assert.equal(netnsScope(), scopeOf(own));
  const p = pinPaths('eth0', 'server', '/sys/fs/bpf');
  const scope = scopeOf(own);
  assert.equal(p.dir, scope ? `/sys/fs/bpf/spak/${scope}/eth0` : '/sys/fs/bpf/spak/eth0');
  assert.equal(p.lock, `/run/spak/${scope ? `${scope}_` : ''}eth0.server.lock`);
});
