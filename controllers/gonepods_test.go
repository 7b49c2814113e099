package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestPodEnd(t *testing.T) {
	pod := func(phase corev1.PodPhase) *corev1.Pod { return &corev1.Pod{Status: corev1.PodStatus{Phase: phase}} }
	for _, tc := range []struct {
		name          string
		old, pod      *corev1.Pod
		deleted       bool
		ended, abrupt bool
	}{
		{"running", pod(corev1.PodRunning), pod(corev1.PodRunning), false, false, false},
		{"deleted while running", nil, pod(corev1.PodRunning), true, true, true},
		{"deleted while pending", nil, pod(corev1.PodPending), true, true, true},
		{"deleted once succeeded (the pod TTL)", nil, pod(corev1.PodSucceeded), true, true, false},
		{"deleted once failed", nil, pod(corev1.PodFailed), true, true, false},
		{"turned Failed", pod(corev1.PodRunning), pod(corev1.PodFailed), false, true, true},
		{"Failed, seen again", pod(corev1.PodFailed), pod(corev1.PodFailed), false, true, false},
		{"Failed at the manager's start", nil, pod(corev1.PodFailed), false, true, false},
		{"turned Succeeded", pod(corev1.PodRunning), pod(corev1.PodSucceeded), false, true, false},
	} {
		ended, abrupt := podEnd(tc.old, tc.pod, tc.deleted)
		if ended != tc.ended || abrupt != tc.abrupt {
			t.Errorf("%s: podEnd = %v, %v; want %v, %v", tc.name, ended, abrupt, tc.ended, tc.abrupt)
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
	g.add(other, b, t0.Add(2*goneTTL)) // sweeps
	if _, ok := g.m[key]; ok {
		t.Error("the sweep kept a QueueJob whose gone pods all expired")
	}
	g.forget(other)
	if g.holders(other, t0.Add(2*goneTTL)) != nil {
		t.Error("forget kept the QueueJob's pods")
	}

	for i := range maxGonePerQueueJob + 1 {
		g.add(key, types.UID(string(rune('a'+i%26))+time.Duration(i).String()), t0.Add(time.Duration(i)*time.Microsecond))
	}
	if n := len(g.m[key]); n != maxGonePerQueueJob {
		t.Errorf("%d pods remembered, want at most %d", n, maxGonePerQueueJob)
	}
}
