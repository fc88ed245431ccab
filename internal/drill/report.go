package drill

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes a drill's result for people: what happened, the
// findings, the verdict.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "drill %s: %s\n", r.Name, r.Question)
	fmt.Fprintf(&b, "  fault: %s\n", r.Fault)
	if len(r.Events) > 0 {
		b.WriteString("\nwhat happened (seconds since the load's clock started)\n")
		for _, e := range r.Events {
			fmt.Fprintf(&b, "  %+7.1fs  %s\n", e.At.Seconds(), e.What)
		}
	}
	if len(r.Findings) > 0 {
		b.WriteString("\nfindings\n")
		for _, f := range r.Findings {
			fmt.Fprintf(&b, "  %s\n", f)
		}
	}
	b.WriteString("\n")
	b.WriteString(r.Verdict())
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Verdict is the one-line outcome: "PASS (9 findings hold) in 1m12s".
func (r *Result) Verdict() string {
	took := r.Took.Round(time.Second)
	switch {
	case r.Error != "":
		return fmt.Sprintf("verdict: FAIL: %s (after %s)", r.Error, took)
	case r.Pass:
		return fmt.Sprintf("verdict: PASS: %d of %d findings hold (in %s)", len(r.Findings), len(r.Findings), took)
	case len(r.Findings) == 0:
		return fmt.Sprintf("verdict: FAIL: nothing was measured (in %s)", took)
	}
	return fmt.Sprintf("verdict: FAIL: %d of %d findings do not hold (in %s)", r.Failed(), len(r.Findings), took)
}

// WriteJSON writes results as indented JSON: one object for one drill, an
// array for several.
func WriteJSON(w io.Writer, results []*Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if len(results) == 1 {
		return enc.Encode(results[0])
	}
	return enc.Encode(results)
}

// WriteSummary writes the table `drill all` ends with.
func WriteSummary(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "drill\tverdict\tfindings\ttook\twhy")
	passed := 0
	for _, r := range results {
		verdict, why := "FAIL", ""
		switch {
		case r.Pass:
			verdict = "PASS"
			passed++
		case r.Error != "":
			why = r.Error
		default:
			for _, f := range r.Findings {
				if !f.OK {
					why = f.What + ": " + f.Got
					break
				}
			}
		}
		if len(why) > 100 {
			why = why[:97] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", r.Name, verdict, len(r.Findings)-r.Failed(), len(r.Findings), r.Took.Round(time.Second), why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d of %d drills passed\n", passed, len(results))
	return err
}
