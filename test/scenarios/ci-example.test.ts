// docs/examples/github-actions-gate.yml, run step by step on this machine: a voice server of "the user" starts, a
// pinned checkout of wakestorm (cloned from this repository) installs itself, gates that server, and leaves results
// to upload that hold no secret. `uses:` steps are GitHub's own; the ones that upload are checked for their paths.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse } from 'yaml';
import { PINS } from '../../scripts/tools.ts';
import { CLI, ROOT, freePort } from '../helpers/proc.ts';

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  env?: Record<string, string>;
  with?: Record<string, string>;
}

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-ci-example-'));
const workspace = join(tmp, 'workspace');
const runnerTemp = join(tmp, 'runner');
const SECRET = `ci-secret-${Math.random().toString(36).slice(2, 12)}`;
let serverPidFile = '';

after(() => {
  if (serverPidFile && existsSync(serverPidFile)) {
    try {
      process.kill(Number(readFileSync(serverPidFile, 'utf8')), 'SIGTERM');
    } catch {
      /* gone */
    }
  }
});

describe('the GitHub Actions example', () => {
  it("gates the user's own server from a pinned checkout, and uploads results with no secret in them", async () => {
    const wf = parse(readFileSync(join(ROOT, 'docs/examples/github-actions-gate.yml'), 'utf8')) as {
      env: Record<string, string>;
      jobs: Record<string, { env?: Record<string, string>; steps: Step[] }>;
    };
    const job = wf.jobs.gate!;
    // The tool cache is keyed on the pinned tool versions and the release (its engine's source), not the branch.
    assert.equal(wf.env.WAKESTORM_TOOLS, `k6-${PINS.k6.candidates[0].version}_toxiproxy-${PINS.toxiproxy.version}`);
    for (const j of Object.values(wf.jobs)) {
      assert.ok(
        j.steps.some(
          (s) =>
            s.uses?.startsWith('actions/cache') &&
            s.with?.key === 'wakestorm-tools-${{ env.WAKESTORM_TOOLS }}-${{ env.WAKESTORM_REF }}',
        ),
        'the tool cache follows the release',
      );
      // The Go the build needs (engine/go.mod, tools.ts PINS.minGo): an older one fails on a cache miss.
      for (const s of j.steps.filter((x) => x.uses?.startsWith('actions/setup-go')))
        assert.equal(String(s.with?.['go-version']), PINS.minGo);
    }
    assert.match(wf.env.WAKESTORM_REF!, /^v\d+\.\d+\.\d+$/, 'a tagged release');
    assert.ok(
      wf.jobs.chaos?.steps.some((s) => /--timeline/.test(s.run ?? '')),
      'a nightly chaos job',
    );
    mkdirSync(workspace, { recursive: true });
    // The user's own SLO file, kept in their repository: one more SLO the gate must judge.
    mkdirSync(join(workspace, '.wakestorm'), { recursive: true });
    writeFileSync(
      join(workspace, '.wakestorm', 'slos.json'),
      JSON.stringify([
        {
          name: 'my_wake_ack_p50',
          metric: 'wake_ack_latency{chaos:steady}',
          aggregation: 'p(50)',
          op: '<',
          target: 250,
        },
      ]),
    );
    mkdirSync(runnerTemp, { recursive: true });
    // "Your voice server": the reference server on a free loopback port, started in the background as a CI step would.
    const port = await freePort();
    serverPidFile = join(tmp, 'server.pid');
    writeFileSync(
      join(workspace, 'start-voice-server.sh'),
      `#!/usr/bin/env bash\nnohup node ${CLI} server --port ${port} > ${tmp}/server.log 2>&1 &\necho $! > ${serverPidFile}\nfor i in $(seq 100); do curl -sf http://127.0.0.1:${port}/health >/dev/null && exit 0; sleep 0.1; done; exit 1\n`,
      { mode: 0o755 },
    );
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      ...wf.env,
      ...job.env,
      // The pinned checkout comes from this repository, at the branch this test runs on.
      WAKESTORM_GIT: ROOT,
      WAKESTORM_REF: spawnSync('git', ['rev-parse', '--abbrev-ref', 'HEAD'], {
        cwd: ROOT,
        encoding: 'utf8',
      }).stdout.trim(),
      VOICE_SERVER_URL: `ws://127.0.0.1:${port}`,
      GITHUB_WORKSPACE: workspace,
      RUNNER_TEMP: runnerTemp,
    };
    const expr = (s: string) =>
      s
        .replace(/\$\{\{\s*secrets\.[A-Z_]+\s*\}\}/g, SECRET)
        .replace(/\$\{\{\s*env\.([A-Z_]+)\s*\}\}/g, (_, k: string) => env[k] ?? '');
    const outputs: string[] = [];
    for (const step of job.steps) {
      if (step.uses) {
        // GitHub's own actions; those that publish must find their files.
        const path =
          step.with?.report_paths ?? (step.uses.startsWith('actions/upload-artifact') ? step.with?.path : undefined);
        if (path) assert.ok(existsSync(join(workspace, expr(path))), `${step.uses}: ${path} exists`);
        continue;
      }
      const stepEnv = Object.fromEntries(Object.entries(step.env ?? {}).map(([k, v]) => [k, expr(String(v))]));
      const r = spawnSync('bash', ['-e', '-c', expr(step.run!)], {
        cwd: workspace,
        env: { ...env, ...stepEnv },
        encoding: 'utf8',
        timeout: 300_000,
      });
      outputs.push(`${step.name}: ${r.stdout}${r.stderr}`);
      assert.equal(r.status, 0, `step "${step.name}" failed:\n${r.stdout}\n${r.stderr}`);
    }
    const all = outputs.join('\n');
    assert.match(all, /VERDICT: PASS/);
    assert.match(all, /no baseline from main yet/);
    // A second pull request against the baseline the first one kept: compare runs and finds no regression.
    const compare = job.steps.find((s) => s.name?.startsWith('Compare'))!;
    const again = spawnSync('bash', ['-e', '-c', expr(compare.run!)], {
      cwd: workspace,
      env,
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(again.status, 0, again.stdout + again.stderr);
    assert.match(again.stdout, /my_wake_ack_p50|wake_ack/);
    const results = join(workspace, 'wakestorm-results', 'latest');
    for (const f of ['report.html', 'junit.xml', 'run.json']) assert.ok(existsSync(join(results, f)), f);
    const grep = spawnSync(
      'grep',
      [
        '-rl',
        '--binary-files=text',
        SECRET,
        join(workspace, 'wakestorm-results'),
        join(runnerTemp, 'wakestorm', 'results'),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(grep.stdout.trim(), '', 'no result holds the secret');
    assert.doesNotMatch(all, new RegExp(SECRET));
  });
});
