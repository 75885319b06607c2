package ctl

import (
	"fmt"
	"strings"
	"testing"

	"github.com/deis/deis/pkg/state"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Integration tests of the input deisctl refuses, against real etcd: each
// refusal says why and writes nothing.

// The variables the platform sets in every container cannot be set; the
// ones users set for the platform (HEALTHCHECK_PATH, BUILDPACK_URL) can.
func TestConfigRefusesPlatformKeys(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	for _, k := range []string{"PORT", "DYNO", "DEIS_FORMATION", "DEIS_RELEASE", "DEIS_COMMAND", "DEIS_ANYTHING"} {
		c.fails(k+" is set by the platform: it cannot be set with config:set", "config:set", "-f", "hello", "OK=1", k+"=x")
	}
	contains(t, c.ok("config:set", "-f", "hello", "HEALTHCHECK_PATH=/healthz", "BUILDPACK_URL=https://example.com/bp.git"), "done, v2")
	// Unsetting one is allowed (a config stored before the rule can be cleaned).
	c.put(c.store.Keys.Config("hello"), state.Config{Vars: map[string]string{"PORT": "1"}})
	contains(t, c.ok("config:unset", "-f", "hello", "PORT"), "done, v3")
}

// A config over state.MaxConfigBytes is refused before anything is written,
// with or without a release.
func TestConfigSizeLimit(t *testing.T) {
	c := newCluster(t)
	c.seedRelease("hello", nil)
	c.ok("formations:create", "fresh")
	big := strings.Repeat("x", 2<<20)
	for _, f := range []string{"hello", "fresh"} {
		c.fails("config would be 2.0MB: the limit is 32.0KB (it is copied into every release and container spec in etcd): keep large data in files or a database, and unset the largest vars with deisctl config:unset", "config:set", "-f", f, "BIG="+big)
		_, _, err := c.run("config:set", "-f", f, "BIG="+big)
		if strings.HasSuffix(err.Error(), "too large for etcd") {
			t.Errorf("the message ends in a sentinel: %v", err)
		}
	}
	// Together over the limit: the second var is refused, the first stays.
	half := strings.Repeat("y", 20<<10)
	c.ok("config:set", "-f", "hello", "A="+half)
	c.fails("config would be 40.0KB: the limit is 32.0KB", "config:set", "-f", "hello", "B="+half)
	if cfg := c.config("hello"); cfg["A"] != half || cfg["B"] != "" {
		t.Fatal("the refused config:set changed the config")
	}
	// A config stored over the limit (before it existed) can shrink, not grow.
	c.put(c.store.Keys.Config("hello"), state.Config{Vars: map[string]string{"A": half, "B": half}})
	c.fails("the limit is 32.0KB", "config:set", "-f", "hello", "C=1")
	c.ok("config:unset", "-f", "hello", "B")
}

// etcd refusing a request for its size becomes a message, not a gRPC error.
func TestConfigTooLargeForEtcdMessage(t *testing.T) {
	err := tooLarge(fmt.Errorf("state: commit: %w", rpctypes.ErrRequestTooLarge))
	if err == nil || !strings.Contains(err.Error(), "the config is too large for etcd's request size limit: the limit is 32.0KB") {
		t.Fatalf("tooLarge = %v", err)
	}
	if err := tooLarge(fmt.Errorf("state: commit: %w", rpctypes.ErrTimeout)); !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("another error changed: %v", err)
	}
}

// Domains with an over-long label, or a wildcard directly above a
// top-level domain, are refused; one stored before the rule can be removed.
func TestDomainsRefused(t *testing.T) {
	c := newCluster(t)
	c.ok("formations:create", "hello")
	c.fails("has 64 characters, and a DNS label has at most 63", "domains:add", strings.Repeat("a", 64)+".example.com", "-f", "hello")
	c.fails("not directly above the top-level domain", "domains:add", "*.com", "-f", "hello")
	c.ok("domains:add", strings.Repeat("a", 63)+".example.com", "-f", "hello")

	form := c.formation("hello")
	form.Domains = append(form.Domains, "*.com")
	c.put(c.store.Keys.Formation("hello"), form)
	contains(t, c.ok("domains:remove", "*.com", "-f", "hello"), "Removing *.com from hello... done")
	c.fails("not directly above the top-level domain", "domains:remove", "*.com", "-f", "hello")
}
