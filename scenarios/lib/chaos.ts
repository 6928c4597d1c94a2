// The in-test chaos driver: one k6 VU applies a validated timeline through the Toxiproxy HTTP API (and the stack's
// control API for server restarts), logs every onset and end as an event, and leaves nothing applied behind it.
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';
import { setTimeout } from 'k6/timers';
import { encodeChaosEvent, type ChaosEvent, type PlannedEvent } from '../../core/chaos-events.ts';
import type { ChaosStep } from '../../core/timelines.ts';
import {
  actionRequest,
  apiError,
  requestUrl,
  toxiproxyApi,
  controlApi,
  type ApiRequest,
} from '../../core/toxiproxy-api.ts';

const chaosEvents = new Counter('chaos_events');
const chaosErrors = new Counter('chaos_errors');
const chaosLag = new Trend('chaos_apply_lag', true);

export interface ChaosTargets {
  /** Every Toxiproxy process (shards of one stack): each fault applies to all of them at once. */
  toxiproxyUrls: string[];
  /** The stack's control API (server restarts); empty when the stack does not own the server. */
  controlUrl: string;
}

const PARAMS = { headers: { 'Content-Type': 'application/json' }, timeout: '5s' };

/** Requests sent together, in parallel (http.batch): the same change on every shard starts at the same moment. */
function send(batch: ApiRequest[]): string[] {
  if (!batch.length) return [];
  const responses = http.batch(
    batch.map((r) => ({
      method: r.method,
      url: requestUrl(r),
      body: r.body,
      params: r.timeoutS ? { ...PARAMS, timeout: `${r.timeoutS}s` } : PARAMS,
    })),
  );
  const errors: string[] = [];
  responses.forEach((res, i) => {
    if (!(res.status >= 200 && res.status < 300))
      errors.push(apiError(batch[i]!, res.status || res.error, typeof res.body === 'string' ? res.body : ''));
  });
  return errors;
}

function apply(step: ChaosStep, t: ChaosTargets, phase: 'onset' | 'end'): { ok: boolean; detail: string } {
  const errors: string[] = [];
  for (const a of step.actions) {
    // One action, every shard (a server restart has one target: the control API, whichever shard asks).
    const targets = a.kind === 'server-restart' ? t.toxiproxyUrls.slice(0, 1) : t.toxiproxyUrls;
    const batch: ApiRequest[] = [];
    for (const toxiproxyUrl of targets) {
      const r = actionRequest(a, phase, {
        toxiproxyUrl,
        controlUrl: t.controlUrl,
        proxy: step.proxy,
        toxicName: (x) => `wakestorm-${step.index}-${step.fault}-${x.stream}`,
      });
      if ('error' in r) errors.push(r.error);
      else batch.push(r);
    }
    errors.push(...send(batch));
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
    setTimeout(
      () => {
        const t0 = Date.now();
        const r = apply(e.step, targets, e.phase);
        chaosLag.add(t0 - e.at, { fault: e.step.fault });
        chaosEvents.add(1, { fault: e.step.fault, phase: e.phase });
        if (!r.ok) chaosErrors.add(1, { fault: e.step.fault });
        const ev: ChaosEvent = {
          t: t0,
          iso: new Date(t0).toISOString(),
          index: e.step.index,
          fault: e.step.fault,
          phase: e.phase,
          planned_t: e.at,
          ok: r.ok,
        };
        if (!r.ok) ev.detail = r.detail;
        // One line per event (chaos-events.ts): the CLI collects these; handleSummary rebuilds the plan from setup data.
        console.log(encodeChaosEvent(ev));
      },
      Math.max(0, e.at - Date.now()),
    );
  }
}

/** Puts Toxiproxy back as it was: every toxic removed, every proxy enabled, the server up. Safe to call twice. */
export function resetChaos(targets: ChaosTargets, steps: ChaosStep[]): void {
  if (steps.length === 0) return;
  // A timeline of server restarts only never touched Toxiproxy (run --direct starts none).
  const network = steps.some((s) => !s.needsControl);
  const errors = network ? send(targets.toxiproxyUrls.map((u) => toxiproxyApi.reset(u))) : [];
  if (errors.length) console.error(`wakestorm chaos: could not reset Toxiproxy: ${errors.join('; ')}`);
  if (targets.controlUrl && steps.some((s) => s.needsControl)) send([controlApi.serverStart(targets.controlUrl)]);
}

/** Checks before any load that Toxiproxy answers and has the proxies the timeline needs. */
export function preflight(targets: ChaosTargets, steps: ChaosStep[]): void {
  // Only the faults that act through Toxiproxy need it (a server restart goes to the control API).
  const network = steps.filter((s) => !s.needsControl);
  for (const url of network.length ? targets.toxiproxyUrls : []) {
    const res = http.get(requestUrl(toxiproxyApi.proxies(url)), { timeout: '3s' });
    if (res.status !== 200) {
      throw new Error(
        `Toxiproxy is not running at ${url} (${res.error || res.status}): start it with 'wakestorm stack' or set TOXIPROXY_URL`,
      );
    }
    const proxies = res.json() as Record<string, unknown>;
    for (const s of network) {
      if (!(s.proxy in proxies))
        throw new Error(
          `timeline entry ${s.index} (${s.fault}) needs Toxiproxy proxy "${s.proxy}", which does not exist at ${url}`,
        );
    }
  }
  const needs = steps.find((s) => s.needsControl);
  if (needs && !targets.controlUrl) {
    throw new Error(
      `the timeline has a ${needs.fault}, which needs CONTROL_URL: run it under \`wakestorm stack\` or \`wakestorm run\``,
    );
  }
}

/** The planned events (absolute times) for events.json, from the timeline and the chaos epoch. */
export function plannedEvents(steps: ChaosStep[], epochMs: number): PlannedEvent[] {
  return steps.flatMap((s) => [
    {
      index: s.index,
      fault: s.fault,
      phase: 'onset' as const,
      t: epochMs + s.atMs,
      iso: new Date(epochMs + s.atMs).toISOString(),
      streams: s.streams,
      params: s.params,
      proxy: s.proxy,
    },
    {
      index: s.index,
      fault: s.fault,
      phase: 'end' as const,
      t: epochMs + s.atMs + s.forMs,
      iso: new Date(epochMs + s.atMs + s.forMs).toISOString(),
    },
  ]);
}
