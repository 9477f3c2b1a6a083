package replica

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		enabled bool
		wantErr string
	}{
		{name: "defaults: one replica, nothing shared"},
		{name: "the shipped flags", enabled: true,
			args: []string{"--share-advertise-address=10.0.0.7", "--share-replica-name=kubeopencode-apiserver-0", "--share-lease-namespace=kubeopencode-system"}},
		{name: "an IPv6 pod", enabled: true, args: []string{"--share-advertise-address=fd00::7"}},
		{name: "a host name for an address", enabled: true, args: []string{"--share-advertise-address=pod.local"}, wantErr: "not an IP address"},
		{name: "no name", enabled: true, args: []string{"--share-advertise-address=10.0.0.7", "--share-replica-name="}, wantErr: "--share-replica-name"},
		{name: "a lease too short", enabled: true, args: []string{"--share-advertise-address=10.0.0.7", "--share-lease-duration=2s"}, wantErr: "--share-lease-duration"},
		{name: "a lease in fractions", enabled: true, args: []string{"--share-advertise-address=10.0.0.7", "--share-lease-duration=4500ms"}, wantErr: "--share-lease-duration"},
		{name: "a bad namespace", enabled: true, args: []string{"--share-advertise-address=10.0.0.7", "--share-lease-namespace=Not_A_Namespace"}, wantErr: "--share-lease-namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			o.Name = "host"
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if o.Enabled() != tc.enabled {
				t.Errorf("Enabled() = %v, want %v", o.Enabled(), tc.enabled)
			}
			errs := o.Validate()
			switch {
			case tc.wantErr == "" && len(errs) > 0:
				t.Fatalf("Validate: %v", errs)
			case tc.wantErr != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.wantErr)):
				t.Fatalf("Validate: %v, want one error about %s", errs, tc.wantErr)
			}
		})
	}
	o := NewOptions()
	if o.LeaseDuration != 15*time.Second {
		t.Errorf("default lease duration %s, want 15s", o.LeaseDuration)
	}
	o.Name, o.AdvertiseAddress = "a", "fd00::7"
	if got := o.Identity(8080).String(); got != "a@[fd00::7]:8080" {
		t.Errorf("identity %q", got)
	}
}
