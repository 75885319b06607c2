package builder

import (
	"archive/tar"
	"errors"
	"io"
)

// chownTar copies a tar stream, making every entry owned by uid:gid (named
// name). Docker keeps the owners a tar names when it extracts it into a
// container, so this is how the source becomes the build user's. (Docker's
// own "copy as the container's user" looks the user up on the host in
// Docker 20.10, not in the image.) Global pax headers are dropped.
func chownTar(dst io.Writer, src io.Reader, uid, gid int, name string) error {
	tr := tar.NewReader(src)
	tw := tar.NewWriter(dst)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		h.Uid, h.Gid, h.Uname, h.Gname = uid, gid, name, name
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
