// Drives a cairn session at /agents/{agent}/{session} with the real
// Cloudflare Agents SDK client (AgentClient from "agents/client", the chat
// transport from "agents/chat/transport") and the AI SDK's
// readUIMessageStream, for agent/agentsdk_test.go, and prints what it saw
// as one JSON object on stdout. Any failure the test did not ask for
// exits non-zero.
//
//	node agents_client.mjs HOST SESSION RELEASE_URL
//
// HOST is 127.0.0.1:PORT. Agents: "default" (echo), "hold" (its model
// stops after "part one " until RELEASE_URL is fetched; a message starting
// with "forever" makes it wait until cancelled) and "guard" (calls a tool
// that needs approval). CAIRN_TOKEN, if set, is the bearer token: sent as
// a WebSocket subprotocol, as a browser must, and as a header over HTTP.
// The packages are found through NODE_PATH (ESM imports do not search it:
// they are resolved with require.resolve and imported by path).
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';

const require = createRequire(import.meta.url);
const load = (name) => import(pathToFileURL(require.resolve(name)).href);
const WebSocket = require('ws');
globalThis.WebSocket = WebSocket;
const { AgentClient } = await load('agents/client');
const { WebSocketChatTransport } = await load('agents/chat/transport');
const { readUIMessageStream } = await load('ai');
const version = JSON.parse(readFileSync(require.resolve('agents/client').replace(/dist[/\\]client\.js$/, 'package.json'), 'utf8')).version;

const [host, session, releaseURL] = process.argv.slice(2);
if (!host || !session || !releaseURL) {
  console.error('usage: node agents_client.mjs HOST SESSION RELEASE_URL');
  process.exit(2);
}
const token = process.env.CAIRN_TOKEN || '';
const protocols = token ? ['cairn', 'cairn.bearer.' + Buffer.from(token).toString('base64url')] : undefined;
const headers = token ? { Authorization: 'Bearer ' + token } : {};

const timeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error('timed out: ' + what)), ms))]);

// connect makes an AgentClient that records the frames it receives and
// answers the resume handshake for its transport, as useAgentChat does.
function connect(agent, name, extra = {}) {
  const c = { states: [], frames: [] };
  c.client = new AgentClient({
    agent, name, host, protocols, WebSocket,
    onStateUpdate: (state, source) => c.states.push({ state, source }),
    ...extra,
  });
  c.transport = new WebSocketChatTransport({ agent: c.client });
  c.client.addEventListener('message', (e) => {
    let d;
    try { d = JSON.parse(e.data); } catch { return; }
    c.frames.push(d);
    if (d.type === 'cf_agent_stream_resuming') c.transport.handleStreamResuming(d);
    if (d.type === 'cf_agent_stream_resume_none') c.transport.handleStreamResumeNone(d);
    if (d.type === 'cf_agent_stream_pending') c.transport.handleStreamPending();
  });
  return c;
}

const user = (id, text) => ({ id, role: 'user', parts: [{ type: 'text', text }] });

// collect reads a UI message stream: the chunks, and the message the AI
// SDK builds from them.
async function collect(stream) {
  const [a, b] = stream.tee();
  const chunks = [];
  const reading = (async () => { for await (const c of a) chunks.push(c); })();
  let message = null;
  for await (const m of readUIMessageStream({ stream: b, terminateOnError: false })) message = m;
  await reading;
  return { chunks, message };
}
const types = (chunks) => chunks.map((c) => c.type);
const text = (m) => (m?.parts || []).filter((p) => p.type === 'text').map((p) => p.text).join('');
const waitFor = async (what, cond) => {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('timed out waiting for ' + what);
};

const out = { version };

// 1. Identity and state on connect; setState reaches another client and
// the server; RPC.
const a = connect('default', session);
const b = connect('default', session);
await timeout(a.client.ready, 10000, 'ready a');
await timeout(b.client.ready, 10000, 'ready b');
out.identity = { name: a.client.name, agent: a.client.agent, identified: a.client.identified };
out.initialState = a.client.state;
a.client.setState({ count: 2, who: 'a' });
await waitFor('b to see the state', () => b.states.some((s) => s.source === 'server' && s.state?.count === 2));
out.seenByB = b.states[b.states.length - 1];
out.rpcState = await a.client.call('getState');
out.rpcSchedule = await a.client.call('schedule', [{ delay_seconds: 3600, payload: { note: 'later' } }]);
out.rpcSchedules = await a.client.call('listSchedules');
try {
  await a.client.call('noSuchMethod', []);
  out.rpcUnknown = 'resolved';
} catch (e) {
  out.rpcUnknown = e.message;
}
const httpState = await fetch(`http://${host}/v1/agents/default/${session}/state`, { headers });
out.httpState = await httpState.json();

// 2. A chat turn, streamed; b sees the transcript afterwards.
const turn = await collect(await a.transport.sendMessages({
  chatId: session, messages: [user('u1', 'hello streaming world')], trigger: 'submit-message', messageId: undefined, abortSignal: undefined,
}));
out.chat = { types: types(turn.chunks), text: text(turn.message), id: turn.message?.id, role: turn.message?.role };
await waitFor('b to get the transcript', () => b.frames.some((f) => f.type === 'cf_agent_chat_messages'));
out.transcriptSeenByB = b.frames.filter((f) => f.type === 'cf_agent_chat_messages').pop().messages.map((m) => m.role + ':' + text(m));
const gm = await fetch(`http://${host}/agents/default/${session}/get-messages`, { headers });
out.getMessages = (await gm.json()).map((m) => m.role + ':' + text(m));
a.client.close();
b.client.close();

// 3. A turn interrupted by a reconnect, resumed: replay, then live.
const h = connect('hold', session);
await timeout(h.client.ready, 10000, 'ready hold');
const first = await h.transport.sendMessages({
  chatId: session, messages: [user('u2', 'hold on')], trigger: 'submit-message', messageId: undefined, abortSignal: undefined,
});
const firstChunks = [];
const reader = first.getReader();
for (;;) {
  const { done, value } = await timeout(reader.read(), 10000, 'first chunks');
  if (done) break;
  firstChunks.push(value);
  if (value.type === 'text-delta') {
    h.client.reconnect(); // drop the socket mid-stream
  }
}
out.beforeDrop = types(firstChunks);
await timeout(h.client.ready, 10000, 'ready after reconnect');
const resumed = await timeout(h.transport.reconnectToStream({ chatId: session }), 10000, 'resume');
if (!resumed) throw new Error('no stream to resume');
const released = fetch(releaseURL);
const rest = await timeout(collect(resumed), 15000, 'resumed stream');
await released;
out.resumed = { types: types(rest.chunks), text: text(rest.message), id: rest.message?.id };

// 4. Cancel a turn the model would never end.
const cancelled = await h.transport.sendMessages({
  chatId: session, messages: [user('u3', 'forever and ever')], trigger: 'submit-message', messageId: undefined, abortSignal: undefined,
});
const cr = cancelled.getReader();
const { value: firstCancelChunk } = await timeout(cr.read(), 10000, 'cancel stream start');
h.transport.cancelActiveServerTurn();
await waitFor('the aborted outcome', () => h.frames.some((f) => f.type === 'cf_agent_use_chat_response' && f.done && f.outcome === 'aborted'));
out.cancel = { first: firstCancelChunk?.type, outcome: 'aborted' };
h.client.close();

// 5. A tool that needs approval: the reply parks, the client approves,
// and the continuation streams into the same message.
const g = connect('guard', session);
await timeout(g.client.ready, 10000, 'ready guard');
const parked = await timeout(collect(await g.transport.sendMessages({
  chatId: session, messages: [user('u4', 'please use the tool')], trigger: 'submit-message', messageId: undefined, abortSignal: undefined,
})), 10000, 'parked turn');
const request = parked.chunks.find((c) => c.type === 'tool-approval-request');
const toolPart = parked.message?.parts.find((p) => p.type?.startsWith('tool-'));
out.parked = { types: types(parked.chunks), state: toolPart?.state, toolCallId: request?.toolCallId };
g.client.send(JSON.stringify({ type: 'cf_agent_tool_approval', toolCallId: request.toolCallId, approved: true, autoContinue: true }));
g.transport.expectToolContinuation();
const cont = await timeout(g.transport.reconnectToStream({ chatId: session }), 10000, 'continuation');
if (!cont) throw new Error('no continuation stream');
const contRead = await timeout(collect(cont), 10000, 'continuation stream');
out.continued = {
  types: types(contRead.chunks),
  updated: g.frames.filter((f) => f.type === 'cf_agent_message_updated').map((f) => f.message.parts.find((p) => p.type?.startsWith('tool-'))?.state),
};
g.client.close();

console.log(JSON.stringify(out));
process.exit(0);
