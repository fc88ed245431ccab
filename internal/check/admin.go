package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/procs"
)

// Admin is a Source that reads each process's /admin/audit with an
// operator's admin token.
type Admin struct {
	// Processes maps a process name to its base URL: a service's name
	// ("rides") or a replica's ("payments-2"). Replicas of a service share
	// its database, so any one of them answers for all.
	Processes map[string]string
	// Token is an access token with the admin role.
	Token string
	// HTTP is the client (default http.DefaultClient); give it a timeout.
	HTTP *http.Client
	// PageSize is how many rides or payments one answer holds (default
	// platform.DefaultAuditLimit).
	PageSize int
}

// Rides reads a page of rides' audit.
func (s *Admin) Rides(ctx context.Context, after string) (RidesPage, error) {
	var page RidesPage
	pa, err := s.service(ctx, "rides", after, s.pageSize())
	if err == nil {
		page.Now = pa.Now
		err = decodeAudit(pa, &page.AuditPage)
	}
	return page, err
}

// Payments reads a page of payments' audit.
func (s *Admin) Payments(ctx context.Context, after string) (PaymentsPage, error) {
	var page PaymentsPage
	pa, err := s.service(ctx, "payments", after, s.pageSize())
	if err == nil {
		page.Now = pa.Now
		err = decodeAudit(pa, &page.AuditPage)
	}
	return page, err
}

// Outboxes reads every service's outbox backlog, from one process of each.
func (s *Admin) Outboxes(ctx context.Context) ([]Outbox, error) {
	seen := map[string]bool{}
	var out []Outbox
	var errs []error
	for _, svc := range s.services() {
		pa, err := s.service(ctx, svc, "", 0)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if pa.Outbox == nil || seen[pa.Service] {
			continue // no database (the gateway), or a service already read
		}
		seen[pa.Service] = true
		o := Outbox{Service: pa.Service, Unsent: pa.Outbox.Count}
		if o.Unsent > 0 && !pa.Outbox.Oldest.IsZero() {
			o.OldestAge = max(pa.Now.Sub(pa.Outbox.Oldest), 0)
		}
		out = append(out, o)
	}
	return out, errors.Join(errs...)
}

func (s *Admin) pageSize() int {
	if s.PageSize > 0 {
		return min(s.PageSize, platform.MaxAuditLimit)
	}
	return platform.DefaultAuditLimit
}

// services are the services the processes belong to, a replica's
// "payments-2" counted as "payments".
func (s *Admin) services() []string {
	seen := map[string]bool{}
	var out []string
	for name := range s.Processes {
		svc := procs.ServiceOf(name)
		if !seen[svc] {
			seen[svc] = true
			out = append(out, svc)
		}
	}
	sort.Strings(out)
	return out
}

// service reads the audit from the first process of svc that answers, so
// that one replica down (a drill killed it) does not stop the check.
func (s *Admin) service(ctx context.Context, svc, after string, limit int) (platform.ProcessAudit, error) {
	var names []string
	for name := range s.Processes {
		if procs.ServiceOf(name) == svc {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		known := make([]string, 0, len(s.Processes))
		for name := range s.Processes {
			known = append(known, name)
		}
		sort.Strings(known)
		return platform.ProcessAudit{}, fmt.Errorf("no address for %s (the processes known are: %s)", svc, strings.Join(known, ", "))
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		pa, err := s.fetch(ctx, name, after, limit)
		if err == nil {
			return pa, nil
		}
		errs = append(errs, err)
		if errors.Is(err, ErrRefused) || ctx.Err() != nil {
			break // another replica would refuse the same token
		}
	}
	return platform.ProcessAudit{}, errors.Join(errs...)
}

// ErrRefused matches (errors.Is) a process refusing the operator's token:
// asking again will not help.
var ErrRefused = errors.New("the audit was refused")

type refusedError struct{ msg string }

func (e *refusedError) Error() string        { return e.msg }
func (e *refusedError) Is(target error) bool { return target == ErrRefused }

// fetch reads one process's audit.
func (s *Admin) fetch(ctx context.Context, name, after string, limit int) (platform.ProcessAudit, error) {
	var pa platform.ProcessAudit
	base := strings.TrimRight(s.Processes[name], "/")
	u := base + platform.AuditPath + "?" + url.Values{"after": {after}, "limit": {strconv.Itoa(limit)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return pa, fmt.Errorf("%s: %w", name, err)
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Accept", "application/json")
	client := s.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	res, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return pa, fmt.Errorf("%s at %s does not answer: %w", name, base, err)
	}
	defer res.Body.Close()
	// A page of 10,000 rides is a few megabytes; anything far larger is
	// not an audit.
	raw, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return pa, fmt.Errorf("%s: reading its audit: %w", name, err)
	}
	if res.StatusCode != http.StatusOK {
		var prob apperr.Problem
		_ = json.Unmarshal(raw, &prob)
		detail := prob.Detail
		if detail == "" {
			detail = fmt.Sprintf("%.200s", strings.TrimSpace(string(raw)))
		}
		switch res.StatusCode {
		case http.StatusUnauthorized:
			return pa, &refusedError{fmt.Sprintf("%s refused the token (401 Unauthorized): %s", name, detail)}
		case http.StatusForbidden:
			return pa, &refusedError{fmt.Sprintf("%s refused the operator (403 Forbidden): the audit needs the admin role: %s", name, detail)}
		case http.StatusNotFound:
			return pa, fmt.Errorf("%s has no audit at %s (404): a build without one, or the wrong URL?", name, base+platform.AuditPath)
		}
		return pa, fmt.Errorf("%s answered %s: %s", name, res.Status, detail)
	}
	if err := json.Unmarshal(raw, &pa); err != nil {
		return pa, fmt.Errorf("%s answered %s with something that is not an audit: %.200s", name, platform.AuditPath, raw)
	}
	return pa, nil
}

// decodeAudit reads a service's own part of its audit.
func decodeAudit(pa platform.ProcessAudit, into any) error {
	if len(pa.Audit) == 0 {
		return fmt.Errorf("%s reports no audit of its own (a build without one?)", pa.Service)
	}
	if err := json.Unmarshal(pa.Audit, into); err != nil {
		return fmt.Errorf("%s: its audit does not decode: %w", pa.Service, err)
	}
	return nil
}
