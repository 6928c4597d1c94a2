// The twilio-media-streams dialect against a server whose Twilio protocol code is a public package's, not ours:
// pipecat (PyPI, pinned in clients/pipecat-twilio/requirements.txt), a voice-agent framework that serves phone calls
// over Twilio media streams. Its runner parses each call's connected/start handshake, its TwilioFrameSerializer
// decodes the callers' µ-law media to PCM and encodes the reply (clients/pipecat-twilio/serve.py). 50 calls PASS with
// the devices' response latency within max(40 ms, 10%) of the server's own clock, and the same server with a reply
// that stands still 600 ms FAILs naming the stutter. Runs in `npm run test:clients` (its venv is made once).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  clientVenv,
  countEvents,
  serverMedian,
  startPyServer,
  type ClientVenv,
  type PyServer,
} from '../helpers/client-venv.ts';
import { voiceFleet } from '../helpers/proc.ts';

describe('twilio-media-streams against pipecat, a public implementation of the protocol', { timeout: 900_000 }, () => {
  let venv: ClientVenv;
  let healthy: PyServer;
  before(async () => {
    venv = clientVenv('pipecat-twilio', 'pipecat.serializers.twilio');
    healthy = await startPyServer(venv, ['--think-ms', '50', '--reply-ms', '1200']);
  });
  after(async () => {
    await healthy?.close();
  });

  it('50 calls PASS: every utterance heard by its VAD, every mark echoed, latency on its clock', async (t) => {
    const r = await voiceFleet(healthy.url, 'twilio-media-streams', 50);
    assert.equal(r.code, 0, r.out);
    assert.equal(r.run.verdict, 'pass');
    assert.equal(countEvents(healthy, 'speech_stopped'), 50, 'the server heard every utterance end');
    assert.equal(countEvents(healthy, 'mark_echoed'), 50, 'every call played its reply and echoed the mark');
    assert.equal(countEvents(healthy, 'turn'), 50);
    const own = serverMedian(healthy);
    const device = r.metrics['response_latency{chaos:steady}']!.values.med!;
    assert.ok(
      Math.abs(device - own) <= Math.max(40, own * 0.1),
      `device p50 ${device.toFixed(1)} ms vs pipecat's own ${own.toFixed(1)} ms`,
    );
    t.diagnostic(`device p50 ${device.toFixed(1)} ms, pipecat's clock ${own.toFixed(1)} ms`);
  });

  it('a reply that stands still 600 ms mid-way FAILs naming the stutter', async () => {
    const stalling = await startPyServer(venv, ['--think-ms', '50', '--reply-ms', '1200', '--stall-ms', '600']);
    try {
      const r = await voiceFleet(stalling.url, 'twilio-media-streams', 20);
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
