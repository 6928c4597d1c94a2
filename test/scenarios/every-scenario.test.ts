// Every scenario and every shipped chaos timeline with a mixed fleet of both dialects (wakestorm PCM on a persistent
// link, xiaozhi-esp32 Opus on a channel per wake) against the reference server through real Toxiproxy. The healthy
// server must PASS every one: without a timeline, and with one under the chaos gate (steady state outside the faults,
// recovery after each; every fault applied, the tester healthy), where only a firmware's own choices may show, as
// findings that name the firmware. In every run both dialects must have conversed: a scenario that silently runs only
// one of them fails here.
// Runs outside `npm test` (it takes minutes): `npm run test:scenarios`, called by .ci/run.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { runCli } from '../helpers/proc.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-every-scenario-'));
const MIX = 'recommended:1,xiaozhi-esp32:1';
const DIALECT_PROFILES = ['recommended', 'xiaozhi-esp32'];

interface Outcome {
  code: number | null;
  out: string;
  metrics: Record<string, { values: Record<string, number> }>;
  events: { applied?: { ok: boolean }[] | null } | null;
  slos: Record<string, string>;
}

let n = 0;
async function run(args: string[]): Promise<Outcome> {
  const root = join(results, `r${++n}`);
  const r = await runCli(['run', ...args, '--results', root, '--no-dashboard'], { timeoutMs: 240_000 });
  const out = r.stdout + r.stderr;
  let metrics: Outcome['metrics'] = {};
  let events: Outcome['events'] = null;
  const slos: Record<string, string> = {};
  try {
    const dir = join(root, readlinkSync(join(root, 'latest')));
    metrics = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')).metrics;
    events = JSON.parse(readFileSync(join(dir, 'events.json'), 'utf8'));
    for (const x of JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')).slo_results as {
      name: string;
      status: string;
    }[])
      slos[x.name] = x.status;
  } catch {
    /* asserted below with the output */
  }
  return { code: r.code, out, metrics, events, slos };
}

const count = (o: Outcome, name: string) => o.metrics[name]?.values.count ?? 0;

/** Samples of a metric for one profile, in whichever submetric k6 reported it (its phase tags or none). */
const forProfile = (o: Outcome, base: string, p: string) =>
  Math.max(
    0,
    ...Object.entries(o.metrics)
      .filter(([k]) => k.startsWith(`${base}{`) && new RegExp(`[{,]profile:${p}[,}]`).test(k))
      .map(([, m]) => m.values.count ?? 0),
  );

const tail = (o: Outcome) => o.out.split('\n').slice(-25).join('\n');

/** Devices of both dialects woke, were acknowledged and heard a reply. */
function assertBothDialectsConversed(o: Outcome): void {
  for (const p of DIALECT_PROFILES) {
    assert.ok(forProfile(o, 'wake_ack_latency', p) >= 1, `${p}: no wake acknowledged`);
    assert.ok(forProfile(o, 'response_latency', p) >= 1, `${p}: no reply heard`);
  }
}

// A blackhole shorter than the shipped half-open (70 s), the same fault: the link stays open and goes silent.
const halfOpen = join(results, 'half-open-20s.json');
writeFileSync(halfOpen, JSON.stringify([{ at: '5s', for: '20s', fault: 'blackhole' }]));

const CASES: Record<string, string[]> = {
  smoke: ['smoke', '--profile', MIX, '--devices', '16', '--duration', '20s', '--wake', 'once:1s-4s'],
  'wake-latency': ['wake-latency', '--profile', MIX, '--devices', '30', '--duration', '30s'],
  soak: ['soak', '--profile', MIX, '--devices', '30', '--duration', '40s', '--wake', 'poisson:8s'],
  capacity: ['capacity', '--profile', MIX, '--devices', '40', '--duration', '30s'],
  'reconnect-storm (storm-cut)': ['reconnect-storm', '--profile', MIX, '--devices', '30', '--duration', '30s'],
  'flaky-network (flaky-wifi, seven firmwares)': ['flaky-network', '--devices', '42', '--duration', '50s'],
  'server-restart': [
    'flaky-network',
    '--profile',
    MIX,
    '--timeline',
    'server-restart',
    '--devices',
    '30',
    '--duration',
    '35s',
  ],
  'cell-handover': [
    'flaky-network',
    '--profile',
    MIX,
    '--timeline',
    'cell-handover',
    '--devices',
    '30',
    '--duration',
    '35s',
  ],
  'congested-uplink': [
    'flaky-network',
    '--profile',
    MIX,
    '--timeline',
    'congested-uplink',
    '--devices',
    '20',
    '--duration',
    '60s',
    '--wake',
    'poisson:10s',
  ],
  'half-open (20 s)': [
    'flaky-network',
    '--profile',
    MIX,
    '--timeline',
    halfOpen,
    '--devices',
    '30',
    '--duration',
    '45s',
  ],
};

describe('every scenario and timeline, both dialects in one fleet', () => {
  const o: Record<string, Outcome> = {};
  before(async () => {
    // Two runs at a time: small fleets, so neither starves the other on two cores.
    const names = Object.keys(CASES);
    for (let i = 0; i < names.length; i += 2)
      await Promise.all(names.slice(i, i + 2).map(async (k) => (o[k] = await run(CASES[k]!))));
  });
  for (const name of Object.keys(CASES)) {
    const chaos = CASES[name]!.includes('--timeline') || /storm|flaky/.test(name);
    it(
      chaos
        ? `${name}: PASS under the chaos gate, every fault applied, recovery measured, both dialects conversed`
        : `${name}: PASS, both dialects conversed`,
      () => {
        const r = o[name]!;
        assert.equal(r.code, 0, tail(r));
        assert.match(r.out, /VERDICT: PASS/);
        for (const [slo, status] of Object.entries(r.slos))
          assert.ok(status !== 'fail', `${slo} ${status}: ${tail(r)}`);
        if (chaos) {
          const applied = r.events?.applied ?? [];
          assert.ok(applied.length >= 2 && applied.every((e) => e.ok), `faults applied: ${JSON.stringify(applied)}`);
          assert.equal(count(r, 'chaos_errors'), 0);
          for (const slo of ['connect_success', 'wake_success', 'unplanned_drops'])
            assert.equal(r.slos[slo], 'pass', `${slo}: ${tail(r)}`);
          assert.ok(count(r, 'recovery_time') >= 1, 'recovery measured after the faults');
        }
        assertBothDialectsConversed(r);
      },
    );
  }
  it('a cut reaches both dialects: persistent links are lost and come back, per-wake channels open again for later wakes', () => {
    const storm = o['reconnect-storm (storm-cut)']!;
    assert.ok(count(storm, 'connection_drops') >= 10, `${count(storm, 'connection_drops')} links lost in the storm`);
    assert.ok(count(storm, 'reconnect_time') >= 10);
  });
});

describe('wakestorm capacity with both dialects', () => {
  it('searches a mixed fleet and says how many devices it holds', async () => {
    const root = join(results, 'capacity-search');
    const r = await runCli(
      [
        'capacity',
        '--profile',
        MIX,
        '--start',
        '20',
        '--max-devices',
        '40',
        '--step-duration',
        '15s',
        '--results',
        root,
      ],
      { timeoutMs: 300_000 },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /holds 40 devices/);
    const dir = /capacity\.json and capacity\.svg in (\S+)/.exec(r.stdout)?.[1];
    assert.ok(dir, r.stdout);
    const c = JSON.parse(readFileSync(join(dir, 'capacity.json'), 'utf8'));
    assert.equal(c.holds, 40);
    assert.ok(c.steps.length >= 2);
  });
});
