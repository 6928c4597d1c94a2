// The twilio-media-streams dialect against a server whose Twilio protocol code is a public package's, not ours:
// pipecat (PyPI, pinned in clients/pipecat-twilio/requirements.txt), a voice-agent framework that serves phone calls
// over Twilio media streams. Its runner parses each call's connected/start handshake, its TwilioFrameSerializer
// decodes the callers' µ-law media to PCM and encodes the reply (clients/pipecat-twilio/serve.py). 50 calls PASS with
// the devices' response latency within max(40 ms, 10%) of the server's own clock, and the same server with a reply
// that stands still 600 ms FAILs naming the stutter. Runs in `npm run test:clients` (its venv is made once).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { clientVenv, type ClientVenv } from '../helpers/client-venv.ts';
import { latestRun, runCli, type Metrics } from '../helpers/proc.ts';

interface PipecatServer {
  url: string;
  events: { event: string; last_voiced_at?: number; first_audio_at?: number }[];
  close(): Promise<void>;
}

/** serve.py under the venv's python, up when it prints its port; its event lines collected. */
function startPipecat(venv: ClientVenv, args: string[]): Promise<PipecatServer> {
  return new Promise((resolve, reject) => {
    const p: ChildProcess = spawn(venv.python, [join(venv.dir, 'serve.py'), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    p.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
    const events: PipecatServer['events'] = [];
    const up = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`serve.py did not listen in 60 s: ${err}`));
    }, 60_000);
    p.on('exit', (code) => reject(new Error(`serve.py exited ${code}: ${err}`)));
    createInterface({ input: p.stdout! }).on('line', (line) => {
      const e = JSON.parse(line) as PipecatServer['events'][number] & { port?: number };
      if (e.event !== 'listening') return void events.push(e);
      clearTimeout(up);
      resolve({
        url: `ws://127.0.0.1:${e.port}`,
        events,
        close: () =>
          new Promise<void>((done) => {
            if (p.exitCode !== null) return done();
            p.removeAllListeners('exit');
            p.once('exit', () => done());
            p.kill('SIGTERM');
            setTimeout(() => p.kill('SIGKILL'), 5000).unref();
          }),
      });
    });
  });
}

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-pipecat-'));

async function calls(server: PipecatServer, devices: number, name: string) {
  const results = join(tmp, name);
  const r = await runCli(
    ['run', 'smoke', '--devices', String(devices), '--duration', '25s', '--wake', 'once:1s-4s'].concat([
      '--profile',
      'esp32-hotpin',
      '--dialect',
      'twilio-media-streams',
      '--server-url',
      server.url,
      '--results',
      results,
      '--no-dashboard',
    ]),
    { timeoutMs: 150_000 },
  );
  const { run, metrics } = latestRun<{ verdict: string; culprits?: unknown }>(results);
  return { code: r.code, out: r.stdout + r.stderr, run, metrics: metrics as Metrics };
}

const count = (s: PipecatServer, event: string) => s.events.filter((e) => e.event === event).length;

describe('twilio-media-streams against pipecat, a public implementation of the protocol', { timeout: 900_000 }, () => {
  let venv: ClientVenv;
  let healthy: PipecatServer;
  before(async () => {
    venv = clientVenv('pipecat-twilio', 'pipecat.serializers.twilio');
    healthy = await startPipecat(venv, ['--think-ms', '50', '--reply-ms', '1200']);
  });
  after(async () => {
    await healthy?.close();
  });

  it('50 calls PASS: every utterance heard by its VAD, every mark echoed, latency on its clock', async (t) => {
    const r = await calls(healthy, 50, 'healthy');
    assert.equal(r.code, 0, r.out);
    assert.equal(r.run.verdict, 'pass');
    assert.equal(count(healthy, 'speech_stopped'), 50, 'the server heard every utterance end');
    assert.equal(count(healthy, 'mark_echoed'), 50, 'every call played its reply and echoed the mark');
    const own = healthy.events
      .filter((e) => e.event === 'turn')
      .map((e) => e.first_audio_at! - e.last_voiced_at!)
      .sort((a, b) => a - b);
    assert.equal(own.length, 50);
    const serverMedian = own[Math.floor(own.length / 2)]!;
    const device = r.metrics['response_latency{chaos:steady}']!.values.med!;
    assert.ok(
      Math.abs(device - serverMedian) <= Math.max(40, serverMedian * 0.1),
      `device p50 ${device.toFixed(1)} ms vs pipecat's own ${serverMedian.toFixed(1)} ms`,
    );
    t.diagnostic(`device p50 ${device.toFixed(1)} ms, pipecat's clock ${serverMedian.toFixed(1)} ms`);
  });

  it('a reply that stands still 600 ms mid-way FAILs naming the stutter', async () => {
    const stalling = await startPipecat(venv, ['--think-ms', '50', '--reply-ms', '1200', '--stall-ms', '600']);
    try {
      const r = await calls(stalling, 20, 'stalling');
      assert.equal(r.code, 99, r.out);
      assert.equal(r.run.verdict, 'fail');
      assert.match(r.out, /reply_stutter_rate/);
      // The device had some of the reply buffered ahead (the server sends faster than it plays): it stands dry for
      // the 600 ms less that lead, on every call.
      const dry = r.metrics['playback_stall_time']!.values;
      assert.equal(r.metrics['reply_stutter']?.values.rate, 1, 'every call stuttered');
      assert.ok(dry.min! >= 200 && dry.max! <= 600, `dry ${dry.min}-${dry.max} ms`);
    } finally {
      await stalling.close();
    }
  });
});
