package integration

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

var (
	kubeocOnce sync.Once
	kubeocBin  string
	kubeocErr  error
)

// buildKubeoc builds the kubeoc binary once per test run, so that tests see
// its real output and exit codes.
func buildKubeoc(t *testing.T) string {
	t.Helper()
	kubeocOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kubeoc-")
		if err != nil {
			kubeocErr = err
			return
		}
		kubeocBin = filepath.Join(dir, "kubeoc")
		cmd := exec.Command("go", "build", "-o", kubeocBin, "./cmd/kubeoc")
		cmd.Dir = shared.root
		if out, err := cmd.CombinedOutput(); err != nil {
			kubeocErr = errors.New(string(out))
		}
	})
	if kubeocErr != nil {
		t.Fatalf("building kubeoc: %v", kubeocErr)
	}
	return kubeocBin
}

// kubeoc runs kubeoc as user and returns its output and exit code.
func (e *apiEnv) kubeoc(t *testing.T, user string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, buildKubeoc(t), append([]string{"--kubeconfig", e.userKubeconfig(user)}, args...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("running kubeoc: %v", err)
	}
	return out.String(), errOut.String(), code
}

func (e *apiEnv) kubeocOK(t *testing.T, user string, args ...string) string {
	t.Helper()
	out, stderr, code := e.kubeoc(t, user, args...)
	if code != 0 {
		t.Fatalf("kubeoc %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return out
}

var tokenLine = regexp.MustCompile(`(?m)^Token:  ([A-Za-z0-9_-]{43})$`)

func tokenFrom(t *testing.T, out string) string {
	t.Helper()
	m := tokenLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no token in output:\n%s", out)
	}
	return m[1]
}

func (e *apiEnv) testKubeoc(t *testing.T) {
	ns := e.nsA
	e.createObject(apiTestAgent(ns, "cli-agent"))
	// No controller runs here: mark the Agent Ready as the controller would
	// once its Deployment is available.
	ready := e.agent(t, ns, "cli-agent")
	meta.SetStatusCondition(&ready.Status.Conditions, metav1.Condition{
		Type: kubeopencodev1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Available", Message: "Deployment is available",
	})
	if err := e.admin.Status().Update(t.Context(), ready); err != nil {
		t.Fatal(err)
	}

	out := e.kubeocOK(t, "alice", "agent", "share", "cli-agent", "-n", ns)
	token := tokenFrom(t, out)
	want := "Share link enabled for agent " + ns + "/cli-agent\n\n" +
		"Agent:  " + ns + "/cli-agent\n" +
		"Active: true\n" +
		"Token:  " + token + "\n" +
		"Path:   /s/" + token + "\n" +
		"URL:    " + apiPublicURL + "/s/" + token + "\n" +
		"Expires: "
	if !strings.HasPrefix(out, want) {
		t.Errorf("kubeoc agent share printed:\n%s\nwant it to start with:\n%s", out, want)
	}
	if got := e.secretToken(t, ns, "cli-agent"); got != token {
		t.Errorf("Secret token %q, printed %q", got, token)
	}

	// Show keeps the token; enabling again is idempotent.
	if got := tokenFrom(t, e.kubeocOK(t, "alice", "agent", "share", "cli-agent", "-n", ns, "--show")); got != token {
		t.Errorf("--show printed token %q, want %q", got, token)
	}
	if got := tokenFrom(t, e.kubeocOK(t, "alice", "agent", "share", "cli-agent", "-n", ns)); got != token {
		t.Errorf("enabling again changed the token")
	}

	// Options reach the server.
	out = e.kubeocOK(t, "alice", "agent", "share", "cli-agent", "-n", ns, "--expires-in", "2h", "--allowed-ips", "10.0.0.0/8,192.168.1.7")
	if !strings.Contains(out, "Allowed IPs: 10.0.0.0/8,192.168.1.7\n") {
		t.Errorf("allowed IPs not shown:\n%s", out)
	}
	agent := e.agent(t, ns, "cli-agent")
	if s := agent.Spec.Share; s == nil || len(s.AllowedIPs) != 2 || s.ExpiresAt == nil || time.Until(s.ExpiresAt.Time) > 2*time.Hour {
		t.Errorf("Agent spec.share after options: %+v", agent.Spec.Share)
	}

	// Rotate replaces the token.
	rotated := tokenFrom(t, e.kubeocOK(t, "alice", "agent", "share", "cli-agent", "-n", ns, "--rotate"))
	if rotated == token || e.secretToken(t, ns, "cli-agent") != rotated {
		t.Errorf("rotation: old %q, new %q, Secret %q", token, rotated, e.secretToken(t, ns, "cli-agent"))
	}

	// -o json is a valid AgentShare.
	jsonOut := e.kubeocOK(t, "alice", "agent", "share", "cli-agent", "-n", ns, "--show", "-o", "json")
	var obj subresourcesv1alpha1.AgentShare
	dec := json.NewDecoder(strings.NewReader(jsonOut))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("-o json is not an AgentShare: %v\n%s", err, jsonOut)
	}
	if obj.Kind != "AgentShare" || obj.APIVersion != subresourcesv1alpha1.SchemeGroupVersion.String() || obj.Status.Token != rotated || !obj.Status.Active {
		t.Errorf("-o json: %+v", obj)
	}

	// List shows the Agent with its columns.
	list := e.kubeocOK(t, "alice", "agent", "list", "-n", ns)
	if !regexp.MustCompile(`(?m)^NAME\s+READY\s+SHARE\s+EXPIRES\s+AGE`).MatchString(list) || !regexp.MustCompile(`(?m)^cli-agent\s+`).MatchString(list) {
		t.Errorf("kubeoc agent list:\n%s", list)
	}

	// Unshare disables: the Secret is gone and show says inactive.
	out = e.kubeocOK(t, "alice", "agent", "unshare", "cli-agent", "-n", ns)
	if out != "Share link disabled for agent "+ns+"/cli-agent\n" {
		t.Errorf("unshare printed %q", out)
	}
	if e.secretToken(t, ns, "cli-agent") != "" {
		t.Errorf("the Secret outlived unshare")
	}
	out = e.kubeocOK(t, "alice", "agent", "share", "cli-agent", "-n", ns, "--show")
	if !strings.Contains(out, "Active: false\n") || strings.Contains(out, "Token:") {
		t.Errorf("show after unshare:\n%s", out)
	}

	// Errors are one clear line with exit code 1.
	tests := []struct {
		name string
		user string
		args []string
		want string
	}{
		{name: "forbidden", user: "victor", args: []string{"agent", "share", "cli-agent", "-n", ns},
			want: `forbidden: you may not create agents/share in API group "subresources.kubeopencode.io" in namespace "` + ns + `"`},
		{name: "forbidden elsewhere", user: "alice", args: []string{"agent", "unshare", "team-agent", "-n", e.nsB},
			want: `forbidden: you may not delete agents/share`},
		{name: "not found", user: "alice", args: []string{"agent", "share", "no-such-agent", "-n", ns},
			want: `agent "no-such-agent" not found in namespace "` + ns + `"`},
		{name: "bad flag", user: "alice", args: []string{"agent", "share", "cli-agent", "-n", ns, "--allowed-ips", "10.0.0.0/33"},
			want: "invalid --allowed-ips"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := e.kubeoc(t, tc.user, tc.args...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, stderr, tc.want)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") != 0 || stdout != "" {
				t.Errorf("want one line on stderr and nothing on stdout, got stdout %q stderr %q", stdout, stderr)
			}
		})
	}
	if strings.Contains(e.kubeocOK(t, "alice", "agent", "share", "cli-agent", "-n", ns, "--show"), share.PathPrefix) {
		t.Errorf("a disabled link shows a path")
	}
}
