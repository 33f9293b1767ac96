package builtin

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/cairn-dev/cairn"
)

// SessionClass is the session namespace: the same workloads as the Durable
// Objects peer in shared/peers/workerd/worker.mjs, for `cairn bench`. Its
// chat is the naive seed design (the whole history in one value) on
// purpose, to compare like with like; the agent layer stores one row per
// message.
//
//	POST /chat     {"text": "..."}: append user and assistant messages
//	POST /put      body: KV put under one of 1,000 keys
//	POST /sqlput   body: SQL upsert into a table
//	GET  /get      KV get of one key
var SessionClass = cairn.Class{
	New: func(st *cairn.State) (any, error) { return &Session{st: st}, nil },
	Migrations: []cairn.Migration{
		{SQL: `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)`},
	},
}

// Session is an instance of the session class.
type Session struct {
	st      *cairn.State
	n       int
	history []byte // the stored history (a JSON array), read once per instance
	count   int    // messages in it
	loaded  bool
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ServeHTTP implements http.Handler.
func (s *Session) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/chat":
		var in struct {
			Text string `json:"text"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			writeError(w, cairn.Errorf(cairn.Invalid, "malformed JSON body"))
			return
		}
		if !s.loaded {
			// The instance is the only writer of its storage and is
			// dropped if a turn fails, so the copy in memory stays true.
			v, ok, err := s.st.Get("messages")
			if err != nil {
				writeError(w, err)
				return
			}
			var msgs []chatMessage
			if ok {
				if err := json.Unmarshal(v, &msgs); err != nil {
					writeError(w, err)
					return
				}
			}
			s.history, s.count, s.loaded = []byte("[]"), 0, true
			if ok {
				s.history, s.count = v, len(msgs)
			}
		}
		reply := "echo: " + in.Text
		// Append the two messages to the stored array without decoding it:
		// the whole history is still written back, as the peer does.
		add, _ := json.Marshal([]chatMessage{{"user", in.Text}, {"assistant", reply}})
		history := make([]byte, 0, len(s.history)+len(add))
		history = append(history, s.history[:len(s.history)-1]...)
		if s.count > 0 {
			history = append(history, ',')
		}
		history = append(history, add[1:]...)
		if err := s.st.Put("messages", history); err != nil {
			writeError(w, err)
			return
		}
		s.history, s.count = history, s.count+2
		writeJSON(w, http.StatusOK, map[string]any{"reply": reply, "n": s.count})
	case "/put":
		body, err := readBody(r)
		if err != nil {
			writeError(w, err)
			return
		}
		s.n++
		if err := s.st.Put("k"+strconv.Itoa(s.n%1000), body); err != nil {
			writeError(w, err)
			return
		}
		w.Write([]byte("ok"))
	case "/sqlput":
		body, err := readBody(r)
		if err != nil {
			writeError(w, err)
			return
		}
		s.n++
		if _, err := s.st.Exec(`INSERT OR REPLACE INTO kv VALUES (?, ?)`, "k"+strconv.Itoa(s.n%1000), string(body)); err != nil {
			writeError(w, err)
			return
		}
		w.Write([]byte("ok"))
	case "/get":
		v, ok, err := s.st.Get("k1")
		if err != nil {
			writeError(w, err)
			return
		}
		if !ok {
			v = []byte("none")
		}
		w.Write(v)
	default:
		writeError(w, cairn.Errorf(cairn.NotFound, "no route %s", r.URL.Path))
	}
}
