package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
)

// The crash test of cold storage: a child process (this test binary,
// re-executed) stores batches of messages in a session and archives them
// (the archiver, or the whole session: expiry), printing each batch once
// it is durable; it is killed with SIGKILL at a step of the protocol (it
// kills itself from the test hook) or at a random moment (the parent
// kills it). Then the parent opens the same directory and checks that
// every acknowledged message is readable exactly once, in order, by
// paging and by export; that the archiver, run again, settles what the
// crash left (no chunk 'writing', no blob the index does not know); and
// that this holds once more. The next round runs on the same directory.

const crashBatch = 12 // messages per acknowledged batch

// crashAgent is the agent of the crash test: small chunks, so that a
// round writes many.
var crashAgent = Agent{Name: "a", MaxHistory: 4, HotMessages: 8, ArchiveBatch: 5}

// crashMessages are the messages of batch b of round r.
func crashMessages(round, b int) []Message {
	return genMessages(round*100000+b*crashBatch, crashBatch, 150)
}

// TestArchiveCrashChild is the process TestArchiveCrash kills.
func TestArchiveCrashChild(t *testing.T) {
	if os.Getenv("CAIRN_ARCHIVE_CRASH_CHILD") != "1" {
		t.Skip("helper process of TestArchiveCrash")
	}
	time.AfterFunc(2*time.Minute, func() { os.Exit(4) })
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	dir := os.Getenv("CAIRN_CRASH_DIR")
	mode := os.Getenv("CAIRN_CRASH_MODE")
	step := os.Getenv("CAIRN_CRASH_STEP")
	round, _ := strconv.Atoi(os.Getenv("CAIRN_CRASH_ROUND"))
	killAt, _ := strconv.Atoi(os.Getenv("CAIRN_CRASH_AT"))
	var mu sync.Mutex
	seen := 0
	hook := func(s string) {
		if s != step {
			return
		}
		mu.Lock()
		seen++
		n := seen
		mu.Unlock()
		if n == killAt {
			fmt.Printf("kill %s %d\n", s, n)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	e := newColdEnv(t, dir, nil, func(_ *cairn.Runtime, svc *Service) { svc.hook = hook }, crashAgent)
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "crash child: "+format+"\n", args...)
		os.Exit(3)
	}
	if mode == "delete" {
		fmt.Println("deleting")
		if err := e.onSession("a/s", func(s *session) error { return s.deleteForever(context.Background()) }); err != nil {
			fail("delete: %v", err)
		}
		fmt.Println("deleted")
		select {}
	}
	for b := 0; ; b++ {
		e.insert(t, "a/s", crashMessages(round, b))
		fmt.Printf("ack %d %d\n", round, b)
		var err error
		if mode == "expire" && b%3 == 2 {
			err = e.onSession("a/s", func(s *session) error { _, err := s.expire(context.Background(), "test"); return err })
		} else {
			_, err = e.tryMaintain("a/s")
		}
		if err != nil {
			fail("round %d batch %d: %v", round, b, err)
		}
	}
}

func TestArchiveCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts many processes")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CAIRN_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set CAIRN_CRASH_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	dir := t.TempDir()
	type plan struct{ mode, step string }
	var plans []plan
	for _, st := range []string{"chunk-writing", "chunk-put"} {
		plans = append(plans, plan{"archive", st}, plan{"expire", st})
	}
	plans = append(plans, plan{"expire", "expire-chunks"}, plan{"expire", "expire-manifest"},
		plan{"expire", "expire-manifest"}, plan{"archive", ""}, plan{"expire", ""}, plan{"archive", ""}, plan{"expire", ""})
	acked := map[[2]int]bool{}
	var maybe [][2]int // batches a child may have stored without acknowledging
	for round, p := range plans {
		n, last := archiveCrashRound(t, dir, round, p.mode, p.step, rng, acked)
		maybe = append(maybe, [2]int{round, last + 1})
		t.Logf("round %d (%s, kill at %q): %d batches acknowledged", round, p.mode, p.step, n)
		verifyCrash(t, dir, round, acked, maybe)
	}
	// Delete forever, killed midway: the next activation finishes it.
	archiveCrashRound(t, dir, len(plans), "delete", "delete-blobs", rng, acked)
	e := newColdEnv(t, dir, nil, nil, crashAgent)
	id := e.stub(t, "a/s").ID()
	if code, b, _ := e.do(t, "GET", "/v1/agents/a/s/messages", nil); code != 409 {
		t.Errorf("a session being deleted answers %d %s, want 409", code, b)
	}
	waitForCold(t, "the interrupted delete to finish", func() bool {
		keys, _ := e.arc.List(context.Background(), archivePrefix(id))
		code, _, _ := e.do(t, "GET", "/v1/agents/a/s/messages", nil)
		return len(keys) == 0 && code == 200
	})
	if got := e.pageAll(t, "a/s", 0); len(got) != 0 {
		t.Errorf("%d messages after delete", len(got))
	}
}

// archiveCrashRound runs a child until it dies (killing it itself at a
// random moment if step is "") and records its acknowledgements. It
// returns how many batches it acknowledged and the last one's number.
func archiveCrashRound(t *testing.T, dir string, round int, mode, step string, rng *rand.Rand, acked map[[2]int]bool) (int, int) {
	t.Helper()
	at := 1 + rng.IntN(6) // the step's nth time
	if mode == "delete" {
		at = 1
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestArchiveCrashChild$", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), "CAIRN_ARCHIVE_CRASH_CHILD=1", "CAIRN_CRASH_DIR="+dir, "CAIRN_CRASH_MODE="+mode,
		"CAIRN_CRASH_STEP="+step, "CAIRN_CRASH_ROUND="+strconv.Itoa(round), "CAIRN_CRASH_AT="+strconv.Itoa(at))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	n, last := 0, -1
	lines := make(chan string)
	go func() {
		defer close(lines)
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimSpace(line)
		}
	}()
	var deadline <-chan time.Time
	if step == "" {
		deadline = time.After(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
	}
	killed := ""
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				err := cmd.Wait()
				if ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Fatalf("round %d: child exited: %v (%s)\nstderr:\n%s", round, err, killed, stderr.String())
				}
				if step != "" && !strings.HasPrefix(killed, "kill ") {
					t.Fatalf("round %d: child died without reaching step %s", round, step)
				}
				return n, last
			}
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "ack":
				r, _ := strconv.Atoi(f[1])
				b, _ := strconv.Atoi(f[2])
				acked[[2]int{r, b}] = true
				n++
				last = b
			case len(f) > 0 && f[0] == "kill":
				killed = line
			}
		case <-deadline:
			deadline = nil
			killed = "kill (by the parent)"
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
}

// verifyCrash opens dir and checks the session: every acknowledged
// message once, in order; a batch stored without acknowledgement whole
// or absent; the same after the archiver settled what the crash left,
// with no chunk left 'writing' and no blob the index does not know.
func verifyCrash(t *testing.T, dir string, round int, acked map[[2]int]bool, maybe [][2]int) {
	t.Helper()
	e := newColdEnv(t, dir, nil, nil, crashAgent)
	defer e.close(t)
	check := func(when string) {
		got := e.pageAll(t, "a/s", 0)
		present := map[string]bool{}
		for _, m := range got {
			present[m.ID] = true
		}
		var want []string
		for r := 0; r <= round; r++ {
			for b := 0; ; b++ {
				k := [2]int{r, b}
				msgs := crashMessages(r, b)
				if acked[k] {
					want = append(want, ids(msgs)...)
					continue
				}
				if slices.Contains(maybe, k) && present[msgs[0].ID] {
					for _, m := range msgs {
						if !present[m.ID] {
							t.Fatalf("round %d %s: batch %v stored in part", round, when, k)
						}
					}
					want = append(want, ids(msgs)...)
				}
				if !acked[k] {
					break
				}
			}
		}
		exactlyOnce(t, fmt.Sprintf("round %d %s", round, when), got, want)
		exp, _ := e.export(t, "a/s")
		sameMessages(t, fmt.Sprintf("round %d %s: export", round, when), exp, got)
	}
	check("after the crash")
	e.maintain(t, "a/s")
	check("after the archiver")
	var writing int64
	var done []string
	err := e.onSession("a/s", func(s *session) error {
		refs, err := s.store.chunksWhere(`1 ORDER BY first_seq`)
		for _, r := range refs {
			if r.State == chunkWriting {
				writing++
			} else {
				done = append(done, r.Key)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := e.arc.List(context.Background(), archivePrefix(e.stub(t, "a/s").ID()))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(done)
	if writing > 0 || !slices.Equal(keys, done) {
		t.Fatalf("round %d: after the archiver, %d chunks writing; blobs %v, index %v", round, writing, keys, done)
	}
}
