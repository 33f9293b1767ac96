package cairn

import (
	"context"
	"encoding/json"
	"time"
)

// Class describes the objects of one namespace: how to construct an instance
// and how to bring its schema up to date.
//
// An instance is whatever New returns. The runtime finds its handlers by
// interface:
//   - http.Handler receives requests sent with Stub.Fetch;
//   - methods of the form `func (T) Name(ctx context.Context[, arg A]) ([R, ]error)`
//     receive RPC calls by name, with JSON-encoded argument and result; an
//     instance that implements RPCHandler receives them all instead;
//   - AlarmHandler receives the object's alarm.
//
// The runtime delivers events to an instance one at a time (G3), so an
// instance needs no locking of its own.
type Class struct {
	// New constructs an instance. It runs inside the activating turn, after
	// migrations, and may read and write storage through st. It is
	// required.
	New func(st *State) (any, error)

	// Migrations are applied in order, each once per object, on activation
	// and inside the activating turn (G10). Append only: never edit or
	// reorder a migration that has shipped.
	Migrations []Migration
}

// Migration is one step of a class's schema. SQL, if set, runs first as user
// SQL (it may hold several statements); then Func, if set.
type Migration struct {
	SQL  string
	Func func(ctx context.Context, st *State) error
}

// RPCHandler receives RPC calls on an instance that wants to dispatch them
// itself. arg is the JSON-encoded argument ("null" if none); the result is
// JSON-encoded for the caller. Returning an error rolls back the turn's
// writes.
type RPCHandler interface {
	RPC(ctx context.Context, method string, arg json.RawMessage) (any, error)
}

// AlarmHandler receives the object's alarm. Returning an error (or
// panicking) rolls back the handler's writes and schedules a retry with
// exponential backoff, up to the runtime's AlarmRetries.
type AlarmHandler interface {
	Alarm(ctx context.Context, a AlarmInfo) error
}

// Invalidator is implemented by an instance that keeps what it read from
// its storage in memory rather than reading it again on every event, as a
// Durable Object may: only its own handlers write its storage, and a turn
// that fails is rolled back together with the instance (a handler that
// returns an error must forget what it cached in that turn itself).
//
// The exception is an event run from outside the class, Stub.Run (the
// admin API's KV, SQL and alarm edits, tools, tests): after each such event
// the runtime calls Invalidate, still in the turn, and the instance must
// read storage again before trusting its copy.
type Invalidator interface {
	Invalidate()
}

// Deleter is implemented by an instance that keeps part of its state
// outside its storage (an agent session's archived history, in an archive
// store). Stub.Delete, and so the admin API's delete, calls Delete in a
// turn instead of deleting the object's storage itself: Delete removes the
// rest and then calls st.DeleteAll, or returns an error (the object stays,
// say why: a Conflict if it is busy).
type Deleter interface {
	Delete(ctx context.Context) error
}

// AlarmInfo describes one delivery of an alarm.
type AlarmInfo struct {
	Scheduled  time.Time // when the alarm was set to fire
	RetryCount int       // 0 on the first delivery
}
