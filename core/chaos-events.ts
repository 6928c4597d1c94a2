// The one codec of applied chaos events: the k6 chaos VU writes each as a log line, the CLI reads them back, and
// events.json holds them beside the plan in one shape whoever wrote it. Runtime-free.

export interface ChaosEvent {
  /** When it was applied (ms since the epoch). */
  t: number;
  iso: string;
  /** The timeline entry. */
  index: number;
  fault: string;
  phase: 'onset' | 'end';
  /** When it was planned. */
  planned_t: number;
  ok: boolean;
  /** Toxiproxy's or the control API's own words when it failed. */
  detail?: string;
}

export interface PlannedEvent {
  index: number;
  fault: string;
  phase: 'onset' | 'end';
  t: number;
  iso: string;
  streams?: string[];
  params?: Record<string, number>;
  proxy?: string;
}

/** events.json: the plan, and what was applied (null when no CLI watched the run: plain `k6 run`). */
export interface EventsFile {
  planned: PlannedEvent[];
  applied: ChaosEvent[] | null;
}

const PREFIX = 'CHAOS_EVENT ';

export function encodeChaosEvent(e: ChaosEvent): string {
  return `${PREFIX}${JSON.stringify(e)}`;
}

/**
 * The message of one line of k6's log: k6 writes `msg="…"` Go-quoted (logfmt) when its output is not a terminal;
 * unquoted here. A line without one is returned as it is; null when the quoting is broken.
 */
export function k6LogMessage(line: string): string | null {
  const quoted = /msg="((?:[^"\\]|\\.)*)"/.exec(line);
  if (!quoted) return line;
  try {
    return JSON.parse(`"${quoted[1]}"`) as string;
  } catch {
    return null;
  }
}

/** The event in one line of k6's output, or null. */
export function decodeChaosEvent(line: string): ChaosEvent | null {
  const text = k6LogMessage(line);
  const at = text === null ? -1 : text.indexOf(PREFIX);
  if (at < 0) return null;
  try {
    const e = JSON.parse(text!.slice(at + PREFIX.length)) as ChaosEvent;
    return typeof e.fault === 'string' && (e.phase === 'onset' || e.phase === 'end') && typeof e.ok === 'boolean'
      ? e
      : null;
  } catch {
    return null;
  }
}

/**
 * What a run's applied events say against its plan, as INVALID reasons: a fault that could not be applied, or planned
 * onsets and ends the chaos driver never reached (it stopped, or never ran). `who` names an instance's share.
 */
export function unappliedFaults(planned: PlannedEvent[], applied: ChaosEvent[], who = ''): string[] {
  const out = applied
    .filter((e) => !e.ok)
    .map((e) => `${who}fault ${e.fault} ${e.phase} could not be applied: ${e.detail ?? 'no detail'}`);
  if (applied.length < planned.length)
    out.push(
      `${who}${planned.length - applied.length} of ${planned.length} planned fault onsets and ends were never applied (the chaos driver stopped)`,
    );
  return out;
}

/** The applied events in a k6 log's text. */
export function chaosEventsIn(logText: string): ChaosEvent[] {
  return logText
    .split('\n')
    .map(decodeChaosEvent)
    .filter((e): e is ChaosEvent => !!e);
}
