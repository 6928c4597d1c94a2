// Live metrics: a run streams its device metrics to a real Prometheus (Debian's package, its remote-write receiver
// on, started here on a loopback port), they arrive with their tags, and every query of the shipped Grafana dashboard
// (docs/grafana/wakestorm.json: panels and the chaos annotation) answers with data for the run.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { freePort, ROOT, runCli } from '../helpers/proc.ts';

const PROMETHEUS = process.env.PROMETHEUS_BIN ?? '/usr/bin/prometheus';

interface PromResult {
  metric: Record<string, string>;
  values?: [number, string][];
  value?: [number, string];
}

async function promQuery(base: string, path: string, params: Record<string, string>): Promise<PromResult[]> {
  const res = await fetch(`${base}${path}?${new URLSearchParams(params).toString()}`);
  const body = (await res.json()) as { status: string; error?: string; data?: { result: PromResult[] } };
  assert.equal(body.status, 'success', `${params.query}: ${body.error}`);
  return body.data!.result;
}

/** A dashboard query as Grafana would send it: every profile, a one-minute rate window. */
const grafana = (expr: string) => expr.replaceAll('$profile', '.*').replaceAll('$__rate_interval', '1m');

/**
 * Runs a fleet of two profiles through a cut into a fresh Prometheus and checks what arrives. `native`: trends as
 * native histograms (k6's K6_PROMETHEUS_RW_TREND_AS_NATIVE_HISTOGRAM, Prometheus's native-histograms feature);
 * otherwise as the percentile gauges. The shipped dashboard answers either way.
 */
async function liveRun(native: boolean): Promise<void> {
  assert.ok(existsSync(PROMETHEUS), `no Prometheus at ${PROMETHEUS}: apt-get install prometheus (.ci/run does)`);
  const dir = mkdtempSync(join(tmpdir(), 'wakestorm-prom-'));
  writeFileSync(join(dir, 'prometheus.yml'), 'global:\n  scrape_interval: 15s\n');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const prom = spawn(
    PROMETHEUS,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--web.enable-remote-write-receiver',
      ...(native ? ['--enable-feature=native-histograms'] : []),
    ],
    { stdio: 'ignore' },
  );
  try {
    for (let i = 0; ; i++) {
      const ready = await fetch(`${base}/-/ready`).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) break;
      assert.ok(i < 100, 'Prometheus did not become ready in 10 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    // A cut mid-run: links lost with their close code, reconnects, and the chaos events the annotation shows.
    const timeline = join(dir, 'cut.json');
    writeFileSync(timeline, JSON.stringify([{ at: '8s', for: '2s', fault: 'cut' }]));
    const start = Date.now() / 1000;
    const r = await runCli(
      [
        'run',
        'smoke',
        '--devices',
        '12',
        '--duration',
        '22s',
        '--wake',
        'poisson:4s',
        '--profile',
        'recommended:1,esp32-hotpin:1',
        '--timeline',
        timeline,
        '--prometheus',
        `${base}/api/v1/write`,
        '--results',
        dir,
        '--no-dashboard',
        '--quiet',
      ],
      {
        env: {
          K6_PROMETHEUS_RW_PUSH_INTERVAL: '1s',
          ...(native ? { K6_PROMETHEUS_RW_TREND_AS_NATIVE_HISTOGRAM: 'true' } : {}),
        },
        timeoutMs: 150_000,
      },
    );
    assert.ok(r.code === 0 || r.code === 99, r.stdout + r.stderr);
    const end = Date.now() / 1000 + 1;
    const range = { start: String(start), end: String(end), step: '1' };
    // The device metrics, with their tags: a profile per series, the close code on lost links.
    const wakes = await promQuery(base, '/api/v1/query_range', { query: 'k6_wakes_total', ...range });
    const profiles = new Set(wakes.map((s) => s.metric.profile));
    assert.deepEqual(profiles, new Set(['recommended', 'esp32-hotpin']), JSON.stringify([...profiles]));
    const drops = await promQuery(base, '/api/v1/query_range', { query: 'k6_connection_drops_total', ...range });
    assert.ok(
      drops.some((s) => s.metric.code === '1006'),
      `close codes: ${drops.map((s) => s.metric.code).join(', ')}`,
    );
    // Trends arrive in the form asked for: native histograms (with a count) or percentile gauges, never both.
    const histograms = await promQuery(base, '/api/v1/query_range', {
      query: 'histogram_count(k6_response_latency_seconds)',
      ...range,
    });
    const gauges = await promQuery(base, '/api/v1/query_range', { query: 'k6_response_latency_p95', ...range });
    assert.equal(histograms.length > 0, native, `native histograms: ${histograms.length} series`);
    assert.equal(gauges.length > 0, !native, `p95 gauges: ${gauges.length} series`);
    // Every panel's every query, and the annotation, as Grafana would send them.
    const dash = JSON.parse(readFileSync(join(ROOT, 'docs', 'grafana', 'wakestorm.json'), 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[];
      annotations: { list: { name: string; expr: string }[] };
      templating: { list: { name: string; query: string }[] };
    };
    const queries = [
      ...dash.panels.flatMap((p) => p.targets.map((t) => [p.title, t.expr] as const)),
      ...dash.annotations.list.map((a) => [`annotation ${a.name}`, a.expr] as const),
    ];
    assert.ok(queries.length >= 10, `${queries.length} queries`);
    for (const [title, expr] of queries) {
      const series = await promQuery(base, '/api/v1/query_range', { query: grafana(expr), ...range });
      assert.ok(
        series.some((s) => (s.values ?? []).length > 0),
        `${title}: ${expr} returned no data for the run`,
      );
    }
    // The profile variable lists the run's profiles.
    const variable = /label_values\((\w+), (\w+)\)/.exec(dash.templating.list[0]!.query)!;
    const labels = await fetch(`${base}/api/v1/label/${variable[2]}/values?match[]=${variable[1]}`).then(
      (x) => x.json() as Promise<{ data: string[] }>,
    );
    assert.deepEqual(new Set(labels.data), profiles);
  } finally {
    if (prom.exitCode === null && prom.signalCode === null) {
      const exited = new Promise((r) => prom.once('exit', r));
      prom.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('live metrics into Prometheus', () => {
  it("a run's device metrics reach a real Prometheus with their tags, and every dashboard query returns data", () =>
    liveRun(false));

  it('with trends as native histograms, they arrive as histograms and every dashboard query still answers', () =>
    liveRun(true));

  it('refuses a --prometheus that is not a URL, in one line, before any load', async () => {
    const r = await runCli(['run', 'smoke', '--prometheus', 'localhost:9090', '--devices', '2']);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /--prometheus must be a remote-write URL/);
  });
});
