package jobwq1

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The article's queue job1 and its 8 messages.
var messages = []string{"apple", "banana", "cherry", "date", "fig", "grape", "lemon", "melon"}

// pod is one finished worker pod: its stdout, its log and its exit code.
type pod struct {
	stdout, stderr string
	code           int
}

// runJob plays a PerItem wave's Job: pods of args run, parallelism at a time, until
// completions of them have exited 0 (a pod that fails is replaced, as with
// restartPolicy OnFailure). The pods get what the operator puts into them: the queue's
// variables, BROKER_URL and QUEUE included.
func runJob(t *testing.T, q string, completions, parallelism int, args ...string) []pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var pods []pod
	succeeded, active, started := 0, 0, 0
	var wg sync.WaitGroup
	for range parallelism {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				// As the Job controller: no new pod while the running ones may make up the
				// completions; a failed one is replaced.
				if succeeded+active >= completions || started >= 4*completions || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				started++
				active++
				mu.Unlock()
				cmd := exec.CommandContext(ctx, binary, args...)
				cmd.Env = append(os.Environ(), "QUEUEJOB_BACKEND=rabbitmq",
					"QUEUEJOB_RABBITMQ_URL="+rabbitServer.URL(), "QUEUEJOB_RABBITMQ_QUEUE="+q,
					"BROKER_URL="+rabbitServer.URL(), "QUEUE="+q,
					// What the operator adds for a PerItem QueueJob with itemsPerPod 1.
					"QUEUEJOB_MODE=PerItem", "QUEUEJOB_ITEMS_PER_POD=1")
				var out, errOut bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errOut
				_ = cmd.Run()
				p := pod{stdout: out.String(), stderr: errOut.String(), code: cmd.ProcessState.ExitCode()}
				t.Logf("pod exited %d, stdout %q, log:\n%s", p.code, p.stdout, p.stderr)
				mu.Lock()
				pods = append(pods, p)
				active--
				if p.code == 0 {
					succeeded++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if succeeded < completions {
		t.Fatalf("%d of %d pods succeeded (%d started)", succeeded, completions, started)
	}
	return pods
}

// fill declares the queue afresh and publishes the article's messages.
func fill(t *testing.T, q string) *amqp.Channel {
	t.Helper()
	ch := servers.AMQPChannel(t, rabbitServer.URL())
	for _, name := range []string{q, q + ".failed"} {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, m := range messages {
		if err := ch.PublishWithContext(context.Background(), "", q, false, false,
			amqp.Publishing{Body: []byte(m), DeliveryMode: amqp.Persistent}); err != nil {
			t.Fatal(err)
		}
	}
	return ch
}

// checkDrained checks that every message was printed once and the queue is empty, with
// no consumer left.
func checkDrained(t *testing.T, ch *amqp.Channel, q string, printed []string) {
	t.Helper()
	slices.Sort(printed)
	if want := slices.Sorted(slices.Values(messages)); !slices.Equal(printed, want) {
		t.Errorf("messages printed %q, want each of %q once", printed, want)
	}
	info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Messages != 0 || info.Consumers != 0 {
		t.Errorf("queue %s: %d messages, %d consumers after the Job, want 0 and 0", q, info.Messages, info.Consumers)
	}
}

// The sample's pods (config/samples/batch_v1alpha1_queuejob_job-wq-1.yaml): itemsPerPod 1,
// parallelism 2, one pod per message as in the article (completions 8). Each pod prints
// its one message, acks it and exits 0.
func TestOneMessagePerPod(t *testing.T) {
	const q = "job1"
	ch := fill(t, q)
	pods := runJob(t, q, len(messages), 2, "--", "cat")
	var printed []string
	for _, p := range pods {
		switch {
		case p.code != 0:
			t.Errorf("a pod exited %d: %s", p.code, p.stderr)
		case p.stdout == "":
			// Started as the last messages were in flight: nothing to take.
			if !strings.Contains(p.stderr, `msg="Exiting: the queue is empty" code=0`) {
				t.Errorf("a pod printed nothing and did not say the queue was empty: %s", p.stderr)
			}
		default:
			if !strings.Contains(p.stderr, `msg="Exiting: handled 1 of 1 items (QUEUEJOB_ITEMS_PER_POD)" code=0 completed=1`) {
				t.Errorf("a pod printed %q but did not say it completed it: %s", p.stdout, p.stderr)
			}
			printed = append(printed, p.stdout)
		}
	}
	checkDrained(t, ch, q, printed)
}

// Two PerItem pods of itemsPerPod 4 take the 8 messages, 4 each, printing one a line as
// the article's `cat && echo` does.
func TestFourMessagesPerPod(t *testing.T) {
	const q = "job1-by-4"
	ch := fill(t, q)
	pods := runJob(t, q, 2, 2, "--items=4", "--", "sh", "-c", "cat && echo")
	var printed []string
	for _, p := range pods {
		lines := strings.Fields(p.stdout)
		if p.code != 0 || len(lines) != 4 {
			t.Errorf("a pod exited %d after printing %q, want 0 after 4 messages", p.code, lines)
		}
		printed = append(printed, lines...)
	}
	if len(pods) != 2 {
		t.Errorf("%d pods ran, want 2", len(pods))
	}
	checkDrained(t, ch, q, printed)
}
