// The variables a device fills for its dialect's templates, matchers, paths and headers: the one list, each with
// where its value comes from. A dialect declares the ones it uses (its `variables`); validation refuses a dialect
// that uses one it did not declare, or declares one no device fills, and a device fills only what is declared.

export type VariableSource = 'device' | 'run' | 'link' | 'conversation';

export const VARIABLES: Readonly<Record<string, { from: VariableSource; what: string }>> = {
  device_id: { from: 'device', what: "the device's id (the fleet's prefix and its index)" },
  profile: { from: 'device', what: "the device's firmware profile" },
  protocol_version: { from: 'device', what: 'the wakestorm protocol version (1)' },
  mac: { from: 'device', what: 'a locally administered MAC address, stable per device id' },
  client_id: { from: 'device', what: 'a version-4-shaped UUID, stable per device id' },
  wake_word: { from: 'device', what: 'the wake word the user said' },
  listen_mode: { from: 'device', what: "'auto' when the profile ends speech by the server's VAD, else 'manual'" },
  codec: { from: 'device', what: 'the uplink codec (pcm_s16le or opus)' },
  frame_ms: { from: 'device', what: "one uplink frame's duration in ms" },
  sample_rate: { from: 'device', what: 'the uplink sample rate' },
  token: { from: 'run', what: 'the bearer token (--token, --token-file)' },
  now: { from: 'link', what: "the device's clock in ms when the message is sent" },
  ping_id: { from: 'link', what: "the number of the device's own ping" },
  wake_id: { from: 'conversation', what: 'the id of the wake that opened the conversation' },
  session_id: { from: 'conversation', what: "the conversation's id (the server's, when a capture took it)" },
};

/** Variables only a capture can set (capture.<event>.<name>): a template that uses one needs that capture. */
export const CAPTURED_ONLY: Readonly<Record<string, string>> = {
  resume_token: 'ready',
  ping_t: 'ping',
  // A reply's marker the device echoes when it has played the reply (Twilio media streams' mark).
  mark_name: 'reply_end',
};
