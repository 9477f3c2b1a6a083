package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/kubeopencode/share/internal/testenv"
)

// runTCPRelay is "bench tcp-relay TARGET": a bare TCP relay on loopback that
// copies bytes both ways and does nothing else, a process of its own as a
// forwarding replica is. Figure 8 puts it where the forwarding replica
// stands, so that the cost of one more process and hop on the machine can be
// told from the forwarder's own. It prints "addr ADDRESS" once it listens.
func runTCPRelay(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: bench tcp-relay HOST:PORT")
	}
	target := args[0]
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "addr %s\n", l.Addr())
	for {
		page, err := l.Accept()
		if err != nil {
			return err
		}
		go relayTCP(page, target)
	}
}

func relayTCP(page net.Conn, target string) {
	defer page.Close()
	owner, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer owner.Close()
	go func() {
		_, _ = io.Copy(owner, page)
		_ = owner.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(page, owner)
}

// startTCPRelay starts a tcp-relay process to target, as a replicaServer
// that pages dial as they dial a replica.
func startTCPRelay(o *options, target string) (replicaServer, *testenv.Process, error) {
	p, err := testenv.StartInteractiveProcess(o.logDir, "tcp-relay", o.self, "tcp-relay", target)
	if err != nil {
		return replicaServer{}, nil, err
	}
	line, err := p.ReadLine("addr ", 30*time.Second)
	if err != nil {
		p.Stop()
		return replicaServer{}, nil, fmt.Errorf("tcp-relay: %w", err)
	}
	return replicaServer{name: "a bare TCP relay", addr: strings.TrimPrefix(line, "addr ")}, p, nil
}
