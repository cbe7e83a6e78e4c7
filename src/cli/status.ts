// `spak status [--json] [IFACE]`: the pinned state of the server's interfaces, daemon or not.
import { InvalidArgumentError, type Command } from 'commander';
import { DEFAULT_BPFFS } from '../bpf/pins.js';
import { collectStatus, pinnedInterfaces } from '../observe/status.js';
import { formatStatus } from '../observe/status-format.js';

/** "1s", "500ms", "0", "2" (seconds) -> ms. */
export function parseSample(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text);
  if (!m) throw new InvalidArgumentError(`expected e.g. 1s, 500ms or 0`);
  const n = Number(m[1]) * (m[2] === 'ms' ? 1 : 1000);
  if (n > 60_000) throw new InvalidArgumentError('at most 60 s');
  return Math.round(n);
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('show what protects each interface: link and mode, destinations, key ids, allowlist, tables, counters and rates (from the pins; daemon or not)')
    .argument('[iface]', 'only this interface')
    .option('--json', 'print JSON (one object: {"interfaces": [...]})')
    .option('--sample <time>', 'read the counters twice this far apart for rates (0: skip)', parseSample, 1000)
    .option('--bpffs <dir>', 'where bpffs is', DEFAULT_BPFFS)
    .action(async (iface: string | undefined, o: { json?: boolean; sample: number; bpffs: string }) => {
      const sampleMs = o.sample;
      const pinned = pinnedInterfaces(o.bpffs);
      if (iface !== undefined && !pinned.includes(iface)) throw new Error(`no spak server state pinned for ${iface} (under ${o.bpffs}/spak)`);
      const ifaces = iface !== undefined ? [iface] : pinned;
      if (ifaces.length === 0) throw new Error(`no spak server state pinned in this network namespace (under ${o.bpffs}/spak): nothing is protected`);
      const status = await collectStatus(ifaces, o.bpffs, sampleMs);
      if (o.json) process.stdout.write(`${JSON.stringify({ interfaces: status, sampleSeconds: sampleMs / 1000 })}\n`);
      else process.stdout.write(`${status.map(formatStatus).join('\n\n')}\n`);
    });
}
