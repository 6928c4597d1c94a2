// The conformance corpus (core/traces/, docs/traces.md): every trace replayed on the TypeScript device and on the
// native engine's device (`wakestorm-engine replay`, no network), each held to the trace's expected events. A trace
// that only one engine passes fails here, naming the engine and the first event that differs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findEngine } from '../../scripts/engine.ts';
import { readFileSync } from 'node:fs';
import { GO_CORPUS, goCorpus, loadTraces, normalize, replayEngine, replayTs, type Trace } from '../helpers/replay.ts';

const traces = loadTraces();

function expected(t: Trace) {
  assert.ok(t.expect, 'the trace has no expect: record it (npx tsx test/helpers/record-traces.ts)');
  return normalize(t.expect as unknown[][]);
}

function same(engine: string, file: string, got: ReturnType<typeof normalize>, want: ReturnType<typeof normalize>) {
  for (const part of ['wire', 'outcomes'] as const) {
    const g = got[part];
    const w = want[part];
    const i = g.findIndex((x, k) => x !== w[k]);
    const at = i >= 0 ? i : g.length !== w.length ? Math.min(g.length, w.length) : -1;
    assert.equal(
      at,
      -1,
      `${file} on the ${engine} device: ${part} differs at #${at}\n  got  ${g[at] ?? '(nothing)'}\n  want ${w[at] ?? '(nothing)'}`,
    );
  }
}

test('the corpus is not empty, every trace says what it pins, and the README and CONTRIBUTING count it right', () => {
  assert.ok(traces.length >= 10, `only ${traces.length} traces`);
  for (const { file, trace } of traces) assert.ok(trace.about?.length > 20, `${file}: no about`);
  for (const [doc, words] of [
    ['README.md', /conformance corpus: (\d+) traces/],
    ['CONTRIBUTING.md', /core\/traces\/`, (\d+) traces/],
  ] as const) {
    const said = words.exec(readFileSync(new URL(`../../${doc}`, import.meta.url), 'utf8'));
    assert.equal(Number(said?.[1]), traces.length, `${doc} says another number of traces`);
  }
});

for (const { file, trace } of traces)
  test(`trace ${file} on the TypeScript device`, () =>
    same('TypeScript', file, normalize(replayTs(trace)), expected(trace)));

test('every trace on the native engine', () => {
  const engine = findEngine();
  assert.ok(engine, 'the engine is not built for this source: npx wakestorm setup');
  const results = replayEngine(
    engine,
    traces.map((t) => t.trace),
  );
  const failures: string[] = [];
  results.forEach((r, i) => {
    const { file, trace } = traces[i]!;
    try {
      if (r instanceof Error) throw new Error(`${file} on the native engine: ${r.message}`);
      same('native', file, normalize(r), expected(trace));
    } catch (e) {
      failures.push((e as Error).message);
    }
  });
  assert.deepEqual(failures, []);
});

test("the Go suite's copy of the corpus is the corpus as it is (engine/testdata/corpus.jsonl)", () => {
  assert.equal(
    readFileSync(GO_CORPUS, 'utf8'),
    goCorpus(traces),
    'stale: regenerate it with npx tsx test/helpers/record-traces.ts core/traces/*.json',
  );
});
