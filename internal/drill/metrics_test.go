package drill

import (
	"strings"
	"testing"
)

const sampleMetrics = `# HELP rideshare_dependency_calls_total RPCs to a dependency.
# TYPE rideshare_dependency_calls_total counter
rideshare_dependency_calls_total{peer="payments",result="success"} 12
rideshare_dependency_calls_total{peer="payments",result="circuit_open"} 30
rideshare_dependency_calls_total{peer="pricing",result="success"} 7
# HELP rideshare_dispatch_online_drivers Drivers online.
# TYPE rideshare_dispatch_online_drivers gauge
rideshare_dispatch_online_drivers 4
# HELP rideshare_http_requests_total HTTP requests served.
# TYPE rideshare_http_requests_total counter
rideshare_http_requests_total{code="200",method="POST",route="/rideshare.dispatch.v1.DispatchService/StartSearch"} 5
rideshare_http_requests_total{code="200",method="GET",route="/metrics"} 9
# HELP rideshare_shed_refusal_seconds Time to refuse.
# TYPE rideshare_shed_refusal_seconds histogram
rideshare_shed_refusal_seconds_bucket{le="0.01"} 98
rideshare_shed_refusal_seconds_bucket{le="0.1"} 100
rideshare_shed_refusal_seconds_bucket{le="+Inf"} 100
rideshare_shed_refusal_seconds_sum 0.4
rideshare_shed_refusal_seconds_count 100
`

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(sampleMetrics))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		got    float64
		labels []string
		want   float64
	}{
		{"every payments call", m.Sum("rideshare_dependency_calls_total", "peer=payments"), nil, 42},
		{"refused payments calls", m.Sum("rideshare_dependency_calls_total", "peer=payments", "result=circuit_open"), nil, 30},
		{"all calls", m.Sum("rideshare_dependency_calls_total"), nil, 49},
		{"a label no series has", m.Sum("rideshare_dependency_calls_total", "peer=users"), nil, 0},
		{"a gauge", m.Max("rideshare_dispatch_online_drivers"), nil, 4},
		{"RPCs served", m.SumPrefix("rideshare_http_requests_total", "route", "/rideshare."), nil, 5},
		{"histogram count", m.Sum("rideshare_shed_refusal_seconds_count"), nil, 100},
		{"a bucket", m.Sum("rideshare_shed_refusal_seconds_bucket", "le=0.01"), nil, 98},
		{"the +Inf bucket once", m.Sum("rideshare_shed_refusal_seconds_bucket", "le=+Inf"), nil, 100},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if _, err := ParseMetrics(strings.NewReader("not metrics {{{\n")); err == nil {
		t.Error("ParseMetrics accepted garbage")
	}
}
