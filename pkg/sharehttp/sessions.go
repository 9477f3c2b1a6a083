package sharehttp

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// sessionSlots bounds the concurrent sessions in total and per Agent.
type sessionSlots struct {
	mu       sync.Mutex
	total    int
	perAgent map[types.NamespacedName]int
	max      int
	maxAgent int
}

func newSessionSlots(max, maxPerAgent int) *sessionSlots {
	return &sessionSlots{perAgent: map[types.NamespacedName]int{}, max: max, maxAgent: maxPerAgent}
}

// Acquire takes a slot for a session of the Agent; release gives it back and
// must be called once.
func (s *sessionSlots) Acquire(agent types.NamespacedName) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= s.max || s.perAgent[agent] >= s.maxAgent {
		return nil, false
	}
	s.total++
	s.perAgent[agent]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.total--
			if s.perAgent[agent]--; s.perAgent[agent] <= 0 {
				delete(s.perAgent, agent)
			}
		})
	}, true
}
