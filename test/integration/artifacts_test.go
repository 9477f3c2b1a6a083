package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const artifactsNamespace = "kubeopencode-system"

// TestArtifactsApplyWithServerDryRun builds the kustomizations of artifacts/
// with the control plane's kubectl and has the kube-apiserver validate every
// object of the installation with a server-side dry run: schemas, defaulting
// and admission, the CRD and the APIService included.
//
// A dry run persists nothing, so the namespaced objects of one apply cannot
// land in the Namespace the same apply creates: the namespace is created for
// real first (plain, without the labels of artifacts/base/namespace.yaml, as
// other tests of this package share it), and the dry run then checks the
// Namespace object as an update.
func TestArtifactsApplyWithServerDryRun(t *testing.T) {
	cp := shared.cp
	kubeconfig := cp.KubeconfigPath()
	artifacts := filepath.Join(shared.root, "artifacts")

	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(cp.Config(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ensureNamespace(t, admin, artifactsNamespace)

	t.Run("base", func(t *testing.T) {
		objs := kustomize(t, artifacts)
		checkBaseArtifacts(t, objs)
		serverDryRun(t, kubeconfig, artifacts, objs)
	})

	t.Run("self-signed", func(t *testing.T) {
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Skip("openssl is not installed")
		}
		out := filepath.Join(t.TempDir(), "certs")
		cmd := exec.CommandContext(t.Context(), filepath.Join(shared.root, "hack", "gen-apiserver-certs.sh"), out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("hack/gen-apiserver-certs.sh: %v\n%s", err, b)
		}
		objs := kustomize(t, out)
		apiService := find(t, objs, "apiregistration.k8s.io", "APIService", "", "v1alpha1.subresources.kubeopencode.io")
		caBundle, _, _ := unstructured.NestedString(apiService.Object, "spec", "caBundle")
		pemCA, err := base64.StdEncoding.DecodeString(caBundle)
		if err != nil {
			t.Fatalf("caBundle is not base64: %v", err)
		}
		if block, _ := pem.Decode(pemCA); block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("caBundle does not hold a PEM certificate: %q", pemCA)
		}
		secret := find(t, objs, "", "Secret", artifactsNamespace, "kubeopencode-apiserver-tls")
		if typ, _, _ := unstructured.NestedString(secret.Object, "type"); typ != string(corev1.SecretTypeTLS) {
			t.Errorf("Secret kubeopencode-apiserver-tls has type %q, want %q", typ, corev1.SecretTypeTLS)
		}
		serverDryRun(t, kubeconfig, out, objs)
	})

	t.Run("cert-manager", func(t *testing.T) {
		// Built only: the kube-apiserver knows no cert-manager kinds here.
		objs := kustomize(t, filepath.Join(artifacts, "overlays", "cert-manager"))
		apiService := find(t, objs, "apiregistration.k8s.io", "APIService", "", "v1alpha1.subresources.kubeopencode.io")
		ref := apiService.GetAnnotations()["cert-manager.io/inject-ca-from"]
		if ref != artifactsNamespace+"/kubeopencode-apiserver" {
			t.Errorf("APIService annotation cert-manager.io/inject-ca-from = %q", ref)
		}
		cert := find(t, objs, "cert-manager.io", "Certificate", artifactsNamespace, "kubeopencode-apiserver")
		if name, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName"); name != "kubeopencode-apiserver-tls" {
			t.Errorf("Certificate kubeopencode-apiserver writes Secret %q, want the one the Deployment mounts", name)
		}
		dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
		if !slices.Contains(dnsNames, "kubeopencode-apiserver.kubeopencode-system.svc") {
			t.Errorf("Certificate kubeopencode-apiserver names %v, not the Service the aggregator calls", dnsNames)
		}
		find(t, objs, "cert-manager.io", "Issuer", artifactsNamespace, "kubeopencode-ca")
		// The rest is the base, unchanged.
		checkBaseArtifacts(t, objs)
	})

	t.Run("examples", func(t *testing.T) {
		dir := filepath.Join(artifacts, "examples")
		objs := kustomize(t, dir)
		ingress := find(t, objs, "networking.k8s.io", "Ingress", artifactsNamespace, "kubeopencode-share")
		backend, _, _ := unstructured.NestedSlice(ingress.Object, "spec", "rules")
		if !strings.Contains(fmt.Sprint(backend), "kubeopencode-share") {
			t.Errorf("the Ingress does not route to the Service kubeopencode-share: %v", backend)
		}
		serverDryRun(t, kubeconfig, dir, objs)
	})
}

// kustomize runs `kubectl kustomize dir` and returns the objects it builds.
func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	stdout, stderr, err := shared.cp.Kubectl(t.Context(), shared.cp.KubeconfigPath(), nil, "kustomize", dir)
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr)
	}
	objs, err := decodeObjects([]byte(stdout))
	if err != nil {
		t.Fatalf("decoding the output of kubectl kustomize %s: %v", dir, err)
	}
	if len(objs) == 0 {
		t.Fatalf("kubectl kustomize %s built nothing", dir)
	}
	return objs
}

// serverDryRun runs `kubectl apply -k dir --dry-run=server` and checks that
// the kube-apiserver accepted each of want and nothing else, without
// warnings beyond the one about objects this test or others created without
// kubectl apply.
func serverDryRun(t *testing.T, kubeconfig, dir string, want []*unstructured.Unstructured) {
	t.Helper()
	stdout, stderr, err := shared.cp.Kubectl(t.Context(), kubeconfig, nil, "apply", "-k", dir, "--dry-run=server", "-o", "json")
	if err != nil {
		t.Fatalf("kubectl apply -k %s --dry-run=server: %v\n%s", dir, err, stderr)
	}
	for _, line := range strings.Split(stderr, "\n") {
		if strings.TrimSpace(line) == "" || strings.Contains(line, "last-applied-configuration") {
			continue
		}
		t.Errorf("kubectl apply -k %s --dry-run=server: %s", dir, line)
	}
	got, err := decodeObjects([]byte(stdout))
	if err != nil {
		t.Fatalf("decoding the output of kubectl apply -k %s --dry-run=server: %v", dir, err)
	}
	var wantKeys, gotKeys []string
	for _, o := range want {
		wantKeys = append(wantKeys, objectKey(o))
	}
	for _, o := range got {
		gotKeys = append(gotKeys, objectKey(o))
	}
	slices.Sort(wantKeys)
	slices.Sort(gotKeys)
	if !slices.Equal(wantKeys, gotKeys) {
		t.Errorf("the dry run answered for\n  %s\nwant\n  %s", strings.Join(gotKeys, "\n  "), strings.Join(wantKeys, "\n  "))
	}
	t.Logf("kubectl apply -k %s --dry-run=server accepted %d objects", dir, len(got))
}

func objectKey(o *unstructured.Unstructured) string {
	gvk := o.GroupVersionKind()
	return fmt.Sprintf("%s %s/%s", schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, o.GetNamespace(), o.GetName())
}

// decodeObjects decodes a stream of YAML or JSON objects, flattening Lists.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if m == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, err
			}
			for i := range list.Items {
				objs = append(objs, &list.Items[i])
			}
			continue
		}
		objs = append(objs, u)
	}
}

func find(t *testing.T, objs []*unstructured.Unstructured, group, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		if gvk.Group == group && gvk.Kind == kind && o.GetNamespace() == namespace && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s/%s among the built objects", schema.GroupKind{Group: group, Kind: kind}, namespace, name)
	return nil
}

func convert[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

// checkBaseArtifacts checks what the installation promises beyond being
// valid: the parts, the share listener's port and Service, probes, requests,
// non-root with a read-only root, the controller's leader election, and an
// APIService that waits for a CA rather than skipping verification.
func checkBaseArtifacts(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	find(t, objs, "", "Namespace", "", artifactsNamespace)
	find(t, objs, "apiextensions.k8s.io", "CustomResourceDefinition", "", "agents.kubeopencode.io")
	find(t, objs, "policy", "PodDisruptionBudget", artifactsNamespace, "kubeopencode-apiserver")
	find(t, objs, "networking.k8s.io", "NetworkPolicy", artifactsNamespace, "kubeopencode-apiserver")
	for _, o := range objs {
		if o.GetKind() == "Ingress" {
			t.Errorf("Ingress %s is in the installation; it is an example", o.GetName())
		}
	}

	apiService := find(t, objs, "apiregistration.k8s.io", "APIService", "", "v1alpha1.subresources.kubeopencode.io")
	if skip, _, _ := unstructured.NestedBool(apiService.Object, "spec", "insecureSkipTLSVerify"); skip {
		t.Error("the APIService skips TLS verification")
	}
	if ca, found, _ := unstructured.NestedString(apiService.Object, "spec", "caBundle"); found {
		t.Errorf("the base APIService has a caBundle %q; overlays add it", ca)
	}

	apiDeploy := convert[appsv1.Deployment](t, find(t, objs, "apps", "Deployment", artifactsNamespace, "kubeopencode-apiserver"))
	if r := apiDeploy.Spec.Replicas; r == nil || *r < 2 {
		t.Errorf("kubeopencode-apiserver replicas = %v, want at least 2", r)
	}
	api := checkContainer(t, apiDeploy, "apiserver")
	if api != nil {
		ports := map[string]int32{}
		for _, p := range api.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if ports["https"] != 8443 || ports["share"] != 8080 {
			t.Errorf("kubeopencode-apiserver container ports %v, want https 8443 and share 8080", ports)
		}
		if !slices.Contains(api.Args, "--share-port=8080") {
			t.Errorf("kubeopencode-apiserver args %v lack --share-port=8080", api.Args)
		}
		// The replicas share one session per Agent: each says where its
		// peers reach it, from the downward API.
		for _, arg := range []string{"--share-advertise-address=$(POD_IP)", "--share-replica-name=$(POD_NAME)", "--share-lease-namespace=$(POD_NAMESPACE)"} {
			if !slices.Contains(api.Args, arg) {
				t.Errorf("kubeopencode-apiserver args %v lack %s", api.Args, arg)
			}
		}
		fields := map[string]string{}
		for _, e := range api.Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				fields[e.Name] = e.ValueFrom.FieldRef.FieldPath
			}
		}
		if fields["POD_IP"] != "status.podIP" || fields["POD_NAME"] != "metadata.name" || fields["POD_NAMESPACE"] != "metadata.namespace" {
			t.Errorf("kubeopencode-apiserver env from the downward API %v", fields)
		}
	}
	// Session Leases in the listener's namespace only.
	leases := find(t, objs, "rbac.authorization.k8s.io", "Role", artifactsNamespace, "kubeopencode-apiserver-share-sessions")
	if rules, _, _ := unstructured.NestedSlice(leases.Object, "rules"); len(rules) != 1 || !strings.Contains(fmt.Sprint(rules), "leases") {
		t.Errorf("the session Lease Role's rules %v, want one on leases", rules)
	}
	find(t, objs, "rbac.authorization.k8s.io", "RoleBinding", artifactsNamespace, "kubeopencode-apiserver-share-sessions")

	for name, port := range map[string]string{"kubeopencode-apiserver": "https", "kubeopencode-share": "share"} {
		svc := convert[corev1.Service](t, find(t, objs, "", "Service", artifactsNamespace, name))
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != port {
			t.Errorf("Service %s ports %+v, want one targeting %q", name, svc.Spec.Ports, port)
		}
	}

	ctrlDeploy := convert[appsv1.Deployment](t, find(t, objs, "apps", "Deployment", artifactsNamespace, "kubeopencode-controller"))
	if ctrl := checkContainer(t, ctrlDeploy, "controller"); ctrl != nil && !slices.Contains(ctrl.Args, "--leader-elect=true") {
		t.Errorf("kubeopencode-controller args %v lack --leader-elect=true", ctrl.Args)
	}
}

// checkContainer checks the hardening, probes and requests of a Deployment's
// container and returns it.
func checkContainer(t *testing.T, d *appsv1.Deployment, name string) *corev1.Container {
	t.Helper()
	pod := d.Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("Deployment %s: the pod is not runAsNonRoot", d.Name)
	}
	var c *corev1.Container
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			c = &pod.Containers[i]
		}
	}
	if c == nil {
		t.Errorf("Deployment %s has no container %s", d.Name, name)
		return nil
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("Deployment %s: container %s must have a read-only root filesystem and no privilege escalation", d.Name, name)
	}
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Errorf("Deployment %s: container %s lacks a readiness or liveness probe", d.Name, name)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("Deployment %s: container %s requests %v, want CPU and memory", d.Name, name, c.Resources.Requests)
	}
	return c
}
