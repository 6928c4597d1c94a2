// Message validation and the dropped-session rule from docs/protocol.md.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isDropped, parseDeviceMessage } from '../../core/protocol.ts';

describe('parseDeviceMessage', () => {
  it('accepts each well-formed device message', () => {
    for (const m of [
      {
        type: 'hello',
        device_id: 'dev-1',
        protocol: 1,
        profile: 'esp32-hotpin',
        audio: { encoding: 'pcm_s16le', sample_rate: 16000, channels: 1 },
        resume: 'tok',
      },
      { type: 'ping', id: 7, t: 1 },
      { type: 'pong', t: 1 },
      { type: 'hotword_detected', wake_id: 'w-1', t: 5 },
      { type: 'end_of_speech', session_id: 's-1' },
      { type: 'playback_complete', session_id: 's-1' },
      { type: 'cancel', session_id: 's-1' },
    ]) {
      const r = parseDeviceMessage(JSON.stringify(m));
      assert.equal(r.ok, true, JSON.stringify(m));
    }
  });

  it('names the code and the field for each fault', () => {
    const cases: [string, string, RegExp?][] = [
      ['{', 'bad_json'],
      ['[]', 'bad_message', /object/],
      ['{"type":"x"}', 'unknown_type'],
      ['{"type":"hello","device_id":"a b","protocol":1}', 'bad_message', /device_id/],
      ['{"type":"hello","device_id":"a","protocol":2}', 'bad_message', /protocol/],
      ['{"type":"hello","device_id":"a","protocol":1,"audio":{"encoding":"opus"}}', 'bad_message', /audio.encoding/],
      ['{"type":"ping","t":"now"}', 'bad_message', /"t"/],
      ['{"type":"cancel"}', 'bad_message', /session_id/],
    ];
    for (const [text, code, field] of cases) {
      const r = parseDeviceMessage(text);
      assert.equal(r.ok, false, text);
      if (!r.ok) {
        assert.equal(r.code, code, text);
        if (field) assert.match(r.message, field);
      }
    }
  });

  it('counts as dropped what never completed, but not barge-in or cancel', () => {
    assert.equal(isDropped('complete'), false);
    assert.equal(isDropped('barged_in'), false);
    assert.equal(isDropped('cancelled'), false);
    for (const r of ['timeout', 'interrupted', 'error', 'lost'] as const) assert.equal(isDropped(r), true);
  });
});
