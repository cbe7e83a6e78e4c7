// `spak bpffs mount [--bpffs DIR]`: make sure bpffs is mounted where the pins go, in the mount
// namespace this command runs in. The packaged unit runs it as ExecStartPre=+ (outside its
// sandbox, so in the host's mount namespace) before the server's private namespace is set up:
// there the server itself may not mount it (its mount would vanish with the namespace).
import type { Command } from 'commander';
import { ensureBpffs, inInitialMountNamespace } from '../bpf/bpffs.js';
import { DEFAULT_BPFFS } from '../bpf/pins.js';

export function registerBpffs(program: Command): void {
  const bpffs = program.command('bpffs').description('bpffs, where the server\'s protection is pinned: `spak bpffs mount`');
  bpffs
    .command('mount')
    .description('mount bpffs at /sys/fs/bpf (or --bpffs DIR), mode 0700, unless one is there already; in this mount namespace')
    .option('--bpffs <dir>', 'where bpffs goes', DEFAULT_BPFFS)
    .action((o: { bpffs: string }) => {
      // An explicit request: it mounts in whatever namespace it runs in, and says so when that one is private.
      const { mounted } = ensureBpffs(o.bpffs, { allowPrivateMount: true });
      const where = inInitialMountNamespace() ? '' : ' (in a private mount namespace: the mount and every pin go with it)';
      process.stdout.write(mounted ? `spak bpffs: mounted bpffs at ${o.bpffs}, mode 0700${where}\n` : `spak bpffs: bpffs already mounted at ${o.bpffs}\n`);
    });
  bpffs.exitOverride();
}
