package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
)

// The login page of the authorization code flow. /oauth2/authorize stores
// the request and sends the browser here (client.LoginURL); the form posts
// back here; on success the request is marked signed in and the browser
// goes on to the library's callback (/oauth2/authorize/callback), which
// issues the code and redirects to the client. Every URL is a path on the
// issuer, so the page works unchanged behind the gateway, which forwards
// /oauth2/* to identity.
//
// Cross-site request forgery: the form carries a random token that is
// bound to the auth request (only its hash is stored, on the request's row)
// and that is also set as a SameSite=Lax cookie. A post is accepted only
// when the form's token, the cookie and the stored hash agree: a page on
// another site can neither read the token nor make the browser send the
// cookie with its post. The same cookie must accompany the callback, so the
// code is issued only to the browser that signed in, never to whoever else
// learned the request's id from the login URL.

//go:embed templates/login.html
var templateFS embed.FS

var loginTemplate = template.Must(template.ParseFS(templateFS, "templates/login.html"))

// loginStyle is the page's only styling. It is inlined, and allowed by its
// hash in the Content-Security-Policy, so the page loads nothing else.
const loginStyle = `body{font-family:system-ui,sans-serif;background:#f4f4f5;margin:0}
main{max-width:22rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:.5rem}
h1{font-size:1.4rem;margin-top:0}
label{display:block;margin:.8rem 0 .2rem}
input[type=email],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
button{margin-top:1.2rem;width:100%;padding:.6rem;font-size:1rem}
.error{color:#b91c1c}`

// loginCSP allows exactly the inline style above and nothing else: no
// scripts, no frames (clickjacking), no other origins. It has no
// form-action directive because browsers apply that to the redirects after
// a post too, and a successful sign-in redirects on to the client's own
// redirect URI on another origin.
var loginCSP = func() string {
	sum := sha256.Sum256([]byte(loginStyle))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; frame-ancestors 'none'; base-uri 'none'"
}()

// loginCookie holds the browser's copy of the CSRF token. Its path covers
// the login page and the callback, nothing else of the API.
const (
	loginCookie     = "rideshare_login"
	loginCookiePath = "/oauth2/"
)

// maxLoginForm bounds a login post: four short fields.
const maxLoginForm = 8 << 10

// msgBadCredentials is the one answer to every failed sign-in, so that the
// page says nothing about which emails have accounts.
const msgBadCredentials = "Incorrect email or password."

// msgFormExpired is the answer to a post whose CSRF token does not match.
const msgFormExpired = "This form had expired. Please sign in again."

// loginPage serves the login form (GET) and checks what it posts (POST).
type loginPage struct {
	requests *authRequests
	accounts passwordChecker
	audit    auditor
	log      *slog.Logger
	// secure marks the cookie Secure: the issuer (the public URL the
	// browser sees) is https. TLS usually ends before identity, at the
	// gateway or a load balancer, so the request itself cannot tell.
	secure bool
}

// loginView is what the template shows.
type loginView struct {
	Style         template.CSS
	Action        string
	Expired       bool
	Client        string
	AuthRequestID string
	CSRF          string
	Email         string
	Error         string
}

func (l *loginPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		l.show(w, r, r.URL.Query().Get("authRequestID"), "", "", http.StatusOK)
	case http.MethodPost:
		l.submit(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		l.render(w, http.StatusMethodNotAllowed, loginView{Expired: true})
	}
}

// show gives the request id's form a new CSRF token and renders it, with
// an error message and the email to keep when it is shown again after a
// refusal.
func (l *loginPage) show(w http.ResponseWriter, r *http.Request, id, email, message string, status int) {
	ctx := r.Context()
	a, csrf, err := l.requests.beginLogin(ctx, id)
	if errors.Is(err, errLoginExpired) {
		l.render(w, http.StatusBadRequest, loginView{Expired: true})
		return
	}
	if err != nil {
		l.fail(ctx, w, err)
		return
	}
	l.setCookie(w, csrf, int(authRequestLifetime.Seconds()))
	l.render(w, status, loginView{Client: a.clientID, AuthRequestID: id, CSRF: csrf, Email: email, Error: message})
}

// submit checks a posted form: first that it is this browser's form for a
// live request (nothing else is looked at otherwise), then the
// credentials.
func (l *loginPage) submit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	if err := r.ParseForm(); err != nil {
		l.render(w, http.StatusBadRequest, loginView{Expired: true})
		return
	}
	f := r.PostForm
	id, csrf, email := f.Get("auth_request_id"), f.Get("csrf"), f.Get("email")
	cookie, _ := r.Cookie(loginCookie)
	var a *authRequest
	var err error
	if cookie == nil || subtle.ConstantTimeCompare([]byte(cookie.Value), []byte(csrf)) != 1 {
		err = errCSRF
	} else {
		a, err = l.requests.forLogin(ctx, id, csrf)
	}
	switch {
	case errors.Is(err, errCSRF):
		// A stale tab, or a post from another site. Either way the user
		// gets a fresh form for the same request and types again.
		l.audit.loginRefused(ctx, r, "csrf token mismatch")
		l.show(w, r, id, email, msgFormExpired, http.StatusForbidden)
		return
	case errors.Is(err, errLoginExpired):
		l.audit.loginRefused(ctx, r, "auth request unknown, expired or used")
		l.render(w, http.StatusBadRequest, loginView{Expired: true})
		return
	case err != nil:
		l.fail(ctx, w, err)
		return
	}

	// authenticate costs one password hash whether or not the email has an
	// account, so the answer's timing does not tell them apart either.
	acc, err := l.accounts.authenticate(ctx, email, f.Get("password"))
	if errors.Is(err, errBadCredentials) {
		l.audit.loginFailed(ctx, r, email, a.clientID)
		l.render(w, http.StatusOK, loginView{Client: a.clientID, AuthRequestID: id, CSRF: csrf, Email: email, Error: msgBadCredentials})
		return
	}
	if err != nil {
		l.fail(ctx, w, err)
		return
	}
	if err := l.requests.signIn(ctx, id, csrf, acc.ID); err != nil {
		if errors.Is(err, errLoginExpired) {
			l.render(w, http.StatusBadRequest, loginView{Expired: true})
			return
		}
		l.fail(ctx, w, err)
		return
	}
	l.audit.loginSucceeded(ctx, r, acc.ID, a.clientID)
	// 303: the browser follows with a GET, and a reload of the next page
	// does not post the password again.
	http.Redirect(w, r, callbackPath+"?id="+url.QueryEscape(id), http.StatusSeeOther)
}

// guardCallback lets only the browser that signed a request in reach the
// library's callback for it, which issues the code.
func (l *loginPage) guardCallback(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cookie, _ := r.Cookie(loginCookie)
		if cookie == nil || !l.requests.boundTo(r.Context(), r.URL.Query().Get("id"), cookie.Value) {
			l.audit.loginRefused(r.Context(), r, "callback without the signed-in browser's cookie")
			l.render(w, http.StatusBadRequest, loginView{Expired: true})
			return
		}
		// Its work is done: the code is issued once.
		l.setCookie(w, "", -1)
		next.ServeHTTP(w, r)
	})
}

func (l *loginPage) setCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: loginCookie, Value: value, Path: loginCookiePath, MaxAge: maxAge,
		HttpOnly: true, Secure: l.secure, SameSite: http.SameSiteLaxMode,
	})
}

// render writes the page. It is rendered into a buffer first, so that a
// template error is a clean 500 rather than half a page.
func (l *loginPage) render(w http.ResponseWriter, status int, v loginView) {
	v.Style, v.Action = template.CSS(loginStyle), loginPath
	var buf bytes.Buffer
	if err := loginTemplate.Execute(&buf, v); err != nil {
		l.fail(context.Background(), w, err)
		return
	}
	setPageHeaders(w)
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (l *loginPage) fail(ctx context.Context, w http.ResponseWriter, err error) {
	l.log.ErrorContext(ctx, "login page failed", "err", err)
	setPageHeaders(w)
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte("<!doctype html><title>Sign in · rideshare</title><p>Something went wrong. Please try again.</p>\n"))
}

// setPageHeaders: the page is never cached (it holds a CSRF token, and a
// shared cache must never keep one), never framed, and sends no Referer
// (its URL names the auth request).
func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", loginCSP)
}
