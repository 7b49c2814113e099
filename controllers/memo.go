package controllers

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// memo is what a phase remembers of each QueueJob between reconciles (the reconciles of
// one QueueJob never overlap, but those of different QueueJobs do). The Reconcile of a
// QueueJob that has gone forgets it.
type memo[T any] struct {
	mu sync.Mutex
	m  map[types.NamespacedName]T
}

func (m *memo[T]) load(key types.NamespacedName) (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[key]
	return v, ok
}

func (m *memo[T]) store(key types.NamespacedName, v T) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[types.NamespacedName]T{}
	}
	m.m[key] = v
}

func (m *memo[T]) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, key)
}
