// Package faults is every service's admin fault-injection switch: added
// latency, an error rate or a hang, set at run time over an admin endpoint
// so drills and tests can make any service slow or broken on purpose
// (DESIGN section 4). It is off by default: with no fault set, the
// middleware costs one atomic load per request.
package faults

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// Fault is one injected misbehaviour of the requests under a route prefix.
// A request it applies to first hangs (if Hang), else waits Latency, then
// fails with probability ErrorRate.
type Fault struct {
	// Route is a path prefix such as
	// "/rideshare.payments.v1.PaymentsService/Authorize"; empty means every
	// request.
	Route string
	// Latency is added before the request is served (or fails).
	Latency time.Duration
	// ErrorRate is the share of requests, in [0, 1], that fail.
	ErrorRate float64
	// Hang blocks each request until its caller gives up.
	Hang bool
	// Status is the HTTP status of an injected error (503 when zero); RPC
	// callers see the matching RPC code.
	Status int
	// For, if positive, makes the fault expire by itself that long after it
	// was set, so a forgotten drill heals.
	For time.Duration
	// SetAt and ExpiresAt are stamped by the injector; ExpiresAt is zero
	// for a fault that lasts until cleared.
	SetAt     time.Time
	ExpiresAt time.Time
}

// DefaultStatus is the status of an injected error when none is given.
const DefaultStatus = http.StatusServiceUnavailable

// Code is the stable error code of every injected error, so a caller (or a
// drill) can tell an injected failure from a real one.
const Code = "fault_injected"

// statusKinds are the statuses an injected error may carry: each has an
// error kind, so RPC callers see the matching code and apperr renders the
// problem with exactly this status.
var statusKinds = map[int]apperr.Kind{
	http.StatusBadRequest:            apperr.Invalid,
	http.StatusUnauthorized:          apperr.Unauthenticated,
	http.StatusForbidden:             apperr.Forbidden,
	http.StatusNotFound:              apperr.NotFound,
	http.StatusConflict:              apperr.Conflict,
	http.StatusUnprocessableEntity:   apperr.Unprocessable,
	http.StatusTooManyRequests:       apperr.RateLimited,
	http.StatusInternalServerError:   apperr.Internal,
	http.StatusNotImplemented:        apperr.Unimplemented,
	http.StatusServiceUnavailable:    apperr.Unavailable,
	http.StatusGatewayTimeout:        apperr.Timeout,
	http.StatusRequestEntityTooLarge: apperr.TooLarge,
}

// Validate says what is wrong with a fault someone asked for, in words an
// operator can act on.
func (f Fault) Validate() error {
	switch {
	case f.Route != "" && !strings.HasPrefix(f.Route, "/"):
		return fmt.Errorf("route %q must be a path prefix starting with /", f.Route)
	case f.Latency < 0:
		return errors.New("latency must not be negative")
	case f.ErrorRate < 0 || f.ErrorRate > 1 || f.ErrorRate != f.ErrorRate:
		return fmt.Errorf("error_rate must be between 0 and 1, got %v", f.ErrorRate)
	case f.For < 0:
		return errors.New("for must not be negative")
	case f.Latency == 0 && f.ErrorRate == 0 && !f.Hang:
		return errors.New("a fault needs latency, error_rate or hang (to remove faults, use DELETE)")
	}
	if f.Status != 0 {
		if _, ok := statusKinds[f.Status]; !ok {
			return fmt.Errorf("status %d is not one an injected error can carry; use one of %s", f.Status, allowedStatuses())
		}
	}
	return nil
}

func allowedStatuses() string {
	var s []string
	for _, code := range []int{400, 401, 403, 404, 409, 413, 422, 429, 500, 501, 503, 504} {
		s = append(s, strconv.Itoa(code))
	}
	return strings.Join(s, ", ")
}

// status is the status an injected error carries.
func (f Fault) status() int {
	if f.Status == 0 {
		return DefaultStatus
	}
	return f.Status
}

// err is the error an injected failure answers with.
func (f Fault) err() error {
	return apperr.E(statusKinds[f.status()], Code, "fault injected: %s", f)
}

// activeAt reports whether the fault is still in force at now.
func (f Fault) activeAt(now time.Time) bool {
	return f.ExpiresAt.IsZero() || now.Before(f.ExpiresAt)
}

// String describes what the fault does, e.g. "latency 3s, 50% errors on
// /rideshare.payments.v1.PaymentsService/". How long it lasts is left to
// the caller, which knows whether to say "for 60s" or "until 20:41".
func (f Fault) String() string {
	var parts []string
	if f.Hang {
		parts = append(parts, "hang")
	}
	if f.Latency > 0 {
		parts = append(parts, "latency "+f.Latency.String())
	}
	if f.ErrorRate > 0 {
		e := strconv.FormatFloat(f.ErrorRate*100, 'g', 4, 64) + "% errors"
		if f.Status != 0 && f.Status != DefaultStatus {
			e += fmt.Sprintf(" (status %d)", f.Status)
		}
		parts = append(parts, e)
	}
	s := strings.Join(parts, ", ")
	if s == "" {
		s = "no fault"
	}
	if f.Route != "" {
		s += " on " + f.Route
	}
	return s
}

// wireFault is the JSON shape: durations as Go duration strings ("3s",
// "250ms"), which is what an operator types.
type wireFault struct {
	Route     string     `json:"route"`
	Latency   string     `json:"latency,omitempty"`
	ErrorRate float64    `json:"error_rate,omitempty"`
	Hang      bool       `json:"hang,omitempty"`
	Status    int        `json:"status,omitempty"`
	For       string     `json:"for,omitempty"`
	SetAt     *time.Time `json:"set_at,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// MarshalJSON writes the fault as the admin endpoint shows it.
func (f Fault) MarshalJSON() ([]byte, error) {
	w := wireFault{Route: f.Route, ErrorRate: f.ErrorRate, Hang: f.Hang, Status: f.Status}
	if f.Latency != 0 {
		w.Latency = f.Latency.String()
	}
	if f.For != 0 {
		w.For = f.For.String()
	}
	if !f.SetAt.IsZero() {
		w.SetAt = &f.SetAt
	}
	if !f.ExpiresAt.IsZero() {
		w.ExpiresAt = &f.ExpiresAt
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads a fault; set_at and expires_at are read (so a listed
// fault round-trips) but the injector stamps its own when setting one.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var w wireFault
	if err := strictUnmarshal(b, &w); err != nil {
		return err
	}
	out := Fault{Route: w.Route, ErrorRate: w.ErrorRate, Hang: w.Hang, Status: w.Status}
	var err error
	if out.Latency, err = parseDuration("latency", w.Latency); err != nil {
		return err
	}
	if out.For, err = parseDuration("for", w.For); err != nil {
		return err
	}
	if w.SetAt != nil {
		out.SetAt = *w.SetAt
	}
	if w.ExpiresAt != nil {
		out.ExpiresAt = *w.ExpiresAt
	}
	*f = out
	return nil
}

func parseDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration such as \"250ms\" or \"3s\"", field, s)
	}
	return d, nil
}

// strictUnmarshal rejects unknown fields, so a typo such as "errorRate"
// is an error rather than a fault that silently does nothing.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}
