/**
 * Write a run's report to a directory: `report.html` (self-contained) plus the main charts as SVG
 * files for READMEs. Every file is written atomically (temp file, fsync, rename, fsync directory).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/safetensors-file.js';
import type { RunLog } from '../train/metrics.js';
import { renderCharts } from './charts.js';
import { reportHtmlFromCharts } from './html.js';

/** File names of the report's chart SVGs, by chart. MoE charts are not written for a dense run. */
export const REPORT_SVG_FILES = {
  loss: 'loss.svg',
  expertLoad: 'expert-load.svg',
  dropFraction: 'drop-fraction.svg',
  routerEntropy: 'router-entropy.svg',
  throughput: 'tokens-per-second.svg',
} as const;

/** File name of the report page. */
export const REPORT_HTML_FILE = 'report.html';

/** Paths written by `writeReport`. */
export interface WrittenReport {
  /** Path of report.html. */
  html: string;
  /** Paths of the SVG files written (loss, expert load, drop fraction, router entropy, tokens/s; the MoE ones only for MoE runs). */
  svgs: string[];
}

/** Render `log` and write report.html plus the chart SVGs into `dir` (created if missing), each file atomically. */
export async function writeReport(dir: string, log: RunLog): Promise<WrittenReport> {
  await mkdir(dir, { recursive: true });
  const charts = await renderCharts(log);
  const enc = new TextEncoder();
  const svgs: string[] = [];
  for (const key of ['loss', 'expertLoad', 'dropFraction', 'routerEntropy', 'throughput'] as const) {
    const svg = charts[key];
    if (svg === null) continue;
    const path = join(dir, REPORT_SVG_FILES[key]);
    await writeFileAtomic(path, enc.encode(svg.startsWith('<?xml') ? svg : `<?xml version="1.0" encoding="UTF-8"?>\n${svg}`));
    svgs.push(path);
  }
  // The page last: once report.html exists, the SVGs beside it are complete too.
  const html = join(dir, REPORT_HTML_FILE);
  await writeFileAtomic(html, enc.encode(reportHtmlFromCharts(log, charts)));
  return { html, svgs };
}
