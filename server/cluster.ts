// The reference server past one process (`wakestorm server --workers N`): node:cluster workers share the port, and the
// primary keeps the protocol true across them. `--balance` says who accepts:
// - 'rr' (default): the primary accepts every connection and hands it to the next worker in turn: an even spread. In a
//   reconnect storm the primary accepts faster than the workers upgrade, so connections wait inside a busy worker
//   past the devices' connect timeout, and it then upgrades links their devices have abandoned (a storm of 50,000 on
//   2 cores did not come back within 90 s: bench/LIMITS.md).
// - 'kernel': every worker accepts from the shared listening socket. A busy worker accepts less, the kernel's backlog
//   is the queue and pushes back on the devices (the same storm was back in 29-49 s), but the spread is uneven (at
//   50,000 over 3 workers: 14,751 / 16,721 / 18,607), so leave each worker room under its open-file limit.
// - One live link per device id: the primary knows which worker holds each device. A worker that gets a device's new
//   link claims it; the worker that held it replaces its live link (4409) and hands over the device's state.
// - Resume from any worker: the handed-over state is the resume token and the session (server/session.ts
//   SessionSnapshot), so a device that lost its link resumes wherever its next link lands.
// - /health and /metrics answer for the whole server: the worker asked gathers every worker's numbers through the
//   primary (metrics merged by prom-client's AggregatorRegistry: counters and gauges summed, loop lag the worst).
// - SIGTERM drains every worker (1012 after in-flight replies), a second signal closes every socket now.
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Balance } from './config.ts';
import type { DeviceSnapshot } from './devices.ts';

/** Messages between the primary and its workers. */
type ToPrimary =
  | { t: 'claim'; id: number; device: string }
  | { t: 'expired'; device: string }
  | { t: 'released'; id: number; snapshot: DeviceSnapshot | null }
  | { t: 'gather'; id: number; what: Gathered }
  | { t: 'reported'; id: number; data: unknown }
  | { t: 'count'; n: number }
  | { t: 'listening'; url: string };
type ToWorker =
  | { t: 'claimed'; id: number; snapshot: DeviceSnapshot | null }
  | { t: 'release'; id: number; device: string }
  | { t: 'report'; id: number; what: Gathered }
  | { t: 'gathered'; id: number; data: unknown }
  | { t: 'others'; n: number }
  | { t: 'drain' }
  | { t: 'force' };

type Gathered = 'health' | 'metrics';

/** What one worker says of itself for /health. */
interface WorkerHealth {
  connections: number;
  sessions: number;
  draining: boolean;
}

/** The server's side of one worker: what server.ts asks the cluster, and what the cluster asks of it. */
export interface ClusterLink {
  readonly index: number;
  /** This worker takes the device (its new link is here): the state the previous worker held, if any. */
  claim(device: string): Promise<DeviceSnapshot | null>;
  /** The device's state expired here. */
  expired(device: string): void;
  /** Every worker's health, or every worker's metrics merged, for the HTTP API. */
  health(): Promise<WorkerHealth>;
  metrics(): Promise<string>;
  /** Open connections on the other workers, as they last said (at most COUNT_EVERY_MS old). */
  others(): number;
}

/** What a worker does when the primary asks. */
export interface WorkerHandlers {
  release(device: string): DeviceSnapshot | null;
  health(): WorkerHealth;
  /** Open connections here (said to the primary every COUNT_EVERY_MS; health() also counts sessions). */
  connections(): number;
  metrics(): Promise<MetricObjectWithValues<MetricValue<string>>[]>;
  drain(): Promise<void>;
  forceClose(): Promise<void>;
}

/**
 * The worker's end of the cluster (in a process cluster.fork started). `handlers` is null until this worker's server
 * is up: the primary may ask it before (another worker gathering /health while this one starts, in a restart's
 * storm), and then it holds no device and counts nothing.
 */
export function workerLink(handlers: () => WorkerHandlers | null): ClusterLink {
  const index = Number(process.env.WAKESTORM_WORKER ?? 0);
  let next = 0;
  const waiting = new Map<number, (data: unknown) => void>();
  let others = 0;
  // Every worker says its connection count, the primary tells each the others' sum: --max-connections is the whole
  // server's, however unevenly the connections spread (--balance kernel).
  setInterval(() => {
    const h = handlers();
    if (h && process.connected) process.send!({ t: 'count', n: h.connections() } satisfies ToPrimary);
  }, COUNT_EVERY_MS).unref();
  const ask = <T>(msg: { t: 'claim'; device: string } | { t: 'gather'; what: Gathered }): Promise<T> =>
    new Promise((res) => {
      const id = next++;
      waiting.set(id, res as (d: unknown) => void);
      process.send!({ ...msg, id } satisfies ToPrimary);
    });
  process.on('message', (m: ToWorker) => {
    const h = handlers();
    switch (m.t) {
      case 'claimed':
        waiting.get(m.id)?.(m.snapshot);
        waiting.delete(m.id);
        break;
      case 'gathered':
        waiting.get(m.id)?.(m.data);
        waiting.delete(m.id);
        break;
      case 'others':
        others = m.n;
        break;
      case 'release':
        process.send!({ t: 'released', id: m.id, snapshot: h?.release(m.device) ?? null } satisfies ToPrimary);
        break;
      case 'report': {
        const none = m.what === 'health' ? { connections: 0, sessions: 0, draining: false } : [];
        void (!h ? Promise.resolve(none) : m.what === 'health' ? Promise.resolve(h.health()) : h.metrics()).then(
          (data) => process.send!({ t: 'reported', id: m.id, data } satisfies ToPrimary),
        );
        break;
      }
      case 'drain':
        void (h?.drain() ?? Promise.resolve()).then(() => process.exit(0));
        break;
      case 'force':
        void (h?.forceClose() ?? Promise.resolve()).then(() => process.exit(0));
        break;
    }
  });
  return {
    index,
    claim: (device) => ask<DeviceSnapshot | null>({ t: 'claim', device }),
    expired: (device) => process.send!({ t: 'expired', device } satisfies ToPrimary),
    health: () => ask<WorkerHealth>({ t: 'gather', what: 'health' }),
    metrics: () => ask<string>({ t: 'gather', what: 'metrics' }),
    others: () => others,
  };
}

/** Tells the primary this worker listens (the primary prints the server's URL once every worker does). */
export function workerListening(url: string): void {
  process.send!({ t: 'listening', url } satisfies ToPrimary);
}

/**
 * The primary: forks `n` workers (each runs this same command as a worker), keeps which worker holds each device,
 * relays claims, hand-overs and gathers, and stops them all on a signal. Resolves with the URL once all listen.
 */
export function runPrimary(n: number, balance: Balance, log: (line: string) => void): Promise<string> {
  // Read at the first fork: the policy of every worker this primary starts.
  cluster.schedulingPolicy = balance === 'kernel' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  const owner = new Map<string, Worker>();
  const workers: Worker[] = [];
  const counts = new Map<Worker, number>();
  let next = 0;
  const pending = new Map<number, (data: unknown) => void>();
  // A worker that is gone, or does not answer within WORKER_ANSWER_MS (stopped, or its loop stuck), answers null:
  // a gather counts the workers that answered, a claim starts the device afresh. Nothing waits on it for ever.
  const request = (w: Worker, msg: { t: 'release'; device: string } | { t: 'report'; what: Gathered }) =>
    new Promise<unknown>((res) => {
      const id = next++;
      if (!w.isConnected()) return res(null);
      const timer = setTimeout(() => {
        pending.delete(id);
        res(null);
      }, WORKER_ANSWER_MS);
      pending.set(id, (data) => {
        clearTimeout(timer);
        res(data);
      });
      w.send({ ...msg, id } satisfies ToWorker);
    });
  let stopping = false;
  const listening = new Set<Worker>();
  return new Promise((resolve) => {
    for (let i = 0; i < n; i++) {
      const w = cluster.fork({ WAKESTORM_WORKER: String(i) });
      workers.push(w);
      w.on('message', (m: ToPrimary) => {
        switch (m.t) {
          case 'claim': {
            const prev = owner.get(m.device);
            owner.set(m.device, w);
            if (!prev || prev === w) return void w.send({ t: 'claimed', id: m.id, snapshot: null } satisfies ToWorker);
            void request(prev, { t: 'release', device: m.device }).then((snapshot) =>
              w.send({ t: 'claimed', id: m.id, snapshot: snapshot as DeviceSnapshot | null } satisfies ToWorker),
            );
            return;
          }
          case 'expired':
            if (owner.get(m.device) === w) owner.delete(m.device);
            return;
          case 'released':
          case 'reported':
            pending.get(m.id)?.(m.t === 'released' ? m.snapshot : m.data);
            pending.delete(m.id);
            return;
          case 'gather':
            void Promise.all(workers.map((x) => request(x, { t: 'report', what: m.what }))).then(async (all) => {
              const data =
                m.what === 'health'
                  ? mergeHealth(all as (WorkerHealth | null)[], n)
                  : await AggregatorRegistry.aggregate(
                      all.filter((x): x is MetricObjectWithValues<MetricValue<string>>[] => Array.isArray(x)),
                    ).metrics();
              w.send({ t: 'gathered', id: m.id, data } satisfies ToWorker);
            });
            return;
          case 'count': {
            // The answer goes to the worker that reported: each hears the others' sum at its own report.
            counts.set(w, m.n);
            let others = 0;
            for (const [x, n] of counts) if (x !== w) others += n;
            if (w.isConnected()) w.send({ t: 'others', n: others } satisfies ToWorker);
            return;
          }
          case 'listening':
            listening.add(w);
            if (listening.size === n) resolve(m.url);
            return;
        }
      });
      w.on('exit', (code, signal) => {
        for (const [d, o] of owner) if (o === w) owner.delete(d);
        counts.delete(w);
        if (stopping) {
          if (workers.every((x) => x.isDead())) process.exit(process.exitCode ?? 0);
          return;
        }
        // A worker that dies takes its devices with it: the server failed, and says so by stopping whole.
        log(`wakestorm server: worker ${i} exited (${signal ?? `code ${code}`}); stopping every worker`);
        stopping = true;
        for (const x of workers) if (!x.isDead()) x.process.kill('SIGKILL');
        process.exitCode = 1;
        if (workers.every((x) => x.isDead())) process.exit(1);
      });
    }
    const onSignal = (sig: NodeJS.Signals) => {
      const t: ToWorker = stopping ? { t: 'force' } : { t: 'drain' };
      log(
        stopping
          ? `wakestorm server: ${sig} again, closing every connection now (1001)`
          : `wakestorm server: ${sig}, draining ${n} workers`,
      );
      stopping = true;
      for (const w of workers) if (w.isConnected()) w.send(t);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

/** How often each worker tells the primary its connection count (the others' counts a worker sees are this old). */
const COUNT_EVERY_MS = 250;

/** How long the primary waits for a worker's answer (a gather, a hand-over) before it counts the worker silent. */
const WORKER_ANSWER_MS = 2000;

/** /health of the whole server: `workers` answered, `workers_silent` of the `n` did not (dead, stopped or stuck). */
function mergeHealth(
  all: (WorkerHealth | null)[],
  n: number,
): WorkerHealth & { workers: number; workers_silent: number } {
  const live = all.filter((h): h is WorkerHealth => !!h);
  return {
    connections: live.reduce((a, h) => a + h.connections, 0),
    sessions: live.reduce((a, h) => a + h.sessions, 0),
    draining: live.some((h) => h.draining),
    workers: live.length,
    workers_silent: n - live.length,
  };
}
