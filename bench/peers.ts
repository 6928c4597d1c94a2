// `npm run bench:peers` (and a part of `npm run bench`): wakestorm as a user runs it, at its defaults, beside the
// testers a performance engineer would otherwise reach for, in one run, against one reference server: the plain k6
// script (one VU per device), a hand-written Node `ws` script (bench/peers/node-ws-fleet.mjs), Artillery's WebSocket
// engine (pinned, installed into the tool cache on first use, never a dependency of wakestorm) and Tsung where it is
// installed. Every process of each tester is counted (its whole process tree, from /proc), over the hold after its
// ramp. Each device does what the `recommended` profile does idle: /ws, a JSON ping every 15 s, the server's pings
// answered; talking ones say a 3 s utterance a minute. Writes results/bench-peers-<ts>/peers.json and the "Beside its
// peers" section of BENCHMARKS.md.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guardedSpawn } from '../scripts/guarded-spawn.ts';
import { stopChild } from '../scripts/process-control.ts';
import { Sampler } from '../scripts/proc-sampler.ts';
import { processTree } from '../scripts/proc-stats.ts';
import { ROOT, resultsRoot } from '../scripts/run.ts';
import { startStack } from '../scripts/stack.ts';
import { cacheDir, requireTools, which } from '../scripts/tools.ts';
import { sectionIn, withSection } from './scenarios.ts';

/** Artillery, pinned: the version measured beside wakestorm in FACTS and this bench. */
const ARTILLERY = '2.0.34';
const FD_LIMIT = 1_048_576;
/** The two loads at full size, and BENCH_QUICK's (the smoke test's: no install, a short hold). */
const SIZES = { full: { idle: 10_000, talking: 1_000, holdS: 60 }, quick: { idle: 300, talking: 40, holdS: 10 } };

type Load = 'idle' | 'talking';
interface Tester {
  name: string;
  /** How it was driven, for the table's notes. */
  how: string;
  loads: Load[];
  /**
   * The command for n devices, a ramp and a whole duration; null when the tester is not on this machine (or would
   * have to be installed and `install` is false).
   */
  command(
    target: string,
    load: Load,
    n: number,
    rampS: number,
    durationS: number,
    dir: string,
    install: boolean,
  ): string[] | null;
}

export interface PeerRow {
  tester: string;
  load: Load;
  devices: number;
  /** Connections the server counted during the hold: min and max (a tester that did not hold them all says so). */
  server_connections: { min: number; max: number } | null;
  rss_avg_mib: number | null;
  rss_max_mib: number | null;
  kib_per_device: number | null;
  cpu_pct: number | null;
  processes: number;
  /** The tester's processes by name over the hold (several of one name summed): which one costs what. */
  by_process: { name: string; rss_avg_mib: number; cpu_pct: number }[];
  note: string;
}

/** Artillery in the tool cache, installed from npm the first time (~40 s, 460 MB); null when npm cannot. */
function artilleryBin(install: boolean): string | null {
  const dir = join(cacheDir(), 'peers', `artillery-${ARTILLERY}`);
  const bin = join(dir, 'node_modules', '.bin', 'artillery');
  if (existsSync(bin) || !install) return existsSync(bin) ? bin : null;
  try {
    mkdirSync(dir, { recursive: true });
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', `artillery@${ARTILLERY}`], {
      cwd: dir,
      stdio: 'ignore',
      timeout: 600_000,
    });
    return existsSync(bin) ? bin : null;
  } catch {
    return null;
  }
}

/** Artillery's scenario: every arrival opens /ws, says hello, then pings every 15 s until its time is up. */
function artilleryScript(target: string, n: number, rampS: number, durationS: number, dir: string): string {
  // Each arrival stays the whole duration, so the last ones to come are still there when the hold ends.
  const pings = Math.ceil(durationS / 15);
  const file = join(dir, 'artillery.yml');
  writeFileSync(
    file,
    [
      'config:',
      `  target: "${target}/ws"`,
      '  phases:',
      `    - duration: ${rampS}`,
      `      arrivalRate: ${Math.ceil(n / rampS)}`,
      `      maxVusers: ${n}`,
      'scenarios:',
      '  - engine: ws',
      '    flow:',
      `      - send: '{"type":"hello","device_id":"art-{{ $randomString() }}","protocol":1}'`,
      '      - loop:',
      `          - think: 15`,
      `          - send: '{"type":"ping","id":1,"t":0}'`,
      `        count: ${pings}`,
      '',
    ].join('\n'),
  );
  return file;
}

/**
 * Tsung's scenario: the same hello and pings over its websocket plugin, as text frames (its default is binary, which the
 * server does not take as a hello). Arrivals are Poisson at a rate that reaches every device within the ramp (capped).
 */
function tsungScript(target: string, n: number, rampS: number, durationS: number, dir: string): string {
  const url = new URL(target);
  const file = join(dir, 'tsung.xml');
  const pings = Math.ceil(durationS / 15);
  writeFileSync(
    file,
    `<?xml version="1.0"?>
<!DOCTYPE tsung SYSTEM "/usr/share/tsung/tsung-1.0.dtd">
<tsung loglevel="error">
  <clients><client host="localhost" use_controller_vm="true" maxusers="${n + 10}"/></clients>
  <servers><server host="${url.hostname}" port="${url.port}" type="tcp"/></servers>
  <load><arrivalphase phase="1" duration="${rampS}" unit="second">
    <users maxnumber="${n}" arrivalrate="${Math.ceil((1.5 * n) / rampS)}" unit="second"/>
  </arrivalphase></load>
  <sessions><session name="device" probability="100" type="ts_websocket">
    <request><websocket type="connect" path="/ws"/></request>
    <request subst="true"><websocket type="message" frame="text">{"type":"hello","device_id":"tsung-%%_tsung_userid%%","protocol":1}</websocket></request>
    <for from="1" to="${pings}" var="i">
      <thinktime value="15"/>
      <request><websocket type="message" frame="text" ack="no_ack">{"type":"ping","id":1,"t":0}</websocket></request>
    </for>
  </session></sessions>
</tsung>
`,
  );
  return file;
}

const TESTERS: Tester[] = [
  {
    name: 'wakestorm at its defaults (`--direct`)',
    how: '`wakestorm run soak --profile recommended --direct` (the native engine, its default layout; CLI, k6 and engine)',
    loads: ['idle', 'talking'],
    command: (target, load, n, rampS, durationS, dir) => [
      process.execPath,
      join(ROOT, 'bin', 'wakestorm.mjs'),
      'run',
      'soak',
      '--server-url',
      target,
      '--direct',
      '--profile',
      'recommended',
      '--devices',
      String(n),
      '--ramp',
      `${rampS}s`,
      '--duration',
      `${durationS}s`,
      '--wake',
      load === 'idle' ? 'off' : 'fixed:60s',
      '--results',
      dir,
      '--quiet',
    ],
  },
  {
    name: 'wakestorm through Toxiproxy (the chaos path)',
    how: 'the same without `--direct`: Toxiproxy between the devices and the server, as every fault needs',
    loads: ['idle'],
    command: (...args) => TESTERS[0]!.command(...args)!.filter((a) => a !== '--direct'),
  },
  {
    name: 'plain k6, one VU per device',
    how: "bench/k6/baseline.ts: the script k6's docs lead to (k6/websockets, one device per VU)",
    loads: ['idle'],
    command: (target, _load, n, _rampS, durationS) => [
      requireTools().k6,
      'run',
      '-q',
      '-e',
      `DEVICES=${n}`,
      '-e',
      `DURATION=${durationS}s`,
      '-e',
      `TARGET_URL=${target}`,
      join(ROOT, 'bench', 'k6', 'baseline.ts'),
    ],
  },
  {
    name: 'hand-written Node `ws` script',
    how: 'bench/peers/node-ws-fleet.mjs under plain `node`: one process, the `ws` package, no model, no metrics',
    loads: ['idle', 'talking'],
    command: (target, load, n, rampS, durationS) => [
      'env',
      `TARGET=${target}`,
      `DEVICES=${n}`,
      `RAMP_S=${rampS}`,
      `DURATION_S=${durationS}`,
      `TALK=${load === 'talking' ? 1 : 0}`,
      `UTTERANCE=${join(ROOT, 'audio', 'utterance.pcm')}`,
      process.execPath,
      join(ROOT, 'bench', 'peers', 'node-ws-fleet.mjs'),
    ],
  },
  {
    name: `Artillery ${ARTILLERY}, WebSocket engine`,
    how: '`artillery run` of a YAML scenario (hello on /ws, then a ping every 15 s): its ws engine sends text from YAML, so it has no talking row',
    loads: ['idle'],
    command: (target, _load, n, rampS, durationS, dir, install) => {
      const bin = artilleryBin(install);
      return bin ? [bin, 'run', '--quiet', artilleryScript(target, n, rampS, durationS, dir)] : null;
    },
  },
  {
    name: 'Tsung',
    how: 'tsung -f of a websocket session (hello on /ws, a ping every 15 s), where Tsung is installed',
    loads: ['idle'],
    command: (target, _load, n, rampS, durationS, dir) =>
      which('tsung') ? ['tsung', '-f', tsungScript(target, n, rampS, durationS, dir), '-l', dir, '-n', 'start'] : null,
  },
];

const r1 = (x: number) => Math.round(x * 10) / 10;

/** One tester at one load: run, sampled every second with every process below it, judged over the hold. */
async function measure(
  t: Tester,
  load: Load,
  n: number,
  holdS: number,
  quick: boolean,
  server: { ws: string; http: string },
  log: (l: string) => void,
): Promise<PeerRow> {
  const rampS = n >= 5000 ? 20 : 5;
  const durationS = rampS + holdS + 10;
  const dir = mkdtempSync(join(tmpdir(), 'wakestorm-peer-'));
  const base = { tester: t.name, load, devices: n, processes: 0 };
  try {
    const cmd = t.command(server.ws, load, n, rampS, durationS, dir, !quick);
    if (!cmd) {
      return {
        ...base,
        server_connections: null,
        rss_avg_mib: null,
        rss_max_mib: null,
        kib_per_device: null,
        cpu_pct: null,
        by_process: [],
        note: 'not installed here',
      };
    }
    log(`bench:peers: ${t.name}, ${n} ${load} devices`);
    const env = { ...process.env, K6_AUTO_EXTENSION_RESOLUTION: 'false', ARTILLERY_DISABLE_TELEMETRY: 'true' };
    const child: ChildProcess = guardedSpawn(
      cmd[0]!,
      cmd.slice(1),
      { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir, env },
      FD_LIMIT,
    );
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-400)));
    const sampler = new Sampler({ byProcess: true });
    const t0 = Date.now();
    sampler.start({ tester: child.pid! }, server.http);
    let processes = 0;
    const counter = setInterval(() => (processes = Math.max(processes, processTree(child.pid!).length)), 5000);
    // Every tester stops by itself at its duration; a bound past it stops one that does not.
    const done = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const bound = setTimeout(() => void stopChild(child, 5000), (durationS + 90) * 1000);
    const code = await done;
    clearTimeout(bound);
    clearInterval(counter);
    sampler.stop();
    // The hold: from the ramp's end (and the first connection: k6 and Artillery take a while to start) + 5 s.
    const first = sampler.firstConnectedAt() ?? t0;
    const from = first + (rampS + 5) * 1000;
    const to = first + (rampS + holdS) * 1000;
    const s = sampler.stats('tester', from, to);
    const conns = sampler.connections(from, to);
    return {
      ...base,
      processes,
      server_connections: conns,
      rss_avg_mib: s ? s.rss_avg_mib : null,
      rss_max_mib: s ? s.rss_max_mib : null,
      kib_per_device: s ? r1((s.rss_avg_mib * 1024) / n) : null,
      cpu_pct: s ? s.cpu_avg_pct : null,
      by_process: sampler.split('tester', from, to),
      note: [
        conns && conns.min < n * 0.99 ? `held ${conns.min} of ${n}` : '',
        // wakestorm's verdict (99 FAIL, 3 INVALID) is its own business here; any other exit is the bench's.
        code !== 0 && !(t.name.startsWith('wakestorm') && (code === 99 || code === 3))
          ? `exited ${code}: ${err.trim().split('\n').pop()?.slice(0, 160) ?? ''}`
          : '',
      ]
        .filter(Boolean)
        .join('; '),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * BENCH_PEERS_ONLY narrows a run to the testers (and loads) whose "name load" contains one of its comma-separated
 * words, case-insensitive: `BENCH_PEERS_ONLY='defaults (\`--direct\`) idle'` measures one row while cutting a cost.
 */
function picked(t: Tester, load: Load): boolean {
  const only = process.env.BENCH_PEERS_ONLY;
  if (!only) return true;
  const key = `${t.name} ${load}`.toLowerCase();
  return only.split(',').some((w) => key.includes(w.trim().toLowerCase()));
}

export async function peersBench(quick = false, log: (l: string) => void = console.log): Promise<PeerRow[]> {
  const size = quick ? SIZES.quick : SIZES.full;
  const stack = await startStack({ toxiproxyShards: 0, server: { maxConnections: 20_000 }, log: () => {} });
  const server = { ws: stack.serverWsUrl, http: stack.serverHttpUrl };
  const rows: PeerRow[] = [];
  try {
    for (const load of ['idle', 'talking'] as const)
      for (const t of TESTERS.filter((x) => x.loads.includes(load) && picked(x, load)))
        rows.push(await measure(t, load, size[load], size.holdS, quick, server, log));
  } finally {
    await stack.stop();
  }
  return rows;
}

/** A tester's row at a load: TESTERS[0] is wakestorm at its defaults, TESTERS[3] the hand-written script. */
const rowOf = (rows: PeerRow[], tester: number, load: Load) =>
  rows.find((r) => r.load === load && r.tester === TESTERS[tester]!.name);

/** The issue's targets for wakestorm at its defaults, from this run's rows. */
function targets(rows: PeerRow[]): string[] {
  const ours = (load: Load) => rowOf(rows, 0, load);
  const script = (load: Load) => rowOf(rows, 3, load);
  const met = (b: boolean) => (b ? 'met' : '**not met**');
  const idle = ours('idle');
  const talk = ours('talking');
  const floor = script('talking');
  const out = ['| target (wakestorm at its defaults, every process) | this run | |', '| --- | --- | --- |'];
  if (idle?.kib_per_device != null)
    out.push(
      `| RSS per idle device at ${idle.devices} ≤ 12 KiB | ${idle.kib_per_device} KiB | ${met(idle.kib_per_device <= 12)} |`,
    );
  if (idle?.cpu_pct != null)
    out.push(`| CPU at ${idle.devices} idle devices ≤ 5% of a core | ${idle.cpu_pct}% | ${met(idle.cpu_pct <= 5)} |`);
  if (talk?.rss_avg_mib && floor?.rss_avg_mib && talk.cpu_pct != null && floor.cpu_pct) {
    const m = talk.rss_avg_mib / floor.rss_avg_mib;
    const c = talk.cpu_pct / floor.cpu_pct;
    out.push(
      `| ${talk.devices} talking devices: RSS and CPU ≤ 1x the hand-written script | ${r1(m)}x and ${r1(c)}x | ${met(m <= 1 && c <= 1)} |`,
    );
  }
  return out;
}

/** A row's processes by name (as /proc/<pid>/comm gives it, 15 characters), e.g. "k6 75.1 / 2.1". */
const byProcessCell = (r: PeerRow) =>
  (r.by_process ?? []).map((p) => `${p.name} ${p.rss_avg_mib} / ${p.cpu_pct}`).join(', ') || '-';

export function peersSection(rows: PeerRow[]): string {
  const ours = (load: Load) => rowOf(rows, 0, load);
  const vs = (r: PeerRow, f: 'rss_avg_mib' | 'cpu_pct') => {
    const o = ours(r.load)?.[f];
    return o && r[f] ? `${r1(o / r[f]!)}x` : '-';
  };
  const lines = rows.map(
    (r) =>
      `| ${r.tester} | ${r.devices} ${r.load} | ${r.server_connections ? `${r.server_connections.min}-${r.server_connections.max}` : '-'} | ${r.rss_avg_mib ?? '-'} (max ${r.rss_max_mib ?? '-'}) | ${r.kib_per_device ?? '-'} | ${r.cpu_pct ?? '-'} | ${r.processes || '-'} | ${byProcessCell(r)} | ${vs(r, 'rss_avg_mib')} / ${vs(r, 'cpu_pct')} | ${r.note} |`,
  );
  return [
    SECTION_START,
    '## Beside its peers, at the defaults',
    '',
    `Produced by \`npm run bench:peers\` (also part of \`npm run bench\`) on this machine, ${new Date().toISOString().slice(0, 10)}: each tester in turn against one reference server, the same devices (the \`recommended\` profile idle: a socket, a JSON ping every 15 s, the server's pings answered; talking: also a 3 s utterance a minute, 20 ms PCM frames at real-time pace), held ${SIZES.full.holdS} s after a 20 s ramp (5 s for 1,000). RSS and CPU are of every process of the tester (its whole process tree, from /proc, every second) over the hold, then by process name; "server connections" is what the server counted then. The last column is wakestorm's row over this one: below 1x wakestorm needs less.`,
    '',
    ...TESTERS.map((t) => `- **${t.name}**: ${t.how}.`),
    '',
    '| tester | devices | server connections (min-max) | RSS avg MiB (max) | KiB/device | CPU % of a core | processes | by process: RSS MiB / CPU % | wakestorm / this: RSS, CPU | note |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...lines,
    '',
    ...targets(rows),
    SECTION_END,
  ].join('\n');
}

const SECTION_START = '<!-- bench:peers -->';
const SECTION_END = '<!-- /bench:peers -->';

/** BENCHMARKS.md with the peers section replaced (or appended). */
export function withPeersSection(text: string, section: string): string {
  return withSection(text, SECTION_START, SECTION_END, section);
}

/** The peers section the last `npm run bench:peers` wrote, from BENCHMARKS.md's text, or null. */
export function peersSectionIn(text: string): string | null {
  return sectionIn(text, SECTION_START, SECTION_END);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const quick = process.env.BENCH_QUICK === '1';
  const rows = await peersBench(quick);
  // BENCH_RESULTS: another results root (the smoke test's temporary folder).
  const dir = join(
    resultsRoot(process.env.BENCH_RESULTS),
    `bench-peers-${new Date().toISOString().replace(/[:.]/g, '-')}`,
  );
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'peers.json'), `${JSON.stringify(rows, null, 2)}\n`);
  const section = peersSection(rows);
  writeFileSync(join(dir, 'peers.md'), `${section}\n`);
  const md = join(ROOT, 'BENCHMARKS.md');
  // A narrowed run (BENCH_PEERS_ONLY) is a developer's measurement, not the table: BENCHMARKS.md keeps the whole one.
  const whole = !quick && !process.env.BENCH_PEERS_ONLY;
  if (whole) writeFileSync(md, withPeersSection(readFileSync(md, 'utf8'), section));
  console.log(`${section}\nwritten: ${join(dir, 'peers.json')}${whole ? ' and BENCHMARKS.md' : ''}`);
}
