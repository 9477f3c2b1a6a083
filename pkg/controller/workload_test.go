package controller

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

func TestReadyCondition(t *testing.T) {
	available := func(s corev1.ConditionStatus, msg string) []appsv1.DeploymentCondition {
		return []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue},
			{Type: appsv1.DeploymentAvailable, Status: s, Message: msg},
		}
	}
	tests := []struct {
		name       string
		status     appsv1.DeploymentStatus
		wantStatus metav1.ConditionStatus
		wantReason string
	}{
		{name: "new deployment", wantStatus: metav1.ConditionFalse, wantReason: ReasonDeploymentUnavailable},
		{
			name:       "available",
			status:     appsv1.DeploymentStatus{AvailableReplicas: 1, Conditions: available(corev1.ConditionTrue, "")},
			wantStatus: metav1.ConditionTrue, wantReason: ReasonDeploymentAvailable,
		},
		{
			name:       "minimum replicas unavailable",
			status:     appsv1.DeploymentStatus{Conditions: available(corev1.ConditionFalse, "Deployment does not have minimum availability.")},
			wantStatus: metav1.ConditionFalse, wantReason: ReasonDeploymentUnavailable,
		},
		{
			name:       "available condition without an available pod",
			status:     appsv1.DeploymentStatus{Conditions: available(corev1.ConditionTrue, "")},
			wantStatus: metav1.ConditionFalse, wantReason: ReasonDeploymentUnavailable,
		},
		{
			name:       "available pods but no condition yet",
			status:     appsv1.DeploymentStatus{AvailableReplicas: 1},
			wantStatus: metav1.ConditionFalse, wantReason: ReasonDeploymentUnavailable,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "team-agent"}, Status: tc.status}
			got := readyCondition(d)
			if got.Type != v1alpha1.ConditionReady || got.Status != tc.wantStatus || got.Reason != tc.wantReason || got.Message == "" {
				t.Errorf("readyCondition() = %+v, want %s/%s with a message", got, tc.wantStatus, tc.wantReason)
			}
		})
	}
}

func testAgent() *v1alpha1.Agent {
	return &v1alpha1.Agent{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "Agent"},
		ObjectMeta: metav1.ObjectMeta{Name: "team-agent", Namespace: "default", UID: "agent-uid"},
		Spec: v1alpha1.AgentSpec{
			Image:      "busybox:1.36",
			Command:    []string{"sleep"},
			Args:       []string{"infinity"},
			Env:        []corev1.EnvVar{{Name: "A", Value: "1"}},
			WorkingDir: "/work",
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")},
			},
		},
	}
}

func TestNewDeployment(t *testing.T) {
	agent := testAgent()
	d := newDeployment(agent)
	if d.Name != agent.Name || d.Namespace != agent.Namespace {
		t.Errorf("deployment %s/%s", d.Namespace, d.Name)
	}
	if !metav1.IsControlledBy(d, agent) {
		t.Errorf("deployment is not controlled by the agent: %+v", d.OwnerReferences)
	}
	if *d.Spec.Replicas != 1 {
		t.Errorf("replicas = %d", *d.Spec.Replicas)
	}
	wantLabels := map[string]string{"kubeopencode.io/agent": "team-agent"}
	if diff := cmp.Diff(wantLabels, d.Spec.Selector.MatchLabels); diff != "" {
		t.Errorf("selector (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantLabels, d.Spec.Template.Labels); diff != "" {
		t.Errorf("pod labels (-want +got):\n%s", diff)
	}
	if d.Labels["kubeopencode.io/agent"] != "team-agent" {
		t.Errorf("deployment labels = %v", d.Labels)
	}
	if p := d.Spec.Template.Spec.AutomountServiceAccountToken; p == nil || *p {
		t.Errorf("automountServiceAccountToken = %v, want false", p)
	}
	want := corev1.Container{
		Name: "agent", Image: "busybox:1.36", Command: []string{"sleep"}, Args: []string{"infinity"},
		Env: []corev1.EnvVar{{Name: "A", Value: "1"}}, WorkingDir: "/work", Resources: agent.Spec.Resources,
	}
	if diff := cmp.Diff([]corev1.Container{want}, d.Spec.Template.Spec.Containers); diff != "" {
		t.Errorf("containers (-want +got):\n%s", diff)
	}
	// The Deployment shares no memory with the Agent.
	d.Spec.Template.Spec.Containers[0].Env[0].Value = "changed"
	if agent.Spec.Env[0].Value != "1" {
		t.Error("changing the Deployment changed the Agent")
	}
}

func TestSetDeploymentSpecKeepsOthers(t *testing.T) {
	agent := testAgent()
	d := newDeployment(agent)
	// What the API server defaults and other tools add.
	d.Spec.Template.Spec.Containers[0].TerminationMessagePath = corev1.TerminationMessagePathDefault
	d.Spec.Template.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: "sidecar", Image: "sidecar"})
	d.Spec.Template.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "now"}
	d.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
	d.Spec.Template.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("0.1")}

	again := d.DeepCopy()
	setDeploymentSpec(again, agent)
	if !equality.Semantic.DeepEqual(d, again) {
		t.Errorf("setDeploymentSpec changed a Deployment that follows the Agent:\n%s", cmp.Diff(d, again))
	}

	agent.Spec.Image = "busybox:1.37"
	agent.Spec.Env = nil
	setDeploymentSpec(again, agent)
	c := again.Spec.Template.Spec.Containers[0]
	if c.Image != "busybox:1.37" || len(c.Env) != 0 || c.TerminationMessagePath == "" || len(again.Spec.Template.Spec.Containers) != 2 {
		t.Errorf("after a spec change: %+v, %d containers", c, len(again.Spec.Template.Spec.Containers))
	}
}
