package scheduler

import (
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

type metrics struct {
	passes   prometheus.Counter
	errors   prometheus.Counter
	duration prometheus.Histogram
	nodes    *prometheus.GaugeVec
	rollout  prometheus.Histogram
	failed   prometheus.Counter
	placed   prometheus.Counter
	// planned counts formations planned, full counts full passes, txns
	// the write transactions.
	planned prometheus.Counter
	full    prometheus.Counter
	txns    prometheus.Counter
	// rollbacks counts automatic rollbacks by reason (crash_loop,
	// health_checks, errors).
	rollbacks *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		passes: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_coordinator_reconcile_total", Help: "Scheduler reconcile passes."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_coordinator_reconcile_errors_total", Help: "Scheduler reconcile passes that failed."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_coordinator_reconcile_duration_seconds",
			Help: "Duration of scheduler reconcile passes.", Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5}}),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "deis_coordinator_nodes", Help: "Registered nodes by state (up, lost)."}, []string{"state"}),
		rollout: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_coordinator_rollout_duration_seconds",
			Help:    "Time from a release's creation until every proxy of its formation routes it.",
			Buckets: []float64{.5, .75, 1, 1.5, 2, 5, 10, 20, 30, 60, 120, 300, 600}}),
		placed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_coordinator_placements_total", Help: "Containers placed on nodes by the scheduler."}),
		planned: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_coordinator_formations_planned_total", Help: "Formations planned by scheduler passes (an incremental pass plans only what changed)."}),
		full:    prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_coordinator_full_passes_total", Help: "Scheduler passes that planned every formation."}),
		txns:    prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_coordinator_write_txns_total", Help: "Transactions the scheduler wrote (batched, fenced)."}),
		failed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_coordinator_releases_failed_total", Help: "Releases marked failed because they did not become ready."}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_coordinator_auto_rollbacks_total",
			Help: "Releases rolled back automatically, by reason (crash_loop, health_checks, errors)."}, []string{"reason"}),
	}
	for _, reason := range []string{ReasonCrashLoop, ReasonHealth, ReasonErrors} {
		m.rollbacks.WithLabelValues(reason)
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.passes, m.errors, m.duration, m.nodes, m.rollout, m.failed, m.placed, m.rollbacks, m.planned, m.full, m.txns} {
			if err := r.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
