package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/cairn-dev/cairn"
)

// The cold storage routes of a session:
//
//	GET    /export    the whole history as JSONL, oldest first
//	GET    /usage     SessionUsage
//	POST   /archive   archive the whole session now (Expiry); it expires
//	DELETE /          delete the session forever, its archive included
//
// Export streams: archived chunks are read with the turn released, hot
// messages in the turn, in pieces, so that a session of any size exports
// in bounded memory. Each line is a Message as the history API shows it.
// X-Message-Count says how many messages the session held when the export
// began: a client that reads fewer lines got a truncated export (the
// archive failed midway; the status was sent already). Messages posted
// during the export may or may not be in it.

// testFuncKey carries a function that a test of the package runs on the
// session instance, as an event of its own (the key is unexported: no
// other code can make one).
type testFuncKey struct{}

// Delete implements cairn.Deleter: the admin API's delete of a session
// removes its archived history too, as DELETE /v1/agents/{agent}/{session}
// does.
func (s *session) Delete(ctx context.Context) error {
	s.touch()
	return s.deleteForever(ctx)
}

// serveCold serves the routes above, and reports whether it served r.
func (s *session) serveCold(w http.ResponseWriter, r *http.Request) bool {
	if fn, ok := r.Context().Value(testFuncKey{}).(func(*session, http.ResponseWriter)); ok {
		fn(s, w)
		return true
	}
	s.touch()
	switch p := r.URL.Path; {
	case p == "/" && r.Method == http.MethodDelete:
		if err := s.deleteForever(r.Context()); err != nil {
			cairn.WriteError(w, err)
			return true
		}
		cairn.WriteJSON(w, http.StatusOK, map[string]bool{"deleted": true})
	case s.cold.deleting:
		cairn.WriteError(w, cairn.Errorf(cairn.Conflict, "the session is being deleted; DELETE it again to finish"))
	case p == "/export":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return true
		}
		s.export(w)
	case p == "/usage":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return true
		}
		u, err := s.usage()
		if err != nil {
			cairn.WriteError(w, err)
			return true
		}
		cairn.WriteJSON(w, http.StatusOK, u)
	case p == "/archive":
		if !allow(w, r, http.MethodPost) {
			return true
		}
		out, err := s.expire(r.Context(), "api")
		if err != nil {
			cairn.WriteError(w, err)
			return true
		}
		cairn.WriteJSON(w, http.StatusOK, out)
	default:
		return false
	}
	return true
}

// allow answers 405 unless r's method is one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	list := ""
	for i, m := range methods {
		if i > 0 {
			list += ", "
		}
		list += m
	}
	w.Header().Set("Allow", list)
	cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use %s", r.Method, list))
	return false
}

// exportHot is how many hot messages one piece of an export reads.
const exportHot = 500

// export streams the history as JSONL (see the comment at the top).
func (s *session) export(w http.ResponseWriter) {
	n, err := s.store.hotCount()
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	a, err := s.store.archived()
	if err != nil {
		cairn.WriteError(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("X-Message-Count", strconv.FormatInt(n+a.Messages, 10))
	h.Set("Cache-Control", "no-store")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	flush := func() error {
		if buf.Len() == 0 {
			return nil
		}
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		return err
	}
	after := int64(0) // the last seq sent
	started := false
	for {
		// Chunks first: those that reach past what was sent. One done
		// since the last piece may hold messages sent hot already.
		refs, err := s.store.chunksWhere(`state = ? AND last_seq > ? ORDER BY first_seq LIMIT 16`, chunkDone, after)
		if err != nil {
			if !started {
				cairn.WriteError(w, err)
			}
			return
		}
		if len(refs) > 0 {
			started = true
			err := s.st.Release(func(ctx context.Context) error {
				for _, ref := range refs {
					msgs, err := s.svc.loadChunk(ctx, ref)
					if err != nil {
						return err
					}
					for i := range msgs {
						if msgs[i].Seq > after {
							enc.Encode(&msgs[i].Message)
						}
					}
					after = ref.Last
					if err := flush(); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				s.st.Runtime().Logger.Warn("export ended early", "session", s.st.Name(), "err", err)
				return
			}
			continue
		}
		// No chunk holds anything after `after`: the rest is hot.
		rows, err := s.st.Query(`SELECT `+messageColumns+`, seq FROM messages WHERE seq > ? ORDER BY seq LIMIT ?`, after, exportHot)
		if err == nil && len(rows.Values) == 0 {
			return
		}
		var msgs []Message
		if err == nil {
			msgs, err = s.store.decode(rows)
		}
		if err != nil {
			if !started {
				cairn.WriteError(w, err)
			}
			return
		}
		started = true
		for i := range msgs {
			enc.Encode(&msgs[i])
		}
		after = i64(rows.Values[len(rows.Values)-1][len(rows.Values[0])-1])
		if len(rows.Values) < exportHot {
			// The last piece: sent when the turn ends.
			flush()
			return
		}
		if err := s.st.Release(func(context.Context) error { return flush() }); err != nil {
			return
		}
	}
}
