package testenv

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"github.com/kubeopencode/share/internal/testenv/standin"
)

// StartStandinNode registers a Node served by an in-process stand-in
// kubelet, which the scheduler binds pods to and the kube-apiserver execs
// into. Its pods' working folders are under Dir()/nodes/<name>. It stops
// with the control plane.
func (cp *ControlPlane) StartStandinNode(ctx context.Context, name string) (*standin.Kubelet, error) {
	nodeConfig, err := cp.UserConfig("system:node:"+name, "system:nodes")
	if err != nil {
		return nil, err
	}
	serving, err := cp.kubeletCA.IssueServing([]string{name, "localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, fmt.Errorf("stand-in node %s: %w", name, err)
	}
	cert, err := serving.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("stand-in node %s: %w", name, err)
	}
	k, err := standin.Start(ctx, standin.Options{
		NodeName:    name,
		Config:      nodeConfig,
		ServingCert: cert,
		ClientCAs:   cp.kubeletClientCA.Pool(),
		WorkDir:     filepath.Join(cp.dir, "nodes", name),
	})
	if err != nil {
		return nil, fmt.Errorf("starting stand-in node %s: %w", name, err)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.nodes = append(cp.nodes, k)
	return k, nil
}
