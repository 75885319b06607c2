package watch

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deis/deis/pkg/backoff"
)

// never is a resync period no test waits for.
const never = time.Hour

// recv waits for one value from ch, failing the test after a deadline.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// run starts Loop and returns a channel closed when it returned.
func run(ctx context.Context, w Waker, resync time.Duration, bo backoff.Backoff, pass func(context.Context) error, failed func(error)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		Loop(ctx, w, resync, bo, pass, failed)
	}()
	return done
}

func TestLoopPassesOnWake(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	passes := make(chan struct{})
	w := NewWaker()
	done := run(ctx, w, never, backoff.Backoff{Min: never, Max: never}, func(context.Context) error {
		passes <- struct{}{}
		return nil
	}, nil)
	recv(t, passes, "the first pass, at once")
	w.Wake()
	recv(t, passes, "the pass after a wake-up")
	cancel()
	recv(t, done, "Loop to return when ctx ends")
}

func TestLoopResyncs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	passes := make(chan struct{})
	done := run(ctx, NewWaker(), time.Millisecond, backoff.Backoff{Min: never, Max: never}, func(context.Context) error {
		passes <- struct{}{}
		return nil
	}, nil)
	for i := 0; i < 3; i++ { // the first at once, then without any wake-up
		recv(t, passes, "a pass")
	}
	cancel()
	recv(t, done, "Loop to return")
}

func TestLoopRetriesAfterFailure(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	boom := errors.New("boom")
	passes := make(chan error, 10)
	n := 0
	var failures []error
	done := run(ctx, NewWaker(), never, backoff.Backoff{Min: time.Millisecond, Max: time.Millisecond}, func(context.Context) error {
		n++
		var err error
		if n <= 2 {
			err = boom
		}
		passes <- err
		return err
	}, func(err error) { failures = append(failures, err) })
	// Two failures, each retried after the backoff without a wake-up, then
	// a success.
	for i, want := range []error{boom, boom, nil} {
		if got := recv(t, passes, "a pass"); got != want {
			t.Fatalf("pass %d: %v, want %v", i+1, got, want)
		}
	}
	cancel()
	recv(t, done, "Loop to return")
	if len(failures) != 2 {
		t.Errorf("failed got %v, want the two failures", failures)
	}
	if n != 3 {
		t.Errorf("%d passes after a success with resync never, want 3", n)
	}
}

func TestLoopEndsQuietlyWithCtx(t *testing.T) {
	// A pass that fails because ctx ended is not a failure to report.
	ctx, cancel := context.WithCancel(context.Background())
	called := false
	done := run(ctx, NewWaker(), never, backoff.Backoff{}, func(ctx context.Context) error {
		cancel()
		return ctx.Err()
	}, func(error) { called = true })
	recv(t, done, "Loop to return")
	if called {
		t.Error("failed was called for the error of a cancelled pass")
	}
}
