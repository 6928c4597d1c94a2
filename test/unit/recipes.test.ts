// The recipes of CONTRIBUTING.md, run as written: a recipe that stops working fails here, not in a newcomer's hands.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseProfileMix } from '../../core/profiles.ts';
import { resolveSlos, sloThresholds } from '../../core/slo.ts';
import { validateFile } from '../../scripts/validate.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const doc = readFileSync(join(ROOT, 'CONTRIBUTING.md'), 'utf8');
const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-recipes-'));

/** The code block under `<!-- recipe: name … -->`. */
function recipe(name: string): string {
  const m = new RegExp(`<!-- recipe: ${name}\\b[^>]*-->\\s*\`\`\`[a-z]*\\n([\\s\\S]*?)\`\`\``).exec(doc);
  assert.ok(m, `CONTRIBUTING.md has the ${name} recipe`);
  return m[1]!;
}

describe('CONTRIBUTING.md recipes', () => {
  it('add a fault: one entry in core/faults.ts, and a timeline uses it', async () => {
    const core = join(tmp, 'core');
    cpSync(join(ROOT, 'core'), core, { recursive: true });
    const faults = readFileSync(join(core, 'faults.ts'), 'utf8');
    const anchor = 'export const TOXICS: Record<string, Def> = {\n';
    assert.ok(faults.includes(anchor));
    writeFileSync(join(core, 'faults.ts'), faults.replace(anchor, `${anchor}${recipe('fault')}`));
    const { validateTimeline } = (await import(join(core, 'timelines.ts'))) as typeof import('../../core/timelines.ts');
    const [step] = validateTimeline([{ at: '1s', for: '5s', fault: 'slow-trickle', params: { gap: 20 } }], 'recipe');
    assert.equal(step!.fault, 'slow-trickle');
    const { FAULTS } = (await import(join(core, 'faults.ts'))) as typeof import('../../core/faults.ts');
    assert.deepEqual(FAULTS['slow-trickle']!.actions({ size: 64, gap: 20 }, ['downstream'], 1), [
      {
        kind: 'toxic',
        type: 'slicer',
        stream: 'downstream',
        toxicity: 1,
        attributes: { average_size: 64, size_variation: 0, delay: 20_000 },
      },
    ]);
  });

  it('add a profile: valid against its dialect, and usable in a mix', () => {
    const p = join(tmp, 'my-badge.json');
    writeFileSync(p, recipe('profile'));
    assert.match(validateFile(p), /profile my-badge is valid/);
    const mix = parseProfileMix(`${p}:30,recommended:70`, (f) => readFileSync(f, 'utf8'));
    assert.equal(mix[0]!.profile.name, 'my-badge');
  });

  it('add a dialect: init, rename, validate', () => {
    const script = recipe('dialect').replaceAll('npx wakestorm', `node ${join(ROOT, 'bin', 'wakestorm.mjs')}`);
    const out = execFileSync('bash', ['-e', '-c', script], { cwd: tmp, encoding: 'utf8' });
    assert.match(out, /dialect my-dialect is valid/);
  });

  it('add an SLO: a file of SLOs, one with a target during faults', () => {
    const f = join(tmp, 'my-slos.json');
    writeFileSync(f, recipe('slo'));
    const slos = resolveSlos({ SLO_FILE: f }, (x) => readFileSync(x, 'utf8'));
    const th = sloThresholds(slos);
    assert.deepEqual(th['wake_ack_latency{chaos:steady}'], ['p(95)<300', 'p(99)<500']);
    assert.deepEqual(th['response_latency{chaos:steady}'], ['p(95)<1000']);
    assert.deepEqual(th['response_latency{chaos:during}'], ['p(95)<2500']);
  });
});
