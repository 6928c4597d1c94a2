// The `wakestorm` CLI: one subcommand per job (server, setup, stack); bad flags exit 2 with one line.
import { readdirSync, readFileSync } from 'node:fs';
import { BACKOFF_POLICIES } from '../core/backoff.ts';
import { SHIPPED_DIALECTS } from '../core/dialect.ts';
import { PROFILES } from '../core/profiles.ts';
import { TIMELINES } from '../core/timelines.ts';
import { WakestormError } from '../core/errors.ts';
import { DEVICE_BOUNDS, INSTANCE_BOUNDS } from '../core/run-config.ts';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  ConfigError,
  NUMERIC_FLAGS,
  parseHost,
  parseIntFlag,
  parseBalance,
  parsePace,
  readTokensFile,
  validateToken,
  type ServerConfig,
} from '../server/config.ts';

/** Wraps a validator so commander reports its message as the one-line error. */
function check<T>(fn: (v: string) => T): (v: string) => T {
  return (v: string) => {
    try {
      return fn(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
}

/** Adds the reference server's flags (with env vars) to a command; `stack` passes them through, without --host/--port. */
export function addServerOptions(cmd: Command, opts: { withListen?: boolean } = { withListen: true }): Command {
  if (opts.withListen)
    cmd.addOption(
      new Option('--host <host>', 'interface to listen on (loopback by default)')
        .env('WAKESTORM_HOST')
        .argParser(check(parseHost)),
    );
  for (const f of NUMERIC_FLAGS) {
    if (!opts.withListen && f.key === 'port') continue;
    cmd.addOption(
      new Option(`${f.flag} <n>`, f.help)
        .env(f.env)
        .argParser(check((v) => parseIntFlag(f.flag, v, f.min, f.max, f.oneOf))),
    );
  }
  cmd.addOption(
    new Option('--tts-pace <pace>', "'realtime' or 'burst'").env('WAKESTORM_TTS_PACE').argParser(check(parsePace)),
  );
  cmd.addOption(
    new Option(
      '--balance <how>',
      "with --workers: 'rr' (the primary deals connections in turn) or 'kernel' (workers accept)",
    )
      .env('WAKESTORM_BALANCE')
      .argParser(check(parseBalance)),
  );
  cmd.addOption(
    new Option('--token <token>', 'accepted bearer token (repeatable)')
      .env('WAKESTORM_TOKEN')
      .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), check(validateToken)(v)]),
  );
  cmd.addOption(
    new Option('--tokens-file <path>', 'file with one accepted token per line').env('WAKESTORM_TOKENS_FILE'),
  );
  cmd.option('--verbose', 'log connections and errors to stderr');
  return cmd;
}

/** Turns parsed options into a partial server config. */
export function serverConfigFrom(opts: Record<string, unknown>): Partial<ServerConfig> {
  const out: Partial<ServerConfig> = {};
  if (opts.host !== undefined) out.host = opts.host as string;
  for (const f of NUMERIC_FLAGS) {
    const name = f.flag.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (opts[name] !== undefined) (out as Record<string, unknown>)[f.key] = opts[name];
  }
  if (opts.ttsPace !== undefined) out.ttsPace = opts.ttsPace as ServerConfig['ttsPace'];
  if (opts.balance !== undefined) out.balance = opts.balance as ServerConfig['balance'];
  const tokens = [...((opts.token as string[] | undefined) ?? [])];
  if (opts.tokensFile) tokens.push(...readTokensFile(opts.tokensFile as string));
  if (tokens.length) out.tokens = tokens;
  if (opts.verbose) out.verbose = true;
  return out;
}

function fail(line: string, code = 2): never {
  process.stderr.write(`${line.startsWith('wakestorm') ? line : `wakestorm: ${line}`}\n`);
  process.exit(code);
}

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
const program = new Command('wakestorm')
  .description('WebSocket load and chaos tester for voice-assistant fleets')
  .version(version, '-V, --version', 'print the version')
  .exitOverride()
  .configureOutput({
    // One line per error, named after the tool: "wakestorm: option '--port <n>' argument 'abc' is invalid. …"
    writeErr: (s) => {
      const line = s.split('\n').find((l) => l.trim());
      if (line) process.stderr.write(`${line.replace(/^error: /, 'wakestorm: ')} (see --help)\n`);
    },
  });

addServerOptions(
  program.command('server').description('run the reference voice server (SIGTERM/SIGINT drain with 1012)'),
).action(async (opts) => {
  const { runServerCommand } = await import('../server/main.ts');
  // Its first signal starts a drain: a wrapper that dies meanwhile must not force the close (that is the second signal's job).
  const { markStopping } = await import('./wrapper-watch.ts');
  process.on('SIGINT', markStopping);
  process.on('SIGTERM', markStopping);
  await runServerCommand(serverConfigFrom(opts));
});

const port = (flag: string) => check((v) => parseIntFlag(flag, v, 1, 65535));
addServerOptions(
  program
    .command('stack')
    .description('start server + toxiproxy-server + proxies, print the k6 line, tear down on Ctrl-C')
    .option('--server-url <url>', "front the user's own server (ws://host:port) instead of the reference one")
    .addOption(
      new Option('--server-port <port>', 'reference server port').default(8080).argParser(port('--server-port')),
    )
    .addOption(
      new Option('--toxiproxy-port <port>', 'Toxiproxy API port').default(8474).argParser(port('--toxiproxy-port')),
    )
    .addOption(
      new Option('--proxy-port <port>', "device-facing port of the 'voice' proxy")
        .default(18000)
        .argParser(port('--proxy-port')),
    )
    .addOption(
      new Option(
        '--toxiproxy-shards <n>',
        'Toxiproxy processes; shards after the first listen on free ports (default 1)',
      ).argParser(check((v) => parseIntFlag('--toxiproxy-shards', v, 1, 16))),
    )
    .option('--no-engine', "don't start the native device engine: the printed k6 line runs the devices in k6"),
  { withListen: false },
).action(async (opts) => {
  const { runStackCommand } = await import('./stack-command.ts');
  await runStackCommand({
    engine: opts.engine !== false,
    serverUrl: opts.serverUrl,
    serverPort: opts.serverPort,
    toxiproxyPort: opts.toxiproxyPort,
    proxyPorts: { voice: opts.proxyPort },
    toxiproxyShards: opts.toxiproxyShards,
    server: serverConfigFrom(opts),
  });
});

/** Repeatable --server-arg "--stt-ms=400" (or two words) for the reference server, parsed by its own table. */
function serverArgsToConfig(list: string[]): Partial<ServerConfig> {
  const sub = addServerOptions(new Command('server-args').exitOverride().configureOutput({ writeErr: () => {} }));
  const argv = list.flatMap((a) => a.split(/\s+/).filter(Boolean));
  try {
    sub.parse(argv, { from: 'user' });
  } catch (e) {
    throw new ConfigError(`--server-arg: ${(e as Error).message.replace(/^error: /, '')}`);
  }
  return serverConfigFrom(sub.opts());
}
const collect = (v: string, prev: string[] = []) => [...prev, v];
const posInt = (flag: string) => check((v) => parseIntFlag(flag, v, 1, 10_000_000));

const collectList = (v: string, prev: string[] = []) => [
  ...prev,
  ...v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean),
];

/** What ships, for --help: the names a flag takes besides a file of your own. */
function shippedHelp(): string {
  const scenarios = readdirSync(new URL('../scenarios/', import.meta.url))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.slice(0, -3));
  return [
    '',
    'Shipped (a flag also takes a file of your own):',
    `  scenarios  ${scenarios.join(', ')}`,
    `  profiles   ${Object.keys(PROFILES).join(', ')} (default: the scenario's)`,
    `  timelines  ${Object.keys(TIMELINES).join(', ')} (default: the scenario's, most have none)`,
    `  dialects   ${SHIPPED_DIALECTS.join(', ')} (default: each profile's own, else wakestorm)`,
    "  wake       off | once[:2s-10s] | poisson:<mean> | fixed:<interval> (default: the scenario's)",
    `  backoff    ${BACKOFF_POLICIES.join(', ')}[:base_ms[:cap_ms]] (default: each profile's own)`,
  ].join('\n');
}

/**
 * The flags that shape the fleet or the server's access, the same on run, capacity and try (one definition, one env
 * var each). `wake` is the command's default schedule.
 */
/** `--instances` for run and capacity: k6 processes over execution segments. */
function instancesOption(): Option {
  return new Option(
    '--instances <n>',
    'k6 processes, each running its execution segment of the fleet with its own engine and Toxiproxy shards; one merged result (default: what the fleet needs under the open-file limit)',
  )
    .env('WAKESTORM_INSTANCES')
    .argParser(check((v) => parseIntFlag('--instances', v, INSTANCE_BOUNDS.min, INSTANCE_BOUNDS.max)));
}

function addFleetOptions(cmd: Command, d: { wake?: string } = {}): Command {
  const wake = new Option('--wake <w>', 'off | once[:2s-10s] | poisson:<mean> | fixed:<interval>').env(
    'WAKESTORM_WAKE',
  );
  cmd.addHelpText('after', shippedHelp);
  return cmd
    .addOption(
      new Option('--profile <spec>', 'profile name, mix (esp32-hotpin:70,recommended:30) or .json file').env(
        'WAKESTORM_PROFILE',
      ),
    )
    .addOption(
      new Option(
        '--dialect <d>',
        "how every device says its steps: wakestorm, xiaozhi, or your server's dialect (.json, or a .ts module exporting one)",
      ).env('WAKESTORM_DIALECT'),
    )
    .addOption(
      new Option('--timeline <t>', 'chaos timeline name or .json file (none for no chaos)').env('WAKESTORM_TIMELINE'),
    )
    .addOption(d.wake ? wake.default(d.wake) : wake)
    .addOption(
      new Option(
        '--backoff <policy>',
        "replace every profile's reconnect policy: <policy>[:base_ms[:cap_ms]], e.g. full-jitter:500:30000",
      ).env('WAKESTORM_BACKOFF'),
    )
    .addOption(new Option('--seed <s>', 'seed for wake schedules and jitter').env('WAKESTORM_SEED'))
    .addOption(
      new Option('--engine <e>', 'where the devices run: native (the device engine, default) or k6 (k6/websockets)')
        .choices(['native', 'k6'])
        .env('WAKESTORM_ENGINE'),
    )
    .addOption(
      new Option('--devices-per-vu <n>', 'devices sharing one k6 VU')
        .env('WAKESTORM_DEVICES_PER_VU')
        .argParser(check((v) => parseIntFlag('--devices-per-vu', v, DEVICE_BOUNDS.perVu.min, DEVICE_BOUNDS.perVu.max))),
    )
    .addOption(
      new Option(
        '--token <token>',
        'bearer token for the devices (and the reference server); never on a child command line or in results',
      ).env('WAKESTORM_TOKEN'),
    )
    .addOption(new Option('--token-file <path>', 'file whose first line is the token').env('WAKESTORM_TOKEN_FILE'))
    .addOption(
      new Option(
        '--ca <file>',
        "a wss:// server's private CA (PEM): every process of the run trusts it instead of the system's roots",
      ).env('WAKESTORM_CA'),
    )
    .addOption(
      new Option('--insecure-tls', "don't verify a wss:// server's certificate (the results say so)").conflicts('ca'),
    )
    .addOption(
      new Option(
        '--provision-url <url>',
        "where a dialect's HTTP call before the socket goes (xiaozhi's OTA check), e.g. http://127.0.0.1:8003 (default: the server)",
      ).env('WAKESTORM_PROVISION_URL'),
    );
}

addFleetOptions(
  program
    .command('run <scenario>')
    .description(
      'bring up the stack, run a scenario with k6, write results/<run-id>/, tear down; exit 0 PASS, 99 FAIL, 3 INVALID',
    )
    .addOption(
      new Option('--devices <n>', 'virtual devices')
        .env('WAKESTORM_DEVICES')
        .argParser(check((v) => parseIntFlag('--devices', v, DEVICE_BOUNDS.devices.min, DEVICE_BOUNDS.devices.max))),
    )
    .addOption(
      new Option('--duration <d>', "run length, e.g. 60s, 2m (default: the scenario's own)").env('WAKESTORM_DURATION'),
    )
    .addOption(
      new Option(
        '--ramp <d>',
        "first connects spread over this long (default: the scenario's own, or 1 s per 200 devices up to 30 s)",
      ).env('WAKESTORM_RAMP'),
    )
    .addOption(
      new Option(
        '--slo <override>',
        'SLO override name=value, name=off, or a .json SLO file (repeatable; env: comma-separated)',
      )
        .env('WAKESTORM_SLO')
        .argParser(collectList),
    )
    .addOption(
      new Option(
        '--server-url <url>',
        'aim at your own server (Toxiproxy in front of it) instead of the reference one',
      ).env('WAKESTORM_SERVER_URL'),
    )
    .addOption(
      new Option('--server-arg <flag>', 'flag for the reference server, e.g. "--stt-ms=400" (repeatable)').argParser(
        collect,
      ),
    )
    .addOption(instancesOption())
    .addOption(
      new Option(
        '--direct',
        'skip Toxiproxy: devices connect to the server itself, and no Toxiproxy runs (a timeline of network faults is refused)',
      ).env('WAKESTORM_DIRECT'),
    )
    .addOption(
      new Option(
        '--toxiproxy-shards <n>',
        'Toxiproxy processes (each holds ~2 descriptors per device; default: what the fleet needs under the open-file limit)',
      )
        .env('WAKESTORM_TOXIPROXY_SHARDS')
        .argParser(check((v) => parseIntFlag('--toxiproxy-shards', v, 1, 16))),
    )
    .addOption(
      new Option(
        '--out <output>',
        "a k6 output, passed through as k6's --out (repeatable; K6_OUT is honoured too), e.g. csv=run.csv",
      ).argParser(collect),
    )
    .addOption(
      new Option(
        '--prometheus <url>',
        "stream the metrics live to a Prometheus remote-write endpoint (k6's experimental-prometheus-rw output), e.g. http://127.0.0.1:9090/api/v1/write",
      ).env('WAKESTORM_PROMETHEUS'),
    )
    .addOption(new Option('--results <dir>', 'results root (default: results/)').env('WAKESTORM_RESULTS'))
    .addOption(
      new Option(
        '--server-metrics <url>',
        "your server's Prometheus endpoint (http://127.0.0.1:9100/metrics): its CPU, memory and event-loop lag charted over the run",
      ).env('WAKESTORM_SERVER_METRICS'),
    )
    .option(
      '--baseline <run>',
      "compare this run's SLOs with an earlier run's in the report (run id, folder, or 'latest')",
    )
    .option('--no-dashboard', "skip k6's web dashboard export (k6-dashboard.html)")
    .option(
      '--abort-on-invalid',
      'stop the run, INVALID, once the generator stays past its saturation bounds for 15 s (default when stdout is not a terminal)',
    )
    .option('--no-abort-on-invalid', 'run to the end even when the generator is saturated (default on a terminal)')
    .addOption(
      new Option('--quiet', 'print only the verdict, the report path and errors')
        .env('WAKESTORM_QUIET')
        .conflicts('json'),
    )
    .addOption(new Option('--json', 'print one JSON verdict object on stdout, nothing else').env('WAKESTORM_JSON')),
).action(async (scenario: string, o) => {
  const { runScenario } = await import('./run.ts');
  const outputs = [...(o.out ?? [])];
  // k6 lets a --out flag override K6_OUT; the run always has one (its samples), so K6_OUT becomes one more --out.
  if (process.env.K6_OUT) outputs.push(process.env.K6_OUT);
  const machine = o.json || o.quiet;
  // The baseline is read before anything starts: a run id that does not exist is one line, not a run wasted.
  const baseline = o.baseline ? (await import('./report.ts')).loadRun(o.baseline, o.results) : undefined;
  const r = await runScenario({
    baseline,
    scenario,
    devices: o.devices,
    devicesPerVu: o.devicesPerVu,
    duration: o.duration,
    ramp: o.ramp,
    profile: o.profile,
    timeline: o.timeline,
    dialect: o.dialect,
    wake: o.wake,
    backoff: o.backoff,
    seed: o.seed,
    slo: o.slo,
    serverUrl: o.serverUrl,
    ca: o.ca,
    insecureTls: o.insecureTls,
    provisionUrl: o.provisionUrl,
    serverMetrics: o.serverMetrics,
    server: serverArgsToConfig(o.serverArg ?? []),
    direct: o.direct,
    engine: o.engine,
    toxiproxyShards: o.toxiproxyShards,
    instances: o.instances,
    resultsRoot: o.results,
    dashboard: o.dashboard,
    abortOnInvalid: o.abortOnInvalid,
    token: o.token,
    tokenFile: o.tokenFile,
    outputs,
    prometheus: o.prometheus,
    echo: !machine,
    progress: machine ? 'off' : undefined,
    log: o.json
      ? () => {}
      : o.quiet
        ? (l: string) =>
            /VERDICT|report:/.test(l) &&
            console.log(
              l
                .trim()
                .split('\n')
                .filter((x) => /VERDICT|report:/.test(x))
                .join('\n'),
            )
        : undefined,
  });
  if (o.json) {
    const j = r.judgement;
    process.stdout.write(
      `${JSON.stringify({ verdict: j.verdict, exit_code: j.exit_code, verdict_line: j.headline, run_id: r.runId, dir: r.dir, report: `${r.dir}/report.html`, junit: `${r.dir}/junit.xml`, invalid_reasons: j.invalid, fail_reasons: j.failures, findings: j.findings, slos: j.slos })}\n`,
    );
  }
  process.exitCode = r.code;
});

/** compare's and report's --tolerance: how much a latency may grow before it is a regression, %. */
function tolerance(): Option {
  return new Option('--tolerance <pct>', 'allowed relative growth of a latency, in %').default(10).argParser(
    check((v) => {
      const n = Number(v);
      if (!(n >= 0 && n <= 1000)) throw new ConfigError(`--tolerance must be a percentage in 0-1000, got '${v}'`);
      return n;
    }),
  );
}

program
  .command('report <run>')
  .description("print a run's verdict and key numbers again and render its charts (run id, folder, or 'latest')")
  .option('--results <dir>', 'results root (default: results/)')
  .option('--baseline <run>', "compare the run's SLOs with an earlier run's in report.html (as compare does)")
  .addOption(tolerance())
  .action(async (run: string, o: { results?: string; baseline?: string; tolerance: number }) => {
    const { reportCommand } = await import('./report.ts');
    process.exitCode = await reportCommand(run, o.results, o.baseline, o.tolerance);
  });

program
  .command('merge <dir>')
  .description(
    'one verdict from k6 instances that ran apart (k6-operator runners): merge <dir>/instance-N/, write junit.xml, run.json, report.html',
  )
  .action(async (dir: string) => {
    const { mergeCommand } = await import('./merge-command.ts');
    process.exitCode = await mergeCommand(dir);
  });

program
  .command('k8s <scenario>')
  .description(
    'write a k6-operator TestRun, the scenario as a k6 archive in a ConfigMap, a results claim and the runner image build line into --out (docs/distributed.md)',
  )
  .requiredOption('--out <dir>', 'where the manifests go')
  .requiredOption(
    '--server-url <url>',
    'the server under test as the runners reach it, e.g. ws://voice.default.svc:9000',
  )
  .addOption(
    new Option('--parallelism <n>', 'runners (each an execution segment, with its own Toxiproxy and engine)')
      .default(2)
      .argParser(check((v) => parseIntFlag('--parallelism', v, 1, 1000))),
  )
  .addOption(
    new Option('--devices <n>', 'virtual devices in all').argParser(
      check((v) => parseIntFlag('--devices', v, DEVICE_BOUNDS.devices.min, DEVICE_BOUNDS.devices.max)),
    ),
  )
  .addOption(
    new Option('--devices-per-vu <n>', 'devices one VU runs').argParser(
      check((v) => parseIntFlag('--devices-per-vu', v, DEVICE_BOUNDS.perVu.min, DEVICE_BOUNDS.perVu.max)),
    ),
  )
  .option('--duration <d>', "run length (default: the scenario's own)")
  .option('--profile <spec>', 'profile name, mix or .json file')
  .option('--timeline <t>', 'chaos timeline name or .json file (network faults; each runner drives its own Toxiproxy)')
  .option('--wake <w>', 'off | once[:2s-10s] | poisson:<mean> | fixed:<interval>')
  .option('--dialect <d>', 'a shipped dialect name or a .json file')
  .option('--backoff <policy>', "replace every profile's reconnect policy")
  .option('--seed <s>', 'seed for wake schedules and jitter')
  .option('--slo <override>', 'SLO override name=value, name=off, or a .json SLO file (repeatable)', collect)
  .option('--image <image>', 'the runner image built from deploy/Dockerfile (default wakestorm-runner:k6-<version>)')
  .option('--name <name>', 'TestRun name (default wakestorm-<scenario>)')
  .option('--token-secret <secret>', "a Secret whose 'token' key is the devices' bearer token")
  .option(
    '--results-claim <pvc>',
    'a ReadWriteMany claim the runners write into (results-pvc.yaml makes it; default: none, each runner keeps its results in its pod for kubectl cp)',
  )
  .option('--storage-class <class>', "the results claim's storage class (one that offers ReadWriteMany)")
  .action(async (scenario: string, o) => {
    const { writeK8s } = await import('./k8s.ts');
    const r = writeK8s({ scenario, ...o });
    console.log(
      `wakestorm k8s: ${r.name}: ${r.files.join(', ')} in ${r.dir} (k6 archive ${Math.round(r.archiveBytes / 1024)} KiB); next: docs/distributed.md`,
    );
  });

program
  .command('compare <runA> <runB>')
  .description('each SLO metric side by side with its change; exit 1 when run B is worse beyond the tolerance')
  .addOption(tolerance())
  .option('--results <dir>', 'results root (default: results/)')
  .action(async (a: string, b: string, o: { tolerance: number; results?: string }) => {
    const { compareCommand } = await import('./report.ts');
    process.exitCode = compareCommand(a, b, o.tolerance, o.results);
  });

addFleetOptions(
  program
    .command('capacity')
    .description(
      'find the largest device count the target holds within every SLO: step up, then bisect; each step a bounded run',
    )
    .addOption(
      new Option('--max-devices <n>', 'upper bound of the search').default(20_000).argParser(posInt('--max-devices')),
    )
    .addOption(new Option('--start <n>', 'first step').argParser(posInt('--start')))
    .option('--scenario <s>', 'scenario each step runs', 'wake-latency')
    .option('--slo <override>', 'SLO override name=value, name=off, or a .json SLO file (repeatable)', collect)
    .option('--step-duration <d>', 'length of each step', '30s')
    .addOption(
      new Option('--resolution <pct>', 'bisect until the bracket is within this % of the answer').default(10).argParser(
        check((v) => {
          const n = Number(v);
          if (!(n > 0 && n <= 100)) throw new ConfigError(`--resolution must be a percentage in 1-100, got '${v}'`);
          return n;
        }),
      ),
    )
    .option('--server-url <url>', 'search your own server instead of the reference one')
    .option('--server-arg <flag>', 'flag for the reference server (repeatable)', collect)
    .addOption(instancesOption())
    .option('--through-proxy', 'keep Toxiproxy in the path (default: direct, so the proxy is not measured)')
    .option('--results <dir>', 'results root (default: results/)'),
  { wake: 'poisson:10s' },
).action(async (o) => {
  const { capacitySearch } = await import('./capacity.ts');
  await capacitySearch({
    scenario: o.scenario,
    profile: o.profile,
    slo: o.slo,
    maxDevices: o.maxDevices,
    startDevices: o.start,
    stepDuration: o.stepDuration,
    wake: o.wake,
    resolution: o.resolution / 100,
    devicesPerVu: o.devicesPerVu,
    dialect: o.dialect,
    timeline: o.timeline,
    backoff: o.backoff,
    seed: o.seed,
    token: o.token,
    tokenFile: o.tokenFile,
    server: serverArgsToConfig(o.serverArg ?? []),
    serverUrl: o.serverUrl,
    ca: o.ca,
    insecureTls: o.insecureTls,
    provisionUrl: o.provisionUrl,
    throughProxy: o.throughProxy,
    engine: o.engine,
    instances: o.instances,
    resultsRoot: o.results,
  });
});

addFleetOptions(
  program
    .command('try')
    .description(
      'one device, one conversation against a running server, every step printed (what was sent, what came back, which dialect step matched, timings, where it stalled); exit 0 when it completed',
    )
    .requiredOption('--server-url <url>', 'the server to talk to (ws://host:port)'),
).action(async (o) => {
  if (o.timeline)
    throw new ConfigError(
      '--timeline: try talks to the server directly, with no Toxiproxy in between; run a timeline with wakestorm run',
    );
  const { tryConversation } = await import('./try.ts');
  const { resolveTokenFlags } = await import('./run.ts');
  process.exitCode = await tryConversation({
    serverUrl: o.serverUrl,
    dialect: o.dialect,
    profile: o.profile,
    backoff: o.backoff,
    seed: o.seed,
    engine: o.engine,
    ca: o.ca,
    insecureTls: o.insecureTls,
    provisionUrl: o.provisionUrl,
    token: resolveTokenFlags(o.token, o.tokenFile) ?? undefined,
  });
});

program
  .command('validate <files...>')
  .description(
    'check dialect, profile, timeline or SLO files without a run: every problem at once, with its JSON path; exit 2 when one is invalid',
  )
  .addOption(
    new Option('--as <kind>', 'what the files are (default: told by their shape)').choices([
      'dialect',
      'profile',
      'timeline',
      'slo',
    ]),
  )
  .action(async (files: string[], o: { as?: 'dialect' | 'profile' | 'timeline' | 'slo' }) => {
    const { validateCommand } = await import('./validate.ts');
    process.exitCode = validateCommand(
      files,
      o.as,
      (l) => console.log(l),
      (l) => process.stderr.write(`${l}\n`),
    );
  });

program
  .command('init <kind> <file>')
  .description(
    'write a template to start from: a shipped dialect (kind dialect) or profile (kind profile), never over an existing file',
  )
  .option('--from <name>', 'the shipped dialect or profile to copy (default: wakestorm, recommended)')
  .action(async (kind: string, file: string, o: { from?: string }) => {
    const { initCommand } = await import('./validate.ts');
    console.log(initCommand(kind, file, o.from));
  });

const toxic = program
  .command('toxic')
  .description('apply a fault by hand to a running stack: list, add, remove, cut, reset')
  .option(
    '--toxiproxy-url <url>',
    'Toxiproxy API, or a comma-separated list of shards (acts on all)',
    'http://127.0.0.1:8474',
  )
  .option('--proxy <name>', 'proxy to act on', 'voice');
const topts = () => toxic.opts<{ toxiproxyUrl: string; proxy: string }>();
toxic
  .command('list')
  .description('proxies and their toxics')
  .action(async () => (await import('./toxic-command.ts')).toxicList(topts()));
toxic
  .command('add <fault> [params...]')
  .description(
    `add a fault as toxics (faults: ${Object.keys((await import('../core/faults.ts')).TOXICS).join(', ')}); params as name=value`,
  )
  .option('--stream <dir>', "upstream, downstream or both (default: the fault's own)")
  .addOption(
    new Option('--toxicity <p>', 'chance per connection, 0-1').default(1).argParser(
      check((v) => {
        const n = Number(v);
        if (!(n >= 0 && n <= 1)) throw new ConfigError(`--toxicity must be a number in 0-1, got '${v}'`);
        return n;
      }),
    ),
  )
  .action(async (fault: string, params: string[], o: { stream?: string; toxicity: number }) =>
    (await import('./toxic-command.ts')).toxicAdd(topts(), fault, params, o.stream, o.toxicity),
  );
toxic
  .command('remove [name]')
  .description('remove one toxic, or all on the proxy')
  .action(async (name?: string) => (await import('./toxic-command.ts')).toxicRemove(topts(), name));
toxic
  .command('cut')
  .description('disable the proxy for a while: a network outage')
  .requiredOption('--for <duration>', 'how long, e.g. 10s')
  .action(async (o: { for: string }) => (await import('./toxic-command.ts')).toxicCut(topts(), o.for));
toxic
  .command('reset')
  .description('remove every toxic and enable every proxy')
  .action(async () => (await import('./toxic-command.ts')).toxicReset(topts()));

program
  .command('setup')
  .description('make sure the pinned k6 and Toxiproxy exist, building them with Go if needed')
  .option('--check', 'only print each tool with its path and version; exit 1 if one is missing')
  .action(async (opts: { check?: boolean }) => {
    const { checkTools, setup } = await import('./setup.ts');
    process.exitCode = opts.check ? checkTools() : await setup();
  });

// A wrapper (npx, npm run) that dies without forwarding its signal takes this process with it.
(await import('./wrapper-watch.ts')).exitWithWrappers();
// What a wakestorm killed with -9 left behind (its private token files, its results' partial folder) goes first,
// whatever the command: nothing outlives the process that made it by more than the next command.
program.hook('preAction', async () => {
  const [{ sweepSecretFiles }, { sweepPartialRuns }] = await Promise.all([
    import('./secret.ts'),
    import('./run-dir.ts'),
  ]);
  sweepSecretFiles();
  sweepPartialRuns(new URL('../results', import.meta.url).pathname);
});
try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    if (e.exitCode === 0 || e.code === 'commander.helpDisplayed' || e.code === 'commander.version') process.exit(0);
    process.exit(2); // commander already printed the one line
  }
  // Every error a user can cause carries its own exit code (core/errors.ts).
  if (e instanceof WakestormError) fail(e.message, e.exitCode);
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'EADDRINUSE')
    fail(`port already in use (${err.message.replace(/^listen /, '')}): pick another with --port`, 1);
  if (err.code === 'EADDRNOTAVAIL' || (err.code === 'EACCES' && err.syscall === 'listen'))
    fail(`cannot listen: ${err.message}`, 1);
  // A results folder that cannot be written: which path, and why.
  if (err.code && ['ENOSPC', 'EDQUOT', 'EROFS', 'EACCES', 'EPERM', 'ENOTDIR', 'EFBIG'].includes(err.code))
    fail((await import('./run-dir.ts')).fsProblem(err), 1);
  fail(err.message ?? String(e), 1);
}
