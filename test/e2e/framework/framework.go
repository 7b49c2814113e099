// Package framework drives a real cluster for the e2e suite (test/e2e) and `make demo`
// (hack/demo): it connects through a kubeconfig, installs the chart with helm, runs the
// seed examples' samples with the project's images, and reads QueueJobs, pods and logs.
// It holds no test assertions, so the demo can use it too.
package framework

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// Scheme knows the built-in kinds and QueueJobs.
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(qjv1.AddToScheme(s))
	return s
}()

// Cluster is a cluster reached through a kubeconfig, with the tools that drive it.
type Cluster struct {
	Kubeconfig string
	Config     *rest.Config
	Client     client.Client
	Clientset  kubernetes.Interface
	// Kubectl and Helm are the binaries' paths.
	Kubectl, Helm string
}

// Connect reads the kubeconfig (the KUBECONFIG rules when path is empty) and checks that
// the API server answers within timeout.
func Connect(path string, timeout time.Duration) (*Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 50, 100
	probe := rest.CopyConfig(cfg)
	probe.Timeout = timeout
	cs, err := kubernetes.NewForConfig(probe)
	if err != nil {
		return nil, err
	}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		return nil, fmt.Errorf("the API server at %s does not answer: %w", cfg.Host, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, err
	}
	full, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	kc := path
	if kc == "" {
		kc = os.Getenv("KUBECONFIG")
	}
	return &Cluster{Kubeconfig: kc, Config: cfg, Client: c, Clientset: full, Kubectl: "kubectl", Helm: "helm"}, nil
}

// Run runs a command (kubectl, helm, ...) against the cluster and returns its combined
// output; the error holds the output too.
func (c *Cluster) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = os.Environ()
	if c.Kubeconfig != "" {
		cmd.Env = append(cmd.Env, "KUBECONFIG="+c.Kubeconfig)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// KubectlRun runs kubectl with args.
func (c *Cluster) KubectlRun(ctx context.Context, args ...string) (string, error) {
	return c.Run(ctx, c.Kubectl, args...)
}

// NodeAddress is the InternalIP of the cluster's first node: where a local cluster's pods
// reach servers on the host.
func (c *Cluster) NodeAddress(ctx context.Context) (string, error) {
	var nodes corev1.NodeList
	if err := c.Client.List(ctx, &nodes); err != nil {
		return "", err
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				return a.Address, nil
			}
		}
	}
	return "", fmt.Errorf("no node has an InternalIP")
}

// Release is a helm release of the chart.
type Release struct {
	Name, Namespace string
	// Chart is the chart's directory.
	Chart string
	// Values are --set values.
	Values map[string]string
}

// Install runs helm upgrade --install --wait for the release.
func (c *Cluster) Install(ctx context.Context, r Release) (string, error) {
	args := []string{"upgrade", "--install", r.Name, r.Chart, "-n", r.Namespace, "--create-namespace", "--wait", "--timeout", "5m"}
	keys := make([]string, 0, len(r.Values))
	for k := range r.Values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--set", k+"="+r.Values[k])
	}
	return c.Run(ctx, c.Helm, args...)
}

// Uninstall runs helm uninstall --wait.
func (c *Cluster) Uninstall(ctx context.Context, r Release) (string, error) {
	return c.Run(ctx, c.Helm, "uninstall", r.Name, "-n", r.Namespace, "--wait", "--ignore-not-found")
}

// PodLogs returns the logs of the pods with the label selector in ns, by pod name.
func (c *Cluster) PodLogs(ctx context.Context, ns string, selector map[string]string) (map[string]string, error) {
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(selector)); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		b, err := c.Clientset.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			return nil, fmt.Errorf("logs of pod %s: %w", p.Name, err)
		}
		out[p.Name] = string(b)
	}
	return out, nil
}

// ImageDigest is the digest of the image in an OCI layout tarball of make image (the first
// manifest of its index.json), "" if the file cannot be read. Put into a pod annotation,
// it rolls the manager when the image under the same tag changed.
func ImageDigest(tarball string) string {
	f, err := os.Open(tarball)
	if err != nil {
		return ""
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return ""
		}
		if strings.TrimPrefix(h.Name, "./") != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Digest string `json:"digest"`
			} `json:"manifests"`
		}
		if json.NewDecoder(tr).Decode(&idx) != nil || len(idx.Manifests) == 0 {
			return ""
		}
		return idx.Manifests[0].Digest
	}
}
