package replica

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

const metricsSubsystem = "kubeopencode_share"

var (
	forwardsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "forwarded_pages_total",
		Help:           "Pages forwarded to the replica that owns their session, by result: upgraded, refused by the owner, or owner unreachable.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	// ForwardedRefusalsTotal counts requests that carried a forwarded
	// client address without a proof that holds.
	ForwardedRefusalsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      metricsSubsystem,
		Name:           "forwarded_client_refusals_total",
		Help:           "Requests refused because they carried a forwarded client address without a valid proof from another replica, by reason.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})

	registerMetricsOnce sync.Once
)

// RegisterMetrics registers the metrics of forwarding with the legacy
// registry that the API server's /metrics serves.
func RegisterMetrics() {
	registerMetricsOnce.Do(func() {
		legacyregistry.MustRegister(forwardsTotal, ForwardedRefusalsTotal)
	})
}
