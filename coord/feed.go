package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/cairn-dev/cairn"
)

// A feed is an object's stream of change events (leader, presence): each
// event is a row of the object's own table, so a stream can resume from an
// event id (Last-Event-ID), and an event leaves only once the turn that
// made it is durable (G5). WebSocket observers get events through the
// gated Send; SSE streams read them from storage in a turn of their own,
// woken by an in-memory poke.

const feedKeep = 1000 // events kept for resuming streams

var feedMigration = cairn.Migration{SQL: `
CREATE TABLE feed (seq INTEGER PRIMARY KEY, data TEXT NOT NULL, at INTEGER NOT NULL);
`}

// ObserverTag tags the WebSockets that receive a feed's events.
const ObserverTag = "observer"

// sseKeepAlive is how often an idle SSE stream gets a comment line.
const sseKeepAlive = 15 * time.Second

type feed struct {
	st   *cairn.State
	mu   sync.Mutex // guards subs: poked from turns, read by streams in Release
	subs map[chan struct{}]struct{}
}

func newFeed(st *cairn.State) *feed {
	return &feed{st: st, subs: make(map[chan struct{}]struct{})}
}

type feedEvent struct {
	Seq  int64
	Data []byte // JSON with "seq" and "type"
}

// publish appends an event (a JSON object; "seq" is set here) and sends it
// to WebSocket observers, gated on the turn.
func (f *feed) publish(ctx context.Context, ev map[string]any) error {
	rows, err := f.st.Query(`SELECT COALESCE(MAX(seq), 0) + 1 FROM feed`)
	if err != nil {
		return err
	}
	seq := i64(rows.Values[0][0])
	ev["seq"] = seq
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if _, err := f.st.Exec(`INSERT INTO feed (seq, data, at) VALUES (?, ?, ?)`, seq, string(b), f.st.Now().UnixMilli()); err != nil {
		return err
	}
	if seq%64 == 0 {
		if _, err := f.st.Exec(`DELETE FROM feed WHERE seq <= ?`, seq-feedKeep); err != nil {
			return err
		}
	}
	for _, ws := range f.st.WebSockets(ObserverTag) {
		ws.Send(ctx, cairn.Message{Text: true, Data: b})
	}
	f.mu.Lock()
	for ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	f.mu.Unlock()
	return nil
}

func (f *feed) last() (int64, error) {
	rows, err := f.st.Query(`SELECT COALESCE(MAX(seq), 0), COALESCE(MIN(seq), 0) FROM feed`)
	if err != nil {
		return 0, err
	}
	return i64(rows.Values[0][0]), nil
}

func (f *feed) since(after int64) ([]feedEvent, bool, error) {
	rows, err := f.st.Query(`SELECT seq, data FROM feed WHERE seq > ? ORDER BY seq LIMIT 500`, after)
	if err != nil {
		return nil, false, err
	}
	evs := make([]feedEvent, 0, len(rows.Values))
	for _, v := range rows.Values {
		evs = append(evs, feedEvent{Seq: i64(v[0]), Data: []byte(str(v[1]))})
	}
	// A gap: the events after `after` were pruned.
	gap := len(evs) > 0 && evs[0].Seq > after+1 && after > 0
	return evs, gap, nil
}

// serveSSE streams the feed as Server-Sent Events until the client goes
// away. The first event, "state", is snapshot(); then each change, with
// its seq as the event id. A client that reconnects with Last-Event-ID (or
// ?after=SEQ) gets the events it missed, or a new "state" if they were
// pruned.
func (f *feed) serveSSE(w http.ResponseWriter, r *http.Request, snapshot func() (any, error)) {
	ctx := r.Context()
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, cairn.Errorf(cairn.Internal, "streaming is not supported"))
		return
	}
	after := int64(-1)
	from := r.Header.Get("Last-Event-ID")
	if from == "" {
		from = r.URL.Query().Get("after")
	}
	if from != "" {
		n, err := strconv.ParseInt(from, 10, 64)
		if err != nil || n < 0 {
			writeError(w, cairn.Errorf(cairn.Invalid, "Last-Event-ID or after must be a non-negative integer"))
			return
		}
		after = n
	}
	sendState := func() error {
		snap, err := snapshot()
		if err != nil {
			return err
		}
		last, err := f.last()
		if err != nil {
			return err
		}
		b, _ := json.Marshal(snap)
		fmt.Fprintf(w, "id: %d\nevent: state\ndata: %s\n\n", last, b)
		after = last
		return nil
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	var err error
	if after < 0 {
		err = sendState()
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
	sub := make(chan struct{}, 1)
	sub <- struct{}{} // look at storage once: events after `after`
	f.mu.Lock()
	f.subs[sub] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, sub)
		f.mu.Unlock()
	}()
	fl.Flush()
	for {
		select {
		case <-sub:
		default:
			err := f.st.Release(func(rctx context.Context) error {
				t := time.NewTimer(sseKeepAlive)
				defer t.Stop()
				for {
					select {
					case <-sub:
						return nil
					case <-rctx.Done():
						return nil
					case <-f.st.Closing():
						return nil // the runtime is closing: end the stream
					case <-t.C:
						// Outside the turn, writes go straight out.
						fmt.Fprint(w, ": keep-alive\n\n")
						fl.Flush()
						t.Reset(sseKeepAlive)
					}
				}
			})
			if err != nil || ctx.Err() != nil {
				return
			}
			select {
			case <-f.st.Closing():
				return
			default:
			}
		}
		evs, gap, err := f.since(after)
		if err != nil {
			return
		}
		if gap {
			if err := sendState(); err != nil {
				return
			}
		} else {
			for _, ev := range evs {
				var head struct {
					Type string `json:"type"`
				}
				json.Unmarshal(ev.Data, &head)
				fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, head.Type, ev.Data)
				after = ev.Seq
			}
			if len(evs) == 500 {
				select {
				case sub <- struct{}{}: // more to read
				default:
				}
			}
		}
		fl.Flush() // commits, waits until durable, then sends
	}
}

// acceptObserver accepts a WebSocket tagged as an observer (and with
// extra tags) and sends it snapshot() as a "state" message.
func (f *feed) acceptObserver(r *http.Request, snapshot func() (any, error), extra ...string) (*cairn.WebSocket, error) {
	snap, err := snapshot()
	if err != nil {
		return nil, err
	}
	ws, err := f.st.AcceptWebSocket(r, cairn.SocketOptions{Tags: append([]string{ObserverTag}, extra...)})
	if err != nil {
		return nil, err
	}
	last, err := f.last()
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(map[string]any{"type": "state", "seq": last, "state": snap})
	ws.Send(r.Context(), cairn.Message{Text: true, Data: b})
	return ws, nil
}
