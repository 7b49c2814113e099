package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// etcd serves only TLS with client-certificate authentication, on 127.0.0.1, for clients
// and peers; the API server presents its own client certificate.
func TestEtcdTLSArgs(t *testing.T) {
	c := testCluster()
	comps := c.components()
	etcd := comps[cEtcd].Args
	for flag, want := range map[string]string{
		"listen-client-urls":          "https://127.0.0.1:23790",
		"advertise-client-urls":       "https://127.0.0.1:23790",
		"listen-peer-urls":            "https://127.0.0.1:23800",
		"initial-advertise-peer-urls": "https://127.0.0.1:23800",
		"initial-cluster":             "queuejob=https://127.0.0.1:23800",
		"cert-file":                   "/st/pki/etcd-server.crt",
		"key-file":                    "/st/pki/etcd-server.key",
		"client-cert-auth":            "true",
		"trusted-ca-file":             "/st/pki/etcd-ca.crt",
		"peer-cert-file":              "/st/pki/etcd-peer.crt",
		"peer-key-file":               "/st/pki/etcd-peer.key",
		"peer-client-cert-auth":       "true",
		"peer-trusted-ca-file":        "/st/pki/etcd-ca.crt",
	} {
		if got, ok := flagValue(etcd, flag); !ok || got != want {
			t.Errorf("etcd --%s=%q (set: %v), want %q", flag, got, ok, want)
		}
	}
	for _, a := range etcd {
		if strings.Contains(a, "http://") {
			t.Errorf("etcd argument %q serves plain HTTP", a)
		}
	}
	api := comps[cAPIServer].Args
	for flag, want := range map[string]string{
		"etcd-servers":  "https://127.0.0.1:23790",
		"etcd-cafile":   "/st/pki/etcd-ca.crt",
		"etcd-certfile": "/st/pki/apiserver-etcd-client.crt",
		"etcd-keyfile":  "/st/pki/apiserver-etcd-client.key",
	} {
		if got, ok := flagValue(api, flag); !ok || got != want {
			t.Errorf("kube-apiserver --%s=%q (set: %v), want %q", flag, got, ok, want)
		}
	}
}

// The etcd certificates come from a CA of their own: a client certificate of the cluster
// CA (which the controller manager signs CSRs with) must not open etcd.
func TestEtcdPKI(t *testing.T) {
	dir := t.TempDir()
	if err := writePKI(dir, "node-a", "192.0.2.10", time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := loadKeyPair(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	eca, err := loadKeyPair(dir, "etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	if !eca.Cert.IsCA || eca.Cert.Equal(ca.Cert) {
		t.Fatal("etcd-ca is no CA of its own")
	}
	etcdRoots, clusterRoots := x509.NewCertPool(), x509.NewCertPool()
	etcdRoots.AddCert(eca.Cert)
	clusterRoots.AddCert(ca.Cert)
	verify := func(name string, roots *x509.CertPool, u x509.ExtKeyUsage) error {
		kp, err := loadKeyPair(dir, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, err = kp.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{u}})
		return err
	}
	for _, c := range []struct {
		name string
		u    x509.ExtKeyUsage
	}{
		{"etcd-server", x509.ExtKeyUsageServerAuth},
		{"etcd-peer", x509.ExtKeyUsageServerAuth},
		{"etcd-peer", x509.ExtKeyUsageClientAuth},
		{"apiserver-etcd-client", x509.ExtKeyUsageClientAuth},
	} {
		if err := verify(c.name, etcdRoots, c.u); err != nil {
			t.Errorf("%s for %v: %v", c.name, c.u, err)
		}
		if err := verify(c.name, clusterRoots, c.u); err == nil {
			t.Errorf("%s verifies against the cluster CA", c.name)
		}
	}
	if err := verify("admin", etcdRoots, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("the admin certificate opens etcd")
	}
	srv, _ := loadKeyPair(dir, "etcd-server")
	for _, h := range []string{"127.0.0.1", "localhost"} {
		if err := srv.Cert.VerifyHostname(h); err != nil {
			t.Errorf("etcd-server: %v", err)
		}
	}
	for _, ip := range srv.Cert.IPAddresses {
		if !ip.Equal(net.ParseIP("127.0.0.1")) {
			t.Errorf("etcd-server is valid for %s", ip)
		}
	}
}

// TestEtcdLive starts the etcd binary named by QUEUEJOB_CLUSTER_TEST_ETCD (opt-in; it is
// skipped otherwise) with the cluster's arguments in a temporary state directory: the
// readiness check passes with the client certificate, and plain HTTP and a TLS client
// without a certificate get nothing.
func TestEtcdLive(t *testing.T) {
	bin := os.Getenv("QUEUEJOB_CLUSTER_TEST_ETCD")
	if bin == "" {
		t.Skip("QUEUEJOB_CLUSTER_TEST_ETCD is not set")
	}
	c := &Cluster{StateDir: t.TempDir(), NodeName: "node-a", NodeIP: "192.0.2.10", EtcdTLS: true, Bins: Bins{Etcd: bin}}
	var err error
	if c.EtcdPort, err = freePort(); err != nil {
		t.Fatal(err)
	}
	if c.EtcdPeerPort, err = freePort(); err != nil {
		t.Fatal(err)
	}
	if err := writePKI(c.path("pki"), c.NodeName, c.NodeIP, time.Now()); err != nil {
		t.Fatal(err)
	}
	comp := c.components()[cEtcd]
	cmd := exec.Command(comp.Bin, comp.Args...)
	cmd.Dir = c.StateDir
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for err = c.etcdHealthy(); err != nil && time.Now().Before(deadline); err = c.etcdHealthy() {
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("etcd not healthy: %v\n%s", err, out)
	}
	if err := httpOK(fmt.Sprintf("http://127.0.0.1:%d/v3/kv/range", c.EtcdPort)); err == nil {
		t.Error("etcd answers plain HTTP")
	}
	admin, err := tls.LoadX509KeyPair(c.path("pki", "admin.crt"), c.path("pki", "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	for what, tc := range map[string]*tls.Config{
		"no certificate":                     {InsecureSkipVerify: true},
		"the cluster CA's admin certificate": {InsecureSkipVerify: true, Certificates: []tls.Certificate{admin}},
	} {
		cl := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		for _, u := range []string{c.etcdURL() + "/v3/kv/range", c.peerURL() + "/members"} {
			resp, err := cl.Post(u, "application/json", strings.NewReader(`{"key":"L3JlZ2lzdHJ5"}`))
			if err == nil {
				resp.Body.Close()
				t.Errorf("%s answers a client with %s: %s", u, what, resp.Status)
			}
		}
	}
}
