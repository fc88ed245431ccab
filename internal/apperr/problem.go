package apperr

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Problem is an RFC 9457 problem details body with rideshare's stable code.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Code      string `json:"code"`
	Instance  string `json:"instance,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// ProblemTypeBase prefixes every problem type URI; the code completes it, so
// clients can switch on either.
const ProblemTypeBase = "https://rideshare.dev/problems/"

// ProblemOf renders err as the problem a public caller sees.
func ProblemOf(err error) Problem {
	e := As(err)
	status := e.Kind.HTTPStatus()
	return Problem{
		Type:   ProblemTypeBase + e.Code,
		Title:  http.StatusText(status),
		Status: status,
		Detail: e.Message,
		Code:   e.Code,
	}
}

// WriteProblem writes err as application/problem+json. retryAfter, when
// positive, becomes a Retry-After header (rate limits, shedding).
func WriteProblem(w http.ResponseWriter, r *http.Request, err error, retryAfter time.Duration) {
	p := ProblemOf(err)
	if r != nil {
		p.Instance = r.URL.Path
		p.RequestID = w.Header().Get("X-Request-Id")
	}
	if retryAfter > 0 {
		secs := int((retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// WriteMethodNotAllowed writes a 405 problem naming the methods allow lists.
// No Kind maps to 405 because no RPC can answer it; only the plain HTTP
// handlers beside the RPCs (admin views) do.
func WriteMethodNotAllowed(w http.ResponseWriter, r *http.Request, allow, detail string) {
	w.Header().Set("Allow", allow)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusMethodNotAllowed)
	_ = json.NewEncoder(w).Encode(Problem{
		Type: ProblemTypeBase + "method_not_allowed", Title: http.StatusText(http.StatusMethodNotAllowed),
		Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Instance: r.URL.Path,
		Detail: detail, RequestID: w.Header().Get("X-Request-Id"),
	})
}
