//go:build !linux

package stack

import "time"

func threadCPU() time.Duration { return 0 }
