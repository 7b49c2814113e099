package main

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func TestWriteKubeconfigs(t *testing.T) {
	c := &Cluster{StateDir: t.TempDir(), NodeName: "node-a", NodeIP: "192.0.2.10", APIPort: 6443}
	if err := writePKI(c.path("pki"), c.NodeName, c.NodeIP, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := writeKubeconfigs(c); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"admin":                   "admin",
		"kubelet":                 "system:node:node-a",
		"kube-proxy":              "system:kube-proxy",
		"kube-scheduler":          "system:kube-scheduler",
		"kube-controller-manager": "system:kube-controller-manager",
	}
	for user, cn := range want {
		cfg, err := clientcmd.LoadFromFile(c.kubeconfigFor(user))
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		if rc.Host != "https://192.0.2.10:6443" {
			t.Errorf("%s: server %q", user, rc.Host)
		}
		blk, _ := pem.Decode(rc.CertData)
		if blk == nil {
			t.Fatalf("%s: no client certificate", user)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cert.Subject.CommonName != cn {
			t.Errorf("%s: client certificate CN %q, want %q", user, cert.Subject.CommonName, cn)
		}
		if len(rc.CAData) == 0 || len(rc.KeyData) == 0 {
			t.Errorf("%s: CA or key not inline", user)
		}
	}
	admin, err := clientcmd.LoadFromFile(c.kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if admin.CurrentContext != "queuejob" {
		t.Errorf("the exported kubeconfig's context is %q", admin.CurrentContext)
	}
}
