package jointoken

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/testing/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func setup(t *testing.T) (*Store, *clientv3.Client, context.Context) {
	t.Helper()
	_, c := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return New(c, "/deis"), c, ctx
}

func TestCreateAndRedeemOnce(t *testing.T) {
	s, c, ctx := setup(t)
	tok, err := s.Create(ctx, "node-3", map[string]string{"role": "runtime,proxy", "zone": "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(tok.Expires) > DefaultTTL || time.Until(tok.Expires) < DefaultTTL-time.Minute {
		t.Errorf("expires %s, want in %s", tok.Expires, DefaultTTL)
	}
	// etcd holds a hash, never the secret.
	resp, err := c.Get(ctx, "/deis/join/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("join keys: %v %v", resp, err)
	}
	_, secret, _ := Parse(tok.Secret)
	if strings.Contains(string(resp.Kvs[0].Value), secret) {
		t.Fatal("the secret is stored in etcd")
	}
	if string(resp.Kvs[0].Key) != s.Key(tok.ID) {
		t.Fatalf("key %s", resp.Kvs[0].Key)
	}
	// The key is on a lease that outlives the token by Retention.
	ttl, err := c.TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64((DefaultTTL + Retention) / time.Second); ttl.TTL > want || ttl.TTL < want-60 {
		t.Errorf("lease TTL %d, want about %d", ttl.TTL, want)
	}
	// What one reads in etcd does not join.
	if _, err := s.Redeem(ctx, tok.ID+"."+strings.Repeat("A", 43), ""); !errors.Is(err, ErrUnknown) {
		t.Fatalf("forged secret: %v", err)
	}

	cl, err := s.Redeem(ctx, " "+tok.String()+"\n", "node-3")
	if err != nil {
		t.Fatal(err)
	}
	if cl.Node != "node-3" || cl.Labels["role"] != "runtime,proxy" || cl.Labels["zone"] != "a" {
		t.Fatalf("claim %+v", cl)
	}
	_, err = s.Redeem(ctx, tok.String(), "")
	if !errors.Is(err, ErrUsed) || !strings.Contains(err.Error(), "deisctl nodes:add node-3") {
		t.Fatalf("reuse: %v", err)
	}
	// The used token keeps its lease.
	after, _ := c.Get(ctx, s.Key(tok.ID))
	if after.Kvs[0].Lease != resp.Kvs[0].Lease {
		t.Error("redeeming dropped the token's lease")
	}
}

func TestRefusedTokensChangeNothing(t *testing.T) {
	s, c, ctx := setup(t)
	tok, err := s.Create(ctx, "web-1", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	rev := func() int64 {
		r, err := c.Get(ctx, s.Key(tok.ID))
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("token key: %v", err)
		}
		return r.Kvs[0].ModRevision
	}
	before := rev()

	for _, bad := range []string{"", "nonsense", tok.ID, tok.ID + ".short", "XYZ" + tok.Secret[3:]} {
		if _, err := s.Redeem(ctx, bad, ""); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "copy it whole") {
			t.Errorf("malformed %q: %v", bad, err)
		}
	}
	if _, err := s.Redeem(ctx, "0123456789abcdef."+strings.Repeat("b", 43), "web-1"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "nodes:add web-1") {
		t.Errorf("unknown: %v", err)
	}
	if _, err := s.Redeem(ctx, tok.String(), "web-2"); !errors.Is(err, ErrWrongNode) || !strings.Contains(err.Error(), `for node "web-1", not "web-2"`) {
		t.Errorf("wrong node: %v", err)
	}
	s.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if _, err := s.Redeem(ctx, tok.String(), ""); !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("expired: %v", err)
	}
	s.Now = nil
	if rev() != before {
		t.Fatal("a refused redeem changed the token")
	}
	// Still good for the right node before it expires.
	if _, err := s.Redeem(ctx, tok.String(), "web-1"); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentRedeemOneWins(t *testing.T) {
	s, _, ctx := setup(t)
	tok, err := s.Create(ctx, "n1", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, used := 0, 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Redeem(ctx, tok.String(), "")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrUsed):
				used++
			default:
				t.Errorf("redeem: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || used != 7 {
		t.Fatalf("%d redeems won and %d were refused as used, want 1 and 7", wins, used)
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	s, c, ctx := setup(t)
	for name, f := range map[string]func() error{
		"bad node":  func() error { _, err := s.Create(ctx, "Node_1", nil, 0); return err },
		"bad label": func() error { _, err := s.Create(ctx, "n", map[string]string{"Role X": "y"}, 0); return err },
		"bad value": func() error { _, err := s.Create(ctx, "n", map[string]string{"role": "a=b"}, 0); return err },
		"too long":  func() error { _, err := s.Create(ctx, "n", nil, 48*time.Hour); return err },
		"negative":  func() error { _, err := s.Create(ctx, "n", nil, -time.Minute); return err },
	} {
		if err := f(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	r, _ := c.Get(ctx, s.Prefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if r.Count != 0 {
		t.Fatalf("bad input wrote %d keys", r.Count)
	}
}
