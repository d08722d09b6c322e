//go:build !race

package bgp

// raceDetector is true when the tests run with -race, which makes the
// speaker several times slower and bigger, so memory bounds do not apply.
const raceDetector = false
