//go:build e2e

// Package e2e runs the operator in a real cluster: real Job controller, scheduler,
// kubelet, pods and garbage collector, which envtest does not have. The cluster is the
// one KUBECONFIG names (make cluster-up gives one); the operator is installed from
// charts/ with helm, with the images of make image (make cluster-load imports them into
// the local cluster). redis-server, rabbitmq-server and nats-server run on this machine, on the
// address where the cluster's pods reach them: the node's InternalIP, or E2E_BROKER_HOST.
//
//	make test-e2e
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/queuejob/queuejob-operator/test/e2e/framework"
	"github.com/queuejob/queuejob-operator/test/servers"
)

var (
	cluster  *framework.Cluster
	images   framework.Images
	redisS   *servers.Server
	rabbitS  *servers.RabbitMQ
	natsS    *servers.NATS
	release  framework.Release
	repoRoot string
	// redisPassword is redisS's; each spec's namespace has it in the Secret "redis".
	redisPassword string
	// natsPassword is natsS's user's (natsUser); each spec's namespace has both in the
	// Secret "nats".
	natsPassword string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(5 * time.Minute)
	SetDefaultEventuallyPollingInterval(time.Second)
	RunSpecs(t, "e2e")
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	repoRoot, err = filepath.Abs("../..")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.Getenv("KUBECONFIG")).NotTo(BeEmpty(), "set KUBECONFIG to the cluster to test (make cluster-up prints one)")
	cluster, err = framework.Connect("", 30*time.Second)
	Expect(err).NotTo(HaveOccurred())
	cluster.Kubectl = getenv("KUBECTL", "kubectl")
	cluster.Helm = getenv("HELM", filepath.Join(repoRoot, "bin", "helm"))
	images = framework.Images{Repo: getenv("IMAGE_REPO", "ghcr.io/queuejob"), Tag: getenv("IMAGE_TAG", "0.1.0")}

	host := os.Getenv("E2E_BROKER_HOST")
	if host == "" {
		host, err = cluster.NodeAddress(ctx)
		Expect(err).NotTo(HaveOccurred())
	}
	// Reachable from the pods, so not open: a random password, and RabbitMQ's only user
	// is a random one.
	redisPassword = servers.RandomString(24)
	redisS, err = servers.StartRedisWith(servers.RedisOptions{Host: host, Password: redisPassword})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(redisS.Close)
	rabbitS, err = servers.StartRabbitMQWith(servers.AMQPReady, servers.RabbitMQOptions{Host: host})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(rabbitS.Close)
	natsPassword = servers.RandomString(24)
	natsS, err = servers.StartNATSWith(servers.NATSOptions{Host: host, User: natsUser, Password: natsPassword})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(natsS.Close)

	release = framework.Release{
		Name: "queuejob-operator", Namespace: "queuejob-system", Chart: filepath.Join(repoRoot, "charts", "queuejob-operator"),
		Values: map[string]string{
			"image.repository": images.Repo + "/queuejob-operator",
			"image.tag":        images.Tag,
			"extraArgs[0]":     "--zap-log-level=debug",
			// A new image under the same tag rolls the manager.
			"podAnnotations.image-digest": framework.ImageDigest(filepath.Join(repoRoot, "dist", "images", "queuejob-operator.tar")),
		},
	}
	start := time.Now()
	out, err := cluster.Install(ctx, release)
	Expect(err).NotTo(HaveOccurred(), out)
	GinkgoWriter.Printf("helm install took %s\n", time.Since(start).Round(time.Second))
}, NodeTimeout(10*time.Minute))

// namespace makes a namespace of the spec's own, deleted after it.
func namespace(ctx context.Context, labels map[string]string) string {
	name := "e2e-" + rand.String(5)
	Expect(cluster.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})).To(Succeed())
	Expect(cluster.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: name},
		StringData: map[string]string{"password": redisPassword},
	})).To(Succeed())
	Expect(cluster.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "nats", Namespace: name},
		StringData: map[string]string{"user": natsUser, "password": natsPassword},
	})).To(Succeed())
	DeferCleanup(func(ctx SpecContext) {
		if CurrentSpecReport().Failed() {
			out, _ := cluster.KubectlRun(ctx, "get", "qj,jobs,pods,events", "-n", name, "-o", "wide")
			GinkgoWriter.Printf("namespace %s at failure:\n%s\n", name, out)
			out, _ = cluster.KubectlRun(ctx, "logs", "-n", release.Namespace, "deploy/"+release.Name, "--tail=200")
			GinkgoWriter.Printf("manager log:\n%s\n", out)
		}
		_ = cluster.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	})
	return name
}

// report prints a measured figure to the suite's output (the note quotes them).
func report(format string, a ...any) {
	AddReportEntry(fmt.Sprintf(format, a...))
	fmt.Fprintf(GinkgoWriter, "MEASURED: "+format+"\n", a...)
}

// publish puts persistent messages into a durable queue, with publisher confirms.
func publish(ctx context.Context, queue string, msgs ...string) {
	GinkgoHelper()
	conn, err := amqp.Dial(rabbitS.URL())
	Expect(err).NotTo(HaveOccurred())
	defer conn.Close()
	ch, err := conn.Channel()
	Expect(err).NotTo(HaveOccurred())
	_, err = ch.QueueDeclare(queue, true, false, false, false, nil)
	Expect(err).NotTo(HaveOccurred())
	Expect(ch.Confirm(false)).To(Succeed())
	for _, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{Body: []byte(m), DeliveryMode: amqp.Persistent})
		Expect(err).NotTo(HaveOccurred())
		ok, err := dc.WaitContext(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeTrue(), "the broker confirmed the message")
	}
}

// queueDepth is the number of ready messages in a RabbitMQ queue.
func queueDepth(queue string) int {
	GinkgoHelper()
	conn, err := amqp.Dial(rabbitS.URL())
	Expect(err).NotTo(HaveOccurred())
	defer conn.Close()
	ch, err := conn.Channel()
	Expect(err).NotTo(HaveOccurred())
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	Expect(err).NotTo(HaveOccurred())
	return q.Messages
}

// natsUser is natsS's only user.
const natsUser = "queuejob"

// natsJetStream is a JetStream context on natsS, as its user; close the connection after.
func natsJetStream() (*nats.Conn, jetstream.JetStream) {
	GinkgoHelper()
	nc, err := nats.Connect(natsS.URL(), nats.UserInfo(natsUser, natsPassword), nats.Timeout(10*time.Second))
	Expect(err).NotTo(HaveOccurred())
	js, err := jetstream.New(nc)
	Expect(err).NotTo(HaveOccurred())
	return nc, js
}

func redisClient() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: redisS.Addr(), Password: redisPassword})
}

// rpush pushes items at the list's tail, as the docs' producer does.
func rpush(ctx context.Context, key string, items ...string) {
	GinkgoHelper()
	rc := redisClient()
	defer rc.Close()
	args := make([]any, len(items))
	for i, it := range items {
		args[i] = it
	}
	Expect(rc.RPush(ctx, key, args...).Err()).To(Succeed())
}

// lrange is the whole list.
func lrange(ctx context.Context, key string) []string {
	GinkgoHelper()
	rc := redisClient()
	defer rc.Close()
	l, err := rc.LRange(ctx, key, 0, -1).Result()
	Expect(err).NotTo(HaveOccurred())
	return l
}
