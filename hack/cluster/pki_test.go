package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestWritePKI(t *testing.T) {
	dir := t.TempDir()
	if err := writePKI(dir, "node-a", "192.0.2.10", time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := loadKeyPair(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA {
		t.Error("ca.crt is no CA")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, s := range certSpecs("node-a", "192.0.2.10") {
		if s.CA != "" {
			continue // etcd's, see TestEtcdPKI
		}
		kp, err := loadKeyPair(dir, s.Name)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		var usages []x509.ExtKeyUsage
		if s.Client {
			usages = append(usages, x509.ExtKeyUsageClientAuth)
		}
		if s.Server {
			usages = append(usages, x509.ExtKeyUsageServerAuth)
		}
		for _, u := range usages {
			if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
				t.Errorf("%s does not verify for usage %v: %v", s.Name, u, err)
			}
		}
		if !kp.Key.PublicKey.Equal(kp.Cert.PublicKey) {
			t.Errorf("%s.key does not match %s.crt", s.Name, s.Name)
		}
		if fi, _ := os.Stat(filepath.Join(dir, s.Name+".key")); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s.key has mode %v", s.Name, fi.Mode().Perm())
		}
	}

	api, _ := loadKeyPair(dir, "apiserver")
	for _, host := range []string{"192.0.2.10", "10.96.0.1", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "kubernetes"} {
		if err := api.Cert.VerifyHostname(host); err != nil {
			t.Errorf("apiserver certificate: %v", err)
		}
	}
	if err := api.Cert.VerifyHostname("192.0.2.11"); err == nil {
		t.Error("apiserver certificate valid for a foreign address")
	}
	if slices.Contains(api.Cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Error("apiserver serving certificate is also a client certificate")
	}

	subjects := map[string][2]any{
		"admin":                   {"admin", []string{"system:masters"}},
		"kubelet":                 {"system:node:node-a", []string{"system:nodes"}},
		"kube-controller-manager": {"system:kube-controller-manager", []string(nil)},
		"kube-scheduler":          {"system:kube-scheduler", []string(nil)},
		"kube-proxy":              {"system:kube-proxy", []string(nil)},
	}
	for name, want := range subjects {
		kp, _ := loadKeyPair(dir, name)
		if kp.Cert.Subject.CommonName != want[0] || !slices.Equal(kp.Cert.Subject.Organization, want[1].([]string)) {
			t.Errorf("%s: subject CN=%q O=%q, want CN=%q O=%q", name, kp.Cert.Subject.CommonName, kp.Cert.Subject.Organization, want[0], want[1])
		}
	}
	serving, _ := loadKeyPair(dir, "kubelet-serving")
	if !slices.ContainsFunc(serving.Cert.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("192.0.2.10")) }) {
		t.Errorf("kubelet serving certificate lacks the node IP: %v", serving.Cert.IPAddresses)
	}

	// The service-account pair matches.
	kb, _ := os.ReadFile(filepath.Join(dir, "sa.key"))
	pb, _ := os.ReadFile(filepath.Join(dir, "sa.pub"))
	kblk, _ := pem.Decode(kb)
	pblk, _ := pem.Decode(pb)
	key, err := x509.ParseECPrivateKey(kblk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(pblk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(pub.(*ecdsa.PublicKey)) {
		t.Error("sa.pub is not sa.key's public key")
	}

	// A second run keeps everything.
	before, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	beforeAdmin, _ := os.ReadFile(filepath.Join(dir, "admin.crt"))
	if err := writePKI(dir, "node-a", "192.0.2.10", time.Now()); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	afterAdmin, _ := os.ReadFile(filepath.Join(dir, "admin.crt"))
	if !bytes.Equal(before, after) || !bytes.Equal(beforeAdmin, afterAdmin) {
		t.Error("a second writePKI replaced existing certificates")
	}
}

func TestWritePKIDirMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	// What an older up (or its stateDirs loop) left: a 0755 directory.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writePKI(dir, "node-a", "192.0.2.10", time.Now()); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("pki dir mode %v, want 0700", fi.Mode().Perm())
	}
	if slices.Contains(stateDirs, "pki") {
		t.Error("up's stateDirs creates pki/ with mode 0755 before writePKI")
	}
}
