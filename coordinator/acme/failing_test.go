package acme_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/deis/deis/coordinator/acme"
	"github.com/deis/deis/pkg/state"
	"github.com/deis/deis/testing/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// An ACME server that cannot be reached fails the formation's order: it
// counts in deis_acme_failing_formations (the alert DeisACMEFailing) until
// the formation no longer wants automatic certificates. Real etcd; the
// directory is a closed port.
func TestUnreachableServerCountsAsFailing(t *testing.T) {
	_, cli := etcdtest.Start(t)
	store := state.NewStore(cli, "/t")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	metrics, err := acme.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	m, err := acme.New(acme.Config{Store: store, Watcher: cli, Directory: "http://" + closed + "/dir",
		BaseDomain: "example.com", Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	form := state.Formation{Name: "web", HTTPS: &state.HTTPS{Auto: true}}
	if err := store.Put(ctx, store.Keys.Formation("web"), form); err != nil {
		t.Fatal(err)
	}
	if err := m.Pass(ctx); err != nil {
		t.Fatalf("a pass with an unreachable ACME server: %v (the formation's order fails, not the pass)", err)
	}
	if v := value(t, metrics.Failing); v != 1 {
		t.Errorf("deis_acme_failing_formations = %v after the order failed, want 1", v)
	}
	if v := value(t, metrics.Orders.WithLabelValues("failed")); v != 1 {
		t.Errorf("deis_acme_orders_total{result=failed} = %v, want 1", v)
	}
	var st state.ACMEStatus
	if _, err := store.Get(ctx, store.Keys.ACMEStatus("web"), &st); err != nil || st.Error == "" {
		t.Errorf("the formation's ACME status does not tell the failure: %+v %v", st, err)
	}

	form.HTTPS.Auto = false
	if err := store.Put(ctx, store.Keys.Formation("web"), form); err != nil {
		t.Fatal(err)
	}
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if v := value(t, metrics.Failing); v != 0 {
		t.Errorf("deis_acme_failing_formations = %v after certs:auto off, want 0", v)
	}
}

// value is the value of a gauge or counter.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}
