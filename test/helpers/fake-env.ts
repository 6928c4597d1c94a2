// A fake clock and scripted sockets for unit tests of the device state machine: time moves only when the test says.
import type { DeviceEnv, SocketLike } from '../../core/device-env.ts';
import { deviceRandom } from '../../core/rng.ts';
import { MetricsRecorder, nodeAudio } from '../../scripts/node-devices.ts';

export class FakeClock {
  now = 1_000_000;
  private seq = 0;
  private timers = new Map<number, { at: number; fn: () => void; order: number }>();
  setTimeout = (fn: () => void, ms: number): number => {
    const id = ++this.seq;
    this.timers.set(id, { at: this.now + Math.max(0, ms), fn, order: id });
    return id;
  };
  clearTimeout = (h: unknown): void => {
    this.timers.delete(h as number);
  };
  /** Runs every timer due within `ms`, in time order, moving the clock as it goes. */
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void; order: number }] | null = null;
      for (const e of this.timers)
        if (e[1].at <= end && (!next || e[1].at < next[1].at || (e[1].at === next[1].at && e[1].order < next[1].order)))
          next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
  }
  pending(): number {
    return this.timers.size;
  }
}

export class FakeSocket implements SocketLike {
  readyState = 0;
  binaryType = 'blob';
  onopen: SocketLike['onopen'] = null;
  onmessage: SocketLike['onmessage'] = null;
  onclose: SocketLike['onclose'] = null;
  onerror: SocketLike['onerror'] = null;
  onpong: SocketLike['onpong'] = null;
  /** The subprotocol the fake 101 names. */
  protocol = '';
  sent: (string | ArrayBuffer | ArrayBufferView)[] = [];
  pings = 0;
  closedByDevice: number | undefined | null = null;
  constructor(
    readonly url: string,
    readonly headers: Record<string, string>,
  ) {}
  send(d: string | ArrayBuffer | ArrayBufferView) {
    this.sent.push(d);
  }
  ping() {
    this.pings++;
  }
  close(code?: number) {
    this.closedByDevice = code;
    this.readyState = 2;
  }
  /** Sent JSON messages, parsed. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read arbitrary fields of what the device sent
  json(): Record<string, any>[] {
    return this.sent
      .filter((s): s is string => typeof s === 'string')
      .map((s) => JSON.parse(s) as Record<string, never>);
  }
  binaryCount(): number {
    return this.sent.filter((s) => typeof s !== 'string').length;
  }
  // server side
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  msg(m: object) {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
  bin(bytes: number) {
    this.onmessage?.({ data: new ArrayBuffer(bytes) });
  }
  /** The server answers a ping. */
  pong() {
    this.onpong?.();
  }
  serverClose(code?: number) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
  connected(extra: object = {}) {
    this.msg({
      type: 'connected',
      status: 'connected',
      client_id: 'x',
      connection_id: 'c-1',
      resume_token: 'tok-1',
      keepalive_ms: 10000,
      server_time: 0,
      resumed: false,
      session: null,
      ...extra,
    });
  }
}

export function fakeEnv(id = 'dev-0') {
  const clock = new FakeClock();
  const sockets: FakeSocket[] = [];
  const names: string[] = [];
  const warnings: string[] = [];
  const metrics = new MetricsRecorder();
  let died: number | null = null;
  const env: DeviceEnv = {
    openSocket: (url, headers, name) => {
      const s = new FakeSocket(url, headers);
      sockets.push(s);
      names.push(name);
      return s;
    },
    now: () => clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: deviceRandom('test', id),
    metrics,
    audio: nodeAudio(),
    linkDiedAt: () => died,
    warn: (line) => warnings.push(line),
  };
  return {
    env,
    clock,
    sockets,
    names,
    warnings,
    metrics,
    last: () => sockets[sockets.length - 1]!,
    setDied: (t: number | null) => (died = t),
  };
}
