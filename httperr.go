package cairn

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"unicode/utf8"
)

// HTTPStatus returns the HTTP status of an error code. It is the one mapping
// used by the server and by objects that serve HTTP themselves.
func HTTPStatus(c Code) int {
	switch c {
	case NotFound:
		return http.StatusNotFound
	case Invalid:
		return http.StatusBadRequest
	case TooLarge:
		return http.StatusRequestEntityTooLarge
	case Conflict:
		return http.StatusConflict
	case Unavailable:
		return http.StatusServiceUnavailable
	case Timeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// WriteError writes err as the API's JSON error,
// {"error":{"code":...,"message":...}}, with its status: for objects'
// HTTP handlers, so that their errors look like the server's.
func WriteError(w http.ResponseWriter, err error) {
	code := ErrorCode(err)
	WriteJSON(w, HTTPStatus(code), map[string]any{"error": map[string]string{
		"code": string(code), "message": ErrorMessage(err),
	}})
}

// WriteJSON writes v as a JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"encode response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// ReadBody reads a request body whole: a TooLarge error if an
// http.MaxBytesReader cut it, Invalid for other read errors.
func ReadBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, Errorf(TooLarge, "request body exceeds %d bytes", mbe.Limit)
		}
		return nil, Errorf(Invalid, "read request body: %v", err)
	}
	return b, nil
}

// DecodeJSON decodes b into v strictly: bytes that are not UTF-8, unknown
// fields and trailing data are Invalid errors, and numbers decoded into
// interfaces stay exact (json.Number).
func DecodeJSON(b []byte, v any) error {
	if !utf8.Valid(b) {
		// encoding/json would turn each bad byte into U+FFFD: refuse
		// rather than let different inputs become one.
		return Errorf(Invalid, "malformed JSON body: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return Errorf(Invalid, "malformed JSON body: %v", err)
	}
	if dec.More() {
		return Errorf(Invalid, "malformed JSON body: trailing data")
	}
	return nil
}

// ForwardedRequest returns a copy of r for an object's HTTP handler: its
// body is body (read beforehand, so that a slow client holds no object's
// turn) and its path is "/" + path, the part of the route after the object.
func ForwardedRequest(r *http.Request, body []byte, path string) *http.Request {
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.ContentLength = int64(len(body))
	r2.URL.Path = "/" + path
	r2.URL.RawPath = ""
	r2.RequestURI = r2.URL.RequestURI()
	return r2
}
