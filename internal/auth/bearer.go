package auth

import (
	"net/http"
	"strings"
)

// BearerToken is the token of h's "Authorization: Bearer" header, and
// whether there is one.
func BearerToken(h http.Header) (string, bool) {
	scheme, token, ok := strings.Cut(h.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}
