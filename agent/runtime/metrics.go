package runtime

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reconciles      prometheus.Counter
	reconcileErrors prometheus.Counter
	reconcileTime   prometheus.Histogram
	containers      *prometheus.GaugeVec
	slugBytes       prometheus.Counter
	slugSeconds     prometheus.Histogram
	slugFailures    prometheus.Counter
	imageLoads      *prometheus.CounterVec
	startTime       prometheus.Histogram
	readyTime       prometheus.Histogram
	spares          prometheus.Gauge
	starts          *prometheus.CounterVec
}

// rolloutBuckets are the buckets of the phases of a rollout, in seconds.
var rolloutBuckets = []float64{.01, .025, .05, .1, .15, .2, .3, .5, .75, 1, 2.5, 5, 10}

// containerStates are the values of the state label of deis_agent_containers.
var containerStates = []string{"desired", "starting", "running", "ready", "exited", "stopping"}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_agent_reconcile_total",
			Help: "Reconcile passes of the runtime role."}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_agent_reconcile_errors_total",
			Help: "Reconcile passes that could not read the databag or list the node's containers."}),
		reconcileTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_agent_reconcile_duration_seconds",
			Help:    "Time of one reconcile pass (reading, planning, dispatching; starts and stops run apart).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		containers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "deis_agent_containers",
			Help: "Containers of this node: desired by the databag, and by the state last reported."}, []string{"state"}),
		slugBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_agent_slug_download_bytes_total",
			Help: "Bytes of slugs and image archives downloaded."}),
		slugSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_agent_slug_download_seconds",
			Help:    "Time to download and verify one slug or image archive.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}}),
		slugFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_agent_slug_download_failures_total",
			Help: "Slug or image archive downloads, extractions and loads that failed (unreachable, wrong sha256, bad tarball)."}),
		imageLoads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_agent_image_loads_total",
			Help: "Image archives (Dockerfile builds) loaded into the engine, by result (loaded, failed)."}, []string{"result"}),
		startTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_agent_container_start_seconds",
			Help:    "Time to create and start one container (the slug or image already on the node).",
			Buckets: rolloutBuckets}),
		readyTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_agent_health_ready_seconds",
			Help:    "Time from a container's start until its first passed probe made it ready.",
			Buckets: rolloutBuckets}),
		spares: prometheus.NewGauge(prometheus.GaugeOpts{Name: "deis_agent_spare_sandboxes",
			Help: "Spare network sandboxes started and waiting for a container (--spare-sandboxes)."}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_agent_container_starts_total",
			Help: "Containers started, by network: sandbox (joined a spare) or own (no spare was left, or the process has no port or another one)."}, []string{"network"}),
	}
	if r == nil {
		return m, nil
	}
	// A runtime started again on the same registry (an agent restarting its
	// role in-process, a test) takes over the collectors already there.
	register := func(c prometheus.Collector) (prometheus.Collector, error) {
		err := r.Register(c)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector, nil
		}
		if err != nil {
			return nil, fmt.Errorf("runtime: register metrics: %w", err)
		}
		return c, nil
	}
	var err error
	reg := func(c prometheus.Collector) prometheus.Collector {
		if err != nil {
			return c
		}
		var got prometheus.Collector
		got, err = register(c)
		if err != nil {
			return c
		}
		return got
	}
	m.reconciles = reg(m.reconciles).(prometheus.Counter)
	m.reconcileErrors = reg(m.reconcileErrors).(prometheus.Counter)
	m.reconcileTime = reg(m.reconcileTime).(prometheus.Histogram)
	m.containers = reg(m.containers).(*prometheus.GaugeVec)
	m.slugBytes = reg(m.slugBytes).(prometheus.Counter)
	m.slugSeconds = reg(m.slugSeconds).(prometheus.Histogram)
	m.slugFailures = reg(m.slugFailures).(prometheus.Counter)
	m.imageLoads = reg(m.imageLoads).(*prometheus.CounterVec)
	m.startTime = reg(m.startTime).(prometheus.Histogram)
	m.readyTime = reg(m.readyTime).(prometheus.Histogram)
	m.spares = reg(m.spares).(prometheus.Gauge)
	m.starts = reg(m.starts).(*prometheus.CounterVec)
	if err != nil {
		return nil, err
	}
	return m, nil
}
