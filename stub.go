package cairn

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"sync"
	"unicode/utf8"
)

// Stub is a client for one object. It is cheap; make one per use or keep it.
// Every call is an event delivered in the object's turn order (G3).
type Stub struct {
	ns  *Namespace
	ref ObjectRef
}

// ID returns the object's ID.
func (s *Stub) ID() ID { return s.ref.ID }

// Name returns the object's name, or "" if the stub was made from an ID.
func (s *Stub) Name() string { return s.ref.Name }

// Namespace returns the object's namespace.
func (s *Stub) Namespace() *Namespace { return s.ns }

// ErrResponseStarted is wrapped by the error Fetch returns when the handler
// failed after part of the response had been sent (after a Flush).
var ErrResponseStarted = errors.New("response already started")

// enter prepares a call made from ctx: a call from inside another object's
// turn first makes that turn's writes durable (G5), and a call back into an
// object whose turn the chain holds (itself, or A→B→A) is refused, as it
// would wait for itself forever.
func (s *Stub) enter(ctx context.Context) (*object, error) {
	if t, ok := ctx.Value(turnKey{}).(*turn); ok {
		// A call chain back into an object whose turn it holds would wait
		// for itself forever.
		for p := t; p != nil; p = p.parent {
			if p.holding && p.o.ref.ID == s.ref.ID {
				return nil, Errorf(Invalid, "call cycle: object %s is already in a turn of this call chain", s.ref.ID)
			}
		}
		if t.holding {
			if err := t.commitPoint(); err != nil {
				return nil, err
			}
		}
	}
	return s.ns.rt.get(s.ns, s.ref)
}

// event delivers one event to the object: fn runs in its turn, with its
// instance, as object.run describes.
func (s *Stub) event(ctx context.Context, fn func(t *turn, inst *instance) error) error {
	o, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer o.done()
	return o.run(ctx, fn)
}

// Fetch delivers an HTTP request to the object's http.Handler and writes
// its response to w once the turn's writes are durable (G5). Nothing is
// written to w if Fetch returns an error, unless the handler flushed part of
// the response first, in which case the error wraps ErrResponseStarted.
//
// The handler may stream: each Flush of its ResponseWriter makes the
// turn's writes so far durable, then sends what was written. Inside
// State.Release, writes go out directly.
func (s *Stub) Fetch(w http.ResponseWriter, r *http.Request) error {
	o, err := s.enter(r.Context())
	if err != nil {
		return err
	}
	defer o.done()
	gw := &gatedWriter{w: w, header: make(http.Header)}
	var acc *acceptance
	err = o.run(r.Context(), func(t *turn, inst *instance) error {
		h, ok := inst.value.(http.Handler)
		if !ok {
			return Errorf(NotFound, "objects of namespace %q do not serve HTTP", s.ref.Namespace)
		}
		gw.t = t
		h.ServeHTTP(gw, r.WithContext(t.ctx))
		acc = t.accept
		return nil
	})
	gw.t = nil
	if acc != nil {
		// The object accepted a WebSocket: complete the handshake now that
		// the accepting turn is durable.
		if err != nil {
			s.ns.rt.sockets.remove(acc.ws)
			return err
		}
		conn, err := acc.up.Upgrade(acc.ws)
		if err != nil {
			s.ns.rt.sockets.remove(acc.ws)
			return err
		}
		acc.ws.bind(conn)
		return nil
	}
	if err != nil {
		if gw.sent {
			return errors.Join(ErrResponseStarted, err)
		}
		return err
	}
	gw.release()
	return nil
}

// Run runs fn as an event of the object, with its State: for tools that act
// on any object whatever its class (the admin API, tests). fn's error rolls
// back its writes, as a handler's does. An instance that is an Invalidator
// is told afterwards, in the same turn, that its storage may have changed
// under it.
func (s *Stub) Run(ctx context.Context, fn func(ctx context.Context, st *State) error) error {
	return s.event(ctx, func(t *turn, inst *instance) error {
		err := fn(t.ctx, inst.st)
		if inv, ok := inst.value.(Invalidator); ok && t.o.inst == inst && t.holding {
			inv.Invalidate()
		}
		return err
	})
}

// Delete deletes the object, as an event: the instance's Delete if it is a
// Deleter, State.DeleteAll otherwise. The next event finds the object new.
func (s *Stub) Delete(ctx context.Context) error {
	return s.event(ctx, func(t *turn, inst *instance) error {
		if d, ok := inst.value.(Deleter); ok {
			return d.Delete(t.ctx)
		}
		return inst.st.DeleteAll()
	})
}

// gatedWriter holds a handler's response until its turn is durable.
type gatedWriter struct {
	w      http.ResponseWriter
	t      *turn
	header http.Header
	status int
	buf    []byte
	sent   bool // headers went to w
}

func (g *gatedWriter) Header() http.Header { return g.header }

func (g *gatedWriter) WriteHeader(code int) {
	if g.status == 0 && !g.sent {
		g.status = code
	}
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	if g.status == 0 {
		g.status = http.StatusOK
	}
	if g.t != nil && !g.t.holding {
		// Inside Release: everything before is durable.
		g.release()
		return g.w.Write(p)
	}
	g.buf = append(g.buf, p...)
	return len(p), nil
}

// Flush opens the output gate for what was written so far.
func (g *gatedWriter) Flush() {
	if g.t != nil && g.t.holding {
		if err := g.t.commitPoint(); err != nil {
			return // the turn fails at its end; nothing is sent
		}
	}
	g.release()
	if f, ok := g.w.(http.Flusher); ok {
		f.Flush()
	}
}

// release sends the buffered response.
func (g *gatedWriter) release() {
	if !g.sent {
		g.sent = true
		dst := g.w.Header()
		for k, v := range g.header {
			dst[k] = v
		}
		if g.status == 0 {
			g.status = http.StatusOK
		}
		g.w.WriteHeader(g.status)
	}
	if len(g.buf) > 0 {
		g.w.Write(g.buf)
		g.buf = g.buf[:0]
	}
}

// Call invokes an RPC method of the object with arg encoded as JSON and
// decodes the JSON result into result (if result is not nil). An error
// returned by the method reaches the caller: a *Error keeps its code and
// message; other errors become Internal.
func (s *Stub) Call(ctx context.Context, method string, arg, result any) error {
	var raw json.RawMessage
	if arg == nil {
		raw = json.RawMessage("null")
	} else if r, ok := arg.(json.RawMessage); ok {
		raw = r
	} else {
		b, err := json.Marshal(arg)
		if err != nil {
			return Errorf(Invalid, "encode argument: %v", err)
		}
		raw = b
	}
	out, err := s.callJSON(ctx, method, raw)
	if err != nil {
		return err
	}
	if result != nil {
		if err := json.Unmarshal(out, result); err != nil {
			return Errorf(Invalid, "decode result: %v", err)
		}
	}
	return nil
}

// CallJSON is Call with the argument and result as JSON text.
func (s *Stub) CallJSON(ctx context.Context, method string, arg json.RawMessage) (json.RawMessage, error) {
	if method == "" || len(method) > 128 {
		return nil, Errorf(Invalid, "method name must be 1 to 128 bytes")
	}
	if len(arg) == 0 {
		arg = json.RawMessage("null")
	}
	if !json.Valid(arg) {
		return nil, Errorf(Invalid, "argument is not valid JSON")
	}
	if !utf8.Valid(arg) {
		// encoding/json would turn each bad byte into U+FFFD, so that
		// different inputs (two lock names, two owners) became one.
		return nil, Errorf(Invalid, "argument is not valid UTF-8")
	}
	return s.callJSON(ctx, method, arg)
}

// callJSON is CallJSON for an argument known to be valid JSON.
func (s *Stub) callJSON(ctx context.Context, method string, arg json.RawMessage) (json.RawMessage, error) {
	if method == "" || len(method) > 128 {
		return nil, Errorf(Invalid, "method name must be 1 to 128 bytes")
	}
	var out json.RawMessage
	err := s.event(ctx, func(t *turn, inst *instance) error {
		res, err := dispatchRPC(t.ctx, inst.value, method, arg)
		if err != nil {
			return err
		}
		out, err = json.Marshal(res)
		if err != nil {
			return Errorf(Internal, "encode result: %v", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RPC method tables, built once per type by reflection.
var methodTables sync.Map // reflect.Type -> map[string]rpcMethod

type rpcMethod struct {
	fn     reflect.Value // method expression: receiver first
	arg    reflect.Type  // nil if the method takes no argument
	result bool          // returns a value before the error
}

var (
	ctxType = reflect.TypeFor[context.Context]()
	errType = reflect.TypeFor[error]()
)

// reserved method names are hooks, not RPC methods.
var reservedMethods = map[string]bool{"ServeHTTP": true, "Alarm": true, "RPC": true}

func methodsOf(t reflect.Type) map[string]rpcMethod {
	if m, ok := methodTables.Load(t); ok {
		return m.(map[string]rpcMethod)
	}
	m := make(map[string]rpcMethod)
	for i := 0; i < t.NumMethod(); i++ {
		meth := t.Method(i)
		if reservedMethods[meth.Name] {
			continue
		}
		ft := meth.Type // receiver is In(0)
		if ft.NumIn() < 2 || ft.NumIn() > 3 || ft.In(1) != ctxType || ft.IsVariadic() {
			continue
		}
		if ft.NumOut() < 1 || ft.NumOut() > 2 || ft.Out(ft.NumOut()-1) != errType {
			continue
		}
		rm := rpcMethod{fn: meth.Func, result: ft.NumOut() == 2}
		if ft.NumIn() == 3 {
			rm.arg = ft.In(2)
		}
		m[meth.Name] = rm
	}
	methodTables.Store(t, m)
	return m
}

func dispatchRPC(ctx context.Context, value any, method string, arg json.RawMessage) (any, error) {
	if h, ok := value.(RPCHandler); ok {
		return h.RPC(ctx, method, arg)
	}
	rv := reflect.ValueOf(value)
	m, ok := methodsOf(rv.Type())[method]
	if !ok {
		return nil, Errorf(NotFound, "no RPC method %q", method)
	}
	in := []reflect.Value{rv, reflect.ValueOf(ctx)}
	if m.arg != nil {
		p := reflect.New(m.arg)
		if err := json.Unmarshal(arg, p.Interface()); err != nil {
			return nil, Errorf(Invalid, "decode argument of %s: %v", method, err)
		}
		in = append(in, p.Elem())
	}
	out := m.fn.Call(in)
	errv := out[len(out)-1]
	if !errv.IsNil() {
		return nil, errv.Interface().(error)
	}
	if m.result {
		return out[0].Interface(), nil
	}
	return nil, nil
}
