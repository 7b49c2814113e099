package queue

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"strings"
)

// Variables the operator sets in every container of a wave from the downward API: they
// name the pod the worker runs in, so that its session does (NewSession).
const (
	EnvPodName = "QUEUEJOB_POD_NAME"
	EnvPodUID  = "QUEUEJOB_POD_UID"
)

// NewSession is a lease holder's name: the pod's name (QUEUEJOB_POD_NAME, else the
// hostname) and a random suffix, then, in a wave's pod, "@" and the pod's UID
// (QUEUEJOB_POD_UID). The UID lets the operator return the items a session holds as soon
// as it sees the pod end (SessionPod), instead of when their leases expire; a worker in
// another language gets the same by ending its session id in "@$QUEUEJOB_POD_UID".
func NewSession() string {
	name := os.Getenv(EnvPodName)
	if name == "" {
		name, _ = os.Hostname()
	}
	if name == "" {
		name = "worker"
	}
	var b [6]byte
	_, _ = io.ReadFull(rand.Reader, b[:])
	s := name + "-" + hex.EncodeToString(b[:])
	if uid := os.Getenv(EnvPodUID); isUID(uid) {
		s += "@" + uid
	}
	return s
}

// SessionPod returns the UID of the pod a session id names (its text after the last
// "@", if that is a UID); false if it names none, as rediswq.py's bare UUIDs do.
func SessionPod(session string) (uid string, ok bool) {
	i := strings.LastIndexByte(session, '@')
	if i < 0 || !isUID(session[i+1:]) {
		return "", false
	}
	return session[i+1:], true
}

// isUID reports whether s has the form of a Kubernetes UID, an RFC 4122 UUID in
// lower-case hex (8-4-4-4-12).
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range []byte(s) {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// GoneHolders reports whether a session id is of a worker known to be gone: its pod was
// deleted or ended. Its items go back to the queue at once, whatever their leases say.
// A nil GoneHolders knows of none.
type GoneHolders func(session string) bool

// Gone reports whether g says session is gone; false for a nil g.
func (g GoneHolders) Gone(session string) bool { return g != nil && g(session) }
