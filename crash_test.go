package cairn_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	zs "zombiezen.com/go/sqlite"
	"zombiezen.com/go/sqlite/sqlitex"
)

// The crash test: a child process (this test binary, re-executed) runs
// concurrent writers against a data directory and reports each acknowledged
// write on stdout; the parent kills it with SIGKILL at a random moment, then
// restarts on the same directory and checks that every acknowledged write is
// there (KV and SQL alike, exactly once), that nothing is torn (a turn's KV
// and SQL writes are all there or none), and that every database passes
// PRAGMA integrity_check. Then the next round runs on the same directory.

const (
	crashNamespace     = "crash"
	crashFixedObjects  = 4  // objects written by several writers: group commit
	crashFixedWriters  = 12 // writers 0..11 write to fixed-(w % 4)
	crashWriters       = 16 // writers 12..15 create objects continually
	crashWritesPerObj  = 8  // a creating writer moves to a new object this often
	crashMaxValueBytes = 2000
)

// crashWrite is the argument of crashObj.Write.
type crashWrite struct {
	Round, Writer, Seq int
}

// crashDump is what crashObj.Dump reports of an object.
type crashDump struct {
	Keys      []string // KV keys under "w/"
	BadValues []string // keys (and rows) whose value is not what was written
	Rows      [][3]int // (round, writer, seq) of each row of table writes
	Integrity []string // PRAGMA integrity_check
}

type crashObj struct{ st *cairn.State }

var crashClass = cairn.Class{
	New: func(st *cairn.State) (any, error) { return &crashObj{st}, nil },
	Migrations: []cairn.Migration{{SQL: `
		CREATE TABLE writes (round INTEGER NOT NULL, writer INTEGER NOT NULL, seq INTEGER NOT NULL, pad BLOB);
		CREATE INDEX writes_writer ON writes (round, writer, seq);`}},
}

// Write does a KV put and a SQL insert in one turn.
func (c *crashObj) Write(ctx context.Context, w crashWrite) error {
	key := crashKey(w.Round, w.Writer, w.Seq)
	if err := c.st.Put(key, crashValue(key)); err != nil {
		return err
	}
	_, err := c.st.Exec(`INSERT INTO writes (round, writer, seq, pad) VALUES (?, ?, ?, ?)`,
		w.Round, w.Writer, w.Seq, crashValue(key))
	return err
}

// Dump returns everything the crash test wrote to the object, and the
// result of PRAGMA integrity_check.
func (c *crashObj) Dump(ctx context.Context) (crashDump, error) {
	var d crashDump
	es, err := c.st.List(cairn.ListOptions{Prefix: "w/"})
	if err != nil {
		return d, err
	}
	for _, e := range es {
		d.Keys = append(d.Keys, e.Key)
		if !bytes.Equal(e.Value, crashValue(e.Key)) {
			d.BadValues = append(d.BadValues, e.Key)
		}
	}
	rows, err := c.st.Query(`SELECT round, writer, seq, pad FROM writes`)
	if err != nil {
		return d, err
	}
	for _, r := range rows.Values {
		row := [3]int{int(r[0].(int64)), int(r[1].(int64)), int(r[2].(int64))}
		d.Rows = append(d.Rows, row)
		if key, pad := crashKey(row[0], row[1], row[2]), r[3]; !bytes.Equal(asBytes(pad), crashValue(key)) {
			d.BadValues = append(d.BadValues, "row "+key)
		}
	}
	rows, err = c.st.Query(`PRAGMA integrity_check`)
	if err != nil {
		return d, err
	}
	for _, r := range rows.Values {
		d.Integrity = append(d.Integrity, fmt.Sprint(r[0]))
	}
	return d, nil
}

func crashKey(round, writer, seq int) string {
	return fmt.Sprintf("w/%d/%d/%d", round, writer, seq)
}

// crashValue is the value written under key: its length (16 to
// crashMaxValueBytes) and content derive from the key, so that a torn or
// misplaced value is detected.
func crashValue(key string) []byte {
	h := fnv.New32a()
	h.Write([]byte(key))
	n := 16 + int(h.Sum32()%(crashMaxValueBytes-16))
	b := make([]byte, n)
	for i := range b {
		b[i] = key[i%len(key)] ^ byte(i/len(key))
	}
	return b
}

// crashObject is the object that write seq of writer gets in round.
func crashObject(round, writer, seq int) string {
	if writer < crashFixedWriters {
		return fmt.Sprintf("fixed-%d", writer%crashFixedObjects)
	}
	return fmt.Sprintf("new/%d/%d/%d", round, writer, seq/crashWritesPerObj)
}

func parseCrashKey(key string) (round, writer, seq int, ok bool) {
	f := strings.Split(key, "/")
	if len(f) != 4 || f[0] != "w" {
		return 0, 0, 0, false
	}
	var err [3]error
	round, err[0] = strconv.Atoi(f[1])
	writer, err[1] = strconv.Atoi(f[2])
	seq, err[2] = strconv.Atoi(f[3])
	return round, writer, seq, errors.Join(err[:]...) == nil
}

// TestCrashChild is the process TestCrash kills. It runs only when started
// by TestCrash.
func TestCrashChild(t *testing.T) {
	if os.Getenv("CAIRN_CRASH_CHILD") != "1" {
		t.Skip("helper process of TestCrash")
	}
	// Leave when the parent goes away (its end of stdin closes), and in any
	// case after a while: a stray child must not live on.
	time.AfterFunc(2*time.Minute, func() { os.Exit(4) })
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()

	dir := os.Getenv("CAIRN_CRASH_DIR")
	level, err := cairn.ParseDurability(os.Getenv("CAIRN_CRASH_LEVEL"))
	if err != nil {
		t.Fatal(err)
	}
	round, err := strconv.Atoi(os.Getenv("CAIRN_CRASH_ROUND"))
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, dir, level, map[string]cairn.Class{crashNamespace: crashClass}, nil)
	ns, err := rt.Namespace(crashNamespace)
	if err != nil {
		t.Fatal(err)
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "crash child: "+format+"\n", args...)
		os.Exit(3)
	}
	for w := 0; w < crashWriters; w++ {
		go func() {
			for seq := 0; ; seq++ {
				stub, err := ns.GetByName(crashObject(round, w, seq))
				if err != nil {
					fail("%v", err)
				}
				if err := stub.Call(context.Background(), "Write", crashWrite{round, w, seq}, nil); err != nil {
					fail("write %s: %v", crashKey(round, w, seq), err)
				}
				// One write per line: a line is whole or absent.
				if _, err := os.Stdout.Write([]byte(fmt.Sprintf("ack %d %d %d\n", round, w, seq))); err != nil {
					fail("ack: %v", err)
				}
			}
		}()
	}
	select {} // until killed
}

// crashAcks are the acknowledged writes: the highest acknowledged sequence
// number of each (round, writer).
type crashAcks map[[2]int]int

func (a crashAcks) max(round, writer int) int {
	if s, ok := a[[2]int{round, writer}]; ok {
		return s
	}
	return -1
}

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Log("short mode: fewer rounds")
	}
	for _, level := range []cairn.Durability{cairn.Process, cairn.Disk} {
		t.Run(level.String(), func(t *testing.T) { testCrash(t, level) })
	}
}

func testCrash(t *testing.T, level cairn.Durability) {
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CAIRN_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (set CAIRN_CRASH_SEED to repeat the kill schedule)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	dir := t.TempDir()
	acks := make(crashAcks)
	uncataloged := make(map[string]bool) // reported once, not every round
	start := time.Now()
	total := 0
	for round := 0; round < rounds; round++ {
		roundStart := time.Now()
		n, how := crashRound(t, dir, level, round, rng, acks)
		killed := time.Now()
		lost := crashVerify(t, dir, level, round, acks, uncataloged)
		total += n
		t.Logf("round %2d: %4d acks, killed %s; run %v, verify %v",
			round, n, how, killed.Sub(roundStart).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
		if lost {
			t.Fatalf("round %d lost or broke data (seed %d)", round, seed)
		}
	}
	t.Logf("%d rounds, %d acknowledged writes, %v", rounds, total, time.Since(start).Round(time.Millisecond))
}

// crashRound runs the child once, kills it with SIGKILL and records its
// acknowledgements in acks. It returns how many writes were acknowledged and
// when the kill landed.
func crashRound(t *testing.T, dir string, level cairn.Durability, round int, rng *rand.Rand, acks crashAcks) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.timeout=3m")
	cmd.Env = append(os.Environ(),
		"CAIRN_CRASH_CHILD=1",
		"CAIRN_CRASH_DIR="+dir,
		"CAIRN_CRASH_LEVEL="+level.String(),
		"CAIRN_CRASH_ROUND="+strconv.Itoa(round))
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
	var killOnce sync.Once
	kill := func() { killOnce.Do(func() { cmd.Process.Kill() }) }
	defer kill()

	// Read acknowledgements until the pipe closes.
	var mu sync.Mutex
	var lines []string
	first := make(chan struct{})
	eof := make(chan struct{})
	go func() {
		defer close(eof)
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return // a partial last line is not an acknowledgement
			}
			if !strings.HasPrefix(line, "ack ") {
				continue
			}
			mu.Lock()
			lines = append(lines, line)
			if len(lines) == 1 {
				close(first)
			}
			mu.Unlock()
		}
	}()
	exitedEarly := func(when string) {
		kill()
		<-eof
		err := cmd.Wait()
		t.Fatalf("round %d: child exited %s: %v\nstderr:\n%s", round, when, err, tail(stderr.String()))
	}

	var how string
	switch p := rng.IntN(10); {
	case p < 2:
		// Anywhere from startup on: recovery, activation, migrations.
		d := time.Duration(rng.IntN(400)) * time.Millisecond
		how = fmt.Sprintf("%v after start", d)
		select {
		case <-time.After(d):
		case <-eof:
			exitedEarly("before the kill")
		}
	default:
		var d time.Duration
		if p < 4 {
			d = time.Duration(rng.IntN(5000)) * time.Microsecond // as the load starts
		} else {
			d = time.Duration(50+rng.IntN(250)) * time.Millisecond
		}
		how = fmt.Sprintf("%v after the first ack", d)
		select {
		case <-first:
		case <-eof:
			exitedEarly("before acknowledging a write")
		case <-time.After(60 * time.Second):
			exitedEarly("(killed) after acknowledging nothing for 60 s")
		}
		select {
		case <-time.After(d):
		case <-eof:
			exitedEarly("before the kill")
		}
	}
	kill()
	<-eof
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: child did not die of SIGKILL: %v\nstderr:\n%s", round, err, tail(stderr.String()))
	}
	if s := stderr.String(); strings.Contains(s, "DATA RACE") || strings.Contains(s, "panic") || strings.Contains(s, "crash child") {
		t.Errorf("round %d: child reported trouble:\n%s", round, tail(s))
	}

	for _, line := range lines {
		var r, w, seq int
		if _, err := fmt.Sscanf(line, "ack %d %d %d\n", &r, &w, &seq); err != nil || r != round || w < 0 || w >= crashWriters {
			t.Fatalf("round %d: bad ack line %q (%v)", round, line, err)
		}
		if want := acks.max(r, w) + 1; seq != want {
			t.Fatalf("round %d: writer %d acknowledged seq %d, want %d next", round, w, seq, want)
		}
		acks[[2]int{r, w}] = seq
	}
	return len(lines), how
}

// crashVerify restarts on dir and checks every round so far. It reports
// whether data was lost or broken; an object missing from the catalog is
// reported (once, through uncataloged) without stopping the rounds, so that
// the data checks go on.
func crashVerify(t *testing.T, dir string, level cairn.Durability, round int, acks crashAcks, uncataloged map[string]bool) (lost bool) {
	t.Helper()
	errorf := func(format string, args ...any) {
		t.Helper()
		lost = true
		t.Errorf(format, args...)
	}
	rt := newRuntime(t, dir, level, map[string]cairn.Class{crashNamespace: crashClass}, nil)
	ns, err := rt.Namespace(crashNamespace)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Object names a database file may belong to. A writer that
	// acknowledged seq n may also have written seq n+1 (not acknowledged
	// when the kill landed).
	names := make(map[string]string) // ID -> name
	addName := func(name string) {
		id, err := ns.IDFromName(name)
		if err != nil {
			t.Fatal(err)
		}
		names[id.String()] = name
	}
	for i := 0; i < crashFixedObjects; i++ {
		addName(fmt.Sprintf("fixed-%d", i))
	}
	for r := 0; r <= round; r++ {
		for w := crashFixedWriters; w < crashWriters; w++ {
			for seq := 0; seq <= acks.max(r, w)+1; seq += crashWritesPerObj {
				addName(crashObject(r, w, seq))
			}
		}
	}

	// Dump every object database there is, a few at a time.
	files := crashObjectFiles(t, dir)
	dumps := make([]crashDump, len(files))
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, id := range files {
		name, ok := names[id]
		if !ok {
			errs[i] = errors.New("belongs to no object the test wrote")
			continue
		}
		stub, err := ns.GetByName(name)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = stub.Call(ctx, "Dump", nil, &dumps[i])
		}()
	}
	wg.Wait()

	type rw [2]int
	kvSeqs := make(map[rw][]int)
	sqlSeqs := make(map[rw][]int)
	for i, id := range files {
		name, d := names[id], dumps[i]
		if errs[i] != nil {
			errorf("object %q (%s) after the crash: %v", name, id, errs[i])
			continue
		}
		if len(d.Integrity) != 1 || d.Integrity[0] != "ok" {
			errorf("object %q: integrity_check: %q", name, d.Integrity)
		}
		if len(d.BadValues) > 0 {
			errorf("object %q: %d values are not what was written, e.g. %q", name, len(d.BadValues), d.BadValues[0])
		}
		kv := make(map[[3]int]bool)
		for _, k := range d.Keys {
			r, w, seq, ok := parseCrashKey(k)
			if !ok {
				errorf("object %q holds stray key %q", name, k)
				continue
			}
			if want := crashObject(r, w, seq); want != name {
				errorf("key %q is in object %q, want %q", k, name, want)
			}
			kv[[3]int{r, w, seq}] = true
			kvSeqs[rw{r, w}] = append(kvSeqs[rw{r, w}], seq)
		}
		rows := make(map[[3]int]int)
		for _, row := range d.Rows {
			rows[row]++
			if rows[row] == 2 {
				errorf("object %q: SQL row %v is there more than once", name, row)
			}
			if rows[row] == 1 {
				sqlSeqs[rw{row[0], row[1]}] = append(sqlSeqs[rw{row[0], row[1]}], row[2])
			}
			if !kv[row] {
				errorf("object %q: SQL row %v is there but its KV key is not: the turn was torn", name, row)
			}
		}
		for k := range kv {
			if rows[k] == 0 {
				errorf("object %q: KV key %s is there but its SQL row is not: the turn was torn", name, crashKey(k[0], k[1], k[2]))
			}
		}
	}

	// Each writer's writes are sequential, so what survives of a round is
	// a prefix: 0..n, where n is the last acknowledged seq or the one after
	// it (done but not yet acknowledged when the kill landed).
	check := func(what string, got map[rw][]int) {
		for r := 0; r <= round; r++ {
			for w := 0; w < crashWriters; w++ {
				seqs := got[rw{r, w}]
				slices.Sort(seqs)
				acked := acks.max(r, w)
				n := len(seqs)
				prefix := n == 0 || seqs[n-1] == n-1
				if !prefix || n-1 < acked || n-1 > acked+1 {
					errorf("round %d writer %d: %s holds %s; acknowledged 0..%d", r, w, what, seqRanges(seqs), acked)
				}
			}
		}
	}
	check("KV", kvSeqs)
	check("SQL", sqlSeqs)

	// Every object that holds data is in the catalog. (The verification
	// itself activated every object file above, so each one now holds at
	// least its migration.)
	var missing []string
	for _, id := range crashObjectFiles(t, dir) {
		oid, err := ns.ParseID(id)
		if err != nil {
			errorf("object file %s: %v", id, err)
			continue
		}
		if _, err := rt.Engine().Object(ctx, crashNamespace, oid); err != nil && !uncataloged[id] {
			uncataloged[id] = true
			missing = append(missing, fmt.Sprintf("%q (%s): %v", names[id], id, err))
		}
	}
	if len(missing) > 0 {
		t.Errorf("round %d: %d objects have a database but the catalog does not list them (a kill during creation?), e.g. %s",
			round, len(missing), missing[0])
	}
	crashCloseRuntime(t, rt)
	if !crashIntegrity(t, filepath.Join(dir, "catalog.db")) {
		lost = true
	}
	return lost
}

func crashCloseRuntime(tb testing.TB, rt *cairn.Runtime) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		tb.Fatalf("close runtime: %v", err)
	}
}

// crashObjectFiles returns the IDs of the object databases under dir.
func crashObjectFiles(tb testing.TB, dir string) []string {
	tb.Helper()
	var ids []string
	err := filepath.WalkDir(filepath.Join(dir, "objects"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".db") {
			ids = append(ids, strings.TrimSuffix(d.Name(), ".db"))
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return ids
}

// crashIntegrity runs PRAGMA integrity_check on the database at path and
// reports whether it passed.
func crashIntegrity(tb testing.TB, path string) bool {
	tb.Helper()
	conn, err := zs.OpenConn(path, zs.OpenReadOnly)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	defer conn.Close()
	var got []string
	err = sqlitex.ExecuteTransient(conn, "PRAGMA integrity_check", &sqlitex.ExecOptions{ResultFunc: func(stmt *zs.Stmt) error {
		got = append(got, stmt.ColumnText(0))
		return nil
	}})
	if err != nil {
		tb.Fatalf("integrity_check %s: %v", path, err)
	}
	if len(got) != 1 || got[0] != "ok" {
		tb.Errorf("%s: integrity_check: %q", filepath.Base(path), got)
		return false
	}
	return true
}

// seqRanges writes sorted sequence numbers compactly: "0-41 43".
func seqRanges(seqs []int) string {
	if len(seqs) == 0 {
		return "nothing"
	}
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		} else {
			fmt.Fprintf(&b, "%d", seqs[i])
		}
		i = j + 1
	}
	return b.String()
}

// tail returns the end of a long output.
func tail(s string) string {
	const max = 4000
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}

func asBytes(v any) []byte {
	b, _ := v.([]byte)
	return b
}
