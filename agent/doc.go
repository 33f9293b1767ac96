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
// # Turns and the generation guard
//
// The model call runs inside State.Release: the user message and an
// assistant message with status "streaming" are committed first, other
// events (history reads, other posts) are served while the model runs,
// and the object is not evicted meanwhile (the released event holds it).
// When the model finishes the message is updated in a new turn with its
// final status: complete, error or cancelled (the runtime closed). A
// client that goes away does not stop the generation.
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
