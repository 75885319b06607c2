package gitserver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	conns       prometheus.Gauge
	closed      *prometheus.CounterVec
	pushRefused *prometheus.CounterVec
}

// newMetrics makes the server's metrics and registers them on r (if any).
func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{Name: "deis_coordinator_ssh_connections",
			Help: "SSH connections held open, authenticated or not."}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_coordinator_ssh_connections_closed_total",
			Help: "SSH connections closed by a limit: max_conns, max_conns_per_ip (refused at once), auth_timeout (not authenticated in time)."},
			[]string{"reason"}),
		pushRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_coordinator_git_pushes_refused_total",
			Help: "git pushes refused by the SSH server, by reason (too_large)."}, []string{"reason"}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.conns, m.closed, m.pushRefused} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("gitserver: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
