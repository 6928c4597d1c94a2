// The device model's own CPU price per uplink audio frame, inside k6's JS runtime, with no socket underneath.
// One VU runs two windows of WINDOW_MS at the same load (STREAMS paced 20 ms streams, below saturation): first bare
// k6 timer chains (the least a paced frame can cost), then real `Device`s (the `recommended` profile) whose sockets
// are scripted in memory. It prints each window's span and count (FRAME_WINDOW lines); bench/frame-cost-run.ts reads
// k6's CPU time from /proc over the same spans, so CPU per frame and per bare timer come from one run.
import { setTimeout } from 'k6/timers';
import { Device } from '../../core/device.ts';
import type { SocketLike } from '../../core/device-env.ts';
import { deviceEnv, fleetEnv, loadUtterance, readRepoFile } from '../../scenarios/lib/k6-fleet.ts';
import { loadDialect } from '../../core/dialect.ts';
import { PROFILES } from '../../core/profiles.ts';
import { deviceRandom } from '../../core/rng.ts';

const STREAMS = Number(__ENV.STREAMS ?? 800);
// Streams of the `recommended` profile last 3 s (the utterance, then end_of_speech): the window sits inside them.
const WINDOW_MS = Number(__ENV.WINDOW_MS ?? 2200);
const audio = loadUtterance();
const WAKESTORM = loadDialect('wakestorm', readRepoFile, readRepoFile);
const kSetTimeout = setTimeout;

export const options = {
  scenarios: { cost: { executor: 'per-vu-iterations', vus: 1, iterations: 1, maxDuration: '60s' } },
};

/** A socket that opens at once and plays the server's part of a session in memory; counts the binary frames. */
class ScriptedSocket implements SocketLike {
  readyState = 0;
  binaryType = 'blob';
  onopen: SocketLike['onopen'] = null;
  onmessage: SocketLike['onmessage'] = null;
  onclose: SocketLike['onclose'] = null;
  onerror: SocketLike['onerror'] = null;
  constructor(private readonly counter: { frames: number }) {
    kSetTimeout(() => {
      this.readyState = 1;
      this.onopen?.();
      this.reply({
        type: 'connected',
        status: 'connected',
        client_id: 'x',
        connection_id: 'c',
        resume_token: 't',
        keepalive_ms: 600_000,
        server_time: 0,
        resumed: false,
        session: null,
      });
    }, 0);
  }
  private reply(m: object): void {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
  send(d: string | ArrayBuffer | ArrayBufferView): void {
    if (typeof d !== 'string') {
      this.counter.frames++;
      return;
    }
    const m = JSON.parse(d) as { type: string; wake_id?: string };
    if (m.type === 'hotword_detected')
      kSetTimeout(() => this.reply({ type: 'session_started', session_id: `s-${m.wake_id}`, wake_id: m.wake_id }), 0);
  }
  ping(): void {}
  close(): void {
    this.readyState = 3;
  }
}

function report(phase: string, from: number, to: number, count: number, extra: object = {}): void {
  console.log(`FRAME_WINDOW ${JSON.stringify({ phase, from, to, count, streams: STREAMS, ...extra })}`);
}

function bareTimers(done: () => void): void {
  let n = 0;
  let counting = false;
  let stop = false;
  const chain = () => {
    if (stop) return;
    if (counting) n++;
    kSetTimeout(chain, 20);
  };
  for (let i = 0; i < STREAMS; i++) kSetTimeout(chain, (i * 20) / STREAMS);
  kSetTimeout(() => {
    counting = true;
    const from = Date.now();
    kSetTimeout(() => {
      stop = true;
      report('timers', from, Date.now(), n);
      kSetTimeout(done, 300);
    }, WINDOW_MS);
  }, 500);
}

function devices(done: () => void): void {
  const counter = { frames: 0 };
  let slips = 0;
  const metrics = {
    add: (name: string, v: number) => {
      if (name === 'audio_slips') slips += v;
    },
  };
  const list: Device[] = [];
  // The fleet's own env (k6 timers and clock), with sockets scripted in memory instead of k6's.
  const shared = { ...fleetEnv(metrics, audio), openSocket: () => new ScriptedSocket(counter) };
  for (let i = 0; i < STREAMS; i++) {
    const env = deviceEnv(shared, deviceRandom('1', `c-${i}`));
    // Wakes spread over one frame, so the streams' frames interleave as a fleet's do.
    const wakeAt = 100 + (i * 20) / STREAMS;
    const d = new Device(
      {
        id: `c-${i}`,
        baseUrl: 'ws://127.0.0.1:1',
        profile: PROFILES.recommended!,
        dialect: WAKESTORM,
        wake: { mode: 'once', interval_ms: 0, first_min_ms: wakeAt, first_max_ms: wakeAt },
      },
      env,
    );
    d.start(0);
    list.push(d);
  }
  // Streams run ~5 s (3 s of speech, then silence until a VAD that never answers): count inside that.
  kSetTimeout(() => {
    const from = counter.frames;
    const slipsFrom = slips;
    const t0 = Date.now();
    kSetTimeout(() => {
      report('frames', t0, Date.now(), counter.frames - from, { slips: slips - slipsFrom });
      for (const d of list) d.stop();
      done();
    }, WINDOW_MS);
  }, 500);
}

/** A window with nothing scheduled: k6's own background CPU (metrics, GC), subtracted from the other two. */
function idle(done: () => void): void {
  const from = Date.now();
  kSetTimeout(() => {
    report('idle', from, Date.now(), 0);
    done();
  }, WINDOW_MS);
}

export default function () {
  idle(() => bareTimers(() => devices(() => {})));
}
