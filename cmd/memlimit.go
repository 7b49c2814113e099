package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
)

// envMemoryLimit is the container's memory limit in bytes, which the chart and
// config/manager set from the downward API (limits.memory).
const envMemoryLimit = "QUEUEJOB_MEMORY_LIMIT"

// memoryLimit is the soft limit of the Go runtime's memory (debug.SetMemoryLimit) for a
// container limit of limitBytes: 90 % of it, leaving the rest to what the runtime does not
// count (the binary's pages, thread stacks outside the heap). 0: set none, because
// GOMEMLIMIT is set (the runtime read it) or no limit is known.
func memoryLimit(gomemlimit, limitBytes string) (int64, error) {
	if gomemlimit != "" || limitBytes == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(limitBytes, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q: want the container's memory limit in bytes (resourceFieldRef limits.memory, no divisor)", envMemoryLimit, limitBytes)
	}
	return n / 10 * 9, nil
}

// setMemoryLimit applies memoryLimit from the environment and returns what it set.
func setMemoryLimit() (int64, error) {
	n, err := memoryLimit(os.Getenv("GOMEMLIMIT"), os.Getenv(envMemoryLimit))
	if err == nil && n > 0 {
		debug.SetMemoryLimit(n)
	}
	return n, err
}
