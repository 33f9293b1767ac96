package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// RPCConn is a WebSocket to a server's /v1/rpc that carries object RPC
// calls, many at a time: one connection instead of one HTTP request per
// call. It is safe for concurrent use. Make one with Client.DialRPC.
type RPCConn struct {
	ws   *websocket.Conn
	next atomic.Uint64  // the last call id
	done chan struct{}  // closed when the reader has stopped
	bg   sync.WaitGroup // cancel frames being sent

	mu      sync.Mutex
	pending map[uint64]chan rpcReply // calls waiting for their answer
	err     error                    // why the socket is gone, once it is
	closed  bool                     // Close was called
}

// rpcReply is what a waiting call gets: an answer or the socket's loss.
type rpcReply struct {
	result json.RawMessage
	err    error
}

// rpcAnswer is an answer frame of the server.
type rpcAnswer struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *rpcError       `json:"error"`
}

// ErrRPCClosed is the error of calls on an RPCConn after Close.
var ErrRPCClosed = errors.New("rpc connection closed")

// DialRPC opens an RPC socket to the server (ws:// or wss:// and /v1/rpc
// on c.URL), with c.Token as the bearer token. A refused upgrade (a bad
// token: 401) returns an *APIError. Close the RPCConn when done.
func (c *Client) DialRPC(ctx context.Context) (*RPCConn, error) {
	u := strings.TrimRight(c.URL, "/") + "/v1/rpc"
	switch {
	case strings.HasPrefix(u, "http://"):
		u = "ws://" + u[len("http://"):]
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + u[len("https://"):]
	}
	opts := &websocket.DialOptions{HTTPClient: c.HTTP, HTTPHeader: http.Header{}}
	if c.Token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+c.Token)
	}
	ws, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, upgradeError(resp, err)
		}
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	ws.SetReadLimit(-1) // answers are as large as the server makes them, as over HTTP
	r := &RPCConn{ws: ws, done: make(chan struct{}), pending: make(map[uint64]chan rpcReply)}
	go r.read()
	return r, nil
}

// upgradeError returns the *APIError of a refused upgrade. The library
// keeps up to 1 KiB of the response body.
func upgradeError(resp *http.Response, err error) error {
	var body bytes.Buffer
	if resp.Body != nil {
		body.ReadFrom(resp.Body)
	}
	var eb ErrorBody
	if json.Unmarshal(body.Bytes(), &eb) == nil && eb.Error.Code != "" {
		return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	return &APIError{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: err.Error()}
}

// Call calls method of the object name in namespace ns with args (none if
// nil) and decodes the result into out (if not nil). An error of the
// server is an *APIError, as Client.Do returns, so ErrorCode works on it.
//
// If ctx ends first, Call asks the server to cancel the call and returns
// ctx.Err(): the call may still have run, as with an HTTP request that
// timed out. If the socket is lost, every waiting call fails at once.
// Sending the call is not cut short by ctx (the library would close the
// socket under the other calls): a server that stops reading holds it up.
func (r *RPCConn) Call(ctx context.Context, ns, name, method string, args, out any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, s := range [...]string{ns, name, method} {
		if !utf8.ValidString(s) {
			// JSON cannot carry it: the server would see U+FFFD instead.
			return &APIError{Status: http.StatusBadRequest, Code: "invalid", Message: fmt.Sprintf("%q is not valid UTF-8", s)}
		}
	}
	var argb []byte
	if args != nil {
		var err error
		if argb, err = json.Marshal(args); err != nil {
			return fmt.Errorf("rpc %s: encode args: %w", method, err)
		}
	}
	id := r.next.Add(1)
	frame := make([]byte, 0, 64+len(ns)+len(name)+len(method)+len(argb))
	frame = append(frame, `{"id":`...)
	frame = strconv.AppendUint(frame, id, 10)
	frame = append(frame, `,"ns":`...)
	frame = appendJSONString(frame, ns)
	frame = append(frame, `,"name":`...)
	frame = appendJSONString(frame, name)
	frame = append(frame, `,"method":`...)
	frame = appendJSONString(frame, method)
	if argb != nil {
		frame = append(frame, `,"args":`...)
		frame = append(frame, argb...)
	}
	frame = append(frame, '}')

	ch := make(chan rpcReply, 1)
	r.mu.Lock()
	if r.err != nil {
		err := r.err
		r.mu.Unlock()
		return err
	}
	r.pending[id] = ch
	r.mu.Unlock()
	// Not ctx: the library closes the whole socket when a write's
	// context ends, and a frame is small.
	if err := r.ws.Write(context.Background(), websocket.MessageText, frame); err != nil {
		r.forget(id)
		return fmt.Errorf("rpc %s: send: %w", method, err)
	}
	select {
	case rep := <-ch:
		if rep.err != nil {
			return rep.err
		}
		if out != nil {
			return json.Unmarshal(rep.result, out)
		}
		return nil
	case <-ctx.Done():
		if r.forget(id) {
			r.sendCancel(id)
		}
		return ctx.Err()
	}
}

// forget drops a pending call; false if it was not pending any more (its
// answer came, or the socket was lost).
func (r *RPCConn) forget(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pending[id]; !ok {
		return false
	}
	delete(r.pending, id)
	return true
}

// sendCancel sends {"cancel": id} without making the caller wait for it.
func (r *RPCConn) sendCancel(id uint64) {
	r.bg.Go(func() {
		b := strconv.AppendUint([]byte(`{"cancel":`), id, 10)
		r.ws.Write(context.Background(), websocket.MessageText, append(b, '}'))
	})
}

// read delivers answers to their calls until the socket fails, and then
// fails the calls still waiting.
func (r *RPCConn) read() {
	defer close(r.done)
	var buf bytes.Buffer
	var err error
	for {
		var rd io.Reader
		_, rd, err = r.ws.Reader(context.Background())
		if err != nil {
			break
		}
		buf.Reset()
		if _, err = buf.ReadFrom(rd); err != nil {
			break
		}
		r.deliver(buf.Bytes())
		if buf.Cap() > rpcKeepBuffer {
			buf = bytes.Buffer{}
		}
	}
	r.mu.Lock()
	if r.err == nil {
		r.err = fmt.Errorf("rpc connection lost: %w", err)
	}
	lost := r.err
	pending := r.pending
	r.pending = nil
	r.mu.Unlock()
	for _, ch := range pending {
		ch <- rpcReply{err: lost}
	}
	r.ws.CloseNow()
}

// deliver hands an answer frame to its call. Answers to calls given up on
// (and error answers without an id, which this client's frames do not
// cause) are dropped.
func (r *RPCConn) deliver(b []byte) {
	var a rpcAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return
	}
	id, err := strconv.ParseUint(string(a.ID), 10, 64)
	if err != nil {
		return
	}
	r.mu.Lock()
	ch := r.pending[id]
	delete(r.pending, id)
	r.mu.Unlock()
	if ch == nil {
		return
	}
	if a.Error != nil {
		ch <- rpcReply{err: &APIError{Status: a.Error.Status, Code: a.Error.Code, Message: a.Error.Message}}
		return
	}
	ch <- rpcReply{result: a.Result}
}

// Close closes the socket and waits for its goroutines: calls still
// waiting fail with ErrRPCClosed, and the server cancels the calls it is
// running. Closing again does nothing.
func (r *RPCConn) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	lost := r.err != nil
	if !lost {
		r.err = ErrRPCClosed
	}
	r.mu.Unlock()
	var err error
	if !lost {
		err = r.ws.Close(websocket.StatusNormalClosure, "")
	}
	r.ws.CloseNow() // if the handshake failed
	<-r.done
	r.bg.Wait()
	return err
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
