package agent

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"time"
)

// Built-in tools, for configuration to offer by name (Go users can put
// them in Agent.Tools as well):
//
//	now     the current time in UTC, RFC 3339: "2025-06-01T12:00:00Z"
//	        input {}
//	random  an integer drawn uniformly from [min, max], both included
//	        input {"min": integer, "max": integer}
//
// They touch nothing outside the process.
var builtins = map[string]func() Tool{
	"now":    nowTool,
	"random": randomTool,
}

// Builtin returns the built-in tool called name, and whether there is one
// (see BuiltinNames).
func Builtin(name string) (Tool, bool) {
	f, ok := builtins[name]
	if !ok {
		return Tool{}, false
	}
	return f(), true
}

// BuiltinNames returns the names of the built-in tools, sorted: "now"
// (the current UTC time, RFC 3339) and "random" (an integer in [min,
// max]).
func BuiltinNames() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func nowTool() Tool {
	return Tool{
		Name:        "now",
		Description: "Returns the current date and time in UTC, in RFC 3339 format.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{},"additionalProperties":false}`),
		Call: func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
			return json.Marshal(time.Now().UTC().Format(time.RFC3339))
		},
	}
}

func randomTool() Tool {
	return Tool{
		Name:        "random",
		Description: "Returns a random integer between min and max, both included.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{` +
			`"min":{"type":"integer","description":"the smallest possible result"},` +
			`"max":{"type":"integer","description":"the largest possible result"}},` +
			`"required":["min","max"],"additionalProperties":false}`),
		Call: func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
			var in struct {
				Min, Max *int64
			}
			if err := json.Unmarshal(input, &in); err != nil {
				return nil, errors.New("input must be {\"min\": integer, \"max\": integer}: " + err.Error())
			}
			if in.Min == nil || in.Max == nil {
				return nil, errors.New("input must hold both min and max")
			}
			lo, hi := *in.Min, *in.Max
			if lo > hi {
				return nil, errors.New("min must not be greater than max")
			}
			// The span in uint64 arithmetic: hi-lo+1 wraps to 0 only for
			// the whole int64 range.
			span := uint64(hi) - uint64(lo) + 1
			var n uint64
			if span == 0 {
				n = rand.Uint64()
			} else {
				n = rand.Uint64N(span)
			}
			return json.Marshal(int64(uint64(lo) + n))
		},
	}
}
