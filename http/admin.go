package http

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/builtin"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The admin API: catalog, KV, SQL, alarm and usage of any object, for
// operators and the console. Admin scope only.

func (s *Server) adminRoutes(handle func(pattern, route string, h http.HandlerFunc)) {
	handle("/v1/admin/namespaces", "admin", s.admin(s.listNamespaces))
	handle("/v1/admin/namespaces/{ns}/objects", "admin", s.admin(s.listObjects))
	handle("/v1/admin/objects/{ns}/{name}", "admin", s.admin(s.adminObject(s.objectInfo)))
	handle("/v1/admin/objects/{ns}/{name}/kv", "admin", s.admin(s.adminObject(s.kvList)))
	handle("/v1/admin/objects/{ns}/{name}/kv/{key...}", "admin", s.admin(s.adminObject(s.kvKey)))
	handle("/v1/admin/objects/{ns}/{name}/sql", "admin", s.admin(s.adminObject(s.sql)))
	handle("/v1/admin/objects/{ns}/{name}/alarm", "admin", s.admin(s.adminObject(s.alarm)))
	handle("/v1/admin/objects/{ns}/{name}/sockets", "admin", s.admin(s.adminObject(s.sockets)))
	handle("/v1/admin/usage", "admin", s.admin(s.usage))
	handle("/v1/admin/stats", "admin", s.admin(s.stats))
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeErrorCode(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here (allowed: "+allow+")")
}

// NamespaceJSON is one namespace in the admin API.
type NamespaceJSON struct {
	Name       string `json:"name"`
	Registered bool   `json:"registered"`
	Objects    int64  `json:"objects"`
	Bytes      int64  `json:"bytes"`
	UsageJSON
}

// UsageJSON are usage counters.
type UsageJSON struct {
	Requests    int64 `json:"requests"`
	RowsRead    int64 `json:"rows_read"`
	RowsWritten int64 `json:"rows_written"`
}

func usageJSON(c cairn.Counters) UsageJSON {
	return UsageJSON{Requests: c.Requests, RowsRead: c.RowsRead, RowsWritten: c.RowsWritten}
}

func (s *Server) namespaces(ctx context.Context) ([]NamespaceJSON, error) {
	infos, err := s.rt.Engine().Namespaces(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []NamespaceJSON
	for _, n := range infos {
		_, rerr := s.rt.Namespace(n.Name)
		out = append(out, NamespaceJSON{Name: n.Name, Registered: rerr == nil, Objects: n.Objects, Bytes: n.Bytes, UsageJSON: usageJSON(n.Usage)})
		seen[n.Name] = true
	}
	for _, n := range s.rt.Namespaces() {
		if !seen[n] {
			out = append(out, NamespaceJSON{Name: n, Registered: true})
		}
	}
	return out, nil
}

func (s *Server) listNamespaces(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, "GET")
		return
	}
	out, err := s.namespaces(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"namespaces": out})
}

// ObjectJSON is one object in the admin API.
type ObjectJSON struct {
	Namespace  string     `json:"namespace"`
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Created    time.Time  `json:"created"`
	LastActive time.Time  `json:"last_active"`
	Bytes      int64      `json:"bytes"`
	Alarm      *time.Time `json:"alarm"`
	Active     bool       `json:"active"`
	Sockets    int        `json:"sockets,omitempty"`
	UsageJSON
}

func (s *Server) objectJSON(o cairn.ObjectInfo) ObjectJSON {
	j := ObjectJSON{Namespace: o.Namespace, ID: o.ID.String(), Name: o.Name, Created: o.Created, LastActive: o.LastActive,
		Bytes: o.Bytes, Active: s.rt.IsActive(o.ID), UsageJSON: usageJSON(o.Usage)}
	if !o.Alarm.IsZero() {
		a := o.Alarm
		j.Alarm = &a
	}
	return j
}

func (s *Server) listObjects(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, "GET")
		return
	}
	q := r.URL.Query()
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 || n > 1000 {
			writeError(w, cairn.Errorf(cairn.Invalid, "limit must be 1 to 1000"))
			return
		}
		limit = n
	}
	ns := r.PathValue("ns")
	if q.Has("prefix") {
		s.searchObjects(w, r, ns, q.Get("prefix"), q.Get("after"), limit)
		return
	}
	infos, err := s.rt.Engine().Objects(r.Context(), ns, q.Get("after"), limit)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]ObjectJSON, 0, len(infos))
	for _, o := range infos {
		out = append(out, s.objectJSON(o))
	}
	next := ""
	if len(infos) == limit {
		next = infos[len(infos)-1].ID.String()
	}
	writeJSON(w, http.StatusOK, map[string]any{"objects": out, "next": next})
}

// searchObjects answers a listing with ?prefix=: the objects whose name
// starts with prefix, in name order (then ID), up to limit of them, read
// from the catalog's name index. next is the cursor of the page's last
// entry (searchCursor), or empty when no match follows. "scanned" is how
// many catalog entries the request read (the matches, and one more to know
// whether any follow); it stays in the answer for clients written when a
// search walked the catalog in bounded steps.
func (s *Server) searchObjects(w http.ResponseWriter, r *http.Request, ns, prefix, after string, limit int) {
	var afterName, afterID string
	if after != "" {
		var ok bool
		if afterName, afterID, ok = parseSearchCursor(ns, after); !ok {
			writeError(w, cairn.Errorf(cairn.Invalid, "after is not a search cursor of namespace %s (pass the next of the previous answer)", quote(ns)))
			return
		}
	}
	infos, err := s.rt.Engine().ObjectsByName(r.Context(), ns, prefix, afterName, afterID, limit+1)
	if err != nil {
		writeError(w, err)
		return
	}
	scanned := len(infos)
	next := ""
	if len(infos) > limit {
		infos = infos[:limit]
		last := infos[limit-1]
		next = searchCursor(last.Name, last.ID.String())
	}
	out := make([]ObjectJSON, 0, len(infos))
	for _, o := range infos {
		out = append(out, s.objectJSON(o))
	}
	writeJSON(w, http.StatusOK, map[string]any{"objects": out, "next": next, "scanned": scanned})
}

// searchCursor is the cursor of a search page that ended at the object
// (name, id): URL-safe base64 of the 64 hex characters of the ID followed by
// the name. It is opaque to clients; names may hold any character.
func searchCursor(name, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(id + name))
}

// parseSearchCursor reverses searchCursor, for namespace ns.
func parseSearchCursor(ns, c string) (name, id string, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 64 || len(b)-64 > cairn.MaxNameLen {
		return "", "", false
	}
	id, name = string(b[:64]), string(b[64:])
	if _, err := cairn.ParseIDOf(ns, id); err != nil {
		return "", "", false
	}
	return name, id, true
}

// adminObject resolves {ns}/{name} of an admin route: by name, or by ID when
// the query says by=id. The namespace must be registered for anything that
// activates the object.
func (s *Server) adminObject(h func(w http.ResponseWriter, r *http.Request, stub *cairn.Stub)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := s.rt.Namespace(r.PathValue("ns"))
		if err != nil {
			writeError(w, err)
			return
		}
		var stub *cairn.Stub
		if r.URL.Query().Get("by") == "id" {
			id, err := ns.ParseID(r.PathValue("name"))
			if err != nil {
				writeError(w, err)
				return
			}
			stub = ns.Get(id)
		} else {
			stub, err = ns.GetByName(r.PathValue("name"))
			if err != nil {
				writeError(w, err)
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.MaxBodyBytes)
		h(w, r, stub)
	}
}

func (s *Server) objectInfo(w http.ResponseWriter, r *http.Request, stub *cairn.Stub) {
	switch r.Method {
	case http.MethodGet:
		info, err := s.rt.Engine().Object(r.Context(), stub.Namespace().Name(), stub.ID())
		if err != nil {
			writeError(w, err)
			return
		}
		j := s.objectJSON(info)
		writeJSON(w, http.StatusOK, j)
	case http.MethodDelete:
		err := stub.Delete(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"deleted": true})
	default:
		methodNotAllowed(w, r, "GET, DELETE")
	}
}

// KVEntryJSON is a KV entry of an admin listing with ?value_bytes=N: the
// value is cut to N bytes (at a character boundary for text) so that a page
// of large values stays small; Size is the whole value's length.
type KVEntryJSON struct {
	builtin.EntryJSON
	Size      int  `json:"size"`
	Truncated bool `json:"truncated,omitempty"`
}

func (s *Server) kvList(w http.ResponseWriter, r *http.Request, stub *cairn.Stub) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, "GET")
		return
	}
	opts, err := builtin.ListOptions(r, 1000)
	if err != nil {
		writeError(w, err)
		return
	}
	cut := -1
	if v := r.URL.Query().Get("value_bytes"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1<<20 {
			writeError(w, cairn.Errorf(cairn.Invalid, "value_bytes must be 0 to %d", 1<<20))
			return
		}
		cut = n
	}
	var out []builtin.EntryJSON
	var cutOut []KVEntryJSON
	err = stub.Run(r.Context(), func(ctx context.Context, st *cairn.State) error {
		es, err := st.List(opts)
		for _, e := range es {
			if cut < 0 {
				out = append(out, builtin.EncodeEntry(e))
				continue
			}
			cutOut = append(cutOut, cutEntry(e, cut))
		}
		return err
	})
	if err != nil {
		writeError(w, err)
		return
	}
	if cut >= 0 {
		if cutOut == nil {
			cutOut = []KVEntryJSON{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"entries": cutOut})
		return
	}
	if out == nil {
		out = []builtin.EntryJSON{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out})
}

// cutEntry encodes e with its value cut to n bytes.
func cutEntry(e cairn.Entry, n int) KVEntryJSON {
	size := len(e.Value)
	v := e.Value
	if len(v) > n {
		if utf8.Valid(v) {
			for n > 0 && !utf8.RuneStart(v[n]) {
				n--
			}
		}
		v = v[:n]
	}
	j := builtin.EncodeEntry(cairn.Entry{Key: e.Key, Value: v})
	if utf8.Valid(v) && !utf8.Valid(e.Value) {
		// The cut kept only text of a binary value: say what it is.
		j = builtin.EntryJSON{Key: e.Key, Value: base64.StdEncoding.EncodeToString(v), Encoding: "base64"}
	}
	return KVEntryJSON{EntryJSON: j, Size: size, Truncated: len(v) < size}
}

func (s *Server) kvKey(w http.ResponseWriter, r *http.Request, stub *cairn.Stub) {
	key := r.PathValue("key")
	switch r.Method {
	case http.MethodGet:
		var v []byte
		var found bool
		err := stub.Run(r.Context(), func(ctx context.Context, st *cairn.State) (err error) {
			v, found, err = st.Get(key)
			return err
		})
		if err != nil {
			writeError(w, err)
			return
		}
		if !found {
			writeError(w, cairn.Errorf(cairn.NotFound, "no key %s", quote(key)))
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(v)
	case http.MethodPut:
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, err)
			return
		}
		err = stub.Run(r.Context(), func(ctx context.Context, st *cairn.State) error { return st.Put(key, body) })
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	case http.MethodDelete:
		var existed bool
		err := stub.Run(r.Context(), func(ctx context.Context, st *cairn.State) (err error) {
			existed, err = st.Delete(key)
			return err
		})
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"deleted": existed})
	default:
		methodNotAllowed(w, r, "GET, PUT, DELETE")
	}
}

// SQLRequest is the body of the admin SQL route.
type SQLRequest struct {
	SQL  string `json:"sql"`
	Args []any  `json:"args,omitempty"`
}

// SQLResponse is its answer.
type SQLResponse struct {
	Columns     []string `json:"columns"`
	Rows        [][]any  `json:"rows"`
	RowsRead    int64    `json:"rows_read"`
	RowsWritten int64    `json:"rows_written"`
}

func (s *Server) sql(w http.ResponseWriter, r *http.Request, stub *cairn.Stub) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, "POST")
		return
	}
	var req SQLRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	args := make([]any, len(req.Args))
	for i, a := range req.Args {
		switch v := a.(type) {
		case nil, string, bool:
			args[i] = v
		case json.Number:
			if n, err := v.Int64(); err == nil {
				args[i] = n
			} else if f, err := v.Float64(); err == nil {
				args[i] = f
			} else {
				writeError(w, cairn.Errorf(cairn.Invalid, "argument %d: %v", i+1, err))
				return
			}
		default:
			writeError(w, cairn.Errorf(cairn.Invalid, "argument %d must be null, a number, a string or a boolean", i+1))
			return
		}
	}
	var resp SQLResponse
	err := stub.Run(r.Context(), func(ctx context.Context, st *cairn.State) error {
		rows, err := st.Query(req.SQL, args...)
		if err != nil {
			return err
		}
		resp = SQLResponse{Columns: rows.Columns, Rows: rows.Values, RowsRead: rows.RowsRead, RowsWritten: rows.RowsWritten}
		return nil
	})
	if err != nil {
		writeError(w, err)
		return
	}
	if resp.Rows == nil {
		resp.Rows = [][]any{}
	}
	writeJSON(w, http.StatusOK, resp)
}

// AlarmJSON is an object's alarm.
type AlarmJSON struct {
	At *time.Time `json:"at"`
}

func (s *Server) alarm(w http.ResponseWriter, r *http.Request, stub *cairn.Stub) {
	switch r.Method {
	case http.MethodGet:
		var out AlarmJSON
		err := stub.Run(r.Context(), func(ctx context.Context, st *cairn.State) error {
			at, ok, err := st.Alarm()
			if ok {
				out.At = &at
			}
			return err
		})
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	case http.MethodPut:
		var in AlarmJSON
		if err := readJSON(r, &in); err != nil {
			writeError(w, err)
			return
		}
		if in.At == nil {
			writeError(w, cairn.Errorf(cairn.Invalid, `body must be {"at": "RFC 3339 time"}`))
			return
		}
		err := stub.Run(r.Context(), func(ctx context.Context, st *cairn.State) error { return st.SetAlarm(*in.At) })
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, in)
	case http.MethodDelete:
		err := stub.Run(r.Context(), func(ctx context.Context, st *cairn.State) error { return st.DeleteAlarm() })
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, AlarmJSON{})
	default:
		methodNotAllowed(w, r, "GET, PUT, DELETE")
	}
}

func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, "GET")
		return
	}
	if err := s.rt.FlushUsage(); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.namespaces(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"namespaces": out})
}

// SocketJSON is one of an object's open WebSockets.
type SocketJSON struct {
	ID   string   `json:"id"`
	Tags []string `json:"tags"`
}

// sockets lists the object's open WebSockets and their tags (not their
// attachments, which are the class's own data). It runs a turn, so it
// wakes a hibernating object.
func (s *Server) sockets(w http.ResponseWriter, r *http.Request, stub *cairn.Stub) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, "GET")
		return
	}
	out := []SocketJSON{}
	err := stub.Run(r.Context(), func(ctx context.Context, st *cairn.State) error {
		for _, ws := range st.WebSockets("") {
			tags := ws.Tags()
			if tags == nil {
				tags = []string{}
			}
			out = append(out, SocketJSON{ID: ws.ID(), Tags: tags})
		}
		return nil
	})
	if err != nil {
		writeError(w, err)
		return
	}
	slices.SortFunc(out, func(a, b SocketJSON) int { return strings.Compare(a.ID, b.ID) })
	writeJSON(w, http.StatusOK, map[string]any{"sockets": out})
}

// StatsJSON are the runtime's counters at one instant. Counters only grow:
// a reader takes rates from the differences between two readings (the
// console polls this for its live charts).
type StatsJSON struct {
	Time          time.Time `json:"time"`
	Active        int64     `json:"active"`  // objects in memory
	Sockets       int       `json:"sockets"` // open WebSockets
	Turns         int64     `json:"turns"`
	TurnsFailed   int64     `json:"turns_failed"`
	TurnsReleased int64     `json:"turns_released"`
	TurnNanos     int64     `json:"turn_nanos"` // time turns held their objects, summed
	Commits       int64     `json:"commits"`
	CommitTurns   int64     `json:"commit_turns"`
	CommitNanos   int64     `json:"commit_nanos"` // local commit to durable, summed
	Activations   int64     `json:"activations"`
	Evictions     int64     `json:"evictions"`
	Resets        int64     `json:"resets"`
	AlarmsFired   int64     `json:"alarms_fired"`
	AlarmsFailed  int64     `json:"alarms_failed"`
	// Requests counts the HTTP requests answered; null when the server
	// keeps no metrics.
	Requests *int64 `json:"requests"`
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, "GET")
		return
	}
	st := s.rt.Stats()
	out := StatsJSON{Time: time.Now().UTC(), Active: st.Active, Sockets: s.rt.Sockets(),
		Turns: st.Turns, TurnsFailed: st.TurnsFailed, TurnsReleased: st.TurnsReleased, TurnNanos: st.TurnNanos,
		Commits: st.Commits, CommitTurns: st.CommitTurns, CommitNanos: st.CommitNanos,
		Activations: st.Activations, Evictions: st.Evictions, Resets: st.Resets,
		AlarmsFired: st.AlarmsFired, AlarmsFailed: st.AlarmsFailed}
	if s.Metrics != nil {
		n := s.Metrics.requestsTotal()
		out.Requests = &n
	}
	writeJSON(w, http.StatusOK, out)
}

// requestsTotal sums cairn_http_requests_total over its routes and codes,
// without gathering the rest of the registry (the storage collector reads
// the whole catalog).
func (m *Metrics) requestsTotal() int64 {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		m.requests.Collect(ch)
		close(ch)
	}()
	var total float64
	for c := range ch {
		var pb dto.Metric
		if c.Write(&pb) == nil {
			total += pb.GetCounter().GetValue()
		}
	}
	return int64(total)
}
