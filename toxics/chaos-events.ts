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

/** The event in one line of k6's output (k6 logs console.log as msg="…", Go-quoted: unquoted here), or null. */
export function decodeChaosEvent(line: string): ChaosEvent | null {
  let text = line;
  const quoted = /msg="((?:[^"\\]|\\.)*)"/.exec(line);
  if (quoted) {
    try {
      text = JSON.parse(`"${quoted[1]}"`) as string;
    } catch {
      return null;
    }
  }
  const at = text.indexOf(PREFIX);
  if (at < 0) return null;
  try {
    const e = JSON.parse(text.slice(at + PREFIX.length)) as ChaosEvent;
    return typeof e.fault === 'string' && (e.phase === 'onset' || e.phase === 'end') && typeof e.ok === 'boolean' ? e : null;
  } catch {
    return null;
  }
}
