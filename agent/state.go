package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/jsonstate"
)

// Agent state: each session has one JSON document, its state, that its
// clients read, replace and patch, and that is pushed to the session's
// WebSocket clients when it changes.
//
//	GET   /state   {"state": value, "version": n}
//	PUT   /state   the new value                 -> {"state", "version"}
//	PATCH /state   a patch, by its Content-Type:  -> {"state", "version"}
//	               application/merge-patch+json (RFC 7396) or
//	               application/json-patch+json (RFC 6902, all or nothing)
//
// The version counts changes (0 for a state never written, null); a
// change that leaves the value as it was does not count. A failed JSON
// Patch "test" is 409; a state over 1 MiB is 413.
//
// Every answer carries the version as a strong ETag ("7"). A PUT or PATCH
// with If-Match ("7", or several: "6", "7") changes the state only if its
// version is one of them, and is otherwise refused with 412 (code
// conflict) and the current version's ETag: a client that edits what it
// read does not overwrite a change made meanwhile. If-Match: * always
// matches (the state always exists).

// stateDoc is the state of every session, under KV key "agent.state" (the
// session's SQL tables hold its messages; its KV holds only this).
var stateDoc = jsonstate.New("agent.state")

// StateResponse is the body of the state routes' answers.
type StateResponse struct {
	State   json.RawMessage `json:"state"`
	Version int64           `json:"version"`
}

// serveState serves /state.
func (s *session) serveState(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		snap, err := stateDoc.Get(s.st)
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		setStateTag(w, snap.Version)
		cairn.WriteJSON(w, http.StatusOK, StateResponse{State: snap.Value, Version: snap.Version})
	case http.MethodPut, http.MethodPatch:
		body, err := cairn.ReadBody(r)
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		versions, anyVersion, err := ifMatch(r.Header.Values("If-Match"))
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		if !anyVersion {
			snap, err := stateDoc.Get(s.st)
			if err != nil {
				cairn.WriteError(w, err)
				return
			}
			if !slices.Contains(versions, snap.Version) {
				setStateTag(w, snap.Version)
				cairn.WriteJSON(w, http.StatusPreconditionFailed, map[string]any{"error": map[string]string{
					"code":    string(cairn.Conflict),
					"message": fmt.Sprintf("the state is at version %d, not the one If-Match names: read it again", snap.Version),
				}})
				return
			}
		}
		var c jsonstate.Change
		if r.Method == http.MethodPut {
			c, err = stateDoc.Replace(s.st, body)
		} else {
			mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			switch mt {
			case "application/merge-patch+json":
				c, err = stateDoc.MergePatch(s.st, body)
			case "application/json-patch+json":
				c, err = stateDoc.JSONPatch(s.st, body)
			default:
				err = cairn.Errorf(cairn.Invalid, "PATCH /state needs Content-Type application/merge-patch+json or application/json-patch+json, not %q", truncate(mt, 100))
			}
		}
		if err != nil {
			cairn.WriteError(w, err)
			return
		}
		if c.Changed {
			s.pushState(r.Context(), c, nil)
		}
		setStateTag(w, c.Version)
		cairn.WriteJSON(w, http.StatusOK, StateResponse{State: c.Value, Version: c.Version})
	default:
		w.Header().Set("Allow", "GET, PUT, PATCH")
		cairn.WriteError(w, cairn.Errorf(cairn.Invalid, "method %s not allowed; use GET, PUT or PATCH", r.Method))
	}
}

// setStateTag sets the ETag of a state version.
func setStateTag(w http.ResponseWriter, version int64) {
	w.Header().Set("ETag", `"`+strconv.FormatInt(version, 10)+`"`)
}

// ifMatch parses If-Match header values: the versions they name, or any
// for "*" (or no header at all). Entity tags other than quoted versions
// are Invalid: a weak tag (W/"7") never matches under If-Match's strong
// comparison, and this resource has no others.
func ifMatch(values []string) (versions []int64, anyVersion bool, err error) {
	if len(values) == 0 {
		return nil, true, nil
	}
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" {
				return nil, true, nil
			}
			n, perr := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(tag, `"`), `"`), 10, 64)
			if perr != nil || len(tag) < 3 || tag[0] != '"' || tag[len(tag)-1] != '"' || n < 0 {
				return nil, false, cairn.Errorf(cairn.Invalid, "If-Match: %q is not a state version's entity tag (\"7\") or *", truncate(tag, 40))
			}
			versions = append(versions, n)
		}
	}
	return versions, false, nil
}

// pushState sends a changed state to the session's WebSocket clients
// except except: a merge patch to those that asked for patches (when one
// exists), the whole state to the others (as cf_agent_state, which is
// what the Agents SDK's clients read). ctx is the turn's, so the frames
// leave once the change is durable.
func (s *session) pushState(ctx context.Context, c jsonstate.Change, except *cairn.WebSocket) {
	var whole, patch []byte
	for _, ws := range s.st.WebSockets(sdkTag) {
		if ws == except {
			continue
		}
		var frame []byte
		if c.Patch != nil && socketInfo(ws).Patches {
			if patch == nil {
				patch = mustJSON(map[string]any{"type": frameStatePatch, "patch": c.Patch, "version": c.Version})
			}
			frame = patch
		} else {
			if whole == nil {
				whole = stateFrame(c.Value, c.Version)
			}
			frame = whole
		}
		ws.Send(ctx, cairn.Message{Text: true, Data: frame})
	}
}

// stateFrame is the cf_agent_state frame for a value: the Agents SDK's
// shape, plus the version.
func stateFrame(v json.RawMessage, version int64) []byte {
	return mustJSON(map[string]any{"type": frameState, "state": v, "version": version})
}

// mustJSON encodes values that always encode (maps of JSON values).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"type":"error","error":"encode frame"}`)
	}
	return b
}
