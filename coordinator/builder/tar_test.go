package builder

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

func TestChownTar(t *testing.T) {
	var src bytes.Buffer
	tw := tar.NewWriter(&src)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "abc"}})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "build/", Mode: 0o775})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "build/run", Mode: 0o775, Size: 3})
	tw.Write([]byte("hi\n"))
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "build/link", Linkname: "run"})
	tw.Close()

	var dst bytes.Buffer
	if err := chownTar(&dst, &src, 1000, 1000, "app"); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&dst)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 1000 || h.Gid != 1000 || h.Uname != "app" {
			t.Errorf("%s owned by %d:%d %s", h.Name, h.Uid, h.Gid, h.Uname)
		}
		if h.Name == "build/run" {
			body, _ := io.ReadAll(tr)
			if string(body) != "hi\n" || h.Mode != 0o775 {
				t.Errorf("build/run = %q mode %o", body, h.Mode)
			}
		}
		names = append(names, h.Name)
	}
	if len(names) != 3 || names[0] != "build/" || names[2] != "build/link" {
		t.Errorf("entries = %v, want build/, build/run, build/link (global header dropped)", names)
	}
}
