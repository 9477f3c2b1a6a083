package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregatorclient "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// InstallCRDs creates the CustomResourceDefinitions in the YAML files of dir
// and waits until each is Established.
func (cp *ControlPlane) InstallCRDs(ctx context.Context, dir string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	client, err := apiextensionsclient.NewForConfig(cp.admin)
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("listing CRD files in %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CRD files (*.yaml) in %s", dir)
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading CRD file: %w", err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if _, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
		crds = append(crds, crd)
	}
	for i, crd := range crds {
		var last string
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false, nil
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					crds[i] = got
					return true, nil
				}
				if c.Type == apiextensionsv1.NamesAccepted && c.Status == apiextensionsv1.ConditionFalse {
					last = c.Reason + ": " + c.Message
				}
			}
			return false, nil
		})
		if err != nil {
			return nil, fmt.Errorf("CRD %s not Established (%s): %w", crd.Name, last, err)
		}
	}
	// Established means served; discovery and the RESTMapper of a client
	// made now see the new kinds.
	return crds, nil
}

// SystemNamespace is where the project's components and their Services
// live, RegisterAPIService's usual namespace.
const SystemNamespace = "kubeopencode-system"

// RegisterAPIService registers version of group as an aggregated API served
// on a loopback port, creating or updating the namespace, the Service and
// the APIService "<version>.<group>" (groupPriorityMinimum 100,
// versionPriority 10). EndpointSlices refuse loopback addresses, so the
// Service is of type ExternalName for localhost and the APIService carries
// the server's port (the kube-apiserver runs with
// --enable-aggregator-routing=false); the aggregator then verifies the
// server's certificate for <service>.<namespace>.svc against caBundle (see
// ServingCertFor and ServingCA). WaitForAPIService waits for it to be
// Available.
func (cp *ControlPlane) RegisterAPIService(ctx context.Context, group, version, namespace, service string, port int, caBundle []byte) error {
	if err := cp.registerAPIService(ctx, group, version, namespace, service, port, caBundle); err != nil {
		return fmt.Errorf("registering APIService %s.%s: %w", version, group, err)
	}
	return nil
}

func (cp *ControlPlane) registerAPIService(ctx context.Context, group, version, namespace, service string, port int, caBundle []byte) error {
	cs, err := kubernetes.NewForConfig(cp.admin)
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: service, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: "localhost",
			Ports:        []corev1.ServicePort{{Name: "https", Port: int32(port)}},
		},
	}
	existingSvc, err := cs.CoreV1().Services(namespace).Get(ctx, service, metav1.GetOptions{})
	switch {
	case err == nil && existingSvc.Spec.Type == corev1.ServiceTypeExternalName:
		existingSvc.Spec.ExternalName = svc.Spec.ExternalName
		existingSvc.Spec.Ports = svc.Spec.Ports
		_, err = cs.CoreV1().Services(namespace).Update(ctx, existingSvc, metav1.UpdateOptions{})
	case err == nil:
		// Another type cannot be turned into ExternalName in place
		// (cluster IPs): replace it.
		if err = cs.CoreV1().Services(namespace).Delete(ctx, service, metav1.DeleteOptions{}); err == nil {
			_, err = cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
		}
	case apierrors.IsNotFound(err):
		_, err = cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("service %s/%s: %w", namespace, service, err)
	}
	agg, err := aggregatorclient.NewForConfig(cp.admin)
	if err != nil {
		return err
	}
	p := int32(port)
	apiService := &apiregistrationv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: version + "." + group},
		Spec: apiregistrationv1.APIServiceSpec{
			Group:                group,
			Version:              version,
			Service:              &apiregistrationv1.ServiceReference{Namespace: namespace, Name: service, Port: &p},
			CABundle:             caBundle,
			GroupPriorityMinimum: 100,
			VersionPriority:      10,
		},
	}
	existing, err := agg.ApiregistrationV1().APIServices().Get(ctx, apiService.Name, metav1.GetOptions{})
	switch {
	case err == nil:
		existing.Spec = apiService.Spec
		_, err = agg.ApiregistrationV1().APIServices().Update(ctx, existing, metav1.UpdateOptions{})
	case apierrors.IsNotFound(err):
		_, err = agg.ApiregistrationV1().APIServices().Create(ctx, apiService, metav1.CreateOptions{})
	}
	return err
}

// WaitForAPIService waits up to timeout until the named APIService (for
// instance "v1alpha1.subresources.kubeopencode.io") is Available, and says
// why not when it gives up.
func (cp *ControlPlane) WaitForAPIService(ctx context.Context, name string, timeout time.Duration) error {
	agg, err := aggregatorclient.NewForConfig(cp.admin)
	if err != nil {
		return err
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		got, err := agg.ApiregistrationV1().APIServices().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, c := range got.Status.Conditions {
			if c.Type == apiregistrationv1.Available {
				last = strings.TrimSpace(c.Reason + ": " + c.Message)
				return c.Status == apiregistrationv1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("APIService %s not available (%s): %w", name, last, err)
	}
	return nil
}

// CreateFromFile creates the objects of a multi-document YAML file, with
// strict field validation. Objects that already exist are left as they are.
func (cp *ControlPlane) CreateFromFile(ctx context.Context, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	c, err := client.New(cp.admin, client.Options{})
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("decoding %s: %w", path, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := c.Create(ctx, obj, client.FieldValidation("Strict")); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s %s from %s: %w", obj.GetKind(), obj.GetName(), path, err)
		}
	}
}
