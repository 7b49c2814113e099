package chart

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// helmAgainstEnvtest runs helm with args against envtest's API server and returns its output.
func helmAgainstEnvtest(t *testing.T, args ...string) (string, error) {
	t.Helper()
	needCluster(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, testEnv.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testCtx(t), helmBin(t), append([]string{"--kubeconfig", kubeconfig}, args...)...)
	// Helm keeps its caches and config under $HOME: a directory of the test's own.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The release notes (helm install --dry-run, against envtest) say how to create a first
// QueueJob and watch it, and how to grant a scraper the secure metrics.
func TestNotes(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want []string
		not  []string
	}{
		{
			name: "defaults",
			want: []string{
				"kubectl -n notes rollout status deployment/qj-queuejob-operator",
				"kubectl create -f - <<'YAML'\napiVersion: batch.queuejob.io/v1alpha1\nkind: QueueJob\n", "\nYAML\n", "kubectl get queuejobs -w",
				"kubectl describe queuejob pi",
				"It watches QueueJobs in every namespace.",
				"port 8443 (https)", "--clusterrole=qj-queuejob-operator-metrics-reader",
				"helm.sh/resource-policy: keep",
			},
		},
		{
			name: "watch, insecure",
			set:  []string{"watchNamespaces={team-a,team-b}", "metrics.secure=false"},
			// The first QueueJob goes to the first watched namespace, where the manager sees it.
			want: []string{"It watches QueueJobs in: team-a, team-b.", "port 8080 (http)",
				"kubectl -n team-a create -f - <<'YAML'", "kubectl -n team-a get queuejobs -w",
				"kubectl -n team-a get jobs,pods -l batch.queuejob.io/queuejob=pi -w", "kubectl -n team-a describe queuejob pi"},
			not: []string{"metrics-reader", "kubectl create", "kubectl get", "kubectl describe"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// --take-ownership: the CRD that other tests applied exists without Helm's
			// ownership annotations, which a dry-run would otherwise refuse; a dry-run
			// changes nothing.
			args := []string{"install", "qj", chartDir, "--namespace", "notes", "--dry-run=client", "--take-ownership"}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			out, err := helmAgainstEnvtest(t, args...)
			if err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			i := strings.Index(out, "\nNOTES:\n")
			if i < 0 {
				t.Fatalf("no NOTES in:\n%s", out)
			}
			notes := out[i:]
			for _, w := range tc.want {
				if !strings.Contains(notes, w) {
					t.Errorf("the notes lack %q:\n%s", w, notes)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(notes, n) {
					t.Errorf("the notes mention %q:\n%s", n, notes)
				}
			}
		})
	}
}
