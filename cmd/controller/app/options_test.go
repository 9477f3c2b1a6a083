package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOptionsFlagsAndValidate(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "defaults", args: nil},
		{name: "all flags", args: []string{"--public-url=https://share.example.com", "--leader-elect=false", "--leader-election-namespace=ns", "--metrics-bind-address=0", "--metrics-secure=false", "--health-probe-bind-address=0", "--kube-api-qps=20", "--kube-api-burst=40", "--workers=8", "-v=2"}},
		{name: "zero qps", args: []string{"--kube-api-qps=0"}, wantErr: "--kube-api-qps"},
		{name: "no workers", args: []string{"--workers=0"}, wantErr: "--workers"},
		{name: "bad public url", args: []string{"--public-url=share.example.com"}, wantErr: "--public-url"},
		{name: "public url with query", args: []string{"--public-url=https://share.example.com/?a=b"}, wantErr: "--public-url"},
		{name: "empty metrics address", args: []string{"--metrics-bind-address="}, wantErr: "--metrics-bind-address"},
		{name: "empty probe address", args: []string{"--health-probe-bind-address="}, wantErr: "--health-probe-bind-address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			cmd := NewControllerCommand(o)
			if err := cmd.ParseFlags(append([]string{"--kubeconfig=" + kubeconfig}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			if err := o.Complete(); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate() = %v, want an error about %s", err, tc.wantErr)
			}
			if o.restConfig.Host != "https://127.0.0.1:6443" || o.restConfig.UserAgent != "kubeopencode-controller" {
				t.Errorf("client configuration: host %q, user agent %q", o.restConfig.Host, o.restConfig.UserAgent)
			}
		})
	}
}

func TestValidateNeedsComplete(t *testing.T) {
	if err := NewOptions().Validate(); err == nil {
		t.Error("Validate accepted options that were not completed")
	}
}
