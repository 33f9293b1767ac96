package http

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics exposes the runtime and the server in the Prometheus format.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	turns    *prometheus.HistogramVec
	commits  prometheus.Histogram
	batch    prometheus.Histogram
	sockets  prometheus.Gauge
}

// NewMetrics registers the collectors for rt and installs the runtime's
// hooks. Call it before rt.Open.
func NewMetrics(rt *cairn.Runtime) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cairn_http_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"route", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cairn_http_request_duration_seconds", Help: "HTTP request latency by route (to the end of the handler; streams last longer).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"route"})
	m.turns = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cairn_turn_duration_seconds", Help: "Time a turn held its object, by namespace.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10),
	}, []string{"namespace"})
	m.commits = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cairn_commit_duration_seconds", Help: "Time from a group's local commit to durability.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10),
	})
	m.batch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cairn_commit_batch_turns", Help: "Turns covered by one commit (group commit).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
	m.reg.MustRegister(m.requests, m.latency, m.turns, m.commits, m.batch)
	var turnObs sync.Map // namespace -> prometheus.Observer
	rt.Hooks.Turn = func(ns string, d time.Duration, err error) {
		o, ok := turnObs.Load(ns)
		if !ok {
			o, _ = turnObs.LoadOrStore(ns, m.turns.WithLabelValues(ns))
		}
		o.(prometheus.Observer).Observe(d.Seconds())
	}
	rt.Hooks.Commit = func(turns int, d time.Duration) {
		m.commits.Observe(d.Seconds())
		m.batch.Observe(float64(turns))
	}
	stat := func(name, help string, counter bool, f func(cairn.Stats) int64) {
		fn := func() float64 { return float64(f(rt.Stats())) }
		if counter {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, fn))
		} else {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
		}
	}
	stat("cairn_active_objects", "Objects in memory.", false, func(s cairn.Stats) int64 { return s.Active })
	stat("cairn_turns_total", "Turns run.", true, func(s cairn.Stats) int64 { return s.Turns })
	stat("cairn_turns_failed_total", "Turns that returned an error or panicked.", true, func(s cairn.Stats) int64 { return s.TurnsFailed })
	stat("cairn_commits_total", "Group commits.", true, func(s cairn.Stats) int64 { return s.Commits })
	stat("cairn_evictions_total", "Objects evicted from memory.", true, func(s cairn.Stats) int64 { return s.Evictions })
	stat("cairn_activations_total", "Objects activated.", true, func(s cairn.Stats) int64 { return s.Activations })
	stat("cairn_resets_total", "Instances discarded after a panic or failed commit.", true, func(s cairn.Stats) int64 { return s.Resets })
	stat("cairn_alarms_fired_total", "Alarm handler calls.", true, func(s cairn.Stats) int64 { return s.AlarmsFired })
	stat("cairn_alarms_failed_total", "Alarm handler calls that failed.", true, func(s cairn.Stats) int64 { return s.AlarmsFailed })
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cairn_websockets", Help: "Open WebSockets.",
	}, func() float64 { return float64(rt.Sockets()) }))
	m.reg.MustRegister(&storageCollector{rt: rt, desc: prometheus.NewDesc("cairn_storage_bytes",
		"Bytes stored by the objects of a namespace (as of the last usage flush).", []string{"namespace"}, nil),
		objDesc: prometheus.NewDesc("cairn_objects", "Objects with storage, by namespace.", []string{"namespace"}, nil)})
	return m
}

// Register adds collectors of other packages (the agents' storage) to
// the metrics served.
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

type storageCollector struct {
	rt            *cairn.Runtime
	desc, objDesc *prometheus.Desc
}

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.objDesc }

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	nss, err := c.rt.Engine().Namespaces(context.Background())
	if err != nil {
		return
	}
	for _, ns := range nss {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(ns.Bytes), ns.Name)
		ch <- prometheus.MustNewConstMetric(c.objDesc, prometheus.GaugeValue, float64(ns.Objects), ns.Name)
	}
}

// statusWriter records the status code of a response.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// instrument counts and times a route.
func (s *Server) instrument(route string, h http.Handler) http.Handler {
	var latency prometheus.Observer
	if s.Metrics != nil {
		latency = s.Metrics.latency.WithLabelValues(route)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Metrics == nil {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		code := sw.code
		if code == 0 {
			code = http.StatusSwitchingProtocols // hijacked
		}
		s.Metrics.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		latency.Observe(time.Since(start).Seconds())
	})
}
