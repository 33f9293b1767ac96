package cairn_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strconv"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/sqlite"
)

// Counter is the class of the README's example.
type Counter struct{ st *cairn.State }

// Add is an RPC method.
func (c *Counter) Add(ctx context.Context, n int) (int, error) {
	v, _, err := c.st.Get("n")
	if err != nil {
		return 0, err
	}
	total, _ := strconv.Atoi(string(v))
	total += n
	return total, c.st.Put("n", []byte(strconv.Itoa(total)))
}

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "cairn-example")
	defer os.RemoveAll(dir)

	eng, err := sqlite.Open(dir, cairn.Disk)
	if err != nil {
		log.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	ns, err := rt.Register("counter", cairn.Class{
		New: func(st *cairn.State) (any, error) { return &Counter{st}, nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)

	stub, _ := ns.GetByName("visits")
	var total int
	for i := 0; i < 3; i++ {
		if err := stub.Call(ctx, "Add", 1, &total); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("visits:", total)
	// Output: visits: 3
}
