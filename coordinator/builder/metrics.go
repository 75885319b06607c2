package builder

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	builds   *prometheus.CounterVec
	duration prometheus.Histogram
	running  prometheus.Gauge
	slugSize prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_coordinator_builds_total",
			Help: "Builds by result (succeeded, failed, timeout)."}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_coordinator_build_duration_seconds",
			Help: "Duration of builds, from taking a build slot until the release or the failure.", Buckets: []float64{1, 2, 5, 10, 30, 60, 120, 300, 600, 900}}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "deis_coordinator_builds_running", Help: "Builds holding a build slot."}),
		slugSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_coordinator_slug_size_bytes",
			Help: "Size of built slugs.", Buckets: prometheus.ExponentialBuckets(1<<10, 4, 12)}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.builds, m.duration, m.running, m.slugSize} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("builder: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
