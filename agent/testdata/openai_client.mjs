// Drives cairn's chat completions endpoint with the real openai npm
// client, for agent/npm_test.go, and prints what it saw as one JSON object
// on stdout. Any failure the test did not ask for exits non-zero.
//
//	node openai_client.mjs BASE_URL FAIL_BASE_URL
//
// BASE_URL is a session of an echo agent (/v1/agents/{agent}/{session}/),
// FAIL_BASE_URL a session of an agent whose model fails. CAIRN_TOKEN, if
// set, is sent as the API key. openai is found through NODE_PATH.
import { createRequire } from 'node:module';

// ESM imports do not search NODE_PATH, require does: the package lives in
// the cache that .ci/setup.d installs it into, not beside this script.
const require = createRequire(import.meta.url);
const { OpenAI, APIError } = require('openai');
const { VERSION: version } = require('openai/version');

const [baseURL, failBaseURL] = process.argv.slice(2);
if (!baseURL || !failBaseURL) {
  console.error('usage: node openai_client.mjs BASE_URL FAIL_BASE_URL');
  process.exit(2);
}

// requests counts the HTTP requests the client makes, so that a retry
// shows.
let requests = 0;
function client(url) {
  return new OpenAI({
    baseURL: url,
    apiKey: process.env.CAIRN_TOKEN || 'unused',
    // The default, said here because the error cases check that the
    // client did not use it.
    maxRetries: 2,
    timeout: 20_000,
    fetch: (input, init) => {
      requests++;
      return fetch(input, init);
    },
  });
}

const echo = client(baseURL);
const out = { version };

// (1) A plain call. The model and system message are ignored by the
// endpoint: the agent's configuration decides.
requests = 0;
const first = await echo.chat.completions.create({
  model: 'ignored',
  messages: [
    { role: 'system', content: 'ignored too' },
    { role: 'user', content: 'hello world' },
  ],
});
out.first = {
  requests,
  id: first.id,
  object: first.object,
  model: first.model,
  text: first.choices[0]?.message?.content,
  finishReason: first.choices[0]?.finish_reason,
  usage: first.usage ?? null,
};

// (2) and (3): the second message of the session, streamed, sending only
// the new user message: the history the model sees is the server's.
requests = 0;
const stream = await echo.chat.completions.create({
  model: 'ignored',
  messages: [{ role: 'user', content: 'how are you today' }],
  stream: true,
  stream_options: { include_usage: true },
});
const second = { chunks: 0, objects: [], ids: [], deltas: [], roles: [], finishReason: null, usage: null };
for await (const chunk of stream) {
  second.chunks++;
  if (!second.objects.includes(chunk.object)) second.objects.push(chunk.object);
  if (!second.ids.includes(chunk.id)) second.ids.push(chunk.id);
  if (chunk.usage) second.usage = chunk.usage;
  for (const choice of chunk.choices) {
    if (choice.delta?.role) second.roles.push(choice.delta.role);
    if (choice.delta?.content) second.deltas.push(choice.delta.content);
    if (choice.finish_reason) second.finishReason = choice.finish_reason;
  }
}
second.requests = requests;
second.text = second.deltas.join('');
out.second = second;

// (4) Errors, which must reach the caller as an APIError after one
// request. The SDK retries 409, 429 and 5xx unless the server says
// X-Should-Retry: false, which cairn does since it stored the message.
async function failure(c, content) {
  requests = 0;
  try {
    const r = await c.chat.completions.create({ model: 'ignored', messages: [{ role: 'user', content }] });
    return { threw: false, requests, result: r };
  } catch (err) {
    if (!(err instanceof APIError)) throw err;
    return {
      threw: true,
      requests,
      name: err.constructor.name,
      status: err.status,
      code: err.code ?? null,
      message: err.message,
      shouldRetry: err.headers?.get('x-should-retry') ?? null,
    };
  }
}
// A request the endpoint refuses: no user text.
out.empty = await failure(echo, '   ');
// A reply whose model call failed: 503, which the SDK would retry.
out.failed = await failure(client(failBaseURL), 'fail please');

process.stdout.write(JSON.stringify(out) + '\n');
