package metricsauth

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// The filter against a real kube-apiserver (envtest, RBAC on): real service account
// tokens, a real ClusterRole for GET /metrics.

const ns = "monitoring"

type cluster struct {
	cfg *rest.Config
	cs  *kubernetes.Clientset
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v: run `make test` (or `make envtest`), which sets KUBEBUILDER_ASSETS", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := testCtx(t)
	must(t, create(ctx, cs.CoreV1().Namespaces(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(t, create(ctx, cs.RbacV1().ClusterRoles(), &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader"},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}))
	return &cluster{cfg: cfg, cs: cs}
}

// creator is a typed client's Create.
type creator[T any] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
}

func create[T any](ctx context.Context, c creator[T], obj T) error {
	_, err := c.Create(ctx, obj, metav1.CreateOptions{})
	return err
}

// token creates a service account and returns a token of it.
func (c *cluster) token(t *testing.T, name string) string {
	t.Helper()
	ctx := testCtx(t)
	must(t, create(ctx, c.cs.CoreV1().ServiceAccounts(ns), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	tr, err := c.cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	must(t, err)
	return tr.Status.Token
}

// grant binds the metrics-reader role to a service account.
func (c *cluster) grant(t *testing.T, name string) {
	t.Helper()
	must(t, create(testCtx(t), c.cs.RbacV1().ClusterRoleBindings(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
	}))
}

func (c *cluster) revoke(t *testing.T, name string) {
	t.Helper()
	must(t, c.cs.RbacV1().ClusterRoleBindings().Delete(testCtx(t), "metrics-"+name, metav1.DeleteOptions{}))
}

// serve puts the filter of g in front of a handler that answers "metrics".
func serve(t *testing.T, g *guard) *httptest.Server {
	t.Helper()
	return serveFilter(t, g.filter)
}

func serveFilter(t *testing.T, filter metricsserver.Filter) *httptest.Server {
	t.Helper()
	h, err := filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "" {
			http.Error(w, "the token reached the handler", http.StatusTeapot)
			return
		}
		_, _ = io.WriteString(w, "metrics")
	}))
	must(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// get sends a request with an Authorization header (none if empty) and returns its status.
func get(t *testing.T, srv *httptest.Server, method, path, auth string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, srv.URL+path, nil)
	must(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := srv.Client().Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && string(body) != "metrics" {
		t.Errorf("%s %s: 200 with body %q, want the handler's", method, path, body)
	}
	return resp.StatusCode
}

// countingTokens counts the TokenReviews a guard makes.
type countingTokens struct {
	authnclient.TokenReviewInterface
	n atomic.Int32
}

func (c *countingTokens) Create(ctx context.Context, tr *authnv1.TokenReview, o metav1.CreateOptions) (*authnv1.TokenReview, error) {
	c.n.Add(1)
	return c.TokenReviewInterface.Create(ctx, tr, o)
}

// clock is a guard's clock that a test moves.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func TestFilter(t *testing.T) {
	c := startCluster(t)
	scraper, stranger := c.token(t, "scraper"), c.token(t, "stranger")
	c.grant(t, "scraper")
	hc, err := rest.HTTPClientFor(c.cfg)
	must(t, err)
	filter, err := Provider(c.cfg, hc)
	must(t, err)
	srv := serveFilter(t, filter)

	for _, tc := range []struct {
		name, method, path, auth string
		want                     int
	}{
		{"a scraper bound to metrics-reader", "GET", "/metrics", "Bearer " + scraper, 200},
		{"the scheme in lower case", "GET", "/metrics", "bearer " + scraper, 200},
		{"no Authorization header", "GET", "/metrics", "", 401},
		{"basic authentication", "GET", "/metrics", "Basic c2NyYXBlcjpwYXNzd29yZA==", 401},
		{"an empty token", "GET", "/metrics", "Bearer ", 401},
		{"a token the API server never issued", "GET", "/metrics", "Bearer not-a-token", 401},
		{"a service account without the role", "GET", "/metrics", "Bearer " + stranger, 403},
		{"the scraper on another path", "GET", "/debug/pprof/", "Bearer " + scraper, 403},
		{"the scraper with another verb", "POST", "/metrics", "Bearer " + scraper, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := get(t, srv, tc.method, tc.path, tc.auth); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}

	t.Run("answers are cached: allowed for a minute, refused for 30 s", func(t *testing.T) {
		clk := &clock{}
		tokens := &countingTokens{TokenReviewInterface: c.cs.AuthenticationV1().TokenReviews()}
		g := newGuard(tokens, c.cs.AuthorizationV1().SubjectAccessReviews())
		g.now = clk.now
		gs := serve(t, g)
		if got := get(t, gs, "GET", "/metrics", "Bearer "+scraper); got != 200 || tokens.n.Load() != 1 {
			t.Fatalf("first request: status %d after %d reviews, want 200 after 1", got, tokens.n.Load())
		}
		c.revoke(t, "scraper")
		clk.advance(allowTTL - time.Second)
		if got := get(t, gs, "GET", "/metrics", "Bearer "+scraper); got != 200 || tokens.n.Load() != 1 {
			t.Fatalf("within the minute: status %d after %d reviews, want 200 from the cache", got, tokens.n.Load())
		}
		// RBAC's authorizer hears of the deleted binding through a watch: asked again,
		// soon it refuses.
		eventually(t, func() bool {
			clk.advance(allowTTL)
			return get(t, gs, "GET", "/metrics", "Bearer "+scraper) == 403
		})
		n := tokens.n.Load()
		c.grant(t, "scraper")
		clk.advance(denyTTL - time.Second)
		if got := get(t, gs, "GET", "/metrics", "Bearer "+scraper); got != 403 || tokens.n.Load() != n {
			t.Fatalf("within 30 s of a refusal: status %d after %d reviews, want 403 from the cache after %d", got, tokens.n.Load(), n)
		}
		eventually(t, func() bool {
			clk.advance(denyTTL)
			return get(t, gs, "GET", "/metrics", "Bearer "+scraper) == 200
		})
	})

	t.Run("a review that fails is a 500, asked again next time", func(t *testing.T) {
		down := rest.CopyConfig(c.cfg)
		down.Host = "https://127.0.0.1:1"
		cs := kubernetes.NewForConfigOrDie(down)
		tokens := &countingTokens{TokenReviewInterface: cs.AuthenticationV1().TokenReviews()}
		gs := serve(t, newGuard(tokens, cs.AuthorizationV1().SubjectAccessReviews()))
		for i := range 2 {
			if got := get(t, gs, "GET", "/metrics", "Bearer "+scraper); got != 500 {
				t.Fatalf("request %d: status %d, want 500", i, got)
			}
		}
		if n := tokens.n.Load(); n != 2 {
			t.Errorf("%d reviews for two requests, want 2: a failure must not be cached", n)
		}
	})
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		header, want string
		ok           bool
	}{
		{"Bearer abc", "abc", true},
		{"  BEARER abc  ", "abc", true},
		{"Bearer abc def", "abc", true},
		{"Bearer", "", false},
		{"Bearer  abc", "", false},
		{"Token abc", "", false},
		{"", "", false},
	} {
		if got, ok := bearerToken(tc.header); got != tc.want || ok != tc.ok {
			t.Errorf("bearerToken(%q) = %q, %v; want %q, %v", tc.header, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCacheBound(t *testing.T) {
	clk := &clock{}
	g := newGuard(nil, nil)
	g.now = clk.now
	for i := range maxEntries {
		g.store(key{path: string(rune(i))}, answer{status: 200, until: clk.now().Add(time.Duration(i%2+1) * time.Minute)})
	}
	clk.advance(90 * time.Second) // the half stored for a minute expired
	g.store(key{path: "new"}, answer{status: 200, until: clk.now().Add(time.Minute)})
	if got, want := len(g.cache), maxEntries/2+1; got != want {
		t.Errorf("after an insert past the bound with half expired: %d entries, want %d", got, want)
	}
	for i := len(g.cache); i < maxEntries; i++ {
		g.store(key{verb: string(rune(i))}, answer{status: 200, until: clk.now().Add(time.Minute)})
	}
	g.store(key{path: "newer"}, answer{status: 200, until: clk.now().Add(time.Minute)})
	if len(g.cache) != 1 {
		t.Errorf("after an insert past the bound with none expired: %d entries, want 1", len(g.cache))
	}
}

func eventually(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !ok(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not within a minute")
		}
	}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
