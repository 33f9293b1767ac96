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
//	GET  /v1/agents/{agent}/{session}/messages   ?before=CURSOR&limit=N (1-200, default 50)
//	GET  /v1/agents/{agent}/{session}/messages/{id}/stream   Last-Event-ID or ?after=
//	POST /v1/agents/{agent}/{session}/cancel     {"cancelled":true|false}
//	POST /v1/agents/{agent}/{session}/chat/completions   OpenAI chat completions
//	GET, PUT, PATCH /v1/agents/{agent}/{session}/state     the agent state (state.go)
//	GET, POST /v1/agents/{agent}/{session}/schedules; DELETE .../schedules/{id}   (schedules.go)
//	GET /v1/agents/{agent}/{session}/approvals; POST .../approvals/{toolCallId}   (approval.go)
//	/agents/{agent}/{session}   the Cloudflare Agents SDK's WebSocket protocol (sdk.go, Service.SDKHandler)
//	GET  /v1/agents/{agent}/{session}/export     the whole history, JSONL (see Cold storage)
//	GET  /v1/agents/{agent}/{session}/usage      the session's bytes, hot and archived
//	POST /v1/agents/{agent}/{session}/archive    archive it now: it expires
//	DELETE /v1/agents/{agent}/{session}          delete it forever, its archive too
//	GET  /v1/agents/{agent}/usage                the agent's bytes, hot and archived
//
// POST stores the user message, calls the model and answers with the
// assistant Message as JSON; a provider failure is not an HTTP error: the
// message comes back (and is stored) with status "error" and the
// provider's words in "error". With Accept: text/event-stream it streams
// Server-Sent Events instead, each with an id (see Resuming a stream) and
// a JSON object with "type" and "messageId":
//
//	message-start    {"userMessageId","model"}   once both messages are durable
//	step-start       {"step"}                    a model round begins (1, 2, ...)
//	text-delta       {"delta"}
//	reasoning-delta  {"delta"}
//	tool-call-delta  {"index","toolCallId","toolName","inputDelta"}
//	tool-call        {"toolCallId","toolName","input"}
//	tool-approval-request {"toolCallId","toolName","approvalId","deadline"}   the call waits for a person
//	tool-result      {"toolCallId","toolName","output","isError","denied"?}
//	step-end         {"step"}                    the round ended (its tool results are in)
//	message-end      {"message"}                 the stored message, once durable
//	error            {"error"}                   the session was reset meanwhile
//
// Every round has one step-start and one step-end, even if it failed
// (a round that parked for approvals ends when they are answered: the
// parked reply's message-end takes no position, and its continuation's
// events follow it);
// tool-call-delta events are pieces of a call's input as the model writes
// it, and the tool-call event after them has it whole.
//
// GET pages the history newest first: {"messages":[...],"next":CURSOR};
// pass next as ?before= for the older page. next is absent on the last
// page. A cursor is opaque: today a message ID while the page ends among
// the hot messages, "s" and a sequence number in the archive; a message
// ID is accepted as ?before= too (one archived since is looked for in the
// 16 newest chunks, or the request fails with 400: page with next).
//
// POST /cancel stops the generation in flight: its reply is stored with
// status "cancelled", the output so far and an error saying a client
// cancelled it; its POST answers with that message (a stream ends with
// message-end carrying it). The answer is {"cancelled":true} if a
// generation was in flight, else false. Messages waiting for their turn
// (pending) are not affected: the next one starts once the cancelled
// reply is stored.
//
// # Tools
//
// An agent's model may call tools: the agent's Tools (Go functions, or
// the built-ins of Builtin: "now", "random"), and those its Toolsets
// offer (MCP servers), asked for their list at the start of every model
// round. A toolset that fails is left out of that round and logged; the
// turn goes on. Names are unique in a round: the first tool of a name
// wins (the agent's own before the toolsets', toolsets in order), and a
// later one of the same name is left out and logged.
//
// When a round ends with tool calls, they run all at once, each with its
// own context that ends with the generation's, and each call gets one
// tool-result part, in call order, appended to the same assistant
// message: the tool's output, or an error result (isError, the error text
// as a JSON string) for an unknown tool, an input that is not a JSON
// object, or a tool that fails or panics. A call of a tool that needs a
// person's approval (Tool.NeedsApproval) parks the reply instead, with
// status awaiting-approval, until it is decided (GET and POST
// /approvals: see approval.go). Then the model is called
// again with the history and the reply so far (providers render its
// rounds with Steps), up to Agent.MaxToolRounds rounds: a model still
// calling tools in the last round gets error results ("not run") and
// the reply ends with status error saying so. Usage sums the rounds'.
//
// Between rounds the generation takes its turn back and stores the reply
// so far (still streaming), so that a crash keeps the rounds that
// finished (the reply is then marked error when the session activates
// again).
//
// # Resuming a stream
//
// A client that lost a reply's stream (a dropped connection, a reload)
// gets the rest of it, without a gap or a repeat, from
//
//	GET /v1/agents/{agent}/{session}/messages/{id}/stream
//
// with the id of the last event it saw in the Last-Event-ID header (as a
// browser's EventSource sends it) or in ?after=. The answer is an event
// stream: while the reply is being generated, what the client missed and
// then the events as they come, until message-end; once it ended (also
// after the session was evicted from memory or the server restarted), the
// rest from storage and message-end. With neither header nor ?after= it
// is the whole stream from message-start on. A reader that falls more
// than 1,024 events behind is dropped (its stream ends early) rather than
// slow the generation; it may resume again.
//
// Event ids are positions: "{messageId}:{n}", where n counts what the
// stream holds up to and including the event: one for each step-start,
// tool-call, tool-result and step-end, one per byte of text for
// text-delta and reasoning-delta. message-start is at 0 and message-end
// one past the last step-end; tool-call-delta and error events take
// nothing (they carry the position before them), so a client resuming
// from one gets the complete tool-call event. A resumed text part starts
// at the byte after the client's position, so the client's text plus the
// resumed deltas is the reply's text exactly. A malformed id, one of
// another message, or a position the stream has not reached is answered
// 400; an unknown message 404. A position past the end of a reply that
// ended (possible when the server stopped mid-round and lost what it had
// not stored) gets message-end alone.
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
// Each model round runs inside State.Release: the user message and an
// assistant message with status "streaming" are committed first, other
// events (history reads, other posts, resumed streams) are served while
// the model runs, and the object is not evicted meanwhile (the released
// event holds it). When the last round ends the message is updated in a
// new turn with its final status: complete, error or cancelled (the
// runtime closed, POST /cancel, or the client left). A client that goes
// away does not stop the generation unless the agent's
// CancelOnDisconnect is set: then the reply is stored cancelled, with
// the output so far and an error saying the client disconnected.
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
// created_at, usage, model, error, parts, rounds), never one growing
// value. Parts
// are the message's Part array as JSON; an array over 512 KiB is stored in
// 512 KiB chunks in table message_chunks, so a message of any size fits
// under SQLite's per-value limit.
//
// # Cold storage
//
// With an archive store (Service.Archive; cairn serve's default is a
// directory, <data>/archive, or S3), each session keeps its last
// Agent.HotMessages messages (default 200) hot, in its database. Once a
// reply leaves HotMessages + ArchiveBatch (default 200) or more, the
// session's alarm (soon after; the reply is not delayed) moves the oldest
// ones to the archive, in chunks of ArchiveBatch messages (at most 4 MiB
// of JSON): JSONL of Message with each message's seq, compressed with
// zstd (archive.EncodeChunk: 4.3x on realistic chat), under the key
// "agent/{object ID}/c/{first seq}-{last seq}", listed in the session's
// chunk index (table archive_chunks). Only whole, settled messages move,
// oldest first: never one streaming, pending or awaiting approval (nor
// anything after it), and a question stays with its reply. The model's
// context is the latest MaxHistory complete messages of the hot window,
// so HotMessages must be at least MaxHistory.
//
// A chunk moves in three steps: its index row is committed 'writing';
// the chunk is Put (durable and verified) with the turn released; then
// one turn deletes its rows, if unchanged, and marks it 'done'. Reads take
// a range from its chunk once done, from the hot rows before, so a crash
// at any point leaves every message readable exactly once; a chunk left
// 'writing' is written again (or dropped) when the session next
// activates. Paging, export and resuming a stream read the archive
// transparently, with the turn released; decoded chunks are cached
// (Service.ChunkCacheBytes, default 64 MiB, shared). A reply's stream can
// be resumed from the archive too: a message archived since is looked for
// in the 16 newest chunks; older ones answer 404 (the history has them).
//
// GET /export streams the whole history as JSONL (application/x-ndjson),
// oldest first, one Message per line as the history shows it; the header
// X-Message-Count is the count when the export began, so a client can
// tell a truncated export (the archive failed midway) from a whole one.
//
// A session idle for Agent.SessionTTL (default 30 days; NeverExpire to
// keep sessions forever) expires by its own alarm (a reserved schedule,
// moved forward by every request, WebSocket frame and generation; not
// listed by GET /schedules): its messages are archived, then a manifest
// ("agent/{object ID}/manifest": the chunk index, the session's KV, that
// is its state, and the seq reached) is Put and verified, then the
// session's storage is deleted. A session with a reply in flight or
// parked for approval, a waiting message, an open WebSocket or schedules
// of its own is not idle. The next request to an expired session restores
// it: the index and the state come back, new messages continue the seqs,
// and the newest chunks (MaxHistory messages at least) come back hot, so
// the model's context is what it was; schedules and approval records are
// not kept. With Agent.DiscardExpired the session starts fresh instead,
// and the old archive is deleted. POST /archive expires a session at
// once (409 if it is busy, or used meanwhile); DELETE deletes it forever:
// its blobs (the manifest first), then its storage; a crash in between
// leaves a mark, and the archiver finishes the job (other requests get
// 409 meanwhile). Without an archive store, every message stays hot and
// sessions never expire. A session that activates for the first time (or
// after it expired) asks the archive for its manifest: if the archive
// cannot be reached, the request fails (503) rather than start afresh a
// session that may have a history.
//
// GET /usage answers SessionUsage: hot bytes (the session's database) and
// messages, archived bytes, chunks and messages. Each agent's totals,
// GET /v1/agents/{agent}/usage, come from a tally (an object of namespace
// UsageNamespace) its sessions report their changes to; see usage.go for
// what best effort means there.
package agent
