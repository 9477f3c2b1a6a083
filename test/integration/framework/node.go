package framework

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"

	"github.com/kubeopencode/share/test/integration/framework/standin"
)

// StartStandinNode registers a Node served by an in-process stand-in
// kubelet, which the scheduler can bind pods to and the kube-apiserver can
// exec into. It stops with the control plane.
func (cp *ControlPlane) StartStandinNode(ctx context.Context, name string) (*standin.Kubelet, error) {
	nodeConfig, err := cp.UserConfig("system:node:"+name, "system:nodes")
	if err != nil {
		return nil, err
	}
	serving, err := cp.kubeletCA.IssueServing([]string{name, "localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(serving.CertPEM, serving.KeyPEM)
	if err != nil {
		return nil, err
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(cp.clientCA.Cert)
	workDir := filepath.Join(cp.dir, "nodes", name)
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, err
	}
	k, err := standin.Start(ctx, standin.Options{
		NodeName:    name,
		Config:      nodeConfig,
		ServingCert: cert,
		ClientCAs:   clientCAs,
		WorkDir:     workDir,
	})
	if err != nil {
		return nil, err
	}
	cp.nodes = append(cp.nodes, k)
	return k, nil
}
