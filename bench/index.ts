// `npm run bench`: the scale bench (with its plain-k6 baseline) and the fidelity bench, in one run on this machine.
// Writes results/bench-<timestamp>/bench.json and bench.md, and BENCHMARKS.md at the top level (unless BENCH_QUICK=1).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { requireTools } from '../scripts/tools.ts';
import { ROOT, resultsRoot } from '../scripts/run.ts';
import { fidelityBench, type FidelityRow } from './fidelity.ts';
import { engineFrameCost, frameCost, type FrameCost } from './frame-cost-run.ts';
import { scaleBench, type ScaleRow } from './scale.ts';
import { limitsSectionIn, scenariosSectionIn, withLimitsSection, withScenariosSection } from './scenarios.ts';
import { peersBench, peersSection, peersSectionIn, withPeersSection } from './peers.ts';

/**
 * The new BENCHMARKS.md with the shipped-scenarios and limits sections the last `npm run bench:scenarios` wrote kept, and the
 * peers section this run wrote (or, when it did not run them, the last one).
 */
function keepSections(text: string, peers: string | null = null): string {
  const old = existsSync(join(ROOT, 'BENCHMARKS.md')) ? readFileSync(join(ROOT, 'BENCHMARKS.md'), 'utf8') : '';
  const scenarios = scenariosSectionIn(old);
  const limits = limitsSectionIn(old);
  const withScenarios = [
    (t: string) => (scenarios ? withScenariosSection(t, scenarios) : t),
    (t: string) => (limits ? withLimitsSection(t, limits) : t),
  ].reduce((t, keep) => keep(t), text);
  const p = peers ?? peersSectionIn(old);
  return p ? withPeersSection(withScenarios, p) : withScenarios;
}

const quick = process.env.BENCH_QUICK === '1';
const only = process.env.BENCH_ONLY; // 'scale' | 'fidelity' | 'cost' | 'peers'

/** The tester's RSS or CPU: k6's, or for engine rows the sum with k6's and the engine's parts. */
function testerCell(r: ScaleRow, f: 'rss_avg_mib' | 'cpu_avg_pct'): string {
  const k6 = r.k6?.[f];
  if (!r.engine) return String(k6 ?? '-');
  return `${r.tester ? +r.tester[f].toFixed(1) : '-'} (k6 ${k6 ?? '-'} + engine ${r.engine[f]})`;
}

function scaleTable(rows: ScaleRow[]): string {
  const h =
    '| kind | devices | per VU | holds | tester RSS (MiB) | tester CPU (% of a core) | tester KiB/device | devices/GiB (vs baseline of that size) | devices/core (vs baseline) | server RSS (MiB) | server CPU | toxiproxy RSS / CPU |';
  const lines = rows.map(
    (r) =>
      `| ${r.kind} | ${r.devices} | ${r.kind === 'baseline' ? 1 : r.devices_per_vu} | ${r.holds ? 'yes' : `no: ${r.why_not.join('; ')}`} | ${testerCell(r, 'rss_avg_mib')} | ${testerCell(r, 'cpu_avg_pct')} | ${r.k6_kib_per_device ?? '-'} | ${r.devices_per_gib ?? '-'} (${r.per_gib_vs_baseline ?? '-'}x) | ${r.devices_per_core ?? '-'} (${r.per_core_vs_baseline ?? '-'}x) | ${r.server?.rss_avg_mib ?? '-'} | ${r.server?.cpu_avg_pct ?? '-'}% | ${r.toxiproxy?.rss_avg_mib ?? '-'} MiB / ${r.toxiproxy?.cpu_avg_pct ?? '-'}% |`,
  );
  return [h, '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |', ...lines].join('\n');
}

function fidelityTable(rows: FidelityRow[]): string {
  const h =
    '| devices (engine) | wake_ack p50 / p99 (truth) | response p50 / p99 (truth) | reconnect p50 / p99 (truth) | p50 error: wake_ack, response, reconnect (ms) | k6 + engine / server / toxiproxy CPU | server lag p99 | generator timer lag p50 / p99 | engine timer lag per firing p50 / p99 |';
  const lines = rows.map(
    (r) =>
      `| ${r.devices} (${r.engine ?? 'k6'}) | ${r.measured.wake_ack_p50} / ${r.measured.wake_ack_p99} (${r.truth.wake_ack_ms}) | ${r.measured.response_p50} / ${r.measured.response_p99} (${r.truth.response_ms}) | ${r.measured.reconnect_p50} / ${r.measured.reconnect_p99} (${r.truth.reconnect_ms}) | ${r.error_p50_ms.wake_ack}, ${r.error_p50_ms.response}, ${r.error_p50_ms.reconnect} | ${r.k6_cpu_pct}% + ${r.engine_cpu_pct ?? '-'}% / ${r.server_cpu_pct}% / ${r.toxiproxy_cpu_pct}% | ${r.server_lag_p99_ms} ms | ${r.vu_lag_p50_ms ?? '-'} / ${r.vu_lag_p99_ms ?? '-'} ms | ${r.timer_lag_p50_ms ?? '-'} / ${r.timer_lag_p99_ms ?? '-'} ms |`,
  );
  return [h, '| --- | --- | --- | --- | --- | --- | --- | --- | --- |', ...lines].join('\n');
}

type ScaleResult = Awaited<ReturnType<typeof scaleBench>>;

/** The issue's targets, each met or not, computed from this run's rows. */
function targetsTable(scale: ScaleResult | null, fidelity: FidelityRow[] | null, cost: FrameCost | null): string {
  const rows: string[] = [];
  const yes = (b: boolean) => (b ? 'met' : '**not met**');
  if (scale) {
    // The big fleet's best attempt: every device connected, fewest reasons not to hold, least k6 CPU.
    const connected10k = scale.rows
      .filter(
        (r) =>
          r.kind === 'wakestorm' &&
          r.devices >= 10_000 &&
          r.server_connections_min !== null &&
          r.server_connections_min >= r.devices,
      )
      .sort(
        (a, b) => a.why_not.length - b.why_not.length || (a.k6?.cpu_avg_pct ?? 1e9) - (b.k6?.cpu_avg_pct ?? 1e9),
      )[0];
    rows.push(
      `| k6 device (\`--engine k6\`): 10,000 devices hold every criterion | ${scale.largest ?? 0} hold${connected10k ? `; at ${connected10k.devices} (${connected10k.devices_per_vu}/VU) every device connects and keeps alive, but not: ${connected10k.why_not.join('; ')}` : ''} | ${yes((scale.largest ?? 0) >= 10_000)} |`,
    );
    rows.push(
      `| k6 device: 20,000 devices (stretch) | ${scale.largest ?? 0} | ${yes((scale.largest ?? 0) >= 20_000)} |`,
    );
    rows.push(
      `| 10x the baseline's devices per GiB | ${scale.perGibRatio ?? '-'}x | ${yes((scale.perGibRatio ?? 0) >= 10)} |`,
    );
    const talk = scale.rows.find((r) => r.kind === 'engine');
    if (talk) {
      const why = talk.holds ? '' : `: ${talk.why_not.join('; ')}`;
      const engineCpu = talk.engine
        ? `; engine ${talk.engine.cpu_avg_pct}% of a core, server ${talk.server?.cpu_avg_pct ?? '-'}%, toxiproxy ${talk.toxiproxy?.cpu_avg_pct ?? '-'}%`
        : '';
      rows.push(
        `| native engine: ${talk.devices} talking devices hold every criterion | ${talk.holds ? 'hold' : 'do not hold'}${why}${engineCpu} | ${yes(talk.holds)} |`,
      );
      // Per firing (core/timer-lag.ts); the latest timer per VU-second (vu_loop_lag) beside it.
      const p99 = talk.timer_lag_p99_ms ?? null;
      rows.push(
        `| native engine: its scheduling lag p99 ≤ 5 ms at ${talk.devices} talking devices | per timer firing p99 ${p99 ?? '-'} ms (p50 ${talk.timer_lag_p50_ms ?? '-'}); the latest timer of each VU-second p99 ${talk.vu_lag_p99_ms ?? '-'} ms | ${yes(p99 !== null && p99 <= 5)} |`,
      );
    }
    // The native engine's idle row (issue 23): per device, the engine alone and with k6; the tester's CPU.
    // The best of its rows (devices per VU differ): the least memory per device for the tester as a whole.
    const e = scale.rows
      .filter((r) => r.kind === 'engine-idle' && r.holds)
      .sort((a, b) => (a.k6_kib_per_device ?? 1e9) - (b.k6_kib_per_device ?? 1e9))[0];
    if (e?.engine && e.tester) {
      const engineKib = +((e.engine.rss_avg_mib * 1024) / e.devices).toFixed(1);
      rows.push(
        `| native engine: RSS per idle device at ${e.devices} ≤ 8 KiB (engine), ≤ 15 KiB (engine + k6) | ${engineKib} KiB, ${e.k6_kib_per_device} KiB (${e.devices_per_vu}/VU) | ${yes(engineKib <= 8 && (e.k6_kib_per_device ?? 1e9) <= 15)} |`,
      );
      rows.push(
        `| native engine: tester CPU at ${e.devices} idle devices ≤ 15% of a core | ${+e.tester.cpu_avg_pct.toFixed(1)}% (k6 ${e.k6?.cpu_avg_pct ?? '-'}% + engine ${e.engine.cpu_avg_pct}%) | ${yes(e.tester.cpu_avg_pct <= 15)} |`,
      );
    }
  }
  for (const f of fidelity ?? []) {
    const bound = f.devices <= 1000 ? 2 : f.devices >= 10_000 ? 10 : null;
    if (bound === null) continue;
    const errs = [f.error_p50_ms.wake_ack, f.error_p50_ms.response]
      .filter((x): x is number => x !== null)
      .map(Math.abs);
    const worst = errs.length ? Math.max(...errs) : null;
    rows.push(
      `| latency p50 error within ${bound} ms at ${f.devices} devices | ${worst ?? '-'} ms (wake_ack ${f.error_p50_ms.wake_ack}, response ${f.error_p50_ms.response}) | ${yes(worst !== null && worst <= bound)} |`,
    );
    const p99 = [f.error_p99_ms?.wake_ack, f.error_p99_ms?.response].filter((x): x is number => typeof x === 'number');
    if (p99.length) {
      const w99 = Math.max(...p99.map(Math.abs));
      rows.push(
        `| latency p99 error within 20 ms at ${f.devices} devices (${f.engine ?? 'k6'}) | ${w99} ms (wake_ack ${f.error_p99_ms?.wake_ack}, response ${f.error_p99_ms?.response}) | ${yes(w99 <= 20)} |`,
      );
    }
  }
  if (cost?.engine)
    rows.push(
      `| native engine: CPU per uplink audio frame ≤ 3 µs | ${cost.engine.us_per_frame} µs (a bare Go timer ${cost.engine.us_per_timer} µs; the k6 device ${cost.us_per_frame} µs) | ${yes(cost.engine.us_per_frame <= 3)} |`,
    );
  return ['| target | this run | |', '| --- | --- | --- |', ...rows].join('\n');
}

function costSection(c: FrameCost | null): string {
  if (!c) return '(not run)';
  return [
    `One k6 VU, ${c.streams} paced 20 ms streams, sockets scripted in memory (\`bench/frame-cost.ts\`); k6's CPU from /proc over each window, less its idle rate.`,
    '',
    '| bare k6 timer callback | device-model uplink frame | ratio | 11,500 frames/s (10,000 devices) would take |',
    '| --- | --- | --- | --- |',
    `| ${c.us_per_timer} µs | ${c.us_per_frame} µs (${c.frames_per_s} frames/s, ${c.slips} slips) | ${(c.us_per_frame / c.us_per_timer).toFixed(2)}x | ${c.pct_core_at_10k}% of a core |`,
    ...(c.engine
      ? [
          '',
          `The native engine, the same measure (\`engine/framecost_test.go\`): ${c.engine.streams} talking devices paced at 20 ms, sockets in memory, the process's CPU (getrusage) over a 4 s window against ${c.engine.streams} bare Go timer chains at the same pace.`,
          '',
          '| bare Go timer callback | engine uplink frame | ratio | 11,500 frames/s would take |',
          '| --- | --- | --- | --- |',
          `| ${c.engine.us_per_timer} µs | ${c.engine.us_per_frame} µs (${c.engine.frames_per_s} frames/s) | ${(c.engine.us_per_frame / c.engine.us_per_timer).toFixed(2)}x | ${+((11_500 * c.engine.us_per_frame) / 1e4).toFixed(1)}% of a core |`,
        ]
      : []),
  ].join('\n');
}

function render(scale: ScaleResult | null, fidelity: FidelityRow[] | null, cost: FrameCost | null = null): string {
  return [
    '## Targets',
    '',
    targetsTable(scale, fidelity, cost),
    '',
    `## Scale${scale ? `: largest fleet that holds: ${scale.largest ?? 'none'} devices; at best ${scale.perGibRatio}x the plain-k6 baseline's devices per GiB and ${scale.perCoreRatio}x its devices per core` : ''}`,
    '',
    scale ? scaleTable(scale.rows) : '(not run)',
    '',
    '## Fidelity: measured against injected truths',
    '',
    fidelity ? fidelityTable(fidelity) : '(not run)',
    '',
    "## The device model's own CPU per audio frame",
    '',
    costSection(cost),
    '',
  ].join('\n');
}

function benchmarksMd(machine: Record<string, string | number>, seconds: number, md: string, date: string): string {
  const limits = join(import.meta.dirname, 'LIMITS.md');
  // The past-one-process section, as `npm run bench:fleet` last wrote it.
  const fleet = join(import.meta.dirname, 'FLEET.md');
  return (
    `# Benchmarks\n\nProduced by \`npm run bench\` (${seconds} s) on ${machine.cores} cores (${machine.cpu}), ${machine.memory_gib} GiB, Node ${machine.node}, k6 ${machine.k6}, Toxiproxy ${machine.toxiproxy}, ${date}. Tester, Toxiproxy and server share the machine; devices go through Toxiproxy (fleets past the open-file limit through several Toxiproxy processes, see \`--toxiproxy-shards\`).\n\n` +
    'Scale: each row is one bounded run of `scenarios/wake-latency.ts` with the `recommended` profile (JSON ping every 15 s, answers server pings every 10 s, 20 ms audio frames), 1 wake per device per 5 minutes with real-time audio up and TTS down. A fleet *holds* when the server sees every device connected through the steady window, no connect fails or drops, keepalives arrive at cadence (within 20%), at most 1 uplink frame in 1000 slips more than 60 ms, at most 1% of conversations see a playback underrun, and the SLOs hold. RSS and CPU are averages over the steady window, sampled from /proc every second (Toxiproxy shards summed). The baseline is `bench/baseline.ts`: one VU per device, one socket, same identity and keepalive, no device model and no audio.\n\n' +
    "Fidelity: `bench/calibration.ts` through a 25 ms latency toxic each way, with the server's default endpointing window and stt+llm+tts (300 + 100+150+100 ms: the response truth is voice-to-voice, from the last voiced frame), then a 2.5 s cut with a fixed 1 s backoff. Latency truths are the injected delays; reconnect truth is the third try after the cut starts (3 s) plus one round trip. Latencies count after the ramp and before the cut. VU loop lag is how late each VU's 1 s probe timer fired over the same window: the generator's own delay on its timestamps.\n\n" +
    `${md}\nServer-only numbers: \`npm run bench:server\` (see the issue notes).\n` +
    (existsSync(fleet) ? `\n${readFileSync(fleet, 'utf8')}` : '') +
    (existsSync(limits) ? `\n${readFileSync(limits, 'utf8')}` : '')
  );
}

async function main() {
  // BENCH_RENDER=results/bench-…/bench.json rewrites BENCHMARKS.md from a finished run (after editing bench/LIMITS.md).
  if (process.env.BENCH_RENDER) {
    const b = JSON.parse(readFileSync(process.env.BENCH_RENDER, 'utf8')) as {
      machine: Record<string, string | number>;
      seconds: number;
      scale: ScaleResult | null;
      fidelity: FidelityRow[] | null;
      cost?: FrameCost | null;
      date?: string;
    };
    writeFileSync(
      join(ROOT, 'BENCHMARKS.md'),
      keepSections(benchmarksMd(b.machine, b.seconds, render(b.scale, b.fidelity, b.cost ?? null), b.date ?? '')),
    );
    console.log('BENCHMARKS.md rewritten from', process.env.BENCH_RENDER);
    return;
  }
  const tools = requireTools();
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  // BENCH_RESULTS: another results root (the tests write to a temporary folder, never the user's results/).
  const dir = join(resultsRoot(process.env.BENCH_RESULTS), `bench-${stamp}`);
  mkdirSync(dir, { recursive: true });
  const machine = {
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? '',
    memory_gib: +(totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    k6: tools.k6Version,
    toxiproxy: tools.toxiproxyVersion,
  };
  const log = (l: string) => console.log(l);
  log(
    `wakestorm bench${quick ? ' (quick)' : ''} on ${machine.cores} cores, ${machine.memory_gib} GiB; results in ${dir}`,
  );
  const t0 = Date.now();
  const scale = only && only !== 'scale' ? null : await scaleBench(quick, dir, log);
  const fidelity = only && only !== 'fidelity' ? null : await fidelityBench(quick, dir, log);
  let cost: FrameCost | null = null;
  if (!only || only === 'cost') {
    log('cost: the device model per audio frame against a bare k6 timer, in one k6 process');
    cost = await frameCost(quick ? 200 : 800, log);
    cost.engine = engineFrameCost(quick ? 200 : 800, log);
  }
  const peers = !only || only === 'peers' ? await peersBench(quick, log) : null;
  const seconds = Math.round((Date.now() - t0) / 1000);
  const date = new Date().toISOString().slice(0, 10);
  writeFileSync(
    join(dir, 'bench.json'),
    JSON.stringify({ quick, machine, seconds, date, scale, fidelity, cost, peers }, null, 1),
  );
  const md = render(scale, fidelity, cost);
  writeFileSync(join(dir, 'bench.md'), md);
  if (!quick)
    writeFileSync(
      join(ROOT, 'BENCHMARKS.md'),
      keepSections(benchmarksMd(machine, seconds, md, date), peers ? peersSection(peers) : null),
    );
  console.log(`\n${md}\nwritten: ${join(dir, 'bench.json')}${quick ? '' : ' and BENCHMARKS.md'}`);
}

main().catch((e) => {
  console.error(`bench failed: ${(e as Error).message}`);
  process.exit(1);
});
