// Dialects end to end: the reference server speaks xiaozhi-esp32's protocol to a plain client (real Opus both ways,
// its binary framings, bad input closed); k6 devices of both dialects, mixed in one fleet with barging ones, through
// Toxiproxy; a cut mid-reply drops xiaozhi conversations (no resume in that dialect) while wakestorm ones resume; and
// the README's user-dialect example runs as written against a small server of that imaginary protocol.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import WebSocket from 'ws';
import { frameAudio, unframeAudio } from '../../core/dialect.ts';
import { opusClip, opusPacketMs, type OpusTable } from '../../core/opus.ts';
import { startVoiceServer, type VoiceServer } from '../../server/server.ts';
import { startAcmeServer } from '../helpers/acme-server.ts';
import { ROOT, runCli } from '../helpers/proc.ts';
import { cutMidReply, mixedFleet } from '../helpers/conformance.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-dialects-'));
const servers: VoiceServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

function clip(name: string) {
  const b = readFileSync(join(ROOT, 'audio', `${name}.opus`));
  return opusClip(
    b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength),
    JSON.parse(readFileSync(join(ROOT, 'audio', `${name}.opus.json`), 'utf8')) as OpusTable,
  );
}

/** One xiaozhi conversation by hand: hello, listen detect + start, the utterance in real time, then silence. */
async function xiaozhiConversation(s: VoiceServer, version: '1' | '2' | '3') {
  const framing = version === '1' ? 'raw' : version === '2' ? 'xiaozhi-v2' : 'xiaozhi-v3';
  const utt = clip('utterance');
  const ws = new WebSocket(`${s.wsUrl}/xiaozhi/v1/`, {
    headers: { 'Device-Id': '02:00:00:00:00:01', 'Protocol-Version': version, 'Client-Id': 'c' },
  });
  const events: Record<string, unknown>[] = [];
  let replyMs = 0;
  let timer: NodeJS.Timeout | null = null;
  const done = new Promise<void>((resolve, reject) => {
    ws.on('message', (d, bin) => {
      if (bin) {
        const p = unframeAudio(framing, new Uint8Array(d as Buffer));
        assert.ok(p, 'each downlink frame holds together in its framing');
        replyMs += opusPacketMs(p);
        return;
      }
      const m = JSON.parse(d.toString()) as Record<string, unknown>;
      events.push(m);
      if (m.type === 'hello') {
        ws.send(JSON.stringify({ session_id: m.session_id, type: 'listen', state: 'detect', text: 'hey' }));
        ws.send(JSON.stringify({ session_id: m.session_id, type: 'listen', state: 'start', mode: 'auto' }));
        let i = 0;
        const tick = () => {
          const p = i < utt.packets.length ? utt.packets[i]! : utt.silence;
          ws.send(Buffer.from(frameAudio(framing, p, i * 60)));
          i++;
          if (i < utt.packets.length + 30) timer = setTimeout(tick, 60);
        };
        tick();
      }
      if (m.type === 'tts' && m.state === 'stop') resolve();
    });
    ws.on('close', (code) => reject(new Error(`closed ${code} before the reply ended`)));
    ws.on('open', () =>
      ws.send(
        JSON.stringify({
          type: 'hello',
          version: 1,
          transport: 'websocket',
          audio_params: { format: 'opus', sample_rate: 16000, channels: 1, frame_duration: 60 },
        }),
      ),
    );
  });
  await done;
  if (timer) clearTimeout(timer);
  ws.removeAllListeners('close');
  ws.close();
  return { events, replyMs };
}

describe('the reference server speaks xiaozhi', () => {
  it('answers hello, hears Opus speech through its VAD, and replies with stt, llm, tts and Opus audio, in every framing', async () => {
    const s = await startVoiceServer({ port: 0, sttMs: 20, llmMs: 20, ttsMs: 20, ttsPace: 'burst' });
    servers.push(s);
    for (const v of ['1', '2', '3'] as const) {
      const { events, replyMs } = await xiaozhiConversation(s, v);
      const kinds = events.map((e) => (e.type === 'tts' ? `tts:${e.state as string}` : e.type));
      assert.deepEqual(kinds, ['hello', 'stt', 'llm', 'tts:start', 'tts:sentence_start', 'tts:stop'], `framing v${v}`);
      assert.equal(events[0]!.transport, 'websocket');
      assert.ok(typeof events[1]!.text === 'string' && events[1]!.text.length > 0);
      // The reply's Opus packets, timed by their TOC, play as long as the reply's frame table says.
      const replies = [0, 1, 2, 3].map((n) => clip(`reply-${n}`).packets.length * 60);
      assert.ok(replies.includes(replyMs), `reply of ${replyMs} ms is one of ${replies}`);
    }
  });

  it('waits for voice on a listening channel (a microphone streaming silence gets no reply), and closes it after its no-voice time', async () => {
    const s = await startVoiceServer({ port: 0, sttMs: 20, llmMs: 20, ttsMs: 20, xiaozhiNoVoiceMs: 1500 });
    servers.push(s);
    const utt = clip('utterance');
    const ws = new WebSocket(`${s.wsUrl}/xiaozhi/v1/`, {
      headers: { 'Device-Id': '02:00:00:00:00:02', 'Protocol-Version': '1' },
    });
    const texts: Record<string, unknown>[] = [];
    ws.on('message', (d, bin) => !bin && texts.push(JSON.parse(d.toString())));
    await new Promise((r) => ws.on('open', r));
    const opened = Date.now();
    ws.send(
      JSON.stringify({
        type: 'hello',
        version: 1,
        transport: 'websocket',
        audio_params: { format: 'opus', sample_rate: 16000, channels: 1, frame_duration: 60 },
      }),
    );
    ws.send(JSON.stringify({ type: 'listen', state: 'start', mode: 'auto' }));
    // Silence only, in real time, until the server gives up on the channel.
    const mic = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send(utt.silence), 60);
    const [code, reason] = await new Promise<[number, string]>((r) =>
      ws.on('close', (c, why) => r([c, why.toString()])),
    );
    clearInterval(mic);
    const after = Date.now() - opened;
    assert.deepEqual([code, reason], [1000, 'no voice']);
    assert.ok(after >= 1400 && after < 4000, `closed after ${after} ms`);
    assert.deepEqual(
      texts.map((m) => m.type),
      ['hello'],
      'nothing said to silence: no stt, no tts',
    );
  });

  it('closes a channel that breaks the protocol, and refuses an upgrade without a device id', async () => {
    const s = await startVoiceServer({ port: 0 });
    servers.push(s);
    const closeOf = (first: string | Buffer, headers: Record<string, string> = { 'Device-Id': 'aa:bb' }) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(`${s.wsUrl}/xiaozhi/v1/`, { headers });
        ws.on('open', () => ws.send(first));
        ws.on('close', (code) => resolve(code));
        ws.on('error', () => resolve(-1));
        ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      });
    assert.equal(await closeOf('{"type":"listen","state":"start"}'), 1008, 'listen before hello');
    assert.equal(await closeOf(Buffer.from([0xfc, 1, 2])), 1008, 'audio before hello');
    assert.equal(await closeOf('not json'), 1008);
    assert.equal(await closeOf('{"type":"hello","transport":"mqtt"}'), 1008);
    assert.equal(await closeOf('{}', {}), 404, 'no Device-Id');
    assert.equal(
      await closeOf('{}', { 'Device-Id': 'aa', 'Protocol-Version': '9' }),
      404,
      'an unknown binary protocol version',
    );
    // The server lives on: a well-behaved channel still converses.
    const { events } = await xiaozhiConversation(s, '1');
    assert.equal(events.at(-1)!.state, 'stop');
  });
});

describe('k6 devices in two dialects (the conformance cases the native engine runs too: engine.test.ts)', () => {
  it('a mixed fleet of wakestorm PCM and xiaozhi Opus devices passes, each measuring the injected pipeline delay; barging devices of both dialects see the server stop at once', () =>
    mixedFleet('k6', results));
  it('a cut mid-reply drops xiaozhi conversations (the dialect has no resume) and wakestorm ones resume', () =>
    cutMidReply('k6', results));
});

describe("the README's user dialect", () => {
  it('runs as written against a server that speaks it', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const m = /<!-- readme-dialect:[^>]*-->\s*```json\n([\s\S]*?)```/.exec(readme);
    assert.ok(m, 'the README marks its dialect example');
    assert.ok(m[1]!.trim().split('\n').length < 60, 'under 60 lines');
    const file = join(results, 'acme.json');
    writeFileSync(file, m[1]!);
    const key = join(results, 'acme-key.txt');
    writeFileSync(key, 'acme-key-1234\n', { mode: 0o600 });
    const acme = await startAcmeServer({ apiKey: 'acme-key-1234', thinkMs: 80 });
    try {
      const r = await runCli(
        [
          'run',
          'smoke',
          '--server-url',
          acme.url,
          '--dialect',
          file,
          '--token-file',
          key,
          '--devices',
          '4',
          '--duration',
          '11s',
          '--wake',
          'once:1s-2s',
          '--results',
          results,
        ],
        { timeoutMs: 120_000 },
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const s = JSON.parse(
        readFileSync(join(results, readlinkSync(join(results, 'latest')), 'summary.json'), 'utf8'),
      ).metrics;
      assert.equal(s.sessions_completed.values.count, 4);
      assert.equal(acme.finished(), 4, 'the server saw every conversation to its end');
      assert.ok(s.response_latency.values['p(50)'] >= 80, 'response latency includes the server think time');
      assert.ok(s.ping_rtt === undefined || s.ping_rtt.values.count >= 0);
    } finally {
      await acme.close();
    }
  });
});
