package etcdtest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/deis/deis/pkg/embedetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a free TCP port on 127.0.0.1, never the same one twice in
// one test process.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !given[port] {
			given[port] = true
			return port
		}
	}
}

// Start runs an embedded etcd for the test and returns its client URL and a
// client; both stop when the test ends.
func Start(t testing.TB) (string, *clientv3.Client) {
	t.Helper()
	cu := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	pu := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	srv, err := embedetcd.Start(t.TempDir(), cu, pu)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{cu}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	return cu, c
}
