package ctl

import (
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
)

func TestAutoRollbackCommand(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	contains(t, c.ok("autorollback", "-f", "hello"), "Automatic rollback of hello is on")
	c.fails("usage: deisctl autorollback [on|off]", "autorollback", "maybe", "-f", "hello")
	c.fails("formation \"nope\" not found", "autorollback", "off", "-f", "nope")

	contains(t, c.ok("autorollback", "off", "-f", "hello"), "Turning automatic rollback of hello off... done")
	var f state.Formation
	c.get(c.store.Keys.Formation("hello"), &f)
	if !f.AutoRollbackOff {
		t.Fatal("formation still has automatic rollback on")
	}
	contains(t, c.ok("autorollback", "off", "-f", "hello"), "off already, no change")
	contains(t, c.ok("status", "-f", "hello"), "Auto-rollback:   off (turn it on with deisctl autorollback on -f hello)")
	contains(t, c.ok("autorollback", "on", "-f", "hello"), "Turning automatic rollback of hello on... done")

	// An automatic rollback, as the coordinator writes it, shows in
	// releases and status.
	c.ok("config:set", "FAIL=1", "-f", "hello")
	_, _, err := c.store.Rollback(c.ctx(), "hello", state.Rollback{Target: 1, AutoRollbackFrom: 2,
		Description: "Auto-rollback to v1: 30 of 40 requests answered 5xx in the last 1m0s"})
	if err != nil {
		t.Fatal(err)
	}
	c.put(c.store.Keys.ReleaseStatus("hello", 2), state.ReleaseStatus{Version: 2, Failed: true, RolledBack: true, At: time.Now(),
		Reason: "rolled back automatically to v1: 30 of 40 requests answered 5xx in the last 1m0s"})
	contains(t, c.ok("releases", "-f", "hello"), "Auto-rollback to v1: 30 of 40", "failed: rolled back automatically to v1")
	contains(t, c.ok("status", "-f", "hello"), "Auto-rollback:   v2 was rolled back automatically at")
	if r := c.release("hello", 3); r.AutoRollbackFrom != 2 || r.Build == nil || r.Config["FAIL"] != "" {
		t.Fatalf("v3 = %+v", r)
	}
}
