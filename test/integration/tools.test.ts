// Tool provisioning: found tools are reported with versions; missing ones give the same one line everywhere.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { spawnSync } from 'node:child_process';
import { WAKE_MODES } from '../../core/device-env.ts';
import { AUDIO_FRAMINGS } from '../../core/dialect.ts';
import { engineCapabilities, engineSourceHash, requireEngine } from '../../scripts/engine.ts';
import { PINS, requireTools } from '../../scripts/tools.ts';
import { runCli } from '../helpers/proc.ts';

describe('tools', () => {
  it('setup --check prints each tool with its pinned version and path', async () => {
    const r = await runCli(['setup', '--check']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`k6\\s+${PINS.k6.candidates[0].version}`));
    assert.match(r.stdout, /toxiproxy\s+v2\.12\.0/);
    const t = requireTools();
    assert.match(execVersion(t.k6), /k6 v2\.2\.0/);
    // The device engine, built from engine/ and keyed by a hash of that source.
    assert.match(r.stdout, new RegExp(`engine\\s+${engineSourceHash()}\\s+\\S+wakestorm-engine`));
  });

  it('the device engine runs everything a dialect can say, and refuses a bad flag or a non-loopback address in one line', () => {
    const bin = requireEngine();
    const caps = engineCapabilities(bin);
    // Parity with the k6 device: every wake schedule, lifecycle, codec and framing core/ accepts.
    assert.deepEqual(new Set(caps.wake), new Set(WAKE_MODES), JSON.stringify(caps));
    assert.deepEqual(new Set(caps.lifecycle), new Set(['persistent', 'per_wake']));
    // (Opus rides in binary frames only: a dialect cannot say opus/json.)
    for (const codec of ['pcm_s16le', 'mulaw', 'opus'])
      for (const f of AUDIO_FRAMINGS)
        if (codec !== 'opus' || f !== 'json') assert.ok(caps.audio.includes(`${codec}/${f}`), `${codec}/${f}`);
    for (const args of [['--bogus'], ['--listen', '0.0.0.0:7000'], ['--listen', 'nonsense']]) {
      const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 10_000 });
      assert.equal(r.status, 2, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /^wakestorm-engine: /);
    }
  });

  it('without Go or a cached build, check and stack fail with the same one line', async () => {
    const env = { WAKESTORM_CACHE: mkdtempSync(join(tmpdir(), 'ws-empty-')), PATH: '/usr/bin:/bin' };
    const check = await runCli(['setup', '--check'], { env });
    assert.equal(check.code, 1);
    assert.ok(check.stderr.includes(`install Go >= ${PINS.minGo} and run 'npx wakestorm setup'`), check.stderr);
    const stack = await runCli(['stack'], { env });
    assert.equal(stack.code, 1);
    assert.equal(stack.stderr.trim(), check.stderr.trim());
    const setup = await runCli(['setup'], { env });
    assert.equal(setup.code, 1);
    assert.match(setup.stderr, /\(no Go found\)/);
  });
});

import { execFileSync } from 'node:child_process';
function execVersion(bin: string): string {
  return execFileSync(bin, ['version'], { encoding: 'utf8' });
}

describe('what a killed wakestorm leaves behind', () => {
  it("the next command of any kind removes a dead run's token folder and partial results, and keeps a live one's", async () => {
    const { existsSync, mkdirSync, writeFileSync, rmSync } = await import('node:fs');
    const results = new URL('../../results/', import.meta.url).pathname;
    mkdirSync(results, { recursive: true });
    // A pid that no process has (above the kernel's pid_max of 4194304).
    const dead = 4_194_399;
    const deadRun = join(results, '.killed-run.partial');
    const liveRun = join(results, '.live-run.partial');
    const deadSecret = join(tmpdir(), `wakestorm-secret-${dead}-x1`);
    mkdirSync(deadRun, { recursive: true });
    writeFileSync(join(deadRun, '.owner'), String(dead));
    mkdirSync(liveRun, { recursive: true });
    writeFileSync(join(liveRun, '.owner'), String(process.pid));
    mkdirSync(deadSecret, { recursive: true });
    writeFileSync(join(deadSecret, 'token'), 'secret-token\n', { mode: 0o600 });
    try {
      const r = await runCli(['validate', 'core/dialects/wakestorm.json']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(existsSync(deadRun), false, 'a dead run leaves no partial folder');
      assert.equal(existsSync(deadSecret), false, 'nor a token file');
      assert.equal(existsSync(liveRun), true, "a live run's folder is its own");
    } finally {
      for (const d of [deadRun, liveRun, deadSecret]) rmSync(d, { recursive: true, force: true });
    }
  });

  it('no k6 the CLI starts inherits the token from its environment', async () => {
    const { k6Env } = await import('../../scripts/tools.ts');
    process.env.WAKESTORM_TOKEN = 'a-secret-token';
    try {
      const env = k6Env({ X: '1' });
      assert.equal(env.WAKESTORM_TOKEN, undefined);
      assert.equal(env.X, '1');
    } finally {
      delete process.env.WAKESTORM_TOKEN;
    }
  });
});
