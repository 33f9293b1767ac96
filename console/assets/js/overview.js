// Overview: totals per namespace from the catalog, and live charts of the
// runtime's counters (GET /v1/admin/stats every 2 s; rates are the
// differences between two readings).

import { api } from './api.js';
import { h, clear, table, link, fmtBytes, fmtNum } from './dom.js';
import { LineChart } from './chart.js';

function card(label, valueEl, sub) {
  return h('div', { class: 'stat card' }, h('div', { class: 'stat-label' }, label), valueEl, sub ? h('div', { class: 'stat-sub muted' }, sub) : null);
}

const ms = (v) => (v < 1 ? v.toFixed(2) : v < 10 ? v.toFixed(1) : v.toFixed(0)) + ' ms';
const perSec = (v) => (v < 10 ? v.toFixed(1) : fmtNum(v)) + '/s';

export async function render(ctx) {
  const { main } = ctx;
  const v = {};
  for (const k of ['namespaces', 'objects', 'bytes', 'archived', 'active', 'sockets', 'requests', 'turns', 'commit']) {
    v[k] = h('div', { class: 'stat-value', dataset: { stat: k } }, '–');
  }
  const archivedCard = card('Archived', v.archived);
  archivedCard.hidden = true; // shown once the catalog reports archived bytes
  const charts = {
    requests: new LineChart('Requests per second', perSec),
    turns: new LineChart('Turns per second', perSec),
    commit: new LineChart('Mean commit latency', ms),
    active: new LineChart('Active objects', (x) => fmtNum(x)),
  };
  const nsBox = h('div', null, h('p', { class: 'muted' }, 'Loading namespaces…'));
  main.append(
    h('h1', null, 'Overview'),
    h('section', { 'aria-label': 'Totals', class: 'stats' },
      card('Namespaces', v.namespaces),
      card('Objects', v.objects),
      card('Storage', v.bytes, 'hot, on this node'),
      archivedCard,
      card('Active objects', v.active, 'in memory'),
      card('WebSockets', v.sockets),
      card('Requests', v.requests, 'per second'),
      card('Turns', v.turns, 'per second'),
      card('Commit latency', v.commit, 'mean, to durable')),
    h('section', { 'aria-label': 'Live charts', class: 'charts' }, Object.values(charts).map((c) => c.el)),
    h('h2', null, 'Namespaces'),
    nsBox);

  let prev = null;
  ctx.every(2000, async () => {
    const s = await api('/v1/admin/stats', { signal: ctx.signal });
    const t = new Date(s.time).getTime();
    v.active.textContent = fmtNum(s.active);
    v.sockets.textContent = fmtNum(s.sockets);
    charts.active.push(t, s.active);
    if (prev && t > prev.t) {
      const dt = (t - prev.t) / 1000;
      const req = s.requests === null || prev.s.requests === null ? null : (s.requests - prev.s.requests) / dt;
      const turns = (s.turns - prev.s.turns) / dt;
      const commits = s.commits - prev.s.commits;
      const lat = commits > 0 ? (s.commit_nanos - prev.s.commit_nanos) / commits / 1e6 : null;
      charts.requests.push(t, req);
      charts.turns.push(t, turns);
      charts.commit.push(t, lat);
      v.requests.textContent = req === null ? 'n/a' : perSec(req);
      v.turns.textContent = perSec(turns);
      v.commit.textContent = lat === null ? 'idle' : ms(lat);
    }
    prev = { t, s };
  });

  ctx.every(10000, async () => {
    const { namespaces } = await api('/v1/admin/namespaces', { signal: ctx.signal });
    let objects = 0;
    let bytes = 0;
    let archived = null;
    for (const n of namespaces) {
      objects += n.objects;
      bytes += n.bytes;
      if (typeof n.archived_bytes === 'number') archived = (archived || 0) + n.archived_bytes;
    }
    v.namespaces.textContent = fmtNum(namespaces.length);
    v.objects.textContent = fmtNum(objects);
    v.bytes.textContent = fmtBytes(bytes);
    if (archived !== null) { archivedCard.hidden = false; v.archived.textContent = fmtBytes(archived); }
    clear(nsBox).append(table({ text: 'Namespaces', hidden: true },
      ['Namespace', 'Objects', 'Storage', 'Requests', 'Rows read', 'Rows written', 'Class'],
      namespaces.map((n) => [
        link(['objects', n.name], n.name),
        fmtNum(n.objects), fmtBytes(n.bytes), fmtNum(n.requests), fmtNum(n.rows_read), fmtNum(n.rows_written),
        n.registered ? 'registered' : h('span', { class: 'muted' }, 'not registered'),
      ]), { class: 'numeric' }));
  });
}
