package main

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	natskube "github.com/queuejob/queuejob-operator/pkg/queue/nats/kube"
	rabbitmqkube "github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq/kube"
	rediskube "github.com/queuejob/queuejob-operator/pkg/queue/redis/kube"
	streamkube "github.com/queuejob/queuejob-operator/pkg/queue/redis/stream/kube"
)

// qjResource is the QueueJob resource as RBAC and kubectl name it.
const qjResource = "queuejobs.batch.queuejob.io"

// apiError turns an API error into one that says what to do. verb and resource are what
// the request needed (for RBAC: "get", "secrets"), what names the object or list.
func apiError(err error, verb, resource, ns, what string) error {
	var status apierrors.APIStatus
	switch {
	case meta.IsNoMatchError(err) || (apierrors.IsNotFound(err) && isMissingResource(err)):
		return fmt.Errorf("this cluster has no QueueJob API (%s, %s): install the CRD (make install, or kubectl apply -f config/crd/bases), or check --context", qjResource, qjv1.GroupVersion)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s: forbidden: you may not %s %s in namespace %q (RBAC): ask for the %q verb on %q in namespace %q; check with: kubectl auth can-i %s %s -n %s",
			what, verb, resource, ns, verb, resource, ns, verb, resource, ns)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: the API server did not accept your credentials: log in again, or check --kubeconfig and --context", what)
	case errors.As(err, &status):
		return fmt.Errorf("%s: %w", what, err)
	default:
		return fmt.Errorf("%s: cannot reach the API server: %w: check --kubeconfig, --context and --server", what, err)
	}
}

// isMissingResource reports whether a NotFound came from a resource the API server does
// not serve (no CRD) rather than from a missing object.
func isMissingResource(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d == nil || d.Name == ""
}

// getQueueJob reads a QueueJob; a missing one is named with its namespace.
func getQueueJob(ctx context.Context, c client.Client, ns, name string) (*qjv1.QueueJob, error) {
	qj := &qjv1.QueueJob{}
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, qj)
	switch {
	case err == nil:
		return qj, nil
	case apierrors.IsNotFound(err) && !isMissingResource(err):
		return nil, fmt.Errorf("QueueJob %q not found in namespace %q: list them with kubectl get queuejobs -n %s, or choose the namespace with -n", name, ns, ns)
	default:
		return nil, apiError(err, "get", qjResource, ns, fmt.Sprintf("reading QueueJob %s/%s", ns, name))
	}
}

// secretRef is one Secret key a QueueJob's queue references (with the field that
// references it) and the flag that replaces it.
type secretRef struct {
	backends.SecretRef
	flag string
}

// replacingFlags names, by the field of a Secret reference, the flag that replaces it.
var replacingFlags = map[string]string{
	rediskube.FieldPassword:            "--redis-password-env",
	rediskube.FieldTLSCA:               "--redis-tls-ca",
	rabbitmqkube.FieldURLSecret:        "--rabbitmq-url-env",
	rabbitmqkube.FieldManagementSecret: "--rabbitmq-management-url-env",
	rabbitmqkube.FieldTLSCA:            "--rabbitmq-tls-ca",
	natskube.FieldUser:                 "--nats-user",
	natskube.FieldPassword:             "--nats-password-env",
	natskube.FieldToken:                "--nats-token-env",
	natskube.FieldCreds:                "--nats-creds",
	natskube.FieldNKeySeed:             "--nats-nkey-seed",
	natskube.FieldTLSCA:                "--nats-tls-ca",
	streamkube.FieldPassword:           "--redis-password-env",
	streamkube.FieldTLSCA:              "--redis-tls-ca",
}

// secretFields lists the Secret keys a queue source references (the backend's
// SecretRefs, each with its field), with the flags that replace them.
func secretFields(src *qjv1.QueueSource, backend *backends.Backend) []secretRef {
	var out []secretRef
	for _, ref := range backend.SecretRefs(src) {
		out = append(out, secretRef{SecretRef: ref, flag: replacingFlags[ref.Field]})
	}
	return out
}

// readSecrets reads the Secret keys a QueueJob's queue references, but those that skip
// says flags replace, with the user's credentials. Values go into a backends.Source, never
// into a message.
func readSecrets(ctx context.Context, c client.Client, qj *qjv1.QueueJob, backend *backends.Backend, skip func(secretRef) bool) (backends.Source, error) {
	src := backends.Source{Spec: qj.Spec.Queue, Secrets: map[string]string{}}
	for _, s := range secretFields(qj.Spec.Queue, backend) {
		if skip(s) {
			continue
		}
		var sec corev1.Secret
		err := c.Get(ctx, client.ObjectKey{Namespace: qj.Namespace, Name: s.Name}, &sec)
		what := fmt.Sprintf("reading Secret %s/%s (%s of QueueJob %s)", qj.Namespace, s.Name, s.Field, qj.Name)
		switch {
		case apierrors.IsNotFound(err):
			return src, fmt.Errorf("Secret %s/%s does not exist (%s of QueueJob %s references it): create it, or give the value with %s",
				qj.Namespace, s.Name, s.Field, qj.Name, s.flag)
		case apierrors.IsForbidden(err):
			return src, fmt.Errorf("%w; or give the value with %s", apiError(err, "get", "secrets", qj.Namespace, what), s.flag)
		case err != nil:
			return src, apiError(err, "get", "secrets", qj.Namespace, what)
		}
		v, ok := sec.Data[s.Key]
		if !ok {
			return src, fmt.Errorf("Secret %s/%s has no key %q (%s of QueueJob %s): add it, or fix the key in the QueueJob",
				qj.Namespace, s.Name, s.Key, s.Field, qj.Name)
		}
		src.Secrets[s.ID()] = string(v)
	}
	return src, nil
}
