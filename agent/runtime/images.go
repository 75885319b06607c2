package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// loadTimeout bounds loading one image archive into the engine.
const loadTimeout = 10 * time.Minute

// imageEngine is the part of the Docker API that loads image archives.
type imageEngine interface {
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageLoad(ctx context.Context, input io.Reader, opts ...client.ImageLoadOption) (image.LoadResponse, error)
}

// ensureImage makes sure the engine has the image of a spec without slug
// that names an image archive (a Dockerfile build): when the engine lacks
// the image, the archive is downloaded (verified like a slug, once for all
// the containers that need it at the same time) and loaded. Specs with a
// slug or without an archive need nothing.
func (r *Runtime) ensureImage(ctx context.Context, spec state.ContainerSpec) error {
	if spec.Slug != nil || spec.ImageArchive == nil || spec.Image == "" {
		return nil
	}
	return r.slugs.image(ctx, r.cfg.Docker, spec.Image, spec.ImageArchiveURL, *spec.ImageArchive)
}

// image makes sure d has image name, loading it from the archive ref at url
// when it is missing.
func (s *slugs) image(ctx context.Context, d imageEngine, name, url string, ref state.SlugRef) error {
	if !validSHA.MatchString(ref.SHA256) {
		return fmt.Errorf("runtime: invalid image archive sha256 %q in the runtime databag: the coordinator must name archives by 64 lowercase hex digits", ref.SHA256)
	}
	if ok, err := hasImage(ctx, d, name); err != nil || ok {
		return err
	}
	return s.share(ctx, "image:"+ref.SHA256, func(ctx context.Context) error { return s.loadImage(ctx, d, name, url, ref) })
}

// hasImage reports whether the engine has image name.
func hasImage(ctx context.Context, d imageEngine, name string) (bool, error) {
	ictx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	_, err := d.ImageInspect(ictx, name)
	switch {
	case err == nil:
		return true, nil
	case isNotFound(err):
		return false, nil
	}
	return false, fmt.Errorf("runtime: inspect image %s: %w", name, err)
}

// loadImage downloads the archive ref and loads it into the engine. The
// downloaded file is removed once the engine has the image.
func (s *slugs) loadImage(ctx context.Context, d imageEngine, name, url string, ref state.SlugRef) error {
	if ok, err := hasImage(ctx, d, name); err != nil || ok {
		return err // loaded by a flight that ended as this one began
	}
	file := filepath.Join(s.dir, ref.SHA256+".image.tgz")
	if err := s.download(ctx, "image archive", url, ref, file); err != nil {
		return err
	}
	err := load(ctx, d, file)
	if err == nil {
		var ok bool
		if ok, err = hasImage(ctx, d, name); err == nil && !ok {
			err = fmt.Errorf("runtime: image archive %s does not hold the image %s: deploy again", short(ref.SHA256), name)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			s.m.imageLoads.WithLabelValues("failed").Inc()
			os.Remove(file) // fetch it again next time rather than trust it
		}
		return err
	}
	os.Remove(file)
	s.m.imageLoads.WithLabelValues("loaded").Inc()
	s.log.Info("image loaded", "image", name, "archive", short(ref.SHA256))
	return nil
}

// load runs `docker load` of the (gzipped) archive file and reads the
// engine's answer, which carries its errors.
func load(ctx context.Context, d imageEngine, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("runtime: image archive: %w", err)
	}
	defer f.Close()
	lctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	resp, err := d.ImageLoad(lctx, f, client.ImageLoadWithQuiet(true))
	if err != nil {
		return fmt.Errorf("runtime: load image archive: %w", err)
	}
	defer resp.Body.Close()
	if err := loadError(resp.Body); err != nil {
		return fmt.Errorf("runtime: load image archive: %w", err)
	}
	return nil
}

// loadError reads the engine's JSON messages about a load and returns the
// error they report, if any.
func loadError(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the engine's answer: %w", err)
		}
		switch {
		case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
			return errors.New(strings.TrimSpace(m.ErrorDetail.Message))
		case m.Error != "":
			return errors.New(strings.TrimSpace(m.Error))
		}
	}
}
