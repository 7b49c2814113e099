//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var _ = Describe("The manager's metrics", func() {
	It("serves /metrics over HTTPS to a token bound to the chart's metrics-reader role, and to no other", func(ctx SpecContext) {
		if !nodeIsThisMachine(ctx) {
			Skip("the manager's pod IP is reachable only from the node")
		}
		ns := namespace(ctx, nil)
		reader, stranger := saToken(ctx, ns, "scraper"), saToken(ctx, ns, "stranger")
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "e2e-metrics-" + ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: release.Name + "-metrics-reader"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "scraper", Namespace: ns}},
		}
		Expect(cluster.Client.Create(ctx, binding)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) {
			Expect(client.IgnoreNotFound(cluster.Client.Delete(ctx, binding))).To(Succeed())
		})

		url := "https://" + net.JoinHostPort(managerPodIP(ctx), "8443") + "/metrics"
		// The certificate is the manager's self-signed one (metrics.certSecret unset).
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		Eventually(ctx, func(g Gomega) {
			status, body := scrape(ctx, g, hc, url, reader)
			g.Expect(status).To(Equal(http.StatusOK))
			g.Expect(body).To(ContainSubstring("controller_runtime_reconcile_total"))
		}).Should(Succeed())
		for _, tc := range []struct {
			token string
			want  int
		}{{"", http.StatusUnauthorized}, {"not-a-token", http.StatusUnauthorized}, {stranger, http.StatusForbidden}} {
			Eventually(ctx, func(g Gomega) {
				status, body := scrape(ctx, g, hc, url, tc.token)
				g.Expect(status).To(Equal(tc.want))
				g.Expect(body).NotTo(ContainSubstring("controller_runtime"))
			}).Should(Succeed())
		}
	})
})

// saToken creates a service account and returns a token of it.
func saToken(ctx context.Context, ns, name string) string {
	Expect(cluster.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}})).To(Succeed())
	tr, err := cluster.Clientset.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	return tr.Status.Token
}

// managerPodIP is the IP of the release's running, ready manager pod.
func managerPodIP(ctx context.Context) string {
	var ip string
	Eventually(ctx, func(g Gomega) {
		var pods corev1.PodList
		g.Expect(cluster.Client.List(ctx, &pods, client.InNamespace(release.Namespace),
			client.MatchingLabels{"app.kubernetes.io/instance": release.Name})).To(Succeed())
		ip = ""
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if p.DeletionTimestamp == nil && c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ip = p.Status.PodIP
				}
			}
		}
		g.Expect(ip).NotTo(BeEmpty(), "a ready manager pod")
	}).Should(Succeed())
	return ip
}

// scrape GETs url with the token (none if empty) and returns the status and the body.
func scrape(ctx context.Context, g Gomega, hc *http.Client, url, token string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	g.Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, string(body)
}
