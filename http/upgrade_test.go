package http_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cairn-dev/cairn"
	cairnhttp "github.com/cairn-dev/cairn/http"
)

// TestRouteWebSocketWithSubprotocolToken checks that an extra route can
// accept an object's hibernatable WebSocket, and that a client that
// cannot set headers (a browser) authenticates with its token as a
// subprotocol, of which the server selects "cairn" and never the token.
func TestRouteWebSocketWithSubprotocolToken(t *testing.T) {
	const secret = "room-secret/0123456789+="
	var rt *cairn.Runtime
	route := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns, err := rt.Namespace("room")
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		stub, _ := ns.GetByName(r.PathValue("name"))
		if err := stub.Fetch(w, cairn.ForwardedRequest(r, nil, "")); err != nil {
			cairn.WriteError(w, err)
		}
	})
	ts := newServer(t, serverOptions{
		tokens: []cairnhttp.Token{{Name: "rooms", Secret: secret, Namespaces: []string{"room"}}},
		tune:   func(r *cairn.Runtime) { rt = r },
		tuneSrv: func(s *cairnhttp.Server) {
			s.Routes = append(s.Routes, cairnhttp.Route{Pattern: "/rooms/{name}", Handler: route, Namespace: "room"})
		},
	})
	u := wsURL(ts.url + "/rooms/lobby?user=a")
	dialWith := func(protocols ...string) (*websocket.Conn, int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: protocols})
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return c, status, err
	}

	c, _, err := dialWith(cairnhttp.Subprotocol, cairnhttp.TokenSubprotocol(secret))
	if err != nil {
		t.Fatalf("dial with the token as a subprotocol: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if got := c.Subprotocol(); got != cairnhttp.Subprotocol {
		t.Errorf("selected subprotocol %q, want %q", got, cairnhttp.Subprotocol)
	}
	var joined struct{ Joined string }
	readJSON(t, c, &joined)
	if joined.Joined != "a" {
		t.Errorf("joined %+v, want a", joined)
	}
	send(t, c, "hi")
	var m struct{ User, Text string }
	readJSON(t, c, &m)
	if m.Text != "hi" {
		t.Errorf("broadcast %+v, want hi", m)
	}

	for _, tc := range []struct {
		name      string
		protocols []string
	}{
		{"no token", []string{cairnhttp.Subprotocol}},
		{"wrong token", []string{cairnhttp.Subprotocol, cairnhttp.TokenSubprotocol("not-the-secret-at-all")}},
		{"not base64url", []string{cairnhttp.Subprotocol, "cairn.bearer.***"}},
	} {
		if c, status, err := dialWith(tc.protocols...); err == nil {
			c.CloseNow()
			t.Errorf("%s: dial succeeded, want 401", tc.name)
		} else if status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", tc.name, status)
		}
	}
}
