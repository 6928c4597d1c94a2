// The voice-to-voice truth check both device engines are held to: response latency at p50 equals the server's injected
// endpointing window and pipeline plus one network round trip measured in the same run (a wakestorm wake up, its
// session_started down: the same kind of exchange with no pipeline in it).
import assert from 'node:assert/strict';

export interface InjectedDelays {
  vad: number;
  stt: number;
  llm: number;
  tts: number;
}

type Metrics = Record<string, { values: Record<string, number> }>;

// How far the measured p50 may fall from the truth, ms. Early is tight: nothing makes a reply come sooner than the
// server's timers. Late has a little more: on a loaded 2-core box the server's own timers fire late (a CI run read
// 377.5 against 374), which is the server's slip, not the device's clock. A device timing from the wrong event is off
// by a frame (60 ms) or more, far outside either.
const EARLY_MS = 3;
const LATE_MS = 6;

/** Whether measured lies within [truth - early, truth + late]. */
function near(measured: number, truth: number, early: number, late: number): boolean {
  return measured >= truth - early && measured <= truth + late;
}

/**
 * Asserts each profile's response p50 within 3 ms early or 6 ms late of the truth and endpointing p50 within 5 ms
 * early or 8 ms late; returns the round trip.
 */
export function assertVoiceToVoice(m: Metrics, profiles: string[], delays: InjectedDelays): number {
  const truth = delays.vad + delays.stt + delays.llm + delays.tts;
  const rtt = m['wake_ack_latency{chaos:steady,profile:recommended}']!.values['p(50)']!;
  assert.ok(rtt < 10, `wake ack p50 ${rtt} ms`);
  for (const p of profiles) {
    const resp = m[`response_latency{chaos:steady,profile:${p}}`]!.values;
    assert.ok(resp.count! >= 3, `${p}: ${resp.count} replies`);
    // Only the network round trip and the server's timers lie between the injected truth and the measurement.
    assert.ok(
      near(resp['p(50)']!, truth + rtt, EARLY_MS, LATE_MS),
      `${p}: response p50 ${resp['p(50)']} ms, truth ${truth} ms + round trip (wake ack p50) ${rtt} ms`,
    );
    // Where it went: endpointing is the window plus the transcription (the server's first sign is its transcript).
    const ep = m.endpointing_latency!.values['p(50)']!;
    assert.ok(
      near(ep, delays.vad + delays.stt + rtt, EARLY_MS + 2, LATE_MS + 2),
      `endpointing p50 ${ep} ms, truth ${delays.vad + delays.stt} ms + round trip`,
    );
  }
  return rtt;
}

/** The reference server's flags for these delays, for `wakestorm run --server-arg`. */
export function serverArgs(delays: InjectedDelays): string[] {
  return [
    `--stt-ms=${delays.stt}`,
    `--llm-ms=${delays.llm}`,
    `--tts-ms=${delays.tts}`,
    `--vad-silence-ms=${delays.vad}`,
    '--tts-pace=realtime',
  ].flatMap((a) => ['--server-arg', a]);
}
