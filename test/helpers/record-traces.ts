// Writes a trace's `expect` from the TypeScript device's replay, then shows where the native engine differs:
//   npx tsx test/helpers/record-traces.ts core/traces/some-trace.json [...]
// Read what it wrote before committing it: the expectation is the behaviour the trace pins, not whatever ran.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { findEngine } from '../../scripts/engine.ts';
import { GO_CORPUS, goCorpus, loadTraces, normalize, replayEngine, replayTs, type Trace } from './replay.ts';

for (const file of process.argv.slice(2)) {
  const trace = JSON.parse(readFileSync(file, 'utf8')) as Trace;
  const events = replayTs(trace);
  // One key a line, one script step and one expected event a line: a change reads as a short diff.
  const { script, until, ...rest } = trace;
  delete rest.expect;
  const lines = (xs: unknown[]) => xs.map((e) => `    ${JSON.stringify(e)}`).join(',\n');
  const head = Object.entries(rest).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`);
  writeFileSync(
    file,
    `{\n${head.join(',\n')},\n  "script": [\n${lines(script)}\n  ],\n  "until": ${until},\n` +
      `  "expect": [\n${lines(events)}\n  ]\n}\n`,
  );
  const engine = findEngine();
  if (!engine) {
    console.log('the engine is not built for this source: npx wakestorm setup');
    continue;
  }
  const [r] = replayEngine(engine, [trace]);
  if (r instanceof Error) {
    console.log(`${file}: native engine: ${r.message}`);
    continue;
  }
  const a = normalize(events);
  const b = normalize(r!);
  for (const part of ['wire', 'outcomes'] as const) {
    const n = Math.max(a[part].length, b[part].length);
    for (let i = 0; i < n; i++)
      if (a[part][i] !== b[part][i])
        console.log(`${file} ${part} #${i}\n  ts     ${a[part][i] ?? '-'}\n  native ${b[part][i] ?? '-'}`);
  }
}

// The Go suite's copy of the whole corpus, from the traces as they now are.
mkdirSync(dirname(GO_CORPUS), { recursive: true });
writeFileSync(GO_CORPUS, goCorpus(loadTraces()));
