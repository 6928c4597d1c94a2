// `wakestorm capacity` end to end: the search finds a limit the server really has (its --max-connections) within one
// step, and writes capacity.json and its chart. Minutes of bounded runs: outside npm test, in `npm run test:scenarios`.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from '../helpers/proc.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-capacity-'));

describe('wakestorm capacity', () => {
  it('finds a server limit set by --max-connections within one step', async () => {
    const r = await runCli(
      [
        'capacity',
        '--max-devices',
        '1000',
        '--start',
        '100',
        '--step-duration',
        '8s',
        '--wake',
        'off',
        '--resolution',
        '10',
        '--server-arg',
        '--max-connections=300',
        '--results',
        results,
      ],
      { timeoutMs: 400_000 },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const m = /holds (\d+) devices/.exec(r.stdout);
    assert.ok(m, r.stdout);
    const holds = Number(m[1]);
    assert.ok(holds <= 300 && holds >= 270, `found ${holds} for a limit of 300`);
    assert.match(r.stdout, /first broke at \d+: connect_success/);
    const dir = readdirSync(results).find((d) => d.startsWith('capacity-'))!;
    const cap = JSON.parse(readFileSync(join(results, dir, 'capacity.json'), 'utf8'));
    assert.equal(cap.holds, holds);
    assert.equal(cap.generator_limited, false);
    assert.ok(cap.steps.length >= 4);
    assert.ok(existsSync(join(results, dir, 'capacity.svg')));
  });
});
