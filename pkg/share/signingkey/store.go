// Package signingkey keeps the system's share signing keys: the Secret in the
// system's own namespace whose keys prove that this system minted a share
// token (see share.AnnotationTokenProof). The controller and the aggregated
// API server each hold a Store; the first of them to need a key makes it.
package signingkey

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubeopencode/share/pkg/share"
)

const (
	// DefaultNamespace and DefaultName locate the key Secret of a default
	// install.
	DefaultNamespace = "kubeopencode-system"
	DefaultName      = "kubeopencode-share-signing-key"
	// KeyIDLayout names a key made by the system after the time it was made,
	// so that a key added later sorts after it and signs.
	KeyIDLayout = "20060102-150405"
)

// Store follows the key Secret with a watch on that one Secret and makes it,
// with one new key, when a part that needs to sign finds none.
type Store struct {
	client    kubernetes.Interface
	namespace string
	name      string
	informer  cache.SharedIndexInformer

	mu       sync.RWMutex
	ring     *share.KeyRing
	handlers []func()
}

var _ share.Keys = &Store{}

// New returns a Store of the key Secret namespace/name.
func New(client kubernetes.Interface, namespace, name string) *Store {
	lw := cache.NewFilteredListWatchFromClient(client.CoreV1().RESTClient(), "secrets", namespace, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	})
	s := &Store{client: client, namespace: namespace, name: name, ring: share.NewKeyRing(nil)}
	s.informer = cache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, cache.Indexers{})
	_, _ = s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { s.set(obj) },
		UpdateFunc: func(_, obj interface{}) { s.set(obj) },
		DeleteFunc: func(interface{}) { s.set(nil) },
	})
	return s
}

// Run follows the key Secret until ctx ends.
func (s *Store) Run(ctx context.Context) {
	s.informer.RunWithContext(ctx)
}

// HasSynced reports whether the Store has listed the key Secret once.
func (s *Store) HasSynced() bool { return s.informer.HasSynced() }

// WaitForSync waits until the Store has listed the key Secret once, and
// reports whether it did before ctx ended.
func (s *Store) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced)
}

// OnChange registers f to be called whenever the keys change, for a part
// that must act on Secrets signed by a key that came or went.
func (s *Store) OnChange(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers = append(s.handlers, f)
}

// KeyRing returns the keys as last seen.
func (s *Store) KeyRing() *share.KeyRing {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ring
}

// Refresh reads the key Secret from the API server and returns its keys. It
// makes the Secret with one new key when there is none, and adds a key to a
// Secret that holds no usable one, so that installing needs no manual step
// and a lost key is replaced (links proven by the lost key stop working; the
// controller mints new tokens for them).
func (s *Store) Refresh(ctx context.Context) (*share.KeyRing, error) {
	secrets := s.client.CoreV1().Secrets(s.namespace)
	for range 5 {
		secret, err := secrets.Get(ctx, s.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			secret, err = s.create(ctx)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
		case err == nil && share.NewKeyRing(secret.Data).Empty():
			secret, err = s.addKey(ctx, secret)
			if apierrors.IsConflict(err) {
				continue
			}
		}
		if err != nil {
			return nil, fmt.Errorf("share signing key Secret %s/%s: %w", s.namespace, s.name, err)
		}
		return s.set(secret), nil
	}
	return nil, fmt.Errorf("share signing key Secret %s/%s kept changing while it was read", s.namespace, s.name)
}

func (s *Store) create(ctx context.Context) (*corev1.Secret, error) {
	id, key, err := newKey()
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      s.name,
			Namespace: s.namespace,
			Labels:    map[string]string{"app.kubernetes.io/part-of": "kubeopencode"},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{id: key},
	}
	created, err := s.client.CoreV1().Secrets(s.namespace).Create(ctx, secret, metav1.CreateOptions{})
	if err == nil {
		klog.FromContext(ctx).Info("Created the share signing key", "secret", klog.KObj(created), "key", id)
	}
	return created, err
}

func (s *Store) addKey(ctx context.Context, secret *corev1.Secret) (*corev1.Secret, error) {
	id, key, err := newKey()
	if err != nil {
		return nil, err
	}
	updated := secret.DeepCopy()
	if updated.Data == nil {
		updated.Data = map[string][]byte{}
	}
	updated.Data[id] = key
	updated, err = s.client.CoreV1().Secrets(s.namespace).Update(ctx, updated, metav1.UpdateOptions{})
	if err == nil {
		klog.FromContext(ctx).Info("Added a share signing key to a Secret that held none usable", "secret", klog.KObj(updated), "key", id)
	}
	return updated, err
}

// set makes the keys of secret (nil: none) the current ones and tells the
// handlers when they changed.
func (s *Store) set(obj interface{}) *share.KeyRing {
	var data map[string][]byte
	if secret, ok := obj.(*corev1.Secret); ok && secret != nil {
		data = secret.Data
	}
	ring := share.NewKeyRing(data)
	s.mu.Lock()
	changed := !sameKeys(s.ring, ring)
	s.ring = ring
	handlers := s.handlers
	s.mu.Unlock()
	if changed {
		for _, f := range handlers {
			f()
		}
	}
	return ring
}

func sameKeys(a, b *share.KeyRing) bool {
	ai, bi := a.IDs(), b.IDs()
	if len(ai) != len(bi) {
		return false
	}
	for i := range ai {
		if ai[i] != bi[i] || !a.SameKey(b, ai[i]) {
			return false
		}
	}
	return true
}

func newKey() (string, []byte, error) {
	key := make([]byte, share.MinSigningKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return "", nil, fmt.Errorf("reading random bytes for a share signing key: %w", err)
	}
	return time.Now().UTC().Format(KeyIDLayout), key, nil
}
