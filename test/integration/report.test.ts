// What a person sees: report.html in a real headless browser, and the CLI conventions CI reads (--json, --quiet,
// --version, --out, env vars), after real runs.
import { DEFAULT_SLOS } from '../../core/slo.ts';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { openPage } from '../helpers/browser.ts';
import { runCli } from '../helpers/proc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-report-'));
const results = join(tmp, 'results');

describe('report.html', () => {
  let json: {
    verdict: string;
    exit_code: number;
    dir: string;
    report: string;
    slos: { name: string; status: string }[];
  };
  before(async () => {
    // A chaos run of two profiles that fails on purpose: a cut the web client does not survive within the run.
    const cut = join(tmp, 'cut.json');
    writeFileSync(cut, JSON.stringify([{ at: '5s', for: '2s', fault: 'cut' }]));
    const r = await runCli(
      [
        'run',
        'smoke',
        '--devices',
        '12',
        '--duration',
        '20s',
        '--wake',
        'poisson:4s',
        '--profile',
        'recommended:1,web-heartbeat:1',
        '--timeline',
        cut,
        '--server-arg',
        '--stt-ms=50',
        '--results',
        results,
        '--json',
      ],
      { timeoutMs: 120_000 },
    );
    assert.equal(r.stdout.trim().split('\n').length, 1, `--json prints one line: ${r.stdout}`);
    json = JSON.parse(r.stdout);
    assert.equal(r.code, json.exit_code);
  });

  it('opens offline in a real browser with the verdict, the SLOs, every chart, both profiles and the tester', async () => {
    assert.ok(existsSync(join(json.dir, 'k6-dashboard.html')), "k6's dashboard is kept beside it");
    const page = await openPage(`file://${json.report}`);
    try {
      assert.deepEqual(page.errors, [], 'no console errors');
      assert.deepEqual(page.requests, [], 'self-contained: nothing loaded from elsewhere');
      const verdict = (await page.text('#verdict'))!;
      assert.match(verdict, new RegExp(`^${json.verdict.toUpperCase()}`));
      if (json.verdict === 'fail') assert.match(verdict, /The server broke/);
      // The SLO table: one row per SLO with its status.
      assert.equal(await page.count('#slos tbody tr'), json.slos.length);
      const charts = await page.charts();
      const ids = charts.map((c) => c.id);
      for (const id of [
        'chart-connected',
        'chart-latency',
        'chart-drops',
        'chart-reconnect',
        'chart-latency-profiles',
        'chart-tester',
        'chart-processes',
        'chart-latency-phases',
        'chart-server',
      ])
        assert.ok(ids.includes(id), `${id} in ${ids}`);
      for (const c of charts) {
        assert.ok(c.w > 300 && c.h > 150, `${c.id} renders at a readable size: ${c.w}x${c.h}`);
        if (
          !['chart-drops', 'chart-reconnect', 'chart-recovery', 'chart-phases', 'chart-sessions-dropped'].includes(c.id)
        )
          assert.ok(c.strokedPaths > 0, `${c.id} draws its lines`);
        // Every axis carries labelled ticks (a log axis too: no lone "0", no unlabelled band).
        for (const a of c.axes)
          assert.ok(a.filter(Boolean).length >= 1, `${c.id}: an axis with no labelled tick ${JSON.stringify(a)}`);
        // No two series of one chart look the same (a colour, or a dash where the legend is about dashes).
        for (const l of c.legends) {
          const named = l.colors.filter((_, i) => l.labels[i]);
          assert.equal(
            new Set(named).size,
            named.length,
            `${c.id}: colours ${l.colors.join(',')} for ${l.labels.join(',')}`,
          );
        }
      }
      // The latency axis is labelled at the values that matter, in ms and s.
      const latency = charts.find((c) => c.id === 'chart-latency')!;
      assert.ok(
        latency.axes.some((a) => a.filter((t) => /^\d+ (ms|s)$/.test(t)).length >= 2),
        `latency ticks: ${JSON.stringify(latency.axes)}`,
      );
      // A chaos run shows recovery per fault, one row per fault.
      assert.match((await page.text('#recovery'))!, /1:cut/);
      // The charts use the page's width.
      const width = Math.max(...charts.map((c) => c.w));
      assert.ok(width > 900, `charts ${width} px wide`);
      // Fault windows are shaded and labelled on the time charts, on the clock the recovery table uses: the cut's
      // 5-7 s window of the timeline is [5, 7] in connected.csv's seconds too (the chart's own numbers beside it).
      assert.match((await page.text('#chart-connected'))!, /cut/);
      assert.match((await page.text('#recovery'))!, /5\.0–7\.0 s/);
      const { runSeries } = await import('../../scripts/charts.ts');
      const rs = (await runSeries(json.dir))!;
      assert.deepEqual(
        rs.windows.map((w) => [w.from, w.to]),
        [[5, 7]],
      );
      // Every chart's numbers beside it as CSV; connected.csv is the series the chart draws.
      for (const c of charts) assert.ok(existsSync(join(json.dir, `${c.id.replace(/^chart-/, '')}.csv`)), c.id);
      const csv = readFileSync(join(json.dir, 'connected.csv'), 'utf8').trim().split('\n');
      assert.equal(csv[0], 's,key,value');
      assert.deepEqual(
        csv.slice(1).map((l) => l.split(',').map((x, i) => (i === 1 ? x : Number(x)))),
        rs.connected.map((r) => [r.s, r.key, r.value]),
      );
      // The throughput chart's wakes are the run's wakes: its 5 s buckets (per second) times 5 sum to k6's count.
      const thr = readFileSync(join(json.dir, 'throughput.csv'), 'utf8').trim().split('\n').slice(1);
      const wakesCharted = thr
        .map((l) => l.split(','))
        .filter((c) => c[1] === 'wakes/s')
        .reduce((n, c) => n + Number(c[2]) * 5, 0);
      const sum = JSON.parse(readFileSync(join(json.dir, 'summary.json'), 'utf8')) as {
        metrics: Record<string, { values: Record<string, number> }>;
      };
      assert.equal(Math.round(wakesCharted), sum.metrics.wakes!.values.count);
      // The devices dropped at the cut: the total right after 5 s is below the total right before it.
      const total = (s: number) => rs.connected.find((r) => r.key === 'all devices' && r.s === s)?.value ?? 0;
      assert.ok(total(6) < total(4), `connected at 4 s ${total(4)}, at 6 s ${total(6)}`);
      assert.equal(await page.count('#profiles tbody tr'), 2);
      assert.match((await page.text('#profiles'))!, /recommended[\s\S]*web-heartbeat/);
      assert.match((await page.text('#tester-health'))!, /device-engine timer lag\s+p50/);
      assert.match((await page.text('#processes'))!, /k6[\s\S]*server[\s\S]*toxiproxy/);
      // The latency distribution per phase is the samples' own: its steady-state response median is the median of
      // the run's steady response_latency samples, and every curve rises to its phase's worst sample.
      const dist = readFileSync(join(json.dir, 'latency-phases.csv'), 'utf8').trim().split('\n');
      assert.equal(dist[0], 'metric,phase,pct,ms');
      const point = (metric: string, phase: string, pct: number) =>
        Number(dist.find((l) => l.startsWith(`${metric},${phase},${pct},`))?.split(',')[3]);
      const steady = rs.samples
        .filter((x) => x.metric === 'response_latency' && x.tags.chaos === 'steady')
        .map((x) => x.value)
        .sort((a, b) => a - b);
      assert.ok(steady.length >= 3, `${steady.length} steady responses`);
      assert.equal(point('response', 'steady', 50), Math.max(1, steady[Math.ceil(0.5 * steady.length) - 1]!));
      assert.equal(point('response', 'steady', 100), Math.max(1, steady.at(-1)!));
      // The processes chart draws the run's own per-second samples (process-samples.csv) on the timeline's clock,
      // every process the run kept numbers for, and peaks no higher than the run's own peaks (run.json).
      const samples = readFileSync(join(json.dir, 'process-samples.csv'), 'utf8').trim().split('\n');
      assert.equal(samples[0], 'process,t,rss_mib,cpu_pct');
      const charted = readFileSync(join(json.dir, 'processes.csv'), 'utf8').trim().split('\n');
      assert.equal(charted[0], 's,process,rss_mib,cpu_pct');
      assert.equal(charted.length, samples.length);
      for (let i = 1; i < samples.length; i++) {
        const [p, t, rss, cpu] = samples[i]!.split(',');
        assert.deepEqual(charted[i]!.split(','), [String(+((Number(t) - rs.t0) / 1000).toFixed(3)), p, rss, cpu]);
      }
      const run = JSON.parse(readFileSync(join(json.dir, 'run.json'), 'utf8')) as {
        processes: Record<string, { rss_max_mib: number } | null>;
      };
      for (const [name, st] of Object.entries(run.processes).filter(([, st]) => st)) {
        const mine = rs.processes.filter((x) => x.process === name);
        assert.ok(mine.length > 3, `${name}: ${mine.length} samples charted`);
        assert.ok(Math.max(...mine.map((x) => x.rss_mib)) <= st!.rss_max_mib + 0.1, `${name} peak`);
      }
      // The server's own view: its /metrics every 2 s (server-samples.csv), charted as read, on the same clock. Its CPU,
      // by its own account (process_cpu_seconds_total), agrees with what /proc said of it (process-samples.csv).
      const own = readFileSync(join(json.dir, 'server-samples.csv'), 'utf8').trim().split('\n');
      assert.equal(own[0], 't,cpu_pct,rss_mib,loop_lag_ms,connections');
      assert.ok(own.length > 5, `${own.length - 1} reads of the server's metrics`);
      const drawn = readFileSync(join(json.dir, 'server.csv'), 'utf8').trim().split('\n');
      assert.equal(drawn[0], 's,cpu_pct,rss_mib,loop_lag_ms,connections');
      assert.equal(drawn.length, own.length);
      for (let i = 1; i < own.length; i++) {
        const [t, ...rest] = own[i]!.split(',');
        assert.deepEqual(drawn[i]!.split(','), [String(+((Number(t) - rs.t0) / 1000).toFixed(3)), ...rest]);
        assert.ok(
          rest.every((x) => x !== '' && Number.isFinite(Number(x))),
          `every metric read: ${own[i]}`,
        );
      }
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const theirs = mean(rs.server.map((x) => x.cpu_pct!));
      const ours = mean(rs.processes.filter((x) => x.process === 'server').map((x) => x.cpu_pct));
      assert.ok(
        Math.abs(theirs - ours) <= Math.max(2, 0.35 * ours),
        `server CPU: ${theirs}% by its metrics, ${ours}% by /proc`,
      );
      assert.ok(Math.max(...rs.server.map((x) => x.connections!)) >= 12, 'the server counted the fleet');
      assert.match((await page.text('#parameters'))!, /profile mix\s+recommended 50%, web-heartbeat 50%/);
      await page.screenshot(join(tmp, 'report.png'));
    } finally {
      await page.close();
    }
  });

  it("k6's own dashboard charts the voice fleet, and its totals are the run's", async () => {
    const page = await openPage(`file://${join(json.dir, 'k6-dashboard.html')}`);
    try {
      assert.deepEqual(page.errors, [], 'no console errors');
      const body = (await page.text('body'))!;
      // The voice panels (scripts/dashboard.ts), not k6's HTTP ones: a native-engine run makes no HTTP request but
      // the chaos VU's calls to Toxiproxy.
      for (const title of ['Voice fleet', 'Response latency', 'Wake acknowledgement', 'Links up and down per second'])
        assert.ok(body.includes(title), title);
      assert.ok(!body.includes('HTTP Performance overview'), "k6's HTTP overview is not the first thing shown");
      // The summary tab's counters are k6's totals of this run.
      const sum = JSON.parse(readFileSync(join(json.dir, 'summary.json'), 'utf8')) as {
        metrics: Record<string, { values: Record<string, number> }>;
      };
      for (const name of ['wakes', 'sessions_started']) {
        const row = new RegExp(`\\b${name}\\s+(\\d+)\\s`).exec(body);
        assert.equal(Number(row?.[1]), sum.metrics[name]!.values.count, name);
      }
      await page.screenshot(join(tmp, 'k6-dashboard.png'));
    } finally {
      await page.close();
    }
  });

  it('capacity.svg draws its latency lines with a stroke and legends that keep p50 and p95 apart', async () => {
    const { renderCapacityChart } = await import('../../scripts/charts.ts');
    const path = join(tmp, 'capacity.svg');
    await renderCapacityChart(
      [
        { devices: 100, pass: true, wake_ack_p95: 20, response_p95: 700, drop_rate: 0 },
        { devices: 200, pass: true, wake_ack_p95: 40, response_p95: 750, drop_rate: 0 },
        { devices: 400, pass: false, wake_ack_p95: 400, response_p95: 1700, drop_rate: 0.02 },
      ],
      200,
      path,
    );
    writeFileSync(
      join(tmp, 'capacity.html'),
      `<!doctype html><html><body><figure id="chart-capacity">${readFileSync(path, 'utf8')}</figure></body></html>`,
    );
    const page = await openPage(`file://${join(tmp, 'capacity.html')}`);
    try {
      assert.deepEqual(page.errors, []);
      const [c] = await page.charts();
      assert.ok(c && c.strokedPaths >= 2, `both latency lines stroked: ${JSON.stringify(c)}`);
      assert.match(
        (await page.text('#chart-capacity'))!,
        /wake_ack p95 \(ms\)[\s\S]*response p95 \(ms\)|response p95 \(ms\)[\s\S]*wake_ack p95 \(ms\)/,
      );
    } finally {
      await page.close();
    }
  });

  it('charts a connected count that is the fleet total, not one VU', () => {
    const svg = readFileSync(join(json.dir, 'connected.svg'), 'utf8');
    // 12 devices over 1 VU here; the axis reaches the fleet's size.
    assert.match(svg, />12</);
  });
});

describe('CLI conventions', () => {
  it('--version prints the package version', async () => {
    const r = await runCli(['--version']);
    assert.equal(r.code, 0);
    assert.equal(
      r.stdout.trim(),
      JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version,
    );
  });

  it('--quiet prints only the verdict and the report; env vars set run flags; --out and K6_OUT reach k6', async () => {
    const csv = join(tmp, 'k6.csv');
    const jsonOut = join(tmp, 'k6.json');
    const r = await runCli(['run', 'smoke', '--quiet', '--out', `csv=${csv}`, '--results', results], {
      env: { WAKESTORM_DEVICES: '3', WAKESTORM_DURATION: '5s', WAKESTORM_WAKE: 'off', K6_OUT: `json=${jsonOut}` },
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => l.replace(/\d{8}-\d{6}(-\d+)?/, 'ID')),
      [
        'VERDICT: PASS (6 SLOs met, 11 n/a)',
        `wakestorm run smoke: PASS, exit 0; report: ${results}/smoke-ID/report.html`,
      ],
    );
    assert.match(readFileSync(csv, 'utf8'), /^metric_name,timestamp/);
    assert.match(readFileSync(jsonOut, 'utf8'), /"metric":"devices_started"/);
    const latest = JSON.parse(readFileSync(join(results, 'latest', 'run.json'), 'utf8'));
    assert.equal(latest.resolved.devices, 3);
    assert.equal(latest.resolved.wake.mode, 'off');
    assert.equal(latest.resolved.slos.length, DEFAULT_SLOS.length);
  });

  it('compare refuses an INVALID or incomplete run and warns about a different fleet size; lost data is a regression', async () => {
    const runs = readdirSync(results).filter((f) => f.startsWith('smoke-'));
    assert.equal(runs.length, 2);
    const [a, b] = runs.map((r) => join(results, r));
    const cmp = await runCli(['compare', a!, b!]);
    assert.match(cmp.stdout, /WARNING: different fleet sizes: 12 vs 3 devices/);
    // wake_ack had data in the first run and none in the second.
    assert.match(cmp.stdout, /wake_ack_p95\s+\S+ ms\s+no data\s+-\s+WORSE \(no data in b\)/);
    assert.equal(cmp.code, 1);
    const runJson = join(b!, 'run.json');
    const run = JSON.parse(readFileSync(runJson, 'utf8'));
    writeFileSync(runJson, JSON.stringify({ ...run, verdict: 'invalid' }));
    const refused = await runCli(['compare', a!, b!]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^wakestorm: cannot compare: run b \(\S+\) is INVALID/);
  });
});
