package coord_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/coord"
)

// The fencing test: a child process (this test binary, re-executed)
// acquires and releases a lock object and a lock of the lock table, and
// campaigns and resigns in an election group, in a loop, printing each
// token and term it was granted; the parent kills it with SIGKILL at a
// random moment, reopens the data directory and checks that the next
// tokens and term are greater than every one the child reported. Several
// rounds run on the same directory.

// TestFencingChild is the child of TestFencingAfterCrash: it proves
// nothing by itself.
func TestFencingChild(t *testing.T) {
	if os.Getenv("CAIRN_COORD_CHILD") != "1" {
		t.Skip("helper process of TestFencingAfterCrash")
	}
	time.AfterFunc(time.Minute, func() { os.Exit(4) })
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	rt := openRuntime(t, os.Getenv("CAIRN_COORD_DIR"), cairn.Disk)
	lock := stub(t, rt, "lock", "res")
	leader := stub(t, rt, "leader", "group")
	table := newLocks(t, rt)
	ctx := context.Background()
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "fencing child: "+format+"\n", args...)
		os.Exit(3)
	}
	for i := 0; ; i++ {
		// A short lease and a wait: the lease of the child killed before
		// lapses soon.
		var g coord.AcquireResult
		owner := fmt.Sprintf("child-%d", i)
		if err := lock.Call(ctx, "Acquire", coord.AcquireArgs{Owner: owner, TTLMs: 300, WaitMs: 5000}, &g); err != nil {
			fail("acquire: %v", err)
		}
		fmt.Printf("token %d\n", g.Token)
		if i%2 == 0 {
			if err := lock.Call(ctx, "Release", coord.ReleaseArgs{Owner: owner, Token: g.Token}, nil); err != nil {
				fail("release: %v", err)
			}
		}
		tg, err := table.Acquire(ctx, "res", coord.AcquireArgs{Owner: owner, TTLMs: 300, WaitMs: 5000})
		if err != nil {
			fail("acquire of the table's lock: %v", err)
		}
		fmt.Printf("table %d\n", tg.Token)
		if i%2 == 1 {
			if _, err := table.Release(ctx, "res", coord.ReleaseArgs{Owner: owner, Token: tg.Token}); err != nil {
				fail("release of the table's lock: %v", err)
			}
		}
		var c coord.CampaignResult
		if err := leader.Call(ctx, "Campaign", coord.CampaignArgs{Candidate: owner, TTLMs: 300, WaitMs: 5000}, &c); err != nil || !c.Elected {
			fail("campaign: %+v %v", c, err)
		}
		fmt.Printf("term %d\n", c.Term)
		if i%2 == 0 {
			if err := leader.Call(ctx, "Resign", coord.ResignArgs{Candidate: c.Leader, Term: c.Term}, nil); err != nil {
				fail("resign: %v", err)
			}
		}
	}
}

// TestFencingAfterCrash proves that fencing tokens (of a lock object and
// of a lock of the lock table) and terms never repeat or go back across
// SIGKILLs of the process that granted them.
func TestFencingAfterCrash(t *testing.T) {
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("seed %d", seed)
	var maxToken, maxTable, maxTerm int64
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFencingChild$", "-test.timeout=2m")
		cmd.Env = append(os.Environ(), "CAIRN_COORD_CHILD=1", "CAIRN_COORD_DIR="+dir)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			r := bufio.NewReader(stdout)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				lines <- line
			}
		}()
		// Kill after a random number of grants.
		want := 4 + rng.IntN(40)
		n := 0
		var got []string
		timeout := time.After(30 * time.Second)
		for n < want {
			select {
			case line, ok := <-lines:
				if !ok {
					cmd.Wait()
					t.Fatalf("round %d: child exited: %s", round, stderr.String())
				}
				got = append(got, line)
				if strings.HasPrefix(line, "token ") || strings.HasPrefix(line, "table ") || strings.HasPrefix(line, "term ") {
					n++
				}
			case <-timeout:
				cmd.Process.Kill()
				t.Fatalf("round %d: child made %d grants in 30 s: %s", round, n, stderr.String())
			}
		}
		cmd.Process.Kill()
		for line := range lines {
			got = append(got, line)
		}
		err = cmd.Wait()
		stdin.Close()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
			t.Fatalf("round %d: child did not die of SIGKILL: %v\n%s", round, err, stderr.String())
		}
		for _, line := range got {
			var v int64
			switch {
			case strings.HasPrefix(line, "token "):
				fmt.Sscanf(line, "token %d\n", &v)
				if v <= maxToken {
					t.Fatalf("round %d: token %d repeated or went back (max so far %d)", round, v, maxToken)
				}
				maxToken = v
			case strings.HasPrefix(line, "table "):
				fmt.Sscanf(line, "table %d\n", &v)
				if v <= maxTable {
					t.Fatalf("round %d: token %d of the table's lock repeated or went back (max so far %d)", round, v, maxTable)
				}
				maxTable = v
			case strings.HasPrefix(line, "term "):
				fmt.Sscanf(line, "term %d\n", &v)
				if v <= maxTerm {
					t.Fatalf("round %d: term %d repeated or went back (max so far %d)", round, v, maxTerm)
				}
				maxTerm = v
			}
		}
		childToken, childTable, childTerm := maxToken, maxTable, maxTerm
		// Restart on the same directory: the next grants are greater.
		rt := openRuntime(t, dir, cairn.Disk)
		var g coord.AcquireResult
		if err := stub(t, rt, "lock", "res").Call(context.Background(), "Acquire", coord.AcquireArgs{Owner: "parent", TTLMs: 60000, WaitMs: 5000}, &g); err != nil {
			t.Fatalf("round %d: acquire after the crash: %v", round, err)
		}
		if g.Token <= maxToken {
			t.Fatalf("round %d: token %d after the crash, want more than %d", round, g.Token, maxToken)
		}
		maxToken = g.Token
		table := newLocks(t, rt)
		tg, err := table.Acquire(context.Background(), "res", coord.AcquireArgs{Owner: "parent", TTLMs: 60000, WaitMs: 5000})
		if err != nil {
			t.Fatalf("round %d: acquire of the table's lock after the crash: %v", round, err)
		}
		if tg.Token <= maxTable {
			t.Fatalf("round %d: token %d of the table's lock after the crash, want more than %d", round, tg.Token, maxTable)
		}
		maxTable = tg.Token
		var c coord.CampaignResult
		if err := stub(t, rt, "leader", "group").Call(context.Background(), "Campaign", coord.CampaignArgs{Candidate: "parent", TTLMs: 60000, WaitMs: 5000}, &c); err != nil || !c.Elected {
			t.Fatalf("round %d: campaign after the crash: %+v %v", round, c, err)
		}
		if c.Term <= maxTerm {
			t.Fatalf("round %d: term %d after the crash, want more than %d", round, c.Term, maxTerm)
		}
		maxTerm = c.Term
		call[coord.ReleaseResult](t, stub(t, rt, "lock", "res"), "Release", coord.ReleaseArgs{Owner: "parent", Token: g.Token})
		call[coord.ResignResult](t, stub(t, rt, "leader", "group"), "Resign", coord.ResignArgs{Candidate: "parent", Term: c.Term})
		if _, err := table.Release(context.Background(), "res", coord.ReleaseArgs{Owner: "parent", Token: tg.Token}); err != nil {
			t.Fatalf("round %d: release of the table's lock: %v", round, err)
		}
		closeRuntime(t, rt)
		t.Logf("round %d: child reached token %d, table token %d, term %d; after restart token %d, table token %d, term %d",
			round, childToken, childTable, childTerm, g.Token, tg.Token, c.Term)
	}
}
