package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/tasksapi/tasks/internal/proxy"
)

func ExampleNew() {
	// A stand-in for https://api.openai.com/v1 that checks the key.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer sk-example" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`)
			return
		}
		fmt.Fprintf(w, `{"created":1721626477,"data":[{"url":"https://example.com%s.png"}]}`, r.URL.Path)
	}))
	defer upstream.Close()

	p, err := proxy.New(proxy.Options{Upstream: upstream.URL + "/v1", Key: "sk-example"})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /openai/images/generations", p.Handler("/images/generations"))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/openai/images/generations", strings.NewReader(`{"prompt":"a cat"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer token-for-this-server") // not forwarded
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body))
	// Output:
	// 200 OK {"created":1721626477,"data":[{"url":"https://example.com/v1/images/generations.png"}]}
}
