// The wire contract of docs/protocol.md as types and constants, shared by the server (Node) and the devices (k6).
// No runtime dependency and no Node or k6 import: both sides load this one file.

const PROTOCOL_VERSION = 1;

/** Limits from PROTOCOL.md "Transport". */
export const MAX_TEXT_BYTES = 64 * 1024;
export const MIN_AUDIO_FRAME_BYTES = 2;
export const MAX_AUDIO_FRAME_BYTES = 16384;
export const MAX_TTS_CHUNK_BYTES = 4096;
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

/** Defaults the reference server uses unless told otherwise. */
/** The protocol's default audio: PCM signed 16-bit little-endian, 16 kHz, mono; bytes per millisecond of it. */
export const PCM_SAMPLE_RATE = 16_000;
export const PCM_BYTES_PER_MS = (PCM_SAMPLE_RATE * 2) / 1000;
/** The reference server's default energy-VAD threshold (RMS, int16 units): frames below it are silence. */
export const VAD_THRESHOLD_RMS = 300;

export const DEFAULTS = {
  keepalive_ms: 10_000,
  hello_timeout_ms: 10_000,
  resume_grace_ms: 30_000,
  no_audio_timeout_ms: 10_000,
  vad_silence_ms: 300,
  max_speech_ms: 15_000,
  errors_in_a_row_limit: 10,
} as const;

/** Close codes (RFC 6455 §7.4.1, IANA registry, and the protocol's own 44xx). */
export const CLOSE = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  ABNORMAL: 1006,
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  TIMEOUT: 4408,
  REPLACED: 4409,
} as const;

/** What each close code the protocol knows means (RFC 6455 §7.4.1, the IANA registry, and this protocol's 44xx). */
export const CLOSE_CODE_NAMES: Record<string, string> = {
  '1000': 'normal closure',
  '1001': 'going away',
  '1002': 'protocol error',
  '1003': 'unsupported data',
  '1005': 'no status received',
  '1006': 'abnormal closure, no close frame',
  '1007': 'invalid payload data',
  '1008': 'policy violation',
  '1009': 'message too big',
  '1011': 'internal error',
  '1012': 'service restart',
  '1013': 'try again later',
  '4408': 'hello or idle timeout',
  '4409': 'replaced by a newer connection',
};

/** A close code as a bounded label (metrics, tags): the codes the protocol knows, or `other`. */
/**
 * The `code` tag of a close: a code of the protocol as itself, others by their RFC 6455 range (bounded labels):
 * `4xxx` application codes, `3xxx` registered ones (IANA), `1xxx` other protocol codes, `other` anything else.
 */
export function closeCodeLabel(code: number): string {
  if (String(code) in CLOSE_CODE_NAMES) return String(code);
  // An HTTP status where no socket opened (a refused provision call): `http_401`, bounded to real statuses.
  if (code >= 100 && code <= 599) return `http_${code}`;
  if (code >= 4000 && code <= 4999) return '4xxx';
  if (code >= 3000 && code <= 3999) return '3xxx';
  if (code >= 1000 && code <= 1999) return '1xxx';
  return 'other';
}

/**
 * HTTP statuses a refused upgrade or provision call is tagged with (code http_<status>) that the verdict names: auth,
 * a missing path, rate limits, a server that is down. Others still carry their tag.
 */
export const HTTP_REFUSALS = [400, 401, 403, 404, 408, 426, 429, 500, 502, 503, 504].map((s) => `http_${s}`);
/** Statuses that mean the devices' credentials were refused: every connect refused so is the tester's setup. */
export const CREDENTIAL_REFUSALS = new Set(['http_401', 'http_403']);

/** The labels closeCodeLabel gives codes outside the protocol's list. */
export const CLOSE_CODE_RANGES: Record<string, string> = {
  '4xxx': 'an application code outside the protocol',
  '3xxx': 'a registered code (IANA)',
  '1xxx': 'a protocol code outside the list',
  other: 'not a close code',
};

/** The recoverable error codes of `error` messages. */
export type ErrorCode = 'bad_json' | 'unknown_type' | 'bad_message' | 'no_session' | 'bad_audio' | 'rate_limited';

export const SESSION_END_REASONS = ['complete', 'barged_in', 'cancelled', 'timeout', 'interrupted', 'error'] as const;
export type SessionEndReason = (typeof SESSION_END_REASONS)[number];
/** The session ends that are not drops: it completed, or the device itself barged in or cancelled. */
export const KEPT_SESSION_REASONS: readonly SessionEndReason[] = ['complete', 'barged_in', 'cancelled'];
export type SessionStage = 'listening' | 'thinking' | 'speaking';

/** A session is dropped when it never ends `complete`; the device's own barge-in or cancel does not count. */
export function isDropped(reason: SessionEndReason | 'lost'): boolean {
  return !(KEPT_SESSION_REASONS as readonly string[]).includes(reason);
}

interface AudioFormat {
  encoding: 'pcm_s16le';
  sample_rate: number;
  channels: number;
}

// ---- device → server ----
interface HelloMsg {
  type: 'hello';
  device_id: string;
  protocol: number;
  profile?: string;
  audio?: AudioFormat;
  resume?: string;
}
interface PingMsg {
  type: 'ping';
  id?: number | string;
  t?: number;
}
interface PongMsg {
  type: 'pong';
  id?: number | string;
  t?: number;
}
interface HotwordMsg {
  type: 'hotword_detected';
  wake_id: string;
  t?: number;
}
interface EndOfSpeechMsg {
  type: 'end_of_speech';
  session_id: string;
}
interface PlaybackCompleteMsg {
  type: 'playback_complete';
  session_id: string;
}
interface CancelMsg {
  type: 'cancel';
  session_id: string;
}

export type DeviceMessage =
  HelloMsg | PingMsg | PongMsg | HotwordMsg | EndOfSpeechMsg | PlaybackCompleteMsg | CancelMsg;

// ---- server → device ----
export interface ConnectedMsg {
  type: 'connected';
  status: 'connected';
  client_id: string;
  connection_id: string;
  resume_token: string;
  keepalive_ms: number;
  server_time: number;
  resumed: boolean;
  session: { session_id: string; stage: SessionStage } | null;
}
interface SessionStartedMsg {
  type: 'session_started';
  session_id: string;
  wake_id: string;
}
interface TranscriptMsg {
  type: 'transcript';
  session_id: string;
  text: string;
}
interface LlmResponseMsg {
  type: 'llm_response';
  session_id: string;
  text: string;
}
interface TtsStartMsg {
  type: 'tts_stream_start';
  session_id: string;
  sample_rate: number;
  bytes: number;
}
interface TtsEndMsg {
  type: 'tts_stream_end';
  session_id: string;
  chunks: number;
  bytes: number;
}
interface SessionEndMsg {
  type: 'session_end';
  session_id: string;
  reason: SessionEndReason;
}
interface ErrorMsg {
  type: 'error';
  code: ErrorCode;
  message: string;
}

export type ServerMessage =
  | ConnectedMsg
  | PingMsg
  | PongMsg
  | SessionStartedMsg
  | TranscriptMsg
  | LlmResponseMsg
  | TtsStartMsg
  | TtsEndMsg
  | SessionEndMsg
  | ErrorMsg;

export type ParseResult = { ok: true; msg: DeviceMessage } | { ok: false; code: ErrorCode; message: string };

const DEVICE_TYPES = new Set([
  'hello',
  'ping',
  'pong',
  'hotword_detected',
  'end_of_speech',
  'playback_complete',
  'cancel',
]);

function isStr(v: unknown, max = 256): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= max;
}
function isOptNum(v: unknown): boolean {
  return v === undefined || (typeof v === 'number' && Number.isFinite(v));
}

/** Parse and validate one text frame from a device; the error says which field is wrong. */
export function parseDeviceMessage(text: string): ParseResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, code: 'bad_json', message: 'text frame is not valid JSON' };
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    return { ok: false, code: 'bad_message', message: 'message must be a JSON object' };
  }
  const m = raw as Record<string, unknown>;
  if (typeof m.type !== 'string') return { ok: false, code: 'bad_message', message: 'field "type" must be a string' };
  if (!DEVICE_TYPES.has(m.type))
    return { ok: false, code: 'unknown_type', message: `unknown message type "${m.type.slice(0, 64)}"` };
  const bad = (field: string, want: string): ParseResult => ({
    ok: false,
    code: 'bad_message',
    message: `field "${field}" must be ${want}`,
  });
  switch (m.type) {
    case 'hello': {
      if (typeof m.device_id !== 'string' || !DEVICE_ID_PATTERN.test(m.device_id))
        return bad('device_id', '1-64 characters of [A-Za-z0-9._-]');
      if (m.protocol !== PROTOCOL_VERSION) return bad('protocol', `${PROTOCOL_VERSION}`);
      if (m.profile !== undefined && !isStr(m.profile, 64)) return bad('profile', 'a string of at most 64 characters');
      if (m.resume !== undefined && !isStr(m.resume, 128)) return bad('resume', 'a string of at most 128 characters');
      if (m.audio !== undefined) {
        const a = m.audio as Record<string, unknown> | null;
        if (a === null || typeof a !== 'object' || a.encoding !== 'pcm_s16le')
          return bad('audio.encoding', '"pcm_s16le"');
        if (typeof a.sample_rate !== 'number' || a.sample_rate < 8000 || a.sample_rate > 48000)
          return bad('audio.sample_rate', 'a number in 8000-48000');
        if (a.channels !== 1) return bad('audio.channels', '1');
      }
      break;
    }
    case 'ping':
    case 'pong':
      if (m.id !== undefined && typeof m.id !== 'number' && !isStr(m.id, 64))
        return bad('id', 'a number or a short string');
      if (!isOptNum(m.t)) return bad('t', 'a number');
      break;
    case 'hotword_detected':
      if (!isStr(m.wake_id, 64)) return bad('wake_id', 'a string of 1-64 characters');
      if (!isOptNum(m.t)) return bad('t', 'a number');
      break;
    default:
      if (!isStr(m.session_id, 64)) return bad('session_id', 'a string of 1-64 characters');
  }
  return { ok: true, msg: m as unknown as DeviceMessage };
}
