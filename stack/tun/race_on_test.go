//go:build race

package tun

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// gVisor's pooled PacketBuffers allocate and allocation counts mean nothing.
const raceEnabled = true
