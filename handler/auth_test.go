package handler_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

func TestTokens(t *testing.T) {
	m := map[string]taskstore.Principal{
		"secret-a":  {ApplicationID: "app-a", UserID: "u1", CredentialID: "c1"},
		"secret-ab": {ApplicationID: "app-b"},
		"op":        {},
	}
	auth := handler.Tokens(m)
	m["later"] = taskstore.Principal{ApplicationID: "x"} // Tokens copied the map
	delete(m, "op")

	req := func(h string) *http.Request {
		r := httptest.NewRequest("POST", "/", nil)
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		return r
	}
	for _, tc := range []struct {
		header string
		want   taskstore.Principal
	}{
		{"Bearer secret-a", m["secret-a"]},
		{"bearer secret-a", m["secret-a"]},
		{"Bearer  secret-a ", m["secret-a"]},
		{"Bearer secret-ab", taskstore.Principal{ApplicationID: "app-b"}},
		{"Bearer op", taskstore.Principal{}},
	} {
		p, err := auth(req(tc.header))
		if err != nil || p != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.header, p, err, tc.want)
		}
	}
	for _, h := range []string{
		"Bearer secret-", "Bearer secret", "Bearer secret-a-", "Bearer secret-abc", "Bearer SECRET-A",
		"Bearer ", "Bearer", "secret-a", "Basic secret-a", "Bearersecret-a", "Bearer later", "Bearer secret-a x",
	} {
		if p, err := auth(req(h)); !errors.Is(err, handler.ErrInvalidToken) || p != (taskstore.Principal{}) {
			t.Errorf("%q: %+v, %v; want ErrInvalidToken", h, p, err)
		}
	}
	for _, h := range []string{"", "  ", "\t"} {
		if p, err := auth(req(h)); !errors.Is(err, handler.ErrNoToken) || p != (taskstore.Principal{}) {
			t.Errorf("%q: %+v, %v; want ErrNoToken", h, p, err)
		}
	}
	if p, err := handler.Tokens(nil)(req("Bearer x")); !errors.Is(err, handler.ErrInvalidToken) || p != (taskstore.Principal{}) {
		t.Errorf("no tokens: %+v, %v", p, err)
	}
}

func TestTokensRefusesUnusableTokens(t *testing.T) {
	for _, tok := range []string{"", " x", "x\t"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Tokens accepted %q", tok)
				}
			}()
			handler.Tokens(map[string]taskstore.Principal{tok: {}})
		}()
	}
}

func TestInsecureAnyoneIsOperator(t *testing.T) {
	r := httptest.NewRequest("POST", "/", nil)
	if _, err := handler.InsecureAnyoneIsOperator(r); !errors.Is(err, handler.ErrNoToken) {
		t.Errorf("without a header: %v, want ErrNoToken", err)
	}
	r.Header.Set("Authorization", "anything")
	p, err := handler.InsecureAnyoneIsOperator(r)
	if err != nil || !p.IsOperator() {
		t.Errorf("%+v, %v", p, err)
	}
}

// An Authenticator of the server's own sees every request, whatever headers
// it carries (an API key header, a cookie), and decides the answer.
func TestOwnAuthenticator(t *testing.T) {
	s := memstore.New()
	t.Cleanup(func() { s.Close() })
	mustCreate(t, s, fixtures...)
	calls := 0
	byKey := func(r *http.Request) (taskstore.Principal, error) {
		calls++
		switch {
		case r.Header.Get("X-API-Key") == "key-1":
			return tenant1, nil
		case r.Header.Get("X-API-Key") != "":
			return taskstore.Principal{}, handler.ErrInvalidToken
		}
		if c, err := r.Cookie("session"); err == nil && c.Value == "op" {
			return taskstore.Principal{}, nil
		}
		return taskstore.Principal{}, fmt.Errorf("no key: %w", handler.ErrNoToken)
	}
	var ids traceIDs
	for _, h := range []http.Handler{
		handler.New(s, byKey),
		handler.Authenticate(byKey, handler.New(s, handler.InsecureAnyoneIsOperator)),
	} {
		rec := serve(h, call{header: map[string]string{"X-API-Key": "key-1"}, body: retrieveFinished})
		if rec.Code != 200 || rec.Body.String() != wireFinished {
			t.Fatalf("by API key: %d %s", rec.Code, rec.Body)
		}
		rec = serve(h, call{header: map[string]string{"X-API-Key": "key-1"}, body: `{"id":"` + taskOther.ID + `"}`})
		if rec.Body.String() != "{}" {
			t.Fatalf("tenant 1 by API key sees another tenant's task: %s", rec.Body)
		}
		rec = serve(h, call{header: map[string]string{"Cookie": "session=op"}, body: `{"id":"` + taskOther.ID + `"}`})
		if rec.Code != 200 || rec.Body.String() != wireOther {
			t.Fatalf("by cookie: %d %s", rec.Code, rec.Body)
		}
		ids.checkError(t, serve(h, call{header: map[string]string{"X-API-Key": "nope"}, body: retrieveFinished}),
			401, "invalid_token", "the token is not accepted")
		ids.checkError(t, serve(h, call{body: retrieveFinished}), 400, "no_token", "the authorization header is missing")
	}
	if calls != 10 {
		t.Errorf("the authenticator ran %d times, want 10", calls)
	}
}

// A principal the server's own middleware put in the context is used as
// it is: the Authenticator is not asked.
func TestPrincipalInContext(t *testing.T) {
	s := memstore.New()
	t.Cleanup(func() { s.Close() })
	mustCreate(t, s, fixtures...)
	never := func(*http.Request) (taskstore.Principal, error) {
		t.Error("the Authenticator ran although the context holds a principal")
		return taskstore.Principal{}, handler.ErrInvalidToken
	}
	theirs := func(p taskstore.Principal, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(taskstore.NewContext(r.Context(), p)))
		})
	}
	for name, h := range map[string]http.Handler{
		"New":          theirs(tenant1, handler.New(s, never)),
		"Authenticate": theirs(tenant1, handler.Authenticate(never, handler.New(s, handler.InsecureAnyoneIsOperator))),
	} {
		if rec := serve(h, call{body: retrieveFinished}); rec.Code != 200 || rec.Body.String() != wireFinished {
			t.Errorf("%s: own task: %d %s", name, rec.Code, rec.Body)
		}
		if rec := serve(h, call{body: `{"id":"` + taskOther.ID + `"}`}); rec.Body.String() != "{}" {
			t.Errorf("%s: the context's principal was not applied: %s", name, rec.Body)
		}
	}
	// The principal reaches the wrapped handler through Authenticate.
	var got taskstore.Principal
	h := theirs(tenant2, handler.Authenticate(never, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = taskstore.FromContext(r.Context())
	})))
	serve(h, call{body: "{}"})
	if got != tenant2 {
		t.Errorf("wrapped handler saw %+v", got)
	}
}
