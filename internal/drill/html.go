package drill

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// The HTML report: one self-contained page per drill (no external asset,
// the chart inline SVG), to keep beside a run or attach to an issue.

// Chart geometry, in SVG user units.
const (
	chartWidth  = 960
	plotLeft    = 64
	plotRight   = 16
	plotTop     = 16
	plotHeight  = 260
	bandGap     = 28 // between the latency plot and the errors band
	bandHeight  = 70
	chartBottom = 28
)

// chart is the latency-over-time picture of a timeline, computed in Go so
// the template only places it.
type chart struct {
	Width, Height int
	// Fault shades the fault window across the plot and the band.
	Fault *box
	// P50 and P99 are polylines' point lists, one per stretch of seconds
	// that had answers.
	P50, P99 []string
	// Bars are the errors per second.
	Bars   []box
	YTicks []tick
	XTicks []tick
	// Band is where the error bars stand; BandTop and PlotBottom are
	// edges for the axes.
	PlotBottom, BandTop, BandBottom, TickBottom float64
	Left, Right                                 float64
	MaxErrors                                   int64
}

type box struct{ X, Y, W, H float64 }

type tick struct {
	At    float64
	Label string
}

// newChart lays out r's timeline.
func newChart(r *Result) chart {
	c := chart{Width: chartWidth, Left: plotLeft, Right: chartWidth - plotRight}
	c.PlotBottom = plotTop + plotHeight
	c.BandTop = c.PlotBottom + bandGap
	c.BandBottom = c.BandTop + bandHeight
	c.TickBottom = c.BandBottom + 4
	c.Height = int(c.BandBottom) + chartBottom
	seconds := float64(len(r.Timeline))
	if r.FaultTo > 0 {
		seconds = max(seconds, math.Ceil(r.FaultTo.Seconds()))
	}
	seconds = max(seconds, 1)
	x := func(s float64) float64 { return c.Left + (c.Right-c.Left)*min(max(s, 0), seconds)/seconds }

	var top time.Duration
	for _, s := range r.Timeline {
		top = max(top, s.P99)
		c.MaxErrors = max(c.MaxErrors, s.Errors)
	}
	yMax := niceCeil(max(top, 10*time.Millisecond))
	y := func(d time.Duration) float64 { return c.PlotBottom - plotHeight*float64(d)/float64(yMax) }
	for i := 0; i <= 4; i++ {
		d := yMax * time.Duration(i) / 4
		c.YTicks = append(c.YTicks, tick{At: round1(y(d)), Label: latencyLabel(d)})
	}
	step := niceStep(seconds)
	for s := 0.0; s <= seconds+1e-9; s += step {
		c.XTicks = append(c.XTicks, tick{At: round1(x(s)), Label: fmt.Sprintf("%.0fs", s)})
	}

	var p50, p99 []string
	flush := func() {
		if len(p50) > 0 {
			c.P50 = append(c.P50, strings.Join(p50, " "))
			c.P99 = append(c.P99, strings.Join(p99, " "))
		}
		p50, p99 = nil, nil
	}
	barW := (c.Right - c.Left) / seconds
	for i, s := range r.Timeline {
		mid := x(float64(i) + 0.5)
		if s.P99 > 0 {
			p50 = append(p50, fmt.Sprintf("%.1f,%.1f", mid, y(s.P50)))
			p99 = append(p99, fmt.Sprintf("%.1f,%.1f", mid, y(s.P99)))
		} else {
			flush()
		}
		if s.Errors > 0 {
			h := bandHeight * float64(s.Errors) / float64(c.MaxErrors)
			c.Bars = append(c.Bars, box{X: round1(x(float64(i)) + barW*0.1), Y: round1(c.BandBottom - h), W: round1(barW * 0.8), H: round1(h)})
		}
	}
	flush()
	if r.FaultTo > r.FaultFrom {
		from, to := x(r.FaultFrom.Seconds()), x(r.FaultTo.Seconds())
		c.Fault = &box{X: round1(from), Y: plotTop, W: round1(to - from), H: c.BandBottom - plotTop}
	}
	return c
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// niceCeil rounds a latency up to 1, 2 or 5 times a power of ten
// milliseconds, so the axis reads in round numbers.
func niceCeil(d time.Duration) time.Duration {
	ms := float64(d) / float64(time.Millisecond)
	p := math.Pow(10, math.Floor(math.Log10(ms)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= ms {
			return time.Duration(m * p * float64(time.Millisecond))
		}
	}
	return d
}

// niceStep is the spacing of the time axis's ticks: about ten of them.
func niceStep(seconds float64) float64 {
	for _, s := range []float64{1, 2, 5, 10, 15, 30, 60, 120, 300} {
		if seconds/s <= 12 {
			return s
		}
	}
	return 600
}

func latencyLabel(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%gs", d.Seconds())
	}
	return fmt.Sprintf("%gms", float64(d)/float64(time.Millisecond))
}

// htmlPage is what the template shows.
type htmlPage struct {
	*Result
	Chart      chart
	VerdictRow string
}

var pageTemplate = template.Must(template.New("drill").Funcs(template.FuncMap{
	"seconds": func(d time.Duration) string { return fmt.Sprintf("%+.1fs", d.Seconds()) },
	"clock":   func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") },
	"dur":     func(d time.Duration) string { return roundDur(d) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rideshare drill {{.Name}}: {{if .Pass}}PASS{{else}}FAIL{{end}}</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1000px; color: #1d2330; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
.question { font-size: 1.15em; color: #3b4252; margin-top: 0; }
.verdict { padding: .6em 1em; border-radius: 6px; font-weight: 600; }
.pass { background: #e3f4e8; color: #14532d; }
.fail { background: #fde4e4; color: #7f1d1d; }
table { border-collapse: collapse; width: 100%; margin: 1em 0; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e2e6ee; vertical-align: top; }
td.ok { color: #15803d; font-weight: 600; }
td.bad { color: #b91c1c; font-weight: 600; }
.events td:first-child { font-variant-numeric: tabular-nums; white-space: nowrap; color: #5b6474; }
svg text { font: 11px system-ui, sans-serif; fill: #5b6474; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: 1.4em; height: .7em; vertical-align: middle; margin-right: .3em; }
</style>
</head>
<body>
<h1>rideshare drill {{.Name}}</h1>
<p class="question">{{.Question}}</p>
<p>Fault: {{.Fault}}. Started {{clock .Started}}, took {{dur .Took}}.</p>
<p class="verdict {{if .Pass}}pass{{else}}fail{{end}}">{{.VerdictRow}}</p>

<h2>Latency over time</h2>
<svg xmlns="http://www.w3.org/2000/svg" width="{{.Chart.Width}}" height="{{.Chart.Height}}" viewBox="0 0 {{.Chart.Width}} {{.Chart.Height}}" role="img" aria-label="p50 and p99 latency and errors per second, the fault window shaded">
{{with .Chart.Fault}}<rect class="fault" x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" fill="#f59e0b" fill-opacity="0.18"><title>fault window</title></rect>
{{end}}{{range .Chart.YTicks}}<line x1="{{$.Chart.Left}}" x2="{{$.Chart.Right}}" y1="{{.At}}" y2="{{.At}}" stroke="#e2e6ee"/><text x="{{$.Chart.Left}}" dx="-6" y="{{.At}}" dy="4" text-anchor="end">{{.Label}}</text>
{{end}}{{range .Chart.XTicks}}<line x1="{{.At}}" x2="{{.At}}" y1="{{$.Chart.BandBottom}}" y2="{{$.Chart.TickBottom}}" stroke="#5b6474"/><text x="{{.At}}" y="{{$.Chart.BandBottom}}" dy="16" text-anchor="middle">{{.Label}}</text>
{{end}}<line class="axis" x1="{{.Chart.Left}}" x2="{{.Chart.Right}}" y1="{{.Chart.PlotBottom}}" y2="{{.Chart.PlotBottom}}" stroke="#5b6474"/>
<line class="axis" x1="{{.Chart.Left}}" x2="{{.Chart.Right}}" y1="{{.Chart.BandBottom}}" y2="{{.Chart.BandBottom}}" stroke="#5b6474"/>
<text x="{{.Chart.Left}}" dx="-6" y="{{.Chart.BandTop}}" dy="10" text-anchor="end">{{.Chart.MaxErrors}} err</text>
{{range .Chart.P99}}<polyline class="p99" points="{{.}}" fill="none" stroke="#dc2626" stroke-width="1.8"/>
{{end}}{{range .Chart.P50}}<polyline class="p50" points="{{.}}" fill="none" stroke="#2563eb" stroke-width="1.8"/>
{{end}}{{range .Chart.Bars}}<rect class="errors" x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" fill="#b91c1c" fill-opacity="0.7"/>
{{end}}</svg>
<p class="legend"><span><i class="swatch" style="background:#2563eb"></i>p50</span><span><i class="swatch" style="background:#dc2626"></i>p99</span><span><i class="swatch" style="background:#b91c1c;opacity:.7"></i>errors per second (lower band)</span><span><i class="swatch" style="background:#f59e0b;opacity:.35"></i>fault window</span></p>

<h2>Findings</h2>
<table class="findings">
<thead><tr><th></th><th>what</th><th>got</th><th>want</th></tr></thead>
<tbody>
{{range .Findings}}<tr><td class="{{if .OK}}ok{{else}}bad{{end}}">{{if .OK}}ok{{else}}FAIL{{end}}</td><td>{{.What}}</td><td>{{.Got}}</td><td>{{.Want}}</td></tr>
{{end}}</tbody>
</table>

<h2>What happened</h2>
<table class="events">
{{range .Events}}<tr><td>{{seconds .At}}</td><td>{{.What}}</td></tr>
{{end}}</table>
</body>
</html>
`))

// WriteHTML writes r as a self-contained HTML page.
func WriteHTML(w io.Writer, r *Result) error {
	return pageTemplate.Execute(w, htmlPage{Result: r, Chart: newChart(r), VerdictRow: r.Verdict()})
}
