package controllers

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestPodEnd(t *testing.T) {
	pod := func(phase corev1.PodPhase) *corev1.Pod { return &corev1.Pod{Status: corev1.PodStatus{Phase: phase}} }
	for _, tc := range []struct {
		name                 string
		old, pod             *corev1.Pod
		deleted              bool
		failed, suspect, ran bool
	}{
		{"running", pod(corev1.PodRunning), pod(corev1.PodRunning), false, false, false, false},
		// Also a pod whose label was removed, or a relist's tombstone: confirmGone reads it.
		{"deleted while running", nil, pod(corev1.PodRunning), true, false, true, true},
		{"deleted while pending (a container may run)", nil, pod(corev1.PodPending), true, false, true, true},
		{"deleted once succeeded (the pod TTL)", nil, pod(corev1.PodSucceeded), true, false, false, false},
		{"deleted once failed: recorded when it failed", nil, pod(corev1.PodFailed), true, false, false, false},
		{"turned Failed", pod(corev1.PodRunning), pod(corev1.PodFailed), false, true, false, true},
		{"Failed, seen again", pod(corev1.PodFailed), pod(corev1.PodFailed), false, false, false, false},
		{"Failed at the manager's start", nil, pod(corev1.PodFailed), false, true, false, false},
		{"turned Succeeded", pod(corev1.PodRunning), pod(corev1.PodSucceeded), false, false, false, false},
	} {
		failed, suspect, ran := podEnd(tc.old, tc.pod, tc.deleted)
		if failed != tc.failed || suspect != tc.suspect || ran != tc.ran {
			t.Errorf("%s: podEnd = %v, %v, %v; want %v, %v, %v", tc.name, failed, suspect, ran, tc.failed, tc.suspect, tc.ran)
		}
	}
}

func TestGonePods(t *testing.T) {
	const a, b = "0a1b2c3d-0000-4000-8000-00000000000a", "0a1b2c3d-0000-4000-8000-00000000000b"
	key, other := types.NamespacedName{Namespace: "ns", Name: "qj"}, types.NamespacedName{Namespace: "ns", Name: "other"}
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	var g gonePods
	if g.holders(key, t0) != nil {
		t.Fatal("holders of a QueueJob with no gone pod is not nil")
	}
	g.add(key, a, t0)
	g.add(other, b, t0)
	h := g.holders(key, t0.Add(time.Minute))
	if !h.Gone("w-1@"+a) || h.Gone("w-1@"+b) || h.Gone(a) {
		t.Errorf("holders: gone(a's session) %v, gone(b's) %v, gone(bare UID) %v; want true, false, false",
			h.Gone("w-1@"+a), h.Gone("w-1@"+b), h.Gone(a))
	}
	g.add(key, b, t0.Add(time.Minute))
	if !h.Gone("w-1@"+a) || h.Gone("w-1@"+b) {
		t.Error("holders changed after it was taken: it must be a copy")
	}
	if h := g.holders(key, t0.Add(goneTTL+time.Second)); h.Gone("w-1@"+a) || !h.Gone("w-1@"+b) {
		t.Error("a pod is still gone after goneTTL, or a younger one no longer is")
	}
	g.add(other, "c", t0.Add(2*goneTTL)) // sweeps
	if _, ok := g.m[key]; ok {
		t.Error("the sweep kept a QueueJob whose gone pods all expired")
	}
	g.forget(other)
	if g.holders(other, t0.Add(2*goneTTL)) != nil {
		t.Error("forget kept the QueueJob's pods")
	}

	for i := range maxGonePerQueueJob + 1 {
		g.add(key, types.UID(fmt.Sprintf("pod-%05d", i)), t0.Add(time.Duration(i)*time.Microsecond))
	}
	if n := len(g.m[key].at); n != maxGonePerQueueJob {
		t.Errorf("%d pods remembered, want at most %d", n, maxGonePerQueueJob)
	}
	if _, ok := g.m[key].at["pod-00000"]; ok {
		t.Error("the oldest pod was kept past the bound")
	}
	g.add(key, "pod-00001", t0.Add(time.Minute))
	if at := g.m[key].at["pod-00001"]; !at.Equal(t0.Add(time.Microsecond)) {
		t.Errorf("a pod seen to end again got a new time, %v", at)
	}
}

func TestGonePodsSuspects(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "qj"}
	var g gonePods
	g.suspect(key, "u1", "wave-1-a", time.Now())
	if g.holders(key, time.Now()) != nil {
		t.Error("a suspect counts as gone before it is confirmed")
	}
	g.suspect(key, "u2", "wave-1-b", time.Now())
	got := g.takeSuspects(key, 1)
	if len(got) != 1 || !g.hasSuspects(key) {
		t.Errorf("takeSuspects(1) = %v, and the other left: %v", got, g.hasSuspects(key))
	}
	if got := g.takeSuspects(key, 10); len(got) != 1 || g.hasSuspects(key) {
		t.Errorf("takeSuspects again = %v, want the other", got)
	}
	g.suspect(key, "u3", "wave-1-c", time.Now().Add(-2*goneTTL))
	g.add(key, "u4", time.Now()) // sweeps
	if g.hasSuspects(key) {
		t.Error("a suspect never confirmed outlived goneTTL")
	}
}
