package agent_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/agent"
)

// fixedToolset offers its tools every round.
type fixedToolset []agent.Tool

func (f fixedToolset) Name() string                                { return "fixed" }
func (f fixedToolset) Tools(context.Context) ([]agent.Tool, error) { return f, nil }

// TestRequireApprovalByName checks that Agent.RequireApproval parks calls
// of a tool that does not ask for approval itself (here one a toolset
// offers, as an MCP server's would be), and that the tool runs only once
// approved.
func TestRequireApprovalByName(t *testing.T) {
	var ran sync.Map
	a := guardAgent("named", &ran, time.Hour)
	tool := a.Tools[0]
	tool.NeedsApproval = false
	a.Tools = nil
	a.Toolsets = []agent.Toolset{fixedToolset{tool}}
	a.RequireApproval = []string{"guarded"}
	e := newEnv(t, t.TempDir(), a)

	m := e.send(t, "named/s", "open the door")
	if m.Status != agent.AwaitingApproval {
		t.Fatalf("reply status %s, want awaiting-approval: RequireApproval was ignored", m.Status)
	}
	if _, ok := ran.Load(`{"what":"door"}`); ok {
		t.Fatal("the tool ran before it was approved")
	}
	var callID string
	for _, p := range m.Parts {
		if p.Type == agent.PartToolCall {
			callID = p.ToolCallID
		}
	}
	code, b := e.do(t, "POST", "/v1/agents/named/s/approvals/"+callID, []byte(`{"approved":true}`))
	var done agent.Message
	if code != 200 || json.Unmarshal(b, &done) != nil || done.Status != agent.Complete {
		t.Fatalf("approve: %d %s", code, b)
	}
	if _, ok := ran.Load(`{"what":"door"}`); !ok {
		t.Error("the approved tool did not run")
	}
}
