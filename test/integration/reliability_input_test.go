package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/controller"

	"github.com/kubeopencode/share/internal/testenv"
)

// TestReliabilityBadInput sends every field of the Agent and of the
// AgentShare malformed, out of range, oversized and in unicode, through
// kubectl apply and through the subresource: each gets a clear error, and
// nothing changes.
func TestReliabilityBadInput(t *testing.T) {
	s := startSystem(t)
	key := s.readyAgent(t, "victim")
	token := s.enable(t, key, "")
	t.Run("the Agent through kubectl apply", func(t *testing.T) { s.testBadAgentApply(t, key, token) })
	t.Run("the AgentShare through the subresource", func(t *testing.T) { s.testBadAgentShare(t, key, token) })
}

// snapshot is what must not change: the Agent's spec as stored and the
// link's token.
type snapshot struct {
	resourceVersion string
	generation      int64
	token           string
}

func (s *system) snapshot(t *testing.T, key types.NamespacedName) snapshot {
	t.Helper()
	a := s.getAgent(t.Context(), t, key)
	_, token := s.secretToken(t.Context(), t, key)
	return snapshot{resourceVersion: a.ResourceVersion, generation: a.Generation, token: token}
}

// expectUnchanged checks that the Agent's spec and the link are as before:
// same generation (the status may move on), same token, and the link works.
func (s *system) expectUnchanged(t *testing.T, key types.NamespacedName, before snapshot) {
	t.Helper()
	after := s.snapshot(t, key)
	if after.generation != before.generation {
		t.Errorf("the Agent's spec changed (generation %d → %d)", before.generation, after.generation)
	}
	if after.token != before.token {
		t.Error("the link's token changed")
	}
	if code := s.infoCode(t.Context(), before.token, nil); code != http.StatusOK {
		t.Errorf("the link answers %d", code)
	}
}

// deploymentGeneration returns the generation of the Agent's Deployment.
func (s *system) deploymentGeneration(t *testing.T, key types.NamespacedName) int64 {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := s.admin.Get(t.Context(), key, d); err != nil {
		t.Fatal(err)
	}
	return d.Generation
}

// invalidSpecEvents returns the names of the InvalidSpec Events so far.
func (s *system) invalidSpecEvents(t *testing.T, key types.NamespacedName) map[string]bool {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := s.admin.List(t.Context(), list, client.InNamespace(key.Namespace)); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range list.Items {
		if e.Reason == controller.ReasonInvalidSpec {
			seen[e.Name] = true
		}
	}
	return seen
}

// expectInvalidSpecReported waits for the controller to report, with an
// Event not among seen, that the Agent's spec cannot be applied, naming the
// field, and checks that the Agent does not claim to run its spec.
func (s *system) expectInvalidSpecReported(t *testing.T, key types.NamespacedName, field string, seen map[string]bool) {
	t.Helper()
	var note string
	if err := wait.PollUntilContextTimeout(t.Context(), poll, time.Minute, true, func(ctx context.Context) (bool, error) {
		list := &eventsv1.EventList{}
		if err := s.admin.List(ctx, list, client.InNamespace(key.Namespace)); err != nil {
			return false, nil
		}
		a := s.getAgent(ctx, t, key)
		for _, e := range list.Items {
			if e.Regarding.Name == key.Name && e.Reason == controller.ReasonInvalidSpec && e.Type == corev1.EventTypeWarning &&
				!seen[e.Name] && strings.Contains(e.Note, field) && a.Status.ObservedGeneration < a.Generation {
				note = e.Note
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("no Warning %s naming %s: %v", controller.ReasonInvalidSpec, field, err)
	}
	if len(note) > 400 {
		note = note[:400] + "…"
	}
	t.Logf("reported: %s", note)
	a := s.getAgent(t.Context(), t, key)
	if a.Status.ObservedGeneration >= a.Generation {
		t.Errorf("observedGeneration %d claims generation %d was applied", a.Status.ObservedGeneration, a.Generation)
	}
	if !isReady(a) {
		t.Error("the Agent is no longer Ready, though its pod runs on")
	}
}

// userKubeconfig writes a kubeconfig of the user "sharer".
func (s *system) userKubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sharer.kubeconfig")
	if err := testenv.WriteKubeconfig(path, s.user, ""); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *system) testBadAgentApply(t *testing.T, key types.NamespacedName, token string) {
	kubeconfig := s.userKubeconfig(t)
	dir := t.TempDir()
	// The Agent as the user keeps it in a file: what readyAgent made, with
	// sharing enabled.
	base := func() map[string]any {
		return map[string]any{
			"apiVersion": "kubeopencode.io/v1alpha1",
			"kind":       "Agent",
			"metadata":   map[string]any{"name": key.Name, "namespace": key.Namespace},
			"spec": map[string]any{
				"image":    "example/agent:1.0",
				"terminal": map[string]any{"command": []any{"sh"}},
				"share":    map[string]any{"enabled": true},
			},
		}
	}
	apply := func(t *testing.T, obj map[string]any) (string, error) {
		t.Helper()
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "agent.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		// The user's file owns what it says, over what others set before.
		_, stderr, err := s.cp.Kubectl(ctx, kubeconfig, nil, "apply", "--server-side", "--force-conflicts", "--field-manager=user", "-f", path)
		return stderr, err
	}
	// The file applies cleanly as it is.
	if stderr, err := apply(t, base()); err != nil {
		t.Fatalf("applying the Agent as it is: %v\n%s", err, stderr)
	}
	s.waitAgent(t, key, time.Minute, "Ready", converged)

	spec := func(o map[string]any) map[string]any { return o["spec"].(map[string]any) }
	shareOf := func(o map[string]any) map[string]any { return spec(o)["share"].(map[string]any) }
	long := func(n int) string { return strings.Repeat("x", n) }
	many := func(n int, v any) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = v
		}
		return out
	}
	const container = "spec.template.spec.containers[0]"
	tests := []struct {
		name   string
		mutate func(map[string]any)
		// field is the path the error names.
		field string
		// byController: the Agent's schema lets the value through, the API
		// server refuses the Deployment made of it, and the controller says
		// so on the Agent while what runs goes on running.
		byController bool
	}{
		{name: "name over 63 characters", mutate: func(o map[string]any) { o["metadata"].(map[string]any)["name"] = long(64) }, field: "metadata.name"},
		{name: "unicode name", mutate: func(o map[string]any) { o["metadata"].(map[string]any)["name"] = "ägent" }, field: "metadata.name"},
		{name: "empty image", mutate: func(o map[string]any) { spec(o)["image"] = "" }, field: "spec.image"},
		{name: "image with spaces", mutate: func(o map[string]any) { spec(o)["image"] = " example/agent:1.0 " }, field: "spec.image"},
		{name: "oversized image", mutate: func(o map[string]any) { spec(o)["image"] = long(5000) }, field: "spec.image"},
		{name: "image not a string", mutate: func(o map[string]any) { spec(o)["image"] = 42 }, field: "spec.image"},
		{name: "command not a list", mutate: func(o map[string]any) { spec(o)["command"] = "sleep infinity" }, field: "spec.command"},
		{name: "args of numbers", mutate: func(o map[string]any) { spec(o)["args"] = []any{1, 2} }, field: "spec.args"},
		{name: "env without a name", mutate: func(o map[string]any) { spec(o)["env"] = []any{map[string]any{"value": "x"}} }, field: "spec.env"},
		{name: "env name with =", mutate: func(o map[string]any) { spec(o)["env"] = []any{map[string]any{"name": "A=B", "value": "x"}} }, field: container + ".env[0].name", byController: true},
		{name: "env name in unicode", mutate: func(o map[string]any) { spec(o)["env"] = []any{map[string]any{"name": "ÄNV", "value": "x"}} }, field: container + ".env[0].name", byController: true},
		{name: "env value and valueFrom", mutate: func(o map[string]any) {
			spec(o)["env"] = []any{map[string]any{"name": "A", "value": "x", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.name"}}}}
		}, field: container + ".env[0].valueFrom", byController: true},
		{name: "resource quantity malformed", mutate: func(o map[string]any) {
			spec(o)["resources"] = map[string]any{"requests": map[string]any{"cpu": "lots"}}
		}, field: "spec.resources.requests"},
		{name: "negative resource", mutate: func(o map[string]any) {
			spec(o)["resources"] = map[string]any{"requests": map[string]any{"memory": "-1Gi"}}
		}, field: container + ".resources.requests[memory]", byController: true},
		{name: "requests above limits", mutate: func(o map[string]any) {
			spec(o)["resources"] = map[string]any{"requests": map[string]any{"cpu": "2"}, "limits": map[string]any{"cpu": "1"}}
		}, field: container + ".resources.requests", byController: true},
		{name: "oversized workingDir", mutate: func(o map[string]any) { spec(o)["workingDir"] = "/" + long(5000) }, field: "spec.workingDir"},
		{name: "terminal command of 65 items", mutate: func(o map[string]any) {
			spec(o)["terminal"] = map[string]any{"command": many(65, "sh")}
		}, field: "spec.terminal.command"},
		{name: "share enabled as a string", mutate: func(o map[string]any) { shareOf(o)["enabled"] = "yes" }, field: "spec.share.enabled"},
		{name: "expiresAt malformed", mutate: func(o map[string]any) { shareOf(o)["expiresAt"] = "next tuesday" }, field: "spec.share.expiresAt"},
		{name: "expiresAt in unicode digits", mutate: func(o map[string]any) { shareOf(o)["expiresAt"] = "２０３０-01-01T00:00:00Z" }, field: "spec.share.expiresAt"},
		{name: "expiresAt out of range", mutate: func(o map[string]any) { shareOf(o)["expiresAt"] = "2030-13-45T25:61:00Z" }, field: "spec.share.expiresAt"},
		{name: "allowedIPs bad CIDR", mutate: func(o map[string]any) { shareOf(o)["allowedIPs"] = []any{"10.0.0.0/33"} }, field: "spec.share.allowedIPs[0]"},
		{name: "allowedIPs host name", mutate: func(o map[string]any) { shareOf(o)["allowedIPs"] = []any{"example.com"} }, field: "spec.share.allowedIPs[0]"},
		{name: "allowedIPs in unicode digits", mutate: func(o map[string]any) { shareOf(o)["allowedIPs"] = []any{"１０.0.0.1"} }, field: "spec.share.allowedIPs[0]"},
		{name: "allowedIPs with a zone", mutate: func(o map[string]any) { shareOf(o)["allowedIPs"] = []any{"fe80::1%eth0"} }, field: "spec.share.allowedIPs[0]"},
		{name: "allowedIPs oversized entry", mutate: func(o map[string]any) { shareOf(o)["allowedIPs"] = []any{"10.0.0.1" + long(100)} }, field: "spec.share.allowedIPs[0]"},
		{name: "allowedIPs of 65 entries", mutate: func(o map[string]any) {
			var ips []any
			for i := range 65 {
				ips = append(ips, fmt.Sprintf("10.0.0.%d", i))
			}
			shareOf(o)["allowedIPs"] = ips
		}, field: "spec.share.allowedIPs"},
		{name: "unknown field", mutate: func(o map[string]any) { shareOf(o)["allowedIps"] = []any{"10.0.0.0/8"} }, field: "allowedIps"},
		{name: "an object over the size limit", mutate: func(o map[string]any) { spec(o)["args"] = many(4000, long(1000)) }, field: "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.snapshot(t, key)
			deployment := s.deploymentGeneration(t, key)
			seen := s.invalidSpecEvents(t, key)
			obj := base()
			tc.mutate(obj)
			stderr, err := apply(t, obj)
			if tc.byController {
				if err != nil {
					t.Fatalf("kubectl apply refused it: %s", stderr)
				}
				s.expectInvalidSpecReported(t, key, tc.field, seen)
				if got := s.deploymentGeneration(t, key); got != deployment {
					t.Errorf("the Deployment changed (generation %d → %d)", deployment, got)
				}
				if code := s.infoCode(t.Context(), before.token, nil); code != http.StatusOK {
					t.Errorf("the link answers %d", code)
				}
				// Put back, it applies again.
				if stderr, err := apply(t, base()); err != nil {
					t.Fatalf("applying the Agent as it was: %v\n%s", err, stderr)
				}
				s.waitAgent(t, key, time.Minute, "the spec applied again", converged)
				if after := s.snapshot(t, key); after.token != before.token {
					t.Error("the link's token changed")
				}
				return
			}
			if err == nil {
				t.Fatalf("kubectl apply accepted it")
			}
			msg := strings.TrimSpace(stderr)
			if len(msg) > 600 {
				msg = msg[:600] + "…"
			}
			if !strings.Contains(stderr, tc.field) {
				t.Errorf("the error does not name %s: %s", tc.field, msg)
			}
			t.Logf("%s", msg)
			s.expectUnchanged(t, key, before)
			if got := s.deploymentGeneration(t, key); got != deployment {
				t.Errorf("the Deployment changed (generation %d → %d)", deployment, got)
			}
		})
	}
	if name := long(64); s.getAgent(t.Context(), t, types.NamespacedName{Namespace: key.Namespace, Name: name}) != nil {
		t.Error("an Agent with a name over 63 characters was made")
	}
	_ = token
}

func (s *system) testBadAgentShare(t *testing.T, key types.NamespacedName, token string) {
	long := func(n int) string { return strings.Repeat("1", n) }
	ips := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"10.%d.%d.0/24"`, i/250, i%250)
		}
		return b.String()
	}
	tests := []struct {
		name  string
		agent string
		body  string
		code  int
		// text is what the message must say: the field, or, for a value
		// that cannot be decoded, the value.
		text string
	}{
		{name: "expiresAt malformed", body: `{"spec":{"expiresAt":"2030-13-45T25:61:00Z"}}`, code: 400, text: "2030-13-45T25:61:00Z"},
		{name: "expiresAt in unicode digits", body: `{"spec":{"expiresAt":"２０３０-01-01T00:00:00Z"}}`, code: 400, text: "parsing time"},
		{name: "expiresAt past", body: `{"spec":{"expiresAt":"2001-01-01T00:00:00Z"}}`, code: 422, text: "spec.expiresAt"},
		{name: "expiresAt far out", body: `{"spec":{"expiresAt":"9999-12-31T23:59:59Z"}}`, code: 201},
		{name: "expiresAt oversized", body: `{"spec":{"expiresAt":"` + long(100000) + `"}}`, code: 400, text: "parsing time"},
		{name: "expiresIn overflowing", body: `{"spec":{"expiresIn":"99999999999h"}}`, code: 400, text: "99999999999h"},
		{name: "expiresIn zero", body: `{"spec":{"expiresIn":"0s"}}`, code: 422, text: "spec.expiresIn"},
		{name: "expiresIn negative", body: `{"spec":{"expiresIn":"-5m"}}`, code: 422, text: "spec.expiresIn"},
		{name: "expiresIn in unicode", body: `{"spec":{"expiresIn":"１h"}}`, code: 400, text: "invalid duration"},
		{name: "expiresIn a number", body: `{"spec":{"expiresIn":3600}}`, code: 400, text: "expiresIn"},
		{name: "allowedIPs bad CIDR", body: `{"spec":{"allowedIPs":["10.0.0.0/33"]}}`, code: 422, text: "spec.allowedIPs[0]"},
		{name: "allowedIPs in unicode digits", body: `{"spec":{"allowedIPs":["１０.0.0.1"]}}`, code: 422, text: "spec.allowedIPs[0]"},
		{name: "allowedIPs with a zone", body: `{"spec":{"allowedIPs":["fe80::1%eth0"]}}`, code: 422, text: "spec.allowedIPs[0]"},
		{name: "allowedIPs empty entry", body: `{"spec":{"allowedIPs":[""]}}`, code: 422, text: "spec.allowedIPs[0]"},
		{name: "allowedIPs oversized entry", body: `{"spec":{"allowedIPs":["` + long(10000) + `"]}}`, code: 422, text: "spec.allowedIPs[0]"},
		{name: "allowedIPs of 65 entries", body: `{"spec":{"allowedIPs":[` + ips(65) + `]}}`, code: 422, text: "spec.allowedIPs"},
		{name: "allowedIPs of 20000 entries", body: `{"spec":{"allowedIPs":[` + ips(20000) + `]}}`, code: 422, text: "spec.allowedIPs"},
		{name: "allowedIPs not a list", body: `{"spec":{"allowedIPs":"10.0.0.0/8"}}`, code: 400, text: "allowedIPs"},
		{name: "rotate a string", body: `{"spec":{"rotate":"yes"}}`, code: 400, text: "rotate"},
		{name: "unknown field", body: `{"spec":{"allowedIps":["10.0.0.0/8"]}}`, code: 400, text: "allowedIps"},
		{name: "duplicate field", body: `{"spec":{"allowedIPs":["10.0.0.0/8"],"allowedIPs":[]}}`, code: 400, text: "allowedIPs"},
		{name: "another kind", body: `{"apiVersion":"v1","kind":"Pod","spec":{}}`, code: 400, text: "Pod"},
		{name: "name in unicode", body: `{"metadata":{"name":"ägent"}}`, code: 422, text: "metadata.name"},
		{name: "not JSON", body: "\x00\xff{", code: 400},
		{name: "a body over the size limit", body: `{"spec":{"allowedIPs":["` + long(4<<20) + `"]}}`, code: 413},
		{name: "Agent name in unicode", agent: "ägent", body: `{}`, code: 404, text: "not found"},
		{name: "Agent name oversized", agent: strings.Repeat("a", 300), body: `{}`, code: 404, text: "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.snapshot(t, key)
			target := key
			if tc.agent != "" {
				target.Name = tc.agent
			}
			code, body := s.rawShare(t, http.MethodPost, target, tc.body)
			if tc.code == http.StatusCreated {
				// Valid, if odd: it works, and is undone.
				if code != http.StatusCreated && code != http.StatusOK {
					t.Fatalf("%d: %s", code, body)
				}
				s.enable(t, key, "{}")
				return
			}
			status := &metav1.Status{}
			if err := json.Unmarshal(body, status); err != nil || status.Kind != "Status" {
				t.Fatalf("%d, not a Status: %.300s", code, body)
			}
			msg := status.Message
			if len(msg) > 300 {
				msg = msg[:300] + "…"
			}
			if code != tc.code {
				t.Errorf("%d, want %d: %s", code, tc.code, msg)
			}
			if !strings.Contains(string(body), tc.text) {
				t.Errorf("the answer does not say %q: %s", tc.text, msg)
			}
			t.Logf("%d %s", code, msg)
			s.expectUnchanged(t, key, before)
		})
	}
	_ = token
}

// rawShare calls the agents/share subresource as the user with a raw body.
func (s *system) rawShare(t *testing.T, method string, agent types.NamespacedName, body string) (int, []byte) {
	t.Helper()
	code, out, err := s.request(t, method, apiSharePath(agent.Namespace, agent.Name), body)
	if err != nil {
		t.Fatal(err)
	}
	return code, out
}
