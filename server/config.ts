// Configuration of the reference voice server: defaults, validation, and the flag/env table the CLI is built from.
import { WakestormError } from '../core/errors.ts';
import { readFileSync } from 'node:fs';
import { DEFAULTS, PCM_BYTES_PER_MS, VAD_THRESHOLD_RMS } from '../core/protocol.ts';
import { OPUS_SAMPLE_RATES } from '../core/opus.ts';
import { boundedInt } from '../core/run-config.ts';

export type TtsPace = 'realtime' | 'burst';
/**
 * How workers get their connections (server/cluster.ts): 'rr', the primary accepts each and hands it to the next
 * worker in turn; 'kernel', every worker accepts from the shared listening socket itself.
 */
export type Balance = 'rr' | 'kernel';

export interface ServerConfig {
  host: string;
  port: number;
  keepaliveMs: number;
  helloTimeoutMs: number;
  /** 0 means 3 × keepalive, as the protocol says. */
  idleTimeoutMs: number;
  sttMs: number;
  llmMs: number;
  ttsMs: number;
  ttsPace: TtsPace;
  resumeGraceMs: number;
  /** A session with no uplink audio for this long ends with `timeout` (protocol: 10 s). */
  noAudioTimeoutMs: number;
  maxConnections: number;
  tokens: string[];
  drainMs: number;
  /** Processes (node:cluster workers) sharing the port; the protocol holds across them (server/cluster.ts). */
  workers: number;
  balance: Balance;
  /** A socket whose unsent bytes exceed this is a slow reader and is cut. */
  maxBufferedBytes: number;
  /**
   * A socket whose peer has not read this many of the bytes sent to it is a slow reader and is cut. Reads are seen by
   * the pongs to pings sent as the bytes go out; this bounds the kernel's send queue too, which bufferedAmount cannot see.
   */
  maxUnackedBytes: number;
  /** An upgrade request whose headers are not complete after this long is closed (slowloris). */
  upgradeTimeoutMs: number;
  /** Connections not yet upgraded (or answered) above this count are refused at once. */
  maxPendingUpgrades: number;
  /** RMS (int16 units) below which a frame counts as silence for the VAD. */
  vadThreshold: number;
  /** The VAD ends speech after this much silence: the server's endpointing window, part of what the user waits. */
  vadSilenceMs: number;
  /** xiaozhi: a channel that hears no voice for this long is closed (1000), as xiaozhi-esp32-server's close_connection_no_voice_time. 0: never. */
  xiaozhiNoVoiceMs: number;
  /** xiaozhi: the downlink rate the server's hello announces (real servers: 24 kHz). Opus packets decode at any of them. */
  xiaozhiDownlinkRate: number;
  /** Text messages per second a connection may send, and the burst above that. */
  textRatePerS: number;
  textBurst: number;
  /** Uplink audio bytes per second (4x real time by default), and the burst. */
  audioRateBytesPerS: number;
  audioBurstBytes: number;
  /** Log connections and errors to stderr. */
  verbose: boolean;
}

export const defaultConfig: ServerConfig = {
  host: '127.0.0.1',
  port: 8080,
  keepaliveMs: DEFAULTS.keepalive_ms,
  helloTimeoutMs: DEFAULTS.hello_timeout_ms,
  idleTimeoutMs: 0,
  // With the 300 ms endpointing window, a healthy reference server answers in ~650 ms from the end of speech: inside
  // the 800 ms voice-to-voice line of response_p95 (docs/ci.md), with room for a loaded tester.
  sttMs: 100,
  llmMs: 150,
  ttsMs: 100,
  ttsPace: 'realtime',
  balance: 'rr',
  resumeGraceMs: DEFAULTS.resume_grace_ms,
  noAudioTimeoutMs: DEFAULTS.no_audio_timeout_ms,
  maxConnections: 50_000,
  tokens: [],
  drainMs: 5_000,
  workers: 1,
  maxBufferedBytes: 1024 * 1024,
  maxUnackedBytes: 256 * 1024,
  upgradeTimeoutMs: 5000,
  maxPendingUpgrades: 10_000,
  vadThreshold: VAD_THRESHOLD_RMS,
  vadSilenceMs: DEFAULTS.vad_silence_ms,
  xiaozhiNoVoiceMs: 120_000,
  xiaozhiDownlinkRate: 24_000,
  textRatePerS: 20,
  textBurst: 60,
  audioRateBytesPerS: 4 * 1000 * PCM_BYTES_PER_MS,
  audioBurstBytes: 128 * 1024,
  verbose: false,
};

export class ConfigError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'ConfigError';
}

/** The idle timeout in force: explicit, or 3 × keepalive. */
export function effectiveIdleTimeoutMs(c: ServerConfig): number {
  return c.idleTimeoutMs > 0 ? c.idleTimeoutMs : 3 * c.keepaliveMs;
}

/** Parse a non-negative integer flag value, or throw a ConfigError that names the flag. */
export function parseIntFlag(flag: string, value: string, min: number, max: number, oneOf?: number[]): number {
  const n = boundedInt(value, flag, { min, max }, ConfigError);
  if (oneOf && !oneOf.includes(n)) throw new ConfigError(`${flag} must be one of ${oneOf.join(', ')}, got ${n}`);
  return n;
}

/** A flag that takes one of a few words, or a ConfigError that names the flag and the words. */
function parseChoice<T extends string>(flag: string, choices: readonly T[], value: string): T {
  if ((choices as readonly string[]).includes(value)) return value as T;
  throw new ConfigError(`${flag} must be ${choices.map((c) => `'${c}'`).join(' or ')}, got '${value}'`);
}

export function parsePace(value: string): TtsPace {
  return parseChoice('--tts-pace', ['realtime', 'burst'], value);
}

export function parseBalance(value: string): Balance {
  return parseChoice('--balance', ['rr', 'kernel'], value);
}

export function parseHost(value: string): string {
  if (!/^[A-Za-z0-9.:_-]+$/.test(value))
    throw new ConfigError(`--host must be a host name or IP address, got '${value}'`);
  return value;
}

/**
 * Tokens, one per line: `token` (any device id) or `token device-id-pattern` (bound: it may only claim ids that match
 * the pattern, `*` and `?` as in a shell glob). Returns the lines as `tokens` entries, patterns kept.
 */
export function readTokensFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`--tokens-file ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const tokens = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (tokens.length === 0) throw new ConfigError(`--tokens-file ${path}: holds no token (one per line)`);
  tokens.forEach((line, i) => {
    const [token, pattern, extra] = line.split(/\s+/);
    if (extra !== undefined)
      throw new ConfigError(`--tokens-file ${path} line ${i + 1}: 'token' or 'token device-id-pattern', nothing more`);
    validateToken(token!);
    if (pattern !== undefined && !/^[A-Za-z0-9._*?-]{1,64}$/.test(pattern))
      throw new ConfigError(
        `--tokens-file ${path} line ${i + 1}: the device-id pattern may hold [A-Za-z0-9._-] and * ?`,
      );
  });
  return tokens;
}

/** Token → the device ids it may claim (null: any). From `tokens` entries of `token` or `token pattern`. */
export function tokenBindings(tokens: string[]): Map<string, RegExp | null> {
  const out = new Map<string, RegExp | null>();
  for (const line of tokens) {
    const [token, pattern] = line.trim().split(/\s+/);
    const re = pattern
      ? new RegExp(`^${pattern.replace(/[.]/g, '\\.').replace(/\*/g, '.*').replace(/\?/g, '.')}$`)
      : null;
    const prev = out.get(token!);
    // The same token on several lines may claim any of their patterns; one unbound line makes it unbound.
    if (prev === null || (out.has(token!) && re === null)) out.set(token!, null);
    else out.set(token!, prev ? new RegExp(`${prev.source}|${re!.source}`) : re);
  }
  return out;
}

export function validateToken(t: string): string {
  if (!/^[\x21-\x7e]{8,256}$/.test(t))
    throw new ConfigError('--token must be 8-256 printable characters without spaces');
  return t;
}

/**
 * One entry per numeric flag: the CLI builds its options from this table, so a flag, its env var
 * and its bounds are declared once.
 */
export const NUMERIC_FLAGS: {
  flag: string;
  key: keyof ServerConfig;
  env: string;
  min: number;
  max: number;
  help: string;
  oneOf?: number[];
}[] = [
  { flag: '--port', key: 'port', env: 'WAKESTORM_PORT', min: 0, max: 65535, help: 'TCP port (0 picks a free one)' },
  {
    flag: '--keepalive-ms',
    key: 'keepaliveMs',
    env: 'WAKESTORM_KEEPALIVE_MS',
    min: 100,
    max: 3_600_000,
    help: 'server ping cadence',
  },
  {
    flag: '--hello-timeout-ms',
    key: 'helloTimeoutMs',
    env: 'WAKESTORM_HELLO_TIMEOUT_MS',
    min: 100,
    max: 3_600_000,
    help: 'time a /ws device has to send hello',
  },
  {
    flag: '--idle-timeout-ms',
    key: 'idleTimeoutMs',
    env: 'WAKESTORM_IDLE_TIMEOUT_MS',
    min: 0,
    max: 36_000_000,
    help: 'close a silent connection after this (0: 3 x keepalive)',
  },
  {
    flag: '--stt-ms',
    key: 'sttMs',
    env: 'WAKESTORM_STT_MS',
    min: 0,
    max: 600_000,
    help: 'end of speech -> transcript',
  },
  { flag: '--llm-ms', key: 'llmMs', env: 'WAKESTORM_LLM_MS', min: 0, max: 600_000, help: 'transcript -> llm_response' },
  {
    flag: '--tts-ms',
    key: 'ttsMs',
    env: 'WAKESTORM_TTS_MS',
    min: 0,
    max: 600_000,
    help: 'llm_response -> first TTS byte',
  },
  {
    flag: '--resume-grace-ms',
    key: 'resumeGraceMs',
    env: 'WAKESTORM_RESUME_GRACE_MS',
    min: 0,
    max: 36_000_000,
    help: 'how long a lost device state is kept for resume',
  },
  {
    flag: '--max-connections',
    key: 'maxConnections',
    env: 'WAKESTORM_MAX_CONNECTIONS',
    min: 1,
    max: 10_000_000,
    help: 'above this, new devices get close 1013',
  },
  {
    flag: '--workers',
    key: 'workers',
    env: 'WAKESTORM_WORKERS',
    min: 1,
    max: 64,
    help: 'processes sharing the port (node:cluster): one live link per device and resume hold across them',
  },
  {
    flag: '--drain-ms',
    key: 'drainMs',
    env: 'WAKESTORM_DRAIN_MS',
    min: 0,
    max: 600_000,
    help: 'on SIGTERM, how long active replies may finish',
  },
  {
    flag: '--max-unacked-bytes',
    key: 'maxUnackedBytes',
    env: 'WAKESTORM_MAX_UNACKED_BYTES',
    min: 16 * 1024,
    max: 1 << 30,
    help: 'cut a socket whose peer has not read this many sent bytes',
  },
  {
    flag: '--upgrade-timeout-ms',
    key: 'upgradeTimeoutMs',
    env: 'WAKESTORM_UPGRADE_TIMEOUT_MS',
    min: 500,
    max: 600_000,
    help: 'close an upgrade whose headers are not complete by then',
  },
  {
    flag: '--max-pending-upgrades',
    key: 'maxPendingUpgrades',
    env: 'WAKESTORM_MAX_PENDING_UPGRADES',
    min: 1,
    max: 1_000_000,
    help: 'refuse connections above this many not yet upgraded',
  },
  {
    flag: '--max-buffered-bytes',
    key: 'maxBufferedBytes',
    env: 'WAKESTORM_MAX_BUFFERED_BYTES',
    min: 4096,
    max: 1 << 30,
    help: 'cut a socket whose unsent bytes exceed this',
  },
  {
    flag: '--vad-threshold',
    key: 'vadThreshold',
    env: 'WAKESTORM_VAD_THRESHOLD',
    min: 0,
    max: 32767,
    help: 'RMS below which uplink audio is silence',
  },
  {
    flag: '--vad-silence-ms',
    key: 'vadSilenceMs',
    env: 'WAKESTORM_VAD_SILENCE_MS',
    min: 20,
    max: 15_000,
    help: 'silence that ends speech (the endpointing window)',
  },
  {
    flag: '--xiaozhi-downlink-rate',
    key: 'xiaozhiDownlinkRate',
    env: 'WAKESTORM_XIAOZHI_DOWNLINK_RATE',
    min: 8000,
    max: 48_000,
    oneOf: [...OPUS_SAMPLE_RATES],
    help: "sample rate a xiaozhi hello announces for the reply's Opus (an Opus decoding rate)",
  },
  {
    flag: '--xiaozhi-no-voice-ms',
    key: 'xiaozhiNoVoiceMs',
    env: 'WAKESTORM_XIAOZHI_NO_VOICE_MS',
    min: 0,
    max: 3_600_000,
    help: 'close a xiaozhi channel that hears no voice this long (0: never)',
  },
];
