// A real headless browser for report checks: Debian's chromium-headless-shell (installed by .ci/run), driven by
// puppeteer-core over CDP. Offline: the page may load nothing from the network.
import { existsSync } from 'node:fs';
import puppeteer from 'puppeteer-core';

const CANDIDATES = [
  process.env.CHROME_PATH,
  '/usr/bin/chromium-headless-shell',
  '/usr/lib/chromium/chromium-headless-shell',
  '/usr/bin/chromium',
].filter(Boolean) as string[];

export function chromePath(): string {
  const p = CANDIDATES.find((c) => existsSync(c));
  if (!p)
    throw new Error(
      `no headless Chromium: install Debian's chromium-headless-shell (apt-get install chromium-headless-shell) or set CHROME_PATH`,
    );
  return p;
}

export interface PageReport {
  errors: string[];
  /** Requests the page tried to make off the file itself (a self-contained report makes none). */
  requests: string[];
  text: (selector: string) => Promise<string | null>;
  count: (selector: string) => Promise<number>;
  /** Each chart figure's id with the width and height its SVG rendered at. */
  /** Each chart: its size, stroked paths, each axis's tick labels, each legend's labels and its symbols' looks. */
  charts: () => Promise<
    {
      id: string;
      w: number;
      h: number;
      strokedPaths: number;
      axes: string[][];
      legends: { labels: string[]; colors: string[] }[];
    }[]
  >;
  screenshot: (path: string) => Promise<void>;
  close: () => Promise<void>;
}

export async function openPage(fileUrl: string): Promise<PageReport> {
  const browser = await puppeteer.launch({
    executablePath: chromePath(),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run'],
  });
  const page = await browser.newPage();
  const errors: string[] = [];
  const requests: string[] = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on(
    'request',
    (r) => !r.url().startsWith(fileUrl.split('#')[0]!) && !r.url().startsWith('data:') && requests.push(r.url()),
  );
  await page.setViewport({ width: 1200, height: 900 });
  await page.goto(fileUrl, { waitUntil: 'load' });
  return {
    errors,
    requests,
    text: (sel) => page.$eval(sel, (e) => (e as unknown as { innerText: string }).innerText).catch(() => null),
    count: (sel) => page.$$eval(sel, (l) => l.length),
    charts: () =>
      page.$$eval('figure[id^="chart-"]', (figs) =>
        figs.map((f) => {
          const svg = f.querySelector('svg');
          const r = svg?.getBoundingClientRect();
          const strokedPaths = [...(svg?.querySelectorAll('path') ?? [])].filter((p) => {
            const s = (globalThis as unknown as { getComputedStyle(e: unknown): { stroke: string } }).getComputedStyle(
              p,
            ).stroke;
            return s && s !== 'none' && (p.getAttribute('d') ?? '').length > 10;
          }).length;
          // An axis (not the grid Vega draws as an axis of its own): its tick labels.
          const axes = [...(svg?.querySelectorAll('g.role-axis') ?? [])]
            .filter((a) => a.querySelector('g.role-axis-domain, g.role-axis-tick, g.role-axis-label'))
            .map((a) => [...a.querySelectorAll('g.role-axis-label text')].map((t) => (t.textContent ?? '').trim()));
          const legends = [...(svg?.querySelectorAll('g.role-legend') ?? [])].map((l) => ({
            labels: [...l.querySelectorAll('g.role-legend-label text')].map((t) => (t.textContent ?? '').trim()),
            // A symbol's look: its colour, and its dash where a legend tells series apart by dash, not colour.
            colors: [...l.querySelectorAll('g.role-legend-symbol path')].map((p) => {
              const stroke = p.getAttribute('stroke');
              const fill = p.getAttribute('fill');
              const colour = (fill && fill !== 'transparent' && fill !== 'none' ? fill : stroke) ?? '';
              const dash = p.getAttribute('stroke-dasharray');
              return dash ? `${colour} dash ${dash}` : colour;
            }),
          }));
          return { id: f.id, w: r?.width ?? 0, h: r?.height ?? 0, strokedPaths, axes, legends };
        }),
      ),
    screenshot: async (path) => {
      await page.screenshot({ path: path, fullPage: true });
    },
    close: () => browser.close(),
  };
}
