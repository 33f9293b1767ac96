package main

import (
	"context"
	"fmt"
)

func (m *Main) runBench(ctx context.Context, args []string) int {
	fmt.Fprintln(m.Stderr, "cairn bench: not built yet")
	return ExitFailure
}
