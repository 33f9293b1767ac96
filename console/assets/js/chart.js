// A small live line chart drawn in SVG: no library, no canvas state to
// keep in sync. Each push redraws the path from the kept samples.

import { h, svg, clear } from './dom.js';

const W = 320;
const H = 120;
const PAD = { l: 4, r: 4, t: 8, b: 4 };

/** LineChart is a chart of one series over the last `keep` samples. */
export class LineChart {
  /**
   * title names the series; format(v) formats a value for the labels.
   */
  constructor(title, format, keep = 150) {
    this.title = title;
    this.format = format;
    this.keep = keep;
    this.points = []; // [time ms, value]
    this.valueEl = h('span', { class: 'chart-value' }, '–');
    this.maxEl = h('span', { class: 'chart-max' });
    this.svg = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': title, class: 'chart-svg' });
    this.el = h('figure', { class: 'chart card' },
      h('figcaption', null, h('span', { class: 'chart-title' }, title), this.valueEl),
      this.svg,
      h('div', { class: 'chart-axis muted' }, h('span', null, 'last 5 min'), this.maxEl));
  }

  /** push adds a sample (v null: a gap) and redraws. */
  push(t, v) {
    this.points.push([t, v]);
    if (this.points.length > this.keep) this.points.shift();
    this.draw();
  }

  draw() {
    const pts = this.points;
    const vals = pts.map((p) => p[1]).filter((v) => v !== null && Number.isFinite(v));
    const last = pts.length ? pts[pts.length - 1][1] : null;
    this.valueEl.textContent = last === null || last === undefined ? '–' : this.format(last);
    const max = Math.max(1e-9, ...vals) * 1.1;
    this.maxEl.textContent = vals.length ? 'max ' + this.format(Math.max(...vals)) : '';
    this.svg.setAttribute('aria-label', `${this.title}: ${this.valueEl.textContent}`);
    clear(this.svg);
    for (const f of [0.25, 0.5, 0.75]) {
      const y = PAD.t + (H - PAD.t - PAD.b) * f;
      this.svg.append(svg('line', { x1: 0, x2: W, y1: y, y2: y, class: 'grid' }));
    }
    if (pts.length < 2) return;
    const t0 = pts[0][0];
    const t1 = pts[pts.length - 1][0];
    const span = Math.max(1, t1 - t0);
    const x = (t) => PAD.l + ((t - t0) / span) * (W - PAD.l - PAD.r);
    const y = (v) => H - PAD.b - (v / max) * (H - PAD.t - PAD.b);
    let d = '';
    let area = '';
    let pen = false;
    for (const [t, v] of pts) {
      if (v === null || !Number.isFinite(v)) { pen = false; continue; }
      const px = x(t).toFixed(1);
      const py = y(v).toFixed(1);
      d += (pen ? 'L' : 'M') + px + ' ' + py;
      pen = true;
    }
    const valid = pts.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (valid.length >= 2) {
      area = `M${x(valid[0][0]).toFixed(1)} ${H - PAD.b}` +
        valid.map(([t, v]) => `L${x(t).toFixed(1)} ${y(v).toFixed(1)}`).join('') +
        `L${x(valid[valid.length - 1][0]).toFixed(1)} ${H - PAD.b}Z`;
      this.svg.append(svg('path', { d: area, class: 'area' }));
    }
    this.svg.append(svg('path', { d, class: 'line', 'vector-effect': 'non-scaling-stroke' }));
  }
}
