package kube

import (
	"context"
	"fmt"
	"testing"
	"time"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// With several servers, each is verified against its own host name (nats.go sets it per
// URL): the first server's name must not be pinned, or a cluster with per-host
// certificates is reachable only through its first server. The probe's options and the
// worker's (from WorkerEnv) reach the second server here, whose certificate does not name
// the first's host; tls.serverName, when set, is used for all.
func TestTLSServerNamePerServer(t *testing.T) {
	ca, err := servers.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := servers.StartNATSWith(servers.NATSOptions{TLS: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	closed, err := servers.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, serverName, reason string
	}{
		{name: "no serverName", reason: queue.ReasonQueueNotFound}, // connected; no stream
		{name: "serverName the certificate names", serverName: "localhost", reason: queue.ReasonQueueNotFound},
		{name: "serverName the certificate does not name", serverName: "nats.example", reason: queue.ReasonTLSFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &qjv1.QueueSource{NATS: &qjv1.NATSQueue{
				Servers: []string{fmt.Sprintf("tls://127.0.0.2:%d", closed[0]), srv.URL()}, Stream: "s", Consumer: "c",
				TLS: &qjv1.TLSConfig{CASecretRef: secretRef("ca", "ca.crt"), ServerName: tc.serverName},
			}}
			secrets := map[string]string{"ca/ca.crt": string(ca.PEM())}
			probe, err := Options(backends.Source{Spec: src, Secrets: secrets})
			if err != nil {
				t.Fatal(err)
			}
			resolved := map[string]string{}
			for _, e := range WorkerEnv(src) {
				resolved[e.Name] = e.Value
				if e.ValueFrom != nil {
					resolved[e.Name] = secrets[e.ValueFrom.SecretKeyRef.Name+"/"+e.ValueFrom.SecretKeyRef.Key]
				}
			}
			worker, err := nats.OptionsFromEnv(func(k string) string { return resolved[k] })
			if err != nil {
				t.Fatal(err)
			}
			for name, o := range map[string]nats.Options{"probe": probe, "worker": worker} {
				o.Timeout = 5 * time.Second
				c := nats.New(o)
				_, err := c.Probe(context.Background())
				_ = c.Close()
				if queue.ReasonOf(err) != tc.reason {
					t.Errorf("the %s's Probe = %v, want reason %s", name, err, tc.reason)
				}
			}
		})
	}
}
