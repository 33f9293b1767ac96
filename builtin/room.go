package builtin

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/cairn-dev/cairn"
)

// RoomClass is the room namespace: a chat room over hibernatable
// WebSockets. Connect with a WebSocket to /v1/objects/room/{name}/ (add
// ?user=NAME to be named); each text message is stored and broadcast to
// every socket of the room. The room answers the text message "ping" with
// "pong" without waking up, and is evicted from memory while sockets stay
// open. GET /v1/objects/room/{name}/messages returns the last 100 messages.
var RoomClass = cairn.Class{
	New: func(st *cairn.State) (any, error) {
		st.SetWebSocketAutoResponse(cairn.Message{Text: true, Data: []byte("ping")}, cairn.Message{Text: true, Data: []byte("pong")})
		return &Room{st: st}, nil
	},
	Migrations: []cairn.Migration{
		{SQL: `CREATE TABLE messages (seq INTEGER PRIMARY KEY, user TEXT NOT NULL, text TEXT NOT NULL, at INTEGER NOT NULL)`},
	},
}

// Room is an instance of the room class.
type Room struct{ st *cairn.State }

// RoomMessage is a message of a room, as stored and broadcast.
type RoomMessage struct {
	Seq  int64  `json:"seq"`
	User string `json:"user"`
	Text string `json:"text"`
	At   int64  `json:"at"` // Unix milliseconds
}

// ServeHTTP implements http.Handler.
func (rm *Room) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/":
		user := r.URL.Query().Get("user")
		if user == "" {
			user = "anonymous"
		}
		if len(user) > 64 {
			writeError(w, cairn.Errorf(cairn.Invalid, "user name longer than 64 bytes"))
			return
		}
		ws, err := rm.st.AcceptWebSocket(r, cairn.SocketOptions{Tags: []string{"user:" + user}, Attachment: []byte(user)})
		if err != nil {
			writeError(w, err)
			return
		}
		b, _ := json.Marshal(map[string]any{"joined": user, "members": len(rm.st.WebSockets(""))})
		ws.Send(r.Context(), cairn.Message{Text: true, Data: b})
	case "/messages":
		rows, err := rm.st.Query(`SELECT seq, user, text, at FROM messages ORDER BY seq DESC LIMIT 100`)
		if err != nil {
			writeError(w, err)
			return
		}
		out := make([]RoomMessage, 0, len(rows.Values))
		for i := len(rows.Values) - 1; i >= 0; i-- {
			v := rows.Values[i]
			out = append(out, RoomMessage{Seq: v[0].(int64), User: v[1].(string), Text: v[2].(string), At: v[3].(int64)})
		}
		writeJSON(w, http.StatusOK, map[string]any{"messages": out})
	default:
		writeError(w, cairn.Errorf(cairn.NotFound, "no route %s", r.URL.Path))
	}
}

// WebSocketMessage implements cairn.WebSocketHandler: store and broadcast.
func (rm *Room) WebSocketMessage(ctx context.Context, ws *cairn.WebSocket, m cairn.Message) error {
	if !m.Text {
		return ws.Send(ctx, cairn.Message{Text: true, Data: []byte(`{"error":"text messages only"}`)})
	}
	msg := RoomMessage{User: string(ws.Attachment()), Text: string(m.Data), At: rm.st.Now().UnixMilli()}
	res, err := rm.st.Exec(`INSERT INTO messages (user, text, at) VALUES (?, ?, ?)`, msg.User, msg.Text, msg.At)
	if err != nil {
		return err
	}
	msg.Seq = res.LastInsertID
	b, _ := json.Marshal(msg)
	for _, peer := range rm.st.WebSockets("") {
		peer.Send(ctx, cairn.Message{Text: true, Data: b})
	}
	return nil
}

// WebSocketClose implements cairn.WebSocketHandler.
func (rm *Room) WebSocketClose(ctx context.Context, ws *cairn.WebSocket, code int, reason string) error {
	left, _ := json.Marshal(map[string]string{"left": string(ws.Attachment())})
	for _, peer := range rm.st.WebSockets("") {
		peer.Send(ctx, cairn.Message{Text: true, Data: left})
	}
	return nil
}
