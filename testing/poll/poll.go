package poll

import (
	"context"
	"testing"
	"time"

	"github.com/deis/deis/pkg/backoff"
)

// Until polls cond (every 10ms at first, then up to every 300ms) until it
// holds; when timeout passes it fails the test with what and cond's last
// message.
func Until(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	bo := backoff.Backoff{Min: 10 * time.Millisecond, Max: 300 * time.Millisecond}
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if bo.Wait(ctx) != nil {
			if msg != "" {
				t.Fatalf("timed out waiting for %s: %s", what, msg)
			}
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// True is Until for a condition without a message.
func True(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	Until(t, timeout, what, func() (bool, string) { return cond(), "" })
}
