package builder

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	builds        *prometheus.CounterVec
	duration      prometheus.Histogram
	running       prometheus.Gauge
	slugSize      prometheus.Histogram
	releasePhases *prometheus.CounterVec
	gcRuns        *prometheus.CounterVec
	gcRemoved     *prometheus.CounterVec
	gcFreed       prometheus.Counter
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
		releasePhases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_coordinator_release_phases_total",
			Help: "Release commands run before releases, by result (succeeded, failed)."}, []string{"result"}),
		gcRuns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_coordinator_gc_runs_total",
			Help: "Garbage collections of slugs and app images, by result (done, deferred, failed)."}, []string{"result"}),
		gcRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_coordinator_gc_removed_total",
			Help: "Slugs, app images and build caches removed by garbage collection."}, []string{"kind"}),
		gcFreed: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_coordinator_gc_freed_bytes_total",
			Help: "Bytes of slugs removed by garbage collection."}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.builds, m.duration, m.running, m.slugSize, m.releasePhases, m.gcRuns, m.gcRemoved, m.gcFreed} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("builder: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
