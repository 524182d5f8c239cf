// Package file is the exporters' file sink: one JSON object per line,
// fsync'd before the events are acknowledged, rotated by size and age.
package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tollgate-db/tollgate/config"
	"github.com/tollgate-db/tollgate/exporters"
)

// Type is the sink's type in the configuration.
const Type = "file"

func init() {
	exporters.Register(Type, func(_ context.Context, p exporters.Params) (exporters.Sink, error) {
		var c Config
		if err := p.Decode(&c); err != nil {
			return nil, err
		}
		return New(c)
	})
}

// Config is the sink's settings.
type Config struct {
	// Path of the file written; rotated files are Path.<UTC time>. Each
	// replica of an exporter needs a path of its own: two processes
	// rotating one file would rename each other's work.
	Path string `yaml:"path"`
	// MaxSize rotates the file before it would grow past this many bytes
	// (0: never by size).
	MaxSize int64 `yaml:"max_size"`
	// MaxAge rotates the file once it is this old (0: never by age).
	MaxAge config.Duration `yaml:"max_age"`
	// MaxFiles is how many rotated files are kept (0: all).
	MaxFiles int `yaml:"max_files"`
}

// Sink appends events to a file.
type Sink struct {
	c       Config
	f       *os.File
	size    int64
	opened  time.Time
	buf     []byte
	now     func() time.Time
	renamed int
}

// New opens (or creates) the file.
func New(c Config) (*Sink, error) {
	if c.Path == "" {
		return nil, errors.New("file: settings.path is required")
	}
	if c.MaxSize < 0 || c.MaxAge < 0 || c.MaxFiles < 0 {
		return nil, errors.New("file: max_size, max_age and max_files cannot be negative")
	}
	s := &Sink{c: c, now: time.Now}
	if err := os.MkdirAll(filepath.Dir(c.Path), 0o700); err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sink) open() error {
	f, err := os.OpenFile(s.c.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("file: %w", err)
	}
	s.f, s.size, s.opened = f, st.Size(), s.now()
	if st.Size() > 0 {
		// An existing file is as old as its last rotation, roughly: its
		// modification time is the best lower bound we have.
		s.opened = st.ModTime()
	}
	return nil
}

// Deliver writes one line per record and returns after fsync.
func (s *Sink) Deliver(_ context.Context, recs []exporters.Record) error {
	if s.f == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	s.buf = s.buf[:0]
	for _, r := range recs {
		if s.dueBy(int64(len(s.buf)), int64(len(r.Data)+1)) {
			if err := s.flush(); err != nil {
				return err
			}
			if err := s.rotate(); err != nil {
				return err
			}
		}
		s.buf = append(s.buf, r.Data...)
		s.buf = append(s.buf, '\n')
	}
	if err := s.flush(); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		s.reset()
		return fmt.Errorf("file: fsync %s: %w", s.c.Path, err)
	}
	if cap(s.buf) > 16<<20 {
		s.buf = nil
	}
	return nil
}

// dueBy says whether the file, holding pending bytes not yet written,
// must be rotated before a line of n bytes is added. An empty file takes
// any line, however long.
func (s *Sink) dueBy(pending, n int64) bool {
	if s.size+pending == 0 {
		return false
	}
	if s.c.MaxSize > 0 && s.size+pending+n > s.c.MaxSize {
		return true
	}
	return s.c.MaxAge > 0 && s.now().Sub(s.opened) >= s.c.MaxAge.Std()
}

func (s *Sink) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	n, err := s.f.Write(s.buf)
	s.size += int64(n)
	s.buf = s.buf[:0]
	if err != nil {
		// A short write leaves a partial line: the retry starts on a new
		// line so every whole line still parses.
		s.reset()
		return fmt.Errorf("file: write %s: %w", s.c.Path, err)
	}
	return nil
}

// reset closes the file after a failure; the next Deliver reopens it and
// ends a partial line first.
func (s *Sink) reset() {
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
	if f, err := os.OpenFile(s.c.Path, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		_, _ = f.Write([]byte{'\n'})
		_ = f.Close()
	}
}

func (s *Sink) rotate() error {
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("file: fsync %s: %w", s.c.Path, err)
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("file: close %s: %w", s.c.Path, err)
	}
	s.f = nil
	to := fmt.Sprintf("%s.%s", s.c.Path, s.now().UTC().Format("20060102T150405.000000000Z"))
	if _, err := os.Stat(to); err == nil {
		s.renamed++
		to = fmt.Sprintf("%s-%d", to, s.renamed)
	}
	if err := os.Rename(s.c.Path, to); err != nil {
		return fmt.Errorf("file: rotate %s: %w", s.c.Path, err)
	}
	if d, err := os.Open(filepath.Dir(s.c.Path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	if err := s.open(); err != nil {
		return err
	}
	s.prune()
	return nil
}

// prune removes the oldest rotated files beyond MaxFiles.
func (s *Sink) prune() {
	if s.c.MaxFiles <= 0 {
		return
	}
	old := Rotated(s.c.Path)
	for len(old) > s.c.MaxFiles {
		_ = os.Remove(old[0])
		old = old[1:]
	}
}

// Rotated lists the rotated files of path, oldest first.
func Rotated(path string) []string {
	m, _ := filepath.Glob(path + ".*")
	out := m[:0]
	for _, f := range m {
		if !strings.HasSuffix(f, ".tmp") {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// Close syncs and closes the file.
func (s *Sink) Close() error {
	if s.f == nil {
		return nil
	}
	err := errors.Join(s.f.Sync(), s.f.Close())
	s.f = nil
	return err
}
