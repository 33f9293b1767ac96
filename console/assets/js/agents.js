// Agents: the configured agents, each agent's sessions (objects of
// namespace "agent" named "{agent}/{session}", found with the admin
// listing's name-prefix search), and a session page: the transcript,
// loaded a page at a time with the history cursor (newest first, older
// pages as you scroll up), and a chat box whose reply streams in over SSE.

import { api, request, events, seg, APIError } from './api.js';
import { h, clear, table, link, route, errorBox, announce, timeEl, fmtBytes, fmtNum, pretty } from './dom.js';
import { pagedObjects } from './objects.js';

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

function renderPart(p) {
  switch (p.type) {
    case 'text':
      return h('div', { class: 'part part-text' }, p.text ?? '');
    case 'reasoning':
      return h('details', { class: 'part part-reasoning' }, h('summary', null, 'Reasoning'), h('div', { class: 'part-text' }, p.text ?? ''));
    case 'tool-call':
      return h('div', { class: 'part part-tool' },
        h('div', { class: 'part-head' }, 'Tool call ', h('code', null, p.toolName ?? ''), p.toolCallId ? h('span', { class: 'muted' }, ' ' + p.toolCallId) : null),
        h('pre', null, jsonText(p.input)),
        p.approval ? approvalLine(p.approval) : null);
    case 'tool-result':
      return h('div', { class: 'part part-tool' + (p.isError ? ' part-error' : '') },
        h('div', { class: 'part-head' }, p.isError ? 'Tool error ' : 'Tool result ', h('code', null, p.toolName ?? ''), p.toolCallId ? h('span', { class: 'muted' }, ' ' + p.toolCallId) : null),
        h('pre', null, jsonText(p.output)));
    default:
      return h('div', { class: 'part' }, h('div', { class: 'part-head muted' }, 'Part ', h('code', null, String(p.type))), h('pre', null, pretty(p)));
  }
}

function approvalLine(a) {
  if (a.approved === undefined || a.approved === null) {
    return h('p', { class: 'approval status-pending' }, 'Approval pending; denied ', timeEl(a.deadline), ' if nobody decides.');
  }
  return h('p', { class: 'approval ' + (a.approved ? 'status-complete' : 'status-error') }, a.approved ? 'Approved' : 'Denied', a.reason ? ': ' + a.reason : '');
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

/** Live is an assistant message being streamed: deltas go into text nodes. */
class Live {
  constructor(id, model) {
    this.msg = { id, role: 'assistant', status: 'streaming', model, created_at: new Date().toISOString() };
    this.body = h('div', { class: 'msg-body' });
    this.li = h('li', { class: 'msg role-assistant', dataset: { id, status: 'streaming' }, 'aria-busy': 'true' }, messageHead(this.msg), this.body);
    this.cur = null; // {type, node}
    this.tools = new Map();
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
      this.body.append(h('div', { class: 'part part-tool' }, h('div', { class: 'part-head' }, 'Tool call ', t.name), h('pre', null, t.input)));
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
      return;
    }
    this.body.append(renderPart({ type: 'tool-call', toolCallId: d.toolCallId, toolName: d.toolName, input: d.input }));
    this.cur = null;
  }

  toolResult(d) {
    this.body.append(renderPart({ type: 'tool-result', toolCallId: d.toolCallId, toolName: d.toolName, output: d.output, isError: d.isError }));
    this.cur = null;
  }

  /** step starts a model round: its text is a new part, its calls new calls. */
  step() {
    this.cur = null;
    this.tools.clear();
  }
}

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

  // PLACEHOLDERS (agent state, schedules, approvals): another change adds
  // these to the session API. Each panel stays hidden until its route
  // answers; see probeExtras.
  const extras = h('div', { class: 'extras' },
    extraPanel('state', 'State'), extraPanel('schedules', 'Schedules'), extraPanel('approvals', 'Approvals pending'));

  const text = h('textarea', { id: 'chat-text', rows: 3, required: true, placeholder: 'Write a message. Enter sends, Shift+Enter starts a new line.' });
  const sendBtn = h('button', { type: 'submit' }, 'Send');
  const stopBtn = h('button', { type: 'button', class: 'quiet', disabled: true }, 'Stop');
  const chatErr = h('div');
  const form = h('form', { class: 'chat', 'aria-label': 'Chat' },
    h('label', { for: 'chat-text' }, 'Message'), text, chatErr,
    h('div', { class: 'row' }, sendBtn, stopBtn));
  main.append(h('div', { class: 'session' }, h('div', { class: 'session-main' }, scroller, form), extras));

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
      list.prepend(...r.messages.slice().reverse().map(renderMessage));
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

  const first = await api(`${base}/messages?limit=${HISTORY_PAGE}`, { signal });
  list.append(...first.messages.slice().reverse().map(renderMessage));
  next = first.next ?? null;
  olderBtn.hidden = next === null;
  histStatus.textContent = first.messages.length === 0 ? 'No messages yet: say something.' : next === null ? 'The beginning of the session.' : '';
  toBottom();
  io.observe(sentinel);
  probeExtras(base, extras, ctx);

  let streaming = null; // AbortController of the reply being streamed
  text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  stopBtn.addEventListener('click', async () => {
    try { await api(`${base}/cancel`, { method: 'POST', signal }); } catch (e) { chatErr.replaceChildren(errorBox(e)); }
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const msg = text.value;
    if (!msg.trim() || streaming) return;
    clear(chatErr);
    text.value = '';
    if (list.childElementCount === 0) histStatus.textContent = '';
    const stick = true;
    const userLi = renderMessage({ role: 'user', status: 'sending', parts: [{ type: 'text', text: msg }], created_at: new Date().toISOString() });
    list.append(userLi);
    toBottom();
    streaming = new AbortController();
    const abort = () => streaming && streaming.abort();
    signal.addEventListener('abort', abort);
    sendBtn.disabled = true;
    stopBtn.disabled = false;
    let live = null;
    try {
      const r = await request(`${base}/messages`, { method: 'POST', json: { text: msg }, headers: { Accept: 'text/event-stream' }, signal: streaming.signal });
      for await (const ev of events(r)) {
        let d;
        try { d = JSON.parse(ev.data); } catch { continue; }
        const follow = stick && atBottom();
        switch (d.type || ev.event) {
          case 'message-start':
            userLi.dataset.id = d.userMessageId;
            userLi.dataset.status = 'complete';
            userLi.querySelector('.badge')?.remove();
            live = new Live(d.messageId, d.model);
            list.append(live.li);
            break;
          case 'text-delta':
            live?.delta('text', d.delta);
            break;
          case 'reasoning-delta':
            live?.delta('reasoning', d.delta);
            break;
          case 'tool-call-delta':
            live?.toolDelta(d);
            break;
          case 'tool-call':
            live?.toolCall(d);
            break;
          case 'tool-result':
            live?.toolResult(d);
            break;
          case 'step-start':
            live?.step();
            break;
          case 'message-end': {
            const done = renderMessage(d.message);
            if (live) live.li.replaceWith(done); else list.append(done);
            live = null;
            announce('Reply ' + (d.message.status === 'complete' ? 'received' : d.message.status));
            break;
          }
          case 'error':
            chatErr.replaceChildren(errorBox({ code: 'error', message: d.error }));
            break;
          default:
            break; // events this console does not know yet: message-end brings the stored message
        }
        if (follow) toBottom();
      }
    } catch (err) {
      if (!signal.aborted) {
        chatErr.replaceChildren(errorBox(err));
        userLi.dataset.status = 'error';
      }
    } finally {
      signal.removeEventListener('abort', abort);
      streaming = null;
      sendBtn.disabled = false;
      stopBtn.disabled = true;
      if (!signal.aborted) text.focus();
    }
  });
}

function extraPanel(name, title) {
  return h('section', { class: 'panel extra', hidden: true, dataset: { extra: name, placeholder: 'true' }, 'aria-label': title },
    h('h2', null, title), h('div', { class: 'extra-body' }));
}

/**
 * probeExtras fills the placeholder panels (state, schedules, approvals)
 * whose session route exists; a 404 keeps a panel hidden. State refreshes
 * every 3 s while shown.
 */
function probeExtras(base, extras, ctx) {
  for (const panel of extras.querySelectorAll('[data-extra]')) {
    const name = panel.dataset.extra;
    const body = panel.querySelector('.extra-body');
    let shown = true;
    ctx.every(3000, async () => {
      if (!shown) return;
      try {
        const v = await api(`${base}/${name}`, { signal: ctx.signal });
        panel.hidden = false;
        body.replaceChildren(renderExtra(name, v));
      } catch (e) {
        if (e instanceof APIError && (e.status === 404 || e.status === 405)) { shown = false; panel.hidden = true; return; }
        throw e;
      }
    });
  }
}

/** renderExtra shows what a placeholder route answered: known shapes as such, anything else as JSON. */
function renderExtra(name, v) {
  if (name === 'state' && v && 'state' in v) {
    return h('div', null, h('p', { class: 'muted' }, 'Version ', fmtNum(v.version)), h('pre', null, pretty(v.state)));
  }
  if (name === 'schedules' && v && Array.isArray(v.schedules)) {
    if (!v.schedules.length) return h('p', { class: 'muted' }, 'No schedules.');
    return table({ text: 'Schedules', hidden: true }, ['ID', 'Next', 'When', 'Runs'],
      v.schedules.map((x) => [h('code', null, x.id), timeEl(x.time), x.cron || x.type || '', fmtNum(x.runs)]));
  }
  return h('pre', null, pretty(v));
}
