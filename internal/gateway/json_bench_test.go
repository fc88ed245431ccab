package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// BenchmarkDecode is the JSON a gateway request decodes: the body of a
// ride request and of a location ping, read from the request as decode
// does. cpu-ns/op is the process's CPU time per decode (GC included).
//
//	go test -run '^$' -bench BenchmarkDecode -count 6 ./internal/gateway
func BenchmarkDecode(b *testing.B) {
	for _, c := range []struct {
		name, body string
		into       func() any
	}{
		{"ride-request", `{"pickup":{"lat":37.7793,"lng":-122.4193},"dropoff":{"lat":37.7599,"lng":-122.4148}}`, func() any { return new(rideRequestJSON) }},
		{"location", `{"lat":37.7793,"lng":-122.4193}`, func() any { return new(locationJSON) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			body := &reusableBody{}
			r := &http.Request{Method: "POST", Header: http.Header{"Content-Type": {"application/json"}}, Body: body, ContentLength: int64(len(c.body))}
			b.ReportAllocs()
			cpu0 := testenv.ProcessCPU()
			for b.Loop() {
				body.Reset(c.body)
				if err := decode(r, c.into()); err != nil {
					b.Fatal(err)
				}
			}
			// CPU time, unlike ns/op, leaves out the time another
			// process held the core: the figure to compare on a busy
			// machine.
			b.ReportMetric(float64((testenv.ProcessCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// reusableBody is a request body read again and again.
type reusableBody struct{ strings.Reader }

func (*reusableBody) Close() error { return nil }
