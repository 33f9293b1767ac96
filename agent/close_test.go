package agent

import (
	"context"
	"errors"
	"testing"
)

// closingToolset counts Close calls.
type closingToolset struct {
	closed int
	err    error
}

func (c *closingToolset) Name() string                          { return "c" }
func (c *closingToolset) Tools(context.Context) ([]Tool, error) { return nil, nil }
func (c *closingToolset) Close() error                          { c.closed++; return c.err }

// plainToolset has no Close.
type plainToolset struct{}

func (plainToolset) Name() string                          { return "p" }
func (plainToolset) Tools(context.Context) ([]Tool, error) { return nil, nil }

func TestServiceCloseClosesToolsets(t *testing.T) {
	a, b := &closingToolset{}, &closingToolset{err: errors.New("boom")}
	svc, err := NewService(
		Agent{Name: "one", Toolsets: []Toolset{a, plainToolset{}}},
		Agent{Name: "two", Toolsets: []Toolset{b}},
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); err == nil || err.Error() != "boom" {
		t.Fatalf("Close = %v, want the toolset's error", err)
	}
	if a.closed != 1 || b.closed != 1 {
		t.Fatalf("closed %d and %d times, want 1 each", a.closed, b.closed)
	}
}
