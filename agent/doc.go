// Package agent is cairn's agent layer: chat sessions with LLMs, each
// session one durable object that keeps its history, calls a model and
// streams the answer.
//
// # Sessions and agents
//
// A Service holds the configured agents (name, Provider, model, system
// prompt, limits); with none configured it has one, "default", on the
// offline Echo provider. Each session is an object of namespace "agent"
// named agent + "/" + session, so one namespace (and one token scope)
// covers every agent. The session finds its agent from its name; a session
// whose agent is no longer configured still serves its history.
//
// # HTTP
//
//	GET  /v1/agents                              {"agents":[{"name","provider","model"}]}
//	POST /v1/agents/{agent}/{session}/messages   {"text":"..."}
//	GET  /v1/agents/{agent}/{session}/messages   ?before=ID&limit=N (1-200, default 50)
//	POST /v1/agents/{agent}/{session}/cancel     {"cancelled":true|false}
//	POST /v1/agents/{agent}/{session}/chat/completions   OpenAI chat completions
//
// POST stores the user message, calls the model and answers with the
// assistant Message as JSON; a provider failure is not an HTTP error: the
// message comes back (and is stored) with status "error" and the
// provider's words in "error". With Accept: text/event-stream it streams
// Server-Sent Events instead, each with id "{messageId}:{n}" and a JSON
// object with "type" and "messageId":
//
//	message-start    {"userMessageId","model"}   once both messages are durable
//	text-delta       {"delta"}
//	reasoning-delta  {"delta"}
//	tool-call-delta  {"index","toolCallId","toolName","inputDelta"}
//	tool-call        {"toolCallId","toolName","input"}
//	message-end      {"message"}                 the stored message, once durable
//	error            {"error"}                   the session was reset meanwhile
//
// GET pages the history newest first: {"messages":[...],"next":ID}; pass
// next as ?before= for the older page. next is absent on the last page.
//
// POST /cancel stops the generation in flight: its reply is stored with
// status "cancelled", the output so far and an error saying a client
// cancelled it; its POST answers with that message (a stream ends with
// message-end carrying it). The answer is {"cancelled":true} if a
// generation was in flight, else false. Messages waiting for their turn
// (pending) are not affected: the next one starts once the cancelled
// reply is stored.
//
// # OpenAI-compatible endpoint
//
// POST /chat/completions lets any OpenAI client use a session: point the
// client's base URL at /v1/agents/{agent}/{session}/. The body is a chat
// completions request, of which only the last message with role "user" is
// read (its content a string or text parts), as the session's new
// message: the history the model sees is the session's, whatever else the
// request holds. Model, system messages, sampling and tools of the request
// are ignored; the agent's configuration decides. The answer is a
// chat.completion object (id "chatcmpl-" + the reply's message ID, the
// agent's model, usage), or, with "stream":true, chat.completion.chunk
// events ("data: {json}" ... "data: [DONE]"): a first chunk with the
// role, one per text delta (reasoning as "reasoning_content"), one with
// the finish reason, and a usage chunk with empty choices when
// stream_options.include_usage is set. A reply that failed or was
// cancelled is an API error ({"error":{"code","message"}}; 503, or 409 if
// cancelled), or mid-stream an event {"error":{...}} with no [DONE]; the
// reply is stored with its status all the same. Responses carry
// X-Should-Retry: false, so the OpenAI SDKs do not resend a message that
// was already stored.
//
// # Turns and the generation guard
//
// The model call runs inside State.Release: the user message and an
// assistant message with status "streaming" are committed first, other
// events (history reads, other posts) are served while the model runs,
// and the object is not evicted meanwhile (the released event holds it).
// When the model finishes the message is updated in a new turn with its
// final status: complete, error or cancelled (the runtime closed, or POST
// /cancel). A client that goes away does not stop the generation.
//
// One generation runs per session at a time: a message posted meanwhile
// is stored at once with status "pending" (not sent to the model), then
// waits (its turn released) for the generations before it, in arrival
// order. When its turn comes it becomes complete and moves to the end of
// the history, so that the model, and later readers, see it after the
// reply it waited for. If the server shuts down first, the POST answers
// 503 and the message is stored as cancelled. Messages a stopped process
// left streaming or pending are marked error or cancelled when the session
// next activates.
//
// # Storage
//
// One row per message in table messages (seq, id, role, status,
// created_at, usage, model, error, parts), never one growing value. Parts
// are the message's Part array as JSON; an array over 512 KiB is stored in
// 512 KiB chunks in table message_chunks, so a message of any size fits
// under SQLite's per-value limit.
package agent
