package v1alpha1

import (
	"net/url"

	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
)

// RegisterConversions adds the conversion of query parameters into
// AgentShareOptions, which the API server's parameter codec uses to decode
// the options of a get, as the core group does for PodLogOptions.
func RegisterConversions(s *runtime.Scheme) error {
	return s.AddConversionFunc((*url.Values)(nil), (*AgentShareOptions)(nil), func(a, b interface{}, scope conversion.Scope) error {
		return Convert_url_Values_To_v1alpha1_AgentShareOptions(a.(*url.Values), b.(*AgentShareOptions), scope)
	})
}

// Convert_url_Values_To_v1alpha1_AgentShareOptions reads the link query
// parameter. Other parameters are left to the options types that own them.
//
//nolint:revive // The name follows the convention of conversion functions.
func Convert_url_Values_To_v1alpha1_AgentShareOptions(in *url.Values, out *AgentShareOptions, _ conversion.Scope) error {
	out.Link = ""
	if values, ok := (*in)["link"]; ok && len(values) > 0 {
		out.Link = values[0]
	}
	return nil
}
