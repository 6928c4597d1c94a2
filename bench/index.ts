// `npm run bench`: the scale bench (with its plain-k6 baseline) and the fidelity bench, in one run on this machine.
// Writes results/bench-<timestamp>/bench.json and bench.md, and BENCHMARKS.md at the top level (unless BENCH_QUICK=1).
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { requireTools } from '../scripts/tools.ts';
import { ROOT } from '../scripts/run.ts';
import { fidelityBench, type FidelityRow } from './fidelity.ts';
import { scaleBench, type ScaleRow } from './scale.ts';

const quick = process.env.BENCH_QUICK === '1';
const only = process.env.BENCH_ONLY; // 'scale' | 'fidelity'

function scaleTable(rows: ScaleRow[]): string {
  const h = '| kind | devices | per VU | holds | k6 RSS (MiB) | k6 CPU (% of a core) | k6 KiB/device | devices/GiB (vs baseline) | devices/core (vs baseline) | server RSS (MiB) | server CPU | toxiproxy RSS / CPU |';
  const lines = rows.map(
    (r) =>
      `| ${r.kind} | ${r.devices} | ${r.kind === 'baseline' ? 1 : r.devices_per_vu} | ${r.holds ? 'yes' : `no: ${r.why_not.join('; ')}`} | ${r.k6?.rss_avg_mib ?? '-'} | ${r.k6?.cpu_avg_pct ?? '-'} | ${r.k6_kib_per_device ?? '-'} | ${r.devices_per_gib ?? '-'} (${r.per_gib_vs_baseline ?? '-'}x) | ${r.devices_per_core ?? '-'} (${r.per_core_vs_baseline ?? '-'}x) | ${r.server?.rss_avg_mib ?? '-'} | ${r.server?.cpu_avg_pct ?? '-'}% | ${r.toxiproxy?.rss_avg_mib ?? '-'} MiB / ${r.toxiproxy?.cpu_avg_pct ?? '-'}% |`,
  );
  return [h, '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |', ...lines].join('\n');
}

function fidelityTable(rows: FidelityRow[]): string {
  const h = '| devices | wake_ack p50 / p99 (truth) | response p50 / p99 (truth) | reconnect p50 / p99 (truth) | p50 error: wake_ack, response, reconnect (ms) | k6 / server / toxiproxy CPU | server lag p99 | VU loop lag p50 / p99 |';
  const lines = rows.map(
    (r) =>
      `| ${r.devices} | ${r.measured.wake_ack_p50} / ${r.measured.wake_ack_p99} (${r.truth.wake_ack_ms}) | ${r.measured.response_p50} / ${r.measured.response_p99} (${r.truth.response_ms}) | ${r.measured.reconnect_p50} / ${r.measured.reconnect_p99} (${r.truth.reconnect_ms}) | ${r.error_p50_ms.wake_ack}, ${r.error_p50_ms.response}, ${r.error_p50_ms.reconnect} | ${r.k6_cpu_pct}% / ${r.server_cpu_pct}% / ${r.toxiproxy_cpu_pct}% | ${r.server_lag_p99_ms} ms | ${r.vu_lag_p50_ms ?? '-'} / ${r.vu_lag_p99_ms ?? '-'} ms |`,
  );
  return [h, '| --- | --- | --- | --- | --- | --- | --- | --- |', ...lines].join('\n');
}

async function main() {
  const tools = requireTools();
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = join(ROOT, 'results', `bench-${stamp}`);
  mkdirSync(dir, { recursive: true });
  const machine = { cores: cpus().length, cpu: cpus()[0]?.model ?? '', memory_gib: +(totalmem() / 2 ** 30).toFixed(1), node: process.version, k6: tools.k6Version, toxiproxy: tools.toxiproxyVersion };
  const log = (l: string) => console.log(l);
  log(`wakestorm bench${quick ? ' (quick)' : ''} on ${machine.cores} cores, ${machine.memory_gib} GiB; results in ${dir}`);
  const t0 = Date.now();
  const scale = only === 'fidelity' ? null : await scaleBench(quick, dir, log);
  const fidelity = only === 'scale' ? null : await fidelityBench(quick, dir, log);
  const seconds = Math.round((Date.now() - t0) / 1000);
  writeFileSync(join(dir, 'bench.json'), JSON.stringify({ quick, machine, seconds, scale, fidelity }, null, 1));
  const md = [
    `## Scale${scale ? `: largest fleet that holds: ${scale.largest ?? 'none'} devices; at best ${scale.perGibRatio}x the plain-k6 baseline's devices per GiB and ${scale.perCoreRatio}x its devices per core` : ''}`,
    '',
    scale ? scaleTable(scale.rows) : '(not run)',
    '',
    '## Fidelity: measured against injected truths',
    '',
    fidelity ? fidelityTable(fidelity) : '(not run)',
    '',
  ].join('\n');
  writeFileSync(join(dir, 'bench.md'), md);
  if (!quick) {
    writeFileSync(
      join(ROOT, 'BENCHMARKS.md'),
      `# Benchmarks\n\nProduced by \`npm run bench\` (${seconds} s) on ${machine.cores} cores (${machine.cpu}), ${machine.memory_gib} GiB, Node ${machine.node}, k6 ${machine.k6}, Toxiproxy ${machine.toxiproxy}, ${new Date().toISOString().slice(0, 10)}. Tester, Toxiproxy and server share the machine; devices go through Toxiproxy.\n\n` +
        'Scale: each row is one bounded run of `scenarios/wake-latency.ts` with the `recommended` profile (JSON ping every 15 s, answers server pings every 10 s), 1 wake per device per 5 minutes with real-time audio up and TTS down. A fleet *holds* when the server sees every device connected through the steady window, no connect fails or drops, keepalives arrive at cadence (within 20%), and the SLOs hold. RSS and CPU are averages over the steady window, sampled from /proc every second. The baseline is `bench/baseline.ts`: one VU per device, one socket, same identity and keepalive, no device model and no audio.\n\n' +
        'Fidelity: `bench/calibration.ts` through a 25 ms latency toxic each way, with the server\'s default stt+llm+tts (200+300+150 ms), then a 2.5 s cut with a fixed 1 s backoff. Latency truths are the injected delays; reconnect truth is the third try after the cut starts (3 s) plus one round trip.\n\n' +
        `${md}\nServer-only numbers: \`npm run bench:server\` (see the issue notes).\n`,
    );
  }
  console.log(`\n${md}\nwritten: ${join(dir, 'bench.json')}${quick ? '' : ' and BENCHMARKS.md'}`);
}

main().catch((e) => {
  console.error(`bench failed: ${(e as Error).message}`);
  process.exit(1);
});
