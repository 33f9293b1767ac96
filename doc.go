// Package cairn is a runtime for durable objects: named, single-threaded,
// stateful objects, each with its own SQLite database, for building AI
// agents and the things they coordinate through.
//
// An object is addressed by (namespace, name). At most one instance of it
// is live at a time; the runtime delivers its events (HTTP requests, RPC
// calls, alarms) one at a time, in arrival order, and commits the writes of
// each turn as one transaction before anything the turn produced leaves the
// object. Idle objects are evicted from memory; their storage stays.
//
// # A minimal class
//
// A class is a constructor. The value it returns serves HTTP (http.Handler),
// RPC (exported methods taking a context and at most one argument) and the
// alarm (AlarmHandler):
//
//	type Counter struct{ st *cairn.State }
//
//	func (c *Counter) Add(ctx context.Context, n int) (int, error) {
//		v, _, err := c.st.Get("n")
//		if err != nil {
//			return 0, err
//		}
//		total, _ := strconv.Atoi(string(v))
//		total += n
//		return total, c.st.Put("n", []byte(strconv.Itoa(total)))
//	}
//
//	eng, err := sqlite.Open("data", cairn.Disk)
//	...
//	rt := cairn.NewRuntime(eng)
//	ns, err := rt.Register("counter", cairn.Class{
//		New: func(st *cairn.State) (any, error) { return &Counter{st}, nil },
//	})
//	...
//	if err := rt.Open(); err != nil { ... }
//	defer rt.Close(ctx)
//
//	stub, err := ns.GetByName("visits")
//	var total int
//	err = stub.Call(ctx, "Add", 1, &total)
//
// Add reads and writes without locks: no other event of the same object
// runs until it returns. Its write is durable (here: fsynced) before Call
// returns.
//
// # Turns, commits and the output gate
//
// All writes of a turn (KV and SQL alike) form one transaction (G4). If the
// handler returns an error or panics, they are rolled back; a panic also
// discards the instance, which is built again from storage by the next
// event. State.Transaction nests an explicit transaction inside a turn.
//
// Turns that arrive while others run share one commit (group commit), and
// the commit of one group is made durable while the next group's turns run,
// so one object's throughput is not bound by fsync latency. A turn's result
// (its RPC return value, its HTTP response, a call it makes to another
// object) is released only once its group is durable at the runtime's
// Durability (G5, G6).
//
// A handler that must wait on slow outside work (an LLM call) wraps it in
// State.Release: the turn's writes are committed first, other events run
// while it waits, and the handler continues in a new turn afterwards (G3).
//
// # Storage
//
// Each object has its own SQLite database, created on first write. The KV
// API (Get, Put, Delete, List and their batch forms) lives in a reserved
// table of that database; Exec and Query run user SQL against it, which
// may not touch the reserved `_cairn_` tables nor control transactions.
// Class.Migrations bring each object's schema up to date on activation
// (G10). The Engine interface is the storage seam; package sqlite
// implements it.
//
// # Alarms
//
// Each object has one alarm (State.SetAlarm). It fires at least once,
// also for objects not in memory and after a restart, and is retried with
// exponential backoff when the handler fails (G7).
package cairn
