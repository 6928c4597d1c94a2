// The device metrics: names and kinds are the interface scenarios, thresholds and reports share.

export type MetricKind = 'trend' | 'counter' | 'rate' | 'gauge';

export const DEVICE_METRICS = {
  wake_ack_latency: 'trend',
  /**
   * Voice-to-voice: the end of the user's speech (the device's last voiced frame) to the first reply audio, the
   * server's endpointing included.
   */
  response_latency: 'trend',
  /** The end of the user's speech to the server's first sign it heard the end (transcript, reply start or audio). */
  endpointing_latency: 'trend',
  /** The server's first sign it heard the end of speech to the first reply audio (the rest of response_latency). */
  processing_latency: 'trend',
  /**
   * The server answered (a transcript, a reply's start or its audio) before the device had sent its last voiced frame:
   * it cut the user off. No latency is timed for such a session (nobody waited for that answer); tagged chaos.
   */
  early_replies: 'counter',
  /** How much of the utterance's speech frames the device had sent when an early reply came, %. */
  early_reply_speech: 'trend',
  /**
   * Completed sessions whose server never showed it heard the speech end: no transcript (the dialect's sign of hearing,
   * where it has one) after the device's last voiced frame. Tagged chaos.
   */
  replies_unheard: 'counter',
  reconnect_time: 'trend',
  disconnect_detect_time: 'trend',
  ping_rtt: 'trend',
  /** A connect attempt to its socket open (TCP and the WebSocket upgrade). */
  connect_time: 'trend',
  /** The dialect's provision call (an HTTP request before the socket, xiaozhi's OTA) to its answer. */
  provision_latency: 'trend',
  /** Socket open to the dialect's ready (hello answered, `connected`): for per-wake channels, part of every wake's wait. */
  handshake_time: 'trend',
  connection_drops: 'counter',
  /**
   * Links lost outside every fault window (tags: code, cause): the server's doing. A connect that fails is counted in
   * connect_success only.
   */
  unplanned_drops: 'counter',
  reconnect_attempts: 'counter',
  /** Links lost less than RECONNECT_CENSOR_MS before the run ended, not back yet: no verdict on them. */
  reconnects_unfinished: 'counter',
  /** Links the profile does not reconnect by design (a 1000 close with reconnect.on 'abnormal'). */
  reconnects_abandoned: 'counter',
  devices_gave_up: 'counter',
  flaps: 'counter',
  sessions_started: 'counter',
  sessions_completed: 'counter',
  sessions_resumed: 'counter',
  sessions_dropped: 'counter',
  wakes: 'counter',
  /**
   * Sessions the run's end cut before they owed an outcome (begun less than the stall bound before it): left out of
   * the SLOs that need their outcome (response, drop rate).
   */
  sessions_open_at_end: 'counter',
  /** Wakes still waiting for their acknowledgement when the run ended: no wake_success or wake_ack sample is owed. */
  wakes_open_at_end: 'counter',
  /** Wakes on a dialect whose server acknowledges nothing (recv.ack null): no wake_ack_latency is owed for them. */
  wakes_without_ack: 'counter',
  protocol_errors: 'counter',
  /** Server messages past the device's intake bounds (tag kind: flood, frame_too_big, text_too_long, json_too_deep, invalid_utf8, bad_frame, reply_overrun, reply_too_long, unrequested_subprotocol, missing_subprotocol, server_not_reading: the link closed), or that it skips (not_json: a text that is not a JSON object; binary_outside_session: audio with no session, 2 s after the last: the link kept). */
  protocol_violations: 'counter',
  playback_underruns: 'counter',
  /** A reply whose playback ran dry mid-reply (1) or played smoothly (0); tagged chaos:on|off. */
  reply_stutter: 'rate',
  /** How long one reply's playback stood dry in all, ms (0 for a smooth one); tagged chaos:on|off. */
  playback_stall_time: 'trend',
  /** A reply with no audio, or fewer audio bytes than the dialect announced (1), or whole (0); tagged chaos:on|off. */
  reply_truncated: 'rate',
  /** Server messages that match no step of the dialect (tag `type`: the message's type field, bounded). */
  unmatched_messages: 'counter',
  /** The generator's own lag: uplink audio that had to slip because the VU's event loop ran late. */
  audio_slips: 'counter',
  /** Uplink audio frames sent (the denominator of audio_slips), reported once a second per VU. */
  audio_frames: 'counter',
  /**
   * The tester's own retries: a k6 device reopened a socket whose first server frame k6/websockets dropped (a race in
   * its open, about 1 in 25,000 opens; core/device-link.ts FIRST_FRAME_GRACE_MS). Not counted against the server.
   */
  tester_retries: 'counter',
  /** The generator's own lag: how late a VU's 1 s probe timer fired (the VU's event loop was busy or starved). */
  vu_loop_lag: 'trend',
  /** The native engine's device timers fired, by how late (tag `lag_le`, core/timer-lag.ts buckets). */
  timer_firings: 'counter',
  /** Barge-in: the user interrupted a reply (the dialect's abort). */
  barge_ins: 'counter',
  /** From the abort to the last stale reply audio that still arrived (0: none came after it). */
  barge_in_stop_time: 'trend',
  /** Reply audio frames that arrived after the abort. */
  barge_in_late_frames: 'counter',
  /** A turn on a link that was already listening (after_reply 'listen'): the user spoke again without a wake word. */
  follow_ups: 'counter',
  session_drop_rate: 'rate',
  /**
   * A session offered for resume after a cut (not a server going away), back within the protocol's resume grace: the
   * server kept it (1) or not (0).
   */
  resume_success: 'rate',
  connect_success: 'rate',
  /** A wake acknowledged within WAKE_ACK_TIMEOUT_MS (1) or not (0); tagged chaos:on|off. */
  wake_success: 'rate',
  devices_connected: 'gauge',
  /**
   * A fault's end to its profile's devices connected again at their pre-fault level (per fleet slice; tags profile and
   * fault, e.g. "2:cut"). A slice not back within RECOVERY_MAX_MS reports that bound, or at the run's end its wait so far.
   */
  recovery_time: 'trend',
  /** Profiles of a fleet slice that were not back at their level when their recovery was judged. */
  recoveries_failed: 'counter',
  /** Of those, the ones the run's end cut: their recovery_time is the wait until the end, a lower bound. */
  recoveries_cut: 'counter',
  /** A device reached `connected` (links_up − links_down is the fleet's connected total, live on k6's REST API). */
  links_up: 'counter',
  /** A connected device stopped being connected (not counted when the run stops it). */
  links_down: 'counter',
  devices_started: 'counter',
} as const satisfies Record<string, MetricKind>;

export type DeviceMetricName = keyof typeof DEVICE_METRICS;

/** Where a device reports; k6 and Node each provide one. */
export interface MetricSink {
  add(name: DeviceMetricName, value: number, tags: Record<string, string>): void;
}

/** True for a name of DEVICE_METRICS (what another runtime, the native engine, sends is checked, never cast). */
export function isDeviceMetric(name: string): name is DeviceMetricName {
  return Object.prototype.hasOwnProperty.call(DEVICE_METRICS, name);
}
