package state_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestValidateDomain(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, tc := range []struct {
		d    string
		want string // "" when valid, else part of the error
	}{
		{"www.example.com", ""},
		{"*.example.com", ""},
		{"*.apps.example.com", ""},
		{"localhost", ""},                                       // a base domain on a laptop
		{long + ".example.com", ""},                             // 63 characters: DNS's limit
		{long + "a.example.com", "has 64 characters"},           // one too many
		{"www." + long + "aa.example.com", "has 65 characters"}, // in the middle
		{"*.com", "not directly above the top-level domain"},    // claims every .com host
		{"*.localhost", "not directly above the top-level domain"},
		{"*", "invalid domain"},
		{"evil.com;", "invalid domain"},
		{"a..b", "invalid domain"},
		{"x{y}.com", "invalid domain"},
		{strings.Repeat(long+".", 4) + "com", "invalid domain"}, // over 253 characters
	} {
		err := state.ValidateDomain(tc.d)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("ValidateDomain(%q) = %v, want ok", tc.d, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("ValidateDomain(%q) = %v, want an error containing %q", tc.d, err, tc.want)
		}
	}
}

func TestValidateSettableKey(t *testing.T) {
	for k, reserved := range map[string]bool{
		"PORT": true, "DYNO": true, "DEIS_FORMATION": true, "DEIS_RELEASE": true, "DEIS_COMMAND": true, "DEIS_BUILD_FAILURE": true,
		// what users set
		"HEALTHCHECK_PATH": false, "BUILDPACK_URL": false, "DATABASE_URL": false, "PORTAL": false, "DEIS": false, "HOME": false,
	} {
		err := state.ValidateSettableKey(k)
		if reserved != (err != nil) {
			t.Errorf("ValidateSettableKey(%s) = %v, want reserved=%v", k, err, reserved)
		}
		if err != nil && !strings.Contains(err.Error(), k+" is set by the platform: it cannot be set with config:set") {
			t.Errorf("message for %s: %v", k, err)
		}
	}
}

func TestCheckConfigSize(t *testing.T) {
	if err := state.CheckConfigSize(map[string]string{"A": strings.Repeat("x", 30<<10)}); err != nil {
		t.Errorf("a 30KB config: %v", err)
	}
	err := state.CheckConfigSize(map[string]string{"A": strings.Repeat("x", 2<<20)})
	if err == nil || !errors.Is(err, state.ErrTooLarge) || !strings.Contains(err.Error(), "config would be 2.0MB: the limit is 32.0KB") {
		t.Errorf("a 2MB config: %v", err)
	}
}

// What etcd answers to a request over its size limit is recognised.
func TestIsRequestTooLarge(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := state.NewStore(cli, "/t")
	for _, size := range []int{1<<20 + 600<<10, 3 << 20} { // over the server's limit; over the client's
		_, err := s.Commit(ctx, nil, clientv3.OpPut("/t/big", strings.Repeat("x", size)))
		if err == nil {
			t.Fatalf("etcd took a %d-byte request", size)
		}
		if !state.IsRequestTooLarge(err) {
			t.Errorf("%d bytes: IsRequestTooLarge(%v) = false", size, err)
		}
	}
	if state.IsRequestTooLarge(fmt.Errorf("state: commit: %w", context.DeadlineExceeded)) {
		t.Error("a timeout counts as too large")
	}
}
