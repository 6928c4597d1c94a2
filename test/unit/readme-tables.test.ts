// The README's generated tables and lists match the code they describe.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DEVICE_METRICS } from '../../core/metric-names.ts';
import { profileTable } from '../../scripts/doc-tables.ts';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('README against the code', () => {
  it('has the table of every shipped profile as core/profiles.ts has them (npx tsx scripts/doc-tables.ts)', () => {
    assert.ok(
      readme.includes(profileTable()),
      'README profile table is stale: regenerate it with npx tsx scripts/doc-tables.ts',
    );
  });

  it('names every device metric', () => {
    const missing = Object.keys(DEVICE_METRICS).filter((m) => !readme.includes(`\`${m}\``));
    assert.deepEqual(missing, []);
  });
});
