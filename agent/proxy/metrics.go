package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reloads        prometheus.Counter
	reloadFailures prometheus.Counter
	reloadDuration prometheus.Histogram
	formations     prometheus.Gauge
	checkFailures  prometheus.Counter
	routeUpdates   prometheus.Counter
	routeFailures  prometheus.Counter
	certUpdates    prometheus.Counter
	certFailures   prometheus.Counter
	routeApply     prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reloads: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_proxy_reloads_total",
			Help: "Attempts to make nginx serve a new config (reloads and starts); routing changes need none."}),
		reloadFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_proxy_reload_failures_total",
			Help: "Reloads and starts after which nginx did not serve the new config."}),
		reloadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_proxy_reload_duration_seconds",
			Help:    "Time from signalling (or starting) nginx until its control server answers the new config.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		formations: prometheus.NewGauge(prometheus.GaugeOpts{Name: "deis_proxy_formations",
			Help: "Formations in the config nginx serves."}),
		checkFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_proxy_config_check_failures_total",
			Help: "Rendered configs that nginx -t rejected; the last good config kept serving."}),
		routeUpdates: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_proxy_route_updates_total",
			Help: "Routing changes pushed to the running nginx, which takes them without a reload."}),
		routeFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_proxy_route_update_failures_total",
			Help: "Routing changes the running nginx did not take."}),
		certUpdates: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_proxy_certificate_updates_total",
			Help: "Certificate changes pushed to the running nginx, which takes them without a reload."}),
		certFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "deis_proxy_certificate_update_failures_total",
			Help: "Certificate changes the running nginx did not take."}),
		routeApply: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deis_proxy_route_apply_seconds",
			Help:    "Time to push a routing change to the running nginx (PUT on its control socket).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.reloads, m.reloadFailures, m.reloadDuration, m.formations, m.checkFailures, m.routeUpdates, m.routeFailures, m.certUpdates, m.certFailures, m.routeApply} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("proxy: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
