// The live watch of the tester (scripts/tester-watch.ts) against HTTP endpoints shaped as k6's REST API answers
// (the JSON k6 v2.2 serves at /v1/metrics/<name>: a trend's avg, min, med, max, p(90), p(95); a counter's count): a
// generator past the bounds is said within seconds; one that cannot end valid is, with the abort on, stopped after the
// grace; one that recovers
// is said to be back; a process that stops answering is named once it has been silent for the stall bound.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { SATURATION } from '../../core/verdict.ts';
import { watchTester } from '../../scripts/tester-watch.ts';

/** A k6-shaped API whose vu_loop_lag p95 the test sets; `hang` makes it stop answering. */
async function fakeK6(): Promise<{ url: string; state: { p95: number; med: number; hang: boolean }; server: Server }> {
  const state = { p95: 2, med: 1, hang: false };
  const server = createServer((req, res) => {
    if (state.hang) return; // never answers
    const id = req.url?.split('/').pop();
    const sample =
      id === 'vu_loop_lag'
        ? { avg: 1, min: 0, med: state.med, max: state.p95 * 2, 'p(90)': state.p95, 'p(95)': state.p95 }
        : { count: 0, rate: 0 };
    res.end(JSON.stringify({ data: { type: 'metrics', id, attributes: { sample } } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, state, server };
}

const servers: Server[] = [];
after(() => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

const until = async (f: () => boolean, ms: number, what: string) => {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error(`no ${what} in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - t0;
};

describe('the live watch of the tester', () => {
  it('says a saturated generator at once, its recovery, and aborts one that stays saturated', async () => {
    const k6 = await fakeK6();
    servers.push(k6.server);
    const said: string[][] = [];
    let aborted: string[] | null = null;
    const w = watchTester({
      beats: [{ name: 'k6', url: `${k6.url}/v1/status` }],
      k6Apis: [k6.url],
      abort: true,
      graceMs: 2000,
      settleMs: 1500,
      onStall: () => assert.fail('nothing stalled'),
      onSaturation: (r) => said.push(r),
      onAbort: (r) => (aborted = r),
    });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(said, [], 'a healthy generator is not saturated');
      assert.equal(w.note(), '');
      k6.state.p95 = SATURATION.vuLoopLagP95Ms * 4;
      const t = await until(() => said.length === 1, 3000, 'saturation said');
      assert.ok(t < 3000);
      assert.match(said[0]![0]!, /generator saturated: VU event-loop lag p95 200 ms > bound 50 ms/);
      assert.match(w.note(), /TESTER SATURATED/);
      k6.state.p95 = 2;
      await until(() => said.length === 2, 5000, 'recovery said (after it settled)');
      assert.deepEqual(said[1], []);
      assert.equal(aborted, null, 'a generator that recovered within the grace is not stopped');
      // Past the p95 bound with a low median (a ramp's burst the rest of the run may dilute): said, not stopped.
      k6.state.p95 = 500;
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal(said.length, 3);
      assert.equal(aborted, null, 'a run that may still end valid is not stopped');
      // Half the samples past the bound: the run cannot end valid, and is stopped after the grace.
      k6.state.med = 120;
      await until(() => aborted !== null, 6000, 'the abort');
      assert.match(aborted![0]!, /lag median 120 ms > 50 ms/);
    } finally {
      w.stop();
    }
  });

  it('names a process that stops answering, once, after the stall bound', async () => {
    const k6 = await fakeK6();
    servers.push(k6.server);
    const stalls: string[] = [];
    const w = watchTester({
      beats: [{ name: 'Toxiproxy (pid 7)', url: `${k6.url}/version` }],
      k6Apis: [k6.url],
      abort: false,
      stallMs: 2500,
      onStall: (why) => stalls.push(why),
      onSaturation: () => {},
      onAbort: () => assert.fail('abort is off'),
    });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      k6.state.hang = true;
      const t = await until(() => stalls.length > 0, 10_000, 'the stall');
      assert.ok(t >= 1500, `named after ${t} ms: before the stall bound`);
      assert.match(stalls[0]!, /^Toxiproxy \(pid 7\) stopped answering for \d+ s/);
      assert.match(w.note(), /TESTER STALLED: Toxiproxy \(pid 7\)/);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(stalls.length, 1);
    } finally {
      w.stop();
    }
  });
});
