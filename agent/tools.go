package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cairn-dev/cairn"
)

// The tool loop's tools: which the model is offered in a round, and how
// each of its calls is answered.

// validToolName checks a tool name: 1-64 ASCII letters, digits, '_' and
// '-', what every provider accepts.
func validToolName(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return cairn.Errorf(cairn.Invalid, "tool name %q must be 1 to 64 bytes", truncate(name, 80))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return cairn.Errorf(cairn.Invalid, "tool name %q may hold only ASCII letters, digits, '_' and '-'", truncate(name, 80))
		}
	}
	return nil
}

// checkTools checks an agent's own tools: valid names, each once, each
// with a function.
func checkTools(agent string, tools []Tool) error {
	seen := make(map[string]bool, len(tools))
	for _, t := range tools {
		if err := validToolName(t.Name); err != nil {
			return cairn.Errorf(cairn.Invalid, "agent %q: %s", agent, cairn.ErrorMessage(err))
		}
		if seen[t.Name] {
			return cairn.Errorf(cairn.Conflict, "agent %q: tool %q is configured twice", agent, t.Name)
		}
		seen[t.Name] = true
		if t.Call == nil {
			return cairn.Errorf(cairn.Invalid, "agent %q: tool %q has no Call", agent, t.Name)
		}
		if len(t.InputSchema) > 0 && !json.Valid(t.InputSchema) {
			return cairn.Errorf(cairn.Invalid, "agent %q: tool %q: InputSchema is not JSON", agent, t.Name)
		}
	}
	return nil
}

// toolbox is the tools of one model round, by name.
type toolbox struct {
	byName map[string]*Tool
	specs  []ToolSpec
}

// toolbox gathers the round's tools: the agent's own, then each toolset's
// in order (asked in parallel). A name offered twice keeps its first
// tool; the later one is left out and logged, as is a toolset that fails
// (its tools sit this round out) or a tool it offers that is unusable.
func (g *generation) toolbox(ctx context.Context) *toolbox {
	a := g.a
	tb := &toolbox{byName: make(map[string]*Tool, len(a.Tools))}
	if len(a.Tools) == 0 && len(a.Toolsets) == 0 {
		return tb
	}
	add := func(t *Tool, from string) {
		if _, dup := tb.byName[t.Name]; dup {
			g.log.Warn("agent tool shadowed: a tool of the same name came first", "agent", a.Name, "tool", t.Name, "from", from)
			return
		}
		if !t.NeedsApproval && slices.Contains(a.RequireApproval, t.Name) {
			c := *t
			c.NeedsApproval = true
			t = &c
		}
		tb.byName[t.Name] = t
		tb.specs = append(tb.specs, t.Spec())
	}
	for i := range a.Tools {
		add(&a.Tools[i], "agent")
	}
	sets := make([][]Tool, len(a.Toolsets))
	errs := make([]error, len(a.Toolsets))
	var wg sync.WaitGroup
	for i, ts := range a.Toolsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sets[i], errs[i] = ts.Tools(ctx)
		}()
	}
	wg.Wait()
	for i, ts := range a.Toolsets {
		if errs[i] != nil {
			g.log.Warn("agent toolset unavailable; its tools sit this round out", "agent", a.Name, "toolset", ts.Name(), "err", errs[i])
			continue
		}
		for j := range sets[i] {
			t := &sets[i][j]
			if err := validToolName(t.Name); err != nil || t.Call == nil {
				g.log.Warn("agent toolset offers an unusable tool; left out", "agent", a.Name, "toolset", ts.Name(), "tool", t.Name)
				continue
			}
			add(t, "toolset "+ts.Name())
		}
	}
	return tb
}

// runCalls answers a round's tool calls: all at once, each with its own
// context bounded by ctx. Results are appended and streamed in call
// order, each as soon as it and those before it are in. If ctx ends, the
// calls still running are answered with an error without waiting for
// them (a tool must honour ctx; one that does not finishes on its own).
//
// Calls of tools that need a person's approval are parked first, before
// any result (park), and not answered here: runCalls reports whether any
// was, and the reply then waits for their decisions (approval.go).
func (g *generation) runCalls(ctx context.Context, calls []Part, tb *toolbox) (parked bool) {
	run := make([]Part, 0, len(calls))
	for _, c := range calls {
		if g.park(c, tb) {
			parked = true
			continue
		}
		run = append(run, c)
	}
	calls = run
	results := make([]chan Part, len(calls))
	for i, c := range calls {
		ch := make(chan Part, 1)
		results[i] = ch
		go func() {
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch <- g.dispatch(cctx, c, tb)
		}()
	}
	for i, ch := range results {
		var p Part
		select {
		case p = <-ch:
		case <-ctx.Done():
			select {
			case p = <-ch:
			default:
				p = errorResult(calls[i], "the tool call was stopped: "+stopText(ctx))
			}
		}
		g.emit(g.live.toolResult(p))
	}
	return parked
}

// stopText says why ctx ended, for a tool result.
func stopText(ctx context.Context) string {
	if cause := context.Cause(ctx); cause != nil {
		return errorText(cause)
	}
	return "the generation ended"
}

// dispatch decides how one tool call is answered, and answers it: every
// call gets exactly one result. It is the one place that decides, so that
// a call needing approval can be parked here.
func (g *generation) dispatch(ctx context.Context, call Part, tb *toolbox) Part {
	t := tb.byName[call.ToolName]
	if t == nil {
		return errorResult(call, fmt.Sprintf("unknown tool %q", call.ToolName))
	}
	if t.NeedsApproval && !call.Approval.approved() {
		// Calls that need approval are parked before they get here
		// (park); this one came another way without it.
		return errorResult(call, "this tool needs a person's approval, which the call does not have")
	}
	in := strings.TrimSpace(string(call.Input))
	if !strings.HasPrefix(in, "{") || !json.Valid([]byte(in)) {
		return errorResult(call, fmt.Sprintf("the input of tool %s is not a JSON object: %s", call.ToolName, truncate(string(call.Input), 200)))
	}
	out, err := callTool(ctx, t, json.RawMessage(in))
	if err != nil {
		if ctx.Err() != nil && isContextError(err) {
			return errorResult(call, "the tool call was stopped: "+stopText(ctx))
		}
		return errorResult(call, err.Error())
	}
	return Part{Type: PartToolResult, ToolCallID: call.ToolCallID, ToolName: call.ToolName, Output: out}
}

// callTool runs t, turning a panic into an error and checking the output.
func callTool(ctx context.Context, t *Tool, input json.RawMessage) (out json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("tool %s panicked: %v", t.Name, p)
		}
	}()
	out, err = t.Call(ctx, input)
	if err != nil {
		var ce *cairn.Error
		if errors.As(err, &ce) {
			return nil, errors.New(ce.Msg)
		}
		return nil, err
	}
	if len(out) == 0 {
		return json.RawMessage("null"), nil
	}
	if !json.Valid(out) {
		return nil, fmt.Errorf("tool %s returned output that is not JSON", t.Name)
	}
	return out, nil
}

// errorResult is the result of a call that failed: the error text as a
// JSON string, marked as an error.
func errorResult(call Part, text string) Part {
	out, _ := json.Marshal(truncate(text, maxErrorBytes))
	return Part{Type: PartToolResult, ToolCallID: call.ToolCallID, ToolName: call.ToolName, Output: out, IsError: true}
}
