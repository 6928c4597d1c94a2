// Timelines, faults and SLOs as data: validation names the bad entry, thresholds derive from SLOs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DEFAULT_SLOS, resolveSlos, sloThresholds } from '../../core/slo.ts';
import { defaultDevicesPerVu, parseDuration, readRunConfig, segmentDevicesPerVu } from '../../core/run-config.ts';
import { FAULTS, LINK_ACTIONS, TOXICS } from '../../core/faults.ts';
import { actionRequest, apiError, requestUrl } from '../../core/toxiproxy-api.ts';
import { TIMELINES, lastLinkDeath, loadTimeline, validateTimeline } from '../../core/timelines.ts';
import { serverSizedFor, toxiproxyShardsFor } from '../../scripts/stack.ts';

/** Reads the checkout's own files by repository path (the shipped dialects). */
const repoFile = (p: string) => readFileSync(new URL(`../../${p}`, import.meta.url), 'utf8');

const noFile = () => {
  throw new Error('no file');
};

describe('timelines', () => {
  it('ships valid named timelines that fit their scenarios', () => {
    for (const name of ['flaky-wifi', 'half-open', 'server-restart', 'congested-uplink', 'cell-handover']) {
      assert.ok(TIMELINES[name], name);
      assert.ok(loadTimeline(name, noFile, 90_000).steps.length > 0);
    }
  });
  it('names the bad entry and field', () => {
    const cases: [unknown, RegExp][] = [
      [[{ at: '1s', for: '1s', fault: 'nope' }], /entry 0 \(nope\): "fault" must be one of/],
      [
        [
          { at: '1s', for: '1s', fault: 'cut' },
          { at: 'soon', for: '1s', fault: 'cut' },
        ],
        /entry 1 \(cut\): "at" must be a duration/,
      ],
      [[{ at: '1s', for: '0s', fault: 'cut' }], /"for" must be longer than 0/],
      [
        [{ at: '1s', for: '1s', fault: 'latency', params: { latency: -5 } }],
        /param "latency" of "latency" must be a number in 0-60000/,
      ],
      [[{ at: '1s', for: '1s', fault: 'cut', stream: 'upstream' }], /fault "cut" has no direction/],
      [[{ at: '1s', for: '1s', fault: 'latency', toxicity: 2 }], /"toxicity" must be a number in 0-1/],
      [[{ at: '1s', for: '1s', fault: 'latency', colour: 'red' }], /field "colour" is not a field/],
      [
        [{ at: '1s', for: '1s', fault: 'latency', strem: 'up' }],
        /field "strem" is not a field \(did you mean "stream"\?\)/,
      ],
      // Own keys only: a key of the prototype chain is no param.
      [
        JSON.parse('[{"at":"1s","for":"1s","fault":"latency","params":{"constructor":1}}]'),
        /has no param "constructor"/,
      ],
      [
        JSON.parse('[{"at":"1s","for":"1s","fault":"latency","params":{"__proto__":{"latency":5}}}]'),
        /has no param "__proto__"/,
      ],
      // Every entry's problem at once.
      [
        [
          { at: '1s', for: '0s', fault: 'cut' },
          { at: '1s', for: '1s', fault: 'latency', toxicity: 2 },
        ],
        /2 problems: .*entry 0 \(cut\): "for" must be longer than 0; .*entry 1 \(latency\): "toxicity"/,
      ],
      [{ at: 1 }, /must be a list/],
    ];
    for (const [t, re] of cases) assert.throws(() => validateTimeline(t, 'x'), re);
    assert.throws(
      () => validateTimeline([{ at: '50s', for: '20s', fault: 'cut' }], 'x', 60_000),
      /ends at 70s, after the run's DURATION of 60s/,
    );
    // Link faults on one target that overlap: an inner end would lift the outer one (issue 40).
    assert.throws(
      () =>
        validateTimeline(
          [
            { at: '3s', for: '10s', fault: 'cut' },
            { at: '6s', for: '3s', fault: 'cut' },
          ],
          'x',
        ),
      /entries 0 \(cut 3s-13s\) and 1 \(cut 6s-9s\) overlap on proxy voice: .*write one entry \(at 3s, for 10s\)/,
    );
    assert.throws(
      () =>
        validateTimeline(
          [
            { at: '2s', for: '5s', fault: 'server-restart' },
            { at: '4s', for: '5s', fault: 'server-restart' },
          ],
          'x',
        ),
      /overlap on the server/,
    );
    // Toxics compose (each its own), cuts on other proxies or one after another are fine.
    for (const ok of [
      [
        { at: '3s', for: '10s', fault: 'latency' },
        { at: '6s', for: '3s', fault: 'latency' },
      ],
      [
        { at: '3s', for: '3s', fault: 'cut' },
        { at: '6s', for: '3s', fault: 'cut' },
      ],
      [
        { at: '3s', for: '10s', fault: 'cut' },
        { at: '6s', for: '3s', fault: 'cut', proxy: 'other' },
      ],
    ])
      assert.equal(validateTimeline(ok, 'x').length, 2);
    assert.throws(() => loadTimeline('nope', noFile), /unknown TIMELINE "nope"/);
    assert.throws(() => loadTimeline('x.json', () => '[{'), /not valid JSON/);
  });
  it('turns entries into Toxiproxy actions per direction', () => {
    const [s] = validateTimeline(
      [{ at: '2s', for: '3s', fault: 'latency', stream: 'both', params: { latency: 50 } }],
      'x',
    );
    assert.equal(s!.atMs, 2000);
    assert.equal(s!.forMs, 3000);
    assert.deepEqual(
      s!.actions.map(
        (a) => a.kind === 'toxic' && `${a.type}:${a.stream}:${a.attributes.latency}:${a.attributes.jitter}`,
      ),
      ['latency:upstream:50:0', 'latency:downstream:50:0'],
    );
    const [b] = validateTimeline([{ at: '1s', for: '1s', fault: 'blackhole' }], 'x');
    assert.deepEqual(
      b!.actions.map((a) => a.kind === 'toxic' && a.attributes.timeout),
      [0, 0],
    );
    assert.equal(validateTimeline([{ at: '1s', for: '1s', fault: 'cut' }], 'x')[0]!.actions[0]!.kind, 'disable-proxy');
    assert.ok(Object.keys(FAULTS).length >= 10);
  });
  it('knows when the link last died, for disconnect_detect_time', () => {
    const steps = validateTimeline(
      [
        { at: '1s', for: '1s', fault: 'latency' },
        { at: '2s', for: '1s', fault: 'cut' },
        { at: '5s', for: '1s', fault: 'blackhole' },
      ],
      'x',
    );
    assert.equal(lastLinkDeath(steps, 1000, 1500), null);
    assert.equal(lastLinkDeath(steps, 1000, 4000), 3000);
    assert.equal(lastLinkDeath(steps, 1000, 9000), 6000);
  });
});

describe('SLOs', () => {
  it('derive k6 thresholds, with overrides by env and file', () => {
    const th = sloThresholds(DEFAULT_SLOS);
    assert.deepEqual(th['wake_ack_latency{chaos:steady}'], ['p(95)<300']);
    assert.deepEqual(th['response_latency{chaos:steady}'], ['p(95)<800']);
    assert.deepEqual(th['reconnect_time{chaos:steady}'], ['p(95)<10000']);
    assert.deepEqual(th.recovery_time, ['max<30000']);
    assert.deepEqual(th['session_drop_rate{chaos:steady}'], ['rate<0.01']);
    assert.deepEqual(th.devices_gave_up, ['count==0']);
    const s = resolveSlos({ SLO_response_p95: '1500', SLO_reconnect_p95: 'off' }, noFile);
    assert.equal(s.find((x) => x.name === 'response_p95')!.target, 1500);
    assert.equal(
      s.find((x) => x.name === 'reconnect_p95'),
      undefined,
    );
    assert.throws(() => resolveSlos({ SLO_nope: '1' }, noFile), /no SLO named "nope"/);
    assert.throws(() => resolveSlos({ SLO_response_p95: 'fast' }, noFile), /must be a number or 'off'/);
    const f = resolveSlos({ SLO_FILE: 'x.json' }, () =>
      JSON.stringify([{ name: 'ping_p99', metric: 'ping_rtt', aggregation: 'p(99)', op: '<', target: 50 }]),
    );
    assert.equal(f.length, DEFAULT_SLOS.length + 1);
    assert.throws(
      () =>
        resolveSlos(
          { SLO_FILE: 'x.json' },
          () => '[{"name":"x","metric":"ping_rtt","aggregation":"p(42)","op":"<","target":1}]',
        ),
      /"aggregation" must be one of/,
    );
    // A typo'd key would leave the target at its default silently: named, with what it likely meant.
    assert.throws(
      () =>
        resolveSlos(
          { SLO_FILE: 'x.json' },
          () => '[{"name":"x","metric":"ping_rtt","aggregation":"p(99)","op":"<","targte":1}]',
        ),
      /SLO_FILE x\.json entry 0: field "targte" is not a field \(did you mean "target"\?\)/,
    );
    const abort = sloThresholds([{ ...DEFAULT_SLOS.find((x) => x.name === 'wake_ack_p95')!, abortOnFail: true }]);
    assert.deepEqual(abort['wake_ack_latency{chaos:steady}'], [
      { threshold: 'p(95)<300', abortOnFail: true, delayAbortEval: '10s' },
    ]);
  });
});

describe('run config', () => {
  it('reads -e vars with loopback defaults and one-line errors', () => {
    const d = {
      devices: 20,
      duration: '30s',
      profile: 'recommended',
      wake: { mode: 'off' as const, interval_ms: 0, first_min_ms: 0, first_max_ms: 0 },
    };
    const c = readRunConfig({ DEVICES: '120', DEVICES_PER_VU: '50' }, d, noFile, {}, repoFile);
    assert.equal(c.vus, 3);
    // The default layout: 50 per VU on the k6 device; on the native engine 4 VUs of 50 to 2,500 devices.
    const vus = (env: Record<string, string>) => readRunConfig({ RAMP: '1s', ...env }, d, noFile, {}, repoFile).vus;
    const engine = { ENGINE_URL: 'ws://127.0.0.1:7000/control' };
    assert.equal(vus({ DEVICES: '10000' }), 200);
    assert.equal(vus({ DEVICES: '10000', ...engine }), 4);
    assert.equal(vus({ DEVICES: '50000', ...engine }), 20);
    assert.equal(vus({ DEVICES: '120', ...engine }), 3);
    assert.equal(vus({ DEVICES: '20', ...engine }), 1);
    assert.equal(vus({ DEVICES: '10000', DEVICES_PER_VU: '50', ...engine }), 200);
    assert.equal(c.targetUrl, 'ws://127.0.0.1:18000');
    assert.equal(parseDuration('1h30m', 'X'), 5_400_000);
    assert.throws(() => readRunConfig({ DEVICES: 'lots' }, d, noFile, {}, repoFile), /DEVICES must be an integer/);
    assert.throws(
      () => readRunConfig({ TARGET_URL: 'ws://example.com:80' }, d, noFile, {}, repoFile),
      /not loopback: set ALLOW_REMOTE=1/,
    );
    assert.throws(
      () => readRunConfig({ DURATION: '10 minutes' }, d, noFile, {}, repoFile),
      /DURATION must be a duration/,
    );
    assert.throws(() => readRunConfig({ BACKOFF: 'yolo' }, d, noFile, {}, repoFile), /BACKOFF must be one of/);
    assert.equal(
      readRunConfig({ BACKOFF: 'fixed:700' }, d, noFile, {}, repoFile).profiles[0]!.profile.reconnect.base_ms,
      700,
    );
    assert.equal(
      readRunConfig({ TARGET_URL: 'ws://[::1]:9000' }, d, noFile, {}, repoFile).targetUrl,
      'ws://[::1]:9000',
    );
    // A dialect for the whole fleet, checked against each profile before any load.
    const xz = readRunConfig({ PROFILE: 'xiaozhi-esp32' }, d, noFile, {}, repoFile);
    assert.equal(xz.dialects.xiaozhi!.lifecycle, 'per_wake');
    assert.throws(
      () => readRunConfig({ PROFILE: 'recommended', DIALECT: 'xiaozhi' }, d, noFile, {}, repoFile),
      /profile recommended sends JSON pings .* which dialect xiaozhi does not have/,
    );
    assert.throws(
      () => readRunConfig({ DIALECT: 'klingon' }, d, noFile, {}, repoFile),
      /dialect "klingon": give a shipped dialect/,
    );
  });

  it('takes comma-separated TARGET_URL and TOXIPROXY_URL lists (Toxiproxy shards), each entry checked', () => {
    const d = {
      devices: 20,
      duration: '30s',
      profile: 'recommended',
      wake: { mode: 'off' as const, interval_ms: 0, first_min_ms: 0, first_max_ms: 0 },
    };
    const c = readRunConfig(
      {
        TARGET_URL: 'ws://127.0.0.1:18000, ws://127.0.0.1:18001/',
        TOXIPROXY_URL: 'http://127.0.0.1:8474,http://127.0.0.1:8475',
      },
      d,
      noFile,
      {},
      repoFile,
    );
    assert.deepEqual(c.targetUrls, ['ws://127.0.0.1:18000', 'ws://127.0.0.1:18001']);
    assert.equal(c.targetUrl, 'ws://127.0.0.1:18000');
    assert.deepEqual(c.toxiproxyUrls, ['http://127.0.0.1:8474', 'http://127.0.0.1:8475']);
    assert.throws(
      () => readRunConfig({ TARGET_URL: 'ws://127.0.0.1:1,ws://example.com:80' }, d, noFile, {}, repoFile),
      /ws:\/\/example.com:80 is not loopback/,
    );
    assert.throws(
      () => readRunConfig({ TARGET_URL: 'ws://127.0.0.1:1,,ws://127.0.0.1:2' }, d, noFile, {}, repoFile),
      /empty entry/,
    );
    assert.throws(
      () => readRunConfig({ TOXIPROXY_URL: 'http://127.0.0.1:8474,toxi' }, d, noFile, {}, repoFile),
      /TOXIPROXY_URL must be like/,
    );
  });

  it('lays a fleet out so every k6 segment gets a VU (k6 splits by whole VUs)', () => {
    for (const native of [true, false])
      for (let segments = 1; segments <= 16; segments++)
        for (let devices = 1; devices <= 400; devices++) {
          const per = segmentDevicesPerVu(devices, segments, native);
          if (devices < segments) {
            assert.equal(per, null);
            continue;
          }
          assert.ok(per !== null && per >= 1);
          assert.ok(Math.ceil(devices / per) >= segments, `${devices} devices, ${segments} segments: ${per} per VU`);
          assert.ok(per <= defaultDevicesPerVu(Math.ceil(devices / segments), native));
        }
    // Rounding up would leave a segment empty: 5 devices in VUs of 2 are 3 VUs for 4 segments.
    assert.equal(segmentDevicesPerVu(5, 4, true), 1);
    // A large fleet keeps the default layout of each segment's share.
    assert.equal(segmentDevicesPerVu(20_000, 4, true), defaultDevicesPerVu(5_000, true));
  });

  it('sizes Toxiproxy shards by the open-file limit: two descriptors per device', () => {
    assert.equal(toxiproxyShardsFor(5000, 20_000), 1);
    assert.equal(toxiproxyShardsFor(9500, 20_000), 1);
    assert.equal(toxiproxyShardsFor(10_000, 20_000), 2);
    assert.equal(toxiproxyShardsFor(20_000, 20_000), 3);
    assert.equal(toxiproxyShardsFor(20_000, 1_048_576), 1);
    assert.equal(toxiproxyShardsFor(10_000, Infinity), 1);
  });

  it('sizes the reference server to the fleet unless its flags say: workers and cap', () => {
    assert.deepEqual(serverSizedFor(5000, {}, 20_000), {});
    assert.deepEqual(serverSizedFor(50_000, {}, 20_000), { workers: 3 });
    assert.deepEqual(serverSizedFor(60_000, {}, 20_000), { workers: 4, maxConnections: 60_000 });
    assert.deepEqual(serverSizedFor(60_000, { workers: 2, maxConnections: 100 }, 20_000), {});
    assert.deepEqual(serverSizedFor(60_000, {}, Infinity), { maxConnections: 60_000 });
  });
});

describe('the one Toxiproxy path', () => {
  const at = { toxiproxyUrl: 'http://127.0.0.1:8474', controlUrl: '', proxy: 'voice', toxicName: () => 't1' };
  it('keeps toxics and link actions in two tables of one namespace', () => {
    assert.deepEqual(Object.keys(LINK_ACTIONS).sort(), ['cut', 'server-restart']);
    for (const k of Object.keys(TOXICS)) assert.equal(FAULTS[k]!.kind, 'toxic', k);
    for (const k of Object.keys(LINK_ACTIONS)) assert.equal(FAULTS[k]!.kind, 'link', k);
    assert.equal(Object.keys(FAULTS).length, Object.keys(TOXICS).length + Object.keys(LINK_ACTIONS).length);
    const [restart] = validateTimeline([{ at: '1s', for: '1s', fault: 'server-restart' }], 'x');
    assert.equal(restart!.needsControl, true);
    assert.equal(validateTimeline([{ at: '1s', for: '1s', fault: 'cut' }], 'x')[0]!.needsControl, false);
  });
  it('turns each action and phase into the request Toxiproxy documents', () => {
    const [lat] = validateTimeline([{ at: '1s', for: '1s', fault: 'latency', params: { latency: 70 } }], 'x');
    const on = actionRequest(lat!.actions[0]!, 'onset', at);
    assert.ok(!('error' in on));
    assert.equal(`${on.method} ${requestUrl(on)}`, 'POST http://127.0.0.1:8474/proxies/voice/toxics');
    assert.deepEqual(JSON.parse(on.body!), {
      name: 't1',
      type: 'latency',
      stream: 'downstream',
      toxicity: 1,
      attributes: { latency: 70, jitter: 0 },
    });
    const off = actionRequest(lat!.actions[0]!, 'end', at);
    assert.ok(!('error' in off));
    assert.equal(`${off.method} ${off.path}`, 'DELETE /proxies/voice/toxics/t1');
    const cut = actionRequest({ kind: 'disable-proxy' }, 'onset', at);
    assert.ok(!('error' in cut));
    assert.equal(`${cut.method} ${cut.path} ${cut.body}`, 'POST /proxies/voice {"enabled":false}');
    const back = actionRequest({ kind: 'disable-proxy' }, 'end', at);
    assert.ok(!('error' in back) && back.body === '{"enabled":true}');
    const noControl = actionRequest({ kind: 'server-restart' }, 'onset', at);
    assert.ok('error' in noControl && /CONTROL_URL/.test(noControl.error));
    const stop = actionRequest({ kind: 'server-restart' }, 'onset', { ...at, controlUrl: 'http://127.0.0.1:9' });
    assert.ok(!('error' in stop) && stop.service === 'control API' && stop.path === '/server/stop');
  });
  it("keeps Toxiproxy's own error text", () => {
    const r = actionRequest({ kind: 'disable-proxy' }, 'onset', at);
    assert.ok(!('error' in r));
    assert.equal(
      apiError(r, 404, '{"error":"proxy not found","status":404}'),
      'Toxiproxy: POST /proxies/voice -> 404: proxy not found',
    );
    assert.equal(apiError(r, 500, 'boom\n'), 'Toxiproxy: POST /proxies/voice -> 500: boom');
  });
});
