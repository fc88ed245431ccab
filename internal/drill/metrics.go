package drill

import (
	"fmt"
	"io"
	"math"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a process's /metrics, flattened to samples.
// A histogram becomes its _count, _sum and _bucket{le=...} samples, as
// the text format writes them.
type Metrics []Sample

// Sample is one series' value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Sum adds the samples called name whose labels include every one of
// labels, each given as "key=value".
func (m Metrics) Sum(name string, labels ...string) float64 {
	var sum float64
	for _, s := range m {
		if s.Name == name && s.has(labels) {
			sum += s.Value
		}
	}
	return sum
}

// SumPrefix adds the samples called name whose label has a value
// starting with prefix.
func (m Metrics) SumPrefix(name, label, prefix string) float64 {
	var sum float64
	for _, s := range m {
		if v, ok := s.Labels[label]; s.Name == name && ok && strings.HasPrefix(v, prefix) {
			sum += s.Value
		}
	}
	return sum
}

// Max is the largest sample called name with the labels (0 when none).
func (m Metrics) Max(name string, labels ...string) float64 {
	best, seen := 0.0, false
	for _, s := range m {
		if s.Name == name && s.has(labels) && (!seen || s.Value > best) {
			best, seen = s.Value, true
		}
	}
	return best
}

func (s Sample) has(labels []string) bool {
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if got, ok := s.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParseMetrics reads the Prometheus text format.
func ParseMetrics(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	var out Metrics
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			add := func(n string, v float64, extra ...string) {
				ls := labels
				if len(extra) == 2 {
					ls = make(map[string]string, len(labels)+1)
					for k, v := range labels {
						ls[k] = v
					}
					ls[extra[0]] = extra[1]
				}
				out = append(out, Sample{Name: n, Labels: ls, Value: v})
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add(name, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add(name, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				add(name+"_count", float64(h.GetSampleCount()))
				add(name+"_sum", h.GetSampleSum())
				inf := false
				for _, b := range h.GetBucket() {
					add(name+"_bucket", float64(b.GetCumulativeCount()), "le", formatLE(b.GetUpperBound()))
					inf = inf || math.IsInf(b.GetUpperBound(), 1)
				}
				if !inf {
					add(name+"_bucket", float64(h.GetSampleCount()), "le", "+Inf")
				}
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				add(name+"_count", float64(s.GetSampleCount()))
				add(name+"_sum", s.GetSampleSum())
			}
		}
	}
	return out, nil
}

// formatLE writes a bucket bound as the text format does ("0.01", "+Inf").
func formatLE(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return model.SampleValue(f).String()
}
