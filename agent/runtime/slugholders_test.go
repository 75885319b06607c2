package runtime

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/slugtar/slugtartest"
	"github.com/deis/deis/pkg/state"
)

// A slug whose coordinator is gone (or serves the wrong bytes) comes from
// another coordinator that holds it; a holder serving wrong bytes is
// refused too.
func TestSlugFromOtherHolders(t *testing.T) {
	tgz := slugtartest.Tarball(t, slugtartest.Entry{Name: "./Procfile", Body: "web: true\n"})
	ref := state.SlugRef{SHA256: sha(tgz), Size: int64(len(tgz))}
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // the building coordinator, lost for good
	liar := newSlugServer(t, []byte("not the slug"), nil)
	good := newSlugServer(t, tgz, nil)

	s, _ := testSlugs(t)
	var asked []string
	s.holders = func(_ context.Context, got string) ([]string, error) {
		asked = append(asked, got)
		return []string{liar.URL + "/x.tgz", good.URL + "/x.tgz"}, nil
	}
	dir, err := s.ensure(context.Background(), gone.URL+"/slugs/"+ref.SHA256+".tgz", ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "Procfile")); err != nil {
		t.Fatalf("slug not extracted: %v", err)
	}
	if len(asked) != 1 || asked[0] != ref.SHA256 || liar.hits.Load() != 1 || good.hits.Load() != 1 {
		t.Fatalf("holders asked %v, liar %d, good %d", asked, liar.hits.Load(), good.hits.Load())
	}

	// Only liars: refused, with every reason, and nothing kept.
	s2, _ := testSlugs(t)
	s2.holders = func(context.Context, string) ([]string, error) { return []string{liar.URL + "/x.tgz"}, nil }
	_, err = s2.ensure(context.Background(), gone.URL+"/slugs/"+ref.SHA256+".tgz", ref)
	if err == nil || !strings.Contains(err.Error(), "has sha256") || !strings.Contains(err.Error(), "no coordinator served") {
		t.Fatalf("only a lying holder: %v", err)
	}
	if entries, _ := os.ReadDir(s2.dir); len(entries) != 0 {
		t.Fatalf("a refused download left %v", entries)
	}

	// The recorded URL comes first while its coordinator is a live holder,
	// last once it is not.
	s4, _ := testSlugs(t)
	rec := "http://a/slugs/x.tgz"
	s4.holders = func(context.Context, string) ([]string, error) { return []string{"http://b/slugs/x.tgz", rec}, nil }
	if got := strings.Join(s4.sources(context.Background(), rec, ref.SHA256), " "); got != rec+" http://b/slugs/x.tgz" {
		t.Errorf("sources with the recorded holder live: %s", got)
	}
	s4.holders = func(context.Context, string) ([]string, error) { return []string{"http://b/slugs/x.tgz"}, nil }
	if got := strings.Join(s4.sources(context.Background(), rec, ref.SHA256), " "); got != "http://b/slugs/x.tgz "+rec {
		t.Errorf("sources with the recorded holder gone: %s", got)
	}
	s4.holders = func(context.Context, string) ([]string, error) { return nil, nil }
	if got := strings.Join(s4.sources(context.Background(), rec, ref.SHA256), " "); got != rec {
		t.Errorf("sources with no holders known: %s", got)
	}

	// No URL in the databag and no holder: a clear error.
	s3, _ := testSlugs(t)
	s3.holders = func(context.Context, string) ([]string, error) { return nil, nil }
	if _, err := s3.ensure(context.Background(), "", ref); err == nil || !strings.Contains(err.Error(), "no running coordinator holds it") {
		t.Fatalf("nowhere: %v", err)
	}
}
