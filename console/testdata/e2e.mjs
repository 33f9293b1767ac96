// The console's end-to-end test in headless Chromium, run by
// console/e2e_test.go (go test ./console). It talks to the Go test on
// stdout ("ASK name": act or check over the API; answered "OK" or
// "ERR why" on stdin; "DONE {json}" at the end); progress goes to stderr.
//
// Env: CAIRN_URL (the server, ending in /), CAIRN_SECRET (the admin token,
// empty with auth off), CAIRN_MODE (full | open), CHROMIUM (its binary),
// PLAYWRIGHT_CORE (the installed package's directory), SCREENSHOTS (a
// directory).

import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const BASE = process.env.CAIRN_URL;
const SECRET = process.env.CAIRN_SECRET || '';
const MODE = process.env.CAIRN_MODE || 'full';
const SHOTS = process.env.SCREENSHOTS;
const origin = new URL(BASE).origin;

const log = (...a) => process.stderr.write(a.join(' ') + '\n');
const results = { screenshots: [], timings: {} };

// Questions to the Go test.
const answers = [];
const waiting = [];
createInterface({ input: process.stdin }).on('line', (l) => {
  const w = waiting.shift();
  if (w) w(l); else answers.push(l);
});
async function ask(q) {
  process.stdout.write('ASK ' + q + '\n');
  const line = answers.length ? answers.shift() : await new Promise((r) => waiting.push(r));
  if (line !== 'OK') throw new Error(`the Go test says about ${q}: ${line}`);
  log('  checked over the API:', q);
}

function assert(cond, msg) {
  if (!cond) throw new Error('assertion failed: ' + msg);
}

async function waitUntil(what, fn, timeout = 15000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});

// What must never happen, recorded while the pages run.
const problems = [];
const requests = [];
let lastPage = null; // for a screenshot of a failure

async function newPage(viewport) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, serviceWorkers: 'block' });
  // Anything not for the server is refused and recorded.
  await context.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith(origin + '/') || u.startsWith('data:')) return route.continue();
    problems.push('request to another origin: ' + u);
    return route.abort();
  });
  const page = await context.newPage();
  lastPage = page;
  page.on('request', (r) => requests.push(r.url()));
  page.on('dialog', (d) => { problems.push(`a ${d.type()} dialog opened: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (m.text().startsWith('Failed to load resource')) return; // statuses are checked below
    problems.push('console error: ' + m.text());
  });
  page.on('response', (r) => {
    const s = r.status();
    if (s < 400) return;
    const u = new URL(r.url());
    const p = u.pathname;
    const allowed =
      (s === 401 && p === '/v1/admin/stats') || // before sign-in, and the wrong token
      (s === 400 && p.endsWith('/sql')) || // the SQL error, on purpose
      (s === 400 && p.endsWith('/schedules') && r.request().method() === 'POST') || // the bad cron, on purpose
      (s === 404 && /^\/v1\/admin\/objects\/[^/]+\/[^/]+$/.test(p)) || // an object with no storage yet
      (s === 412 && p.endsWith('/state') && ++staleSaves === 1); // the save of a stale state, on purpose: once
    if (!allowed) problems.push(`${r.request().method()} ${p} answered ${s} (If-Match ${r.request().headers()['if-match']})`);
  });
  return page;
}

let staleSaves = 0; // PUT /state answered 412

async function shot(page, name, what) {
  const path = join(SHOTS, name + '.png');
  await page.screenshot({ path, fullPage: true });
  results.screenshots.push({ name, path, what });
  log('  screenshot', path);
}

async function go(page, hash, heading) {
  await page.goto(BASE + hash);
  if (heading) await page.getByRole('heading', { level: 1, name: heading, exact: true }).waitFor();
}

/** pwned checks that nothing untrusted became markup or code. */
async function notPwned(page, where) {
  const bad = await page.evaluate(() => ({
    scripts: [...document.scripts].map((s) => s.src).filter((s) => !s.endsWith('/console/js/app.js')),
    imgs: document.querySelectorAll('img').length,
    flagged: window.__pwned === true,
  }));
  assert(bad.scripts.length === 0, `${where}: script elements from data: ${bad.scripts}`);
  assert(bad.imgs === 0, `${where}: an <img> from data is in the DOM`);
  assert(!bad.flagged, `${where}: injected code ran`);
}

async function signIn(page) {
  await page.goto(BASE);
  const form = page.getByRole('heading', { name: 'Sign in' });
  await form.waitFor();
  log('sign-in form shown');
  await page.getByLabel('Admin token').fill('not-the-token-0123456789');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('The token was not accepted.').waitFor();
  await page.getByLabel('Admin token').fill(SECRET);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  const stored = await page.evaluate(() => sessionStorage.getItem('cairn.token'));
  assert(stored === SECRET, 'the token is kept in session storage');
  log('signed in');
}

async function overview(page) {
  await go(page, '#/', 'Overview');
  await waitUntil('the object count', async () => (await page.locator('[data-stat="objects"]').textContent()) !== '–');
  // The charts move without a reload: the request-rate line appears and
  // then changes as the page polls.
  const line = page.locator('.chart-svg path.line').first();
  await line.waitFor({ timeout: 15000 });
  const d1 = await line.getAttribute('d');
  await waitUntil('the chart to move', async () => (await line.getAttribute('d')) !== d1, 10000);
  const objects = await page.locator('[data-stat="objects"]').textContent();
  log('overview: objects', objects);
  assert(Number(objects.replace(/\D/g, '')) >= 300, 'the overview counts the seeded objects');
  await page.getByRole('link', { name: 'presence', exact: true }).waitFor();
  await shot(page, '1-overview', 'Overview: totals, live charts, namespaces');
}

async function keyboard(page) {
  // The nav is reachable and usable by keyboard.
  await go(page, '#/', 'Overview');
  await page.locator('body').focus();
  let found = false;
  for (let i = 0; i < 12 && !found; i++) {
    await page.keyboard.press('Tab');
    found = await page.evaluate(() => document.activeElement && document.activeElement.textContent === 'Objects' && document.activeElement.tagName === 'A');
  }
  assert(found, 'Tab reaches the Objects link');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { level: 1, name: 'Objects' }).waitFor();
  await waitUntil('focus on the heading', () => page.evaluate(() => document.activeElement && document.activeElement.tagName === 'H1'));
  log('keyboard navigation works');
}

async function objectList(page) {
  await go(page, '#/objects/kv', 'Objects in kv');
  const rows = page.locator('table.objects tbody tr');
  await waitUntil('a full page of objects', async () => (await rows.count()) === 50);
  const first = await rows.first().locator('td').first().textContent();
  await page.getByRole('button', { name: 'Next →' }).click();
  await waitUntil('the second page', async () => (await page.getByText(/^Objects 51–/).count()) === 1);
  const second = await rows.first().locator('td').first().textContent();
  assert(first !== second, 'the next page shows other objects');
  await page.getByRole('button', { name: '← Previous' }).click();
  await waitUntil('the first page again', async () => (await rows.first().locator('td').first().textContent()) === first);
  // Search by name prefix, server-side.
  await page.getByLabel('Name starts with').fill('bulk-00042');
  await page.getByRole('button', { name: 'Search' }).click();
  await waitUntil('one result', async () => (await rows.count()) === 1 && (await rows.first().locator('td').first().textContent()) === 'bulk-00042');
  await page.getByLabel('Name starts with').fill('xss-');
  await page.getByRole('button', { name: 'Search' }).click();
  await waitUntil('the xss object', async () => (await rows.count()) === 1);
  const name = await rows.first().locator('td').first().textContent();
  assert(name === "xss-<script>alert('name')</script>", 'an object name is shown as text: ' + name);
  await notPwned(page, 'object list');
  await go(page, '#/objects/kv', 'Objects in kv');
  await waitUntil('a full page of objects', async () => (await rows.count()) === 50);
  await shot(page, '2-objects', 'Objects of namespace kv, first page of 50, with search');
}

async function objectPage(page) {
  await go(page, '#/objects/kv/o/e2e-kv', 'e2e-kv');
  const kvRows = page.locator('table.kv tbody tr');
  await waitUntil('a page of keys', async () => (await kvRows.count()) === 50);
  // The stored <script> key and <img> value are text.
  const xss = page.locator('table.kv code.kv-key', { hasText: "<script>alert('key')</script>" });
  await xss.waitFor();
  const val = await xss.locator('xpath=ancestor::tr').locator('.kv-value').textContent();
  assert(val === `<img src=x onerror="alert('value')">`, 'the value is shown as text: ' + val);
  await notPwned(page, 'kv');
  await page.getByRole('button', { name: 'Next →' }).first().click();
  await waitUntil('the second page of keys', async () => (await kvRows.first().locator('code').textContent()) !== '<script>alert(\'key\')</script>');

  // Edit a value; the Go test reads it over the API.
  await page.getByLabel('Key prefix').fill('color');
  await page.getByRole('button', { name: 'Filter' }).click();
  await waitUntil('the color key alone', async () => (await kvRows.count()) === 1);
  await page.getByRole('button', { name: 'Edit color' }).click();
  await page.getByLabel('Value (text)').fill('teal-from-browser');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.locator('table.kv .kv-value', { hasText: 'teal-from-browser' }).waitFor();
  await ask('kv-edited');

  // A new key with a slash and a dot, and a two-line value.
  await page.getByRole('button', { name: 'New key' }).click();
  await page.getByLabel('Key', { exact: true }).fill('new/key.txt');
  await page.getByLabel('Value (text)').fill('line one\nline two');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByLabel('Key prefix').fill('new/');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('table.kv code.kv-key', { hasText: 'new/key.txt' }).waitFor();
  await ask('kv-added');

  // Delete a key (two presses: no blocking dialog).
  await page.getByLabel('Key prefix').fill('item-000');
  await page.getByRole('button', { name: 'Filter' }).click();
  await waitUntil('item-000 alone', async () => (await kvRows.count()) === 1);
  await page.getByRole('button', { name: 'Delete item-000' }).click();
  await page.getByRole('button', { name: 'Delete item-000' }).click();
  await page.getByText('No keys.').waitFor();
  await ask('kv-deleted');

  // SQL: results as a table; errors shown plainly.
  const sql = page.getByLabel('Statement');
  const run = page.getByRole('button', { name: 'Run' });
  const out = page.locator('.sql-out');
  await sql.fill('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)');
  await run.click();
  await out.getByText(/0 rows/).waitFor();
  await sql.fill('INSERT INTO notes (body) VALUES (?), (?)');
  await page.getByLabel('Arguments, a JSON array (optional)').fill(`["<script>alert('sql')</script>", "plain"]`);
  await run.click();
  await out.getByText(/2 written/).waitFor();
  await page.getByLabel('Arguments, a JSON array (optional)').fill('');
  await sql.fill('SELECT id, body, NULL AS empty FROM notes ORDER BY id');
  await sql.press('Control+Enter');
  const cells = out.locator('table.sql-result tbody tr');
  await waitUntil('two result rows', async () => (await cells.count()) === 2);
  const headers = await out.locator('table.sql-result thead th').allTextContents();
  assert(headers.join(',') === 'id,body,empty', 'result columns: ' + headers);
  const body = await cells.first().locator('td').nth(1).textContent();
  assert(body === "<script>alert('sql')</script>", 'a SQL value is shown as text: ' + body);
  assert((await cells.first().locator('td').nth(2).textContent()) === 'NULL', 'NULL is shown as NULL');
  await ask('sql-done');
  await notPwned(page, 'sql');
  await shot(page, '3-object', 'Object kv/e2e-kv: catalog facts, KV page, SQL result table');
  await sql.fill('SELEC nonsense');
  await run.click();
  const err = out.getByRole('alert');
  await err.waitFor();
  const errText = await err.textContent();
  assert(errText.startsWith('invalid: '), 'the SQL error is shown plainly: ' + errText);

  // The alarm.
  await page.getByLabel('Set to').fill('2031-05-06T07:08:09');
  await page.getByRole('button', { name: 'Set alarm' }).click();
  await page.getByText(/^Fires .*2031/).waitFor();
  await ask('alarm-set');

  // WebSockets and their tags (a room socket the Go test opens).
  await ask('room-connect');
  await go(page, '#/objects/room/o/ws-room', 'ws-room');
  const tag = page.locator('ul.tags li', { hasText: "user:<script>alert('user')</script>" });
  await tag.waitFor();
  await notPwned(page, 'sockets');
  log('object page: KV edit, SQL, alarm, sockets checked');
}

async function agents(page) {
  await go(page, '#/agents', 'Agents');
  await page.getByRole('cell', { name: 'slow-1' }).waitFor();
  await page.getByRole('link', { name: 'big', exact: true }).waitFor();
  await go(page, '#/agents/slow', 'Agents');
  await page.getByLabel('Open or start a session').fill('e2e-chat');
  await page.getByRole('button', { name: 'Open' }).click();
  await page.getByRole('heading', { level: 1, name: 'e2e-chat' }).waitFor();
  await page.getByText('No messages yet: say something.').waitFor();

  // The reply streams: sample the live message's text as it grows.
  const text = "Hello <script>alert('chat')</script><img src=x onerror=\"window.__pwned=true\">";
  await page.getByLabel('Message').fill(text);
  await page.getByLabel('Message').press('Enter');
  const live = page.locator('li.msg.role-assistant[data-status="streaming"]');
  await live.waitFor({ timeout: 10000 });
  const seen = new Set();
  const t0 = Date.now();
  while (Date.now() - t0 < 20000) {
    const s = await page.evaluate(() => {
      const li = document.querySelector('li.msg.role-assistant[data-status="streaming"]');
      if (!li) return null; // replaced by the stored message
      const el = li.querySelector('div.part-text:not(details .part-text)');
      return el ? el.textContent : '';
    });
    if (s === null) break;
    if (s) seen.add(s);
  }
  log('streaming: saw', seen.size, 'growing versions of the reply');
  assert(seen.size >= 3, `the reply grew while streaming (saw ${seen.size} versions)`);
  const done = page.locator('li.msg.role-assistant[data-status="complete"]');
  await done.waitFor();
  const reply = await done.locator('.part-text').last().textContent();
  assert(reply.startsWith('this is a slow reply') && reply.endsWith(text), 'the stored reply: ' + reply);
  assert(await done.locator('details.part-reasoning').count() === 1, 'the reasoning part is shown');
  const user = await page.locator('li.msg.role-user .part-text').last().textContent();
  assert(user === text, 'the user message is shown as text');
  await notPwned(page, 'chat');
  await ask('chat-done');
  // The session's panels: approvals, state, schedules.
  for (const name of ['state', 'schedules', 'approvals']) await page.locator(`[data-extra="${name}"]`).waitFor({ state: 'visible' });
  await page.getByText('No tool call waits for approval.').waitFor();
  await page.getByText('No schedules.').waitFor();

  // A reply that calls a tool: the call and its result show up live, then
  // the stored message holds both.
  await page.getByLabel('Message').fill('[tool] what is the weather?');
  await page.getByLabel('Message').press('Enter');
  await page.locator('li.msg.role-assistant[data-status="streaming"] .part-tool').first().waitFor({ timeout: 10000 });
  const withTool = page.locator('li.msg.role-assistant[data-status="complete"]').nth(1);
  await withTool.waitFor({ timeout: 20000 });
  const heads = await withTool.locator('.part-tool .part-head').allTextContents();
  assert(heads.some((x) => x.startsWith('Tool call lookup')) && heads.some((x) => x.startsWith('Tool result lookup')), 'the tool call and its result: ' + heads);
  const out = await withTool.locator('.part-tool pre').last().textContent();
  assert(out.includes('"found": "<b>sunny</b>"'), 'the tool result is shown as text: ' + out);
  await notPwned(page, 'tool result');
  await shot(page, '4-agent-chat', 'Agent session slow/e2e-chat: a streamed reply (reasoning, text), then one with a tool call and its result');

  // A 100,000-message transcript: the newest page first, older pages as
  // the user scrolls up; the DOM holds what was loaded, not the session.
  const t1 = Date.now();
  await go(page, '#/agents/default/big', 'big');
  await page.locator('li.msg').first().waitFor();
  results.timings.big_transcript_first_page_ms = Date.now() - t1;
  const count = () => page.locator('li.msg').count();
  await waitUntil('the newest page', async () => (await count()) >= 50);
  const n1 = await count();
  assert(n1 <= 51, `the first page holds ${n1} messages, not the whole session`);
  const lastText = await page.locator('li.msg .part-text').last().textContent();
  assert(lastText.startsWith('echo: the newest question'), 'the newest message is at the bottom: ' + lastText);
  await page.locator('.transcript').evaluate((el) => { el.scrollTop = 0; });
  await waitUntil('an older page', async () => (await count()) >= n1 + 50);
  await page.locator('.transcript').evaluate((el) => { el.scrollTop = 0; });
  await waitUntil('another older page', async () => (await count()) >= n1 + 100);
  const n2 = await count();
  assert(n2 < 400, `scrolling up loads a page at a time (${n2} messages in the DOM)`);
  assert(await page.locator('.part-tool').count() > 0, 'tool calls and results are shown');
  results.timings.big_transcript_messages_in_dom = n2;
  await page.locator('li.msg').filter({ has: page.locator('.part-tool') }).first().scrollIntoViewIfNeeded();
  await shot(page, '5-agent-transcript', 'A 100,000-message transcript: tool calls, results, reasoning; loaded a page at a time');
}

/** sampleLive reads the text of reply id while it streams, until it is stored complete. */
async function sampleLive(page, id, timeout = 20000) {
  const seen = [];
  const t0 = Date.now();
  while (Date.now() - t0 < timeout) {
    const s = await page.evaluate((id) => {
      const li = [...document.querySelectorAll('li.msg.role-assistant')].find((x) => x.dataset.id === id);
      if (!li) return { gone: true };
      if (li.dataset.status !== 'streaming') return { status: li.dataset.status };
      const el = [...li.querySelectorAll('div.part-text')].filter((x) => !x.closest('details')).pop();
      return { text: el ? el.textContent : '' };
    }, id);
    if (s.status === 'complete') return seen;
    if (s.text && seen[seen.length - 1] !== s.text) seen.push(s.text);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`reply ${id} did not complete (saw ${seen.length} versions)`);
}

async function approvals(page) {
  await go(page, '#/agents/careful/e2e-approve', 'e2e-approve');
  await page.getByText('No tool call waits for approval.').waitFor();
  // A tool that needs approval: the reply parks, the call waits in the
  // transcript and in the panel.
  await page.getByLabel('Message').fill('[tool] deploy it');
  await page.getByLabel('Message').press('Enter');
  const parked = page.locator('li.msg.role-assistant[data-status="awaiting-approval"]');
  await parked.waitFor({ timeout: 15000 });
  await parked.locator('[data-approval="pending"]').waitFor();
  const id = await parked.getAttribute('data-id');
  const item = page.locator('li.approval-item');
  await item.waitFor({ timeout: 10000 });
  assert(await item.count() === 1, 'one approval is pending');
  const input = await item.locator('pre').textContent();
  assert(input.includes('"q": "weather"'), 'the pending call\'s input: ' + input);
  assert(await page.locator('[data-extra="approvals"]').evaluate((el) => el.classList.contains('attention')), 'the approvals panel asks for attention');
  await parked.getByRole('button', { name: 'Decide…' }).click();
  assert(await page.evaluate(() => document.activeElement && document.activeElement.textContent === 'Approve'), '"Decide…" moves the focus to Approve');
  await ask('approval-pending');
  await shot(page, '10-agent-approval-pending', 'Session careful/e2e-approve: a reply parked on a tool call awaiting approval; the Approvals panel with Approve / Deny');

  // Approve: the reply goes on and streams into the same message. The
  // server drops the connection after its first text; the page resumes
  // from the last event it saw (Last-Event-ID).
  await page.getByRole('button', { name: /^Approve lookup/ }).click();
  const seen = await sampleLive(page, id);
  const done = page.locator(`li.msg.role-assistant[data-status="complete"][data-id="${id}"]`);
  await done.waitFor();
  const reply = await done.locator('div.part-text:not(details .part-text)').last().textContent();
  assert(reply === 'this is a slow reply, streamed one word at a time, to: [tool] deploy it', 'the reply after approval: ' + reply);
  log('approval: saw', seen.length, 'versions of the continued reply');
  assert(seen.length >= 3, `the continued reply streamed (saw ${seen.length} versions)`);
  for (const t of seen) assert(reply.startsWith(t), `a streamed version is a prefix of the reply (no gap, no repeat): ${JSON.stringify(t)}`);
  assert(await done.locator('[data-approval="approved"]').count() === 1, 'the call shows it was approved');
  const heads = await done.locator('.part-tool .part-head').allTextContents();
  assert(heads.some((x) => x.startsWith('Tool result lookup')), 'the tool result after approval: ' + heads);
  const out = await done.locator('.part-tool pre').last().textContent();
  assert(out.includes('"found": "<b>sunny</b>"'), 'the tool result is shown as text: ' + out);
  await page.getByText('No tool call waits for approval.').waitFor();
  await notPwned(page, 'approval');
  await ask('approval-done');
  await shot(page, '11-agent-approved', 'The approved call, its result and the reply that went on (streamed, resumed after a dropped connection)');

  // Deny, by keyboard, with a reason.
  await page.getByLabel('Message').fill('[tool] and again');
  await page.getByLabel('Message').press('Enter');
  await page.locator('li.approval-item').waitFor({ timeout: 15000 });
  const parked2 = page.locator('li.msg.role-assistant[data-status="awaiting-approval"]');
  await parked2.waitFor({ timeout: 15000 });
  const id2 = await parked2.getAttribute('data-id');
  await page.locator('li.approval-item').getByLabel('Reason').fill('not now');
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.textContent) === 'Approve', 'Tab goes from the reason to Approve');
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.textContent) === 'Deny', 'then to Deny');
  await page.keyboard.press('Enter');
  const denied = page.locator(`li.msg.role-assistant[data-status="complete"][data-id="${id2}"]`);
  await denied.waitFor({ timeout: 20000 });
  const line = await denied.locator('[data-approval="denied"]').textContent();
  assert(line === 'Denied: not now', 'the call shows it was denied: ' + line);
  assert((await denied.locator('.part-tool .part-head').allTextContents()).some((x) => x.startsWith('Tool call denied lookup')), 'the denied result');
  await page.getByText('No tool call waits for approval.').waitFor();
  assert(await page.evaluate(() => document.activeElement && document.activeElement.id === 'approvals-title'), 'the focus is on the panel after deciding');
  await ask('denial-done');
  log('approvals: approved (with a resumed stream) and denied (by keyboard)');
}

async function sessionState(page) {
  // The session's state, live: a change over the API shows without a reload.
  const shown = page.locator('pre.state-json');
  await waitUntil('the state', async () => (await shown.textContent()) === 'null (never set)');
  await ask('state-put');
  await waitUntil('the state put over the API', async () => (await shown.textContent()).includes(`"mood": "<script>alert('state')</script>"`), 10000);
  assert(await page.locator('[data-version="1"]').count() === 1, 'version 1 is shown');
  await notPwned(page, 'state');

  // The editor: invalid JSON is said plainly and cannot be saved.
  await page.getByRole('button', { name: 'Edit state' }).click();
  const area = page.getByLabel('New state (JSON)');
  assert((await area.inputValue()).includes('"n": 1'), 'the editor starts from the state');
  await area.fill('{"n": 2,');
  await page.locator('#state-check', { hasText: /^Not valid JSON: / }).waitFor();
  assert(await page.getByRole('button', { name: 'Save state' }).isDisabled(), 'invalid JSON cannot be saved');
  assert(await area.getAttribute('aria-invalid') === 'true', 'the field is marked invalid');
  await area.fill('{"n": 2, "from": "console"}');
  await page.locator('#state-check', { hasText: 'Valid JSON.' }).waitFor();
  // A change over the API while editing: the first Save is refused (If-Match),
  // says so, and leaves the text; the second replaces the state knowingly.
  await ask('state-bump');
  await page.getByRole('button', { name: 'Save state' }).click();
  await page.locator('.notice', { hasText: /^Not saved: the state changed on the server \(now version 2\)/ }).waitFor();
  assert((await shown.textContent()).includes('"by": "api"'), 'the refused save shows the state now on the server');
  assert((await area.inputValue()).includes('"from": "console"'), 'the refused save keeps the text');
  await page.getByRole('button', { name: 'Save state' }).click();
  await waitUntil('the saved state', async () => (await shown.textContent()).includes('"from": "console"'));
  assert(await page.locator('[data-version="3"]').count() === 1, 'version 3 is shown');
  await ask('state-saved');
  log('state: live update, editor and a refused stale save checked');
}

async function schedules(page) {
  const add = page.getByRole('button', { name: 'Add schedule' });
  await page.getByLabel('Fires').selectOption('delay');
  await page.getByLabel('Delay (seconds)').fill('3600');
  await page.getByLabel('Send to the model').fill('remind me <b>later</b>');
  await page.locator('#sched-id').fill('e2e-later');
  await add.click();
  await page.locator('li.schedule[data-schedule="e2e-later"]').waitFor();
  await page.getByLabel('Fires').selectOption('cron');
  assert(await page.getByLabel('Delay (seconds)').isHidden(), 'only the cron fields show');
  await page.getByLabel('Cron expression').fill('not a cron');
  await add.click();
  const err = page.locator('[data-extra="schedules"]').getByRole('alert');
  await err.waitFor();
  assert((await err.textContent()).startsWith('invalid: '), 'a bad cron is shown as the API words it: ' + await err.textContent());
  await page.getByLabel('Cron expression').fill('0 9 * * 1-5');
  await page.getByLabel('Time zone').fill('Europe/Berlin');
  await page.locator('#sched-id').fill('e2e-weekday');
  await add.click();
  await page.locator('li.schedule[data-schedule="e2e-weekday"]').waitFor();
  const msg = await page.locator('li.schedule[data-schedule="e2e-later"] dd.part-text').textContent();
  assert(msg === 'remind me <b>later</b>', 'the schedule\'s message is shown as text: ' + msg);
  await ask('schedules-added');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, '12-agent-state-schedules', 'Session careful/e2e-approve: transcript, state (live, version 3), two schedules (delay and cron in Europe/Berlin)');
  // Cancel one: two presses.
  const cancel = page.getByRole('button', { name: 'Cancel schedule e2e-later' });
  await cancel.click();
  await cancel.click();
  await page.locator('li.schedule[data-schedule="e2e-later"]').waitFor({ state: 'detached' });
  await ask('schedule-cancelled');
  log('schedules: added (delay, cron), refused (bad cron), cancelled');
}

async function coordination(page) {
  await go(page, '#/coord', 'Coordination');
  await page.locator('table.coord-locks td', { hasText: 'agent-2' }).waitFor();
  const locks = await page.locator('table.coord-locks tbody tr').count();
  const held = await page.locator('table.coord-locks tbody tr', { hasText: 'reports-table' }).locator('td').allTextContents();
  const done = await page.locator('table.coord-locks tbody tr', { hasText: 'reports-done' }).locator('td').allTextContents();
  assert(locks === 2, `the lock table lists its 2 locks (and not its shard objects), not ${locks}`);
  assert(held.length === 5 && held[1] === 'agent-2' && held[2] === '1' && held[3].startsWith('in ') && held[4] === '0',
    'lock table reports-table: held by agent-2, token 1, expiring, no waiters: ' + held.join('|'));
  assert(done.join('|') === 'reports-done|free|last 1|–|0', 'lock table reports-done: free, last token 1: ' + done.join('|'));
  await page.locator('table.coord-lock td', { hasText: 'agent-1' }).waitFor();
  await page.locator('table.coord-leader td', { hasText: 'node-a' }).waitFor();
  await page.locator('table.coord-presence a', { hasText: 'lobby' }).waitFor();
  const q = page.locator('table.coord-queue tbody tr').first();
  await q.waitFor();
  const cells = await q.locator('td').allTextContents();
  assert(cells.join('|') === 'jobs|3|2|0|1|1', 'queue jobs: depth 3, ready 2, delayed 0, in flight 1, dead 1: ' + cells.join('|'));
  await shot(page, '6-coordination', 'Coordination: the lock table, lock objects, leaders, presence rooms, queues');

  await go(page, '#/coord/queue/jobs', 'jobs');
  await page.getByRole('cell', { name: '<b>broken</b> input' }).waitFor();
  await go(page, '#/coord/lock/reports', 'reports');
  await page.getByText('agent-1').waitFor();
  await go(page, '#/coord/locks/reports-table', 'reports-table');
  await page.getByText('agent-2').waitFor();
  await go(page, '#/coord/locks/reports-done', 'reports-done');
  await page.getByText('nobody (free)').waitFor();

  // A member appears and expires, live, without a reload.
  await go(page, '#/coord/presence/standup', 'standup');
  await page.getByText('Live: members appear and leave as it happens.').waitFor();
  await ask('presence-join');
  const ada = page.locator('[data-member="ada"]');
  await ada.waitFor({ timeout: 10000 });
  const meta = await page.locator('code.meta').first().textContent();
  assert(meta === JSON.stringify({ note: "<script>alert('meta')</script>" }), 'metadata as text: ' + meta);
  log('presence: ada appeared');
  await notPwned(page, 'presence');
  await shot(page, '7-presence', 'Presence room standup with a live member (ada, TTL 3 s)');
  await ada.waitFor({ state: 'detached', timeout: 20000 });
  await page.getByText('Nobody is here.').waitFor();
  log('presence: ada expired');
  await ask('presence-gone');
}

async function phone() {
  const page = await newPage({ width: 390, height: 844 });
  await page.goto(BASE);
  if (SECRET) {
    await page.getByLabel('Admin token').fill(SECRET);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }
  for (const [hash, heading, name, what] of [
    ['#/objects/kv/o/e2e-kv', 'e2e-kv', '8-phone-object', 'Object page at phone width (390 px)'],
    ['#/agents/slow/e2e-chat', 'e2e-chat', '9-phone-chat', 'Agent chat at phone width (390 px)'],
    ['#/agents/careful/e2e-approve', 'e2e-approve', '13-phone-session-panels', 'Session with approvals, state and schedules at phone width (390 px)'],
  ]) {
    await go(page, hash, heading);
    await page.waitForTimeout(500);
    const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(over <= 1, `${hash} is ${over}px wider than a phone screen`);
    await shot(page, name, what);
  }
  await page.context().close();
}

try {
  if (MODE === 'full') {
    const page = await newPage({ width: 1280, height: 900 });
    await signIn(page);
    await overview(page);
    await keyboard(page);
    await objectList(page);
    await objectPage(page);
    await agents(page);
    await approvals(page);
    await sessionState(page);
    await schedules(page);
    await coordination(page);
    await phone();
    // Sign out: the token is gone from the tab.
    await go(page, '#/', 'Overview');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    assert(await page.evaluate(() => sessionStorage.getItem('cairn.token')) === null, 'sign-out forgets the token');
  } else {
    // Auth off: no sign-in, straight to the pages.
    const page = await newPage({ width: 1024, height: 768 });
    await go(page, '#/', 'Overview');
    assert(await page.getByRole('button', { name: 'Sign out' }).isHidden(), 'no sign-out without auth');
    await go(page, '#/objects/kv/o/open', 'open');
    await page.locator('table.kv code.kv-key', { hasText: 'k' }).waitFor();
    // A write from the page passes the loopback guard (same origin).
    await page.getByRole('button', { name: 'Edit k' }).click();
    await page.getByLabel('Value (text)').fill('edited with auth off');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.locator('table.kv .kv-value', { hasText: 'edited with auth off' }).waitFor();
    await ask('open-kv-edited');
  }
  for (const u of requests) {
    if (SECRET && u.includes(SECRET)) problems.push('the token is in a URL: ' + u);
  }
  results.requests = requests.length;
  assert(requests.every((u) => u.startsWith(origin + '/') || u.startsWith('data:')), 'every request went to the server');
  if (problems.length) throw new Error('problems:\n  ' + problems.join('\n  '));
  process.stdout.write('DONE ' + JSON.stringify(results) + '\n');
} catch (e) {
  log('FAIL:', e.stack || e.message);
  if (lastPage) {
    await lastPage.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }).catch(() => {});
    log('  the page at the failure:', join(SHOTS, 'failure.png'), await lastPage.evaluate(() => location.hash).catch(() => ''));
  }
  if (problems.length) log('problems:\n  ' + problems.join('\n  '));
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
