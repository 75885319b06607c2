package slugtar_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/slugtar"
	"github.com/deis/deis/pkg/slugtar/slugtartest"
)

// Check refuses what ExtractLimited refuses, with the same reasons, and
// reads the whole stream.
func TestCheck(t *testing.T) {
	many := func(n int) []entry {
		var es []entry
		for i := 0; i < n; i++ {
			es = append(es, entry{Name: fmt.Sprintf("./f%d", i), Body: "x"})
		}
		return es
	}
	zeros := strings.Repeat("\x00", 8<<20)
	for _, tc := range []struct {
		name    string
		entries []entry
		lim     slugtar.Limits
		want    string // "" means accepted
		tooBig  bool   // the error matches ErrTooLarge
	}{
		{"a real slug", []entry{
			{Name: "./", Type: tar.TypeDir},
			{Name: "./Procfile", Body: "web: true\n"},
			{Name: "./bin/", Type: tar.TypeDir},
			{Name: "./bin/run", Body: "#!/bin/sh\n", Mode: 0o755},
			{Name: "./link", Type: tar.TypeSymlink, Link: "/etc/passwd"}, // resolved in the container
			{Name: "./hard", Type: tar.TypeLink, Link: "./Procfile"},
		}, slugtar.DefaultLimits, "", false},
		{"bomb", []entry{{Name: "./zeros", Body: zeros}}, slugtar.LimitsFor(64<<10, 0),
			"slugtar: the slug expands past 512.0KB (8x --max-slug-bytes): refusing it", true},
		{"sum of files", []entry{{Name: "./a", Body: "123456"}, {Name: "./b", Body: "12345"}}, slugtar.Limits{MaxBytes: 10},
			"slugtar: the slug expands past 10B: refusing it", true},
		{"at the byte limit", []entry{{Name: "./a", Body: "12345"}, {Name: "./b", Body: "12345"}}, slugtar.Limits{MaxBytes: 10}, "", false},
		{"entries", append(many(3), entry{Name: "./d/", Type: tar.TypeDir}), slugtar.LimitsFor(0, 3),
			"slugtar: the slug has more than 3 entries (--max-slug-entries): refusing it", true},
		{"at the entry limit", many(3), slugtar.Limits{MaxEntries: 3}, "", false},
		{"fifo", []entry{{Name: "./p", Type: tar.TypeFifo}}, slugtar.DefaultLimits,
			`slugtar: tarball entry "./p" is a fifo: a slug holds only files, directories and links; remove it from the app and push again`, false},
		{"device", []entry{{Name: "./zero", Type: tar.TypeChar}}, slugtar.DefaultLimits, `tarball entry "./zero" is a character device`, false},
		{"escape", []entry{{Name: "../../etc/cron.d/x", Body: "x"}}, slugtar.DefaultLimits, "points outside the slug", false},
		{"hard link out", []entry{{Name: "./x", Type: tar.TypeLink, Link: "../../etc/shadow"}}, slugtar.DefaultLimits, "points outside the slug", false},
		{"root is a file", []entry{{Name: ".", Body: "x"}}, slugtar.DefaultLimits, "is not a directory", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgz := slugtartest.Tarball(t, tc.entries...)
			r := bytes.NewReader(tgz)
			err := slugtar.Check(context.Background(), r, tc.lim)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, slugtar.ErrTooLarge) != tc.tooBig {
				t.Fatalf("got %v, want %q (ErrTooLarge: %v)", err, tc.want, tc.tooBig)
			}
			// the same slug, extracted, fails the same way
			xerr := slugtar.ExtractLimited(context.Background(), writeTgz(t, tc.entries...), t.TempDir()+"/slug", tc.lim)
			if xerr == nil || xerr.Error() != err.Error() {
				t.Errorf("ExtractLimited says %v, Check says %v", xerr, err)
			}
		})
	}

	t.Run("not a tarball", func(t *testing.T) {
		err := slugtar.Check(context.Background(), strings.NewReader("hello"), slugtar.DefaultLimits)
		if err == nil || !strings.Contains(err.Error(), "slugtar: not a gzipped tarball") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("cut short", func(t *testing.T) {
		tgz := slugtartest.Tarball(t, entry{Name: "./a", Body: strings.Repeat("abc", 100000)})
		err := slugtar.Check(context.Background(), bytes.NewReader(tgz[:len(tgz)/2]), slugtar.DefaultLimits)
		if err == nil {
			t.Fatal("a truncated slug passed")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := slugtar.Check(ctx, bytes.NewReader(slugtartest.Tarball(t, many(2)...)), slugtar.DefaultLimits)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("reads to the end of the file contents", func(t *testing.T) {
		tgz := slugtartest.Tarball(t, entry{Name: "./a", Body: strings.Repeat("abc", 100000)})
		r := &countingReader{r: bytes.NewReader(tgz)}
		if err := slugtar.Check(context.Background(), r, slugtar.DefaultLimits); err != nil {
			t.Fatal(err)
		}
		if r.n < int64(len(tgz))-64 {
			t.Errorf("Check read %d of %d bytes", r.n, len(tgz))
		}
	})
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
