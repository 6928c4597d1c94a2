// The verdict: no data is not a pass, breaches name their culprit, a broken tester is INVALID, JUnit says the same.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_SLOS, inPhase, resolveSlos } from '../../core/slo.ts';
import { firmwareReason, judge, junitXml, SATURATION, verdictLines, withTag } from '../../core/verdict.ts';
import { PROFILES } from '../../core/profiles.ts';
import type { SummaryData } from '../../core/run-contract.ts';
import { faultWindows, loadTimeline } from '../../core/timelines.ts';
import { PhaseTracker } from '../../core/phases.ts';
import { redactArgv } from '../../scripts/secret.ts';
import { TIMER_LAG_BOUNDS_MS, timerLagCounts, timerLagQuantile, timerLagSubmetrics } from '../../core/timer-lag.ts';

const trend = (p95: number, count: number) => ({ type: 'trend', values: { 'p(50)': p95 / 2, 'p(95)': p95, count } });
const rate = (passes: number, fails: number) => ({
  type: 'rate',
  values: { rate: passes + fails ? passes / (passes + fails) : 0, passes, fails },
});
const counter = (count: number) => ({ type: 'counter', values: { count } });

/** A healthy 20-device run: every device connected, every wake acknowledged and answered, no link lost. */
function healthy(): SummaryData {
  return { metrics: healthyMetrics() };
}

function healthyMetrics(): SummaryData['metrics'] {
  return {
    devices_started: counter(20),
    'connect_success{chaos:steady}': rate(20, 0),
    connect_success: rate(20, 0),
    wakes: counter(20),
    'wake_success{chaos:steady}': rate(20, 0),
    wake_ack_latency: trend(40, 20),
    'wake_ack_latency{chaos:steady}': trend(40, 20),
    sessions_started: counter(20),
    sessions_completed: counter(20),
    response_latency: trend(700, 20),
    'response_latency{chaos:steady}': trend(700, 20),
    endpointing_latency: trend(320, 20),
    processing_latency: trend(380, 20),
    'reply_stutter{chaos:steady}': rate(0, 20),
    'reply_truncated{chaos:steady}': rate(0, 20),
    'playback_stall_time{chaos:steady}': { type: 'trend', values: { 'p(50)': 0, 'p(95)': 0, 'p(99)': 0, count: 20 } },
    session_drop_rate: rate(0, 20),
    'session_drop_rate{chaos:steady}': rate(0, 20),
    unplanned_drops: counter(0),
    devices_gave_up: counter(0),
    connection_drops: counter(0),
    vu_loop_lag: trend(3, 40),
  };
}

describe('verdict', () => {
  it('passes a healthy run, with reconnect time n/a when no link was lost', () => {
    const j = judge(healthy(), DEFAULT_SLOS);
    assert.equal(j.verdict, 'pass', j.headline);
    assert.equal(j.exit_code, 0);
    assert.equal(j.slos.find((r) => r.name === 'reconnect_p95')!.status, 'n/a');
    assert.match(j.headline, /PASS \(13 SLOs met, 4 n\/a\)/);
    const xml = junitXml(j, 'smoke', 12);
    assert.match(xml, /tests="18" failures="0" errors="0" skipped="4"/);
    assert.match(
      xml,
      /<skipped message="reconnect_time\{chaos:steady\}: n\/a, no links lost with time to come back in this run"\/>/,
    );
  });

  it('fails a server that answers before the user finished speaking, naming how far into the speech', () => {
    const d = healthy();
    d.metrics['early_replies{chaos:steady}'] = counter(3);
    d.metrics['early_replies{chaos:steady,profile:xiaozhi-esp32}'] = counter(3);
    d.metrics.early_reply_speech = trend(4, 3);
    const j = judge(d, DEFAULT_SLOS);
    assert.equal(j.verdict, 'fail');
    const r = j.slos.find((x) => x.name === 'early_replies')!;
    assert.equal(r.status, 'fail');
    assert.match(r.culprits.join('; '), /answered before the user finished speaking: a median 2% into the utterance/);
    assert.match(r.culprits.join('; '), /profile xiaozhi-esp32 3/);
  });

  it('a dialect whose server acknowledges no wake leaves wake_ack_p95 n/a, saying why', () => {
    const d = healthy();
    delete d.metrics.wake_ack_latency;
    delete d.metrics['wake_ack_latency{chaos:steady}'];
    d.metrics.wakes_without_ack = counter(20);
    const j = judge(d, DEFAULT_SLOS);
    assert.equal(j.verdict, 'pass', j.headline);
    const r = j.slos.find((x) => x.name === 'wake_ack_p95')!;
    assert.equal(r.status, 'n/a');
    assert.match(r.why, /acknowledges no wake \(recv.ack null\)/);
    // Half of them on a dialect that does acknowledge: those are owed, and missing them fails.
    d.metrics.wakes_without_ack = counter(10);
    assert.equal(
      judge(d, DEFAULT_SLOS)
        .slos.find((x) => x.name === 'wake_ack_p95')!
        .why.includes('10 wakes'),
      true,
    );
  });

  it("sessions and wakes the run's end cut owe no outcome: n/a, not a FAIL of the server", () => {
    const d = healthy();
    for (const k of Object.keys(d.metrics))
      if (
        /^(response_latency|session_drop_rate|reply_|playback_stall|sessions_completed|endpointing|processing)/.test(k)
      )
        delete d.metrics[k];
    d.metrics.wakes = counter(3);
    d.metrics.sessions_started = counter(2);
    d.metrics.sessions_open_at_end = counter(2);
    d.metrics.wakes_open_at_end = counter(1);
    d.metrics['wake_success{chaos:steady}'] = rate(2, 0);
    const j = judge(d, DEFAULT_SLOS);
    assert.equal(j.verdict, 'pass', j.headline);
    const resp = j.slos.find((x) => x.name === 'response_p95')!;
    assert.equal(resp.status, 'n/a');
    assert.match(resp.why, /still open at the run's end/);
    assert.equal(j.slos.find((x) => x.name === 'session_drop_rate')!.status, 'n/a');
    // One session that was not cut owes its reply: missing it fails.
    d.metrics.sessions_started = counter(3);
    assert.equal(judge(d, DEFAULT_SLOS).slos.find((x) => x.name === 'response_p95')!.status, 'fail');
  });

  it('fails replies that stutter or end short, and sessions that completed with no reply judged', () => {
    const d = healthy();
    d.metrics['reply_stutter{chaos:steady}'] = rate(12, 8);
    d.metrics['reply_stutter{chaos:steady,profile:recommended}'] = rate(12, 8);
    d.metrics['reply_truncated{chaos:steady}'] = rate(3, 17);
    const j = judge(d, DEFAULT_SLOS);
    assert.equal(j.verdict, 'fail');
    const st = j.slos.find((r) => r.name === 'reply_stutter_rate')!;
    assert.equal(st.status, 'fail');
    assert.ok(
      st.culprits.some((c) => /profile recommended 60%/.test(c)),
      st.culprits.join(' | '),
    );
    assert.ok(st.culprits.includes('phase playback'));
    assert.equal(j.slos.find((r) => r.name === 'reply_truncated_rate')!.status, 'fail');
    const none = healthy();
    delete none.metrics['reply_stutter{chaos:steady}'];
    const n = judge(none, DEFAULT_SLOS).slos.find((r) => r.name === 'reply_stutter_rate')!;
    assert.equal(n.status, 'fail');
    assert.equal(n.why, 'reply_stutter{chaos:steady}: 20 sessions completed, 0 replies judged');
  });

  it('names messages the dialect does not match, and where a slow reply spent its time', () => {
    const d = healthy();
    d.metrics['session_drop_rate{chaos:steady}'] = rate(20, 0);
    d.metrics.unmatched_messages = counter(20);
    d.metrics['response_latency{chaos:steady}'] = trend(1900, 20);
    d.metrics.endpointing_latency = trend(1500, 20);
    const j = judge(d, DEFAULT_SLOS, [], { unmatchedTypes: ['audio_start'] });
    const drop = j.slos.find((r) => r.name === 'session_drop_rate')!;
    assert.match(
      drop.culprits[0]!,
      /the server sent 20 message\(s\) \(`audio_start`\) that the dialect does not match/,
    );
    const resp = j.slos.find((r) => r.name === 'response_p95')!;
    assert.ok(
      resp.culprits.some((c) => /endpointing p95 1500 ms .* the rest p95 380 ms/.test(c)),
      resp.culprits.join(' | '),
    );
  });

  it('fails when wakes were never acknowledged: no data is not a pass', () => {
    const d = healthy();
    d.metrics['wake_success{chaos:steady}'] = rate(0, 20);
    d.metrics['wake_success{chaos:steady,profile:recommended}'] = rate(0, 20);
    delete d.metrics.wake_ack_latency;
    delete d.metrics['wake_ack_latency{chaos:steady}'];
    d.metrics.sessions_started = counter(0);
    delete d.metrics.response_latency;
    delete d.metrics['response_latency{chaos:steady}'];
    d.metrics.session_drop_rate = rate(0, 0);
    delete d.metrics['session_drop_rate{chaos:steady}'];
    const j = judge(d, DEFAULT_SLOS);
    assert.equal(j.verdict, 'fail');
    assert.equal(j.exit_code, 99);
    const ack = j.slos.find((r) => r.name === 'wake_ack_p95')!;
    assert.equal(ack.status, 'fail');
    assert.equal(ack.why, 'wake_ack_latency{chaos:steady}: 20 wakes, 0 acknowledged');
    assert.equal(j.slos.find((r) => r.name === 'wake_success')!.status, 'fail');
    assert.match(
      j.slos.find((r) => r.name === 'wake_success')!.culprits.join(' '),
      /profile recommended 0%.*phase wake/,
    );
    // Every reply SLO fails too: sessions were owed.
    assert.equal(
      j.slos.find((r) => r.name === 'session_drop_rate')!.why,
      'session_drop_rate{chaos:steady}: 20 wakes, 0 sessions ended',
    );
  });

  it('never passes a run where no device connected, even with its SLO off', () => {
    const d: SummaryData = {
      metrics: {
        devices_started: counter(30),
        connect_success: rate(0, 30),
        'connect_success{chaos:steady}': rate(0, 30),
        unplanned_drops: counter(30),
        wakes: counter(0),
      },
    };
    const slos = resolveSlos({ SLO_connect_success: 'off', SLO_unplanned_drops: 'off' }, () => '');
    const j = judge(d, slos);
    assert.equal(j.verdict, 'fail');
    assert.match(j.headline, /no device ever connected: 30 connect attempts failed/);
    assert.match(junitXml(j, 'smoke', 1), /<testcase classname="wakestorm.smoke" name="fleet connected">\n\s+<failure/);
  });

  it('calls a run INVALID when every connect was refused for its credentials (401/403), not a FAIL of the server', () => {
    const refused = (by401: number, by503: number): SummaryData => ({
      metrics: {
        devices_started: counter(30),
        connect_success: rate(0, by401 + by503),
        'connect_success{chaos:steady}': rate(0, by401 + by503),
        'connect_success{chaos:steady,code:http_401}': rate(0, by401),
        ...(by503 ? { 'connect_success{chaos:steady,code:http_503}': rate(0, by503) } : {}),
        wakes: counter(0),
      },
    });
    const j = judge(
      refused(30, 0),
      resolveSlos({}, () => ''),
    );
    assert.equal(j.verdict, 'invalid');
    assert.match(j.headline, /refused the devices' credentials on every connect \(HTTP 401 ×30\): check --token/);
    // A server that also refuses for capacity is judged: that is the server's doing.
    assert.equal(
      judge(
        refused(20, 10),
        resolveSlos({}, () => ''),
      ).verdict,
      'fail',
    );
  });

  it("the k6 device's refusals (all 1006 to its socket) are named by k6's own session status", () => {
    const k6Refused = (by401: number, by503: number): SummaryData => ({
      metrics: {
        devices_started: counter(30),
        connect_success: rate(0, by401 + by503),
        'connect_success{chaos:steady}': rate(0, by401 + by503),
        'connect_success{chaos:steady,code:1006}': rate(0, by401 + by503),
        'ws_sessions{status:401}': counter(by401),
        'ws_sessions{status:503}': counter(by503),
        wakes: counter(0),
      },
    });
    const slos = resolveSlos({}, () => '');
    const j = judge(k6Refused(30, 0), slos);
    assert.equal(j.verdict, 'invalid');
    assert.match(j.headline, /refused the devices' credentials on every connect \(HTTP 401 ×30\)/);
    const mixed = judge(k6Refused(20, 10), slos);
    assert.equal(mixed.verdict, 'fail');
    const row = mixed.slos.find((r) => r.name === 'connect_success')!;
    assert.ok(
      row.culprits.includes('upgrade refused http_401 (HTTP 401) ×20, http_503 (HTTP 503) ×10'),
      row.culprits.join('; '),
    );
  });

  it('names the profile, close code and cause of unplanned drops', () => {
    const d = healthy();
    d.metrics.unplanned_drops = counter(40);
    d.metrics['unplanned_drops{profile:web-heartbeat}'] = counter(40);
    d.metrics['unplanned_drops{profile:react-avatar}'] = counter(0);
    d.metrics['unplanned_drops{code:1011}'] = counter(40);
    d.metrics['unplanned_drops{cause:server_close}'] = counter(40);
    const j = judge(d, DEFAULT_SLOS);
    const r = j.slos.find((x) => x.name === 'unplanned_drops')!;
    assert.equal(r.status, 'fail');
    assert.equal(r.why, 'unplanned_drops measured 40, target count == 0');
    assert.deepEqual(r.culprits, [
      'profile web-heartbeat 40',
      'close code 1011 (internal error) ×40',
      'phase connected: the server closed the link (×40)',
    ]);
    assert.match(j.headline, /^VERDICT: FAIL \(unplanned_drops\): .*web-heartbeat.*1011/);
  });

  it('fails a server that plays on after a barge-in, and a barge-in never measured, on barge_in_stop_p95', () => {
    const d = healthy();
    d.metrics.barge_ins = counter(10);
    d.metrics.barge_in_stop_time = trend(2400, 10);
    d.metrics['barge_in_stop_time{profile:recommended-barge}'] = trend(2400, 10);
    const j = judge(d, DEFAULT_SLOS);
    const r = j.slos.find((x) => x.name === 'barge_in_stop_p95')!;
    assert.equal(j.verdict, 'fail');
    assert.equal(r.why, 'barge_in_stop_time measured 2400.0 ms, target p(95) < 500 ms');
    assert.deepEqual(r.culprits, ['profile recommended-barge 2400.0 ms', 'phase barge-in']);
    delete d.metrics.barge_in_stop_time;
    delete d.metrics['barge_in_stop_time{profile:recommended-barge}'];
    assert.equal(
      judge(d, DEFAULT_SLOS).slos.find((x) => x.name === 'barge_in_stop_p95')!.why,
      'barge_in_stop_time: 10 barge-ins, 0 measured',
    );
    d.metrics.barge_in_stop_time = trend(80, 10);
    assert.equal(judge(d, DEFAULT_SLOS).verdict, 'pass');
  });

  it("calls a generator that stalled INVALID, from its lag's tail when p95 stays under the bound", () => {
    // k6 frozen for 8 s (issue 40): p95 3 ms, p99 5.8 s, max 7.4 s; the server's numbers breached meanwhile.
    const d = healthy();
    d.metrics.response_latency = trend(5000, 20);
    d.metrics.vu_loop_lag = { type: 'trend', values: { 'p(50)': 1, 'p(95)': 3, 'p(99)': 5830, max: 7370, count: 900 } };
    const j = judge(d, DEFAULT_SLOS);
    assert.equal(j.verdict, 'invalid');
    assert.match(j.headline, /generator stalled: VU event-loop lag max 7370 ms > bound 2000 ms \(p99 5830 ms\)/);
    // On the native engine the lag is the engine's own timers', and the verdict names that, not k6's VUs.
    assert.match(
      judge(d, DEFAULT_SLOS, [], { engine: 'native' }).headline,
      /generator stalled: device-engine timer lag max 7370 ms/,
    );
    // A tail under both bounds is a healthy generator.
    const ok = healthy();
    ok.metrics.vu_loop_lag = { type: 'trend', values: { 'p(50)': 1, 'p(95)': 3, 'p(99)': 40, max: 900, count: 900 } };
    assert.equal(judge(ok, DEFAULT_SLOS).verdict, 'pass');
    // A p99 past its bound with a max under its own: saturated, by the p99.
    const tail = healthy();
    tail.metrics.vu_loop_lag = {
      type: 'trend',
      values: { 'p(50)': 1, 'p(95)': 30, 'p(99)': 400, max: 900, count: 900 },
    };
    assert.match(judge(tail, DEFAULT_SLOS).headline, /lag p99 400 ms > bound 250 ms/);
  });

  it('a tester stopped past its memory bound: the server FAILs when it broke the protocol, else INVALID', () => {
    const why = 'k6 (the k6 device) grew to 1400 MiB, past its bound of 270 MiB for 20 devices in 1 VUs: stopped';
    const hostile = healthy();
    hostile.metrics.protocol_violations = counter(40);
    const j = judge(hostile, DEFAULT_SLOS, [], { testerOverrun: why });
    assert.equal(j.verdict, 'fail');
    assert.ok(j.failures.some((r) => r.includes('the server overwhelmed the tester with 40') && r.includes(why)));
    const own = judge(healthy(), DEFAULT_SLOS, [], { testerOverrun: why });
    assert.equal(own.verdict, 'invalid');
    assert.ok(own.invalid.includes(why));
    // k6 keeps no metric once interrupted: the devices' log lines are their record of what they saw then.
    const logged = judge(healthy(), DEFAULT_SLOS, [], { testerOverrun: why, violationsLogged: ['flood'] });
    assert.equal(logged.verdict, 'fail');
    assert.ok(logged.failures.some((r) => r.includes('the devices logged as k6 stopped (flood)') && r.includes(why)));
  });

  it('closes the server never answered FAIL the run, named, whatever the SLOs say', () => {
    const why = "the server answered no close: k6's devices still held links 25 s after the run's end";
    assert.equal(judge(healthy(), DEFAULT_SLOS).verdict, 'pass');
    const j = judge(healthy(), DEFAULT_SLOS, [], { closesUnanswered: why });
    assert.equal(j.verdict, 'fail');
    assert.ok(j.failures.includes(why));
  });

  it('calls a saturated generator INVALID, not FAIL, and says which bound', () => {
    const d = healthy();
    d.metrics.response_latency = trend(5000, 20);
    d.metrics.vu_loop_lag = { type: 'trend', values: { 'p(50)': 868, 'p(95)': 1500, count: 500 } };
    const j = judge(d, DEFAULT_SLOS);
    assert.equal(j.verdict, 'invalid');
    assert.equal(j.exit_code, 3);
    assert.match(j.headline, new RegExp(`VU event-loop lag p95 1500 ms > bound ${SATURATION.vuLoopLagP95Ms} ms`));
    const xml = junitXml(j, 'smoke', 1);
    assert.match(xml, /errors="1"/);
    assert.match(xml, /<error message="generator saturated/);
    assert.doesNotMatch(xml, /<failure/);
    // Late audio frames past the bound, too; a handful in a short run is noise.
    const slips = healthy();
    slips.metrics.audio_slips = counter(500);
    slips.metrics.audio_frames = counter(10_000);
    assert.match(
      judge(slips, DEFAULT_SLOS).invalid.join(),
      /500 of 10000 uplink audio frames sent late \(5% > bound 0.5%\)/,
    );
    slips.metrics.audio_slips = counter(3);
    assert.equal(judge(slips, DEFAULT_SLOS).verdict, 'pass');
  });

  it('is INVALID when the CLI saw the tester fail or k6 wrote no summary', () => {
    assert.equal(judge(healthy(), DEFAULT_SLOS, ['toxiproxy-server exited during the run']).verdict, 'invalid');
    const none = judge(null, DEFAULT_SLOS, []);
    assert.equal(none.verdict, 'invalid');
    assert.match(junitXml(none, 'x', 0), /<error message="k6 wrote no summary"/);
    const chaos = healthy();
    chaos.metrics.chaos_errors = counter(2);
    assert.match(judge(chaos, DEFAULT_SLOS).headline, /INVALID.*2 fault onset\(s\) or end\(s\) could not be applied/);
  });

  it('fails a user SLO on a metric with no sample at all', () => {
    const slos = resolveSlos({ SLO_FILE: 'x.json' }, () =>
      JSON.stringify([{ name: 'ping_p99', metric: 'ping_rtt', aggregation: 'p(99)', op: '<', target: 50 }]),
    );
    const j = judge(healthy(), slos);
    assert.equal(j.slos.find((r) => r.name === 'ping_p99')!.status, 'fail');
    assert.equal(j.verdict, 'fail');
  });

  it('tags submetrics the way k6 names them', () => {
    assert.equal(withTag('connect_success{chaos:steady}', 'profile', 'a'), 'connect_success{chaos:steady,profile:a}');
    assert.equal(withTag('unplanned_drops', 'code', '1011'), 'unplanned_drops{code:1011}');
  });
});

describe('phases of a chaos run', () => {
  const steps = loadTimeline('flaky-wifi', () => '', 60_000).steps;
  it('windows are the timeline steps as absolute times, labelled in order', () => {
    const w = faultWindows(steps, 1000);
    assert.deepEqual(w[2], {
      label: `3:${steps[2]!.fault}`,
      start: 1000 + steps[2]!.atMs,
      end: 1000 + steps[2]!.atMs + steps[2]!.forMs,
    });
  });

  it('recovery lasts until each profile is back at its pre-fault level, and is reported per profile', () => {
    const reports: string[] = [];
    const t = new PhaseTracker([{ label: '1:cut', start: 10_000, end: 12_000 }], (w, p, ms, back) =>
      reports.push(`${w.label} ${p} ${ms} ${back}`),
    );
    const at = (now: number, a: number, b: number) =>
      t.observe(
        now,
        new Map([
          ['fast', a],
          ['slow', b],
        ]),
      );
    at(9_000, 10, 10);
    at(11_000, 0, 0);
    assert.equal(t.phase(11_500, 11_600), 'during');
    at(13_000, 10, 4);
    assert.equal(t.phase(13_500, 13_600), 'recovery', 'slow is not back yet');
    at(22_000, 10, 10);
    assert.deepEqual(reports, ['1:cut fast 1000 true', '1:cut slow 10000 true']);
    assert.equal(t.phase(22_500, 23_000), 'steady');
    assert.equal(t.phase(5_000, 6_000), 'steady');
    assert.equal(t.phase(8_000, 10_500), 'during', 'an outcome that overlapped the window');
  });

  it("a profile never back is reported at the bound, and the run's end reports what it waited", () => {
    const reports: [string, number, boolean, boolean][] = [];
    const t = new PhaseTracker(
      [
        { label: '1:cut', start: 10_000, end: 12_000 },
        { label: '2:cut', start: 100_000, end: 101_000 },
      ],
      (w, _p, ms, back, cut) => reports.push([w.label, ms, back, cut === true]),
    );
    t.observe(9_000, new Map([['x', 5]]));
    t.observe(80_000, new Map([['x', 1]]));
    assert.deepEqual(reports, [['1:cut', 60_000, false, false]]);
    assert.equal(t.phase(75_000, 75_000), 'steady', 'past the bound the run is steady again (and fails there)');
    t.observe(99_000, new Map([['x', 5]]));
    t.observe(105_000, new Map([['x', 0]]));
    t.finish(105_000);
    assert.equal(reports.length, 1, 'a fault that ended 4 s before the end had no time to recover');
    t.finish(120_000);
    // Cut by the run's end: a lower bound, marked so (recoveries_cut; the report's "≥").
    assert.deepEqual(reports[1], ['2:cut', 19_000, false, true]);
  });

  it('says which slow recoveries the run cut, apart from those never back', () => {
    const d = healthy();
    const slow = { type: 'trend', values: { max: 40_000, 'p(95)': 40_000, count: 2 } };
    d.metrics.recovery_time = slow;
    d.metrics['recovery_time{fault:2:cut}'] = slow;
    d.metrics.recoveries_failed = counter(2);
    d.metrics.recoveries_cut = counter(1);
    const row = judge(d, DEFAULT_SLOS).slos.find((r) => r.name === 'recovery_max')!;
    assert.match(
      row.culprits.join(' '),
      /1 profile slice\(s\) never back; 1 profile slice\(s\) not back when the run ended: their time is a lower bound/,
    );
  });
});

describe('SLO targets per phase', () => {
  it('a during or recovery target is an SLO of its own on that phase', () => {
    const slos = resolveSlos({ SLO_response_p95__during: '2000', SLO_wake_success__recovery: '0.9' }, () => '');
    const d = slos.find((s) => s.name === 'response_p95@during')!;
    assert.equal(d.metric, 'response_latency{chaos:during}');
    assert.equal(d.target, 2000);
    assert.equal(slos.find((s) => s.name === 'wake_success@recovery')!.metric, 'wake_success{chaos:recovery}');
    assert.throws(() => resolveSlos({ SLO_response_p95__later: '1' }, () => ''), /phase must be during or recovery/);
    assert.equal(inPhase('reconnect_time', 'during'), 'reconnect_time{chaos:during}');
  });

  it('a steady SLO with every sample in another phase is n/a, not a failure', () => {
    const slos = resolveSlos({}, () => '');
    const j = judge(
      {
        metrics: {
          devices_started: counter(2),
          connect_success: rate(2, 0),
          'connect_success{chaos:steady}': rate(2, 0),
          wakes: counter(3),
          wake_success: rate(3, 0),
          'wake_success{chaos:during}': rate(3, 0),
        },
      },
      slos,
    );
    const w = j.slos.find((r) => r.name === 'wake_success')!;
    assert.equal(w.status, 'n/a', w.why);
  });
});
describe('secrets', () => {
  it('redact tokens from a command line kept in run.json', () => {
    assert.deepEqual(redactArgv(['run', 'smoke', '--token', 's3cretvalue', '--server-arg', '--token=abcdefgh1']), [
      'run',
      'smoke',
      '--token',
      '<redacted>',
      '--server-arg',
      '<redacted>',
    ]);
    assert.deepEqual(redactArgv(['run', '--token=abcdefgh1']), ['run', '--token=<redacted>']);
  });
});

describe('chaos events', () => {
  it('travel as one line and come back whole, also from k6 log quoting', async () => {
    const { encodeChaosEvent, decodeChaosEvent } = await import('../../core/chaos-events.ts');
    const e = {
      t: 5,
      iso: 'x',
      index: 1,
      fault: 'cut',
      phase: 'onset' as const,
      planned_t: 4,
      ok: false,
      detail: 'POST http://127.0.0.1:1/proxies -> 500: "boom"',
    };
    const line = encodeChaosEvent(e);
    assert.deepEqual(decodeChaosEvent(line), e);
    // k6 writes console.log as msg="…" with inner quotes escaped.
    const k6Line = `time="2026-11-23T10:00:00Z" level=info msg=${JSON.stringify(line)} source=console`;
    assert.deepEqual(decodeChaosEvent(k6Line), e);
    assert.equal(decodeChaosEvent('CHAOS_EVENT {not json'), null);
    assert.equal(decodeChaosEvent('some other line'), null);
  });
});

describe('firmware findings', () => {
  const p4 = PROFILES['esp32-p4-screen']!;
  const rec = PROFILES.recommended!;
  it("a breach only a firmware's own backoff explains is a finding: PASS, the firmware named, not the server", () => {
    const d = { metrics: healthyMetrics() } as SummaryData;
    d.metrics.connection_drops = counter(20);
    d.metrics['reconnect_time{chaos:steady}'] = trend(11_000, 20);
    d.metrics['reconnect_time{chaos:steady,profile:esp32-p4-screen}'] = trend(11_000, 10);
    d.metrics['reconnect_time{chaos:steady,profile:recommended}'] = trend(2_000, 10);
    const j = judge(d, DEFAULT_SLOS, [], { profiles: [p4, rec] });
    assert.equal(j.verdict, 'pass', j.headline);
    assert.match(j.headline, /1 firmware finding/);
    const r = j.slos.find((x) => x.name === 'reconnect_p95')!;
    assert.equal(r.status, 'finding');
    assert.match(
      r.culprits[0]!,
      /the firmware, not the server: esp32-p4-screen waits 10 s before it reconnects \(reconnect\.policy fixed.*the server met the target for recommended/,
    );
    assert.match(junitXml(j, 's', 1), /<system-out>finding: reconnect_time/);
  });

  it('reconnects that spanned a fault are compared per firmware as findings, never failures', () => {
    const d = { metrics: healthyMetrics() } as SummaryData;
    d.metrics.connection_drops = counter(20);
    d.metrics.reconnect_time = trend(11_000, 20);
    d.metrics['reconnect_time{chaos:during}'] = trend(11_000, 20);
    d.metrics['reconnect_time{chaos:during,profile:esp32-p4-screen}'] = trend(10_400, 10);
    d.metrics['reconnect_time{chaos:during,profile:recommended}'] = trend(14_000, 10);
    const j = judge(d, DEFAULT_SLOS, [], { profiles: [p4, rec] });
    assert.equal(j.verdict, 'pass', j.headline);
    assert.equal(j.slos.find((x) => x.name === 'reconnect_p95')!.status, 'n/a', 'no link was lost in steady state');
    assert.deepEqual(j.findings, [
      "under faults, esp32-p4-screen reconnects in p(95) 10.4 s, over reconnect_p95's 10 s: it waits 10 s before it reconnects (reconnect.policy fixed, base 10 s)",
    ]);
    // Findings everywhere the verdict is: the count, the terminal, JUnit; met counts only what passed.
    const met = j.slos.filter((r) => r.status === 'pass').length;
    assert.match(j.headline, new RegExp(`PASS \\(${met} SLOs met, 1 firmware finding`));
    assert.ok(verdictLines(j).some((l) => l.includes('- under faults, esp32-p4-screen reconnects')));
    assert.match(junitXml(j, 's', 1), /name="firmware findings">\s*<system-out>finding: under faults, esp32-p4-screen/);
  });

  it('the same breach by a profile whose behaviour does not explain it fails the server', () => {
    const d = { metrics: { ...healthyMetrics() } } as SummaryData;
    d.metrics.connection_drops = counter(20);
    d.metrics['reconnect_time{chaos:steady}'] = trend(11_000, 20);
    d.metrics['reconnect_time{chaos:steady,profile:recommended}'] = trend(11_000, 10);
    const j = judge(d, DEFAULT_SLOS, [], { profiles: [p4, rec] });
    assert.equal(j.verdict, 'fail');
    assert.equal(j.slos.find((x) => x.name === 'reconnect_p95')!.status, 'fail');
    assert.equal(firmwareReason(rec, { metric: 'reconnect_time', target: 10_000, aggregation: 'p(95)' }), null);
    assert.match(
      firmwareReason(PROFILES['web-heartbeat']!, { metric: 'devices_gave_up', target: 0, aggregation: 'count' })!,
      /gives up after 1 reconnect tries/,
    );
  });
});

describe('a server that overwhelms the tester', () => {
  it('FAILs (the server broke the protocol), and a saturated tester with no violation is INVALID', () => {
    const d = { metrics: { ...healthyMetrics(), vu_loop_lag: trend(900, 40) } } as SummaryData;
    assert.equal(judge(d, DEFAULT_SLOS).verdict, 'invalid');
    d.metrics.protocol_violations = counter(40);
    d.metrics['protocol_violations{kind:flood}'] = counter(40);
    const j = judge(d, DEFAULT_SLOS);
    assert.equal(j.verdict, 'fail', j.headline);
    assert.match(j.headline, /protocol_violations/);
    assert.match(
      j.failures.join(' '),
      /the server overwhelmed the tester with 40 protocol violation\(s\): generator saturated/,
    );
    assert.match(j.slos.find((r) => r.name === 'protocol_violations')!.culprits.join(' '), /kind flood ×40/);
  });
});

describe('the engine timer lag per firing (core/timer-lag.ts)', () => {
  it('takes a quantile from bucket counts, linear within a bucket', () => {
    // Bounds 0.5, 1, 2, 3, 5, …: 90 firings ≤ 0.5 ms, 9 in (2, 3], 1 in (10, 20].
    const counts = [90, 0, 0, 9, 0, 0, 1, 0, 0, 0, 0, 0];
    assert.equal(timerLagQuantile(counts, 0.5), (0.5 * 50) / 90);
    assert.equal(timerLagQuantile(counts, 0.99), 3);
    assert.equal(timerLagQuantile(counts, 0.995), 15);
    assert.equal(timerLagQuantile([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4], 0.5), 1000, 'past the last bound: the bound');
    assert.equal(timerLagQuantile([], 0.99), null);
  });
  it('reads the counts from the submetrics a run declares', () => {
    const names = timerLagSubmetrics('phase:steady');
    assert.equal(names.length, TIMER_LAG_BOUNDS_MS.length + 1);
    assert.equal(names[4], 'timer_firings{phase:steady,lag_le:5}');
    assert.equal(names.at(-1), 'timer_firings{phase:steady,lag_le:inf}');
    const counts = timerLagCounts({ [names[4]!]: { values: { count: 7 } } }, 'phase:steady');
    assert.deepEqual(counts, [0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
  });
});
