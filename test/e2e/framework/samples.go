package framework

import (
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// Images names the project's images (make image): <Repo>/<name>:<Tag>.
type Images struct {
	Repo, Tag string
}

// Ref is the reference of the image name.
func (i Images) Ref(name string) string { return i.Repo + "/" + name + ":" + i.Tag }

// Sample reads config/samples/batch_v1alpha1_queuejob_<name>.yaml under root (the
// repository's top directory).
func Sample(root, name string) (*qjv1.QueueJob, error) {
	path := filepath.Join(root, "config", "samples", "batch_v1alpha1_queuejob_"+name+".yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	qj := &qjv1.QueueJob{}
	if err := yaml.UnmarshalStrict(b, qj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return qj, nil
}

// Brokers are the addresses where pods reach the queue servers.
type Brokers struct {
	// RedisAddress is host:port of a redis-server.
	RedisAddress string
	// RedisPasswordSecret, if set, names a Secret in the QueueJob's namespace whose key
	// "password" is the redis-server's password.
	RedisPasswordSecret string
}

// Localize turns a seed sample into what runs on a cluster without the article's images:
// its one container runs the project's image of that example (make image), with the
// command the sample's comment gives; a Redis queue's address becomes the broker's. All
// else (the Job spec, the queue's Secret references, cleanup) stays the sample's.
func Localize(qj *qjv1.QueueJob, images Images, b Brokers) error {
	pod := &qj.Spec.JobTemplate.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		return fmt.Errorf("sample %s has %d containers, want 1", qj.Name, len(pod.Containers))
	}
	c := &pod.Containers[0]
	switch qj.Name {
	case "pi":
		c.Image, c.Command = images.Ref("pi"), []string{"pi", "--digits=2000"}
	case "job-wq-1":
		c.Image, c.Command = images.Ref("job-wq-1"), []string{"queuejob-worker", "--", "cat"}
	case "job-wq-2":
		c.Image, c.Command = images.Ref("job-wq-2"), []string{"job-wq-2", "--sleep=1s"}
		if qj.Spec.Queue == nil || qj.Spec.Queue.Redis == nil {
			return fmt.Errorf("sample job-wq-2 has no Redis queue")
		}
		qj.Spec.Queue.Redis.Address = b.RedisAddress
		if b.RedisPasswordSecret != "" {
			qj.Spec.Queue.Redis.PasswordSecretRef = &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: b.RedisPasswordSecret}, Key: "password"}
		}
	default:
		return fmt.Errorf("no image for sample %q", qj.Name)
	}
	// The images were imported into the node (make cluster-load): a pull happens only
	// if they are missing (and then fails: nothing is published under these names).
	c.ImagePullPolicy = corev1.PullIfNotPresent
	return nil
}
