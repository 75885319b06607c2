package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/deis/deis/coordinator/slugstore"
	"github.com/deis/deis/pkg/slugtar/slugtartest"
)

// putChecked stores a slug only when the nodes would extract it, and
// reports why not otherwise; the size limit's error passes through.
func TestPutChecked(t *testing.T) {
	type entry = slugtartest.Entry
	var many []entry
	for i := 0; i < 20; i++ {
		many = append(many, entry{Name: fmt.Sprintf("./f%d", i)})
	}
	for _, tc := range []struct {
		name  string
		slug  []byte
		limit int64  // the capReader's limit, as readOutput sets it
		want  string // "" means stored
	}{
		{"fine", slugtartest.Tarball(t, entry{Name: "./Procfile", Body: "web: true\n"}), 1 << 20, ""},
		{"bomb", slugtartest.Tarball(t, entry{Name: "./zeros", Body: strings.Repeat("\x00", 9<<20)}), 1 << 20,
			"builder: the slug expands past 8.0MB (8x --max-slug-bytes): refusing it"},
		{"entries", slugtartest.Tarball(t, many...), 1 << 20,
			"builder: the slug has more than 10 entries (--max-slug-entries): refusing it"},
		{"a fifo", slugtartest.Tarball(t, entry{Name: "./p", Type: '6'}), 1 << 20,
			`builder: tarball entry "./p" is a fifo`},
		{"not gzip", []byte("hello"), 1 << 20, "builder: not a gzipped tarball"},
		{"over the size limit", slugtartest.Tarball(t, entry{Name: "./r", Body: strings.Repeat("abcdefgh", 1<<16)}), 100,
			errTooLarge.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, err := slugstore.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			b := &Builder{cfg: Config{Slugs: store, MaxSlugBytes: 1 << 20, MaxSlugEntries: 10}}
			ref, err := b.putChecked(context.Background(), &capReader{r: bytes.NewReader(tc.slug), left: tc.limit})
			entries, _ := os.ReadDir(store.Dir)
			if tc.want == "" {
				if err != nil || ref.Size != int64(len(tc.slug)) || len(entries) != 1 {
					t.Fatalf("ref %+v, err %v, store %v", ref, err, entries)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if tc.limit > 100 && !errors.As(err, new(*slugError)) {
				t.Errorf("%v is not a *slugError", err)
			}
			if len(entries) != 0 {
				t.Errorf("the store holds %v", entries)
			}
		})
	}
}

// The check does not stall a reader that stops early.
func TestPutCheckedStoreStops(t *testing.T) {
	store, err := slugstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &Builder{cfg: Config{Slugs: store}}
	slug := slugtartest.Tarball(t, slugtartest.Entry{Name: "./a", Body: "x"})
	r := io.MultiReader(bytes.NewReader(slug[:10]), errReader{})
	if _, err := b.putChecked(context.Background(), r); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("err = %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("broken") }
