package state_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// notFormationKeyed are the Keys methods whose first argument is a string
// but not a formation's name. A new method taking a formation belongs in
// Keys.FormationFamilies instead.
var notFormationKeyed = map[string]bool{
	"Node": true, "Drain": true, "Heartbeat": true, "Runtime": true, "NodeStatus": true,
	"SSHKey": true, "User": true, "ReleaseVersionFromKey": true,
	// keyed by node first: a proxy's acks and traffic reports
	"ProxyAck": true, "NodeProxyAcks": true, "TrafficOf": true, "NodeTraffic": true,
	// keyed by coordinator or by slug content: GC owns the holder keys
	"CoordinatorMember": true, "SlugHolders": true, "SlugHolder": true, "SlugHolderKey": true,
}

// covered reports whether key belongs to one of fams.
func covered(fams []state.Family, key string) bool {
	for _, fam := range fams {
		if fam.Key == key || fam.Prefix && strings.HasPrefix(key, fam.Key) {
			return true
		}
	}
	return false
}

// Every Keys method that takes a formation builds keys inside one of
// FormationFamilies, so destroying a formation cannot forget a key family:
// adding a method such as Keys.Foo(f string) fails this test until the
// family is listed (or the method is listed in notFormationKeyed).
func TestFormationFamiliesCoverKeys(t *testing.T) {
	k := state.NewKeys("/t")
	const f = "probe"
	fams := k.FormationFamilies(f)
	typ := reflect.TypeOf(k)
	checked := 0
	for i := 0; i < typ.NumMethod(); i++ {
		m := typ.Method(i)
		mt := m.Type // receiver first
		if mt.NumIn() < 2 || mt.In(1).Kind() != reflect.String || m.Name == "FormationFamilies" {
			continue
		}
		if notFormationKeyed[m.Name] {
			continue
		}
		if mt.NumOut() != 1 || mt.Out(0).Kind() != reflect.String {
			t.Errorf("Keys.%s takes a string: list it in FormationFamilies or in notFormationKeyed", m.Name)
			continue
		}
		args := []reflect.Value{reflect.ValueOf(k), reflect.ValueOf(f)}
		for j := 2; j < mt.NumIn(); j++ {
			switch mt.In(j).Kind() {
			case reflect.String:
				args = append(args, reflect.ValueOf("x").Convert(mt.In(j)))
			case reflect.Int:
				args = append(args, reflect.ValueOf(3).Convert(mt.In(j)))
			default:
				t.Fatalf("Keys.%s: argument %d of kind %s: extend this test", m.Name, j, mt.In(j).Kind())
			}
		}
		key := m.Func.Call(args)[0].String()
		if !covered(fams, key) {
			t.Errorf("Keys.%s(%q, ...) = %q is not in Keys.FormationFamilies(%q): add its family there, or list the method in notFormationKeyed if its argument is not a formation", m.Name, f, key, f)
		}
		checked++
	}
	if checked < 10 {
		t.Fatalf("only %d formation-keyed methods found: the reflection is broken", checked)
	}
	// A formation whose name extends f owns none of f's keys.
	for _, key := range []string{k.Formation(f + "2"), k.Layer(f+"2", "web"), k.Release(f+"2", 1), k.ReleaseStatus(f+"2", 1),
		k.ProxyAck(f+"2", "n"), k.Routing(f + "2"), k.Perm(f+"2", "u"), k.FormationStatus(f + "2"), k.Config(f + "2")} {
		if covered(fams, key) {
			t.Errorf("%s is in the families of %q", key, f)
		}
	}
}

// DestroyFormation deletes every key of the formation and nothing of
// another; a formation created again starts with no release and no status.
func TestDestroyFormation(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := state.NewStore(cli, "/t")
	k := s.Keys
	seed := func(f string) {
		t.Helper()
		if err := s.Create(ctx, k.Formation(f), state.Formation{Name: f}); err != nil {
			t.Fatal(err)
		}
		puts := map[string]any{
			k.Layer(f, "runtime"): state.Layer{Formation: f, Name: "runtime"},
			k.Config(f):           state.Config{Vars: map[string]string{"A": "1"}},
			k.Build(f, "b1"):      state.Build{ID: "b1"},
			k.Perm(f, "alice"):    state.Perm{Formation: f, User: "alice"},
			k.Routing(f):          state.Routing{Formation: f},
			k.FormationStatus(f):  state.FormationStatus{Formation: f},
			k.ReleaseStatus(f, 1): state.ReleaseStatus{Version: 1, Failed: true},
		}
		for key, v := range puts {
			if err := s.Put(ctx, key, v); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.AppendRelease(ctx, f, func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			return &state.Release{Description: "first"}, nil, nil, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	seed("web")
	seed("web2")
	count := func(prefix string) int {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return int(resp.Count)
	}
	others := count("/t/")

	if err := s.DestroyFormation(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	for _, fam := range k.FormationFamilies("web") {
		if fam.Prefix && count(fam.Key) > 0 || !fam.Prefix && exists(t, ctx, cli, fam.Key) {
			t.Errorf("family %s survived DestroyFormation", fam.Key)
		}
	}
	if got := count("/t/"); got != others/2 {
		t.Errorf("%d keys left, want %d (web2's)", got, others/2)
	}
	if err := s.DestroyFormation(ctx, "web"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("destroying a missing formation: %v, want ErrNotFound", err)
	}

	// A status that a component wrote after the destroy is an orphan.
	if err := s.Put(ctx, k.ReleaseStatus("web", 2), state.ReleaseStatus{Version: 2, Failed: true}); err != nil {
		t.Fatal(err)
	}
	orphans, err := s.OrphanFormations(ctx)
	if err != nil || !slices.Equal(orphans, []string{"web"}) {
		t.Fatalf("OrphanFormations = %v, %v; want [web]", orphans, err)
	}
	if ok, err := s.PurgeFormationKeys(ctx, "web2"); ok || err != nil {
		t.Fatalf("PurgeFormationKeys of an existing formation = %v, %v; want false", ok, err)
	}
	if ok, err := s.PurgeFormationKeys(ctx, "web"); !ok || err != nil {
		t.Fatalf("PurgeFormationKeys(web) = %v, %v", ok, err)
	}
	if orphans, err := s.OrphanFormations(ctx); err != nil || len(orphans) != 0 {
		t.Fatalf("OrphanFormations after purge = %v, %v", orphans, err)
	}

	// Created again: empty, and its first release is v1 with no status.
	if err := s.Create(ctx, k.Formation("web"), state.Formation{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	rel, err := s.AppendRelease(ctx, "web", func(prev *state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
		if prev != nil {
			t.Errorf("the re-created formation has release v%d", prev.Version)
		}
		return &state.Release{}, nil, nil, nil
	})
	if err != nil || rel.Version != 1 {
		t.Fatalf("first release of the re-created formation = %+v, %v", rel, err)
	}
	if n := count(k.ReleaseStatuses("web")); n != 0 {
		t.Errorf("the re-created formation has %d release statuses", n)
	}
}

func exists(t *testing.T, ctx context.Context, cli *clientv3.Client, key string) bool {
	t.Helper()
	resp, err := cli.Get(ctx, key, clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count > 0
}

// A write guarded by SameIncarnation does not land in a formation created
// again since.
func TestSameIncarnation(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := state.NewStore(cli, "/t")
	if rev, err := s.Incarnation(ctx, "web"); rev != 0 || err != nil {
		t.Fatalf("Incarnation of a missing formation = %d, %v", rev, err)
	}
	if err := s.Create(ctx, s.Keys.Formation("web"), state.Formation{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	first, err := s.Incarnation(ctx, "web")
	if err != nil || first == 0 {
		t.Fatalf("Incarnation = %d, %v", first, err)
	}
	put := func(rev int64) bool {
		t.Helper()
		ok, err := s.Commit(ctx, []clientv3.Cmp{s.SameIncarnation("web", rev)}, clientv3.OpPut(s.Keys.Build("web", "b1"), "{}"))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !put(first) {
		t.Fatal("a write for the current incarnation was refused")
	}
	if err := s.DestroyFormation(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, s.Keys.Formation("web"), state.Formation{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if put(first) {
		t.Fatal("a write prepared for the destroyed formation landed in the new one")
	}
}

// A release prepared under WithIncarnation (a build that started before its
// formation was destroyed and created again) lands nowhere.
func TestAppendReleaseKeepsToItsIncarnation(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := state.NewStore(cli, "/t")
	appendRel := func(ctx context.Context) (*state.Release, error) {
		return s.AppendRelease(ctx, "web", func(*state.Release) (*state.Release, []clientv3.Cmp, []clientv3.Op, error) {
			return &state.Release{Description: "old owner's build"}, nil, nil, nil
		})
	}
	if err := s.Create(ctx, s.Keys.Formation("web"), state.Formation{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Incarnation(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	pinned := state.WithIncarnation(ctx, "web", rev)
	if rel, err := appendRel(pinned); err != nil || rel.Version != 1 {
		t.Fatalf("release into its own incarnation = %+v, %v", rel, err)
	}
	if err := s.DestroyFormation(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, s.Keys.Formation("web"), state.Formation{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []context.Context{pinned, state.WithIncarnation(ctx, "web", -1)} {
		_, err := appendRel(c)
		if !errors.Is(err, state.ErrNotFound) || !strings.Contains(err.Error(), "destroyed and created again meanwhile") {
			t.Fatalf("release into a re-created formation: %v", err)
		}
	}
	if _, err := s.LatestRelease(ctx, "web"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("the re-created formation has a release: %v", err)
	}
	// Unpinned writers (deisctl) are unaffected.
	if rel, err := appendRel(ctx); err != nil || rel.Version != 1 {
		t.Fatalf("unpinned release = %+v, %v", rel, err)
	}
}
