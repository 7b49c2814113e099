package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certSpec describes one certificate signed by the cluster CA.
type certSpec struct {
	Name   string // file name stem under pki/
	CA     string // the signing CA's stem: "ca" (the cluster CA) when empty, or "etcd-ca"
	CN     string
	Orgs   []string
	Client bool
	Server bool
	DNS    []string
	IPs    []net.IP
}

// certSpecs lists every certificate of a cluster on node name/ip.
func certSpecs(nodeName, nodeIP string) []certSpec {
	ip := net.ParseIP(nodeIP)
	return []certSpec{
		{Name: "apiserver", CN: "kube-apiserver", Server: true,
			DNS: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local", "localhost", nodeName},
			IPs: []net.IP{ip, net.ParseIP(serviceIP), net.ParseIP("127.0.0.1")}},
		{Name: "apiserver-kubelet-client", CN: "kube-apiserver-kubelet-client", Orgs: []string{"system:masters"}, Client: true},
		{Name: "admin", CN: "admin", Orgs: []string{"system:masters"}, Client: true},
		{Name: "kube-controller-manager", CN: "system:kube-controller-manager", Client: true},
		{Name: "kube-scheduler", CN: "system:kube-scheduler", Client: true},
		{Name: "kubelet", CN: "system:node:" + nodeName, Orgs: []string{"system:nodes"}, Client: true},
		{Name: "kubelet-serving", CN: "system:node:" + nodeName, Orgs: []string{"system:nodes"}, Server: true,
			DNS: []string{nodeName, "localhost"}, IPs: []net.IP{ip, net.ParseIP("127.0.0.1")}},
		{Name: "kube-proxy", CN: "system:kube-proxy", Client: true},
		// etcd has a CA of its own: etcd trusts every client certificate of its CA, and the
		// cluster CA also signs the CSRs that the controller manager approves.
		{Name: "etcd-server", CA: etcdCA, CN: "queuejob-etcd", Server: true,
			DNS: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}},
		{Name: "etcd-peer", CA: etcdCA, CN: "queuejob-etcd-peer", Server: true, Client: true,
			DNS: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}},
		{Name: "apiserver-etcd-client", CA: etcdCA, CN: "kube-apiserver-etcd-client", Client: true},
	}
}

// etcdCA is the stem of the CA that signs etcd's certificates and its clients'.
const etcdCA = "etcd-ca"

// keyPair is a certificate with its key.
type keyPair struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
}

func newCA(cn string, now time.Time) (*keyPair, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &keyPair{Cert: cert, Key: key}, err
}

func (ca *keyPair) sign(s certSpec, now time.Time) (*keyPair, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: s.CN, Organization: s.Orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     s.DNS,
		IPAddresses:  s.IPs,
	}
	if s.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if s.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &keyPair{Cert: cert, Key: key}, err
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func publicKeyPEM(k crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func (kp *keyPair) write(dir, name string) error {
	k, err := keyPEM(kp.Key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, name+".key"), k, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, name+".crt"), certPEM(kp.Cert), 0o644)
}

func loadKeyPair(dir, name string) (*keyPair, error) {
	cb, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, err
	}
	cblk, _ := pem.Decode(cb)
	kblk, _ := pem.Decode(kb)
	if cblk == nil || kblk == nil {
		return nil, fmt.Errorf("%s/%s: not PEM", dir, name)
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kblk.Bytes)
	if err != nil {
		return nil, err
	}
	return &keyPair{Cert: cert, Key: key}, nil
}

// writePKI creates dir with the CA, every certificate of certSpecs and the service-account
// key pair (sa.key, sa.pub). Files already there are kept: a second up reuses them.
func writePKI(dir, nodeName, nodeIP string, now time.Time) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil { // one made by an older up is 0755
		return err
	}
	cas := map[string]*keyPair{}
	for stem, cn := range map[string]string{"ca": "queuejob-cluster-ca", etcdCA: "queuejob-etcd-ca"} {
		ca, err := loadKeyPair(dir, stem)
		if errors.Is(err, os.ErrNotExist) {
			if ca, err = newCA(cn, now); err == nil {
				err = ca.write(dir, stem)
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", stem, err)
		}
		cas[stem] = ca
	}
	for _, s := range certSpecs(nodeName, nodeIP) {
		if _, err := os.Stat(filepath.Join(dir, s.Name+".crt")); err == nil {
			continue
		}
		ca := cas["ca"]
		if s.CA != "" {
			ca = cas[s.CA]
		}
		kp, err := ca.sign(s, now)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		if err := kp.write(dir, s.Name); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "sa.pub")); err == nil {
		return nil
	}
	sa, err := newKey()
	if err != nil {
		return err
	}
	k, err := keyPEM(sa)
	if err != nil {
		return err
	}
	p, err := publicKeyPEM(sa.Public())
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "sa.key"), k, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "sa.pub"), p, 0o644)
}
