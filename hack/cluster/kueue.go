package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Kueue (sigs.k8s.io/kueue) runs as one more host process when up is given --kueue: its
// manager built from the module proxy into <cache>/kueue/<version>/kueue, its CRDs and
// webhook configurations from the same module (kueuemanifests.go), a serving certificate
// signed by the cluster CA, and the admin kubeconfig (Kueue's own RBAC is not installed).
// Only the batch/job integration is on, and only Jobs labelled
// kueue.x-k8s.io/queue-name are managed (manageJobsWithoutQueueName: false).

const (
	cKueue = "kueue"
	// Kueue's manager reads its metrics certificate from this fixed path when its own
	// certificate management is off (cmd/kueue/main.go); there is no flag for it. It is
	// written, and removed again, only if up made /etc/kueue (kueueEtcMarker).
	kueueMetricsCertDir = "/etc/kueue/metrics/certs"
	kueueEtcMarker      = "/etc/kueue/.queuejob-cluster"
)

// KueueState is what up --kueue decided, kept in cluster.json.
type KueueState struct {
	Version     string   `json:"version"`
	Bin         string   `json:"bin"`
	WebhookPort int      `json:"webhookPort"`
	HealthPort  int      `json:"healthPort"`
	MetricsPort int      `json:"metricsPort"`
	CRDs        []string `json:"crds"`
	// The names of the mutating and the validating webhook configuration.
	MutatingWebhook   string `json:"mutatingWebhook"`
	ValidatingWebhook string `json:"validatingWebhook"`
}

func (c *Cluster) webhookURL() string {
	return fmt.Sprintf("https://%s", net.JoinHostPort(c.NodeIP, fmt.Sprint(c.Kueue.WebhookPort)))
}

// kueueConfig is Kueue's Configuration (config.kueue.x-k8s.io/v1beta2). The visibility
// API server is off: it needs an APIService, and it would bind 0.0.0.0:8082. Elastic Jobs
// (alpha, off by default) are on, for the e2e spec of a WorkerPool that grows in place;
// Kueue treats only Jobs annotated kueue.x-k8s.io/elastic-job as elastic.
func (c *Cluster) kueueConfig() string {
	return fmt.Sprintf(`apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
manageJobsWithoutQueueName: false
health:
  healthProbeBindAddress: 127.0.0.1:%d
metrics:
  bindAddress: 127.0.0.1:%d
webhook:
  host: %s
  port: %d
  certDir: %s
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
integrations:
  frameworks:
  - batch/job
featureGates:
  VisibilityOnDemand: false
  ElasticJobsViaWorkloadSlices: true
`, c.Kueue.HealthPort, c.Kueue.MetricsPort, c.NodeIP, c.Kueue.WebhookPort, c.path("kueue", "certs"))
}

func (c *Cluster) kueueComponent() component {
	return component{Name: cKueue, Bin: c.Kueue.Bin,
		Args: []string{"--config=" + c.path("kueue", "config.yaml"), "--zap-log-level=info"},
		Env:  []string{"KUBECONFIG=" + c.kubeconfig()}}
}

// newKueueState picks the ports (free now; the webhook's on the node IP, the rest on
// 127.0.0.1).
func newKueueState(bin, nodeIP string) (*KueueState, error) {
	k := &KueueState{Version: kueueVersion, Bin: bin}
	var err error
	if k.WebhookPort, err = freePortOn(nodeIP); err != nil {
		return nil, err
	}
	if k.HealthPort, err = freePortOn("127.0.0.1"); err != nil {
		return nil, err
	}
	if k.MetricsPort, err = freePortOn("127.0.0.1"); err != nil {
		return nil, err
	}
	return k, nil
}

// waitKueueReady waits until the manager's /readyz answers: its webhook server listens.
func (c *Cluster) waitKueueReady() error {
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", c.Kueue.HealthPort)
	return c.waitFor(cKueue, "kueue ready", 2*time.Minute, func() error { return httpOK(url) })
}

// upKueue starts Kueue on a cluster that is up: the CRDs first, then the manager, and the
// webhook configurations last, once the manager serves them (a webhook with failurePolicy
// Fail and nobody behind it would reject every Job of the cluster).
func (c *Cluster) upKueue(cache string) error {
	bin, err := ensureKueue(filepath.Join(cache, "kueue", kueueVersion))
	if err != nil {
		return err
	}
	if pid, ok := c.running(cKueue); ok && c.Kueue != nil {
		logf("kueue already running (pid %d)", pid)
		return nil
	}
	m, err := c.prepareKueue(bin)
	if err != nil {
		return err
	}
	a, err := c.kueueAPI()
	if err != nil {
		return err
	}
	if err := a.applyCRDs(m.CRDs); err != nil {
		return err
	}
	pid, err := c.start(c.kueueComponent())
	if err != nil {
		return err
	}
	logf("started kueue %s (pid %d, log %s)", kueueVersion, pid, c.logFile(cKueue))
	if err := c.waitKueueReady(); err != nil {
		return err
	}
	if err := a.applyWebhooks(m.Mutating, m.Validating); err != nil {
		return err
	}
	logf("kueue %s serves its webhooks at %s (%d CRDs; batch/job integration; queue with the label kueue.x-k8s.io/queue-name)", kueueVersion, c.webhookURL(), len(m.CRDs))
	return nil
}

// removeKueue takes Kueue off a running cluster: its webhook configurations first, then its
// CRDs (with every Kueue object; the manager still runs to drop its finalizers), then the
// manager and its files.
func (c *Cluster) removeKueue() error {
	if c.Kueue == nil {
		logf("no kueue in %s", c.StateDir)
		return nil
	}
	a, err := c.kueueAPI()
	if err != nil {
		return err
	}
	if err := a.deleteWebhooks(c.Kueue.MutatingWebhook, c.Kueue.ValidatingWebhook); err != nil {
		return err
	}
	if err := a.deleteCRDs(c.Kueue.CRDs); err != nil {
		return err
	}
	if err := c.stopKueue(); err != nil {
		return err
	}
	c.Kueue = nil
	if err := os.RemoveAll(c.path("kueue")); err != nil {
		return err
	}
	logf("removed kueue: its webhook configurations, CRDs, process and files")
	return c.save()
}

// stopKueue stops the manager and removes /etc/kueue if up made it.
func (c *Cluster) stopKueue() error {
	if ok, err := c.stop(cKueue, 10*time.Second); err != nil {
		return err
	} else if ok {
		logf("stopped kueue")
	}
	if _, err := os.Stat(kueueEtcMarker); err == nil {
		return os.RemoveAll(filepath.Dir(kueueEtcMarker))
	}
	return nil
}

// prepareKueue decides the ports (or keeps those of cluster.json), reads the manifests and
// writes the manager's files.
func (c *Cluster) prepareKueue(bin string) (kueueObjects, error) {
	if c.Kueue == nil || c.Kueue.Version != kueueVersion {
		k, err := newKueueState(bin, c.NodeIP)
		if err != nil {
			return kueueObjects{}, err
		}
		c.Kueue = k
	}
	c.Kueue.Bin = bin
	m, err := c.kueueManifests()
	if err != nil {
		return kueueObjects{}, err
	}
	if err := c.save(); err != nil {
		return kueueObjects{}, err
	}
	return m, c.writeKueueFiles()
}

// kueueManifests reads Kueue's CRDs and webhook configurations from its module, rewritten for
// this cluster, and records their names for removeKueue.
func (c *Cluster) kueueManifests() (kueueObjects, error) {
	mod, err := kueueModuleDir()
	if err != nil {
		return kueueObjects{}, err
	}
	ca, err := os.ReadFile(c.path("pki", "ca.crt"))
	if err != nil {
		return kueueObjects{}, err
	}
	m, err := readKueueObjects(mod, c.webhookURL(), ca)
	if err != nil {
		return kueueObjects{}, err
	}
	c.Kueue.CRDs = m.crdNames()
	c.Kueue.MutatingWebhook, c.Kueue.ValidatingWebhook = m.Mutating.Name, m.Validating.Name
	return m, nil
}

// writeKueueFiles writes the manager's configuration and its serving certificate (signed by
// the cluster CA, for the node IP and 127.0.0.1) for the webhook and the metrics server.
func (c *Cluster) writeKueueFiles() error {
	ca, err := loadKeyPair(c.path("pki"), "ca")
	if err != nil {
		return err
	}
	kp, err := ca.sign(certSpec{CN: "kueue-webhook", Server: true, DNS: []string{"localhost"},
		IPs: []net.IP{net.ParseIP(c.NodeIP), net.ParseIP("127.0.0.1")}}, time.Now())
	if err != nil {
		return err
	}
	if err := kp.writeTLS(c.path("kueue", "certs")); err != nil {
		return err
	}
	if err := claimEtcKueue(); err != nil {
		return err
	}
	if err := kp.writeTLS(kueueMetricsCertDir); err != nil {
		return err
	}
	return writeFileAtomic(c.path("kueue", "config.yaml"), []byte(c.kueueConfig()), 0o644)
}

// writeTLS writes dir/tls.crt and dir/tls.key, the names controller-runtime reads.
func (kp *keyPair) writeTLS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return kp.write(dir, "tls")
}

// claimEtcKueue makes /etc/kueue with a marker, or finds it made by an earlier up; an
// /etc/kueue of someone else's is left alone.
func claimEtcKueue() error {
	if _, err := os.Stat(kueueEtcMarker); err == nil {
		return nil
	}
	if _, err := os.Stat(filepath.Dir(kueueEtcMarker)); err == nil {
		return fmt.Errorf("/etc/kueue exists and was not made by cluster up: Kueue's manager would read its metrics certificate there; move it away")
	}
	return writeFileAtomic(kueueEtcMarker, []byte("made by hack/cluster up --kueue; removed with Kueue\n"), 0o644)
}

// kueueDown is the subcommand kueue-down.
func kueueDown(o options) error {
	c, err := loadCluster(o.StateDir)
	if err != nil {
		return fmt.Errorf("no cluster in %s: %w", o.StateDir, err)
	}
	return c.removeKueue()
}
