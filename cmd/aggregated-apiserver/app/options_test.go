package app

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "defaults"},
		{name: "cap and URL", args: []string{"--max-share-duration=168h", "--public-url=https://share.example.com/base"}},
		{name: "negative cap", args: []string{"--max-share-duration=-1h"}, want: "--max-share-duration"},
		{name: "URL with a query", args: []string{"--public-url=https://share.example.com/?a=b"}, want: "--public-url"},
		{name: "URL without scheme", args: []string{"--public-url=share.example.com"}, want: "--public-url"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			cmd := NewServerCommand(o)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	o := NewOptions()
	if o.SecureServing.BindPort != DefaultSecurePort || o.SecureServing.ServerCert.CertDirectory != "" {
		t.Errorf("port %d, cert directory %q", o.SecureServing.BindPort, o.SecureServing.ServerCert.CertDirectory)
	}
	cmd := NewServerCommand(o)
	for _, name := range []string{"kubeconfig", "public-url", "max-share-duration", "secure-port", "bind-address", "tls-cert-file",
		"authentication-kubeconfig", "authorization-kubeconfig", "requestheader-client-ca-file", "audit-log-path", "v"} {
		if cmd.Flags().Lookup(name) == nil {
			t.Errorf("no --%s flag", name)
		}
	}
}
