package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// tokenResponse is a token endpoint's answer: an OAuth token response, an
// OAuth error, or (from the gateway) a problem+json with a code.
type tokenResponse struct {
	AccessToken      string `json:"access_token"`
	ExpiresIn        int64  `json:"expires_in"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	Code             string `json:"code"`
	Detail           string `json:"detail"`

	status int
	body   []byte
}

// requestOperatorToken asks tokenURL for an access token with the
// client_credentials grant. Only a failure to get any answer is an error:
// the commands word a refusal each in their own terms.
func requestOperatorToken(ctx context.Context, client *http.Client, tokenURL, clientID, clientSecret string) (*tokenResponse, error) {
	body := strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749, section 2.3.1: both are form-encoded before basic auth.
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	tok := &tokenResponse{status: res.StatusCode}
	tok.body, _ = io.ReadAll(io.LimitReader(res.Body, 1<<20))
	_ = json.Unmarshal(tok.body, tok)
	return tok, nil
}
