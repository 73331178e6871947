// A hand-written SVG line chart: one line per series over the minutes given. Lines differ by
// colour AND dash pattern, so they can be told apart without colour; the figure is labelled
// with a one-sentence summary for screen readers (the totals table below carries the numbers).

const SVG = 'http://www.w3.org/2000/svg';
const PALETTE = ['#1d4f73', '#c2571a', '#2f7d4f', '#7b3f9e', '#a3231a', '#4a6b8a', '#8a6d00', '#00707a'];
const DASHES = ['', '6 3', '2 3', '10 3 2 3', '1 2', '12 4', '4 4', '8 2 2 2'];
const W = 560, H = 200, PAD = { left: 40, right: 12, top: 10, bottom: 26 };

function svg(tag, attrs = {}) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  return n;
}

// The top of the axis: four equal whole-number steps of 1, 2 or 5 times a power of ten.
function niceMax(v) {
  const raw = Math.max(1, v / 4);
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  return step * 4;
}

// series: [{label, values}]; minuteStarts: epoch ms of each point. Replaces `container`'s content.
export function drawChart(container, { series, minuteStarts, summary, clock }) {
  const n = minuteStarts.length;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values.map(Number))));
  const x = (i) => PAD.left + (n <= 1 ? 0 : (i * (W - PAD.left - PAD.right)) / (n - 1));
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);

  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary, focusable: 'false' });
  const grid = svg('g', { class: 'grid' });
  const axis = svg('g', { class: 'axis', 'aria-hidden': 'true' });
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4;
    grid.append(svg('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    const label = svg('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' });
    label.textContent = String(Math.round(v));
    axis.append(label);
  }
  for (let i = 0; i < n; i += Math.max(1, Math.ceil(n / 5))) {
    const label = svg('text', { x: x(i), y: H - 8, 'text-anchor': 'middle' });
    label.textContent = clock(minuteStarts[i]);
    axis.append(label);
  }
  root.append(grid, axis);

  series.forEach((s, k) => {
    const d = s.values.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(Number(v) || 0).toFixed(1)}`).join(' ');
    const path = svg('path', {
      d, class: 'series', fill: 'none', stroke: PALETTE[k % PALETTE.length], 'stroke-width': 2.2,
      'stroke-linejoin': 'round', 'stroke-linecap': 'round',
    });
    if (DASHES[k % DASHES.length]) path.setAttribute('stroke-dasharray', DASHES[k % DASHES.length]);
    const title = svg('title');
    title.textContent = `${s.label}: ${s.values.map(Number).reduce((a, b) => a + b, 0)} in 15 minutes`;
    path.append(title);
    root.append(path);
  });

  const legend = document.createElement('ul');
  legend.className = 'legend';
  legend.setAttribute('aria-hidden', 'true');  // the totals table names every series
  series.forEach((s, k) => {
    const key = svg('svg', { viewBox: '0 0 26 10' });
    const line = svg('line', { x1: 1, x2: 25, y1: 5, y2: 5, stroke: PALETTE[k % PALETTE.length], 'stroke-width': 2.5 });
    if (DASHES[k % DASHES.length]) line.setAttribute('stroke-dasharray', DASHES[k % DASHES.length]);
    key.append(line);
    const li = document.createElement('li');
    li.append(key, s.label);
    legend.append(li);
  });
  if (!series.length) {
    const li = document.createElement('li');
    li.textContent = 'Nothing yet';
    legend.append(li);
  }
  container.replaceChildren(root, legend);
}
