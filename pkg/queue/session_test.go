package queue

import (
	"strings"
	"testing"
)

func TestNewSessionNamesThePod(t *testing.T) {
	const uid = "5f0c4c1e-2b7a-4a58-9f53-0d6a4f1b2c3d"
	t.Setenv(EnvPodName, "wave-3-x7k2p")
	t.Setenv(EnvPodUID, uid)
	s := NewSession()
	if !strings.HasPrefix(s, "wave-3-x7k2p-") || !strings.HasSuffix(s, "@"+uid) {
		t.Errorf("NewSession() = %q, want wave-3-x7k2p-<hex>@%s", s, uid)
	}
	if got, ok := SessionPod(s); !ok || got != uid {
		t.Errorf("SessionPod(%q) = %q, %v", s, got, ok)
	}
	if s2 := NewSession(); s2 == s {
		t.Errorf("two sessions of one pod are equal: %q", s)
	}

	t.Setenv(EnvPodUID, "not-a-uid")
	if s := NewSession(); strings.Contains(s, "@") {
		t.Errorf("NewSession() with a malformed UID = %q, want no pod part", s)
	}
}

func TestSessionPod(t *testing.T) {
	for _, tc := range []struct {
		session, uid string
	}{
		{"w-0a0b0c@5f0c4c1e-2b7a-4a58-9f53-0d6a4f1b2c3d", "5f0c4c1e-2b7a-4a58-9f53-0d6a4f1b2c3d"},
		{"a@b@5f0c4c1e-2b7a-4a58-9f53-0d6a4f1b2c3d", "5f0c4c1e-2b7a-4a58-9f53-0d6a4f1b2c3d"},
		{"5f0c4c1e-2b7a-4a58-9f53-0d6a4f1b2c3d", ""}, // rediswq.py: a bare UUID
		{"w@5F0C4C1E-2B7A-4A58-9F53-0D6A4F1B2C3D", ""},
		{"w@5f0c4c1e-2b7a-4a58-9f53-0d6a4f1b2c3", ""},
		{"w@5f0c4c1e-2b7a-4a58-9f53-0d6a4f1b2c3dx", ""},
		{"w@5f0c4c1e_2b7a-4a58-9f53-0d6a4f1b2c3d", ""},
		{"", ""},
	} {
		uid, ok := SessionPod(tc.session)
		if uid != tc.uid || ok != (tc.uid != "") {
			t.Errorf("SessionPod(%q) = %q, %v; want %q", tc.session, uid, ok, tc.uid)
		}
	}
	var none GoneHolders
	if none.Gone("w@5f0c4c1e-2b7a-4a58-9f53-0d6a4f1b2c3d") {
		t.Error("a nil GoneHolders says a session is gone")
	}
}
