// The native engine's record names are device metrics: every name the Go device records (engine/*.go, its count,
// trend, span and Record{Name} calls, and the batch's summable table) is in DEVICE_METRICS, or an internal event
// (a leading _) the k6 side turns into one. engine-fleet.ts checks each record at run time too (isDeviceMetric).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEVICE_METRICS, isDeviceMetric } from '../../core/metric-names.ts';

const ENGINE = new URL('../../engine/', import.meta.url).pathname;

function engineNames(): Map<string, string> {
  const names = new Map<string, string>();
  for (const f of readdirSync(ENGINE).filter((f) => f.endsWith('.go') && !f.endsWith('_test.go'))) {
    const src = readFileSync(join(ENGINE, f), 'utf8');
    for (const m of src.matchAll(/\b(?:count|trend|span)\("([A-Za-z0-9_]+)"|Name:\s*"([A-Za-z0-9_]+)"/g))
      names.set(m[1] ?? m[2]!, f);
    const summable = /var summable = map\[string\]bool\{([^}]*)\}/.exec(src);
    for (const m of summable?.[1]?.matchAll(/"([A-Za-z0-9_]+)"/g) ?? []) names.set(m[1]!, `${f} (summable)`);
  }
  return names;
}

test('every metric name the engine records is a device metric', () => {
  const names = engineNames();
  // The scan finds the engine's records at all: a link's and a conversation's outcomes are among them.
  for (const must of ['connect_time', 'links_up', 'response_latency', 'wake_success', 'unplanned_drops'])
    assert.ok(names.has(must), `the scan found no ${must} in engine/*.go`);
  const unknown = [...names].filter(([n]) => !n.startsWith('_') && !isDeviceMetric(n));
  assert.deepEqual(unknown, [], `names outside DEVICE_METRICS (core/metric-names.ts): ${JSON.stringify(unknown)}`);
});

test('isDeviceMetric takes the table and nothing inherited', () => {
  assert.ok(isDeviceMetric('connect_time'));
  for (const n of ['toString', 'constructor', '__proto__', 'connect_times', ''])
    assert.equal(isDeviceMetric(n), false, n);
  assert.ok(Object.keys(DEVICE_METRICS).every(isDeviceMetric));
});
