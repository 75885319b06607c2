package builder

import (
	"context"
	"fmt"
	"time"

	"github.com/deis/deis/pkg/state"
)

// Replicas is where the builder records the slugs it stores and waits for
// their second copy (slugstore.Replicator).
type Replicas interface {
	// Hold records that this coordinator holds ref, just stored.
	Hold(ctx context.Context, ref state.SlugRef) error
	// AwaitCopies returns once two running coordinators hold sha, or no
	// other one runs; it fails after timeout. say prints progress.
	AwaitCopies(ctx context.Context, sha string, timeout time.Duration, say func(string)) error
}

// artifact is the file of the slug store a build releases: its slug, or
// the archive of its image.
func artifact(build *state.Build) *state.SlugRef {
	if build.Slug != nil {
		return build.Slug
	}
	return build.ImageArchive
}

// holdArtifact records the build's slug (or image archive) as held here,
// so the other coordinators fetch it.
func (b *Builder) holdArtifact(ctx context.Context, build *state.Build) error {
	ref := artifact(build)
	if b.cfg.Replicas == nil || ref == nil {
		return nil
	}
	if err := b.cfg.Replicas.Hold(ctx, *ref); err != nil {
		return fmt.Errorf("builder: record the stored slug in etcd: %w", err)
	}
	return nil
}

// awaitCopies waits until a second running coordinator holds the build's
// slug (or image archive), so that losing this machine for good loses no
// release; it fails the build when another coordinator runs but does not
// store it within ReplicaTimeout. With no other coordinator running the
// release is written at once.
func (b *Builder) awaitCopies(ctx context.Context, build *state.Build, con *console) error {
	ref := artifact(build)
	if b.cfg.Replicas == nil || ref == nil {
		return nil
	}
	if err := b.cfg.Replicas.AwaitCopies(ctx, ref.SHA256, b.cfg.ReplicaTimeout, func(line string) { con.Printf("%s", line) }); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	return nil
}
