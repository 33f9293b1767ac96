package cairn_test

import (
	"context"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
)

type keeper struct{ st *cairn.State }

// Note writes a key, then answers with an error that keeps the write.
func (k *keeper) Note(ctx context.Context, key string) error {
	if err := k.st.Put(key, []byte("kept")); err != nil {
		return err
	}
	return cairn.Keep(cairn.Errorf(cairn.Conflict, "busy"))
}

// Fail writes a key, then fails: the write is rolled back.
func (k *keeper) Fail(ctx context.Context, key string) error {
	if err := k.st.Put(key, []byte("lost")); err != nil {
		return err
	}
	return cairn.Errorf(cairn.Conflict, "busy")
}

// Has reports whether key exists.
func (k *keeper) Has(ctx context.Context, key string) (bool, error) {
	_, ok, err := k.st.Get(key)
	return ok, err
}

// Wait releases the turn until the runtime closes.
func (k *keeper) Wait(ctx context.Context) error {
	return k.st.Release(func(ctx context.Context) error {
		select {
		case <-k.st.Closing():
			return nil
		case <-time.After(time.Minute):
			return cairn.Errorf(cairn.Timeout, "Closing never closed")
		}
	})
}

func TestKeepCommitsAndAnswers(t *testing.T) {
	rt := newRuntime(t, "", cairn.Process, map[string]cairn.Class{
		"k": {New: func(st *cairn.State) (any, error) { return &keeper{st}, nil }},
	}, nil)
	ns, _ := rt.Namespace("k")
	s, _ := ns.GetByName("x")
	ctx := context.Background()
	if err := s.Call(ctx, "Note", "a", nil); cairn.ErrorCode(err) != cairn.Conflict {
		t.Fatalf("Note: got %v, want a conflict error", err)
	}
	if err := s.Call(ctx, "Fail", "b", nil); cairn.ErrorCode(err) != cairn.Conflict {
		t.Fatalf("Fail: got %v, want a conflict error", err)
	}
	for key, want := range map[string]bool{"a": true, "b": false} {
		var got bool
		if err := s.Call(ctx, "Has", key, &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("key %q after its turn: exists %v, want %v", key, got, want)
		}
	}
}

func TestClosingEndsReleasedHandlers(t *testing.T) {
	rt := newRuntime(t, "", cairn.Process, map[string]cairn.Class{
		"k": {New: func(st *cairn.State) (any, error) { return &keeper{st}, nil }},
	}, nil)
	ns, _ := rt.Namespace("k")
	s, _ := ns.GetByName("x")
	done := make(chan error, 1)
	go func() { done <- s.Call(context.Background(), "Wait", nil, nil) }()
	waitFor(t, "the handler to release its turn", func() bool { return rt.Stats().TurnsReleased > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		t.Fatalf("Close with a released handler: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("the released handler: got %v, want nil (it saw Closing)", err)
	}
}
