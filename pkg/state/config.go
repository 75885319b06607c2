package state

import (
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// MaxConfigBytes is the largest config document (Config, as stored) a
// formation may have: 32 KiB, as on Heroku. The config is copied into each
// release and into the spec of each container in a node's runtime databag,
// so one large config would make the writes of releases and databags
// exceed etcd's request size limit (1.5 MiB by default) and stop the
// scheduler for every formation on the node.
const MaxConfigBytes = 32 << 10

// ErrTooLarge matches (errors.Is) the errors about writes too large for
// etcd: CheckConfigSize's and TooLarge's.
var ErrTooLarge = errors.New("too large for etcd")

type tooLargeError struct{ msg string }

func (e *tooLargeError) Error() string        { return e.msg }
func (e *tooLargeError) Is(target error) bool { return target == ErrTooLarge }

// TooLarge returns an error with the message given by format and args that
// matches ErrTooLarge.
func TooLarge(format string, args ...any) error {
	return &tooLargeError{msg: fmt.Sprintf(format, args...)}
}

// CheckConfigSize refuses a config whose stored document would exceed
// MaxConfigBytes, with a message that gives both sizes.
func CheckConfigSize(vars map[string]string) error {
	n := len(Marshal(Config{Vars: vars}))
	if n <= MaxConfigBytes {
		return nil
	}
	return TooLarge("config would be %s: the limit is %s (it is copied into every release and container spec in etcd): keep large data in files or a database, and unset the largest vars with deisctl config:unset",
		HumanBytes(int64(n)), HumanBytes(MaxConfigBytes))
}

// ValidateSettableKey refuses a config key the platform sets itself in
// every container: PORT (the port the app must listen on), DYNO (the
// process's name, like web.1) and anything starting with DEIS_
// (DEIS_FORMATION, DEIS_RELEASE, DEIS_COMMAND, and those the builder uses).
// A config value for one of them would be overridden, or would change how
// the platform starts the process.
func ValidateSettableKey(k string) error {
	if k == "PORT" || k == "DYNO" || strings.HasPrefix(k, "DEIS_") {
		return fmt.Errorf("%s is set by the platform: it cannot be set with config:set (names starting with DEIS_, PORT and DYNO are reserved)", k)
	}
	return nil
}

// IsRequestTooLarge reports whether err is etcd (or the gRPC client)
// refusing a request for its size.
func IsRequestTooLarge(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrTooLarge) || errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrGRPCRequestTooLarge) {
		return true
	}
	// the server's limit, or the client's own send limit
	msg := err.Error()
	return strings.Contains(msg, "request is too large") || strings.Contains(msg, "trying to send message larger than max")
}

// HumanBytes writes n as 1.5KB, 2.1MB or 12B (powers of 1024).
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
