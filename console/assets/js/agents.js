// Agents: the configured agents, each agent's sessions (objects of
// namespace "agent" named "{agent}/{session}", found with the admin
// listing's name-prefix search), and a session page: the transcript,
// loaded a page at a time with the history cursor (newest first, older
// pages as you scroll up), a chat box whose reply streams in over SSE
// (resumed from the last event if the connection drops), and the panels
// of panels.js: approvals pending, the state, the schedules.

import { api, request, events, seg, APIError } from './api.js';
import { h, clear, table, link, route, errorBox, announce, timeEl, fmtBytes, fmtNum, pretty } from './dom.js';
import { pagedObjects } from './objects.js';
import { approvalsPanel, statePanel, schedulesPanel } from './panels.js';

const HISTORY_PAGE = 50;

export async function render(ctx) {
  const [agent, session] = ctx.parts;
  if (agent !== undefined && session !== undefined) return sessionPage(ctx, agent, session);
  return agentsPage(ctx, agent);
}

async function agentsPage(ctx, selected) {
  const { main, signal } = ctx;
  main.append(h('h1', null, 'Agents'));
  const { agents } = await api('/v1/agents', { signal });
  if (!agents.length) { main.append(h('p', { class: 'muted' }, 'No agents are configured.')); return; }
  const agent = selected ?? agents[0].name;
  main.append(table({ text: 'Configured agents', hidden: true }, ['Agent', 'Provider', 'Model'],
    agents.map((a) => [a.name === agent ? h('strong', null, a.name) : link(['agents', a.name], a.name), a.provider, a.model])));

  const nameIn = h('input', { id: 'new-session', type: 'text', required: true, spellcheck: 'false', autocomplete: 'off', placeholder: 'chat-1' });
  const status = h('p', { class: 'muted', role: 'status' });
  const box = h('div');
  const prev = h('button', { type: 'button', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', disabled: true }, 'Next →');
  main.append(
    h('h2', null, 'Sessions of ', h('code', null, agent)),
    h('form', { class: 'inline-form', onsubmit: (e) => { e.preventDefault(); if (nameIn.value) ctx.go(route(['agents', agent, nameIn.value])); } },
      h('label', { for: 'new-session' }, 'Open or start a session'), nameIn, h('button', { type: 'submit' }, 'Open')),
    status, box, h('div', { class: 'pager' }, prev, next));

  const prefix = agent + '/';
  const stack = [];
  let cursor = '';
  let nextCursor = '';
  async function load(after) {
    status.textContent = 'Loading sessions…';
    prev.disabled = next.disabled = true;
    const r = await pagedObjects('agent', prefix, after, signal, (n) => { status.textContent = `Looking for sessions… ${fmtNum(n)} objects looked at`; });
    cursor = after;
    nextCursor = r.next;
    status.textContent = r.objects.length ? `${fmtNum(r.objects.length)} sessions on this page${r.next ? ', more after' : ''}` : 'No sessions yet.';
    clear(box).append(table({ text: 'Sessions', hidden: true }, ['Session', 'Last activity', 'Size', 'Requests'],
      r.objects.map((o) => {
        const s = o.name.slice(prefix.length);
        return [link(['agents', agent, s], s), timeEl(o.last_active), fmtBytes(o.bytes), fmtNum(o.requests)];
      })));
    prev.disabled = stack.length === 0;
    next.disabled = !r.next;
  }
  prev.addEventListener('click', () => load(stack.pop() ?? ''));
  next.addEventListener('click', () => { stack.push(cursor); load(nextCursor); });
  await load('');
}

// Rendering messages.

function jsonText(raw) {
  if (raw === undefined || raw === null) return '';
  return typeof raw === 'string' ? raw : pretty(raw);
}

const denied = (p) => p.approval && p.approval.approved === false;

function renderPart(p) {
  switch (p.type) {
    case 'text':
      return h('div', { class: 'part part-text' }, p.text ?? '');
    case 'reasoning':
      return h('details', { class: 'part part-reasoning' }, h('summary', null, 'Reasoning'), h('div', { class: 'part-text' }, p.text ?? ''));
    case 'tool-call':
      return h('div', { class: 'part part-tool', dataset: { call: p.toolCallId ?? '' } },
        h('div', { class: 'part-head' }, 'Tool call ', h('code', null, p.toolName ?? ''), p.toolCallId ? h('span', { class: 'muted' }, ' ' + p.toolCallId) : null),
        h('pre', null, jsonText(p.input)),
        p.approval ? approvalLine(p.approval, p.toolCallId) : null);
    case 'tool-result':
      return h('div', { class: 'part part-tool' + (p.isError ? ' part-error' : '') },
        h('div', { class: 'part-head' }, denied(p) ? 'Tool call denied ' : p.isError ? 'Tool error ' : 'Tool result ', h('code', null, p.toolName ?? ''), p.toolCallId ? h('span', { class: 'muted' }, ' ' + p.toolCallId) : null),
        h('pre', null, jsonText(p.output)));
    default:
      return h('div', { class: 'part' }, h('div', { class: 'part-head muted' }, 'Part ', h('code', null, String(p.type))), h('pre', null, pretty(p)));
  }
}

/**
 * approvalLine is a tool call's approval state: pending (until its
 * deadline, with a button to the decision in the approvals panel),
 * approved or denied.
 */
function approvalLine(a, callId) {
  if (a.approved === undefined || a.approved === null) {
    return h('p', { class: 'approval status-pending', dataset: { approval: 'pending' } },
      'Waiting for approval; denied ', timeEl(a.deadline), ' if nobody decides. ',
      h('button', { type: 'button', class: 'quiet small', onclick: () => toDecision(callId) }, 'Decide…'));
  }
  return h('p', { class: 'approval ' + (a.approved ? 'status-complete' : 'status-error'), dataset: { approval: a.approved ? 'approved' : 'denied' } },
    a.approved ? 'Approved' : 'Denied', a.reason ? ': ' + a.reason : '');
}

/** toDecision moves the focus to a call's Approve button in the approvals panel. */
function toDecision(callId) {
  const item = [...document.querySelectorAll('li.approval-item')].find((li) => li.dataset.call === callId);
  const target = item ? item.querySelector('button') : document.getElementById('approvals-title');
  if (!target) return;
  target.scrollIntoView({ block: 'center' });
  target.focus();
}

function messageHead(m) {
  return h('div', { class: 'msg-head' },
    h('span', { class: 'msg-role' }, m.role),
    m.status && m.status !== 'complete' ? h('span', { class: 'badge status-' + m.status }, m.status) : null,
    m.created_at ? timeEl(m.created_at) : null,
    m.model ? h('span', { class: 'muted' }, m.model) : null,
    m.usage ? h('span', { class: 'muted' }, `${fmtNum(m.usage.input_tokens)} in · ${fmtNum(m.usage.output_tokens)} out`) : null);
}

function renderMessage(m) {
  return h('li', { class: 'msg role-' + m.role, dataset: { id: m.id ?? '', status: m.status ?? '' } },
    messageHead(m),
    (m.parts || []).map(renderPart),
    m.error ? h('p', { class: 'error' }, m.error) : null);
}

/**
 * Live is an assistant message being streamed: deltas go into text nodes.
 * A reply that goes on after its approvals starts from what it has
 * (seed, the stored message).
 */
class Live {
  constructor(id, model, seed) {
    this.msg = { id, role: 'assistant', status: 'streaming', model: model || seed?.model, created_at: seed?.created_at ?? new Date().toISOString() };
    this.body = h('div', { class: 'msg-body' });
    this.li = h('li', { class: 'msg role-assistant', dataset: { id, status: 'streaming' }, 'aria-busy': 'true' }, messageHead(this.msg), this.body);
    this.seeded = false;
    this.reset();
    if (seed) {
      this.seeded = true;
      for (const p of seed.parts || []) {
        const el = renderPart(p.type === 'tool-call' && p.approval && p.approval.approved == null ? { ...p, approval: undefined } : p);
        this.body.append(el);
        if (p.type === 'tool-call') this.calls.set(p.toolCallId, el);
      }
    }
  }

  /** reset forgets what was shown, for a stream that starts over. */
  reset() {
    this.body.replaceChildren();
    this.cur = null; // {type, node}: the text part being written
    this.tools = new Map(); // the round's calls by index, while their input streams
    this.calls = new Map(); // toolCallId -> the call's element
    this.seeded = false;
  }

  delta(type, text) {
    if (!this.cur || this.cur.type !== type) {
      const node = document.createTextNode('');
      const el = type === 'reasoning'
        ? h('details', { class: 'part part-reasoning', open: true }, h('summary', null, 'Reasoning'), h('div', { class: 'part-text' }, node))
        : h('div', { class: 'part part-text' }, node);
      this.body.append(el);
      this.cur = { type, node };
    }
    this.cur.node.appendData(text);
  }

  toolDelta(d) {
    let t = this.tools.get(d.index);
    if (!t) {
      t = { name: h('code'), input: document.createTextNode('') };
      t.el = h('div', { class: 'part part-tool' }, h('div', { class: 'part-head' }, 'Tool call ', t.name), h('pre', null, t.input));
      this.body.append(t.el);
      this.tools.set(d.index, t);
      this.cur = null;
    }
    if (d.toolName) t.name.textContent = d.toolName;
    if (d.toolCallId) t.id = d.toolCallId;
    if (d.inputDelta) t.input.appendData(d.inputDelta);
  }

  /** toolCall shows a whole call: over its deltas if they came, else anew. */
  toolCall(d) {
    const t = [...this.tools.values()].find((x) => x.id === d.toolCallId);
    if (t) {
      t.name.textContent = d.toolName ?? '';
      t.input.data = jsonText(d.input);
      t.el.dataset.call = d.toolCallId;
      this.calls.set(d.toolCallId, t.el);
      return;
    }
    const el = renderPart({ type: 'tool-call', toolCallId: d.toolCallId, toolName: d.toolName, input: d.input });
    this.body.append(el);
    this.calls.set(d.toolCallId, el);
    this.cur = null;
  }

  /** approval marks a call as waiting for a person. */
  approval(d) {
    const el = this.calls.get(d.toolCallId);
    if (el && !el.querySelector('.approval')) el.append(approvalLine({ deadline: d.deadline }, d.toolCallId));
  }

  toolResult(d) {
    this.body.append(renderPart({ type: 'tool-result', toolCallId: d.toolCallId, toolName: d.toolName, output: d.output, isError: d.isError,
      approval: d.denied ? { approved: false } : undefined }));
    this.cur = null;
  }

  /** step starts a model round: its text is a new part, its calls new calls. */
  step() {
    this.cur = null;
    this.tools.clear();
  }
}

const isSSE = (r) => (r.headers.get('Content-Type') || '').startsWith('text/event-stream');
const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

/** RESUMES bounds the reconnections of one reply's stream. */
const RESUMES = 5;

// Poll intervals (ms) of a session page: each is one small request, and
// nothing polls while the tab is hidden.
const POLL = { state: 2000, approvals: 3000, messages: 3000, schedules: 5000 };

async function sessionPage(ctx, agent, session) {
  const { main, signal } = ctx;
  const base = `/v1/agents/${seg(agent)}/${seg(session)}`;
  const objectName = agent + '/' + session;
  main.append(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, link(['agents'], 'Agents'), ' / ', link(['agents', agent], agent), ' / ', session),
    h('h1', null, session),
    h('p', { class: 'muted' }, 'Agent ', h('code', null, agent), ' · stored as object ', link(['objects', 'agent', 'o', objectName], objectName)));

  const list = h('ol', { class: 'messages' });
  const sentinel = h('div', { class: 'sentinel', 'aria-hidden': 'true' });
  const olderBtn = h('button', { type: 'button', class: 'quiet', hidden: true }, 'Load older messages');
  const histStatus = h('p', { class: 'muted', role: 'status' });
  const scroller = h('section', { class: 'transcript', 'aria-label': 'Transcript', tabindex: 0 }, sentinel, olderBtn, histStatus, list);

  const text = h('textarea', { id: 'chat-text', rows: 3, required: true, placeholder: 'Write a message. Enter sends, Shift+Enter starts a new line.' });
  const sendBtn = h('button', { type: 'submit' }, 'Send');
  const stopBtn = h('button', { type: 'button', class: 'quiet', disabled: true }, 'Stop');
  const chatErr = h('div');
  const streamStatus = h('p', { class: 'muted', role: 'status' });
  const form = h('form', { class: 'chat', 'aria-label': 'Chat' },
    h('label', { for: 'chat-text' }, 'Message'), text, chatErr, streamStatus,
    h('div', { class: 'row' }, sendBtn, stopBtn));

  const approvals = approvalsPanel(base, signal, (a, approved, reason) => decide(a, approved, reason));
  const state = statePanel(base, signal, POLL.state);
  const schedules = schedulesPanel(base, signal);
  const extras = h('div', { class: 'extras' }, approvals.el, state.el, schedules.el);
  main.append(h('div', { class: 'session' }, h('div', { class: 'session-main' }, scroller, form), extras));

  // What each message's element shows, by ID, to tell when the server's
  // copy changed.
  const known = new Map();
  const msgEl = (m) => {
    if (m.id) known.set(m.id, JSON.stringify(m));
    return renderMessage(m);
  };
  const findEl = (id) => {
    for (let li = list.lastElementChild; li; li = li.previousElementSibling) if (li.dataset.id === id) return li;
    return null;
  };

  let next = null;
  let loading = false;
  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };

  async function older() {
    if (loading || next === null) return;
    loading = true;
    histStatus.textContent = 'Loading older messages…';
    try {
      const r = await api(`${base}/messages?limit=${HISTORY_PAGE}&before=${encodeURIComponent(next)}`, { signal });
      const h0 = scroller.scrollHeight;
      const top0 = scroller.scrollTop;
      list.prepend(...r.messages.slice().reverse().map(msgEl));
      scroller.scrollTop = top0 + (scroller.scrollHeight - h0); // keep what was in view in view
      next = r.next ?? null;
      histStatus.textContent = next === null ? 'The beginning of the session.' : '';
      olderBtn.hidden = next === null;
    } catch (e) {
      if (!signal.aborted) histStatus.replaceChildren(errorBox(e));
    } finally {
      loading = false;
    }
  }
  olderBtn.addEventListener('click', older);
  const io = new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting)) older(); }, { root: scroller, rootMargin: '200px 0px 0px 0px' });
  signal.addEventListener('abort', () => io.disconnect());

  // Replies being streamed into the page (a chat reply, a reply going on
  // after an approval, one started elsewhere that the page follows).
  let active = 0;
  const following = new Set(); // message IDs
  const setBusy = (d) => {
    active += d;
    sendBtn.disabled = active > 0;
    stopBtn.disabled = active === 0;
  };
  const refreshPanels = () => {
    for (const p of [approvals, state, schedules]) p.refresh().catch((e) => { if (!signal.aborted) console.debug('refresh', e); });
  };

  /**
   * stream shows a reply's events as they come: from the response of
   * open() (a POST), and, should the connection drop before message-end,
   * from GET /messages/{id}/stream with the last event's id as
   * Last-Event-ID, so that nothing is missed or shown twice. opts:
   * msgId (known beforehand), seed (the stored reply it goes on from),
   * start(d) on message-start, json(m) for an answer that is not a
   * stream, error(e) for a failure.
   */
  async function stream(open, opts = {}) {
    setBusy(1);
    let live = null;
    let msgId = opts.msgId ?? null;
    let lastId = '';
    let ended = false;
    let tries = 0;
    const follow = () => atBottom();
    const place = (id, model) => {
      if (live) return;
      live = new Live(id, model, opts.seed && opts.seed.id === id ? opts.seed : null);
      const old = findEl(id);
      if (old) old.replaceWith(live.li); else list.append(live.li);
      following.add(id);
    };
    try {
      let r = await open();
      if (!isSSE(r)) {
        const m = await r.json();
        if (opts.json) opts.json(m);
        ended = true;
        return;
      }
      for (;;) {
        if (r) {
          try {
            for await (const ev of events(r)) {
              if (ev.id) lastId = ev.id;
              let d;
              try { d = JSON.parse(ev.data); } catch { continue; }
              const stick = follow();
              switch (d.type || ev.event) {
                case 'message-start':
                  msgId = d.messageId;
                  if (opts.start) opts.start(d);
                  place(d.messageId, d.model);
                  break;
                case 'text-delta': live?.delta('text', d.delta); break;
                case 'reasoning-delta': live?.delta('reasoning', d.delta); break;
                case 'tool-call-delta': live?.toolDelta(d); break;
                case 'tool-call': live?.toolCall(d); break;
                case 'tool-approval-request': live?.approval(d); break;
                case 'tool-result': live?.toolResult(d); break;
                case 'step-start': live?.step(); break;
                case 'message-end': {
                  const done = msgEl(d.message);
                  const old = live ? live.li : findEl(d.message.id);
                  if (old) old.replaceWith(done); else list.append(done);
                  live = null;
                  ended = true;
                  const st = d.message.status;
                  announce(st === 'awaiting-approval' ? 'The reply waits for a tool call to be approved.' : 'Reply ' + (st === 'complete' ? 'received' : st));
                  break;
                }
                case 'error':
                  chatErr.replaceChildren(errorBox({ code: 'error', message: d.error }));
                  break;
                default:
                  break; // events this console does not know yet: message-end brings the stored message
              }
              if (stick) toBottom();
            }
          } catch (e) {
            if (signal.aborted) throw e;
            console.debug('stream dropped', e);
          }
        }
        if (ended) return;
        // The connection dropped before message-end: resume.
        if (msgId === null) throw new Error('the connection dropped before the reply started');
        if (++tries > RESUMES) throw new Error('the reply’s stream keeps dropping; reload the page to see it');
        streamStatus.textContent = 'Connection lost; resuming the reply…';
        await sleep(250 * tries, signal);
        if (signal.aborted) return;
        const pos = Number(lastId.slice(lastId.lastIndexOf(':') + 1));
        const headers = {};
        if (lastId && lastId.startsWith(msgId + ':') && pos > 0) {
          headers['Last-Event-ID'] = lastId;
        } else if (live) {
          live.reset(); // from message-start on: the whole reply again
        }
        r = null;
        try {
          r = await request(`${base}/messages/${seg(msgId)}/stream`, { headers, signal });
          streamStatus.textContent = '';
        } catch (e) {
          if (signal.aborted || (e instanceof APIError && e.status < 500)) throw e;
          console.debug('resume', e); // the server is busy or restarting: try again
        }
      }
    } catch (e) {
      if (!signal.aborted) {
        if (opts.error) opts.error(e); else chatErr.replaceChildren(errorBox(e));
      }
    } finally {
      if (msgId) following.delete(msgId);
      if (live && !signal.aborted) {
        // Ended without message-end: show what storage has.
        live.li.setAttribute('aria-busy', 'false');
        sync(true).catch((e) => console.debug('sync', e));
      }
      setBusy(-1);
      if (!signal.aborted) {
        streamStatus.textContent = '';
        refreshPanels();
      }
    }
  }

  /** followReply streams a reply that is running, from its start. */
  function followReply(id) {
    if (following.has(id)) return;
    following.add(id);
    stream(() => request(`${base}/messages/${seg(id)}/stream`, { signal }), { msgId: id });
  }

  /**
   * decide posts a decision on a pending approval. If it was the reply's
   * last, the reply goes on here, streamed after what it had.
   */
  async function decide(a, approved, reason) {
    const r = await request(`${base}/approvals/${seg(a.toolCallId)}`, {
      method: 'POST', json: reason ? { approved, reason } : { approved }, headers: { Accept: 'text/event-stream' }, signal,
    });
    if (!isSSE(r)) {
      // Other approvals of the reply are still pending: it stands as it is.
      const m = await r.json();
      const old = findEl(m.id);
      if (old) old.replaceWith(msgEl(m));
      refreshPanels();
      return;
    }
    let seed = null;
    try {
      seed = JSON.parse(known.get(a.messageId) ?? 'null');
    } catch { seed = null; }
    if (seed) seed = { ...seed, parts: (seed.parts || []).map((p) => (p.type === 'tool-call' && p.toolCallId === a.toolCallId ? { ...p, approval: { ...p.approval, approved, reason } } : p)) };
    stream(async () => r, { msgId: a.messageId, seed });
  }

  /**
   * sync brings the newest messages in line with the server's (from
   * other clients, schedules, approvals decided elsewhere), and follows a
   * reply running that nobody here streams. It does nothing while this
   * page streams a reply of its own, unless forced.
   */
  async function sync(force) {
    if (active > 0 && !force) return;
    const r = await api(`${base}/messages?limit=20`, { signal });
    if (active > 0 && !force) return;
    const page = r.messages.slice().reverse();
    const tail = [...list.children].slice(-page.length);
    const same = tail.length === page.length && page.every((m, i) => tail[i].dataset.id === m.id && known.get(m.id) === JSON.stringify(m));
    if (!same) {
      const stick = atBottom();
      for (const m of page) {
        const li = findEl(m.id);
        if (li && (following.has(m.id) || known.get(m.id) === JSON.stringify(m))) {
          list.append(li); // moves it into place
          continue;
        }
        if (li) li.remove();
        list.append(msgEl(m));
      }
      if (page.length) histStatus.textContent = next === null ? 'The beginning of the session.' : '';
      if (stick) toBottom();
    }
    if (active === 0) {
      const running = page.find((m) => m.role === 'assistant' && m.status === 'streaming');
      if (running) followReply(running.id);
    }
  }

  const first = await api(`${base}/messages?limit=${HISTORY_PAGE}`, { signal });
  list.append(...first.messages.slice().reverse().map(msgEl));
  next = first.next ?? null;
  olderBtn.hidden = next === null;
  histStatus.textContent = first.messages.length === 0 ? 'No messages yet: say something.' : next === null ? 'The beginning of the session.' : '';
  toBottom();
  io.observe(sentinel);
  ctx.every(POLL.messages, sync);
  ctx.every(POLL.state, state.refresh);
  ctx.every(POLL.approvals, approvals.refresh);
  ctx.every(POLL.schedules, schedules.refresh);

  text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  stopBtn.addEventListener('click', async () => {
    try { await api(`${base}/cancel`, { method: 'POST', signal }); } catch (e) { chatErr.replaceChildren(errorBox(e)); }
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const msg = text.value;
    if (!msg.trim() || active > 0) return;
    clear(chatErr);
    text.value = '';
    if (list.childElementCount === 0) histStatus.textContent = '';
    const userLi = renderMessage({ role: 'user', status: 'sending', parts: [{ type: 'text', text: msg }], created_at: new Date().toISOString() });
    list.append(userLi);
    toBottom();
    stream(() => request(`${base}/messages`, { method: 'POST', json: { text: msg }, headers: { Accept: 'text/event-stream' }, signal }), {
      start: (d) => {
        userLi.dataset.id = d.userMessageId;
        userLi.dataset.status = 'complete';
        userLi.querySelector('.badge')?.remove();
      },
      error: (err) => {
        chatErr.replaceChildren(errorBox(err));
        if (!userLi.dataset.id) userLi.dataset.status = 'error';
      },
    }).finally(() => { if (!signal.aborted) text.focus(); });
  });
}
