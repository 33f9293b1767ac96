// Coordination: the lock table, lock objects, leaders, presence rooms and
// queues. The objects of each namespace come from the admin listing (paged);
// each row's state from the object's own inspect route, refreshed while
// shown. The lock table's locks are rows of a few shard objects, not objects:
// they and their state come from the table's own listing (GET /v1/locks),
// and a lock's page from GET /v1/locks/{name}. A presence room's page
// follows its change feed (SSE) so members appear and leave live.

import { api, request, events, seg, pool } from './api.js';
import { h, clear, table, link, errorBox, timeEl, fmtNum, fmtAgo, fmtTime, pretty } from './dom.js';

const KINDS = {
  // The lock table: list (a page of rows with their state) and url (a
  // lock's inspect route) stand for the admin listing and objURL.
  locks: {
    title: 'Lock table', one: 'Lock of the lock table', empty: 'The lock table has no locks yet.', all: 'The whole lock table →',
    list: (after, size) => `/v1/locks?limit=${size}&after=${encodeURIComponent(after)}`,
    url: (name) => `/v1/locks/${seg(name)}`,
    headers: ['Lock', 'Holder', 'Token', 'Expires', 'Waiters'],
    row: (name, s) => [link(['coord', 'locks', name], name),
      s.holder ? s.holder.owner : h('span', { class: 'muted' }, 'free'),
      s.holder ? fmtNum(s.holder.token) : h('span', { class: 'muted' }, `last ${fmtNum(s.last_token)}`),
      s.holder ? countdown(s.holder.expires_at) : '–', fmtNum(s.waiters)],
  },
  lock: {
    title: 'Lock objects', one: 'Lock', path: '/inspect',
    headers: ['Resource', 'Holder', 'Token', 'Expires', 'Waiters'],
    row: (name, s) => [link(['coord', 'lock', name], name),
      s.holder ? s.holder.owner : h('span', { class: 'muted' }, 'free'),
      s.holder ? fmtNum(s.holder.token) : h('span', { class: 'muted' }, `last ${fmtNum(s.last_token)}`),
      s.holder ? countdown(s.holder.expires_at) : '–', fmtNum(s.waiters.length)],
  },
  leader: {
    title: 'Leaders', one: 'Election group', path: '/inspect',
    headers: ['Group', 'Leader', 'Term', 'Expires', 'Candidates waiting'],
    row: (name, s) => [link(['coord', 'leader', name], name),
      s.leader || h('span', { class: 'muted' }, 'none'), fmtNum(s.term),
      s.leader ? countdown(s.expires_at) : '–', fmtNum(s.candidates.length)],
  },
  presence: {
    title: 'Presence rooms', one: 'Room', path: '/list',
    headers: ['Room', 'Members'],
    row: (name, s) => [link(['coord', 'presence', name], name), fmtNum(s.members.length)],
  },
  queue: {
    title: 'Queues', one: 'Queue', path: '/stats',
    headers: ['Queue', 'Depth', 'Ready', 'Delayed', 'In flight', 'Dead letters'],
    row: (name, s) => [link(['coord', 'queue', name], name), fmtNum(s.depth), fmtNum(s.ready), fmtNum(s.delayed), fmtNum(s.in_flight), fmtNum(s.dead)],
  },
};

const objURL = (kind, name, sub) => `/v1/objects/${seg(kind)}/${seg(name)}${sub}`;

/** countdown is a <time> for a Unix ms deadline that says "in 12 s". */
function countdown(ms) {
  if (!ms) return '–';
  return h('time', { datetime: new Date(ms).toISOString(), title: fmtTime(ms), dataset: { countdown: String(ms) } }, fmtAgo(ms));
}

/** tick updates every countdown under el. */
function tick(el) {
  for (const t of el.querySelectorAll('[data-countdown]')) t.textContent = fmtAgo(Number(t.dataset.countdown));
}

export async function render(ctx) {
  const [kind, name] = ctx.parts;
  if (kind && !KINDS[kind]) {
    ctx.main.append(h('h1', null, 'Coordination'), errorBox({ code: 'not_found', message: 'no coordination kind ' + kind }));
    return;
  }
  if (kind && name !== undefined) return detail(ctx, kind, name);
  if (kind) ctx.main.append(h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, link(['coord'], 'Coordination'), ' / ', KINDS[kind].title));
  ctx.main.append(h('h1', null, kind ? KINDS[kind].title : 'Coordination'));
  if (!kind) {
    ctx.main.append(h('p', { class: 'muted' }, 'The locks of the lock table and the objects of the lock, leader, presence and queue namespaces, with their state, refreshed every 3 s.'));
  }
  for (const k of kind ? [kind] : Object.keys(KINDS)) section(ctx, k, kind ? 50 : 20, !kind);
  ctx.every(1000, async () => tick(ctx.main));
}

function section(ctx, kind, size, summary) {
  const K = KINDS[kind];
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const prev = h('button', { type: 'button', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', disabled: true }, 'Next →');
  const more = h('p', { hidden: true }, link(['coord', kind], K.all ?? `All ${K.title.toLowerCase()} →`));
  const sec = h('section', { class: 'panel', 'aria-labelledby': 'sec-' + kind },
    summary ? h('h2', { id: 'sec-' + kind }, K.title) : h('h2', { id: 'sec-' + kind, class: 'visually-hidden' }, K.title),
    box, summary ? more : h('div', { class: 'pager' }, prev, next));
  ctx.main.append(sec);

  const stack = [];
  let cursor = ''; // the page shown
  let nextCursor = '';
  let asked = ''; // the page last asked for
  let names = [];
  let listed = null; // the lock table's rows of names, which carry their state
  let loads = 0; // pages asked for: only the last one shows
  let at = 0; // the page of names
  async function load(after, again) {
    const n = again ? loads : ++loads;
    if (!again) asked = after;
    const r = await api(K.list ? K.list(after, size) : `/v1/admin/namespaces/${kind}/objects?limit=${size}&after=${encodeURIComponent(after)}`, { signal: ctx.signal });
    if (n !== loads) return;
    cursor = after;
    nextCursor = r.next || '';
    at = n;
    listed = K.list ? r.locks : null;
    names = K.list ? r.locks.map((l) => l.name) : r.objects.map((o) => o.name).filter((o) => o !== '');
    prev.disabled = stack.length === 0;
    next.disabled = !r.next;
    more.hidden = !r.next;
    await show(n);
  }
  async function show(n) {
    if (n !== loads) return;
    if (!names.length) { clear(box).append(h('p', { class: 'muted' }, K.empty ?? `No ${K.title.toLowerCase()} yet.`)); return; }
    const shown = names;
    const states = listed ?? await pool(shown, 6, (o) => api(objURL(kind, o, K.path), { signal: ctx.signal }));
    if (ctx.signal.aborted || n !== loads) return;
    clear(box).append(table({ text: K.title, hidden: true }, K.headers,
      shown.map((o, i) => (states[i] instanceof Error
        ? [link(['coord', kind, o], o), h('span', { class: 'error' }, states[i].message)]
        : K.row(o, states[i]))), { class: 'coord-' + kind }));
  }
  // A refresh inspects the objects shown again; the lock table's page is
  // listed again, state and all.
  const refresh = () => (K.list ? load(asked, true) : show(at));
  prev.addEventListener('click', () => load(stack.pop() ?? ''));
  next.addEventListener('click', () => { stack.push(cursor); load(nextCursor); });
  load('').then(() => ctx.every(3000, refresh), (e) => { if (!ctx.signal.aborted) clear(box).append(errorBox(e)); });
}

// Detail pages.

async function detail(ctx, kind, name) {
  const K = KINDS[kind];
  ctx.main.append(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, link(['coord'], 'Coordination'), ' / ', link(['coord', kind], K.title), ' / ', name),
    h('h1', null, name),
    K.url
      ? h('p', { class: 'muted' }, K.one, ' · a row of a shard object of namespace ', link(['objects', kind], kind))
      : h('p', { class: 'muted' }, K.one, ' · object ', link(['objects', kind, 'o', name], kind + '/' + name)));
  const box = h('div');
  ctx.main.append(box);
  ctx.every(1000, async () => tick(ctx.main));
  if (kind === 'presence') return presence(ctx, name, box);
  if (kind === 'queue') return queue(ctx, name, box);
  ctx.every(2000, async () => {
    const s = await api(K.url ? K.url(name) : objURL(kind, name, '/inspect'), { signal: ctx.signal });
    clear(box).append(kind === 'leader' ? leaderView(s) : lockView(s));
  });
}

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v))));
}

function waitersTable(ws, caption) {
  if (!ws.length) return h('p', { class: 'muted' }, `No ${caption.toLowerCase()}.`);
  return table({ text: caption, hidden: true }, ['#', 'Owner', 'Request', 'Gives up', 'Waiting since'],
    ws.map((w) => [fmtNum(w.seq), w.owner, w.request_id || '–', countdown(w.deadline), timeEl(w.enqueued_at)]));
}

function lockView(s) {
  return h('div', null,
    facts([
      ['Holder', s.holder ? s.holder.owner : 'nobody (free)'],
      ['Fencing token', s.holder ? fmtNum(s.holder.token) : '–'],
      ['Acquired', s.holder ? timeEl(s.holder.acquired_at) : '–'],
      ['Expires', s.holder ? countdown(s.holder.expires_at) : '–'],
      ['Highest token granted', fmtNum(s.last_token)],
    ]),
    h('h2', null, 'Waiters'), waitersTable(s.waiters, 'Waiters'));
}

function leaderView(s) {
  return h('div', null,
    facts([
      ['Leader', s.leader || 'none'],
      ['Term', fmtNum(s.term)],
      ['Expires', s.leader ? countdown(s.expires_at) : '–'],
    ]),
    h('h2', null, 'Candidates waiting'), waitersTable(s.candidates, 'Candidates'));
}

async function queue(ctx, name, box) {
  const stats = h('div');
  const dead = h('div');
  const prev = h('button', { type: 'button', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', disabled: true }, 'Next →');
  box.append(stats, h('h2', null, 'Dead letters'), dead, h('div', { class: 'pager' }, prev, next));
  ctx.every(2000, async () => {
    const s = await api(objURL('queue', name, '/stats'), { signal: ctx.signal });
    clear(stats).append(facts([
      ['Depth', fmtNum(s.depth)], ['Ready', fmtNum(s.ready)], ['Delayed', fmtNum(s.delayed)],
      ['In flight', fmtNum(s.in_flight)], ['Dead letters', fmtNum(s.dead)],
      ['Max attempts', fmtNum(s.config.max_attempts)], ['Backoff', `${fmtNum(s.config.backoff_ms)} ms to ${fmtNum(s.config.max_backoff_ms)} ms`],
    ]));
  });
  const stack = [];
  let cursor = 0;
  let nextCursor = 0;
  async function load(after) {
    const r = await api(objURL('queue', name, `/dead?limit=51&after=${after}`), { signal: ctx.signal });
    const ms = r.messages.slice(0, 50);
    cursor = after;
    nextCursor = r.messages.length > 50 ? ms[ms.length - 1].id : null;
    clear(dead).append(ms.length
      ? table({ text: 'Dead letters', hidden: true }, ['ID', 'Attempts', 'Reason', 'Enqueued', 'Died', 'Body'],
        ms.map((m) => [fmtNum(m.id), fmtNum(m.attempts), m.reason || '–', timeEl(m.enqueued_at), timeEl(m.died_at), h('pre', null, pretty(m.body))]))
      : h('p', { class: 'muted' }, 'No dead letters.'));
    prev.disabled = stack.length === 0;
    next.disabled = nextCursor === null;
  }
  prev.addEventListener('click', () => load(stack.pop() ?? 0));
  next.addEventListener('click', () => { stack.push(cursor); load(nextCursor); });
  await load(0);
}

async function presence(ctx, room, box) {
  const members = new Map();
  const status = h('p', { class: 'muted', role: 'status' }, 'Connecting to the room’s feed…');
  const list = h('div');
  box.append(status, list);
  const draw = () => {
    const ms = [...members.values()].sort((a, b) => (a.member < b.member ? -1 : a.member > b.member ? 1 : 0));
    clear(list).append(ms.length
      ? table({ text: 'Members', hidden: true }, ['Member', 'Metadata', 'Joined', 'Expires', 'Present through'],
        ms.map((m) => [h('span', { class: 'member', dataset: { member: m.member } }, m.member),
          m.metadata === undefined ? '–' : h('code', { class: 'meta' }, JSON.stringify(m.metadata)),
          timeEl(m.joined_at), m.socket ? 'while connected' : countdown(m.expires_at), m.socket ? 'WebSocket' : 'heartbeats']), { class: 'presence-members' })
      : h('p', { class: 'muted empty' }, 'Nobody is here.'));
  };
  // Follow the feed; reconnect from the last event seen if it drops.
  let last = null;
  while (!ctx.signal.aborted) {
    try {
      const hd = { Accept: 'text/event-stream' };
      if (last !== null) hd['Last-Event-ID'] = last;
      const r = await request(objURL('presence', room, '/observe'), { headers: hd, signal: ctx.signal });
      status.textContent = 'Live: members appear and leave as it happens.';
      for await (const ev of events(r)) {
        if (ev.id) last = ev.id;
        let d;
        try { d = JSON.parse(ev.data); } catch { continue; }
        if (ev.event === 'state') {
          members.clear();
          for (const m of d.members || []) members.set(m.member, m);
        } else if (ev.event === 'join' || ev.event === 'update') {
          members.set(d.member.member, d.member);
        } else if (ev.event === 'leave') {
          members.delete(d.member.member);
        }
        draw();
      }
    } catch (e) {
      if (ctx.signal.aborted) return;
      status.replaceChildren(errorBox(e));
    }
    if (ctx.signal.aborted) return;
    status.textContent = 'The feed dropped: reconnecting…';
    await new Promise((res) => setTimeout(res, 2000));
  }
}
