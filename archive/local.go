package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/cairn-dev/cairn"
)

// Local is a Store on a directory of the node: the blob under key
// "a/b/c" is the file DIR/a/b/c. Paths are built only from keys that
// CheckKey accepted, so they stay inside DIR.
//
// A Put writes a temporary file in DIR/.tmp (no key starts with '.', so
// List never shows it), fsyncs it, renames it over the key's file and
// fsyncs the key's directory; directories it creates are fsynced into
// their parents. A Delete unlinks the file, fsyncs its directory, and
// removes the directories it leaves empty. NewLocal empties DIR/.tmp,
// which holds only what Puts interrupted by a crash left, so use one Local
// per directory.
type Local struct {
	dir string
	tmp string // dir/.tmp

	// sync flushes a file or directory to stable storage: a seam for
	// fault-injection tests.
	sync func(*os.File) error

	mu sync.Mutex
	// durableDirs holds the directories (absolute paths) that this Local
	// made durable: created or found, then fsynced into their parents up
	// to dir. A missing entry only costs fsyncs; an entry whose directory
	// was since removed (by a Delete) makes the rename of a Put fail, and
	// the Put then drops it and makes the directory again.
	durableDirs map[string]bool
}

// maxDurableDirs bounds durableDirs; when it is full it is emptied, which
// costs a few fsyncs.
const maxDurableDirs = 1 << 16

// NewLocal returns a Local on dir, creating dir (mode 0700) if needed,
// and removes the temporary files of Puts that a crash interrupted.
func NewLocal(dir string) (*Local, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("archive dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("archive dir: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("archive dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("archive dir %s is not a directory", abs)
	}
	tmp := filepath.Join(abs, ".tmp")
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("archive dir: clear temporary files: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("archive dir: %w", err)
	}
	return &Local{dir: abs, tmp: tmp, sync: (*os.File).Sync, durableDirs: map[string]bool{abs: true}}, nil
}

// Dir returns the directory of l, absolute.
func (l *Local) Dir() string { return l.dir }

// path returns the file of a valid key.
func (l *Local) path(key string) string {
	return filepath.Join(l.dir, filepath.FromSlash(key))
}

// Put implements Store.Put. Durable means: the file's data and the
// directory entries leading to it are fsynced, so the blob survives a
// power loss on a disk that honours flushes. Put then checks the file's
// size; it does not read the data back, which would come from the page
// cache and prove nothing more about the disk.
func (l *Local) Put(ctx context.Context, key string, data []byte) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if len(data) > MaxBlob {
		return tooLarge(key, len(data))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("archive put %s: %w", key, err)
	}
	f, err := os.CreateTemp(l.tmp, "put-*")
	if err != nil {
		return fmt.Errorf("archive put %s: %w", key, err)
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if !renamed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// Write in pieces so that a cancelled ctx stops a large blob early.
	const piece = 1 << 20
	for rest := data; len(rest) > 0; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("archive put %s: %w", key, err)
		}
		n := min(len(rest), piece)
		if _, err := f.Write(rest[:n]); err != nil {
			return fmt.Errorf("archive put %s: %w", key, err)
		}
		rest = rest[n:]
	}
	if err := l.sync(f); err != nil {
		return fmt.Errorf("archive put %s: sync: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("archive put %s: %w", key, err)
	}
	path := l.path(key)
	dir := filepath.Dir(path)
	for attempt := 0; ; attempt++ {
		err := l.ensureDir(key, dir)
		if err == nil {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("archive put %s: %w", key, err)
			}
			if err = os.Rename(tmp, path); err == nil {
				break
			}
			if fi, serr := os.Lstat(path); serr == nil && fi.IsDir() {
				return cairn.Errorf(cairn.Conflict, "archive key %s is a prefix of other keys", key)
			}
			err = fmt.Errorf("archive put %s: %w", key, err)
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 100 {
			return err
		}
		// A Delete removed a directory of the key once it was empty:
		// make it again.
		for d := dir; d != l.dir && strings.HasPrefix(d, l.dir); d = filepath.Dir(d) {
			l.forgetDir(d)
		}
	}
	renamed = true
	if err := l.syncDir(dir); err != nil {
		return fmt.Errorf("archive put %s: sync dir: %w", key, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("archive put %s: verify: %w", key, err)
	}
	if fi.Size() != int64(len(data)) {
		return fmt.Errorf("archive put %s: verify: file has %d bytes, wrote %d", key, fi.Size(), len(data))
	}
	return nil
}

// ensureDir creates dir and its missing parents below l.dir and fsyncs
// each into its parent, unless this Local already did.
func (l *Local) ensureDir(key, dir string) error {
	if dir == l.dir {
		return nil
	}
	l.mu.Lock()
	ok := l.durableDirs[dir]
	l.mu.Unlock()
	if ok {
		return nil
	}
	rel, err := filepath.Rel(l.dir, dir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("archive put %s: directory %s outside %s", key, dir, l.dir)
	}
	segs := strings.Split(rel, string(filepath.Separator))
	paths := make([]string, len(segs))
	known := make([]bool, len(segs))
	parent := l.dir
	l.mu.Lock()
	for i, seg := range segs {
		paths[i] = filepath.Join(parent, seg)
		known[i] = l.durableDirs[paths[i]]
		parent = paths[i]
	}
	l.mu.Unlock()
	parent = l.dir
	for i, cur := range paths {
		if known[i] {
			parent = cur
			continue
		}
		err := os.Mkdir(cur, 0o700)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			if errors.Is(err, syscall.ENOTDIR) {
				return cairn.Errorf(cairn.Conflict, "archive key %s has a prefix that is a key", key)
			}
			return fmt.Errorf("archive put %s: %w", key, err)
		}
		if err != nil {
			fi, serr := os.Lstat(cur)
			if serr != nil {
				return fmt.Errorf("archive put %s: %w", key, serr)
			}
			if !fi.IsDir() {
				return cairn.Errorf(cairn.Conflict, "archive key %s has a prefix that is a key", key)
			}
		}
		// Whether this call made it or found it, nothing says its entry
		// in parent reached the disk: another Put may still be on its way
		// to that fsync, or a crashed process never made it.
		if err := l.syncDir(parent); err != nil {
			return fmt.Errorf("archive put %s: sync dir: %w", key, err)
		}
		parent = cur
	}
	l.mu.Lock()
	if len(l.durableDirs) >= maxDurableDirs {
		l.durableDirs = map[string]bool{l.dir: true}
	}
	for _, d := range paths {
		l.durableDirs[d] = true
	}
	l.mu.Unlock()
	return nil
}

// forgetDir drops dir from durableDirs.
func (l *Local) forgetDir(dir string) {
	l.mu.Lock()
	delete(l.durableDirs, dir)
	l.mu.Unlock()
}

// syncDir fsyncs a directory, making the entries in it durable.
func (l *Local) syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = l.sync(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get implements Store.Get.
func (l *Local) Get(ctx context.Context, key string) ([]byte, error) {
	if err := check(ctx, "get", key, CheckKey); err != nil {
		return nil, err
	}
	path := l.path(key)
	// Only regular files are blobs: List skips anything else, and a
	// symbolic link would lead out of the directory.
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() {
		if err == nil || absent(err) {
			return nil, notFound(key)
		}
		return nil, fmt.Errorf("archive get %s: %w", key, err)
	}
	f, err := os.Open(path)
	if err != nil {
		if absent(err) {
			return nil, notFound(key)
		}
		return nil, fmt.Errorf("archive get %s: %w", key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("archive get %s: %w", key, err)
	}
	if fi.Size() > MaxBlob {
		return nil, fmt.Errorf("archive get %s: file has %d bytes, more than %d", key, fi.Size(), MaxBlob)
	}
	data := make([]byte, fi.Size())
	// Blobs are replaced by rename, never changed in place, so the open
	// file keeps the size it had.
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("archive get %s: %w", key, err)
	}
	return data, nil
}

// absent reports whether err from opening or removing a key's file means
// that there is no such file: it is missing, or a prefix of the key is a
// blob.
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Delete implements Store.Delete. The removal is fsynced into the key's
// directory before Delete returns; directories left empty are removed
// after that, without an fsync.
func (l *Local) Delete(ctx context.Context, key string) error {
	if err := check(ctx, "delete", key, CheckKey); err != nil {
		return err
	}
	path := l.path(key)
	fi, err := os.Lstat(path)
	if err != nil {
		if absent(err) {
			return nil
		}
		return fmt.Errorf("archive delete %s: %w", key, err)
	}
	if fi.IsDir() {
		return nil // a prefix of other keys, not a blob
	}
	if err := os.Remove(path); err != nil {
		if absent(err) {
			return nil
		}
		return fmt.Errorf("archive delete %s: %w", key, err)
	}
	// A concurrent Delete may have removed the directory, empty: then
	// the nearest directory left holds the removal.
	dir := filepath.Dir(path)
	for d := dir; ; d = filepath.Dir(d) {
		err := l.syncDir(d)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || d == l.dir {
			if err != nil {
				return fmt.Errorf("archive delete %s: sync dir: %w", key, err)
			}
			break
		}
	}
	for dir != l.dir {
		if err := os.Remove(dir); err != nil {
			break // not empty, or gone
		}
		l.forgetDir(dir)
		dir = filepath.Dir(dir)
	}
	return nil
}

// List implements Store.List.
func (l *Local) List(ctx context.Context, prefix string) ([]string, error) {
	return list(ctx, l.walk, prefix)
}

// Usage implements Store.Usage.
func (l *Local) Usage(ctx context.Context, prefix string) (Usage, error) {
	return usage(ctx, l.walk, prefix)
}

// walk calls fn for each blob whose key starts with prefix, skipping
// files that no key names (temporary files of Puts in flight) and
// tolerating files and directories that vanish during the walk.
func (l *Local) walk(ctx context.Context, op, prefix string, fn func(key string, size int64)) error {
	if err := check(ctx, op, prefix, CheckPrefix); err != nil {
		return err
	}
	// Start at the deepest directory that prefix names entirely.
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i]
	}
	root := l.dir
	if base != "" {
		root = l.path(base)
	}
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if absent(err) {
				return nil
			}
			return err
		}
		if n++; n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if path == root {
			return nil // a directory, or a blob no key extends with '/'
		}
		rel, err := filepath.Rel(l.dir, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if checkSegment(d.Name()) != nil {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			// Go down only where keys can start with prefix.
			if strings.HasPrefix(key+"/", prefix) || strings.HasPrefix(prefix, key+"/") {
				return nil
			}
			return fs.SkipDir
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if absent(err) {
				return nil
			}
			return err
		}
		fn(key, fi.Size())
		return nil
	})
	if err != nil {
		return fmt.Errorf("archive %s %s: %w", op, prefix, err)
	}
	return nil
}
