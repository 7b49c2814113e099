package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// TestKueueConfig: the manager's configuration binds where up expects it and turns off
// what this cluster cannot serve.
func TestKueueConfig(t *testing.T) {
	c := testCluster()
	c.Kueue = &KueueState{WebhookPort: 9443, HealthPort: 8081, MetricsPort: 8443}
	var got struct {
		ManageJobsWithoutQueueName *bool `json:"manageJobsWithoutQueueName"`
		Health                     struct{ HealthProbeBindAddress string }
		Metrics                    struct{ BindAddress string }
		Webhook                    struct {
			Host    string
			Port    int
			CertDir string
		}
		LeaderElection         struct{ LeaderElect *bool }
		InternalCertManagement struct{ Enable *bool }
		Integrations           struct{ Frameworks []string }
		FeatureGates           map[string]bool
	}
	if err := yaml.Unmarshal([]byte(c.kueueConfig()), &got); err != nil {
		t.Fatal(err)
	}
	checks := map[string][2]any{
		"manageJobsWithoutQueueName": {ptr.Deref(got.ManageJobsWithoutQueueName, true), false},
		"health":                     {got.Health.HealthProbeBindAddress, "127.0.0.1:8081"},
		"metrics":                    {got.Metrics.BindAddress, "127.0.0.1:8443"},
		"webhook host":               {got.Webhook.Host, "192.0.2.10"},
		"webhook port":               {got.Webhook.Port, 9443},
		"webhook certDir":            {got.Webhook.CertDir, "/st/kueue/certs"},
		"leaderElect":                {ptr.Deref(got.LeaderElection.LeaderElect, true), false},
		"internal certs":             {ptr.Deref(got.InternalCertManagement.Enable, true), false},
		"visibility server":          {got.FeatureGates["VisibilityOnDemand"], false},
		"elastic Jobs":               {got.FeatureGates["ElasticJobsViaWorkloadSlices"], true},
	}
	for name, v := range checks {
		if v[0] != v[1] {
			t.Errorf("%s = %v, want %v", name, v[0], v[1])
		}
	}
	if d := cmp.Diff([]string{"batch/job"}, got.Integrations.Frameworks); d != "" {
		t.Errorf("integrations (-want +got):\n%s", d)
	}
	if c.webhookURL() != "https://192.0.2.10:9443" {
		t.Errorf("webhookURL %s", c.webhookURL())
	}
}
