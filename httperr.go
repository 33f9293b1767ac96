package cairn

import (
	"encoding/json"
	"net/http"
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
