// Run inside a lab host by bench/connect.ts: attaches a bare program (bpf/baseline.bpf.c) through
// the project's own binding and holds it until SIGTERM/SIGINT, then detaches it.
//   node dist/bench/hooks.js xdp IFACE [native|generic|auto]   baseline_xdp_pass at XDP
//   node dist/bench/hooks.js tc IFACE                          baseline_tc_ok at tc egress
import { attachTc, attachXdp, BpfObject, type XdpMode } from '../src/bpf/libbpf.js';
import { objectPath } from '../src/bpf/object-files.js';

function main(): void {
  const [kind, ifname, mode = 'native'] = process.argv.slice(2);
  if ((kind !== 'xdp' && kind !== 'tc') || !ifname) {
    process.stderr.write('usage: hooks.js xdp|tc IFACE [native|generic|auto]\n');
    process.exit(2);
  }
  const obj = BpfObject.open(objectPath('baseline'));
  obj.load();
  const att =
    kind === 'xdp'
      ? attachXdp(obj.program('baseline_xdp_pass'), ifname, { mode: mode as XdpMode })
      : attachTc(obj.program('baseline_tc_ok'), ifname, 'egress');
  const where = 'mode' in att ? `XDP (${att.mode})` : 'TC egress';
  process.stdout.write(`bare hook: ${where} attached to ${ifname}\n`);
  const done = () => {
    att.detach();
    obj.close();
    process.stdout.write(`bare hook: ${where} detached from ${ifname}\n`, () => process.exit(0));
  };
  process.once('SIGTERM', done);
  process.once('SIGINT', done);
  setInterval(() => {}, 1 << 30);
}

main();
