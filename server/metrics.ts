// Prometheus metrics of one voice server instance (its own registry, so tests can run several servers in one process).
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

const LOOP_RESOLUTION_MS = 5;

export type SessionOutcome = 'complete' | 'barged_in' | 'cancelled' | 'timeout' | 'interrupted' | 'error' | 'lost';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly connections: Gauge;
  readonly sessionsActive: Gauge;
  readonly opened: Counter;
  readonly closed: Counter<'code'>;
  readonly sessions: Counter<'outcome'>;
  readonly sessionsStarted: Counter;
  /** xiaozhi OTA checks answered (POST /xiaozhi/ota/). */
  readonly otaRequests: Counter;
  readonly resumes: Counter<'result'>;
  readonly messages: Counter<'direction' | 'kind'>;
  readonly bytes: Counter<'direction' | 'kind'>;
  readonly errors: Counter<'code'>;
  readonly slowReaders: Counter;
  readonly rejected: Counter<'reason'>;
  private readonly loop: IntervalHistogram;

  // Pre-bound children for the hot paths: labels() hashes on every call.
  readonly msgInText;
  readonly msgInBinary;
  readonly msgOutText;
  readonly msgOutBinary;
  readonly bytesInText;
  readonly bytesInBinary;
  readonly bytesOutText;
  readonly bytesOutBinary;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.connections = new Gauge({ name: 'voice_connections', help: 'Open WebSocket connections', registers });
    this.sessionsActive = new Gauge({ name: 'voice_sessions_active', help: 'Voice sessions not yet ended', registers });
    this.opened = new Counter({
      name: 'voice_connections_opened_total',
      help: 'WebSocket connections accepted',
      registers,
    });
    this.closed = new Counter({
      name: 'voice_connections_closed_total',
      help: 'WebSocket connections closed, by close code',
      labelNames: ['code'],
      registers,
    });
    this.sessionsStarted = new Counter({
      name: 'voice_sessions_started_total',
      help: 'Voice sessions started',
      registers,
    });
    this.otaRequests = new Counter({
      name: 'voice_ota_requests_total',
      help: 'xiaozhi OTA checks answered',
      registers,
    });
    this.sessions = new Counter({
      name: 'voice_sessions_total',
      help: 'Voice sessions ended, by outcome',
      labelNames: ['outcome'],
      registers,
    });
    this.resumes = new Counter({
      name: 'voice_resumes_total',
      help: 'Resume attempts, hit or miss',
      labelNames: ['result'],
      registers,
    });
    this.messages = new Counter({
      name: 'voice_messages_total',
      help: 'Messages, by direction and frame kind',
      labelNames: ['direction', 'kind'],
      registers,
    });
    this.bytes = new Counter({
      name: 'voice_bytes_total',
      help: 'Payload bytes, by direction and frame kind',
      labelNames: ['direction', 'kind'],
      registers,
    });
    this.errors = new Counter({
      name: 'voice_errors_total',
      help: 'Protocol error messages sent, by code',
      labelNames: ['code'],
      registers,
    });
    this.slowReaders = new Counter({
      name: 'voice_slow_readers_cut_total',
      help: 'Sockets cut because their send buffer overflowed',
      registers,
    });
    this.rejected = new Counter({
      name: 'voice_upgrades_rejected_total',
      help: 'Upgrade requests refused, by reason',
      labelNames: ['reason'],
      registers,
    });

    this.loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
    this.loop.enable();
    const loop = this.loop;
    new Gauge({
      name: 'voice_event_loop_lag_p99_seconds',
      help: 'Event-loop delay p99 since the previous scrape',
      registers,
      // Several workers (server/cluster.ts): the worst of them, not a sum.
      aggregator: 'max',
      collect() {
        // Each sample includes the sampling interval itself: subtract it to get the lag.
        this.set(Math.max(0, loop.percentile(99) / 1e6 - LOOP_RESOLUTION_MS) / 1000);
        loop.reset();
      },
    });

    for (const o of ['complete', 'barged_in', 'cancelled', 'timeout', 'interrupted', 'error', 'lost'] as const)
      this.sessions.labels(o).inc(0);
    for (const r of ['hit', 'miss'] as const) this.resumes.labels(r).inc(0);
    this.msgInText = this.messages.labels('in', 'text');
    this.msgInBinary = this.messages.labels('in', 'binary');
    this.msgOutText = this.messages.labels('out', 'text');
    this.msgOutBinary = this.messages.labels('out', 'binary');
    this.bytesInText = this.bytes.labels('in', 'text');
    this.bytesInBinary = this.bytes.labels('in', 'binary');
    this.bytesOutText = this.bytes.labels('out', 'text');
    this.bytesOutBinary = this.bytes.labels('out', 'binary');
  }

  sessionEnded(outcome: SessionOutcome): void {
    this.sessions.labels(outcome).inc();
    this.sessionsActive.dec();
  }

  stop(): void {
    this.loop.disable();
  }
}
