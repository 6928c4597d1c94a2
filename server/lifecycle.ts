// The server's life after it listens, as named states: serving → draining (a graceful stop: devices with nothing in
// flight get 1012 now, the others when their reply ends or the drain deadline passes) → closing (every socket 1001,
// then the port freed) → closed. A close or a second signal skips ahead; every way ends in one teardown.
import { CLOSE } from '../core/protocol.ts';

export type LifecycleState = 'serving' | 'draining' | 'closing' | 'closed';

/** A socket as the lifecycle sees it (server/connection.ts). */
export interface Closable {
  readonly inFlight: boolean;
  close(code: number, reason: string): void;
  terminate(): void;
}

export class ServerLifecycle {
  state: LifecycleState = 'serving';
  private done: Promise<void> | null = null;
  private wakeDrain: (() => void) | null = null;

  constructor(
    private readonly sockets: ReadonlySet<Closable>,
    private readonly drainMs: number,
    /** Frees everything but the sockets (device states, the WebSocket server, the port, metrics). */
    private readonly release: () => Promise<void>,
  ) {}

  /** New devices are welcome (not while draining or closing). */
  get accepting(): boolean {
    return this.state === 'serving';
  }

  /** Something a drain waits for changed: a socket closed, or a conversation ended. */
  changed(): void {
    this.wakeDrain?.();
  }

  /** Stop accepting, close each device with 1012 once its reply is done (at most drainMs), then stop. */
  drain(): Promise<void> {
    if (this.done) return this.done;
    this.state = 'draining';
    this.done = (async () => {
      const deadline = Date.now() + this.drainMs;
      const sweep = (): void => {
        for (const c of this.sockets)
          if (!c.inFlight || Date.now() >= deadline) c.close(CLOSE.SERVICE_RESTART, 'service restart');
      };
      sweep();
      while (this.sockets.size > 0 && Date.now() < deadline && this.state === 'draining') {
        await new Promise<void>((r) => {
          this.wakeDrain = r;
          setTimeout(r, 100);
        });
        this.wakeDrain = null;
        sweep();
      }
      await this.shutdown(CLOSE.SERVICE_RESTART, 'service restart');
    })();
    return this.done;
  }

  /** Stop at once: every socket 1001, the port freed. */
  close(): Promise<void> {
    if (this.done) return this.done;
    this.done = this.shutdown(CLOSE.GOING_AWAY, 'going away');
    return this.done;
  }

  /** A second signal during a drain: every socket 1001 now, without waiting for the drain. */
  forceClose(): Promise<void> {
    const now = this.shutdown(CLOSE.GOING_AWAY, 'going away');
    this.done ??= now;
    return now;
  }

  private async shutdown(code: number, reason: string): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closing';
    for (const c of this.sockets) c.close(code, reason);
    // Sockets that ignore the close frame are terminated by the connection after 2 s.
    const deadline = Date.now() + 3000;
    while (this.sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of this.sockets) c.terminate();
    if (this.state === 'closing') {
      this.state = 'closed';
      await this.release();
    }
  }
}
