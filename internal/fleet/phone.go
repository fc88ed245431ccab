package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// requestTimeout bounds every call a driver makes, so one hung gateway
// request cannot freeze a driver.
const requestTimeout = 5 * time.Second

// maxResponse bounds what a driver reads from one response: its answers
// are a few hundred bytes, and a broken server must not make it buffer more.
const maxResponse = 1 << 20

// cliClientID is the first-party OAuth client allowed the password grant.
const cliClientID = "rideshare-cli"

// phone is a driver's app: the public HTTP API of DESIGN.md section 7, with
// the driver's credentials, and nothing else. One phone belongs to one
// driver goroutine, so it needs no lock.
type phone struct {
	base     string
	hc       *http.Client
	email    string
	password string
	token    string
}

// apiError is an answer other than 2xx: the HTTP status with the problem's
// stable code (or the OAuth error), and Retry-After when the server gave one.
type apiError struct {
	Status     int
	Code       string
	Detail     string
	RetryAfter time.Duration
}

func (e *apiError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Detail)
}

// statusOf is err's HTTP status, or 0 when err is not an answer from the
// server (a network error, a timeout).
func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// transient reports whether err may go away by itself: the network, an
// overloaded or failing server, a rate limit. Anything else is an answer
// about the request, and repeating it unchanged would get the same answer.
func transient(err error) bool {
	s := statusOf(err)
	return s == 0 || s >= 500 || s == http.StatusTooManyRequests || s == http.StatusRequestTimeout
}

// retryAfter is how long the server asked the caller to wait, if it did.
func retryAfter(err error) time.Duration {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	return 0
}

type latLng struct {
	Lat float64 `json:"lat"`
	Lng float64 `json:"lng"`
}

func (p latLng) point() geo.Point { return geo.Point{Lat: p.Lat, Lng: p.Lng} }

func latLngOf(p geo.Point) latLng { return latLng{Lat: p.Lat, Lng: p.Lng} }

type vehicle struct {
	Make  string `json:"make"`
	Model string `json:"model"`
	Plate string `json:"plate"`
	Color string `json:"color"`
}

// profile is what a fleet driver signs up with.
type profile struct {
	Name    string
	Vehicle vehicle
}

// offer is an open ride offer as the gateway lists it.
type offer struct {
	RideID    string    `json:"ride_id"`
	Pickup    latLng    `json:"pickup"`
	Dropoff   latLng    `json:"dropoff"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ride is the part of a ride a driver acts on.
type ride struct {
	ID       string  `json:"id"`
	Status   string  `json:"status"`
	DriverID string  `json:"driver_id"`
	Pickup   *latLng `json:"pickup"`
	Dropoff  *latLng `json:"dropoff"`
}

// signUp creates the driver's account. A 409 (email_taken) means a previous
// run created it, which the caller treats as done.
func (p *phone) signUp(ctx context.Context, pr profile) error {
	in := struct {
		Role     string  `json:"role"`
		Name     string  `json:"name"`
		Email    string  `json:"email"`
		Password string  `json:"password"`
		Vehicle  vehicle `json:"vehicle"`
	}{"driver", pr.Name, p.email, p.password, pr.Vehicle}
	return p.send(ctx, http.MethodPost, "/v1/accounts", "", nil, in, nil)
}

// logIn gets an access token with the first-party password grant.
func (p *phone) logIn(ctx context.Context) error {
	form := url.Values{
		"grant_type": {"password"},
		"client_id":  {cliClientID},
		"username":   {p.email},
		"password":   {p.password},
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := p.roundTrip(req, &out); err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	if out.AccessToken == "" {
		return errors.New("log in: the token response has no access_token")
	}
	p.token = out.AccessToken
	return nil
}

// call makes an authenticated request, logging in first if the phone has
// no token, and once more if the gateway answers 401 (the token expired or
// the signing key rotated).
func (p *phone) call(ctx context.Context, method, path string, in, out any) error {
	return p.callWith(ctx, method, path, nil, in, out)
}

// callWith is call with extra request headers (a ride request's
// Idempotency-Key).
func (p *phone) callWith(ctx context.Context, method, path string, hdr http.Header, in, out any) error {
	for attempt := 0; ; attempt++ {
		if p.token == "" {
			if err := p.logIn(ctx); err != nil {
				return err
			}
		}
		err := p.send(ctx, method, path, p.token, hdr, in, out)
		if attempt == 0 && statusOf(err) == http.StatusUnauthorized {
			p.token = ""
			continue
		}
		return err
	}
}

func (p *phone) setAvailability(ctx context.Context, online bool, at geo.Point) error {
	in := struct {
		Online   bool    `json:"online"`
		Location *latLng `json:"location,omitempty"`
	}{Online: online}
	if online {
		l := latLngOf(at)
		in.Location = &l
	}
	return p.call(ctx, http.MethodPut, "/v1/drivers/me/availability", in, nil)
}

func (p *phone) ping(ctx context.Context, at geo.Point) error {
	return p.call(ctx, http.MethodPost, "/v1/drivers/me/location", latLngOf(at), nil)
}

func (p *phone) offers(ctx context.Context) ([]offer, error) {
	var out struct {
		Items []offer `json:"items"`
	}
	err := p.call(ctx, http.MethodGet, "/v1/drivers/me/offers", nil, &out)
	return out.Items, err
}

func (p *phone) ride(ctx context.Context, id string) (ride, error) {
	var out ride
	err := p.call(ctx, http.MethodGet, "/v1/rides/"+url.PathEscape(id), nil, &out)
	return out, err
}

// step is one of the trip's POSTs: accept, arrive, start, complete, cancel.
// Each is naturally idempotent on the platform, so repeating one after a
// lost answer is safe.
func (p *phone) step(ctx context.Context, id, action string) (ride, error) {
	var out ride
	err := p.call(ctx, http.MethodPost, "/v1/rides/"+url.PathEscape(id)+"/"+action, struct{}{}, &out)
	return out, err
}

// send makes one JSON request with the request timeout.
func (p *phone) send(ctx context.Context, method, path, token string, hdr http.Header, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return p.roundTrip(req, out)
}

// roundTrip sends req and decodes a 2xx body into out, or the error body
// (problem+json or an OAuth error) into an *apiError.
func (p *phone) roundTrip(req *http.Request, out any) error {
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil || len(bytes.TrimSpace(b)) == 0 {
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: malformed answer: %w", req.Method, req.URL.Path, err)
		}
		return nil
	}
	var problem struct {
		Code        string `json:"code"`
		Detail      string `json:"detail"`
		OAuthError  string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(b, &problem) // a body that is not JSON still leaves the status
	e := &apiError{Status: resp.StatusCode, Code: problem.Code, Detail: problem.Detail}
	if e.Code == "" {
		e.Code, e.Detail = problem.OAuthError, problem.Description
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, e)
}
