package main

import (
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeconfigUsers maps each kubeconfig under kubeconfigs/ to the pki/ certificate it holds.
var kubeconfigUsers = []string{"admin", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}

// buildKubeconfig returns a self-contained kubeconfig (certificates inline) for the client
// certificate pki/<user>.crt.
func buildKubeconfig(server string, ca, cert, key []byte, user string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["queuejob"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	ctx := "queuejob"
	if user != "admin" {
		ctx = user + "@queuejob"
	}
	cfg.Contexts[ctx] = &clientcmdapi.Context{Cluster: "queuejob", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = ctx
	return cfg
}

// writeKubeconfigs writes kubeconfigs/<user>.kubeconfig for every user and the admin's also
// as <state>/kubeconfig, the one to export.
func writeKubeconfigs(c *Cluster) error {
	pki := c.path("pki")
	ca, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return err
	}
	for _, u := range kubeconfigUsers {
		cert, err := os.ReadFile(filepath.Join(pki, u+".crt"))
		if err != nil {
			return err
		}
		key, err := os.ReadFile(filepath.Join(pki, u+".key"))
		if err != nil {
			return err
		}
		b, err := clientcmd.Write(*buildKubeconfig(c.serverURL(), ca, cert, key, u))
		if err != nil {
			return err
		}
		if err := writeFileAtomic(c.kubeconfigFor(u), b, 0o600); err != nil {
			return err
		}
		if u == "admin" {
			if err := writeFileAtomic(c.kubeconfig(), b, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}
