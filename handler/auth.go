package handler

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/tasksapi/tasks/internal/apierr"
	"github.com/tasksapi/tasks/taskstore"
)

// Authenticator maps a request to the caller's principal. The embedding
// server supplies it: the credential (a bearer token, an API key header, a
// session cookie, a client certificate) is the server's business, not this
// package's, and the Authenticator sees the whole request.
//
// It decides every request that does not already carry a principal in its
// context (see New and Authenticate), whatever headers it has. An error
// wrapping ErrNoToken answers 400 no_token (the request carries no
// credential at all); an error wrapping ErrAuthUnavailable answers 500
// api_error and is logged (the authenticator could not decide, e.g. its
// token service is down, so a caller is not told that a good credential is
// bad); any other error answers 401 invalid_token.
//
// An Authenticator must be safe for concurrent use.
type Authenticator func(r *http.Request) (taskstore.Principal, error)

var (
	// ErrNoToken, wrapped by an Authenticator's error, means the request
	// carries no credential: the answer is 400 no_token. Tokens returns it
	// for a request without a (non-blank) Authorization header.
	ErrNoToken = errors.New("handler: no token")
	// ErrInvalidToken is what Tokens returns for a token it does not know.
	// Any error from an Authenticator (other than ErrNoToken and
	// ErrAuthUnavailable) has the same effect: 401 invalid_token.
	ErrInvalidToken = errors.New("handler: invalid token")
	// ErrAuthUnavailable, wrapped by an Authenticator's error, means the
	// token could not be checked (a failure, not a verdict): the caller gets
	// 500 api_error and the error is logged.
	ErrAuthUnavailable = errors.New("handler: authentication unavailable")
)

// InsecureAnyoneIsOperator accepts every request that carries an
// Authorization header, whatever its value, as the operator: the zero
// Principal, which sees every task of every tenant. A request without one
// gets ErrNoToken.
//
// It is meant for tests and for servers on a trusted network only. It is
// named loudly on purpose: New refuses a nil Authenticator so that open
// access is never an accident.
var InsecureAnyoneIsOperator Authenticator = func(r *http.Request) (taskstore.Principal, error) {
	if strings.TrimSpace(r.Header.Get("Authorization")) == "" {
		return taskstore.Principal{}, ErrNoToken
	}
	return taskstore.Principal{}, nil
}

// Tokens returns an Authenticator for a fixed set of bearer tokens, each
// mapped to the principal it authenticates (the zero Principal is an
// operator). It reads "Authorization: Bearer <token>" (the scheme is
// case-insensitive, spaces around the token are ignored) and answers
// ErrNoToken when there is no Authorization header (or a blank one), and
// ErrInvalidToken for any other header or an unknown token.
//
// Tokens are compared in constant time: the SHA-256 digest of the presented
// token is compared with the digest of every known token, without stopping
// at a match, so the time taken reveals neither which token matched nor how
// much of one did.
//
// The map is copied; later changes to it have no effect. Tokens panics on an
// empty token or one with surrounding white space, which no request could
// present.
func Tokens(m map[string]taskstore.Principal) Authenticator {
	type entry struct {
		digest    [sha256.Size]byte
		principal taskstore.Principal
	}
	entries := make([]entry, 0, len(m))
	for tok, p := range m {
		if tok == "" || strings.TrimSpace(tok) != tok {
			panic("handler.Tokens: a token must be non-empty without surrounding white space")
		}
		entries = append(entries, entry{sha256.Sum256([]byte(tok)), p})
	}
	return func(r *http.Request) (taskstore.Principal, error) {
		h := r.Header.Get("Authorization")
		if strings.TrimSpace(h) == "" {
			return taskstore.Principal{}, ErrNoToken
		}
		tok, ok := bearerToken(h)
		if !ok {
			return taskstore.Principal{}, ErrInvalidToken
		}
		d := sha256.Sum256([]byte(tok))
		match := -1
		for i := range entries {
			eq := subtle.ConstantTimeCompare(d[:], entries[i].digest[:])
			match = subtle.ConstantTimeSelect(eq, i, match)
		}
		if match < 0 {
			return taskstore.Principal{}, ErrInvalidToken
		}
		return entries[match].principal, nil
	}
}

// bearerToken extracts the token of an "Authorization: Bearer <token>"
// header value.
func bearerToken(h string) (string, bool) {
	const scheme = "bearer"
	h = strings.TrimSpace(h)
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	if c := h[len(scheme)]; c != ' ' && c != '\t' {
		return "", false
	}
	tok := strings.TrimSpace(h[len(scheme):])
	return tok, tok != ""
}

// Authenticate is middleware for the other routes of a server (the image
// endpoints that callback mode wraps): a request whose context already
// holds a principal (taskstore.NewContext, put there by the server's own
// authentication middleware) goes on as it is; any other request is decided
// by auth. A rejected one is answered 400 no_token (the error wraps
// ErrNoToken), 500 api_error, logged to slog.Default() as it is when
// Authenticate is called (it wraps ErrAuthUnavailable), or 401 invalid_token; otherwise the caller's
// principal is put into the request context with taskstore.NewContext and
// next serves the request.
//
// Authenticate panics when auth or next is nil.
func Authenticate(auth Authenticator, next http.Handler) http.Handler {
	if auth == nil {
		panic("handler.Authenticate: nil Authenticator (use handler.InsecureAnyoneIsOperator to let every caller in)")
	}
	if next == nil {
		panic("handler.Authenticate: nil next handler")
	}
	log := slog.Default()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := taskstore.FromContext(r.Context()); ok {
			next.ServeHTTP(w, r)
			return
		}
		p, ok := authenticate(w, r, auth, log)
		if !ok {
			return
		}
		next.ServeHTTP(w, r.WithContext(taskstore.NewContext(r.Context(), p)))
	})
}

// authenticate returns the principal in r's context, or runs auth on r,
// or answers the contract's error and returns false; internal failures go
// to log.
func authenticate(w http.ResponseWriter, r *http.Request, auth Authenticator, log *slog.Logger) (taskstore.Principal, bool) {
	if p, ok := taskstore.FromContext(r.Context()); ok {
		return p, true
	}
	p, err := auth(r)
	switch {
	case err == nil:
		return p, true
	case errors.Is(err, ErrNoToken):
		apierr.Write(w, http.StatusBadRequest, apierr.NoToken, "the authorization header is missing")
	case errors.Is(err, ErrAuthUnavailable):
		apierr.Internal(r.Context(), w, log, "handler: authentication failed", err)
	default:
		apierr.Write(w, http.StatusUnauthorized, apierr.InvalidToken, "the token is not accepted")
	}
	return taskstore.Principal{}, false
}
