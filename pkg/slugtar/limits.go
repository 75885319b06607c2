package slugtar

import (
	"errors"
	"fmt"
)

// Default limits, for callers that know no better (Extract).
const (
	// DefaultMaxSlugBytes is the platform's default slug size limit (the
	// coordinator's --max-slug-bytes).
	DefaultMaxSlugBytes = 1 << 30
	// ExpandFactor is how many times its compressed size limit a slug may
	// expand to: slugs compress 2-5x; a bomb compresses 1000x.
	ExpandFactor = 8
	// DefaultMaxEntries is the most tarball entries a slug may have.
	DefaultMaxEntries = 200_000
)

// Limits bound what extracting one slug may write. A zero field means no
// limit.
type Limits struct {
	// MaxBytes is the total size of the slug's files once extracted.
	MaxBytes int64
	// MaxEntries is the number of tarball entries (files, directories,
	// links).
	MaxEntries int
	// BytesHint and EntriesHint, when set, say in the refusal where the
	// limit comes from, such as "8x --max-slug-bytes".
	BytesHint, EntriesHint string
}

// LimitsFor returns the limits of a platform whose slugs may be up to
// maxSlugBytes compressed (<= 0: DefaultMaxSlugBytes) with up to maxEntries
// entries (<= 0: DefaultMaxEntries): ExpandFactor times maxSlugBytes.
func LimitsFor(maxSlugBytes int64, maxEntries int) Limits {
	if maxSlugBytes <= 0 {
		maxSlugBytes = DefaultMaxSlugBytes
	}
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	return Limits{
		MaxBytes:    ExpandFactor * maxSlugBytes,
		MaxEntries:  maxEntries,
		BytesHint:   fmt.Sprintf("%dx --max-slug-bytes", ExpandFactor),
		EntriesHint: "--max-slug-entries",
	}
}

// DefaultLimits are the limits of Extract.
var DefaultLimits = LimitsFor(DefaultMaxSlugBytes, DefaultMaxEntries)

// ErrTooLarge is matched (errors.Is) by the error of a slug refused because
// it exceeds its Limits. The slug's content decides it, so retrying the same
// slug is pointless.
var ErrTooLarge = errors.New("slugtar: the slug exceeds the extraction limits")

// limitError is a refusal by Limits; it matches ErrTooLarge.
type limitError struct{ msg string }

func (e *limitError) Error() string        { return e.msg }
func (e *limitError) Is(target error) bool { return target == ErrTooLarge }

func tooManyBytes(l Limits) error {
	return &limitError{fmt.Sprintf("the slug expands past %s%s: refusing it", humanBytes(l.MaxBytes), hint(l.BytesHint))}
}

func tooManyEntries(l Limits) error {
	return &limitError{fmt.Sprintf("the slug has more than %d entries%s: refusing it", l.MaxEntries, hint(l.EntriesHint))}
}

func hint(h string) string {
	if h == "" {
		return ""
	}
	return " (" + h + ")"
}

// humanBytes writes n in binary units with one decimal: 8.0GB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%cB", float64(n)/float64(div), "KMGTP"[exp])
}
