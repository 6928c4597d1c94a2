// Device profiles as plain data (the field clients listed in README "Devices and profiles", plus a recommended one), their validation, and profile mixes.
import { FORBIDDEN_KEYS } from './dialect.ts';
import { unknownField, WakestormError } from './errors.ts';
import { BACKOFF_POLICIES, type BackoffSpec } from './backoff.ts';

export interface Profile {
  name: string;
  /** 'hello': connect to /ws and identify in hello (ESP32); 'path': /ws/{id}. */
  connect: 'hello' | 'path';
  keepalive: {
    /** Answer the server's JSON pings with a JSON pong. */
    answer_server_pings: boolean;
    /** The device's own heartbeat: none, a JSON ping, or a WebSocket ping frame. */
    send: 'none' | 'json-ping' | 'ws-ping';
    interval_ms: number;
  };
  liveness: {
    /**
     * How the device notices a dead link:
     * 'close' – only the socket's close event; 'pong-timeout' – its own ping unanswered for timeout_ms;
     * 'silence' – nothing received for timeout_ms.
     */
    detect: 'close' | 'pong-timeout' | 'silence';
    timeout_ms: number;
    /** How often the firmware looks: the silence check period; with detect 'close', a polled flag that delays noticing a close. 0: at once. */
    check_ms: number;
  };
  reconnect: BackoffSpec & {
    /** 'abnormal': any close but 1000; 'always': every close, 1000 too. */
    on: 'abnormal' | 'always';
  };
  /** Reconnect with the last resume_token. */
  resume: boolean;
  /** Uplink PCM frame size in bytes (real-time pace: 32 bytes per ms). */
  frame_bytes: number;
  /** 'explicit': send end_of_speech after the utterance; 'vad': stream silence until the server's VAD ends speech. */
  end_of_speech: 'explicit' | 'vad';
  /** Audio buffered before playback starts. */
  playback_prebuffer_ms: number;
  /**
   * How the device says all this on the wire: a shipped dialect (wakestorm, xiaozhi) or a dialect .json file
   * (core/dialect.ts). The dialect fixes the audio codec (PCM frames of frame_bytes, or 60 ms Opus packets) and the
   * link's lifecycle (one persistent link, or a channel per wake). Default: wakestorm.
   */
  dialect?: string;
  /**
   * Barge-in: the user interrupts the reply this many ms after its first audio (the dialect's `abort`), and the device
   * measures how long stale reply audio keeps arriving (barge_in_stop_time) and counts it (barge_in_late_frames).
   * Absent: the device listens to every reply to its end.
   */
  barge_in_ms?: number;
  /**
   * After a reply: 'idle' (default) waits for the next wake word (a per-wake channel closes); 'listen' goes back to
   * listening on the open link (the dialect's `listen`) and streams the microphone, silence included, until the user
   * speaks again (a follow-up turn, no wake word: `follow_ups`) or the link ends: xiaozhi's auto mode.
   */
  after_reply?: 'idle' | 'listen';
  /**
   * The words the user says to wake the device, as the dialect's wake message carries them ({wake_word}: xiaozhi's
   * `listen detect` text). A server that takes them for a question answers before the user speaks (early_replies).
   * Default: DEFAULT_WAKE_WORD.
   */
  wake_word?: string;
}

/** The wake word of a profile that names none. */
export const DEFAULT_WAKE_WORD = 'hey wakestorm';

const base = {
  keepalive: { answer_server_pings: false, send: 'none', interval_ms: 0 },
  resume: false,
  frame_bytes: 640,
  end_of_speech: 'explicit',
  playback_prebuffer_ms: 200,
} as const;

/** What xiaozhi-esp32 firmware does whatever its listening mode (the profiles below say each mode). */
const xiaozhiFirmware = {
  ...base,
  connect: 'hello',
  keepalive: { answer_server_pings: false, send: 'none', interval_ms: 0 },
  liveness: { detect: 'silence', timeout_ms: 120_000, check_ms: 1000 },
  reconnect: { policy: 'fixed', base_ms: 1000, cap_ms: 1000, max_attempts: 0, on: 'always' },
  frame_bytes: 1920,
  playback_prebuffer_ms: 120,
} as const;

/** The profiles of the source documents, by name (docs/protocol.md names the behaviours they exercise). */
export const PROFILES: Record<string, Profile> = {
  'esp32-hotpin': {
    ...base,
    name: 'esp32-hotpin',
    connect: 'hello',
    keepalive: { answer_server_pings: false, send: 'none', interval_ms: 0 },
    liveness: { detect: 'close', timeout_ms: 0, check_ms: 10_000 },
    reconnect: { policy: 'fixed', first_ms: 3000, base_ms: 5000, cap_ms: 5000, max_attempts: 0, on: 'always' },
    frame_bytes: 1024,
    end_of_speech: 'vad',
  },
  'react-avatar': {
    ...base,
    name: 'react-avatar',
    connect: 'path',
    keepalive: { answer_server_pings: true, send: 'none', interval_ms: 0 },
    liveness: { detect: 'silence', timeout_ms: 60_000, check_ms: 15_000 },
    reconnect: { policy: 'exponential', base_ms: 1000, cap_ms: 30_000, max_attempts: 10, on: 'abnormal' },
    frame_bytes: 4096,
  },
  'pi-assistant': {
    ...base,
    name: 'pi-assistant',
    connect: 'path',
    keepalive: { answer_server_pings: false, send: 'ws-ping', interval_ms: 30_000 },
    liveness: { detect: 'close', timeout_ms: 0, check_ms: 0 },
    reconnect: { policy: 'exponential', base_ms: 1000, cap_ms: 60_000, max_attempts: 0, jitter_ms: 1000, on: 'always' },
    frame_bytes: 2048,
  },
  'esp32-p4-screen': {
    ...base,
    name: 'esp32-p4-screen',
    connect: 'path',
    // TCP keepalive (30 s idle, then 3 probes 5 s apart) is not settable from k6: modelled as 45 s of silence.
    keepalive: { answer_server_pings: false, send: 'none', interval_ms: 0 },
    liveness: { detect: 'silence', timeout_ms: 45_000, check_ms: 5000 },
    reconnect: { policy: 'fixed', base_ms: 10_000, cap_ms: 10_000, max_attempts: 0, on: 'always' },
    frame_bytes: 1024,
  },
  'web-heartbeat': {
    ...base,
    name: 'web-heartbeat',
    connect: 'path',
    keepalive: { answer_server_pings: false, send: 'json-ping', interval_ms: 20_000 },
    liveness: { detect: 'close', timeout_ms: 0, check_ms: 0 },
    reconnect: { policy: 'fixed', base_ms: 5000, cap_ms: 5000, max_attempts: 1, on: 'abnormal' },
  },
  // xiaozhi-esp32 firmware (main/protocols/websocket_protocol.cc, protocol.cc, application.cc): a channel opened per
  // wake word, a hello answered within 10 s, no application heartbeat, the channel given up after 120 s with nothing
  // received, auto-stop listening (the server's VAD ends speech), back to listening after each reply (application.cc:
  // tts stop in a mode other than manual sets kDeviceStateListening: the channel stays open and the microphone
  // streams until the server's no-voice timeout closes it), 60 ms Opus frames, and no resume.
  'xiaozhi-esp32': {
    ...xiaozhiFirmware,
    name: 'xiaozhi-esp32',
    dialect: 'xiaozhi',
    end_of_speech: 'vad',
    after_reply: 'listen',
    // The firmware's default wake word (its wake-word model, "ni hao xiao zhi"): what a xiaozhi server expects in
    // listen detect, not a question.
    wake_word: '你好小智',
  },
  // The same firmware with a push-to-talk button (manual listening): no wake word, so no listen detect; the button's
  // release ends the speech (listen stop), and after the reply the channel closes until the next press.
  'xiaozhi-esp32-button': {
    ...xiaozhiFirmware,
    name: 'xiaozhi-esp32-button',
    dialect: 'xiaozhi-button',
    end_of_speech: 'explicit',
  },
  recommended: {
    ...base,
    name: 'recommended',
    connect: 'path',
    keepalive: { answer_server_pings: true, send: 'json-ping', interval_ms: 15_000 },
    liveness: { detect: 'pong-timeout', timeout_ms: 5000, check_ms: 0 },
    reconnect: { policy: 'full-jitter', base_ms: 500, cap_ms: 30_000, max_attempts: 0, on: 'abnormal' },
    resume: true,
  },
};

export class ProfileError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'ProfileError';
}

/** The path of a key that would reach an object's prototype, anywhere in a parsed file; null when there is none. */
function prototypeKey(v: unknown, path = ''): string | null {
  if (v === null || typeof v !== 'object') return null;
  for (const k of Object.keys(v)) {
    if (FORBIDDEN_KEYS.has(k)) return `${path}${k}`;
    const inner = prototypeKey((v as Record<string, unknown>)[k], `${path}${k}.`);
    if (inner) return inner;
  }
  return null;
}
const isInt = (v: unknown, min: number, max: number) =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
const oneOf = (v: unknown, xs: readonly string[]) => typeof v === 'string' && xs.includes(v);

/** The fields of a profile, and of its nested objects: anything else is named as a likely typo. */
const PROFILE_FIELDS: Record<string, readonly string[]> = {
  '': [
    'name',
    'connect',
    'keepalive',
    'liveness',
    'reconnect',
    'resume',
    'frame_bytes',
    'end_of_speech',
    'playback_prebuffer_ms',
    'dialect',
    'barge_in_ms',
    'after_reply',
    'wake_word',
  ],
  keepalive: ['answer_server_pings', 'send', 'interval_ms'],
  liveness: ['detect', 'timeout_ms', 'check_ms'],
  reconnect: ['policy', 'base_ms', 'cap_ms', 'max_attempts', 'first_ms', 'jitter_ms', 'on'],
};

/** Checks every field of a profile and names every problem at once, each with its field (a typo'd key too). */
export function validateProfile(p: unknown, where = 'from file'): Profile {
  const problems: string[] = [];
  const need = (cond: boolean, _where: string, field: string, want: string) => {
    if (!cond) problems.push(`field "${field}" must be ${want}`);
  };
  const done = (label: string) => {
    // A missing object is one problem, not one per field inside it.
    const missing = problems.map((x) => /^field "([a-z_]+)" must be an object$/.exec(x)?.[1]).filter(Boolean);
    for (const m of missing)
      for (let i = problems.length - 1; i >= 0; i--) if (problems[i]!.startsWith(`field "${m}.`)) problems.splice(i, 1);
    if (problems.length)
      throw new ProfileError(
        `profile ${label}: ${problems.length === 1 ? problems[0] : `${problems.length} problems: ${problems.join('; ')}`}`,
      );
  };
  need(p !== null && typeof p === 'object' && !Array.isArray(p), where, '(root)', 'an object');
  done(where);
  const bad = prototypeKey(p);
  need(bad === null, where, bad ?? '', 'absent: __proto__, constructor and prototype are not profile fields');
  done(where);
  for (const [at, known] of Object.entries(PROFILE_FIELDS)) {
    const obj = at ? (p as Record<string, unknown>)[at] : p;
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) continue;
    for (const k of Object.keys(obj))
      if (!known.includes(k)) problems.push(`field "${at ? `${at}.` : ''}${k}" ${unknownField(k, known)}`);
  }
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a validator reads unknown JSON field by field
  const o = p as Record<string, any>;
  need(
    typeof o.name === 'string' && /^[A-Za-z0-9._-]{1,40}$/.test(o.name),
    where,
    'name',
    '1-40 characters of [A-Za-z0-9._-]',
  );
  where = `"${o.name}"`;
  need(oneOf(o.connect, ['hello', 'path']), where, 'connect', "'hello' or 'path'");
  need(o.keepalive && typeof o.keepalive === 'object', where, 'keepalive', 'an object');
  o.keepalive ??= {};
  need(typeof o.keepalive.answer_server_pings === 'boolean', where, 'keepalive.answer_server_pings', 'true or false');
  need(
    oneOf(o.keepalive.send, ['none', 'json-ping', 'ws-ping']),
    where,
    'keepalive.send',
    "'none', 'json-ping' or 'ws-ping'",
  );
  need(
    o.keepalive.send === 'none'
      ? isInt(o.keepalive.interval_ms, 0, 86_400_000)
      : isInt(o.keepalive.interval_ms, 100, 86_400_000),
    where,
    'keepalive.interval_ms',
    'an integer of at least 100 (ms) when the device sends pings',
  );
  need(o.liveness && typeof o.liveness === 'object', where, 'liveness', 'an object');
  o.liveness ??= {};
  need(
    oneOf(o.liveness.detect, ['close', 'pong-timeout', 'silence']),
    where,
    'liveness.detect',
    "'close', 'pong-timeout' or 'silence'",
  );
  need(
    o.liveness.detect === 'close'
      ? isInt(o.liveness.timeout_ms, 0, 86_400_000)
      : isInt(o.liveness.timeout_ms, 100, 86_400_000),
    where,
    'liveness.timeout_ms',
    'an integer of at least 100 (ms)',
  );
  need(isInt(o.liveness.check_ms, 0, 86_400_000), where, 'liveness.check_ms', 'an integer >= 0 (ms)');
  need(
    o.liveness.detect !== 'pong-timeout' || o.keepalive.send === 'json-ping',
    where,
    'liveness.detect',
    "'pong-timeout' only with keepalive.send 'json-ping'",
  );
  need(o.reconnect && typeof o.reconnect === 'object', where, 'reconnect', 'an object');
  const r = o.reconnect ?? {};
  need(oneOf(r.policy, BACKOFF_POLICIES), where, 'reconnect.policy', BACKOFF_POLICIES.join(', '));
  need(isInt(r.base_ms, 1, 3_600_000), where, 'reconnect.base_ms', 'an integer in 1-3600000');
  need(isInt(r.cap_ms, r.base_ms, 3_600_000), where, 'reconnect.cap_ms', 'an integer >= base_ms');
  need(isInt(r.max_attempts, 0, 1_000_000), where, 'reconnect.max_attempts', 'an integer >= 0 (0: forever)');
  need(r.first_ms === undefined || isInt(r.first_ms, 0, 3_600_000), where, 'reconnect.first_ms', 'an integer >= 0');
  need(r.jitter_ms === undefined || isInt(r.jitter_ms, 0, 3_600_000), where, 'reconnect.jitter_ms', 'an integer >= 0');
  need(oneOf(r.on, ['abnormal', 'always']), where, 'reconnect.on', "'abnormal' or 'always'");
  need(typeof o.resume === 'boolean', where, 'resume', 'true or false');
  need(isInt(o.frame_bytes, 2, 16384) && o.frame_bytes % 2 === 0, where, 'frame_bytes', 'an even integer in 2-16384');
  need(oneOf(o.end_of_speech, ['explicit', 'vad']), where, 'end_of_speech', "'explicit' or 'vad'");
  need(isInt(o.playback_prebuffer_ms, 0, 10_000), where, 'playback_prebuffer_ms', 'an integer in 0-10000');
  need(
    o.barge_in_ms === undefined || isInt(o.barge_in_ms, 0, 60_000),
    where,
    'barge_in_ms',
    'an integer in 0-60000 (ms after the reply starts)',
  );
  need(
    o.after_reply === undefined || o.after_reply === 'idle' || o.after_reply === 'listen',
    where,
    'after_reply',
    '"idle" or "listen"',
  );
  need(
    o.wake_word === undefined ||
      (typeof o.wake_word === 'string' && /^[^\p{Cc}]{1,64}$/u.test(o.wake_word) && o.wake_word.trim() !== ''),
    where,
    'wake_word',
    '1-64 characters, no control characters',
  );
  need(
    o.dialect === undefined || (typeof o.dialect === 'string' && o.dialect.length > 0 && o.dialect.length <= 300),
    where,
    'dialect',
    'a shipped dialect name or a .json path',
  );
  done(where);
  return o as Profile;
}

for (const [k, p] of Object.entries(PROFILES)) validateProfile(p, k);

export interface ProfileShare {
  profile: Profile;
  weight: number;
}

/**
 * Parses PROFILE: a name, a path to a JSON profile, or a weighted mix "esp32-hotpin:70,recommended:30".
 * `readFile` loads a JSON profile by path (k6: open() in the init context; Node: readFileSync).
 */
export function parseProfileMix(
  spec: string,
  readFile: (path: string) => string,
  own: Record<string, Profile> = {},
): ProfileShare[] {
  const parts = spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (parts.length === 0)
    throw new ProfileError('PROFILE is empty: give a name, a .json path, or a mix like esp32-hotpin:70,recommended:30');
  const shares = parts.map((part) => {
    const m = /^(.*?)(?::(\d+(?:\.\d+)?))?$/.exec(part)!;
    const ref = m[1]!;
    const weight = m[2] === undefined ? 1 : Number(m[2]);
    if (!(weight > 0)) throw new ProfileError(`PROFILE entry "${part}": the weight must be a positive number`);
    let profile: Profile;
    if (ref.endsWith('.json')) {
      let text: string;
      try {
        text = readFile(ref);
      } catch (e) {
        throw new ProfileError(
          `PROFILE entry "${part}": cannot read ${ref} (${String((e as Error).message ?? e).split('\n')[0]})`,
        );
      }
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        throw new ProfileError(`profile file ${ref}: not valid JSON`);
      }
      profile = validateProfile(json, `file ${ref}`);
    } else {
      // A scenario's own profiles (makeScenario's `profiles`) first, then the shipped ones.
      const p = own[ref] ?? PROFILES[ref];
      if (!p)
        throw new ProfileError(
          `unknown profile "${ref}": known are ${[...Object.keys(own), ...Object.keys(PROFILES)].join(', ')}, or a path to a .json profile`,
        );
      profile = p;
    }
    return { profile, weight };
  });
  return shares;
}

/** Deterministic assignment: device i of n gets the profile whose cumulative share covers (i + 0.5) / n. */
export function profileFor(index: number, total: number, shares: ProfileShare[]): Profile {
  const sum = shares.reduce((a, s) => a + s.weight, 0);
  const x = ((index + 0.5) / Math.max(1, total)) * sum;
  let acc = 0;
  for (const s of shares) {
    acc += s.weight;
    if (x < acc) return s.profile;
  }
  return shares[shares.length - 1]!.profile;
}
