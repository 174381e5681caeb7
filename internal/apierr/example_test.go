package apierr_test

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"

	"github.com/tasksapi/tasks/internal/apierr"
)

func ExampleWrite() {
	w := httptest.NewRecorder()
	traceID := apierr.Write(w, 400, apierr.BadRequest, "limit must be between 1 and 100")

	var body struct {
		Error   struct{ Code, Message string }
		TraceID string `json:"trace_id"`
	}
	json.Unmarshal(w.Body.Bytes(), &body)
	fmt.Println(w.Code, w.Header().Get("Content-Type"))
	fmt.Println(body.Error.Code+":", body.Error.Message)
	fmt.Println(body.TraceID == traceID)
	// Output:
	// 400 application/json
	// bad_request: limit must be between 1 and 100
	// true
}
