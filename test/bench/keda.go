package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// kedaNamespace is where KEDA keeps its cluster objects (KEDA_CLUSTER_OBJECT_NAMESPACE).
const kedaNamespace = "keda"

// startKEDA starts KEDA's operator (built by make keda from the module proxy) against
// the control plane, as its Helm chart runs it (info logs, the default rate limits and
// reconcilers), through a counting proxy like ours. Its gRPC metrics service, which
// keda-metrics-apiserver would call, needs a serving certificate: a throwaway one.
func (b *bench) startKEDA(ctx context.Context, cp *ControlPlane, tag string) (*Operator, error) {
	if _, err := os.Stat(b.o.KEDA); err != nil {
		return nil, fmt.Errorf("KEDA's operator: %w (make keda builds it)", err)
	}
	if b.o.KEDACRDs == "" {
		return nil, fmt.Errorf("no -keda-crds: KEDA's CRDs were not installed")
	}
	c, err := newClient(cp)
	if err != nil {
		return nil, err
	}
	if err := createNamespace(ctx, c, kedaNamespace); err != nil {
		return nil, err
	}
	certs := filepath.Join(b.o.Work, tag+"-keda-certs")
	if err := writeServingCert(certs); err != nil {
		return nil, err
	}
	op, err := b.launch(ctx, cp, "keda-operator", tag+"-keda", "scaledjob", b.o.KEDA, []string{
		"WATCH_NAMESPACE=", "POD_NAMESPACE=" + kedaNamespace,
		"KEDA_CLUSTER_OBJECT_NAMESPACE=" + kedaNamespace, "OPERATOR_NAME=keda-operator",
	}, func(metrics, health, grpc string) []string {
		return []string{
			"--metrics-bind-address=" + metrics,
			"--health-probe-bind-address=" + health,
			"--metrics-service-bind-address=" + grpc,
			"--leader-elect=false", "--enable-cert-rotation=false", "--cert-dir=" + certs,
			"--enable-webhook-patching=false", "--enable-apiservice-patching=false",
			"--zap-log-level=info", "--zap-encoder=console",
		}
	})
	if err != nil {
		return nil, err
	}
	b.res.Versions["keda"] = b.o.KEDAVersion
	return op, nil
}

// writeServingCert writes ca.crt, tls.crt and tls.key for 127.0.0.1, where KEDA reads them.
func writeServingCert(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := servers.NewCA("keda-bench")
	if err != nil {
		return err
	}
	f, err := ca.WriteServerCert(dir, servers.ServerHosts...)
	if err != nil {
		return err
	}
	for from, to := range map[string]string{f.CACert: "ca.crt", f.Cert: "tls.crt", f.Key: "tls.key"} {
		if err := os.Rename(from, filepath.Join(dir, to)); err != nil {
			return err
		}
	}
	return nil
}
