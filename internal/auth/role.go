package auth

import (
	"strings"

	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
)

// DefaultRoleClaim is where the built-in issuer puts the role.
const DefaultRoleClaim = "role"

// roleFromClaims reads the caller's role from claims at path: a top-level
// claim ("role", or a namespaced one such as Auth0's
// "https://rideshare.dev/role", dots and all), else a dotted path into
// nested objects (Keycloak's "realm_access.roles"). The value may be a
// string or a list; from a list the first role the platform knows wins, so
// unrelated roles (Keycloak's "offline_access") are skipped.
func roleFromClaims(claims jwt.MapClaims, path string) authv1.Role {
	if path == "" {
		path = DefaultRoleClaim
	}
	v, ok := claims[path]
	if !ok {
		var cur any = map[string]any(claims)
		for _, part := range strings.Split(path, ".") {
			m, isMap := cur.(map[string]any)
			if !isMap {
				return authv1.Role_ROLE_UNSPECIFIED
			}
			if cur, ok = m[part]; !ok {
				return authv1.Role_ROLE_UNSPECIFIED
			}
		}
		v = cur
	}
	switch v := v.(type) {
	case string:
		return RoleOf(v)
	case []any:
		for _, item := range v {
			if s, ok := item.(string); ok {
				if r := RoleOf(s); r != authv1.Role_ROLE_UNSPECIFIED {
					return r
				}
			}
		}
	}
	return authv1.Role_ROLE_UNSPECIFIED
}

// RoleOf reads a role's public spelling; unknown spellings are
// ROLE_UNSPECIFIED, which no route admits.
func RoleOf(s string) authv1.Role {
	switch s {
	case "rider":
		return authv1.Role_ROLE_RIDER
	case "driver":
		return authv1.Role_ROLE_DRIVER
	case "admin":
		return authv1.Role_ROLE_ADMIN
	}
	return authv1.Role_ROLE_UNSPECIFIED
}

// RoleName is the public spelling of a role ("rider"), as tokens and the
// API carry it.
func RoleName(r authv1.Role) string {
	switch r {
	case authv1.Role_ROLE_RIDER:
		return "rider"
	case authv1.Role_ROLE_DRIVER:
		return "driver"
	case authv1.Role_ROLE_ADMIN:
		return "admin"
	}
	return ""
}
