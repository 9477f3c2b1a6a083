// Package validation holds the rules of an Agent's share fields that every
// part checks the same way: the API server's subresource, the controller, the
// listener and the CLI. It depends on nothing of this project outside
// pkg/apis, so that importing it brings no client or controller library.
package validation

import (
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

const (
	// MaxAllowedIPs bounds an allowedIPs list, as the Agent CRD does.
	MaxAllowedIPs = 64
	// MaxUses bounds maxUses, as the Agent CRD does.
	MaxUses = 1000
	// MaxViewers bounds maxViewers, as the Agent CRD does.
	MaxViewers = 1000
	// MaxLinks bounds the named links of an Agent, as the Agent CRD does.
	MaxLinks = 16
	// MaxLinkNameLength bounds a link's name: a DNS label. With the Agent's
	// name (at most 63 characters) the Secret name {agent}-share-{link} then
	// stays well within the 253 characters of an object name.
	MaxLinkNameLength = validation.DNS1123LabelMaxLength
)

// ParseIPOrCIDR parses an allowed address: a CIDR range such as 10.0.0.0/8, or
// a single address such as 192.168.1.7 or 2001:db8::1, which stands for a
// range of one. IPv4-mapped IPv6 addresses are taken as IPv4.
func ParseIPOrCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not a CIDR range: %q", s)
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("a zone is not allowed: %q", s)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("not an IP address or CIDR range: %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ValidateAllowedIPs checks a list of CIDR ranges and single addresses.
func ValidateAllowedIPs(list []string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(list) > MaxAllowedIPs {
		errs = append(errs, field.TooMany(path, len(list), MaxAllowedIPs))
		return errs
	}
	seen := sets.New[string]()
	for i, s := range list {
		if _, err := ParseIPOrCIDR(s); err != nil {
			errs = append(errs, field.Invalid(path.Index(i), s, "must be an IP address or a CIDR range, such as 10.0.0.0/8"))
			continue
		}
		if seen.Has(s) {
			errs = append(errs, field.Duplicate(path.Index(i), s))
		}
		seen.Insert(s)
	}
	return errs
}

// ValidateLinkName checks the name of a named link: a DNS label, so that it
// fits a label value and the name of the link's Secret. An empty name is the
// default link and is not checked here.
func ValidateLinkName(name string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(name) {
		errs = append(errs, field.Invalid(path, name, "must be the name of a link: "+msg))
	}
	return errs
}
