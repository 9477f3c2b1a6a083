package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

// AgentShare is the request and response of the agents/share subresource.
// Its name and namespace are those of the Agent.
//
// Creating it enables the Agent's share link (an enabled link keeps its token
// unless Rotate is set), getting it shows the link, and deleting it disables
// the link. The returned token grants terminal access to the Agent's pod.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type AgentShare struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the requested share link.
	// +optional
	Spec AgentShareSpec `json:"spec,omitempty"`
	// Status is the share link as it now is.
	// +optional
	Status AgentShareStatus `json:"status,omitempty"`
}

// AgentShareSpec is the requested share link. ExpiresAt and ExpiresIn are
// mutually exclusive; with neither, the link does not expire unless the
// server caps the duration of links.
type AgentShareSpec struct {
	// ExpiresAt is the time after which the link stops working.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// ExpiresIn is how long from now the link works, such as "24h".
	// +optional
	ExpiresIn *metav1.Duration `json:"expiresIn,omitempty"`
	// AllowedIPs are the client addresses that may use the link, as CIDR ranges
	// or single IP addresses. Empty allows every address.
	// +optional
	// +listType=set
	AllowedIPs []string `json:"allowedIPs,omitempty"`
	// Rotate replaces the token of an enabled link, which ends the sessions
	// opened with the old one.
	// +optional
	Rotate bool `json:"rotate,omitempty"`
	// MaxUses, when set, is how many terminal connections the link opens
	// before it stops working; 1 makes a one-time link.
	// +optional
	MaxUses *int32 `json:"maxUses,omitempty"`
	// Link names the link to enable or change: empty for the Agent's
	// default link, or a DNS label for a named link of its own, with its own
	// token.
	// +optional
	Link string `json:"link,omitempty"`
	// Mode is "edit" (the default), whose holder types into the terminal,
	// or "view", whose holder only watches it.
	// +optional
	Mode kubeopencodev1alpha1.ShareMode `json:"mode,omitempty"`
	// MaxViewers, when set, is how many pages may have the link's terminal
	// open at once.
	// +optional
	MaxViewers *int32 `json:"maxViewers,omitempty"`
}

// AgentShareStatus is the share link as it now is.
type AgentShareStatus struct {
	// Active is true while the link gives access.
	Active bool `json:"active"`
	// Reason says why the link is or is not active, as in the Agent's
	// ShareReady condition: Active, Disabled, Expired or AgentNotReady.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Token is the link's credential. It is set only while sharing is enabled.
	// +optional
	Token string `json:"token,omitempty"`
	// Path is the link's path on the share server, /s/<token>.
	// +optional
	Path string `json:"path,omitempty"`
	// URL is the full link, when the server knows its public address.
	// +optional
	URL string `json:"url,omitempty"`
	// ExpiresAt is the time after which the link stops working.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// AllowedIPs are the client addresses that may use the link.
	// +optional
	// +listType=set
	AllowedIPs []string `json:"allowedIPs,omitempty"`
	// MaxUses is how many terminal connections the link opens in all.
	// +optional
	MaxUses *int32 `json:"maxUses,omitempty"`
	// Uses is how many terminal connections the link has opened.
	// +optional
	Uses int32 `json:"uses,omitempty"`
	// Link is the name of the link shown, empty for the default link.
	// +optional
	Link string `json:"link,omitempty"`
	// Mode is the link's mode, edit or view, while it is enabled.
	// +optional
	Mode kubeopencodev1alpha1.ShareMode `json:"mode,omitempty"`
	// MaxViewers is how many pages may have the link's terminal open at
	// once.
	// +optional
	MaxViewers *int32 `json:"maxViewers,omitempty"`
	// Viewers is how many pages have the link's terminal open, as the Agent's
	// status last reported it.
	// +optional
	Viewers int32 `json:"viewers,omitempty"`
	// Links are the names of the Agent's named links. Only the answer about
	// the default link lists them; each is shown with the link query
	// parameter.
	// +optional
	// +listType=set
	Links []string `json:"links,omitempty"`
}

// AgentShareOptions are the query parameters of a get or delete on
// agents/share.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type AgentShareOptions struct {
	metav1.TypeMeta `json:",inline"`

	// Link names the link to show or disable; empty means the default link.
	// +optional
	Link string `json:"link,omitempty"`
}
