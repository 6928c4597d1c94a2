// When the CLI kills a k6 device that grew past its memory bound (scripts/tester-watch.ts k6KillRule): at once past
// twice the bound when no network can be cut, and through Toxiproxy only if k6 grows on after what was in flight.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { K6_CUT_SETTLE_MS, K6_KILL_FACTOR, k6KillRule } from '../../scripts/tester-watch.ts';

const BOUND = 270;

describe('k6KillRule', () => {
  it('with nothing to cut (--direct), kills past the factor at once', () => {
    const kill = k6KillRule(BOUND, false, 1000);
    assert.equal(kill(K6_KILL_FACTOR * BOUND, 1000), false);
    assert.equal(kill(K6_KILL_FACTOR * BOUND + 1, 1250), true);
  });

  it('after a cut, lets k6 read what was in flight, however large, until the settle time', () => {
    const kill = k6KillRule(BOUND, true, 1000);
    assert.equal(kill(547, 1250), false);
    assert.equal(kill(10 * BOUND, 1000 + K6_CUT_SETTLE_MS - 1), false);
  });

  it('after the settle time, kills only when k6 grew by another bound since', () => {
    const kill = k6KillRule(BOUND, true, 1000);
    const settledAt = 1000 + K6_CUT_SETTLE_MS;
    assert.equal(kill(600, settledAt), false, 'held at 600 MiB: the cut stopped it');
    assert.equal(kill(600 + BOUND, settledAt + 250), false);
    assert.equal(kill(600 + BOUND + 1, settledAt + 500), true);
  });

  it('after the settle time, never kills below the factor', () => {
    const kill = k6KillRule(BOUND, true, 0);
    assert.equal(kill(BOUND + 10, K6_CUT_SETTLE_MS), false);
    assert.equal(kill(K6_KILL_FACTOR * BOUND, K6_CUT_SETTLE_MS + 250), false);
    assert.equal(kill(K6_KILL_FACTOR * BOUND + 1, K6_CUT_SETTLE_MS + 500), false, 'grew by less than a bound');
  });
});
