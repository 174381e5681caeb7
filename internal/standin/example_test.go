package standin_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/tasksapi/tasks/internal/standin"
)

func ExampleNew() {
	g := standin.New(standin.Options{BaseURL: "http://127.0.0.1:8080"})
	mux := http.NewServeMux()
	mux.Handle("POST /v1/images/generations", g.Generations())
	mux.Handle("POST /v1/images/edits", g.Edits())
	mux.Handle("POST /v1/chat/completions", g.ChatCompletions())
	mux.Handle("GET /files/", g.Files())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	body := `{"prompt":"a lighthouse at dusk","size":"256x256","response_format":"b64_json"}`
	resp, err := http.Post(srv.URL+"/v1/images/generations", "application/json", strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data []struct {
			B64JSON       string `json:"b64_json"`
			RevisedPrompt string `json:"revised_prompt"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		panic(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(out.Data[0].B64JSON)
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.Status, out.Data[0].RevisedPrompt, img.Bounds().Size())

	resp, err = http.Post(srv.URL+"/v1/images/generations", "application/json", strings.NewReader(`{"n":2}`))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var e bytes.Buffer
	e.ReadFrom(resp.Body)
	fmt.Print(resp.Status, " ", e.String())
	// Output:
	// 200 OK a lighthouse at dusk (256,256)
	// 400 Bad Request {"error":{"message":"Missing required parameter: 'prompt'.","type":"invalid_request_error","param":"prompt","code":null}}
}
