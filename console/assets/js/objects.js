// Objects: the namespaces, a paged and searchable object list per
// namespace (server-side paging: the admin listing's cursor; search by name
// prefix reads the catalog's name index), and an object page with its
// catalog entry, KV, SQL console, alarm and WebSockets.

import { api, request, seg, qs, APIError } from './api.js';
import { h, clear, table, link, route, errorBox, announce, confirmButton, timeEl, fmtBytes, fmtNum, fmtTime, short } from './dom.js';

const PAGE = 50;

export async function render(ctx) {
  const [ns, mode, name] = ctx.parts;
  if (!ns) return namespaces(ctx);
  if (mode === 'o' && name !== undefined) return object(ctx, ns, name, false);
  if (mode === 'id' && name !== undefined) return object(ctx, ns, name, true);
  return list(ctx, ns);
}

async function namespaces(ctx) {
  const { main } = ctx;
  main.append(h('h1', null, 'Objects'), h('p', { class: 'muted' }, 'Pick a namespace.'));
  const { namespaces } = await api('/v1/admin/namespaces', { signal: ctx.signal });
  main.append(table({ text: 'Namespaces', hidden: true }, ['Namespace', 'Objects', 'Storage'],
    namespaces.map((n) => [link(['objects', n.name], n.name), fmtNum(n.objects), fmtBytes(n.bytes)]), { class: 'numeric' }));
}

/** objectLink links to an object's page, by name or (unnamed) by ID. */
export function objectLink(ns, o, text) {
  return o.name !== '' && o.name !== undefined
    ? link(['objects', ns, 'o', o.name], text ?? o.name)
    : link(['objects', ns, 'id', o.id], text ?? '(unnamed) ' + short(o.id));
}

/**
 * pagedObjects fetches one page of a namespace's objects: the plain
 * listing, or with a prefix the search. The server answers a search page
 * in one request; the loop still follows next while a page is short, as
 * servers whose search walked the catalog in bounded steps need.
 * progress(scanned) is told how far the search got.
 */
export async function pagedObjects(ns, prefix, after, signal, progress, limit = PAGE) {
  const base = `/v1/admin/namespaces/${seg(ns)}/objects`;
  if (prefix === null || prefix === undefined || prefix === '') {
    const r = await api(base + qs({ limit, after }), { signal });
    return { objects: r.objects, next: r.next };
  }
  const objects = [];
  let cur = after;
  let scanned = 0;
  for (;;) {
    const r = await api(base + qs({ limit: limit - objects.length, after: cur, prefix }), { signal });
    objects.push(...r.objects);
    scanned += r.scanned;
    cur = r.next;
    if (progress) progress(scanned);
    if (!cur || objects.length >= limit) break;
  }
  return { objects, next: cur };
}

async function list(ctx, ns) {
  const { main } = ctx;
  const prefix = ctx.query.get('prefix') || '';
  const input = h('input', { id: 'prefix', name: 'prefix', type: 'search', value: prefix, spellcheck: 'false', autocomplete: 'off' });
  const form = h('form', { class: 'inline-form', role: 'search', onsubmit: (e) => { e.preventDefault(); ctx.go(route(['objects', ns], { prefix: input.value })); } },
    h('label', { for: 'prefix' }, 'Name starts with'), input, h('button', { type: 'submit' }, 'Search'));
  const status = h('p', { class: 'muted', role: 'status' });
  const box = h('div');
  const prev = h('button', { type: 'button', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', disabled: true }, 'Next →');
  main.append(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, link(['objects'], 'Objects'), ' / ', ns),
    h('h1', null, 'Objects in ', h('code', null, ns)), form, status, box,
    h('div', { class: 'pager' }, prev, next));

  const stack = []; // the cursors of the pages before this one
  let cursor = '';
  let nextCursor = '';
  async function load(after) {
    status.textContent = prefix ? 'Searching…' : 'Loading…';
    prev.disabled = next.disabled = true;
    const r = await pagedObjects(ns, prefix, after, ctx.signal, (n) => { status.textContent = `Searching… ${fmtNum(n)} objects looked at`; });
    cursor = after;
    nextCursor = r.next;
    const first = stack.length * PAGE + 1;
    status.textContent = r.objects.length
      ? `Objects ${fmtNum(first)}–${fmtNum(first + r.objects.length - 1)}${prefix ? ' whose name starts with “' + prefix + '”' : ''}${r.next ? '' : ' (the last page)'}`
      : (prefix ? 'No object name starts with “' + prefix + '”.' : 'No objects.');
    clear(box).append(table({ text: `Objects in ${ns}`, hidden: true },
      ['Name', 'ID', 'Size', 'Last activity', 'Alarm', 'In memory'],
      r.objects.map((o) => [
        objectLink(ns, o),
        h('code', { title: o.id, class: 'id' }, short(o.id)),
        fmtBytes(o.bytes), timeEl(o.last_active), o.alarm ? timeEl(o.alarm) : '–', o.active ? 'yes' : 'no',
      ]), { class: 'objects' }));
    prev.disabled = stack.length === 0;
    next.disabled = !r.next;
  }
  prev.addEventListener('click', () => { load(stack.pop() ?? ''); });
  next.addEventListener('click', () => { stack.push(cursor); load(nextCursor); });
  await load('');
}

// The object page.

async function object(ctx, ns, key, byID) {
  const { main, signal } = ctx;
  const base = `/v1/admin/objects/${seg(ns)}/${seg(key)}`;
  const by = byID ? { by: 'id' } : {};
  const url = (sub, params) => base + sub + qs({ ...params, ...by });

  const title = byID ? '(unnamed) ' + short(key) : key;
  const infoBox = h('div');
  main.append(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, link(['objects'], 'Objects'), ' / ', link(['objects', ns], ns), ' / ', title),
    h('h1', { class: 'object-title' }, title),
    infoBox);

  const kv = h('section', { 'aria-labelledby': 'kv-title', class: 'panel' }, h('h2', { id: 'kv-title' }, 'Key-value storage'));
  const sql = h('section', { 'aria-labelledby': 'sql-title', class: 'panel' }, h('h2', { id: 'sql-title' }, 'SQL'));
  const alarm = h('section', { 'aria-labelledby': 'alarm-title', class: 'panel' }, h('h2', { id: 'alarm-title' }, 'Alarm'));
  const sockets = h('section', { 'aria-labelledby': 'ws-title', class: 'panel' }, h('h2', { id: 'ws-title' }, 'WebSockets'));
  const danger = h('section', { 'aria-labelledby': 'danger-title', class: 'panel' }, h('h2', { id: 'danger-title' }, 'Delete'));
  main.append(kv, sql, alarm, sockets, danger);

  async function loadInfo() {
    try {
      const o = await api(url(''), { signal });
      clear(infoBox).append(h('dl', { class: 'facts' },
        fact('Namespace', ns), fact('ID', h('code', { class: 'id' }, o.id)),
        fact('Created', fmtTime(o.created)), fact('Last activity', timeEl(o.last_active)),
        fact('Size', fmtBytes(o.bytes)), fact('In memory', o.active ? 'yes' : 'no'),
        fact('Requests', fmtNum(o.requests)), fact('Rows read', fmtNum(o.rows_read)), fact('Rows written', fmtNum(o.rows_written))));
    } catch (e) {
      if (e instanceof APIError && e.status === 404) {
        clear(infoBox).append(h('p', { class: 'muted' }, 'This object has no storage yet: writing a key or a table creates it.'));
      } else {
        clear(infoBox).append(errorBox(e));
      }
    }
  }

  kvPanel(kv, url, signal, loadInfo);
  sqlPanel(sql, url, signal);
  alarmPanel(alarm, url, signal);
  socketsPanel(sockets, url, signal);
  danger.append(
    h('p', null, 'Deletes all of this object’s storage (KV, tables) and its alarm.'),
    confirmButton('Delete object', 'Press again to delete', async () => {
      try {
        await api(url(''), { method: 'DELETE', signal });
        announce('Object deleted');
        ctx.go(route(['objects', ns]));
      } catch (e) { danger.append(errorBox(e)); }
    }));
  await loadInfo();
}

function fact(name, value) {
  return h('div', null, h('dt', null, name), h('dd', null, value));
}

function kvPanel(panel, url, signal, changed) {
  const prefix = h('input', { id: 'kv-prefix', type: 'search', spellcheck: 'false', autocomplete: 'off' });
  const status = h('p', { class: 'muted', role: 'status' });
  const box = h('div');
  const editor = h('div');
  const prev = h('button', { type: 'button', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', disabled: true }, 'Next →');
  panel.append(
    h('form', { class: 'inline-form', onsubmit: (e) => { e.preventDefault(); stack.length = 0; load(''); } },
      h('label', { for: 'kv-prefix' }, 'Key prefix'), prefix, h('button', { type: 'submit' }, 'Filter'),
      h('button', { type: 'button', class: 'quiet', onclick: () => edit(null) }, 'New key')),
    editor, status, box, h('div', { class: 'pager' }, prev, next));

  const stack = [];
  let start = '';
  let nextStart = null;
  async function load(from) {
    status.textContent = 'Loading…';
    const r = await api(url('/kv', { prefix: prefix.value, start: from, limit: PAGE + 1, value_bytes: 200 }), { signal });
    start = from;
    const entries = r.entries.slice(0, PAGE);
    nextStart = r.entries.length > PAGE ? entries[entries.length - 1].key + '\u0000' : null;
    prev.disabled = stack.length === 0;
    next.disabled = nextStart === null;
    status.textContent = entries.length ? `${fmtNum(entries.length)} key${entries.length === 1 ? '' : 's'} on this page${nextStart === null ? '' : ', more after'}` : 'No keys.';
    clear(box);
    if (!entries.length) return;
    box.append(table({ text: 'Keys', hidden: true }, ['Key', 'Value', 'Size', 'Actions'],
      entries.map((e) => [
        h('code', { class: 'kv-key' }, e.key),
        e.encoding === 'base64'
          ? h('span', { class: 'muted' }, `binary (base64) ${e.value}${e.truncated ? '…' : ''}`)
          : h('span', { class: 'kv-value' }, e.value + (e.truncated ? '…' : '')),
        fmtBytes(e.size),
        h('span', { class: 'actions' },
          h('button', { type: 'button', class: 'quiet', 'aria-label': 'Edit ' + e.key, onclick: () => edit(e) }, 'Edit'),
          confirmButton('Delete', 'Confirm', async () => {
            try {
              await api(url('/kv/' + seg(e.key)), { method: 'DELETE', signal });
              announce('Deleted ' + e.key);
              await load(start);
              changed();
            } catch (err) { status.replaceChildren(errorBox(err)); }
          }, { 'aria-label': 'Delete ' + e.key })),
      ]), { class: 'kv' }));
  }
  prev.addEventListener('click', () => load(stack.pop() ?? ''));
  next.addEventListener('click', () => { stack.push(start); load(nextStart); });

  async function edit(entry) {
    const keyIn = h('input', { id: 'kv-key', type: 'text', required: true, spellcheck: 'false', autocomplete: 'off', value: entry ? entry.key : '' });
    if (entry) keyIn.readOnly = true;
    const valIn = h('textarea', { id: 'kv-value', rows: 6, spellcheck: 'false' });
    const err = h('div');
    const form = h('form', { class: 'card editor', 'aria-label': entry ? 'Edit key' : 'New key' },
      h('label', { for: 'kv-key' }, 'Key'), keyIn,
      h('label', { for: 'kv-value' }, 'Value (text)'), valIn, err,
      h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Save'),
        h('button', { type: 'button', class: 'quiet', onclick: () => clear(editor) }, 'Cancel')));
    clear(editor).append(form);
    if (entry && entry.encoding === 'base64') {
      valIn.disabled = true;
      valIn.value = '';
      err.append(h('p', { class: 'muted' }, `This value is binary (${fmtBytes(entry.size)}): it cannot be edited as text here.`));
      form.querySelector('[type=submit]').disabled = true;
    } else if (entry) {
      valIn.value = entry.truncated ? 'Loading…' : entry.value;
      valIn.disabled = entry.truncated;
      if (entry.truncated) {
        try {
          const r = await request(url('/kv/' + seg(entry.key)), { signal });
          valIn.value = await r.text();
          valIn.disabled = false;
        } catch (e) { err.append(errorBox(e)); }
      }
    }
    (entry ? valIn : keyIn).focus();
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clear(err);
      try {
        await api(url('/kv/' + seg(keyIn.value)), { method: 'PUT', body: new TextEncoder().encode(valIn.value), headers: { 'Content-Type': 'application/octet-stream' }, signal });
        announce('Saved ' + keyIn.value);
        clear(editor);
        await load(start);
        changed();
      } catch (e) { err.append(errorBox(e)); }
    });
  }
  load('').catch((e) => { if (!signal.aborted) status.replaceChildren(errorBox(e)); });
}

const MAX_ROWS = 1000;

function cell(v) {
  if (v === null) return h('span', { class: 'null' }, 'NULL');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function sqlPanel(panel, url, signal) {
  const text = h('textarea', { id: 'sql-text', rows: 4, spellcheck: 'false', placeholder: 'SELECT name FROM sqlite_schema WHERE type = \'table\'' });
  const args = h('input', { id: 'sql-args', type: 'text', spellcheck: 'false', autocomplete: 'off', placeholder: '["value", 42]' });
  const run = h('button', { type: 'submit' }, 'Run');
  const out = h('div', { class: 'sql-out', 'aria-live': 'polite' });
  const form = h('form', { class: 'sql-form' },
    h('label', { for: 'sql-text' }, 'Statement'), text,
    h('label', { for: 'sql-args' }, 'Arguments, a JSON array (optional)'), args,
    h('div', { class: 'row' }, run, h('span', { class: 'muted' }, 'Ctrl+Enter runs it. It runs in one turn of the object, like any write.')));
  panel.append(form, out);
  text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(out);
    let a;
    if (args.value.trim()) {
      try {
        a = JSON.parse(args.value);
        if (!Array.isArray(a)) throw new Error('the arguments must be a JSON array');
      } catch (err) { out.append(errorBox({ code: 'invalid', message: 'arguments: ' + err.message })); return; }
    }
    run.disabled = true;
    try {
      const r = await api(url('/sql'), { method: 'POST', json: { sql: text.value, args: a }, signal });
      const rows = r.rows.slice(0, MAX_ROWS);
      out.append(h('p', { class: 'muted sql-summary' },
        `${fmtNum(r.rows.length)} row${r.rows.length === 1 ? '' : 's'}${r.rows.length > MAX_ROWS ? ` (showing the first ${fmtNum(MAX_ROWS)})` : ''} · ${fmtNum(r.rows_read)} read · ${fmtNum(r.rows_written)} written`));
      if (r.columns.length) out.append(table({ text: 'Query result', hidden: true }, r.columns, rows.map((row) => row.map(cell)), { class: 'sql-result' }));
    } catch (err) {
      if (!signal.aborted) out.append(errorBox(err));
    } finally {
      run.disabled = false;
    }
  });
}

function alarmPanel(panel, url, signal) {
  const shown = h('p');
  const when = h('input', { id: 'alarm-at', type: 'datetime-local', step: 1 });
  const err = h('div');
  panel.append(shown,
    h('form', { class: 'inline-form', onsubmit: async (e) => {
      e.preventDefault();
      clear(err);
      const d = new Date(when.value);
      if (!when.value || Number.isNaN(d.getTime())) { err.append(errorBox({ code: 'invalid', message: 'pick a date and time' })); return; }
      try { await api(url('/alarm'), { method: 'PUT', json: { at: d.toISOString() }, signal }); announce('Alarm set'); await load(); } catch (x) { err.append(errorBox(x)); }
    } }, h('label', { for: 'alarm-at' }, 'Set to'), when, h('button', { type: 'submit' }, 'Set alarm'),
    h('button', { type: 'button', class: 'quiet', onclick: async () => {
      clear(err);
      try { await api(url('/alarm'), { method: 'DELETE', signal }); announce('Alarm deleted'); await load(); } catch (x) { err.append(errorBox(x)); }
    } }, 'Delete alarm')), err);
  async function load() {
    const a = await api(url('/alarm'), { signal });
    shown.replaceChildren(a.at ? h('span', null, 'Fires ', timeEl(a.at), ' (', fmtTime(a.at), ')') : h('span', { class: 'muted' }, 'No alarm set.'));
  }
  load().catch((e) => { if (!signal.aborted) shown.replaceChildren(errorBox(e)); });
}

function socketsPanel(panel, url, signal) {
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  panel.append(box);
  api(url('/sockets'), { signal }).then((r) => {
    clear(box).append(r.sockets.length
      ? table({ text: 'Open WebSockets', hidden: true }, ['Socket', 'Tags'],
        r.sockets.map((s) => [h('code', null, s.id), s.tags.length ? h('ul', { class: 'tags' }, s.tags.map((t) => h('li', null, t))) : h('span', { class: 'muted' }, 'none')]))
      : h('p', { class: 'muted' }, 'No open WebSockets.'));
  }).catch((e) => {
    if (signal.aborted) return;
    clear(box).append(e instanceof APIError && e.status === 404 ? h('p', { class: 'muted' }, 'This server does not list sockets.') : errorBox(e));
  });
}
