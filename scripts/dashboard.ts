// k6's web dashboard (k6-dashboard.html) made for a voice fleet. k6's own layout charts HTTP requests and k6's
// WebSocket metrics, which a run on the native engine has none of (its only HTTP calls are the chaos VU's to
// Toxiproxy): this one charts the device metrics instead. k6 reads it from XK6_DASHBOARD_CONFIG (its
// internal/dashboard/customize.go); the format is xk6-dashboard's config.json (tabs of sections of panels, each series
// a query `metric[?!tags && aggregate]`).
//
// The dashboard aggregates a metric over all its tags, so it only charts what adds up across tag sets: counters as
// rates, trends as percentiles, rates. The fleet's connected total (a per-VU, per-profile gauge) does not, and is
// left to report.html's chart; links up and down per second stand in for it here.
import { writeFileSync } from 'node:fs';
import type { DeviceMetricName } from '../core/metric-names.ts';

type Agg = 'rate' | 'med' | 'p95' | 'p99' | 'max';

interface Panel {
  title: string;
  kind?: 'chart' | 'summary';
  summary?: string;
  series: { query: string; legend?: string }[];
}

/** A device metric's untagged aggregate; the name is checked against DEVICE_METRICS so a rename cannot leave it. */
function q(name: DeviceMetricName | 'chaos_events', agg: Agg): string {
  return `${name}[?!tags && ${agg}]`;
}

function latency(name: DeviceMetricName, title: string, summary: string): Panel {
  return {
    title,
    summary,
    series: (['med', 'p95', 'p99', 'max'] as const).map((a) => ({
      query: q(name, a),
      legend: a === 'med' ? 'p50' : a,
    })),
  };
}

const overview: { title: string; panels: Panel[] }[] = [
  {
    title: 'Conversations',
    panels: [
      latency(
        'response_latency',
        'Response latency',
        "Voice-to-voice: the end of the user's speech to the first reply audio, the server's endpointing included.",
      ),
      latency('wake_ack_latency', 'Wake acknowledgement', "The wake to the server's acknowledgement."),
      {
        title: 'Sessions per second',
        summary: 'Conversations started, completed and dropped.',
        series: [
          { query: q('sessions_started', 'rate'), legend: 'started' },
          { query: q('sessions_completed', 'rate'), legend: 'completed' },
          { query: q('sessions_dropped', 'rate'), legend: 'dropped' },
        ],
      },
      {
        title: 'Playback',
        summary: 'Replies whose playback ran dry mid-reply, and replies cut short (shares of replies).',
        series: [
          { query: q('reply_stutter', 'rate'), legend: 'stutter' },
          { query: q('reply_truncated', 'rate'), legend: 'truncated' },
        ],
      },
    ],
  },
  {
    title: 'Links',
    panels: [
      {
        title: 'Links up and down per second',
        summary:
          'Devices reaching connected, and connected devices losing their link (all of them, then those outside fault windows).',
        series: [
          { query: q('links_up', 'rate'), legend: 'up' },
          { query: q('links_down', 'rate'), legend: 'down' },
          { query: q('unplanned_drops', 'rate'), legend: 'unplanned drops' },
        ],
      },
      latency('reconnect_time', 'Reconnect time', 'A lost link to the device connected again.'),
      latency('connect_time', 'Connect time', 'A connect attempt to its socket open (TCP and the WebSocket upgrade).'),
      latency('ping_rtt', 'Heartbeat round trip', "The device's keepalive to the server's answer."),
    ],
  },
  {
    title: 'Faults and the tester',
    panels: [
      {
        title: 'Chaos events per second',
        summary: 'Faults applied and lifted on Toxiproxy by the chaos scenario.',
        series: [{ query: q('chaos_events', 'rate'), legend: 'events' }],
      },
      {
        title: "The generator's own lag",
        summary:
          "How late the devices' clock ran (the device engine's timers; with --engine k6 each VU's 1 s probe): past the verdict's bounds the run is INVALID, not the server's fault.",
        series: (['med', 'p99', 'max'] as const).map((a) => ({ query: q('vu_loop_lag', a), legend: a })),
      },
    ],
  },
];

/** The dashboard's configuration: the voice tab, then k6's own summary tab (every metric's totals). */
function dashboardConfig(): object {
  const tab = (id: number, title: string, summary: string, sections: { title: string; panels: Panel[] }[]) => ({
    id: `tab-${id}`,
    title,
    summary,
    sections: sections.map((s, si) => ({
      id: `tab-${id}.section-${si}`,
      ...(s.title ? { title: s.title } : {}),
      panels: s.panels.map((p, pi) => ({ kind: 'chart', ...p, id: `tab-${id}.section-${si}.panel-${pi}` })),
    })),
  });
  const summaryOf = (kind: string) => ({
    title: `${kind[0]!.toUpperCase()}${kind.slice(1)}s`,
    kind: 'summary' as const,
  });
  return {
    title: 'wakestorm: the voice fleet',
    tabs: [
      tab(
        0,
        'Voice fleet',
        'The device metrics over time (report.html has the verdict and the fault windows).',
        overview,
      ),
      tab(1, 'Summary', 'Every metric over the whole run.', [
        { title: '', panels: [{ ...summaryOf('trend'), series: [{ query: '[?!tags && trend]' }] }] },
        {
          title: '',
          panels: (['counter', 'rate', 'gauge'] as const).map((k) => ({
            ...summaryOf(k),
            series: [{ query: `[?!tags && ${k}]` }],
          })),
        },
      ]),
    ],
  };
}

/** Writes the configuration for k6 (XK6_DASHBOARD_CONFIG) and returns its path. */
export function writeDashboardConfig(path: string): string {
  writeFileSync(path, `${JSON.stringify(dashboardConfig(), null, 1)}\n`);
  return path;
}
