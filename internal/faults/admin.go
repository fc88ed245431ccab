package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// List is the admin endpoint's answer: the faults in force.
type List struct {
	Faults []Fault `json:"faults"`
}

// maxFaultBody bounds a fault's JSON; a real one is a few hundred bytes.
const maxFaultBody = 64 << 10

// Admin is the fault switch's HTTP endpoint, mounted by the host at
// /admin/faults behind its admin-token check (this handler checks nothing):
//
//	GET                 the faults in force
//	PUT or POST  FAULT  set FAULT, replacing any on the same route
//	DELETE              clear every fault; ?route=PREFIX clears only that one
//
// Every answer that succeeds is the List in force afterwards; a bad request
// is problem+json saying what to fix.
func (i *Injector) Admin() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPut, http.MethodPost:
			f, err := readFault(w, r)
			if err != nil {
				apperr.WriteProblem(w, r, err, 0)
				return
			}
			if _, err := i.Set(f); err != nil {
				apperr.WriteProblem(w, r, apperr.E(apperr.Invalid, "invalid_fault", "%s", err.Error()), 0)
				return
			}
		case http.MethodDelete:
			if r.URL.Query().Has("route") {
				route := r.URL.Query().Get("route")
				if !i.Clear(route) {
					apperr.WriteProblem(w, r, apperr.E(apperr.NotFound, "no_fault", "no fault is set on route %q", route), 0)
					return
				}
			} else {
				i.ClearAll()
			}
		default:
			apperr.WriteMethodNotAllowed(w, r, "GET, PUT, POST, DELETE", r.Method+" is not supported: GET lists the faults, PUT sets one, DELETE clears")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		faults := i.Active()
		if faults == nil {
			faults = []Fault{}
		}
		_ = json.NewEncoder(w).Encode(List{Faults: faults})
	})
}

// readFault decodes the request body as one fault.
func readFault(w http.ResponseWriter, r *http.Request) (Fault, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFaultBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return Fault{}, apperr.E(apperr.TooLarge, "", "a fault is at most %d bytes", maxFaultBody)
		}
		return Fault{}, apperr.Wrap(err, apperr.Invalid, "", "reading the fault")
	}
	var f Fault
	if err := json.Unmarshal(body, &f); err != nil {
		return Fault{}, apperr.E(apperr.Invalid, "invalid_fault", "%s", describeJSONError(err))
	}
	return f, nil
}

// describeJSONError says what was wrong with a fault's JSON and what a
// fault looks like.
func describeJSONError(err error) string {
	const example = `; a fault looks like {"latency":"3s","error_rate":0.5,"hang":false,"route":"/pkg.Service/","for":"60s","status":503}`
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("the body is not valid JSON (%v)", syn) + example
	case errors.As(err, &typ):
		return fmt.Sprintf("%s must be a %s, not a JSON %s", typ.Field, typ.Type, typ.Value) + example
	}
	return err.Error() + example
}
