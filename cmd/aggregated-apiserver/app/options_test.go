package app

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
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
		{name: "replicas sharing sessions", args: []string{"--share-advertise-address=10.0.0.7", "--share-replica-name=pod-a", "--share-lease-namespace=kubeopencode-system"}},
		{name: "replicas with a bad address", args: []string{"--share-advertise-address=pod-a"}, want: "--share-advertise-address"},
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
		"authentication-kubeconfig", "authorization-kubeconfig", "requestheader-client-ca-file", "audit-log-path", "v",
		"share-advertise-address", "share-replica-name", "share-lease-namespace", "share-lease-duration", "share-peer-key-name"} {
		if cmd.Flags().Lookup(name) == nil {
			t.Errorf("no --%s flag", name)
		}
	}
}

// unreachableKubeconfig writes a kubeconfig for a cluster nobody serves, so
// that the server can be configured and run without one.
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["none"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1", InsecureSkipTLSVerify: true}
	kc.AuthInfos["none"] = &clientcmdapi.AuthInfo{Token: "none"}
	kc.Contexts["none"] = &clientcmdapi.Context{Cluster: "none", AuthInfo: "none"}
	kc.CurrentContext = "none"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunnables(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name     string
		runnable Runnable
		cancel   bool
		want     error
	}{
		{name: "a failing runnable stops the process", runnable: func(context.Context) error { return boom }, want: boom},
		{name: "runnables stop with the process", runnable: func(ctx context.Context) error { <-ctx.Done(); return nil }, cancel: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kubeconfig := unreachableKubeconfig(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			o := NewOptions()
			o.SecureServing.Listener = ln
			o.Kubeconfig = kubeconfig
			o.Authentication.RemoteKubeConfigFile = kubeconfig
			o.Authentication.TolerateInClusterLookupFailure = true
			o.Authorization.RemoteKubeConfigFile = kubeconfig
			// The share listener is a Runnable of its own; this test is about
			// the seam, so it stays off.
			o.Share.Port = 0
			started := make(chan struct{})
			o.Runnables = []Runnable{func(ctx context.Context) error {
				close(started)
				return tc.runnable(ctx)
			}}
			if err := o.Complete(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- o.Run(ctx) }()
			select {
			case <-started:
			case err := <-done:
				t.Fatalf("Run returned before the runnable started: %v", err)
			case <-time.After(time.Minute):
				t.Fatal("the runnable did not start")
			}
			if tc.cancel {
				cancel()
			}
			select {
			case err := <-done:
				if !errors.Is(err, tc.want) {
					t.Errorf("Run() = %v, want %v", err, tc.want)
				}
			case <-time.After(time.Minute):
				t.Fatal("Run did not return")
			}
		})
	}
}
