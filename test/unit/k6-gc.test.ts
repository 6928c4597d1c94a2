// k6's garbage collector setting per device engine (scripts/k6.ts k6GcEnv): tighter when the native engine runs the
// fleet and k6 only forwards its records, Go's default with the k6 device, and never over a GOGC the user set.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { k6GcEnv } from '../../scripts/k6.ts';

describe('k6GcEnv', () => {
  const given = process.env.GOGC;
  afterEach(() => {
    if (given === undefined) delete process.env.GOGC;
    else process.env.GOGC = given;
  });

  it('collects k6 at GOGC=50 beside the native engine, at Go default with the k6 device', () => {
    delete process.env.GOGC;
    assert.deepEqual(k6GcEnv('native'), { GOGC: '50' });
    assert.deepEqual(k6GcEnv('k6'), {});
  });

  it("leaves a user's GOGC alone", () => {
    process.env.GOGC = '200';
    assert.deepEqual(k6GcEnv('native'), {});
  });
});
