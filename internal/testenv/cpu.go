package testenv

import (
	"syscall"
	"time"
)

// ProcessCPU is the CPU time (user and system) this process has used. A
// benchmark divides its change by b.N: unlike wall time, it does not count
// the time spent waiting for a core on a busy machine.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
