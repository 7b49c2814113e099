package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

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
	if err := writeSelfSignedCert(certs); err != nil {
		return nil, err
	}
	proxy, err := startCountingProxy(cp.Config)
	if err != nil {
		return nil, err
	}
	kc := filepath.Join(b.o.Work, tag+"-keda.kubeconfig")
	if err := writeKubeconfig(kc, proxy.URL); err != nil {
		proxy.Close()
		return nil, err
	}
	ports, err := servers.FreePorts(3)
	if err != nil {
		proxy.Close()
		return nil, err
	}
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	p, err := startProc("keda-operator", filepath.Join(b.o.Work, tag+"-keda.log"), []string{
		"KUBECONFIG=" + kc, "WATCH_NAMESPACE=", "POD_NAMESPACE=" + kedaNamespace,
		"KEDA_CLUSTER_OBJECT_NAMESPACE=" + kedaNamespace, "OPERATOR_NAME=keda-operator",
	}, b.o.KEDA,
		"--metrics-bind-address="+addr(ports[0]),
		"--health-probe-bind-address="+addr(ports[1]),
		"--metrics-service-bind-address="+addr(ports[2]),
		"--leader-elect=false", "--enable-cert-rotation=false", "--cert-dir="+certs,
		"--enable-webhook-patching=false", "--enable-apiservice-patching=false",
		"--zap-log-level=info", "--zap-encoder=console",
	)
	if err != nil {
		proxy.Close()
		return nil, err
	}
	op := &Operator{Name: "keda-operator", Proc: p, Proxy: proxy, Controller: "scaledjob",
		MetricsURL: "http://" + addr(ports[0]) + "/metrics"}
	if err := waitHTTP(ctx, p, "http://"+addr(ports[1])+"/readyz", 2*time.Minute); err != nil {
		op.Stop()
		return nil, err
	}
	b.res.Versions["keda"] = kedaVersion
	return op, nil
}

// kedaVersion is the version test/bench/keda/go.mod requires (make keda builds it).
const kedaVersion = "v2.21.0"

// writeSelfSignedCert writes ca.crt, tls.crt and tls.key for 127.0.0.1 into dir.
func writeSelfSignedCert(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "keda-operator"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:              []string{"localhost", "keda-operator"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for name, data := range map[string][]byte{
		"ca.crt":  crt,
		"tls.crt": crt,
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
