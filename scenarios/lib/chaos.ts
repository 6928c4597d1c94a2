// The in-test chaos driver: one k6 VU applies a validated timeline through the Toxiproxy HTTP API (and the stack's
// control API for server restarts), logs every onset and end as an event, and leaves nothing applied behind it.
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';
import { setTimeout } from 'k6/timers';
import { encodeChaosEvent, type ChaosEvent, type PlannedEvent } from '../../core/chaos-events.ts';
import type { FaultAction } from '../../core/faults.ts';
import type { ChaosStep } from '../../core/timelines.ts';

const chaosEvents = new Counter('chaos_events');
const chaosErrors = new Counter('chaos_errors');
const chaosLag = new Trend('chaos_apply_lag', true);

export interface ChaosTargets {
  /** Every Toxiproxy process (shards of one stack): each fault applies to all of them at once. */
  toxiproxyUrls: string[];
  /** The stack's control API (server restarts); empty when the stack does not own the server. */
  controlUrl: string;
}

const JSON_HEADERS = { headers: { 'Content-Type': 'application/json' }, timeout: '5s' };

function toxicName(step: ChaosStep, a: Extract<FaultAction, { kind: 'toxic' }>): string {
  return `wakestorm-${step.index}-${step.fault}-${a.stream}`;
}

function call(method: 'POST' | 'DELETE' | 'PATCH', url: string, body: unknown): { ok: boolean; detail: string } {
  const res = http.request(method, url, body === null ? null : JSON.stringify(body), JSON_HEADERS);
  const ok = res.status >= 200 && res.status < 300;
  return { ok, detail: ok ? '' : `${method} ${url} -> ${res.status || res.error}: ${String(res.body ?? '').slice(0, 200)}` };
}

/** The same request to every shard, in parallel (http.batch), so a fault starts on all of them at the same moment. */
function callAll(method: 'POST' | 'DELETE', urls: string[], body: unknown): { ok: boolean; detail: string } {
  const payload = body === null ? null : JSON.stringify(body);
  const responses = http.batch(urls.map((url) => ({ method, url, body: payload, params: JSON_HEADERS })));
  const errors: string[] = [];
  responses.forEach((res, i) => {
    if (!(res.status >= 200 && res.status < 300)) errors.push(`${method} ${urls[i]} -> ${res.status || res.error}: ${String(res.body ?? '').slice(0, 200)}`);
  });
  return { ok: errors.length === 0, detail: errors.join('; ') };
}

function apply(step: ChaosStep, t: ChaosTargets, phase: 'onset' | 'end'): { ok: boolean; detail: string } {
  const errors: string[] = [];
  for (const a of step.actions) {
    let r: { ok: boolean; detail: string };
    const proxyUrls = t.toxiproxyUrls.map((u) => `${u}/proxies/${step.proxy}`);
    if (a.kind === 'toxic') {
      r =
        phase === 'onset'
          ? callAll('POST', proxyUrls.map((u) => `${u}/toxics`), { name: toxicName(step, a), type: a.type, stream: a.stream, toxicity: a.toxicity, attributes: a.attributes })
          : callAll('DELETE', proxyUrls.map((u) => `${u}/toxics/${toxicName(step, a)}`), null);
    } else if (a.kind === 'disable-proxy') {
      r = callAll('POST', proxyUrls, { enabled: phase === 'end' });
    } else {
      if (!t.controlUrl) {
        r = { ok: false, detail: 'server-restart needs CONTROL_URL (the stack owns the server): run under `wakestorm stack` or `wakestorm run`' };
      } else {
        r = call('POST', `${t.controlUrl}/server/${phase === 'onset' ? 'stop' : 'start'}`, {});
      }
    }
    if (!r.ok) errors.push(r.detail);
  }
  return { ok: errors.length === 0, detail: errors.join('; ') };
}

/** Runs the whole timeline from `epochMs`; each step's onset and end is a timed event. Returns when the last one ends. */
export function runChaos(steps: ChaosStep[], epochMs: number, targets: ChaosTargets): void {
  const edges: { at: number; step: ChaosStep; phase: 'onset' | 'end' }[] = [];
  for (const s of steps) {
    edges.push({ at: epochMs + s.atMs, step: s, phase: 'onset' });
    edges.push({ at: epochMs + s.atMs + s.forMs, step: s, phase: 'end' });
  }
  edges.sort((a, b) => a.at - b.at || (a.phase === 'end' ? -1 : 1));
  for (const e of edges) {
    setTimeout(() => {
      const t0 = Date.now();
      const r = apply(e.step, targets, e.phase);
      chaosLag.add(t0 - e.at, { fault: e.step.fault });
      chaosEvents.add(1, { fault: e.step.fault, phase: e.phase });
      if (!r.ok) chaosErrors.add(1, { fault: e.step.fault });
      const ev: ChaosEvent = { t: t0, iso: new Date(t0).toISOString(), index: e.step.index, fault: e.step.fault, phase: e.phase, planned_t: e.at, ok: r.ok };
      if (!r.ok) ev.detail = r.detail;
      // One line per event (chaos-events.ts): the CLI collects these; handleSummary rebuilds the plan from setup data.
      console.log(encodeChaosEvent(ev));
    }, Math.max(0, e.at - Date.now()));
  }
}

/** Puts Toxiproxy back as it was: every toxic removed, every proxy enabled, the server up. Safe to call twice. */
export function resetChaos(targets: ChaosTargets, steps: ChaosStep[]): void {
  if (steps.length === 0) return;
  const r = callAll('POST', targets.toxiproxyUrls.map((u) => `${u}/reset`), null);
  if (!r.ok) console.error(`wakestorm chaos: could not reset Toxiproxy: ${r.detail}`);
  if (targets.controlUrl && steps.some((s) => s.fault === 'server-restart')) call('POST', `${targets.controlUrl}/server/start`, {});
}

/** Checks before any load that Toxiproxy answers and has the proxies the timeline needs. */
export function preflight(targets: ChaosTargets, steps: ChaosStep[]): void {
  if (steps.length === 0) return;
  for (const url of targets.toxiproxyUrls) {
    const res = http.get(`${url}/proxies`, { timeout: '3s' });
    if (res.status !== 200) {
      throw new Error(`Toxiproxy is not running at ${url} (${res.error || res.status}): start it with 'wakestorm stack' or set TOXIPROXY_URL`);
    }
    const proxies = res.json() as Record<string, unknown>;
    for (const s of steps) {
      if (!(s.proxy in proxies)) throw new Error(`timeline entry ${s.index} (${s.fault}) needs Toxiproxy proxy "${s.proxy}", which does not exist at ${url}`);
    }
  }
  if (steps.some((s) => s.fault === 'server-restart') && !targets.controlUrl) {
    throw new Error('the timeline has a server-restart, which needs CONTROL_URL: run it under `wakestorm stack` or `wakestorm run`');
  }
}

/** The planned events (absolute times) for events.json, from the timeline and the chaos epoch. */
export function plannedEvents(steps: ChaosStep[], epochMs: number): PlannedEvent[] {
  return steps.flatMap((s) => [
    { index: s.index, fault: s.fault, phase: 'onset' as const, t: epochMs + s.atMs, iso: new Date(epochMs + s.atMs).toISOString(), streams: s.streams, params: s.params, proxy: s.proxy },
    { index: s.index, fault: s.fault, phase: 'end' as const, t: epochMs + s.atMs + s.forMs, iso: new Date(epochMs + s.atMs + s.forMs).toISOString() },
  ]);
}
