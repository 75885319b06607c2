package state_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Formations created at the same time get distinct uids in the allocated
// range; one created twice is refused and takes no uid.
func TestCreateFormationAllocatesUIDs(t *testing.T) {
	_, cli := etcdtest.Start(t)
	st := state.NewStore(cli, "/t")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const n = 8
	uids := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := &state.Formation{Name: fmt.Sprintf("f%d", i)}
			extra := clientv3.OpPut(st.Keys.Config(f.Name), "{}")
			if err := st.CreateFormation(ctx, f, extra); err != nil {
				t.Error(err)
				return
			}
			uids[i] = f.UID
		}()
	}
	wg.Wait()
	seen := map[int]bool{}
	for i, uid := range uids {
		if uid < state.FirstAppUID || uid >= state.FirstAppUID+state.AppUIDs || seen[uid] {
			t.Errorf("f%d got uid %d (seen: %v)", i, uid, seen[uid])
		}
		seen[uid] = true
		got, _, err := st.GetFormation(ctx, fmt.Sprintf("f%d", i))
		if err != nil || got.UID != uid || got.AppUID() != uid {
			t.Errorf("f%d stored %+v, %v; want uid %d", i, got, err, uid)
		}
		if _, err := st.Get(ctx, st.Keys.Config(fmt.Sprintf("f%d", i)), new(state.Config)); err != nil {
			t.Errorf("extra op not applied: %v", err)
		}
	}

	again := &state.Formation{Name: "f0"}
	if err := st.CreateFormation(ctx, again); !errors.Is(err, state.ErrExists) || again.UID != 0 {
		t.Errorf("second create: %v, uid %d", err, again.UID)
	}
	next := &state.Formation{Name: "later"}
	if err := st.CreateFormation(ctx, next); err != nil || next.UID != state.FirstAppUID+n {
		t.Errorf("the refused create must not spend a uid: %v, %d", err, next.UID)
	}
}

// Formations from before allocation run as a uid derived from their name:
// never root, never a host account, never an allocated uid.
func TestAppUIDFallback(t *testing.T) {
	for _, name := range []string{"a", "hello", "web", "x-1"} {
		uid := state.AppUID(name, 0)
		if uid < state.FirstAppUID+state.AppUIDs || uid >= state.FirstAppUID+2*state.AppUIDs {
			t.Errorf("AppUID(%q, 0) = %d, outside the fallback range", name, uid)
		}
		if state.AppUID(name, 0) != uid {
			t.Errorf("AppUID(%q, 0) is not deterministic", name)
		}
		// a uid outside the platform's ranges (root, the stack's app
		// user) is never used as it is
		for _, bad := range []int{0, 1000, 65534, -1} {
			if got := state.AppUID(name, bad); got != uid {
				t.Errorf("AppUID(%q, %d) = %d, want the fallback %d", name, bad, got, uid)
			}
		}
	}
	if state.AppUID("a", 0) == state.AppUID("b", 0) {
		t.Error("two names share a fallback uid")
	}
	if got := state.AppUID("a", state.FirstAppUID+7); got != state.FirstAppUID+7 {
		t.Errorf("an allocated uid is kept: %d", got)
	}
}
