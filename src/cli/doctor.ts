// `spak doctor [--config FILE] [--json]`: is this machine ready for spak, and what to fix.
// Exit status: 0 everything OK, 1 warnings, 2 failures.
import type { Command } from 'commander';
import { DEFAULT_BPFFS } from '../bpf/pins.js';
import { exitCodeFor, formatReport } from '../observe/doctor.js';
import { DEFAULT_CONFIG_PATH, runDoctor } from '../observe/doctor-probes.js';

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check the kernel, privileges, libbpf, the eBPF objects, the clock, the configuration and the interface; exit 0 OK, 1 warnings, 2 failures')
    .option('-c, --config <file>', `the configuration to check (default ${DEFAULT_CONFIG_PATH} when it exists)`)
    .option('-i, --interface <iface>', 'the interface to probe when no configuration names one')
    .option('--no-probe', 'do not attach the pass-through XDP/TCX probes (some NIC drivers reset the link on an XDP attach)')
    .option('--bpffs <dir>', 'where bpffs is', DEFAULT_BPFFS)
    .option('--json', 'print JSON: {"results": [{check, severity, detail, fix}], "exitCode"}')
    .action((o: { config?: string; interface?: string; bpffs: string; json?: boolean; probe: boolean }) => {
      const results = runDoctor({ config: o.config, iface: o.interface, bpffs: o.bpffs, probe: o.probe });
      const code = exitCodeFor(results);
      if (o.json) process.stdout.write(`${JSON.stringify({ results, exitCode: code })}\n`);
      else process.stdout.write(`${formatReport(results)}\n`);
      process.exitCode = code;
    });
}
