package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of an Agent.
const (
	// ConditionReady is True when the Agent's Deployment has an available pod.
	ConditionReady = "Ready"
	// ConditionShareReady is True when the Agent's share link gives access.
	ConditionShareReady = "ShareReady"
)

// Agent runs a coding assistant in the cluster and may share its terminal
// through a link.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=kubeopencode
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Share",type=boolean,JSONPath=`.status.share.active`
// +kubebuilder:printcolumn:name="Expires",type=string,format=date-time,JSONPath=`.status.share.expiresAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be no more than 63 characters: it is the value of the kubeopencode.io/agent label of the Agent's pods"
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type Agent struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired state of the Agent.
	Spec AgentSpec `json:"spec"`
	// Status is the observed state of the Agent.
	// +optional
	Status AgentStatus `json:"status,omitempty"`
}

// AgentSpec is the desired state of an Agent.
type AgentSpec struct {
	// Image is the container image of the Agent's main container.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^\S+$`
	Image string `json:"image"`
	// Command overrides the image's entrypoint.
	// +optional
	Command []string `json:"command,omitempty"`
	// Args are the arguments to the entrypoint.
	// +optional
	Args []string `json:"args,omitempty"`
	// Env holds environment variables of the main container.
	// +optional
	// +listType=map
	// +listMapKey=name
	Env []corev1.EnvVar `json:"env,omitempty"`
	// Resources are the compute resources of the main container.
	// +optional
	// +nullable
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// WorkingDir is the working directory of the main container.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	WorkingDir string `json:"workingDir,omitempty"`
	// Terminal configures the sessions opened through the share link.
	// +optional
	Terminal *TerminalSpec `json:"terminal,omitempty"`
	// Share configures the Agent's share link.
	// +optional
	Share *ShareSpec `json:"share,omitempty"`
}

// TerminalSpec configures the terminal sessions of an Agent.
type TerminalSpec struct {
	// Command is what a share session runs in the main container. The default
	// is a login shell that falls back to sh.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Command []string `json:"command,omitempty"`
}

// ShareSpec configures the share links of an Agent: the default link, which
// the fields of ShareLinkSpec inline configure, and the named links beside it.
// Whoever holds a link has terminal access to the Agent's pod.
type ShareSpec struct {
	// Enabled turns the default share link on. Turning it off deletes its
	// token at once.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// ShareLinkSpec configures the default link.
	ShareLinkSpec `json:",inline"`
	// Links are named links beside the default one that the fields above
	// configure. Each has its own token, in the Secret {agent}-share-{name},
	// and its own mode, expiry, allowed addresses and limits; each is
	// enabled while it is listed, whether or not the default link is.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Links []NamedShareLink `json:"links,omitempty"`
}

// ShareLinkSpec configures one share link, the default one or a named one.
type ShareLinkSpec struct {
	// ExpiresAt is the time after which the link stops working.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// AllowedIPs are the client addresses that may use the link, as CIDR ranges
	// or single IP addresses. Empty allows every address.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	AllowedIPs []IPOrCIDR `json:"allowedIPs,omitempty"`
	// MaxUses, when set, is how many terminal connections the link opens
	// before it stops working; 1 makes a one-time link. Fetching the page,
	// as link previews do, uses nothing; rotating the token starts the count
	// again.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxUses *int32 `json:"maxUses,omitempty"`
	// Mode is what the holder of the link may do: edit (the default) types
	// into the terminal, view only watches it. The share listener drops the
	// input of a view link.
	// +optional
	Mode ShareMode `json:"mode,omitempty"`
	// MaxViewers, when set, is how many pages may have the link's terminal
	// open at once; more are refused.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxViewers *int32 `json:"maxViewers,omitempty"`
}

// ShareMode is what the holder of a share link may do in the terminal.
//
// +kubebuilder:validation:Enum=edit;view
type ShareMode string

const (
	// ShareModeEdit lets the holder type into the terminal. It is the
	// default.
	ShareModeEdit ShareMode = "edit"
	// ShareModeView lets the holder watch the terminal, never type into it.
	ShareModeView ShareMode = "view"
)

// NamedShareLink is a named share link of an Agent.
type NamedShareLink struct {
	// Name names the link: a DNS label of at most 63 characters. Its token
	// is kept in the Secret {agent}-share-{name}.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// ShareLinkSpec configures the link.
	ShareLinkSpec `json:",inline"`
}

// IPOrCIDR is an IP address such as 192.168.1.7 or a CIDR range such as
// 10.0.0.0/8.
//
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:XValidation:rule="isIP(self) || isCIDR(self)",message="must be an IP address or a CIDR range"
type IPOrCIDR string

// AgentStatus is the observed state of an Agent.
type AgentStatus struct {
	// ObservedGeneration is the generation of the spec the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions are Ready and ShareReady.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Share is the observed state of the share link.
	// +optional
	Share *ShareStatus `json:"share,omitempty"`
}

// ShareStatus is the observed state of an Agent's share link. It never holds
// the token: reading an Agent must not grant terminal access.
type ShareStatus struct {
	// SecretName is the Secret that holds the token.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// Active is true while the link gives access.
	Active bool `json:"active"`
	// ExpiresAt is the time after which the link stops working.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// URL is the public address under which share links are served, when the
	// operator configured one. The full link adds the token, which only the
	// agents/share subresource returns.
	// +optional
	URL string `json:"url,omitempty"`
	// Mode is the default link's mode, edit or view, while it is enabled.
	// +optional
	Mode ShareMode `json:"mode,omitempty"`
	// Viewers is how many pages have the default link's terminal open, as
	// the share listener last reported it.
	// +optional
	Viewers int32 `json:"viewers,omitempty"`
	// Links is the observed state of each named link of spec.share.links.
	// +optional
	// +listType=map
	// +listMapKey=name
	Links []LinkStatus `json:"links,omitempty"`
}

// LinkStatus is the observed state of a named share link. Like ShareStatus,
// it never holds the token.
type LinkStatus struct {
	// Name is the link's name.
	Name string `json:"name"`
	// Active is true while the link gives access.
	Active bool `json:"active"`
	// Reason says why the link is or is not active: Active, Expired,
	// AgentNotReady, UsedUp or SecretConflict.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Mode is edit or view.
	// +optional
	Mode ShareMode `json:"mode,omitempty"`
	// ExpiresAt is the time after which the link stops working.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// SecretName is the Secret that holds the link's token.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// Viewers is how many pages have the link's terminal open.
	// +optional
	Viewers int32 `json:"viewers,omitempty"`
}

// AgentList is a list of Agents.
//
// +kubebuilder:object:root=true
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type AgentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the Agents.
	Items []Agent `json:"items"`
}
