package slugstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
)

// Store is a directory of slugs named <sha256>.tgz.
type Store struct{ Dir string }

// New returns a store in dir, creating the directory if needed.
func New(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("slugstore: no directory given")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("slugstore: create %s: %w", dir, err)
	}
	return &Store{Dir: dir}, nil
}

// ValidSHA reports whether s is a lowercase hex sha256.
func ValidSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Path returns the file of the slug with the given sha256.
func (s *Store) Path(sha string) (string, error) {
	if !ValidSHA(sha) {
		return "", fmt.Errorf("slugstore: invalid slug sha256 %q", sha)
	}
	return filepath.Join(s.Dir, sha+".tgz"), nil
}

// Put stores the slug read from r and returns its reference.
func (s *Store) Put(r io.Reader) (state.SlugRef, error) {
	return s.put(r, nil)
}

// PutVerified stores the file read from r only if it is want: the same
// sha256 and, when want.Size is set, the same size (reading at most one
// byte more). Anything else is refused with an error and nothing is kept.
func (s *Store) PutVerified(r io.Reader, want state.SlugRef) (state.SlugRef, error) {
	if !ValidSHA(want.SHA256) {
		return state.SlugRef{}, fmt.Errorf("slugstore: invalid slug sha256 %q", want.SHA256)
	}
	if want.Size > 0 {
		r = io.LimitReader(r, want.Size+1)
	}
	return s.put(r, func(got state.SlugRef) error {
		if got.SHA256 != want.SHA256 {
			return fmt.Errorf("%w: got sha256 %s (%d bytes), want %s", ErrMismatch, got.SHA256, got.Size, want.SHA256)
		}
		if want.Size > 0 && got.Size != want.Size {
			return fmt.Errorf("%w: got %d bytes, want %d", ErrMismatch, got.Size, want.Size)
		}
		return nil
	})
}

// ErrMismatch is the error of PutVerified for content that is not the
// slug asked for.
var ErrMismatch = errors.New("slugstore: content does not match its sha256")

// Verify reports whether the stored file of sha still hashes to sha, and
// its size.
func (s *Store) Verify(sha string) (int64, error) {
	p, err := s.Path(sha)
	if err != nil {
		return 0, err
	}
	f, err := os.Open(p)
	if err != nil {
		return 0, fmt.Errorf("slugstore: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, fmt.Errorf("slugstore: read %s: %w", sha, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return n, fmt.Errorf("%w: the file of %s hashes to %s", ErrMismatch, sha, got)
	}
	return n, nil
}

// Has reports whether the slug sha is stored.
func (s *Store) Has(sha string) bool {
	p, err := s.Path(sha)
	if err != nil {
		return false
	}
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func (s *Store) put(r io.Reader, check func(state.SlugRef) error) (state.SlugRef, error) {
	tmp, err := os.CreateTemp(s.Dir, ".incoming-*.tgz")
	if err != nil {
		return state.SlugRef{}, fmt.Errorf("slugstore: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return state.SlugRef{}, fmt.Errorf("slugstore: write slug: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return state.SlugRef{}, fmt.Errorf("slugstore: %w", err)
	}
	ref := state.SlugRef{SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}
	if check != nil {
		if err := check(ref); err != nil {
			return state.SlugRef{}, err
		}
	}
	final := filepath.Join(s.Dir, ref.SHA256+".tgz")
	if err := os.Rename(tmp.Name(), final); err != nil {
		return state.SlugRef{}, fmt.Errorf("slugstore: store slug %s: %w", ref.SHA256, err)
	}
	return ref, nil
}

// Handler serves GET and HEAD /slugs/<sha256>.tgz from the store.
func (s *Store) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, "/slugs/")
		sha, isTgz := strings.CutSuffix(name, ".tgz")
		if !ok || !isTgz || !ValidSHA(sha) {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(filepath.Join(s.Dir, sha+".tgz"))
		if errors.Is(err, fs.ErrNotExist) {
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, "slug unreadable", http.StatusInternalServerError)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/gzip")
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		w.Header().Set("ETag", `"`+sha+`"`)
		http.ServeContent(w, r, "", st.ModTime(), f)
	})
}

// Slug is one stored slug.
type Slug struct {
	SHA256  string
	Size    int64
	ModTime time.Time
}

// List returns the stored slugs, in no particular order.
func (s *Store) List() ([]Slug, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("slugstore: list %s: %w", s.Dir, err)
	}
	var out []Slug
	for _, e := range entries {
		sha, ok := strings.CutSuffix(e.Name(), ".tgz")
		if !ok || !ValidSHA(sha) || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, Slug{SHA256: sha, Size: info.Size(), ModTime: info.ModTime()})
	}
	return out, nil
}

// Remove deletes the slug with the given sha256; a slug that is not there
// is not an error.
func (s *Store) Remove(sha string) error {
	p, err := s.Path(sha)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("slugstore: remove %s: %w", sha, err)
	}
	return nil
}

// RemoveIncoming deletes the temporary files of uploads that a crash
// interrupted, if they are older than age; it returns how many it removed.
func (s *Store) RemoveIncoming(age time.Duration) (int, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return 0, fmt.Errorf("slugstore: list %s: %w", s.Dir, err)
	}
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".incoming-") {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			if os.Remove(filepath.Join(s.Dir, e.Name())) == nil {
				n++
			}
		}
	}
	return n, nil
}
