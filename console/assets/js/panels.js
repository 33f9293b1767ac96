// The side panels of an agent session's page: its pending approvals (with
// Approve and Deny), its state (live, by polling GET /state, and an editor
// that replaces it), and its schedules (listed, added, cancelled). Each
// panel is an object with an element (el) and refresh(), which the page
// calls on a timer and whenever a reply ends; a refresh that changes
// nothing leaves the DOM (and the focus, and what is being typed) alone.

import { api, request, seg, APIError } from './api.js';
import { h, clear, errorBox, announce, confirmButton, timeEl, fmtNum, fmtTime, pretty } from './dom.js';

/** MAX_STATE is the state's size limit on the server (1 MiB). */
const MAX_STATE = 1 << 20;

/**
 * serialized runs fn at most once at a time: a call while it runs asks
 * for one more run after it, so that the last caller sees fresh data. A
 * failure is shown in problem (once, not at each poll) and thrown.
 */
function serialized(fn, problem, signal) {
  let running = null;
  let again = false;
  let shown = '';
  const run = async () => {
    if (running) { again = true; return running; }
    running = (async () => {
      try {
        do { again = false; await fn(); } while (again);
        if (shown) { shown = ''; clear(problem); }
      } catch (e) {
        const text = String(e && e.message);
        if (!signal.aborted && text !== shown) { shown = text; problem.replaceChildren(errorBox(e)); }
        throw e;
      } finally {
        running = null;
      }
    })();
    return running;
  };
  return run;
}

/** panel makes a panel's section; its problem element shows why its data could not be read. */
function panel(name, title, ...children) {
  const head = h('h2', { id: `${name}-title`, tabindex: -1 }, title);
  const problem = h('div', { class: 'problem' });
  const el = h('section', { class: 'panel extra', dataset: { extra: name }, 'aria-labelledby': `${name}-title` }, head, problem, ...children);
  return { el, problem };
}

/** keepFocus moves the focus to a panel's heading if the focused element is gone. */
function keepFocus(el) {
  if (!document.activeElement || document.activeElement === document.body || !document.activeElement.isConnected) {
    el.querySelector('h2')?.focus();
  }
}

// Approvals.

/**
 * approvalsPanel lists the session's tool calls that wait for a person.
 * decide(call, approved, reason) is the page's: it posts the decision
 * (and streams the reply that goes on, without waiting for it).
 */
export function approvalsPanel(base, signal, decide) {
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading…');
  const list = h('ul', { class: 'approvals' });
  const { el, problem } = panel('approvals', 'Approvals pending', status, list);
  const items = new Map(); // toolCallId -> li

  function item(a) {
    const reason = h('input', { type: 'text', id: 'reason-' + a.toolCallId, autocomplete: 'off', spellcheck: 'true', placeholder: 'optional' });
    const err = h('div');
    const approve = h('button', { type: 'button', 'aria-label': `Approve ${a.toolName} (${a.toolCallId})` }, 'Approve');
    const deny = h('button', { type: 'button', class: 'danger', 'aria-label': `Deny ${a.toolName} (${a.toolCallId})` }, 'Deny');
    const li = h('li', { class: 'approval-item', dataset: { call: a.toolCallId, message: a.messageId } },
      h('div', { class: 'part-head' }, 'Tool ', h('code', null, a.toolName), ' ', h('span', { class: 'muted' }, a.toolCallId)),
      h('pre', null, pretty(a.input)),
      h('p', { class: 'muted' }, 'Denied ', timeEl(a.deadline), ' if nobody decides (', fmtTime(a.deadline), ').'),
      h('label', { for: reason.id }, 'Reason'), reason,
      h('div', { class: 'row' }, approve, deny), err);
    const go = async (approved) => {
      approve.disabled = deny.disabled = true;
      clear(err);
      try {
        await decide(a, approved, reason.value.trim());
        li.remove();
        items.delete(a.toolCallId);
        keepFocus(el);
        announce(`${approved ? 'Approved' : 'Denied'} ${a.toolName}.`);
      } catch (e) {
        if (signal.aborted) return;
        err.replaceChildren(errorBox(e));
        approve.disabled = deny.disabled = false;
        if (e instanceof APIError && (e.status === 404 || e.status === 409)) refresh(); // decided elsewhere
      }
    };
    approve.addEventListener('click', () => go(true));
    deny.addEventListener('click', () => go(false));
    return li;
  }

  const refresh = serialized(async () => {
    const { approvals } = await api(`${base}/approvals`, { signal });
    const ids = new Set(approvals.map((a) => a.toolCallId));
    let removed = false;
    for (const [id, li] of items) {
      if (!ids.has(id)) { li.remove(); items.delete(id); removed = true; }
    }
    for (const a of approvals) {
      if (!items.has(a.toolCallId)) {
        const li = item(a);
        items.set(a.toolCallId, li);
        list.append(li);
      }
    }
    status.textContent = approvals.length ? `${fmtNum(approvals.length)} tool call${approvals.length === 1 ? '' : 's'} waiting for a decision.` : 'No tool call waits for approval.';
    el.classList.toggle('attention', approvals.length > 0);
    if (removed) keepFocus(el);
  }, problem, signal);
  return { el, refresh };
}

// State.

/** checkState says what is wrong with text as a new state, or '' if nothing. */
export function checkState(text) {
  if (text.trim() === '') return 'Empty: the state is a JSON value (write null to clear it).';
  try {
    JSON.parse(text);
  } catch (e) {
    return 'Not valid JSON: ' + e.message;
  }
  const n = new TextEncoder().encode(text).length;
  if (n > MAX_STATE) return `Too large: ${fmtNum(n)} bytes; the limit is ${fmtNum(MAX_STATE)}.`;
  return '';
}

/** statePanel shows the session's state, refreshed by the page, and an editor that replaces it (PUT). */
export function statePanel(base, signal, every) {
  const version = h('span', { dataset: { version: '' } }, '–');
  const shown = h('pre', { class: 'state-json', tabindex: 0, 'aria-label': 'State as JSON' }, '…');
  const editBtn = h('button', { type: 'button', class: 'quiet' }, 'Edit state');
  const area = h('textarea', { id: 'state-text', rows: 10, spellcheck: 'false', 'aria-describedby': 'state-check' });
  const check = h('p', { id: 'state-check', class: 'muted', role: 'status' });
  const notice = h('p', { class: 'notice', role: 'status' });
  const save = h('button', { type: 'submit' }, 'Save state');
  const cancel = h('button', { type: 'button', class: 'quiet' }, 'Cancel');
  const err = h('div');
  const editor = h('form', { class: 'editor', hidden: true, 'aria-label': 'Replace the state' },
    h('label', { for: 'state-text' }, 'New state (JSON)'), area, check, notice, err, h('div', { class: 'row' }, save, cancel));
  const { el, problem } = panel('state', 'State',
    h('p', { class: 'muted' }, 'Version ', version, ` · live (read every ${every / 1000} s)`),
    shown, h('div', { class: 'row' }, editBtn), editor);

  let cur = null; // {state, version} as last read
  let editingFrom = null; // the version the editor started from

  function validate() {
    const problem = checkState(area.value);
    check.textContent = problem || 'Valid JSON.';
    check.className = problem ? 'error' : 'muted';
    area.setAttribute('aria-invalid', problem ? 'true' : 'false');
    save.disabled = problem !== '';
  }

  function show(v) {
    const text = pretty(v.state);
    if (cur && cur.version === v.version && cur.text === text) return;
    cur = { version: v.version, text };
    version.textContent = fmtNum(v.version);
    version.dataset.version = String(v.version);
    shown.textContent = v.version === 0 && v.state === null ? 'null (never set)' : text;
    if (editingFrom !== null && v.version !== editingFrom) {
      notice.textContent = `The state changed on the server (now version ${fmtNum(v.version)}) since you began editing: saving will be refused once, then replace it.`;
    }
  }

  function close() {
    editor.hidden = true;
    editingFrom = null;
    editBtn.hidden = false;
    editBtn.focus();
  }

  editBtn.addEventListener('click', () => {
    area.value = cur ? cur.text : 'null';
    editingFrom = cur ? cur.version : 0;
    notice.textContent = '';
    clear(err);
    validate();
    editor.hidden = false;
    editBtn.hidden = true;
    area.focus();
  });
  area.addEventListener('input', validate);
  cancel.addEventListener('click', close);
  editor.addEventListener('submit', async (e) => {
    e.preventDefault();
    validate();
    if (save.disabled) return;
    save.disabled = true;
    clear(err);
    try {
      // If-Match: only over the version the editor started from, so that a
      // change made meanwhile is not overwritten unseen (412 otherwise).
      const r = await request(`${base}/state`, {
        method: 'PUT', body: area.value, signal,
        headers: { 'Content-Type': 'application/json', 'If-Match': `"${editingFrom}"` },
      });
      show(await r.json());
      announce(`State saved: version ${cur.version}.`);
      close();
    } catch (ex) {
      if (signal.aborted) return;
      if (ex.status === 412) {
        // Show what is there now; a second Save replaces it knowingly.
        try { show(await api(`${base}/state`, { signal })); } catch { /* the refresh will */ }
        editingFrom = cur ? cur.version : editingFrom;
        notice.textContent = `Not saved: the state changed on the server (now version ${fmtNum(editingFrom)}) since you began editing. Save again to replace it with yours.`;
        announce('State not saved: it changed on the server.');
      } else {
        err.replaceChildren(errorBox(ex));
      }
    } finally {
      save.disabled = checkState(area.value) !== '';
    }
  });

  const refresh = serialized(async () => show(await api(`${base}/state`, { signal })), problem, signal);
  return { el, refresh };
}

// Schedules.

function when(s) {
  if (s.type === 'cron') return [h('code', null, s.cron), ' ', h('span', { class: 'muted' }, s.tz || 'UTC')];
  if (s.type === 'delayed') return `once, ${fmtNum(s.delay_seconds, 3)} s after it was added`;
  return 'once';
}

/** localZone is the browser's IANA time zone, the cron form's default. */
function localZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch { return 'UTC'; }
}

/** schedulesPanel lists the session's schedules, adds one from a form and cancels one. */
export function schedulesPanel(base, signal) {
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading…');
  const list = h('ul', { class: 'schedules' });
  const kind = h('select', { id: 'sched-kind' },
    h('option', { value: 'delay' }, 'after a delay'), h('option', { value: 'at' }, 'at a time'), h('option', { value: 'cron' }, 'on a cron schedule'));
  const delay = h('input', { id: 'sched-delay', type: 'number', min: '0', step: 'any', value: '60', inputmode: 'decimal' });
  const at = h('input', { id: 'sched-at', type: 'datetime-local', step: '1' });
  const cron = h('input', { id: 'sched-cron', type: 'text', spellcheck: 'false', autocomplete: 'off', placeholder: '0 9 * * 1-5' });
  const tz = h('input', { id: 'sched-tz', type: 'text', spellcheck: 'false', autocomplete: 'off', value: localZone() });
  const message = h('textarea', { id: 'sched-message', rows: 2, placeholder: 'optional: a message, sent when it fires' });
  const id = h('input', { id: 'sched-id', type: 'text', spellcheck: 'false', autocomplete: 'off', placeholder: 'optional' });
  const err = h('div');
  const fields = {
    delay: h('div', { class: 'field' }, h('label', { for: 'sched-delay' }, 'Delay (seconds)'), delay),
    at: h('div', { class: 'field', hidden: true }, h('label', { for: 'sched-at' }, 'At (local time)'), at),
    cron: h('div', { class: 'field', hidden: true }, h('label', { for: 'sched-cron' }, 'Cron expression'), cron,
      h('label', { for: 'sched-tz' }, 'Time zone'), tz),
  };
  const add = h('button', { type: 'submit' }, 'Add schedule');
  const form = h('form', { class: 'editor', 'aria-label': 'Add a schedule' },
    h('div', { class: 'field' }, h('label', { for: 'sched-kind' }, 'Fires'), kind),
    fields.delay, fields.at, fields.cron,
    h('div', { class: 'field' }, h('label', { for: 'sched-message' }, 'Send to the model'), message),
    h('div', { class: 'field' }, h('label', { for: 'sched-id' }, 'ID'), id),
    err, h('div', { class: 'row' }, add));
  const { el, problem } = panel('schedules', 'Schedules', status, list, h('h3', null, 'Add a schedule'), form);

  kind.addEventListener('change', () => {
    for (const [k, f] of Object.entries(fields)) f.hidden = k !== kind.value;
  });

  let shown = ''; // the JSON of the list shown

  function item(s) {
    const cancel = confirmButton('Cancel', 'Press again to cancel', async () => {
      try {
        await api(`${base}/schedules/${seg(s.id)}`, { method: 'DELETE', signal });
        announce(`Schedule ${s.id} cancelled.`);
      } catch (e) {
        if (!(e instanceof APIError && e.status === 404)) { li.append(errorBox(e)); return; }
      }
      await refresh();
    }, { 'aria-label': `Cancel schedule ${s.id}` });
    const li = h('li', { class: 'schedule', dataset: { schedule: s.id } },
      h('div', { class: 'part-head' }, h('code', null, s.id), ' ', h('span', { class: 'badge' }, s.type)),
      h('dl', { class: 'facts' },
        h('div', null, h('dt', null, 'Next'), h('dd', null, timeEl(s.time))),
        h('div', null, h('dt', null, 'When'), h('dd', null, when(s))),
        h('div', null, h('dt', null, 'Runs'), h('dd', null, fmtNum(s.runs), s.failures ? ` (${fmtNum(s.failures)} failed)` : '')),
        s.message ? h('div', null, h('dt', null, 'Message'), h('dd', { class: 'part-text' }, s.message)) : null,
        s.payload !== null && s.payload !== undefined ? h('div', null, h('dt', null, 'Payload'), h('dd', null, h('code', null, JSON.stringify(s.payload)))) : null),
      s.last_error ? h('p', { class: 'error' }, (s.failed ? 'Gave up: ' : 'Last error: ') + s.last_error) : null,
      h('div', { class: 'row' }, cancel));
    return li;
  }

  const refresh = serialized(async () => {
    const { schedules } = await api(`${base}/schedules`, { signal });
    const j = JSON.stringify(schedules);
    if (j === shown) return;
    // Rebuilt only when the list changed; the focus stays if its element does.
    shown = j;
    const hadFocus = list.contains(document.activeElement);
    list.replaceChildren(...schedules.map(item));
    status.textContent = schedules.length ? `${fmtNum(schedules.length)} schedule${schedules.length === 1 ? '' : 's'}, in firing order.` : 'No schedules.';
    if (hadFocus) keepFocus(el);
  }, problem, signal);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(err);
    const body = {};
    try {
      switch (kind.value) {
        case 'delay': {
          const n = Number(delay.value);
          if (delay.value.trim() === '' || !Number.isFinite(n) || n < 0) throw new Error('The delay is a number of seconds, 0 or more.');
          body.delay_seconds = n;
          break;
        }
        case 'at': {
          const d = new Date(at.value);
          if (!at.value || Number.isNaN(d.getTime())) throw new Error('Pick a date and time.');
          body.at = d.toISOString();
          break;
        }
        default:
          if (!cron.value.trim()) throw new Error('Write a cron expression: five fields (six with seconds), or @daily, @every 1h.');
          body.cron = cron.value.trim();
          if (tz.value.trim()) body.tz = tz.value.trim();
      }
    } catch (ex) {
      err.replaceChildren(errorBox(ex));
      return;
    }
    if (message.value.trim()) body.message = message.value;
    if (id.value.trim()) body.id = id.value.trim();
    add.disabled = true;
    try {
      const s = await api(`${base}/schedules`, { method: 'POST', json: body, signal });
      announce(`Schedule ${s.id} added: next ${fmtTime(s.time)}.`);
      message.value = '';
      id.value = '';
      await refresh();
    } catch (ex) {
      if (!signal.aborted) err.replaceChildren(errorBox(ex));
    } finally {
      add.disabled = false;
    }
  });

  return { el, refresh };
}
