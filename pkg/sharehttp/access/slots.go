package access

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// Slots bound the terminal connections open at once, in total and per
// Agent.
type Slots struct {
	mu       sync.Mutex
	total    int
	perAgent map[types.NamespacedName]int
	max      int
	maxAgent int
}

// NewSlots returns max slots, at most maxPerAgent of them for one Agent.
func NewSlots(max, maxPerAgent int) *Slots {
	return &Slots{perAgent: map[types.NamespacedName]int{}, max: max, maxAgent: maxPerAgent}
}

// Acquire takes a slot for a terminal connection of the Agent; release gives it back and
// must be called once.
func (s *Slots) Acquire(agent types.NamespacedName) (release func(), ok bool) {
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
