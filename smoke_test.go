package cairn_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/cairn-dev/cairn"
)

type counter struct{ st *cairn.State }

func (c *counter) Incr(ctx context.Context, by int) (int, error) {
	v, _, err := c.st.Get("n")
	if err != nil {
		return 0, err
	}
	n, _ := strconv.Atoi(string(v))
	n += by
	return n, c.st.Put("n", []byte(strconv.Itoa(n)))
}

func TestSmoke(t *testing.T) {
	for _, level := range []cairn.Durability{cairn.Process, cairn.Disk} {
		t.Run(level.String(), func(t *testing.T) {
			rt := newRuntime(t, "", level, map[string]cairn.Class{
				"counter": {New: func(st *cairn.State) (any, error) { return &counter{st}, nil }},
			}, nil)
			ns, _ := rt.Namespace("counter")
			stub, err := ns.GetByName("a")
			if err != nil {
				t.Fatal(err)
			}
			var got int
			for i := 0; i < 3; i++ {
				if err := stub.Call(context.Background(), "Incr", 2, &got); err != nil {
					t.Fatal(err)
				}
			}
			if got != 6 {
				t.Fatalf("got %d, want 6", got)
			}
		})
	}
}
