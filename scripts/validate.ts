// `wakestorm validate <file>…`: checks a dialect, profile, timeline or SLO file without a run, with the same code a run
// uses, and says what it is or every problem found. `wakestorm init dialect|profile` writes a template to start from.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadDialect, SHIPPED_DIALECTS, validateDialect } from '../core/dialect.ts';
import { WakestormError } from '../core/errors.ts';
import { PROFILES, validateProfile } from '../core/profiles.ts';
import { checkProfileAgainstDialect } from '../core/run-config.ts';
import { resolveSlos } from '../core/slo.ts';
import { validateTimeline } from '../core/timelines.ts';
import { ROOT } from './run.ts';

export type FileKind = 'dialect' | 'profile' | 'timeline' | 'slo';
const FILE_KINDS: FileKind[] = ['dialect', 'profile', 'timeline', 'slo'];

class ValidateError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'ValidateError';
}

/** What a parsed file looks like it is: a dialect has recv, a profile keepalive, a list holds faults or SLOs. */
function kindOf(json: unknown): FileKind | null {
  if (Array.isArray(json)) {
    const first = json[0] as Record<string, unknown> | undefined;
    if (first && typeof first === 'object' && 'metric' in first) return 'slo';
    if (first && typeof first === 'object' && 'fault' in first) return 'timeline';
    return null;
  }
  if (json && typeof json === 'object') {
    if ('recv' in json || 'lifecycle' in json) return 'dialect';
    if ('keepalive' in json || 'reconnect' in json) return 'profile';
  }
  return null;
}

const readShipped = (p: string) => readFileSync(join(ROOT, p), 'utf8');

/** Checks one file; returns one line that says what it is. Throws a one-line error with every problem found. */
export function validateFile(path: string, as?: FileKind): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new ValidateError(`${path}: cannot read it`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ValidateError(`${path}: not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  const kind = as ?? kindOf(json);
  if (!kind)
    throw new ValidateError(
      `${path}: not a dialect, profile, timeline or SLO list by its shape: say which with --as ${FILE_KINDS.join('|')}`,
    );
  switch (kind) {
    case 'dialect': {
      const d = validateDialect(json, path);
      const steps = Object.values(d.send).filter((t) => t && (!Array.isArray(t) || t.length)).length;
      return `${path}: dialect ${d.name} is valid (${d.lifecycle}, ${steps} send steps, audio ${d.audio.up.codec} up / ${d.audio.down.codec} down, resume ${d.resume ? 'on' : 'off'})`;
    }
    case 'profile': {
      const p = validateProfile(json, `file ${path}`);
      // The profile's own dialect must carry every step the profile takes.
      const spec = p.dialect ?? 'wakestorm';
      const d = loadDialect(spec, (f) => readFileSync(f, 'utf8'), readShipped);
      checkProfileAgainstDialect(p, d);
      return `${path}: profile ${p.name} is valid and dialect ${d.name} has every step it takes`;
    }
    case 'timeline': {
      const steps = validateTimeline(json, path);
      return `${path}: timeline of ${steps.length} fault(s) is valid (${[...new Set(steps.map((s) => s.fault))].join(', ')})`;
    }
    case 'slo': {
      const slos = resolveSlos({ SLO_FILE: path }, (f) => readFileSync(f, 'utf8'));
      return `${path}: ${Array.isArray(json) ? json.length : 0} SLO(s) valid; the gate would judge ${slos.map((s) => s.name).join(', ')}`;
    }
  }
}

/** Validates every file; prints one line per file; the exit code is 2 when any is invalid. */
export function validateCommand(
  paths: string[],
  as: FileKind | undefined,
  out: (l: string) => void,
  err: (l: string) => void,
): number {
  let code = 0;
  for (const p of paths) {
    try {
      out(validateFile(p, as));
    } catch (e) {
      if (!(e instanceof WakestormError)) throw e;
      err(`wakestorm: ${e.message}`);
      code = 2;
    }
  }
  return code;
}

/** `wakestorm init dialect|profile <file>`: a shipped dialect or profile as a template, never over an existing file. */
export function initCommand(kind: string, path: string, from?: string): string {
  if (existsSync(path)) throw new ValidateError(`${path} exists: give a new file name`);
  if (kind === 'dialect') {
    const name = from ?? 'wakestorm';
    if (!(SHIPPED_DIALECTS as readonly string[]).includes(name))
      throw new ValidateError(`--from must be a shipped dialect (${SHIPPED_DIALECTS.join(', ')})`);
    writeFileSync(path, readShipped(`core/dialects/${name}.json`));
    return `${path}: a copy of the ${name} dialect; rename it ("name"), edit the steps, then: wakestorm validate ${path}`;
  }
  if (kind === 'profile') {
    const name = from ?? 'recommended';
    const p = PROFILES[name];
    if (!p) throw new ValidateError(`--from must be a shipped profile (${Object.keys(PROFILES).join(', ')})`);
    writeFileSync(path, `${JSON.stringify({ ...p, name: `my-${name}` }, null, 2)}\n`);
    return `${path}: a copy of the ${name} profile named my-${name}; edit it, then: wakestorm validate ${path}`;
  }
  throw new ValidateError(`init makes a dialect or a profile, not '${kind}'`);
}
