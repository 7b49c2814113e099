// Package metricsauth guards the manager's metrics endpoint (--metrics-secure): each
// request's bearer token is checked with a TokenReview and its right to the request's
// verb on the path with a SubjectAccessReview, the answers cached for a short while.
//
// It does what controller-runtime's filters.WithAuthenticationAndAuthorization does over
// the same two APIs, without k8s.io/apiserver's delegating authenticator and authorizer:
// those pull gRPC, OpenTelemetry and CEL into the binary, 27 MB of its 65 MB, which the
// manager pays for in resident memory (file pages) whether or not anyone scrapes it.
package metricsauth

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

const (
	// allowTTL is how long an allowed token is let in without asking again; the
	// apiserver's delegating authenticator caches a TokenReview for a minute too.
	allowTTL = time.Minute
	// denyTTL is how long a refused token is refused without asking again.
	denyTTL = 30 * time.Second
	// reviewTimeout bounds each review.
	reviewTimeout = 10 * time.Second
	// maxEntries bounds the cache; past it, the expired answers go, then all.
	maxEntries = 4096
)

// Provider is a metricsserver.Options.FilterProvider.
func Provider(cfg *rest.Config, hc *http.Client) (metricsserver.Filter, error) {
	authn, err := authnclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	authz, err := authzclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	return newGuard(authn.TokenReviews(), authz.SubjectAccessReviews()).filter, nil
}

func newGuard(tokens authnclient.TokenReviewInterface, access authzclient.SubjectAccessReviewInterface) *guard {
	return &guard{tokens: tokens, access: access, now: time.Now, cache: map[key]answer{}}
}

// guard answers whether a request may pass, from the two reviews or its cache.
type guard struct {
	tokens authnclient.TokenReviewInterface
	access authzclient.SubjectAccessReviewInterface
	now    func() time.Time

	mu    sync.Mutex
	cache map[key]answer
}

// key is a request as the guard judges it: its token's digest (never the token itself),
// verb and path.
type key struct {
	token      [sha256.Size]byte
	verb, path string
}

// answer is a judged request's HTTP status (200: let it pass) until it expires.
type answer struct {
	status int
	until  time.Time
}

func (g *guard) filter(log logr.Logger, next http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		status, err := g.judge(req.Context(), req)
		switch {
		case err != nil && req.Context().Err() != nil:
			// The scraper has gone: nothing to answer, nothing wrong here.
		case err != nil:
			log.Error(err, "Checking a metrics request's token failed")
			http.Error(w, "Checking the token failed", http.StatusInternalServerError)
		case status != http.StatusOK:
			http.Error(w, http.StatusText(status), status)
		default:
			req = req.Clone(req.Context())
			req.Header.Del("Authorization") // the handler has no use for the token
			next.ServeHTTP(w, req)
		}
	}), nil
}

// judge is the status a request earns: 401 without a bearer token or with one the API
// server does not authenticate, 403 if the token's user may not use the verb on the path,
// 200 otherwise. An error is a review that failed; it is not cached.
func (g *guard) judge(ctx context.Context, req *http.Request) (int, error) {
	token, ok := bearerToken(req.Header.Get("Authorization"))
	if !ok {
		return http.StatusUnauthorized, nil
	}
	k := key{token: sha256.Sum256([]byte(token)), verb: strings.ToLower(req.Method), path: req.URL.Path}
	if status, ok := g.cached(k); ok {
		return status, nil
	}
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	status, err := g.review(ctx, token, k)
	if err != nil {
		return 0, err
	}
	ttl := allowTTL
	if status != http.StatusOK {
		ttl = denyTTL
	}
	g.store(k, answer{status: status, until: g.now().Add(ttl)})
	return status, nil
}

// review asks the API server who the token is and whether that user may use k's verb on
// k's path.
func (g *guard) review(ctx context.Context, token string, k key) (int, error) {
	tr, err := g.tokens.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return 0, err
	}
	if !tr.Status.Authenticated {
		return http.StatusUnauthorized, nil
	}
	u := tr.Status.User
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Username, UID: u.UID, Groups: u.Groups, Extra: map[string]authzv1.ExtraValue{},
		NonResourceAttributes: &authzv1.NonResourceAttributes{Path: k.path, Verb: k.verb},
	}}
	for name, v := range u.Extra {
		sar.Spec.Extra[name] = authzv1.ExtraValue(v)
	}
	sar, err = g.access.Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return 0, err
	}
	if !sar.Status.Allowed || sar.Status.Denied {
		return http.StatusForbidden, nil
	}
	return http.StatusOK, nil
}

// bearerToken is the token of an "Authorization: Bearer <token>" header, read as the API
// server reads it (a third word is ignored).
func bearerToken(header string) (string, bool) {
	parts := strings.SplitN(strings.TrimSpace(header), " ", 3)
	if len(parts) < 2 || !strings.EqualFold(parts[0], "bearer") || parts[1] == "" {
		return "", false
	}
	return parts[1], true
}

func (g *guard) cached(k key) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	a, ok := g.cache[k]
	if !ok || !g.now().Before(a.until) {
		return 0, false
	}
	return a.status, true
}

func (g *guard) store(k key, a answer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.cache) >= maxEntries {
		now := g.now()
		for k, old := range g.cache {
			if !now.Before(old.until) {
				delete(g.cache, k)
			}
		}
		if len(g.cache) >= maxEntries {
			clear(g.cache)
		}
	}
	g.cache[k] = a
}
