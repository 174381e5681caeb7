package handler_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tasksapi/tasks/handler"
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
		"Bearer ", "Bearer", "", "secret-a", "Basic secret-a", "Bearersecret-a", "Bearer later", "Bearer secret-a x",
	} {
		if p, err := auth(req(h)); !errors.Is(err, handler.ErrInvalidToken) || p != (taskstore.Principal{}) {
			t.Errorf("%q: %+v, %v; want ErrInvalidToken", h, p, err)
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
	p, err := handler.InsecureAnyoneIsOperator(httptest.NewRequest("POST", "/", nil))
	if err != nil || !p.IsOperator() {
		t.Errorf("%+v, %v", p, err)
	}
}
