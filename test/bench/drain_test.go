package main

import "testing"

func TestParseWorkerExit(t *testing.T) {
	log := `time=2026-11-28T17:50:00.000Z level=INFO msg=Started backend=redis session=abc items="until the queue is empty"
time=2026-11-28T17:50:00.001Z level=INFO msg="Completed an item" attempt=1 took=1ms
time=2026-11-28T17:50:01.000Z level=INFO msg="Exiting: the queue is empty" code=0 completed=2500 retried=1 deadLettered=2 lost=3
`
	got, err := parseWorkerExit(log)
	if err != nil {
		t.Fatal(err)
	}
	want := workerCounts{Completed: 2500, Retried: 1, DeadLettered: 2, Lost: 3, Code: 0, Msg: "Exiting: the queue is empty"}
	if got != want {
		t.Errorf("parseWorkerExit = %+v, want %+v", got, want)
	}
	if _, err := parseWorkerExit("time=x level=INFO msg=Started\n"); err == nil {
		t.Error("parseWorkerExit of a log without an Exiting line: no error")
	}
	if _, err := parseWorkerExit(`level=ERROR msg="Exiting: queue error" code=3 error="boom"` + "\n"); err == nil {
		t.Error("parseWorkerExit of a line without counts: no error")
	}
}

func TestCheckOnce(t *testing.T) {
	all := [][]string{{drainItem(0), drainItem(2)}, {drainItem(1)}}
	if lost, dup := checkOnce(all, 3); lost != 0 || dup != 0 {
		t.Errorf("checkOnce(all once) = %d lost, %d dup", lost, dup)
	}
	if lost, dup := checkOnce([][]string{{drainItem(0), drainItem(0)}, {"stranger"}}, 3); lost != 2 || dup != 2 {
		t.Errorf("checkOnce = %d lost, %d dup; want 2, 2", lost, dup)
	}
}
