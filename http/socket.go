package http

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/coder/websocket"
)

func isWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// Subprotocol is the WebSocket subprotocol the server selects when a
// client offers it. A browser, which cannot send an Authorization header
// on a WebSocket, offers it together with its token as TokenSubprotocol
// returns it: new WebSocket(url, ["cairn", "cairn.bearer." + base64url(token)]).
// The token is never selected, so it is not echoed back.
const Subprotocol = "cairn"

// tokenPrefix starts the subprotocol that carries a bearer token.
const tokenPrefix = "cairn.bearer."

// TokenSubprotocol returns the subprotocol that carries the bearer token
// secret: "cairn.bearer." and the secret in unpadded base64url, so that
// any secret fits the characters a subprotocol may hold.
func TokenSubprotocol(secret string) string {
	return tokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(secret))
}

// subprotocolToken returns the bearer token a WebSocket upgrade request
// carries as a subprotocol, if it does.
func subprotocolToken(r *http.Request) (string, bool) {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			enc, ok := strings.CutPrefix(strings.TrimSpace(p), tokenPrefix)
			if !ok {
				continue
			}
			b, err := base64.RawURLEncoding.DecodeString(enc)
			if err != nil || len(b) == 0 {
				return "", false
			}
			return string(b), true
		}
	}
	return "", false
}

// upgrading lets an extra route's handler accept WebSockets: an upgrade
// request gets an upgrader in its context, as the object routes' do, and
// the socket's read loop runs once the handler returns.
func (s *Server) upgrading(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !isWebSocket(r) {
			h(w, r)
			return
		}
		up := &upgrader{s: s, w: w, r: r}
		h(w, r.WithContext(cairn.WithUpgrader(r.Context(), up)))
		if up.conn != nil {
			up.serve()
		}
	}
}

// upgrader completes the handshake of a socket an object accepted, and then
// runs its read loop on the request's goroutine.
type upgrader struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	ws   *cairn.WebSocket
	conn *websocket.Conn
}

// Upgrade implements cairn.Upgrader.
func (u *upgrader) Upgrade(ws *cairn.WebSocket) (cairn.SocketConn, error) {
	c, err := websocket.Accept(u.w, u.r, &websocket.AcceptOptions{
		// Browsers from other origins are refused unless they carry a
		// token; requests are authenticated before reaching here.
		InsecureSkipVerify: len(u.s.hashes) > 0,
		Subprotocols:       []string{Subprotocol},
	})
	if err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "websocket handshake: %v", err)
	}
	c.SetReadLimit(u.s.MaxMessageBytes)
	u.ws, u.conn = ws, c
	return socketConn{c}, nil
}

// serve reads messages and delivers them to the object until the socket
// closes. It runs on the request goroutine, which the hijacked connection
// frees from the server's timeouts.
func (u *upgrader) serve() {
	ctx := context.Background()
	for {
		typ, data, err := u.conn.Read(ctx)
		if err != nil {
			code := int(websocket.CloseStatus(err))
			reason := ""
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				reason = ce.Reason
			}
			if code < 0 {
				code = 1006 // abnormal closure: no close frame
			}
			if err := u.ws.Closed(ctx, code, reason); err != nil {
				u.s.Logger.Debug("websocket close event", "object", u.ws.Object().ID.String(), "err", err)
			}
			u.conn.CloseNow()
			return
		}
		m := cairn.Message{Text: typ == websocket.MessageText, Data: data}
		if err := u.ws.Deliver(ctx, m); err != nil {
			u.s.Logger.Warn("websocket message", "object", u.ws.Object().ID.String(), "err", err)
			if cairn.ErrorCode(err) == cairn.Unavailable {
				u.conn.Close(websocket.StatusTryAgainLater, "object unavailable")
			}
		}
	}
}

// socketConn adapts a websocket.Conn to cairn.SocketConn.
type socketConn struct{ c *websocket.Conn }

func (s socketConn) Send(ctx context.Context, m cairn.Message) error {
	typ := websocket.MessageBinary
	if m.Text {
		typ = websocket.MessageText
	}
	return s.c.Write(ctx, typ, m.Data)
}

// Close sends a close frame and waits a moment for the peer's; a peer that
// does not answer is cut off, so a shutdown is not held up.
func (s socketConn) Close(code int, reason string) error {
	done := make(chan error, 1)
	go func() { done <- s.c.Close(websocket.StatusCode(code), reason) }()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return s.c.CloseNow()
	}
}
