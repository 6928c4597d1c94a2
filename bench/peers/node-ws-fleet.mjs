// The hand-written floor for `npm run bench` (bench/peers.ts): the script a developer writes with the `ws` package
// and nothing else, one Node process, run with plain `node`. Each device does what the `recommended` profile does on
// the wakestorm protocol (docs/protocol.md): /ws/{id}, a JSON ping every 15 s once connected, the server's JSON pings
// answered; talking ones also say the committed 3 s utterance (20 ms PCM frames at real-time pace) every WAKE_EVERY_S,
// end their speech, hear the reply and say it was played. No model, no metrics beyond the counts it prints.
// Env: TARGET (ws://host:port), DEVICES, RAMP_S, DURATION_S, TALK=1, WAKE_EVERY_S (60), UTTERANCE (a .pcm file).
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

const target = process.env.TARGET ?? 'ws://127.0.0.1:18000';
const devices = Number(process.env.DEVICES ?? 100);
const rampMs = Number(process.env.RAMP_S ?? 10) * 1000;
const endAt = Date.now() + Number(process.env.DURATION_S ?? 60) * 1000;
const talk = process.env.TALK === '1';
const wakeEveryMs = Number(process.env.WAKE_EVERY_S ?? 60) * 1000;
const pcm = talk ? readFileSync(process.env.UTTERANCE ?? 'audio/utterance.pcm') : Buffer.alloc(0);
const FRAME = 640;

const counts = { connected: 0, connected_max: 0, closed: 0, errors: 0, sessions: 0, completed: 0 };
const sockets = new Set();

function device(i) {
  const ws = new WebSocket(`${target}/ws/node-${i}`);
  sockets.add(ws);
  let pinger;
  let waker;
  let talker;
  ws.on('message', (data, isBinary) => {
    if (isBinary) return; // reply audio: heard, not kept
    const m = JSON.parse(data.toString());
    if (m.type === 'connected') {
      counts.connected_max = Math.max(counts.connected_max, ++counts.connected);
      pinger = setInterval(() => ws.send(JSON.stringify({ type: 'ping', id: 1, t: Date.now() })), 15_000);
      if (talk) {
        const wake = () => ws.send(JSON.stringify({ type: 'hotword_detected', wake_id: `w-${i}`, t: Date.now() }));
        setTimeout(() => {
          wake();
          waker = setInterval(wake, wakeEveryMs);
        }, Math.random() * wakeEveryMs);
      }
    } else if (m.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', t: m.t }));
    } else if (m.type === 'session_started') {
      counts.sessions++;
      let off = 0;
      talker = setInterval(() => {
        if (off >= pcm.length) {
          clearInterval(talker);
          ws.send(JSON.stringify({ type: 'end_of_speech', session_id: m.session_id }));
          return;
        }
        ws.send(pcm.subarray(off, off + FRAME));
        off += FRAME;
      }, 20);
    } else if (m.type === 'tts_stream_end') {
      ws.send(JSON.stringify({ type: 'playback_complete', session_id: m.session_id }));
    } else if (m.type === 'session_end' && m.reason === 'complete') {
      counts.completed++;
    }
  });
  ws.on('error', () => counts.errors++);
  ws.on('close', () => {
    counts.closed++;
    if (pinger) counts.connected--;
    clearInterval(pinger);
    clearInterval(waker);
    clearInterval(talker);
    sockets.delete(ws);
  });
}

for (let i = 0; i < devices; i++) setTimeout(() => device(i), (i * rampMs) / devices);
setTimeout(
  () => {
    for (const ws of sockets) ws.close();
    setTimeout(() => {
      console.log(JSON.stringify(counts));
      process.exit(0);
    }, 2000);
  },
  Math.max(0, endAt - Date.now()),
);
