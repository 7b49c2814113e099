// Command cat copies its files, or its standard input, to its standard output, as cat(1)
// does without options. The job-wq-1 image is empty but for queuejob-worker and this
// cat, so that the worker of the sample QueueJob, queuejob-worker -- cat, runs in it.
//
//	cat [FILE|-]...
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run copies each file of args ("-" for stdin; stdin when there are none) to stdout and
// returns the exit code: 0, or 1 if a file could not be read (the others are copied).
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		args = []string{"-"}
	}
	code := 0
	for _, name := range args {
		if err := copyFile(name, stdin, stdout); err != nil {
			fmt.Fprintln(stderr, "cat:", err)
			code = 1
		}
	}
	return code
}

func copyFile(name string, stdin io.Reader, stdout io.Writer) error {
	if name == "-" {
		_, err := io.Copy(stdout, stdin)
		return err
	}
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	_, err = io.Copy(stdout, f)
	return err
}
