package apiserver

import (
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/streaming/pkg/httpstream"
)

// upgradeRefusedMessage is the message of the Status that answers an upgrade
// request.
const upgradeRefusedMessage = "this server does not serve protocol upgrades: send the request without the Connection: Upgrade and Upgrade headers"

// WithUpgradeRefusal answers every request that asks to switch protocols
// with a 400 BadRequest Status, before the handler it wraps runs.
//
// The kube-apiserver's aggregation layer proxies a request whose Connection
// header names "upgrade" (httpstream.IsUpgradeRequest) on a path of its own:
// it writes the request to this server, reads the answer, and when that is a
// success other than 101 Switching Protocols it tells the caller 503 Service
// Unavailable. A create or delete of agents/share sent that way would enable,
// rotate or disable a link while its caller is told that it failed, and
// would be retried or reported on that belief. An answer of 400 or more is
// relayed to the caller as it is, so refusing here keeps the caller's answer
// and the cluster's state in agreement; sent directly to this server, the
// request is refused the same way.
//
// Nothing this server serves needs an upgrade: agents/share is create, get
// and delete, with no rest.Connecter (exec, attach, port-forward) and no
// watch that could be served over a WebSocket, and the other paths are
// discovery, OpenAPI, health and metrics. So the refusal covers the whole
// server rather than a list of paths, which a new path or a path that routes
// differently from how it reads could slip past. A request that carries an
// Upgrade header without naming it in Connection is refused too: proxies
// differ in which of the two headers they key on.
//
// The filter sits inside authentication and authorization, as the other
// filters of this server do, so that an anonymous or forbidden caller is
// answered 401 or 403 as for any other request and the audit log records
// who asked.
func WithUpgradeRefusal(h http.Handler, s runtime.NegotiatedSerializer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !isUpgrade(req) {
			h.ServeHTTP(w, req)
			return
		}
		gv := schema.GroupVersion{}
		if info, ok := genericapirequest.RequestInfoFrom(req.Context()); ok {
			gv = schema.GroupVersion{Group: info.APIGroup, Version: info.APIVersion}
		}
		responsewriters.ErrorNegotiated(apierrors.NewBadRequest(upgradeRefusedMessage), s, gv, w, req)
	})
}

// isUpgrade tells whether a request asks to switch protocols, by either of
// the headers that ask for it.
func isUpgrade(req *http.Request) bool {
	return httpstream.IsUpgradeRequest(req) || req.Header.Get(httpstream.HeaderUpgrade) != ""
}
