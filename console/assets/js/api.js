// The API client: every request carries the admin token (if any) in the
// Authorization header, never in a URL. The token lives in this tab's
// session storage (and memory), so closing the tab signs out.

const KEY = 'cairn.token';
let token = '';
try { token = sessionStorage.getItem(KEY) || ''; } catch { token = ''; }

const listeners = new Set();

/** onUnauthorized registers fn, called when a request answers 401. */
export function onUnauthorized(fn) { listeners.add(fn); }

/** hasToken reports whether a token is set. */
export function hasToken() { return token !== ''; }

/** setToken sets the token for this tab; '' signs out. */
export function setToken(t, remember = true) {
  token = t;
  try {
    if (t && remember) sessionStorage.setItem(KEY, t);
    else sessionStorage.removeItem(KEY);
  } catch { /* storage may be off: memory only */ }
}

/** APIError is an error answer of the API: {"error": {code, message}}. */
export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra) {
  const hd = new Headers(extra);
  if (token) hd.set('Authorization', 'Bearer ' + token);
  return hd;
}

async function failure(r) {
  let code = 'http_' + r.status;
  let message = r.statusText || 'request failed';
  try {
    const b = await r.json();
    if (b && b.error) { code = b.error.code || code; message = b.error.message || message; }
  } catch { /* not JSON */ }
  if (r.status === 401) for (const fn of listeners) fn();
  return new APIError(r.status, code, message);
}

/**
 * request sends a request and returns the Response, or throws APIError.
 * opts: method, json (a body to send as JSON), body, headers, signal.
 */
export async function request(path, opts = {}) {
  const hd = headers(opts.headers);
  let body = opts.body;
  if (opts.json !== undefined) {
    hd.set('Content-Type', 'application/json');
    body = JSON.stringify(opts.json);
  }
  const r = await fetch(path, {
    method: opts.method || 'GET', headers: hd, body, signal: opts.signal,
    credentials: 'omit', cache: 'no-store', redirect: 'error', referrerPolicy: 'no-referrer',
  });
  if (!r.ok) throw await failure(r);
  return r;
}

/** api sends a request and returns its JSON answer. */
export async function api(path, opts) {
  const r = await request(path, opts);
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}

/**
 * seg escapes one path segment. '.' is escaped too, since the server
 * refuses '.' and '..' segments (a key or name may be either).
 */
export function seg(s) {
  return encodeURIComponent(s).replace(/\./g, '%2E');
}

/** qs builds a query string from an object, skipping empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? '?' + s : '';
}

/**
 * events reads a Server-Sent Events response (fetch, so that it can POST
 * and send the Authorization header, which EventSource cannot) and yields
 * {event, data, id} as each event arrives.
 */
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let ev = { event: 'message', data: [], id: '' };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (ev.data.length) yield { event: ev.event, data: ev.data.join('\n'), id: ev.id };
          ev = { event: 'message', data: [], id: ev.id };
          continue;
        }
        if (line.startsWith(':')) continue; // a comment: keep-alive
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? '' : line.slice(i + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'event') ev.event = val;
        else if (field === 'data') ev.data.push(val);
        else if (field === 'id') ev.id = val;
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // closes the connection if the reader stopped early
  }
}

/**
 * pool runs fn over items with at most n in flight, keeping order of
 * results; errors become results (an Error), so one failure costs one row.
 */
export async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      try { out[i] = await fn(items[i], i); } catch (e) { out[i] = e instanceof Error ? e : new Error(String(e)); }
    }
  }
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}
