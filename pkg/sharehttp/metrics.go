package sharehttp

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

const metricsSubsystem = "kubeopencode_share"

var (
	activeSessions = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem:      metricsSubsystem,
		Name:           "active_sessions",
		Help:           "Terminal sessions open now.",
		StabilityLevel: metrics.ALPHA,
	})
	sessionsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "sessions_total",
		Help:           "Terminal sessions ended, by outcome.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"outcome"})
	refusalsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "refusals_total",
		Help:           "Requests refused on the public listener, by reason.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	bytesTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "bytes_total",
		Help:           "Terminal bytes carried, by direction: in is typed by clients, out is shown to them.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"direction"})

	registerMetricsOnce sync.Once
)

// RegisterMetrics registers the listener's metrics with the legacy registry
// that the API server's /metrics serves.
func RegisterMetrics() {
	registerMetricsOnce.Do(func() {
		legacyregistry.MustRegister(activeSessions, sessionsTotal, refusalsTotal, bytesTotal)
	})
}
