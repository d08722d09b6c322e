package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestSchedule: a round's measurements pair the setups test by test
// (-interleave test) or setup by setup (-interleave setup), and every other
// round runs the setups in reverse, so that neither member of a pair is
// always measured first.
func TestSchedule(t *testing.T) {
	// A unit is written "round/condition/setup:tests".
	str := func(us []unit) []string {
		var out []string
		for _, u := range us {
			out = append(out, fmt.Sprintf("%d/%s/%c:%s", u.Round+1, u.Cond.Key, 'A'+u.Setup, strings.Join(u.names(), "+")))
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		rounds     int
		conds      []condition
		setups     int
		tests      testSet
		interleave string
		want       []string
	}{
		{"pairs by test, alternating", 2, []condition{condGRO}, 2, testSet{testTCP1: true, testUDP: true}, interleaveTest, []string{
			"1/gro/A:tcp1", "1/gro/B:tcp1", "1/gro/A:udp", "1/gro/B:udp",
			"2/gro/B:tcp1", "2/gro/A:tcp1", "2/gro/B:udp", "2/gro/A:udp",
		}},
		{"pairs by setup, alternating", 3, []condition{condGRO, condNoGRO}, 2, testSet{testUDP: true, testTCP1: true}, interleaveSetup, []string{
			"1/gro/A:tcp1+udp", "1/gro/B:tcp1+udp", "1/nogro/A:tcp1+udp", "1/nogro/B:tcp1+udp",
			"2/gro/B:tcp1+udp", "2/gro/A:tcp1+udp", "2/nogro/B:tcp1+udp", "2/nogro/A:tcp1+udp",
			"3/gro/A:tcp1+udp", "3/gro/B:tcp1+udp", "3/nogro/A:tcp1+udp", "3/nogro/B:tcp1+udp",
		}},
		// Three setups: every pair's order flips between rounds.
		{"three setups, both conditions", 2, []condition{condGRO, condNoGRO}, 3, testSet{testPing1s: true}, interleaveTest, []string{
			"1/gro/A:ping1s", "1/gro/B:ping1s", "1/gro/C:ping1s", "1/nogro/A:ping1s", "1/nogro/B:ping1s", "1/nogro/C:ping1s",
			"2/gro/C:ping1s", "2/gro/B:ping1s", "2/gro/A:ping1s", "2/nogro/C:ping1s", "2/nogro/B:ping1s", "2/nogro/A:ping1s",
		}},
		// Every test, in the order the harness always ran them: the idle
		// pings before the flood.
		{"every test", 1, []condition{condGRO}, 1, nil, interleaveTest, []string{
			"1/gro/A:ping", "1/gro/A:ping1s", "1/gro/A:tcp1", "1/gro/A:tcp4", "1/gro/A:udp",
		}},
		{"every test in one unit", 1, []condition{condGRO}, 1, nil, interleaveSetup, []string{
			"1/gro/A:ping+ping1s+tcp1+tcp4+udp",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			us, err := schedule(tc.rounds, tc.conds, tc.setups, tc.tests, tc.interleave)
			if err != nil {
				t.Fatal(err)
			}
			if got := str(us); !slices.Equal(got, tc.want) {
				t.Errorf("schedule:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
	if _, err := schedule(1, []condition{condGRO}, 2, nil, "round"); err == nil || !strings.Contains(err.Error(), "-interleave \"round\"") {
		t.Errorf("unknown -interleave: err = %v", err)
	}
}
