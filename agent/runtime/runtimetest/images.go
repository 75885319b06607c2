package runtimetest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// ImageInspect implements runtime.Docker: an image exists when Images is nil
// or names it.
func (d *Docker) ImageInspect(ctx context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	d.call("ImageInspect")
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Images != nil && !d.Images[ref] {
		return image.InspectResponse{}, fmt.Errorf("No such image: %s: %w", ref, cerrdefs.ErrNotFound)
	}
	return image.InspectResponse{ID: "sha256:" + strings.Repeat("0", 64), RepoTags: []string{ref}}, ctx.Err()
}

// ImageLoad implements runtime.Docker: it reads a `docker save` tar
// (gzipped or not) and adds the names its manifest.json gives to Images.
// Like the engine, it reports a bad archive in the response's messages.
func (d *Docker) ImageLoad(ctx context.Context, input io.Reader, _ ...client.ImageLoadOption) (image.LoadResponse, error) {
	d.call("ImageLoad")
	tags, err := manifestTags(input)
	msg := map[string]any{"stream": "Loaded image: " + strings.Join(tags, ", ") + "\n"}
	if err != nil {
		msg = map[string]any{"errorDetail": map[string]string{"message": err.Error()}, "error": err.Error()}
	} else {
		d.mu.Lock()
		if d.Images != nil {
			for _, t := range tags {
				d.Images[t] = true
			}
		}
		d.mu.Unlock()
	}
	body, _ := json.Marshal(msg)
	return image.LoadResponse{Body: io.NopCloser(bytes.NewReader(body)), JSON: true}, ctx.Err()
}

// manifestTags reads the image names of a `docker save` tar.
func manifestTags(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		r = zr
	} else {
		r = br
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("invalid archive: no manifest.json")
		}
		if err != nil {
			return nil, fmt.Errorf("invalid archive: %w", err)
		}
		if hdr.Name != "manifest.json" {
			continue
		}
		var manifest []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
			return nil, fmt.Errorf("invalid manifest.json: %w", err)
		}
		var tags []string
		for _, m := range manifest {
			tags = append(tags, m.RepoTags...)
		}
		return tags, nil
	}
}
