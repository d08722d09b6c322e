package failover

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// Event is something the experiment did, at a time since its start.
type Event struct {
	At    time.Duration
	Label string
}

// RatePoint is the packet rate through one translator's tun at a time.
type RatePoint struct {
	At  time.Duration
	PPS float64
}

// Timeline is everything the experiment recorded.
type Timeline struct {
	Title   string
	Samples []Sample
	Events  []Event
	Rates   map[string][]RatePoint // by translator name
}

// Window is a run of consecutive lost probes of one flow.
type Window struct {
	Flow     string
	From, To time.Duration // send times of the first and the last lost probe
	Lost     int
}

// LossWindows returns each flow's runs of consecutive lost probes, in time
// order.
func LossWindows(samples []Sample) []Window {
	byFlow := map[string][]Sample{}
	for _, s := range samples {
		byFlow[s.Flow] = append(byFlow[s.Flow], s)
	}
	var out []Window
	for flow, ss := range byFlow {
		sort.Slice(ss, func(i, j int) bool { return ss[i].Seq < ss[j].Seq })
		var cur *Window
		for _, s := range ss {
			if !s.Lost {
				cur = nil
				continue
			}
			if cur == nil {
				out = append(out, Window{Flow: flow, From: s.Sent, To: s.Sent})
				cur = &out[len(out)-1]
			}
			cur.To = s.Sent
			cur.Lost++
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].From != out[j].From {
			return out[i].From < out[j].From
		}
		return out[i].Flow < out[j].Flow
	})
	return out
}

// Unexplained returns the lost probes that were not sent within
// [event − before, event + after] of any event: losses the failover does
// not account for.
func Unexplained(samples []Sample, events []Event, before, after time.Duration) []Sample {
	var out []Sample
	for _, s := range samples {
		if !s.Lost {
			continue
		}
		if !slices.ContainsFunc(events, func(e Event) bool { return s.Sent >= e.At-before && s.Sent <= e.At+after }) {
			out = append(out, s)
		}
	}
	return out
}

// Received counts the answered probes of flow sent in [from, to).
func Received(samples []Sample, flow string, from, to time.Duration) int {
	n := 0
	for _, s := range samples {
		if s.Flow == flow && !s.Lost && s.Sent >= from && s.Sent < to {
			n++
		}
	}
	return n
}

// Median RTT of the answered probes.
func MedianRTT(samples []Sample) time.Duration {
	var rtts []time.Duration
	for _, s := range samples {
		if !s.Lost {
			rtts = append(rtts, s.RTT)
		}
	}
	if len(rtts) == 0 {
		return 0
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}

// quantile of the answered probes' RTTs, q in [0, 1].
func quantile(samples []Sample, q float64) time.Duration {
	var rtts []time.Duration
	for _, s := range samples {
		if !s.Lost {
			rtts = append(rtts, s.RTT)
		}
	}
	if len(rtts) == 0 {
		return 0
	}
	slices.Sort(rtts)
	return rtts[int(q*float64(len(rtts)-1))]
}

// Plot geometry.
const (
	plotW, plotH    = 960, 610
	marginL, margin = 70, 20
	rttTop, rttBot  = 80, 340
	rateTop, rateBt = 400, 550
)

var flowColors = []string{"#000000", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#e377c2"}
var rateColors = []string{"#ff7f0e", "#1f77b4", "#2ca02c"}

// WriteSVG draws the timeline: the RTT of every answered probe over time,
// lost probes as red marks, the experiment's events as vertical lines, and
// below the packet rate through each translator.
func (tl *Timeline) WriteSVG(w io.Writer) error {
	var end time.Duration
	for _, s := range tl.Samples {
		end = max(end, s.Sent)
	}
	for _, e := range tl.Events {
		end = max(end, e.At)
	}
	for _, rs := range tl.Rates {
		for _, r := range rs {
			end = max(end, r.At)
		}
	}
	end = end.Round(time.Second) + time.Second
	xOf := func(d time.Duration) float64 {
		return marginL + float64(d)/float64(end)*float64(plotW-marginL-margin)
	}
	// RTT axis: logarithmic, whole decades from the fastest to the slowest
	// answer, so that both the usual sub-millisecond RTT and the slow
	// outliers of a loaded machine are readable.
	toMs := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	lo := math.Pow(10, math.Floor(math.Log10(math.Max(toMs(quantile(tl.Samples, 0)), 0.001))))
	hi := math.Pow(10, math.Ceil(math.Log10(math.Max(toMs(quantile(tl.Samples, 1)), lo*10))))
	if hi <= lo {
		hi = lo * 10
	}
	yMs := func(ms float64) float64 {
		ms = math.Min(math.Max(ms, lo), hi)
		return rttBot - math.Log10(ms/lo)/math.Log10(hi/lo)*(rttBot-rttTop)
	}
	yRTT := func(d time.Duration) float64 { return yMs(toMs(d)) }
	var rttTicks []float64
	for v := lo; v <= hi*1.001; v *= 10 {
		rttTicks = append(rttTicks, v)
	}
	var rateMax float64 = 1
	names := make([]string, 0, len(tl.Rates))
	for n, rs := range tl.Rates {
		names = append(names, n)
		for _, r := range rs {
			rateMax = math.Max(rateMax, r.PPS)
		}
	}
	sort.Strings(names)
	rateStep := niceStep(rateMax / 4)
	rateMax = math.Ceil(rateMax/rateStep) * rateStep
	yRate := func(pps float64) float64 { return rateBt - pps/rateMax*(rateBt-rateTop) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, html.EscapeString(tl.Title))

	// Axes and grid.
	var rateTicks []float64
	for v := 0.0; v <= rateMax+rateStep/2; v += rateStep {
		rateTicks = append(rateTicks, v)
	}
	for _, panel := range []struct {
		top, bot float64
		ticks    []float64
		label    string
		y        func(float64) float64
	}{
		{rttTop, rttBot, rttTicks, "RTT (ms, log)", yMs},
		{rateTop, rateBt, rateTicks, "packets/s through", yRate},
	} {
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="none" stroke="#444"/>`+"\n", marginL, panel.top, plotW-marginL-margin, panel.bot-panel.top)
		for _, v := range panel.ticks {
			y := panel.y(v)
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, marginL, plotW-margin, y, y)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-5, y+4, trimFloat(v))
		}
		fmt.Fprintf(&b, `<text transform="translate(16,%.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", (panel.top+panel.bot)/2, panel.label)
	}
	tick := time.Second
	if end > 30*time.Second {
		tick = 5 * time.Second
	}
	for d := time.Duration(0); d <= end; d += tick {
		x := xOf(d)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/>`, x, x, rttTop, rateBt)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x, rateBt+16, int(d/time.Second))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">time (s)</text>`+"\n", (plotW+marginL)/2, rateBt+34)

	// Events, their labels in up to three rows so that close ones do not
	// overlap.
	var rowEnd [3]float64
	for _, e := range tl.Events {
		x := xOf(e.At)
		row := 0
		for row < len(rowEnd)-1 && x < rowEnd[row]+6 {
			row++
		}
		rowEnd[row] = x + 3 + 6.5*float64(len(e.Label))
		y := rttTop - 34 + 13*row
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#d62728" stroke-dasharray="5,4"/>`, x, x, y-10, rateBt)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#d62728">%s</text>`+"\n", x+3, y, html.EscapeString(e.Label))
	}

	// Probes, one colour per flow; lost ones as red ticks along the top.
	flows := map[string]int{}
	for _, s := range tl.Samples {
		if _, ok := flows[s.Flow]; !ok {
			flows[s.Flow] = len(flows)
		}
	}
	flowNames := make([]string, 0, len(flows))
	for f := range flows {
		flowNames = append(flowNames, f)
	}
	sort.Strings(flowNames)
	for i, f := range flowNames {
		flows[f] = i
	}
	// One path per flow, a zero-length round-capped segment per probe: a
	// tenth of the size of one element per probe.
	dots := make([]strings.Builder, len(flowNames))
	var lost strings.Builder
	for _, s := range tl.Samples {
		x := xOf(s.Sent)
		if s.Lost {
			fmt.Fprintf(&lost, "M%.1f %dv10", x, rttTop+2)
			continue
		}
		fmt.Fprintf(&dots[flows[s.Flow]], "M%.1f %.1fh0", x, yRTT(s.RTT))
	}
	for i := range dots {
		if dots[i].Len() > 0 {
			fmt.Fprintf(&b, `<path class="probes" stroke="%s" stroke-width="3.2" stroke-linecap="round" d="%s"/>`+"\n", flowColors[i%len(flowColors)], dots[i].String())
		}
	}
	if lost.Len() > 0 {
		fmt.Fprintf(&b, `<path class="lost" stroke="#d62728" stroke-width="1.5" d="%s"/>`+"\n", lost.String())
	}

	// Rates.
	for i, n := range names {
		var pts []string
		for _, r := range tl.Rates[n] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(r.At), yRate(r.PPS)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`+"\n", rateColors[i%len(rateColors)], strings.Join(pts, " "))
	}

	// Legend.
	lx, ly := float64(marginL+10), float64(rttBot+22)
	for _, f := range flowNames {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/><text x="%.1f" y="%.1f">%s</text>`+"\n", lx, ly-4, flowColors[flows[f]%len(flowColors)], lx+8, ly, html.EscapeString(f))
		lx += 14 + 7*float64(len(f)) + 14
	}
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#d62728" stroke-width="1.5"/><text x="%.1f" y="%.1f">lost</text>`+"\n", lx, lx, ly-10, ly, lx+6, ly)
	lx += 50
	for i, n := range names {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/><text x="%.1f" y="%.1f">through %s</text>`+"\n", lx, lx+16, ly-4, ly-4, rateColors[i%len(rateColors)], lx+20, ly, html.EscapeString(n))
		lx += 30 + 7*float64(len(n)) + 50
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
