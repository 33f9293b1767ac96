// Package coord holds cairn's coordination classes, for agents (and the
// people beside them) that must agree on who does what: locks, lock,
// leader, presence and queue. Each is an ordinary cairn class built on the
// public API (State SQL, alarms, Release, WebSockets), its state in SQLite,
// so it survives restarts and crashes. `cairn serve` registers them under
// the namespaces of Classes.
//
//   - LockTable (namespace "locks"): locks by name, each a row of the
//     object LockShard(name); what Lock does, for many locks at once,
//     whose requests share the shard's commits. Locks is its Go API and
//     its HTTP handler (/v1/locks/{name}/...).
//   - Lock (namespace "lock", one object per resource): a lease with an
//     owner, a TTL and a fencing token that strictly increases per lock
//     for as long as the object's storage exists; renew and release by the
//     holder with its token; FIFO waiters with a deadline; expiry by alarm.
//   - Leader (namespace "leader", one object per group): the same lease,
//     whose token is the leader's term; campaign, renew, resign; changes
//     stream over Server-Sent Events and WebSocket.
//   - Presence (namespace "presence", one object per room): members with a
//     TTL and metadata, expiring by alarm; join, update and leave events; a
//     member connected by WebSocket leaves when its socket closes.
//   - Queue (namespace "queue", one object per queue): enqueue with delay
//     and dedup key, claim with a visibility timeout, ack, nack with
//     exponential backoff, dead letters after max attempts.
//
// Every operation is an RPC method (POST /v1/objects/{ns}/{name}/rpc/{Method})
// and a REST route of the object's HTTP handler; errors are *cairn.Error
// with codes Invalid, Conflict, Timeout, TooLarge, NotFound. What a
// client-side timeout means for each operation, and how to retry, is in the
// method's comment and in docs/coordination.md.
//
// In Go, reach them through a runtime's stubs:
//
//	rt.Register("lock", coord.LockClass)
//	...
//	ns, _ := rt.Namespace("lock")
//	stub, _ := ns.GetByName("reports/2026-11")
//	var g coord.AcquireResult
//	err := stub.Call(ctx, "Acquire", coord.AcquireArgs{Owner: "worker-7", TTLMs: 10000, WaitMs: 5000, RequestID: reqID}, &g)
//	// ... write to storage with g.Token as the fencing token ...
//	err = stub.Call(ctx, "Release", coord.ReleaseArgs{Owner: "worker-7", Token: g.Token}, nil)
package coord
