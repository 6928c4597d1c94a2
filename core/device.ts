// A virtual voice device: a link (device-link.ts: connect, keepalive, liveness, backoff, resume token) and the
// conversations it carries (device-session.ts: wake, speech, reply, playback). Socket, clock, timers, randomness and
// metrics come in as arguments (device-env.ts), so the same code runs in k6 (scenarios/lib/k6-fleet.ts) and under
// node:test.
import type { Vars } from './dialect.ts';
import { DeviceContext, type DeviceEnv, type DeviceOptions } from './device-env.ts';
import { Link, type LinkState } from './device-link.ts';
import { Conversation } from './device-session.ts';
import type { Profile } from './profiles.ts';

export type DeviceState = LinkState;

export class Device {
  readonly link: Link;
  private readonly talk: Conversation;
  private readonly ctx: DeviceContext;

  constructor(opts: DeviceOptions, env: DeviceEnv) {
    this.ctx = new DeviceContext(opts, env);
    this.talk = new Conversation(this.ctx);
    this.link = new Link(this.ctx, this.talk);
    this.talk.attach(this.link);
  }

  /** The link's state: what the device is doing about being online. */
  get state(): DeviceState {
    return this.link.state;
  }

  get connected(): boolean {
    return this.link.state === 'connected';
  }

  get profile(): Profile {
    return this.ctx.profile;
  }

  /** The dialect's variables as the device holds them now (`wakestorm try` matches server messages with them). */
  get vars(): Vars {
    return this.ctx.vars;
  }

  /** Starts the device after `delayMs` (the fleet spreads connects over a ramp). */
  start(delayMs = 0): void {
    this.link.start(delayMs);
    this.talk.start(delayMs);
  }

  /** Ends the device for good: timers cleared, socket closed with 1000, nothing counted as lost. */
  stop(): void {
    if (this.link.state === 'stopped') return;
    this.talk.stop();
    this.link.stop();
  }

  /** Uplink frames sent since the last call (the fleet reports them as audio_frames once a second). */
  takeFramesSent(): number {
    return this.talk.takeFramesSent();
  }
}
