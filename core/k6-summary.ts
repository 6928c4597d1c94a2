// k6's summary data, the one type of it: handleSummary's argument, summary.json, what the verdict judges.

/** One metric of k6's summary data (handleSummary's argument, summary.json). */
export interface MetricSummary {
  type: string;
  contains?: string;
  values: Record<string, number>;
  thresholds?: Record<string, { ok: boolean }>;
}

/** k6's summary data as handleSummary receives it and summary.json holds it. */
export interface SummaryData {
  metrics: Record<string, MetricSummary>;
  state?: { testRunDurationMs?: number; isStdOutTTY?: boolean };
  setup_data?: unknown;
}
