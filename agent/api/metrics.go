package api

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests   *prometheus.CounterVec
	logStreams prometheus.Gauge
	runs       *prometheus.CounterVec
	running    prometheus.Gauge
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_agent_api_requests_total",
			Help: "Requests to the agent API by endpoint and status code (101: a one-off session)."}, []string{"endpoint", "code"}),
		logStreams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "deis_agent_api_log_streams",
			Help: "Log requests being answered, followed or not."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deis_agent_oneoff_runs_total",
			Help: "One-off containers started, by how their session ended (exited, disconnected, error)."}, []string{"result"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "deis_agent_oneoff_running",
			Help: "One-off sessions in progress."}),
	}
	if r == nil {
		return m, nil
	}
	// A server started again on the same registry takes over the collectors.
	var err error
	reg := func(c prometheus.Collector) prometheus.Collector {
		if err != nil {
			return c
		}
		rerr := r.Register(c)
		var are prometheus.AlreadyRegisteredError
		switch {
		case errors.As(rerr, &are):
			return are.ExistingCollector
		case rerr != nil:
			err = fmt.Errorf("api: register metrics: %w", rerr)
		}
		return c
	}
	m.requests = reg(m.requests).(*prometheus.CounterVec)
	m.logStreams = reg(m.logStreams).(prometheus.Gauge)
	m.runs = reg(m.runs).(*prometheus.CounterVec)
	m.running = reg(m.running).(prometheus.Gauge)
	if err != nil {
		return nil, err
	}
	return m, nil
}
