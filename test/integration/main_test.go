package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeopencode/share/internal/testenv"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/signingkey"
)

// shared is the control plane the tests of this package share: starting one
// takes seconds, so each test works in a namespace of its own instead.
var shared struct {
	cp       *testenv.ControlPlane
	nodeName string
	root     string
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := testenv.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	const nodeName = "standin-node"
	start := time.Now()
	cp, err := testenv.Start(ctx, testenv.Options{StandinNode: nodeName})
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the control plane: %v\n", err)
		return 1
	}
	defer cp.Stop()
	if _, err := cp.InstallCRDs(ctx, filepath.Join(root, "artifacts", "crd")); err != nil {
		fmt.Fprintf(os.Stderr, "installing CRDs: %v\n", err)
		return 1
	}
	fmt.Printf("control plane, stand-in node and CRDs up in %s\n", time.Since(start).Round(time.Millisecond))
	shared.cp, shared.nodeName, shared.root = cp, nodeName, root
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "control-plane logs (ends; the full logs in %s go with the control plane):\n%s", cp.Dir(), cp.LogTails())
	}
	return code
}

// newNamespace creates a namespace for one test, ready for pods.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := "test-" + rand.String(6)
	if err := shared.cp.CreateNamespace(t.Context(), name); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

// signingKeys reads the system's share signing keys as the cluster admin,
// making them when no part of the system has yet: the tests that write a
// share Secret the way the aggregated API does sign it as the API would.
func signingKeys(t *testing.T) share.Keys {
	t.Helper()
	cs, err := kubernetes.NewForConfig(shared.cp.Config())
	if err != nil {
		t.Fatal(err)
	}
	ring, err := signingkey.New(cs, signingkey.DefaultNamespace, signingkey.DefaultName).Refresh(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return share.StaticKeys{Ring: ring}
}
