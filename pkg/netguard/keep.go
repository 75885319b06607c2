package netguard

import (
	"context"
	"log/slog"
	"time"
)

// Keep makes the network and its firewall with Ensure, and then keeps them
// there: it runs Ensure again every interval until ctx ends, because a
// reboot-less firewall reload or `docker network rm` takes them away while
// the component runs. The first Ensure's error is returned (the caller
// should refuse to start containers without their guard); later errors
// are logged and retried at the next interval.
func Keep(ctx context.Context, d Docker, name string, o Options, interval time.Duration, log *slog.Logger) error {
	if err := Ensure(ctx, d, name, o); err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := Ensure(ctx, d, name, o); err != nil && ctx.Err() == nil {
					log.Warn("network guard lost, cannot restore it", "network", name, "error", err)
				}
			}
		}
	}()
	return nil
}
