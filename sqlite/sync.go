package sqlite

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-dev/cairn"
)

// SyncMode is how an Engine at cairn.Disk makes commits durable.
//
// Each object commits to its own WAL, so N objects committing at once
// would need N fdatasyncs. The modes differ in how those are combined
// across objects; within one object, the runtime already makes every
// commit queued behind a sync durable with the next one.
type SyncMode int

const (
	// SyncAuto is the node-wide sync stage: the durability requests of
	// every object (and of the catalog) that arrive while a sync runs are
	// made durable together by the next one, and acknowledged after it. A
	// batch of one file is fdatasynced; a batch of several gets one
	// syncfs(2) of the data directory's filesystem, unless the node holds
	// more than SyncfsDirtyLimit of dirty page cache (another process
	// writing: syncfs would write and wait for its data too). Then requests
	// are fdatasynced file by file, outside the stage, while one syncfs in
	// the background brings the dirty page cache down. Where syncfs cannot
	// be trusted (not Linux, or Linux before 5.8, where it does not report
	// write-back errors), batches are always fdatasynced file by file.
	SyncAuto SyncMode = iota
	// SyncFS is the node-wide stage with one syncfs(2) per batch, whatever
	// its size. Linux 5.8 or later only.
	SyncFS
	// SyncFiles has no node-wide stage: each object's sync fdatasyncs its
	// own WAL, concurrently with other objects' (the block layer merges
	// their device cache flushes). The catalog's syncs are still shared.
	// For a data directory on a filesystem shared with heavy writers:
	// syncfs writes their dirty data too, and waits for it.
	SyncFiles
)

// SyncfsDirtyLimit is the dirty page cache of the node (Dirty plus
// Writeback in /proc/meminfo) above which SyncAuto syncs file by file
// rather than with syncfs, and drains it with a syncfs in the background.
// syncfs writes about 0.4 ms per MB of other data here (ext4 on a virtual
// disk: 1 GB dirty by another writer made one syncfs take 400 ms, an
// fdatasync of a WAL 0.2 ms).
const SyncfsDirtyLimit = 16 << 20

// String returns "auto", "syncfs" or "files".
func (m SyncMode) String() string {
	switch m {
	case SyncAuto:
		return "auto"
	case SyncFS:
		return "syncfs"
	case SyncFiles:
		return "files"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// ParseSyncMode parses "auto", "syncfs" or "files".
func ParseSyncMode(s string) (SyncMode, error) {
	switch s {
	case "auto":
		return SyncAuto, nil
	case "syncfs":
		return SyncFS, nil
	case "files":
		return SyncFiles, nil
	}
	return 0, cairn.Errorf(cairn.Invalid, "unknown sync mode %q (want auto, syncfs or files)", s)
}

// SyncStats count the work of an engine's sync stage.
type SyncStats struct {
	Requests int64 // durability requests made (object commits and catalog writes)
	Batches  int64 // syncs the stage ran, each covering one or more requests
	Syncfs   int64 // batches made durable with syncfs(2)
	Files    int64 // files fdatasynced or fsynced, in or outside the stage
	Failures int64 // failed syncfs calls
	Nanos    int64 // time the stage spent syncing batches
	// Requests and batches that SyncAuto synced file by file, outside the
	// stage or in it, because of dirty page cache (SyncfsDirtyLimit), and
	// the syncfs calls it ran in the background meanwhile (included in
	// Syncfs) to bring the dirty page cache down.
	DirtyDirect, DirtyBatches, Drains int64
}

// syncer makes writes durable for an engine: the node-wide sync stage.
//
// Requests wait in pending while a batch is synced; the stage's goroutine
// then takes them all as the next batch. A request is acknowledged only
// after a sync that started after it arrived (so after its bytes were
// written) succeeded.
//
// syncfs reports a write-back error of any file of the filesystem once,
// to whichever call comes next, and cannot say whose file it was. So a
// failed syncfs fails its whole batch and counts in failures, and every
// request records the failure count from before its oldest write (epoch):
// a request whose epoch is behind the count fails even if its own sync
// succeeded, because the error that was reported elsewhere may have been
// its data's.
type syncer struct {
	mode SyncMode
	dir  *os.File // the data directory: syncfs's handle on the filesystem

	// What a batch calls; tests replace them to inject faults.
	syncFS   func(dir *os.File) error
	syncFile func(f *os.File, full bool) error
	dirty    func() int64 // the node's dirty page cache in bytes

	// The last reading of dirty, and when (Unix nanoseconds).
	dirtyVal, dirtyAt atomic.Int64

	// The drain: a syncfs in the background while SyncAuto syncs file by
	// file, so that the dirty page cache falls and batches can use syncfs
	// again (nothing else may write it back for 30 s).
	draining   atomic.Bool
	drainAt    atomic.Int64 // when the last drain started (Unix nanoseconds)
	background sync.WaitGroup

	failures atomic.Uint64 // failed syncfs calls so far: the epoch

	// Counters for SyncStats.
	requests, batches, syncfsCalls, files, nanos, dirtyBatches, dirtyDirect, drains atomic.Int64

	mu      sync.Mutex
	pending []*syncReq
	closed  bool
	kick    chan struct{} // 1-buffered: pending is not empty
	stopped chan struct{} // closed when the goroutine returns
}

// syncReq is one request to the stage.
type syncReq struct {
	files []syncFile // what a file-by-file sync must cover
	epoch uint64     // failures before the oldest write it covers
	err   error
	done  chan struct{}
}

// syncFile is a file to sync: path (opened for the sync) or f (kept open).
type syncFile struct {
	path string
	f    *os.File
	full bool // fsync, not fdatasync: the file's size or entry changed
}

func (sf syncFile) key() string {
	if sf.f != nil {
		return sf.f.Name()
	}
	return sf.path
}

// newSyncer starts the stage for the filesystem of directory dir.
func newSyncer(dir string, mode SyncMode) (*syncer, error) {
	switch mode {
	case SyncAuto, SyncFiles:
	case SyncFS:
		if !syncfsReliable() {
			return nil, cairn.Errorf(cairn.Invalid, "sync mode syncfs needs Linux 5.8 or later (syncfs does not report write-back errors before)")
		}
	default:
		return nil, cairn.Errorf(cairn.Invalid, "unknown sync mode %d", int(mode))
	}
	if mode == SyncAuto && !syncfsReliable() {
		mode = SyncFiles
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open sync stage: %w", err)
	}
	s := &syncer{
		mode:     mode,
		dir:      d,
		syncFS:   syncfs,
		syncFile: syncFile1,
		dirty:    nodeDirtyBytes,
		kick:     make(chan struct{}, 1),
		stopped:  make(chan struct{}),
	}
	go s.loop()
	return s, nil
}

// syncFile1 fdatasyncs f, or fsyncs it if full.
func syncFile1(f *os.File, full bool) error {
	if full {
		return f.Sync()
	}
	return fdatasync(f)
}

// close stops the stage after the requests already made.
func (s *syncer) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.wake()
	<-s.stopped
	s.background.Wait()
	s.dir.Close()
}

func (s *syncer) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// epoch returns the current failure count; read it before the writes a
// later request will cover.
func (s *syncer) epoch() uint64 { return s.failures.Load() }

// sync makes files durable, with every write made to them (and, through the
// stage, to the filesystem) before the call, and fails if a syncfs failed
// since epoch. direct runs the files' syncs in the caller instead of the
// stage (SyncFiles for object stores); so does SyncAuto while the node
// holds much dirty page cache, as then a batch would not use syncfs, and
// file syncs of concurrent callers do best without waiting for each other.
func (s *syncer) sync(files []syncFile, epoch uint64, direct bool) error {
	s.requests.Add(1)
	if !direct && s.mode == SyncAuto && s.dirtyBytes() > SyncfsDirtyLimit {
		s.dirtyDirect.Add(1)
		s.drain()
		direct = true
	}
	if direct {
		if err := s.syncFiles(files); err != nil {
			return err
		}
		return s.check(epoch)
	}
	r := &syncReq{files: files, epoch: epoch, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return cairn.Errorf(cairn.Unavailable, "engine is closed")
	}
	s.pending = append(s.pending, r)
	s.mu.Unlock()
	s.wake()
	<-r.done
	return r.err
}

// check fails if a syncfs failed since epoch.
func (s *syncer) check(epoch uint64) error {
	if s.failures.Load() != epoch {
		return errors.New("sync: a sync of the filesystem failed after these writes were made")
	}
	return nil
}

// loop runs batches until the stage is closed and drained.
func (s *syncer) loop() {
	defer close(s.stopped)
	for range s.kick {
		for {
			s.mu.Lock()
			batch := s.pending
			s.pending = nil
			closed := s.closed
			s.mu.Unlock()
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			s.run(batch)
		}
	}
}

// run makes one batch durable and acknowledges its requests.
func (s *syncer) run(batch []*syncReq) {
	s.batches.Add(1)
	start := time.Now()
	defer func() { s.nanos.Add(int64(time.Since(start))) }()
	seen := make(map[string]bool)
	var files []syncFile
	for _, r := range batch {
		for _, f := range r.files {
			if k := f.key(); !seen[k] {
				seen[k] = true
				files = append(files, f)
			}
		}
	}
	useFS := s.mode == SyncFS
	if s.mode == SyncAuto && len(files) > 1 {
		if useFS = s.dirtyBytes() <= SyncfsDirtyLimit; !useFS {
			s.dirtyBatches.Add(1)
			s.drain()
		}
	}
	if useFS {
		s.syncfsCalls.Add(1)
		err := s.syncFS(s.dir)
		if err != nil {
			s.failures.Add(1)
			err = fmt.Errorf("syncfs: %w", err)
		}
		for _, r := range batch {
			r.err = err
			if err == nil {
				r.err = s.check(r.epoch)
			}
			close(r.done)
		}
		return
	}
	// File by file, concurrently: each request fails with its own files'
	// errors only.
	errs := make([]error, len(files))
	if len(files) == 1 {
		errs[0] = s.syncFiles(files)
	} else {
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxFileSyncs)
		for i, f := range files {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				errs[i] = s.syncFiles([]syncFile{f})
				<-sem
			}()
		}
		wg.Wait()
	}
	byKey := make(map[string]error, len(files))
	for i, f := range files {
		byKey[f.key()] = errs[i]
	}
	for _, r := range batch {
		for _, f := range r.files {
			if err := byKey[f.key()]; err != nil {
				r.err = err
				break
			}
		}
		if r.err == nil {
			r.err = s.check(r.epoch)
		}
		close(r.done)
	}
}

// maxFileSyncs bounds the fdatasyncs a batch runs at once: each blocks a
// thread, and while it holds a P the Go scheduler runs nothing else on it.
const maxFileSyncs = 8

// drain starts a syncfs in the background, unless one runs or one started
// less than 100 ms ago. It is the stage's syncfs like any other: a failure
// counts (the error it consumed may have been a pending request's).
func (s *syncer) drain() {
	now := time.Now().UnixNano()
	if now-s.drainAt.Load() < int64(100*time.Millisecond) || !s.draining.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.background.Add(1)
	}
	s.mu.Unlock()
	if closed {
		s.draining.Store(false)
		return
	}
	s.drainAt.Store(now)
	s.drains.Add(1)
	go func() {
		defer s.background.Done()
		defer s.draining.Store(false)
		s.syncfsCalls.Add(1)
		if err := s.syncFS(s.dir); err != nil {
			s.failures.Add(1)
		}
		s.dirtyAt.Store(0) // read it again
	}()
}

// dirtyBytes returns the node's dirty page cache, read at most every 10 ms.
func (s *syncer) dirtyBytes() int64 {
	now := time.Now().UnixNano()
	if now-s.dirtyAt.Load() > int64(10*time.Millisecond) {
		s.dirtyVal.Store(s.dirty())
		s.dirtyAt.Store(now)
	}
	return s.dirtyVal.Load()
}

// syncFiles syncs files one after the other.
func (s *syncer) syncFiles(files []syncFile) error {
	for _, sf := range files {
		s.files.Add(1)
		f := sf.f
		if f == nil {
			var err error
			if f, err = os.Open(sf.path); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
		}
		err := s.syncFile(f, sf.full)
		if sf.f == nil {
			f.Close()
		}
		if err != nil {
			return fmt.Errorf("sync %s: %w", sf.key(), err)
		}
	}
	return nil
}

func (s *syncer) stats() SyncStats {
	return SyncStats{
		Requests:     s.requests.Load(),
		Batches:      s.batches.Load(),
		Syncfs:       s.syncfsCalls.Load(),
		Files:        s.files.Load(),
		Failures:     int64(s.failures.Load()),
		Nanos:        s.nanos.Load(),
		DirtyDirect:  s.dirtyDirect.Load(),
		DirtyBatches: s.dirtyBatches.Load(),
		Drains:       s.drains.Load(),
	}
}

// kernelAtLeast reports whether a kernel release string ("6.1.0-13-amd64")
// is at least major.minor.
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(leadingDigits(parts[1]))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

func leadingDigits(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return s[:i]
		}
	}
	return s
}
