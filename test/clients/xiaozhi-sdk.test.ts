// The reference server's xiaozhi dialect against an independent client of the protocol: xiaozhi-sdk (PyPI, pinned in
// clients/xiaozhi-sdk/requirements.txt), with its own Opus encoder and decoder (libopus through opuslib) and its own
// reading of the protocol (hello, listen start, realtime and auto modes, back to listening after tts stop). Its venv
// is made once under wakestorm's cache. Runs outside `npm test` (`npm run test:clients`, called by .ci/run): the
// first run installs the SDK from PyPI.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { opusClip, type OpusTable } from '../../core/opus.ts';
import { startVoiceServer, type VoiceServer } from '../../server/server.ts';
import { metricValue } from '../../scripts/proc-sampler.ts';
import { clientVenv, type ClientVenv } from '../helpers/client-venv.ts';
import { ROOT, runCli } from '../helpers/proc.ts';

let sdk: ClientVenv;

interface Conversation {
  connected: boolean;
  events: { type: string; state?: string; text?: string }[];
  frames_sent: number;
  reply_packets: number;
  decoder_rate: number | null;
  open_after_turn: boolean;
  replied: boolean;
  /** Its own last voiced frame sent to the first reply audio it decoded, on its own clock. */
  voice_to_voice_ms: number | null;
}

function converse(url: string, mode: string): Promise<{ code: number | null; result: Conversation; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      sdk.python,
      [join(sdk.dir, 'converse.py'), url, join(ROOT, 'audio', 'utterance.pcm'), '--mode', mode, '--timeout', '20'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const kill = setTimeout(() => p.kill('SIGKILL'), 40_000);
    p.on('error', reject);
    p.on('exit', (code) => {
      clearTimeout(kill);
      try {
        resolve({ code, result: JSON.parse(out.trim().split('\n').pop() ?? ''), stderr: err });
      } catch {
        reject(new Error(`converse.py printed no result (exit ${code}): ${err.slice(-800)}`));
      }
    });
  });
}

const replyPackets = [0, 1, 2, 3].map((n) => {
  const b = readFileSync(join(ROOT, 'audio', `reply-${n}.opus`));
  return opusClip(
    b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength),
    JSON.parse(readFileSync(join(ROOT, 'audio', `reply-${n}.opus.json`), 'utf8')) as OpusTable,
  ).packets.length;
});

describe('xiaozhi-sdk, an independent xiaozhi client, against the reference server', () => {
  let server: VoiceServer;
  before(async () => {
    sdk = clientVenv('xiaozhi-sdk', 'xiaozhi_sdk.core');
    server = await startVoiceServer({ port: 0, sttMs: 50, llmMs: 50, ttsMs: 50 });
  });
  after(async () => {
    await server?.close();
  });

  for (const mode of ['auto', 'realtime']) {
    it(`${mode} mode: its Opus speech is heard, the reply decodes whole in its decoder, and the channel stays open`, async () => {
      const { code, result, stderr } = await converse(`${server.wsUrl}/xiaozhi/v1/`, mode);
      assert.equal(code, 0, stderr.slice(-800));
      assert.ok(result.connected && result.replied);
      const kinds = result.events
        .filter((e) => e.type !== 'websocket')
        .map((e) => (e.type === 'tts' ? `tts:${e.state}` : e.type));
      assert.deepEqual(kinds, ['stt', 'llm', 'tts:start', 'tts:sentence_start', 'tts:stop']);
      assert.ok((result.events[0]!.text ?? '').length > 0, 'a transcript');
      // Every reply packet reached the SDK and its libopus decoder took it: one decoded frame per committed packet.
      assert.ok(
        replyPackets.includes(result.reply_packets),
        `${result.reply_packets} packets decoded; the replies have ${replyPackets}`,
      );
      assert.equal(
        result.decoder_rate,
        24_000,
        "the SDK's decoder runs at the rate the server's hello announced (real servers' default)",
      );
      // After tts stop the SDK sends listen start again in auto mode (as the firmware does): the channel goes on.
      assert.equal(result.open_after_turn, true);
      // It spoke for a while after the utterance: the server's VAD, not a timeout, ended the speech.
      assert.ok(result.frames_sent > 50 && result.frames_sent < 200, `${result.frames_sent} frames sent`);
    });
  }

  it("wakestorm's response_latency equals the voice-to-voice time the independent client measures on its own clock", async () => {
    const url = `${server.wsUrl}/xiaozhi/v1/`;
    const client: number[] = [];
    const ours: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { code, result, stderr } = await converse(url, 'auto');
      assert.equal(code, 0, stderr.slice(-800));
      client.push(result.voice_to_voice_ms!);
      const r = await runCli(['try', '--server-url', server.wsUrl, '--dialect', 'xiaozhi'], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      ours.push(Number(/response_latency = (\d+) ms/.exec(r.stdout)![1]));
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[1]!;
    // The truth: the server's 300 ms endpointing window (five 60 ms frames) and 150 ms of pipeline, plus the loopback.
    assert.ok(med(client) >= 450 && med(client) < 520, `client ${client.join(', ')} ms`);
    // Two clocks, two encoders and decoders, two pacing loops: the medians agree within 25 ms.
    assert.ok(
      Math.abs(med(client) - med(ours)) <= 25,
      `client ${client.join(', ')} ms, wakestorm ${ours.join(', ')} ms`,
    );
  });

  it('the server refused nothing the client said', async () => {
    const text = await (await fetch(`${server.wsUrl.replace(/^ws/, 'http')}/metrics`)).text();
    assert.ok(!(metricValue(text, 'voice_errors_total', 'code="bad_message"') > 0), 'no bad_message');
    assert.ok(metricValue(text, 'voice_sessions_started_total') >= 2);
  });
});
