// Command smoke is the local cluster's smoke test, run as a pod on the pod network. It
// proves what an in-cluster client needs: with the pod's service-account token and CA it
// GETs /api through the `kubernetes` Service ($KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
// i.e. kube-proxy's rules), and, if SMOKE_TCP=<host:port> is set, it reads a line from a
// TCP port bound on the node's address (where the e2e suite's brokers listen). Exit
// status 0 only if every check passed; each retries for up to SMOKE_TIMEOUT (60s).
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	timeout := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("SMOKE_TIMEOUT")); err == nil {
		timeout = d
	}
	host, _ := os.Hostname()
	fmt.Printf("smoke: pod %s, addresses %s\n", host, addrs())
	ok := retry("api", timeout, checkAPI)
	if t := os.Getenv("SMOKE_TCP"); t != "" {
		ok = retry("node-tcp", timeout, func() (string, error) { return checkTCP(t) }) && ok
	}
	if !ok {
		fmt.Println("smoke: FAILED")
		os.Exit(1)
	}
	fmt.Println("smoke: OK")
}

func retry(name string, timeout time.Duration, f func() (string, error)) bool {
	deadline := time.Now().Add(timeout)
	for {
		msg, err := f()
		if err == nil {
			fmt.Printf("smoke: %s: ok: %s\n", name, msg)
			return true
		}
		if time.Now().After(deadline) {
			fmt.Printf("smoke: %s: FAILED: %v\n", name, err)
			return false
		}
		fmt.Printf("smoke: %s: retrying: %v\n", name, err)
		time.Sleep(2 * time.Second)
	}
}

func checkAPI() (string, error) {
	h, p := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if h == "" || p == "" {
		return "", fmt.Errorf("KUBERNETES_SERVICE_HOST/PORT not set")
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return "", err
	}
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return "", fmt.Errorf("no certificate in %s/ca.crt", saDir)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := "https://" + net.JoinHostPort(h, p) + "/api"
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	var v struct {
		Versions                   []string
		ServerAddressByClientCIDRs []struct{ ServerAddress string }
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "", err
	}
	return fmt.Sprintf("GET %s with the service-account token: versions %v", url, v.Versions), nil
}

func checkTCP(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("read %q from %s", strings.TrimSpace(line), addr), nil
}

func addrs() string {
	var out []string
	as, _ := net.InterfaceAddrs()
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
			out = append(out, n.String())
		}
	}
	return strings.Join(out, " ")
}
