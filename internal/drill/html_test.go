package drill

import (
	"bytes"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/load"
)

// sampleResult is a drill of 40 seconds with its fault from 10 s to 30 s,
// slower and failing inside it.
func sampleResult() *Result {
	r := &Result{Name: "slow-payments", Question: "What do riders see when payments is slow?", Fault: "payments answers every call 5 s late",
		Started: t0, Took: 75 * time.Second, Start: t0, FaultFrom: 10 * time.Second, FaultTo: 30 * time.Second}
	for i := range 40 {
		s := load.Second{At: i, Requests: 50, P50: 20 * time.Millisecond, P99: 45 * time.Millisecond}
		if i >= 10 && i < 30 {
			s.P99 = 180 * time.Millisecond
		}
		if i >= 12 && i < 15 {
			s.Errors = int64(i - 10)
		}
		r.Timeline = append(r.Timeline, s)
	}
	r.Timeline[35].Requests, r.Timeline[35].P50, r.Timeline[35].P99 = 0, 0, 0 // a quiet second
	r.Findings = []Finding{
		{What: "POST /v1/rides p99 with payments slow", Got: "31ms over 20 requests", Want: "< 1s", OK: true},
		{What: "a finding with <script>alert(1)</script> in it", Got: "x & y", Want: "none", OK: false},
	}
	r.Events = []Event{{At: 10 * time.Second, What: "payments: every call answers 5s late"}}
	return r
}

func TestHTMLShadesTheFaultWindow(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHTML(&b, sampleResult()); err != nil {
		t.Fatal(err)
	}
	page := b.String()

	// The plot spans 880 units (960 less the margins) for 40 seconds: 22
	// a second from x=64, so the window 10 s..30 s is x 284, width 440.
	m := regexp.MustCompile(`<rect class="fault" x="([0-9.]+)" y="([0-9.]+)" width="([0-9.]+)" height="([0-9.]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no shaded fault window in:\n%s", page)
	}
	num := func(s string) float64 {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	x, y, w, h := num(m[1]), num(m[2]), num(m[3]), num(m[4])
	if math.Abs(x-284) > 0.1 || math.Abs(w-440) > 0.1 {
		t.Errorf("fault window at x=%v width=%v, want x=284 width=440", x, w)
	}
	// It covers the latency plot and the errors band below it.
	if y != plotTop || y+h != plotTop+plotHeight+bandGap+bandHeight {
		t.Errorf("fault window from y=%v to %v, want %v to %v", y, y+h, float64(plotTop), float64(plotTop+plotHeight+bandGap+bandHeight))
	}

	// p50 and p99 are drawn per second, broken at the quiet second 35.
	for _, class := range []string{"p50", "p99"} {
		lines := regexp.MustCompile(`<polyline class="`+class+`" points="([^"]*)"`).FindAllStringSubmatch(page, -1)
		if len(lines) != 2 {
			t.Fatalf("%d %s polylines, want 2 (before and after the quiet second)", len(lines), class)
		}
		points := len(strings.Fields(lines[0][1])) + len(strings.Fields(lines[1][1]))
		if points != 39 {
			t.Errorf("%s has %d points, want 39", class, points)
		}
		for _, l := range lines {
			for _, p := range strings.Fields(l[1]) {
				xs, ys, _ := strings.Cut(p, ",")
				if px, py := num(xs), num(ys); px < plotLeft || px > chartWidth-plotRight || py < plotTop || py > plotTop+plotHeight {
					t.Errorf("%s point %s is outside the plot", class, p)
				}
			}
		}
	}
	// The p99 inside the window (180 ms) is drawn higher than outside (45 ms).
	p99 := regexp.MustCompile(`<polyline class="p99" points="([^"]*)"`).FindStringSubmatch(page)[1]
	pts := strings.Fields(p99)
	_, yOut, _ := strings.Cut(pts[5], ",")
	_, yIn, _ := strings.Cut(pts[20], ",")
	if num(yIn) >= num(yOut) {
		t.Errorf("p99 at 20 s drawn at y=%s, not above 5 s at y=%s", yIn, yOut)
	}
	// One error bar for each second with errors, the largest the band's height.
	bars := regexp.MustCompile(`<rect class="errors" x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" height="([0-9.]+)"`).FindAllStringSubmatch(page, -1)
	if len(bars) != 3 || num(bars[2][1]) != bandHeight {
		t.Errorf("error bars %v, want 3 with the last %v high", bars, bandHeight)
	}

	// Self-contained: nothing is fetched from anywhere.
	for _, ref := range []string{"<script", "<link", "src=", "url(", "@import"} {
		if strings.Contains(page, ref) {
			t.Errorf("the page refers to something outside itself: %q", ref)
		}
	}
	if n := strings.Count(page, "http"); n != 1 { // the SVG namespace
		t.Errorf("%d mentions of http, want only the SVG namespace", n)
	}
	// The findings are there, escaped.
	for _, want := range []string{"POST /v1/rides p99 with payments slow", "&lt;script&gt;alert(1)&lt;/script&gt;", "x &amp; y",
		`<td class="bad">FAIL</td>`, `<td class="ok">ok</td>`, "verdict: FAIL: 1 of 2 findings do not hold", "10.0s</td><td>payments: every call"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

func TestHTMLWithoutAFaultWindow(t *testing.T) {
	r := sampleResult()
	r.FaultFrom, r.FaultTo = 0, 0
	r.Timeline = nil
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), `class="fault"`) || strings.Contains(b.String(), "<polyline") {
		t.Errorf("a drill that never ran draws a fault window or lines:\n%s", b.String())
	}
}

func TestNiceCeil(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{10 * time.Millisecond, 10 * time.Millisecond},
		{11 * time.Millisecond, 20 * time.Millisecond},
		{180 * time.Millisecond, 200 * time.Millisecond},
		{4 * time.Second, 5 * time.Second},
		{5100 * time.Millisecond, 10 * time.Second},
	} {
		if got := niceCeil(c.in); got != c.want {
			t.Errorf("niceCeil(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResult().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"drill slow-payments: What do riders see when payments is slow?", "+10.0s  payments",
		"ok    POST /v1/rides p99 with payments slow: 31ms over 20 requests (want < 1s)", "FAIL  a finding", "verdict: FAIL: 1 of 2 findings do not hold"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	var s bytes.Buffer
	pass := sampleResult()
	pass.Findings, pass.Pass = pass.Findings[:1], true
	down := &Result{Name: "kill-replica", Error: "no service runs more than one instance", Took: time.Second}
	if err := WriteSummary(&s, []*Result{pass, sampleResult(), down}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"slow-payments  PASS", "FAIL     1/2", "a finding with <script>", "kill-replica   FAIL     0/0", "no service runs", "1 of 3 drills passed"} {
		if !strings.Contains(s.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, s.String())
		}
	}
}
