package agentshare

import (
	"context"
	"net/http"
)

// LinkParameter is the query parameter that names a link on a get or delete
// of agents/share.
const LinkParameter = "link"

type linkKey struct{}

// WithLinkParameter carries the link query parameter of a DELETE into the
// request's context, where Delete finds it.
//
// k8s.io/apiserver hands a rest.GracefulDeleter only the DeleteOptions, which
// it decodes from the body or the query into meta/v1 types: there is no
// delete with options of the resource's own, as rest.GetterWithOptions is
// for get. The filter sits at the inner end of the handler chain, after
// authentication and authorization, and changes nothing else of the request:
// the SubjectAccessReview is the same for every link, as RBAC has no notion
// of one.
func WithLinkParameter(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodDelete {
			if values, ok := req.URL.Query()[LinkParameter]; ok && len(values) > 0 {
				req = req.WithContext(withLink(req.Context(), values[0]))
			}
		}
		h.ServeHTTP(w, req)
	})
}

func withLink(ctx context.Context, link string) context.Context {
	return context.WithValue(ctx, linkKey{}, link)
}

// LinkFrom returns the link a request names, "" for the default link.
func LinkFrom(ctx context.Context) string {
	link, _ := ctx.Value(linkKey{}).(string)
	return link
}
