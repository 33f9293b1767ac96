// DOM helpers. Everything the console shows comes from the server and is
// untrusted: text goes in through text nodes and textContent only, never
// through HTML parsing (the page's CSP enforces Trusted Types, so an HTML
// string sink would throw anyway).

/**
 * h builds an element. attrs: class, text, hidden, dataset, on* handlers
 * (functions), and plain attributes (set with setAttribute). Children are
 * nodes, strings (text nodes), arrays of those, or null/undefined/false
 * (skipped).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = String(v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'value') el.value = v;
      else if (k === 'checked' || k === 'disabled' || k === 'hidden') el[k] = Boolean(v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

/** append adds children (see h) to el. */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** clear removes every child of el. */
export function clear(el) {
  el.replaceChildren();
  return el;
}

/** svg builds an SVG element with attributes. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/** link is an in-console link to a route given as path segments. */
export function link(segments, text, attrs) {
  return h('a', { href: route(segments), ...attrs }, text);
}

/** route makes a hash route from path segments, each escaped. */
export function route(segments, query) {
  let r = '#/' + segments.map((s) => encodeURIComponent(s)).join('/');
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const s = q.toString();
    if (s) r += '?' + s;
  }
  return r;
}

/** table builds a table; rows are arrays of cells (nodes or text). */
export function table(caption, headers, rows, attrs) {
  return h('div', { class: 'table-wrap' },
    h('table', attrs,
      caption ? h('caption', { class: caption.hidden ? 'visually-hidden' : null }, caption.text ?? caption) : null,
      h('thead', null, h('tr', null, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', null, rows.map((r) => h('tr', null, r.map((c, i) => h('td', { dataset: { label: headers[i] ?? '' } }, c)))))));
}

/** errorBox shows an error plainly (role=alert). */
export function errorBox(err) {
  const code = err && err.code ? err.code + ': ' : '';
  return h('p', { class: 'error', role: 'alert' }, code + (err && err.message ? err.message : String(err)));
}

/** announce says msg to screen readers. */
export function announce(msg) {
  const live = document.getElementById('live');
  if (live) live.textContent = msg;
}

/**
 * confirmButton is a button that asks for a second press within 4 s
 * before running fn (no blocking dialogs).
 */
export function confirmButton(label, confirmLabel, fn, attrs) {
  let armed = null;
  const b = h('button', { type: 'button', class: 'danger', ...attrs }, label);
  b.addEventListener('click', async () => {
    if (!armed) {
      b.textContent = confirmLabel;
      b.classList.add('armed');
      armed = setTimeout(() => { armed = null; b.textContent = label; b.classList.remove('armed'); }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.textContent = label;
    b.classList.remove('armed');
    b.disabled = true;
    try { await fn(); } finally { b.disabled = false; }
  });
  return b;
}

// Formatting.

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** fmtBytes formats a byte count. */
export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0)) + ' ' + units[i];
}

/** fmtNum formats a number with digit grouping. */
export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** fmtTime formats a time (RFC 3339 text, Date or Unix ms) as local time. */
export function fmtTime(t) {
  if (!t) return '–';
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime()) || d.getTime() <= 0) return '–';
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

/** fmtAgo formats how long ago (or in how long) t is. */
export function fmtAgo(t, now = Date.now()) {
  if (!t) return '–';
  const ms = (t instanceof Date ? t.getTime() : new Date(t).getTime()) - now;
  if (Number.isNaN(ms)) return '–';
  const a = Math.abs(ms);
  let s;
  if (a < 1000) s = 'now';
  else if (a < 60e3) s = Math.round(a / 1e3) + ' s';
  else if (a < 3600e3) s = Math.round(a / 60e3) + ' min';
  else if (a < 86400e3) s = Math.round(a / 3600e3) + ' h';
  else if (a < 30 * 86400e3) s = Math.round(a / 86400e3) + ' d';
  else return (t instanceof Date ? t : new Date(t)).toLocaleDateString(undefined, { dateStyle: 'medium' });
  if (s === 'now') return s;
  return ms < 0 ? s + ' ago' : 'in ' + s;
}

/** timeEl is a <time> element showing fmtAgo, the full time as its title. */
export function timeEl(t) {
  if (!t) return '–';
  const d = new Date(t);
  if (Number.isNaN(d.getTime()) || d.getTime() <= 0) return '–';
  return h('time', { datetime: d.toISOString(), title: fmtTime(d) }, fmtAgo(d));
}

/** short shortens a long ID for display, keeping its start. */
export function short(id, n = 12) {
  return id && id.length > n ? id.slice(0, n) + '…' : id;
}

/** json pretty-prints a value for a <pre>. */
export function pretty(v) {
  try { return JSON.stringify(v, null, 2); } catch { return String(v); }
}
